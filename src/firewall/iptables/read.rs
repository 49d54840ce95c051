//! iptables' text — `iptables-save`, or `iptables -S CHAIN` — read into
//! the neutral model (`ruleset.rs`): each rule's matches and target as
//! tests, effects and a verdict, and its text as `iptables -S` prints it.
//! What it does not know becomes an unknown test or verdict in the rule's
//! own words, never a guess. Pure: reads text only.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{NaiveDateTime, NaiveTime};
use ipnet::IpNet;

use crate::firewall::model::split_listed;
use crate::firewall::ruleset::{
    AddressKind, Addresses, Chain, Effect, Match, Policy, Ranges, Rule, States, Step, Test,
    TimeTest, Verdict,
};

/// One table of an `iptables-save` listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    pub name: String,
    pub chains: BTreeMap<String, Chain>,
    /// The built-in chains, with their policies.
    pub policies: BTreeMap<String, Policy>,
}

/// The tables of `iptables-save` output, in order.
pub fn saved(text: &str) -> Vec<Saved> {
    let mut tables: Vec<Saved> = Vec::new();
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('*') {
            tables.push(Saved {
                name: name.trim().to_owned(),
                ..Saved::default()
            });
        } else if let Some(declared) = line.strip_prefix(':') {
            let Some(table) = tables.last_mut() else {
                continue;
            };
            let mut words = declared.split_whitespace();
            let (Some(chain), policy) = (words.next(), words.next()) else {
                continue;
            };
            table.chains.insert(chain.to_owned(), Chain::default());
            if let Some(policy) = policy.and_then(policy_named) {
                table.policies.insert(chain.to_owned(), policy);
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let words = split_listed(rest);
            if let Some((chain, spec)) = words.split_first() {
                lines.push((chain.clone(), spec.to_vec()));
            }
        } else if line.trim() == "COMMIT" {
            let Some(table) = tables.last_mut() else {
                continue;
            };
            let names: Vec<String> = table.chains.keys().cloned().collect();
            for (chain, spec) in lines.drain(..) {
                let parsed = rule(&chain, &spec, &|name| {
                    names.iter().any(|known| known == name)
                });
                table.chains.entry(chain).or_default().rules.push(parsed);
            }
        }
    }
    tables
}

/// The rules and policy of `chain` from `iptables -S CHAIN`; `is_chain`
/// tells a jump's target from a target iptables knows.
pub fn listed(text: &str, chain: &str, is_chain: &dyn Fn(&str) -> bool) -> (Chain, Option<Policy>) {
    let rule_prefix = format!("-A {chain} ");
    let policy_prefix = format!("-P {chain} ");
    let mut read = Chain::default();
    let mut policy = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&rule_prefix) {
            read.rules.push(rule(chain, &split_listed(rest), is_chain));
        } else if let Some(rest) = line.strip_prefix(&policy_prefix) {
            policy = policy_named(rest.trim());
        }
    }
    (read, policy)
}

pub fn policy_named(word: &str) -> Option<Policy> {
    match word {
        "ACCEPT" => Some(Policy::Accept),
        "DROP" => Some(Policy::Drop),
        _ => None,
    }
}

/// The rule `-A chain spec…`.
pub fn rule(chain: &str, spec: &[String], is_chain: &dyn Fn(&str) -> bool) -> Rule {
    let text = shown(chain, spec);
    let (matches, target) = split_target(spec);
    let mut steps = Vec::new();
    let mut comment = None;
    for option in options(matches) {
        if option.name == "--comment" {
            comment = option.values.first().cloned();
        }
        if let Some(test) = test_of(&option) {
            steps.push(Step::Test(Match {
                negated: option.negated,
                test,
            }));
        }
    }
    let (effects, verdict) = target_of(target, is_chain);
    steps.extend(effects.into_iter().map(Step::Do));
    Rule {
        steps,
        verdict,
        text,
        handle: None,
        comment,
    }
}

/// A rule as `iptables -S` prints it: words quoted where needed.
pub fn shown(chain: &str, spec: &[String]) -> String {
    let mut line = format!("-A {chain}");
    for word in spec {
        line.push(' ');
        if word.is_empty() || word.chars().any(|c| c.is_whitespace() || c == '"') {
            line.push_str(&format!("\"{}\"", word.replace('"', "\\\"")));
        } else {
            line.push_str(word);
        }
    }
    line
}

/// The matches, and the target with its options (`-j X …` or `-g X`).
fn split_target(spec: &[String]) -> (&[String], &[String]) {
    match spec
        .iter()
        .position(|word| matches!(word.as_str(), "-j" | "--jump" | "-g" | "--goto"))
    {
        Some(at) => (&spec[..at], &spec[at..]),
        None => (spec, &[]),
    }
}

/// One option of a match: `! --dport 22` of module `tcp`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Option_ {
    module: String,
    name: String,
    values: Vec<String>,
    negated: bool,
}

/// The options of the match part, each with its module (`` for the
/// core's: `-s`, `-p`, `-i`…).
fn options(words: &[String]) -> Vec<Option_> {
    let mut found = Vec::new();
    let mut module = String::new();
    let mut negated = false;
    let mut i = 0;
    while i < words.len() {
        let word = words[i].as_str();
        i += 1;
        match word {
            "!" => {
                negated = true;
                continue;
            }
            "-m" | "--match" => {
                module = words.get(i).cloned().unwrap_or_default();
                i += 1;
                // A module with no option still says something (`-m tcp`).
                found.push(Option_ {
                    module: module.clone(),
                    name: String::new(),
                    values: Vec::new(),
                    negated: false,
                });
                continue;
            }
            _ => {}
        }
        let core = matches!(
            word,
            "-s" | "--source"
                | "-d"
                | "--destination"
                | "-i"
                | "--in-interface"
                | "-o"
                | "--out-interface"
                | "-p"
                | "--protocol"
                | "-f"
                | "--fragment"
        );
        let mut values = Vec::new();
        // `--comment` takes one value, whatever it looks like.
        let takes_one = matches!(
            word,
            "--comment"
                | "-s"
                | "-d"
                | "-i"
                | "-o"
                | "-p"
                | "--source"
                | "--destination"
                | "--in-interface"
                | "--out-interface"
                | "--protocol"
        );
        while i < words.len() && (values.is_empty() && takes_one || !starts_option(&words[i])) {
            values.push(words[i].clone());
            i += 1;
            if takes_one {
                break;
            }
        }
        found.push(Option_ {
            module: if core { String::new() } else { module.clone() },
            name: word.to_owned(),
            values,
            negated,
        });
        negated = false;
    }
    found
}

fn starts_option(word: &str) -> bool {
    word == "!"
        || (word.starts_with('-')
            && word.len() > 1
            && !word[1..].starts_with(|c: char| c.is_ascii_digit()))
}

/// The test one option makes; None for what holds for every packet or is
/// said by another option of the same module.
fn test_of(option: &Option_) -> Option<Test> {
    let value = option.values.first().map(String::as_str).unwrap_or("");
    let unknown = || Some(Test::Unknown(option_text(option)));
    match (option.module.as_str(), option.name.as_str()) {
        (module, "") => module_test(module),
        ("", "-s" | "--source") => {
            Some(addresses(value).map_or_else(|| Test::Unknown(option_text(option)), Test::Source))
        }
        ("", "-d" | "--destination") => Some(
            addresses(value).map_or_else(|| Test::Unknown(option_text(option)), Test::Destination),
        ),
        ("", "-i" | "--in-interface") => Some(Test::InInterface(vec![value.to_owned()])),
        ("", "-o" | "--out-interface") => Some(Test::OutInterface(vec![value.to_owned()])),
        ("", "-p" | "--protocol") => protocol_number(value).map(Test::Protocol).or_else(unknown),
        ("", "-f" | "--fragment") => Some(Test::Fragment),
        (_, "--dport" | "--destination-port" | "--dports" | "--destination-ports") => {
            ports(value).map(Test::DestPort).or_else(unknown)
        }
        (_, "--sport" | "--source-port" | "--sports" | "--source-ports" | "--ports") => unknown(),
        (_, "--syn") => Some(Test::TcpFlags {
            mask: 0x17,
            compare: 0x02,
        }),
        (_, "--tcp-flags") => match (
            tcp_flags(value),
            option.values.get(1).and_then(|v| tcp_flags(v)),
        ) {
            (Some(mask), Some(compare)) => Some(Test::TcpFlags { mask, compare }),
            _ => unknown(),
        },
        ("conntrack", "--ctstate") | ("state", "--state") => {
            states(value).map(Test::State).or_else(unknown)
        }
        ("conntrack", "--ctstatus") if value == "DNAT" => Some(Test::Translated),
        ("conntrack", "--ctdir") if value == "ORIGINAL" => None,
        ("conntrack", "--ctdir") if value == "REPLY" => Some(Test::Reply),
        ("conntrack", "--ctorigdstport") => {
            ports(value).map(Test::OriginalDestPort).or_else(unknown)
        }
        _ => module_option(option, value).unwrap_or_else(unknown),
    }
}

/// The test an option of the other modules portlocker knows makes:
/// `Some(None)` for one that tests nothing (a comment, a setting of its
/// module); None for one it does not know.
fn module_option(option: &Option_, value: &str) -> Option<Option<Test>> {
    let rate = |over| Some(Some(Test::Rate { over }));
    let set = || Addresses::Set {
        name: value.to_owned(),
        ranges: None,
    };
    match (option.module.as_str(), option.name.as_str()) {
        ("addrtype", "--src-type" | "--dst-type") => Some(Some(Test::AddressType {
            destination: option.name == "--dst-type",
            kinds: value.split(',').map(AddressKind::named).collect(),
        })),
        ("limit", "--limit") | ("hashlimit", "--hashlimit-upto" | "--hashlimit") => rate(false),
        ("connlimit", "--connlimit-upto") => rate(false),
        ("hashlimit", "--hashlimit-above") | ("connlimit", "--connlimit-above") => rate(true),
        ("recent", "--rcheck" | "--update") => rate(true),
        ("recent", "--remove") => None,
        ("comment" | "addrtype" | "limit" | "hashlimit" | "connlimit" | "recent", _) => Some(None),
        ("mark" | "connmark", "--mark") => mark(value).map(|(value, mask)| {
            Some(Test::Mark {
                connection: option.module == "connmark",
                mask,
                value,
            })
        }),
        ("time", _) => time_test(option).map(Some),
        ("set", "--match-set") => match option.values.get(1).map(String::as_str) {
            Some("src") => Some(Some(Test::Source(set()))),
            Some("dst") => Some(Some(Test::Destination(set()))),
            _ => None,
        },
        ("iprange", "--src-range") => {
            ip_range(value).map(|ranges| Some(Test::Source(Addresses::Ranges(ranges))))
        }
        ("iprange", "--dst-range") => {
            ip_range(value).map(|ranges| Some(Test::Destination(Addresses::Ranges(ranges))))
        }
        ("pkttype", "--pkt-type") => Some(Some(Test::PacketType(vec![AddressKind::named(value)]))),
        // A packet that passes the check does not match an inverted one.
        ("rpfilter", "--invert") => Some(Some(Test::Fragment)),
        ("rpfilter", _) => Some(None),
        ("policy", "--pol") if value == "none" => Some(None),
        ("policy", "--dir" | "--strict") => Some(None),
        ("rt" | "frag" | "hbh" | "dst", _) => Some(None),
        _ => None,
    }
}

/// A module without options can still test something (`-m rpfilter`).
fn module_test(module: &str) -> Option<Test> {
    match module {
        "rpfilter" => Some(Test::ReversePath),
        // Whatever their options: only a packet with the header matches.
        "rt" | "frag" | "hbh" | "dst" => Some(Test::ExtensionHeader),
        _ => None,
    }
}

fn option_text(option: &Option_) -> String {
    let mut words = Vec::new();
    if !option.module.is_empty() {
        words.push(format!("-m {}", option.module));
    }
    if option.negated {
        words.push("!".to_owned());
    }
    words.push(option.name.clone());
    words.extend(option.values.iter().cloned());
    words.join(" ")
}

/// `192.0.2.0/24`, `192.0.2.7`, or several joined by commas.
fn addresses(value: &str) -> Option<Addresses> {
    let mut nets = Vec::new();
    for item in value.split(',') {
        let net = match item.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => IpNet::from(item.parse::<IpAddr>().ok()?),
        };
        nets.push(net);
    }
    Some(Addresses::nets(&nets))
}

/// `a-b`, two addresses.
fn ip_range(value: &str) -> Option<Ranges> {
    let (first, last) = value.split_once('-')?;
    let first: IpAddr = first.parse().ok()?;
    let last: IpAddr = last.parse().ok()?;
    Some(
        Ranges::of_addr(first)
            .union(&Ranges::of_addr(last))
            .union(&Ranges::span(
                crate::firewall::ruleset::number(first),
                crate::firewall::ruleset::number(last),
            )),
    )
}

/// `22`, `1024:`, `1:1023`, or several joined by commas.
fn ports(value: &str) -> Option<Ranges> {
    let mut spans = Vec::new();
    for item in value.split(',') {
        let (first, last) = match item.split_once(':') {
            Some((first, last)) => (
                if first.is_empty() {
                    0
                } else {
                    first.parse::<u16>().ok()?
                },
                if last.is_empty() {
                    65535
                } else {
                    last.parse::<u16>().ok()?
                },
            ),
            None => {
                let port = item.parse::<u16>().ok()?;
                (port, port)
            }
        };
        spans.push((u128::from(first), u128::from(last)));
    }
    Some(Ranges::from_spans(spans))
}

/// A protocol by name or number; 0 for `all`.
pub fn protocol_number(name: &str) -> Option<u8> {
    Some(match name.to_ascii_lowercase().as_str() {
        "all" => 0,
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "ipv6-icmp" | "icmpv6" | "icmp6" => 58,
        "sctp" => 132,
        "udplite" => 136,
        "esp" => 50,
        "ah" => 51,
        "gre" => 47,
        "dccp" => 33,
        "igmp" => 2,
        other => other.parse().ok()?,
    })
}

/// `FIN,SYN,RST,ACK` as bits.
fn tcp_flags(value: &str) -> Option<u8> {
    let mut bits = 0;
    for flag in value.split(',') {
        bits |= match flag {
            "FIN" => 0x01,
            "SYN" => 0x02,
            "RST" => 0x04,
            "PSH" => 0x08,
            "ACK" => 0x10,
            "URG" => 0x20,
            "ECE" => 0x40,
            "CWR" => 0x80,
            "ALL" => 0xff,
            "NONE" => 0,
            _ => return None,
        };
    }
    Some(bits)
}

fn states(value: &str) -> Option<States> {
    value.split(',').try_fold(States::default(), |all, name| {
        Some(all.with(States::named(name)?))
    })
}

/// `0x10/0xff` or `16`: the value and its mask.
fn mark(value: &str) -> Option<(u32, u32)> {
    let number = |text: &str| match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    };
    match value.split_once('/') {
        Some((value, mask)) => Some((number(value)?, number(mask)?)),
        None => Some((number(value)?, u32::MAX)),
    }
}

fn time_test(option: &Option_) -> Option<Test> {
    let value = option.values.first()?;
    let moment = || {
        NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S")
            .ok()
            .map(|naive| naive.and_utc())
    };
    let clock = || NaiveTime::parse_from_str(value, "%H:%M:%S").ok();
    Some(Test::Time(match option.name.as_str() {
        "--datestart" => TimeTest::From(moment()?),
        // xt_time compares whole seconds: the second T itself still matches.
        "--datestop" => TimeTest::Before(moment()? + chrono::Duration::seconds(1)),
        "--timestart" => TimeTest::Daily(clock()?, NaiveTime::from_hms_opt(23, 59, 59)?),
        "--timestop" => TimeTest::Daily(NaiveTime::from_hms_opt(0, 0, 0)?, clock()?),
        "--weekdays" => TimeTest::Weekdays(
            value
                .split(',')
                .map(|day| match day {
                    "Mon" | "1" => Some(1),
                    "Tue" | "2" => Some(2),
                    "Wed" | "3" => Some(3),
                    "Thu" | "4" => Some(4),
                    "Fri" | "5" => Some(5),
                    "Sat" | "6" => Some(6),
                    "Sun" | "7" => Some(7),
                    _ => None,
                })
                .collect::<Option<Vec<u32>>>()?,
        ),
        _ => return None,
    }))
}

/// Targets after which the packet goes on, changing nothing that decides
/// its fate on the way in.
const GOES_ON: &[&str] = &[
    "LOG",
    "NFLOG",
    "ULOG",
    "AUDIT",
    "TRACE",
    "TCPMSS",
    "CLASSIFY",
    "DSCP",
    "TOS",
    "TTL",
    "HL",
    "ECN",
    "CHECKSUM",
    "SECMARK",
    "CONNSECMARK",
    "IDLETIMER",
    "LED",
    "SET",
    "TEE",
    "RATEEST",
    "NFACCT",
];

/// Targets that hand the packet to something portlocker cannot follow.
const ELSEWHERE: &[&str] = &[
    "NFQUEUE",
    "QUEUE",
    "TPROXY",
    "SYNPROXY",
    "NETMAP",
    "CLUSTERIP",
];

/// The target's effects and verdict.
fn target_of(target: &[String], is_chain: &dyn Fn(&str) -> bool) -> (Vec<Effect>, Verdict) {
    let Some((kind, rest)) = target.split_first() else {
        return (Vec::new(), Verdict::Continue);
    };
    let name = rest.first().map(String::as_str).unwrap_or("");
    let options = &rest.get(1..).unwrap_or(&[]);
    let after = |flag: &str| {
        options
            .windows(2)
            .find(|pair| pair[0] == flag)
            .map(|pair| pair[1].as_str())
    };
    if kind == "-g" || kind == "--goto" {
        return (Vec::new(), Verdict::Goto(name.to_owned()));
    }
    let verdict = match name {
        "ACCEPT" => Verdict::Accept,
        "DROP" => Verdict::Drop,
        "REJECT" => Verdict::Reject,
        "RETURN" => Verdict::Return,
        "MASQUERADE" | "SNAT" => Verdict::Accept,
        "MARK" | "CONNMARK" => {
            return (mark_effects(name == "CONNMARK", options), Verdict::Continue);
        }
        "NOTRACK" => return (vec![Effect::Notrack], Verdict::Continue),
        "CT" if options.iter().any(|word| word == "--notrack") => {
            return (vec![Effect::Notrack], Verdict::Continue);
        }
        "CT" => Verdict::Continue,
        "DNAT" => {
            return (
                vec![dnat(after("--to-destination").unwrap_or(""))],
                Verdict::Accept,
            );
        }
        "REDIRECT" => {
            let port = after("--to-ports").and_then(|ports| ports.split('-').next()?.parse().ok());
            let effect = Effect::Dnat {
                address: None,
                port,
                to: format!("this host, port {}", after("--to-ports").unwrap_or("?")),
            };
            return (vec![effect], Verdict::Accept);
        }
        _ if GOES_ON.contains(&name) => Verdict::Continue,
        _ if ELSEWHERE.contains(&name) => Verdict::Unknown(format!("the {name} target")),
        _ if is_chain(name) => Verdict::Jump(name.to_owned()),
        _ => Verdict::Unknown(format!("the {name} target")),
    };
    (Vec::new(), verdict)
}

/// `--to-destination 172.17.0.2:80`, `[2001:db8::2]:80`, `:8080`.
fn dnat(to: &str) -> Effect {
    let (address, port) = match to.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((address, port)) => (address, port.strip_prefix(':')),
            None => (rest, None),
        },
        None => match to.rsplit_once(':') {
            Some((address, port)) if !address.contains(':') => (address, Some(port)),
            _ => (to, None),
        },
    };
    let address = address
        .split('-')
        .next()
        .and_then(|first| first.parse().ok());
    let port = port.and_then(|ports| ports.split('-').next()?.parse().ok());
    Effect::Dnat {
        address,
        port,
        to: to.to_owned(),
    }
}

/// MARK's and CONNMARK's options as effects.
fn mark_effects(connection: bool, options: &[String]) -> Vec<Effect> {
    let value = |flag: &str| {
        options
            .windows(2)
            .find(|pair| pair[0] == flag)
            .and_then(|pair| mark(&pair[1]))
    };
    let effect = if let Some((toggle, clear)) = value("--set-xmark") {
        Effect::Mark {
            connection,
            clear,
            toggle,
        }
    } else if let Some((set, mask)) = value("--set-mark") {
        Effect::Mark {
            connection,
            clear: mask,
            toggle: set,
        }
    } else if let Some((bits, _)) = value("--or-mark") {
        Effect::Mark {
            connection,
            clear: bits,
            toggle: bits,
        }
    } else if let Some((bits, _)) = value("--and-mark") {
        Effect::Mark {
            connection,
            clear: !bits,
            toggle: 0,
        }
    } else if let Some((bits, _)) = value("--xor-mark") {
        Effect::Mark {
            connection,
            clear: 0,
            toggle: bits,
        }
    } else if options.iter().any(|word| word == "--restore-mark") {
        Effect::CopyMark { to_packet: true }
    } else if options.iter().any(|word| word == "--save-mark") {
        Effect::CopyMark { to_packet: false }
    } else {
        Effect::Unknown(options.join(" "))
    };
    vec![effect]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Rule {
        let words = split_listed(line);
        rule("INPUT", &words, &|name| {
            name.starts_with("f2b-") || name == "PORTLOCKER"
        })
    }

    #[test]
    fn matches_and_targets_read_as_tests_effects_and_verdicts() {
        let r = one(
            "-s 192.0.2.7/32 -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment \"portlocker:ssh\" -j DROP",
        );
        assert_eq!(r.verdict, Verdict::Drop);
        assert_eq!(r.comment.as_deref(), Some("portlocker:ssh"));
        assert_eq!(
            r.text,
            "-A INPUT -s 192.0.2.7/32 -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment portlocker:ssh -j DROP"
        );
        let tests: Vec<&Test> = r
            .steps
            .iter()
            .map(|step| match step {
                Step::Test(m) => &m.test,
                Step::Do(_) => panic!("no effect"),
            })
            .collect();
        assert_eq!(tests.len(), 4, "{tests:?}");
        assert_eq!(*tests[1], Test::Protocol(6));
        assert_eq!(*tests[2], Test::DestPort(Ranges::span(22, 22)));
        assert_eq!(
            *tests[3],
            Test::TcpFlags {
                mask: 0x17,
                compare: 0x02
            }
        );
        assert!(r.names_ports());

        let negated = one("-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j f2b-sshd");
        assert_eq!(negated.verdict, Verdict::Jump("f2b-sshd".into()));
        assert!(matches!(
            &negated.steps[0],
            Step::Test(Match {
                negated: true,
                test: Test::State(_)
            })
        ));

        let unknown = one("-m u32 --u32 0x0>>0x16&0x3c@0xc>>0x1a=0x0 -j ACCEPT");
        assert!(
            matches!(&unknown.steps[0], Step::Test(Match { test: Test::Unknown(t), .. }) if t.starts_with("-m u32 --u32"))
        );
        assert_eq!(
            one("-j NFQUEUE --queue-num 1").verdict,
            Verdict::Unknown("the NFQUEUE target".into())
        );
        assert_eq!(
            one("-j SOMEWHERE").verdict,
            Verdict::Unknown("the SOMEWHERE target".into())
        );
        assert_eq!(
            one("-j LOG --log-prefix \"[UFW BLOCK] \"").verdict,
            Verdict::Continue
        );
        assert_eq!(one("-g f2b-x").verdict, Verdict::Goto("f2b-x".into()));
    }

    #[test]
    fn nat_targets_translate() {
        let r = rule(
            "DOCKER",
            &split_listed(
                "! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80",
            ),
            &|_| false,
        );
        assert_eq!(r.verdict, Verdict::Accept);
        assert!(r.steps.contains(&Step::Do(Effect::Dnat {
            address: Some("172.17.0.2".parse().unwrap()),
            port: Some(80),
            to: "172.17.0.2:80".into()
        })));
        let v6 = dnat("[2001:db8::2]:80");
        assert_eq!(
            v6,
            Effect::Dnat {
                address: Some("2001:db8::2".parse().unwrap()),
                port: Some(80),
                to: "[2001:db8::2]:80".into()
            }
        );
    }

    #[test]
    fn a_save_listing_reads_tables_chains_and_policies() {
        let text = "# Generated by iptables-nft-save\n*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n\
                    :f2b-sshd - [0:0]\n-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd\n\
                    -A f2b-sshd -s 192.0.2.7/32 -j REJECT --reject-with icmp-port-unreachable\n\
                    -A f2b-sshd -j RETURN\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n";
        let tables = saved(text);
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[0].policies["INPUT"], Policy::Drop);
        assert_eq!(
            tables[0].chains["INPUT"].rules[0].verdict,
            Verdict::Jump("f2b-sshd".into())
        );
        assert_eq!(tables[0].chains["f2b-sshd"].rules.len(), 2);
        assert_eq!(tables[1].name, "nat");
        assert!(tables[1].chains["PREROUTING"].rules.is_empty());
    }

    #[test]
    fn ports_and_marks_read_in_every_spelling() {
        assert_eq!(
            ports("22,80:90,1024:"),
            Some(Ranges::from_spans(vec![(22, 22), (80, 90), (1024, 65535)]))
        );
        assert_eq!(ports("ssh"), None);
        assert_eq!(mark("0x4000/0x4000"), Some((0x4000, 0x4000)));
        assert_eq!(mark("7"), Some((7, u32::MAX)));
    }
}
