//! The evaluator against the kernel. Random rulesets, drawn from a
//! grammar of matches and verdicts — several chains and base chains, in
//! iptables and in nftables tables of their own at several priorities,
//! jumps, gotos and returns, policies, sources, interfaces (loopback among
//! them), conntrack states, notrack before conntrack, a local redirect, a
//! rate and a match portlocker does not model — are loaded into the test's
//! namespace; for every port and every client address, portlocker's answer
//! is checked against a real connection through a veth pair from another
//! namespace: never "closed" where a connection gets through, never "open"
//! where it is dropped. "Unknown" is allowed, and its rate reported.
//!
//! PORTLOCKER_DIFFERENTIAL_CASES=N draws N rulesets (24 by default, bounded
//! for CI); PORTLOCKER_DIFFERENTIAL_SEED=S starts from another seed, as a
//! failure names it.

mod common;

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use chrono::Utc;
use common::netns;
use common::peer::{self, Peer};
use portlocker::config::{Config, Family, PortSpec};
use portlocker::firewall::eval::{Question, evaluate};
use portlocker::firewall::host;
use portlocker::firewall::model::PortState;
use portlocker::sys::runner::SystemRunner;

/// The ports asked about; 8080 is sometimes redirected to 22.
const PORTS: [u16; 5] = [22, 80, 443, 3000, 8080];

/// A small seeded generator (xorshift64*), so a failure can be replayed.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// What a rule of the grammar matches and does, in no tool's words yet.
#[derive(Debug, Clone)]
struct Rule {
    tcp: Option<bool>,
    ports: Option<(bool, Vec<u16>)>,
    /// Index into the family's networks; negated.
    source: Option<(bool, usize)>,
    iif: Option<(bool, &'static str)>,
    state: Option<(bool, &'static [&'static str])>,
    syn: bool,
    /// A match portlocker does not model (true for a SYN).
    length: bool,
    /// A rate far above what the test sends.
    rate: bool,
    verdict: Verdict,
}

#[derive(Debug, Clone)]
enum Verdict {
    Accept,
    Drop,
    Reject,
    Return,
    Jump(usize),
    Goto(usize),
    Log,
}

/// Networks of each family, by index: one client, some, all, none of them.
const NETS_V4: [&str; 4] = [
    "192.0.2.7/32",
    "192.0.2.64/26",
    "192.0.2.0/24",
    "198.51.100.0/24",
];
const NETS_V6: [&str; 4] = [
    "2001:db8::7/128",
    "2001:db8::40/122",
    "2001:db8::/64",
    "2001:db8:1::/64",
];

const STATES: [&[&str]; 5] = [
    &["NEW"],
    &["ESTABLISHED", "RELATED"],
    &["NEW", "UNTRACKED"],
    &["INVALID"],
    &["UNTRACKED"],
];

fn rule(draw: &mut Draw, chain: usize, chains: usize) -> Rule {
    let tcp = match draw.below(4) {
        0 | 1 => Some(true),
        2 => Some(false),
        _ => None,
    };
    let ports = (tcp.is_some() && draw.chance(60)).then(|| {
        let count = 1 + draw.below(2);
        let ports = (0..count).map(|_| *draw.pick(&PORTS)).collect();
        (draw.chance(20), ports)
    });
    let later = chain + 1..chains;
    let verdict = match draw.below(if later.is_empty() { 6 } else { 8 }) {
        0 | 1 => Verdict::Accept,
        2 => Verdict::Drop,
        3 => Verdict::Reject,
        4 => Verdict::Return,
        5 => Verdict::Log,
        6 => Verdict::Jump(later.start + draw.below(later.len())),
        _ => Verdict::Goto(later.start + draw.below(later.len())),
    };
    Rule {
        tcp,
        ports,
        source: draw.chance(35).then(|| (draw.chance(25), draw.below(4))),
        iif: draw
            .chance(15)
            .then(|| (draw.chance(30), *draw.pick(&["lo", "pl-srv", "eth9"]))),
        state: draw
            .chance(25)
            .then(|| (draw.chance(20), *draw.pick(&STATES))),
        syn: tcp == Some(true) && draw.chance(15),
        length: draw.chance(8),
        rate: draw.chance(8),
        verdict,
    }
}

/// A ruleset: for each tool, its chains (the first of each base chain).
#[derive(Debug)]
struct Ruleset {
    /// iptables: INPUT's policy drops; its rules, then user chains'.
    input_drops: bool,
    iptables: Vec<Vec<Rule>>,
    /// A notrack before conntrack, for this port.
    notrack: Option<u16>,
    redirect: bool,
    /// nftables: tables, each with its priority, policy and chains.
    tables: Vec<(i32, bool, Vec<Vec<Rule>>)>,
}

fn ruleset(draw: &mut Draw) -> Ruleset {
    let chains = |draw: &mut Draw| {
        let count = 1 + draw.below(3);
        (0..count)
            .map(|chain| {
                (0..draw.below(5))
                    .map(|_| rule(draw, chain, count))
                    .collect()
            })
            .collect::<Vec<Vec<Rule>>>()
    };
    let iptables = chains(draw);
    let tables = (0..draw.below(3))
        .map(|_| (*draw.pick(&[-10, 0, 10]), draw.chance(30), chains(draw)))
        .collect();
    Ruleset {
        input_drops: draw.chance(30),
        iptables,
        notrack: draw.chance(20).then(|| *draw.pick(&PORTS)),
        redirect: draw.chance(20),
        tables,
    }
}

/// One rule in iptables' words, for `family`, in chain `chain`.
fn iptables_rule(rule: &Rule, family: Family) -> String {
    let mut words = Vec::new();
    let not = |negated: bool| if negated { "! " } else { "" };
    if let Some((negated, net)) = rule.source {
        let nets = if family == Family::Ipv4 {
            NETS_V4
        } else {
            NETS_V6
        };
        words.push(format!("{}-s {}", not(negated), nets[net]));
    }
    if let Some((negated, name)) = rule.iif {
        words.push(format!("{}-i {name}", not(negated)));
    }
    if let Some(tcp) = rule.tcp {
        let protocol = if tcp { "tcp" } else { "udp" };
        words.push(format!("-p {protocol}"));
        if let Some((negated, ports)) = &rule.ports {
            let list: Vec<String> = ports.iter().map(ToString::to_string).collect();
            words.push(format!(
                "-m multiport {}--dports {}",
                not(*negated),
                list.join(",")
            ));
        }
        if rule.syn {
            words.push("--syn".to_owned());
        }
    }
    if let Some((negated, states)) = rule.state {
        words.push(format!(
            "-m conntrack {}--ctstate {}",
            not(negated),
            states.join(",")
        ));
    }
    if rule.length {
        words.push("-m length --length 0:1000".to_owned());
    }
    if rule.rate {
        words.push("-m limit --limit 10000/sec --limit-burst 10000".to_owned());
    }
    words.push(match &rule.verdict {
        Verdict::Accept => "-j ACCEPT".to_owned(),
        Verdict::Drop => "-j DROP".to_owned(),
        Verdict::Reject => "-j REJECT".to_owned(),
        Verdict::Return => "-j RETURN".to_owned(),
        Verdict::Log => "-j LOG".to_owned(),
        Verdict::Jump(chain) => format!("-j C{chain}"),
        Verdict::Goto(chain) => format!("-g C{chain}"),
    });
    words.join(" ")
}

/// The iptables-restore input of the ruleset for `family`.
fn iptables_input(set: &Ruleset, family: Family) -> String {
    let mut text = String::from("*filter\n");
    let policy = if set.input_drops { "DROP" } else { "ACCEPT" };
    let _ = writeln!(text, ":INPUT {policy} [0:0]");
    for chain in 1..set.iptables.len() {
        let _ = writeln!(text, ":C{chain} - [0:0]");
    }
    for (chain, rules) in set.iptables.iter().enumerate() {
        let name = if chain == 0 {
            "INPUT".to_owned()
        } else {
            format!("C{chain}")
        };
        for rule in rules {
            let _ = writeln!(text, "-A {name} {}", iptables_rule(rule, family));
        }
    }
    text.push_str("COMMIT\n*raw\n:PREROUTING ACCEPT [0:0]\n");
    if let Some(port) = set.notrack {
        let _ = writeln!(
            text,
            "-A PREROUTING -p tcp -m tcp --dport {port} -j CT --notrack"
        );
    }
    text.push_str("COMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n");
    if set.redirect {
        text.push_str("-A PREROUTING -p tcp -m tcp --dport 8080 -j REDIRECT --to-ports 22\n");
    }
    text.push_str("COMMIT\n");
    text
}

/// One rule in nft's words (an inet table: both families).
fn nft_rule(rule: &Rule) -> String {
    let mut words = Vec::new();
    let not = |negated: bool| if negated { "!= " } else { "" };
    if let Some((negated, net)) = rule.source {
        words.push(format!(
            "meta nfproto ipv4 ip saddr {}{}",
            not(negated),
            NETS_V4[net]
        ));
    }
    if let Some((negated, name)) = rule.iif {
        words.push(format!("iifname {}\"{name}\"", not(negated)));
    }
    if let Some(tcp) = rule.tcp {
        let protocol = if tcp { "tcp" } else { "udp" };
        match &rule.ports {
            Some((negated, ports)) => {
                let list: Vec<String> = ports.iter().map(ToString::to_string).collect();
                words.push(format!(
                    "{protocol} dport {}{{ {} }}",
                    not(*negated),
                    list.join(", ")
                ));
            }
            None => words.push(format!("meta l4proto {protocol}")),
        }
        if rule.syn {
            words.push("tcp flags & (fin|syn|rst|ack) == syn".to_owned());
        }
    }
    if let Some((negated, states)) = rule.state {
        let names: Vec<String> = states.iter().map(|state| state.to_lowercase()).collect();
        words.push(format!(
            "ct state {}{{ {} }}",
            not(negated),
            names.join(", ")
        ));
    }
    if rule.length {
        words.push("meta length 0-1000".to_owned());
    }
    if rule.rate {
        words.push("limit rate 10000/second burst 10000 packets".to_owned());
    }
    words.push(match &rule.verdict {
        Verdict::Accept => "accept".to_owned(),
        Verdict::Drop => "drop".to_owned(),
        Verdict::Reject => "reject".to_owned(),
        Verdict::Return => "return".to_owned(),
        Verdict::Log => "log".to_owned(),
        Verdict::Jump(chain) => format!("jump c{chain}"),
        Verdict::Goto(chain) => format!("goto c{chain}"),
    });
    words.join(" ")
}

/// The `nft -f` input of the ruleset's tables.
fn nft_input(set: &Ruleset) -> String {
    let mut text = String::new();
    for (index, (priority, drops, chains)) in set.tables.iter().enumerate() {
        let _ = writeln!(text, "table inet t{index} {{");
        for (chain, rules) in chains.iter().enumerate().rev() {
            let name = if chain == 0 {
                "input".to_owned()
            } else {
                format!("c{chain}")
            };
            let _ = writeln!(text, "  chain {name} {{");
            if chain == 0 {
                let policy = if *drops { "drop" } else { "accept" };
                let _ = writeln!(
                    text,
                    "    type filter hook input priority {priority}; policy {policy};"
                );
            }
            for rule in rules {
                let _ = writeln!(text, "    {}", nft_rule(rule));
            }
            text.push_str("  }\n");
        }
        text.push_str("}\n");
    }
    text
}

fn feed(argv: &[&str], input: &str) {
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{argv:?}:\n{input}");
}

/// What the comparison found over every case.
#[derive(Default)]
struct Tally {
    questions: usize,
    unknown: usize,
}

#[test]
fn the_evaluator_never_contradicts_the_kernel() {
    if !netns::enter("the_evaluator_never_contradicts_the_kernel") {
        return;
    }
    let cases: u64 = std::env::var("PORTLOCKER_DIFFERENTIAL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(24);
    let first: u64 = std::env::var("PORTLOCKER_DIFFERENTIAL_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let peer = Peer::new();
    peer::listen(&PORTS);
    let services: String = PORTS
        .iter()
        .map(|port| format!("p{port} = {port}\n"))
        .collect();
    let config = Config::parse(&format!("source = \"-\"\n[services]\n{services}")).unwrap();
    let mut tally = Tally::default();
    for seed in first..first + cases {
        let set = ruleset(&mut Draw(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1));
        let status = Command::new("/usr/sbin/nft")
            .args(["flush", "ruleset"])
            .status()
            .unwrap();
        assert!(status.success());
        feed(
            &["/usr/sbin/iptables-restore", "-w", "5"],
            &iptables_input(&set, Family::Ipv4),
        );
        feed(
            &["/usr/sbin/ip6tables-restore", "-w", "5"],
            &iptables_input(&set, Family::Ipv6),
        );
        feed(&["/usr/sbin/nft", "-f", "-"], &nft_input(&set));
        compare(seed, &set, &config, &peer, &mut tally);
    }
    eprintln!(
        "differential: {cases} rulesets, {} answers checked against connections, {} unknown ({:.1}%)",
        tally.questions,
        tally.unknown,
        100.0 * tally.unknown as f64 / tally.questions.max(1) as f64
    );
}

fn question_server(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => peer::SERVER_V4,
        Family::Ipv6 => peer::SERVER_V6,
    }
}

/// Checks every port and client of one ruleset.
fn compare(seed: u64, set: &Ruleset, config: &Config, peer: &Peer, tally: &mut Tally) {
    let (host, errors) = host::read(config, SystemRunner::new(config), &mut Vec::new());
    assert!(errors.is_empty(), "seed {seed}: {errors:?}");
    let mut asked = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        let (server, clients): (&str, &[&str]) = match family {
            Family::Ipv4 => (peer::SERVER_V4, &peer::CLIENTS_V4),
            Family::Ipv6 => (peer::SERVER_V6, &peer::CLIENTS_V6),
        };
        for port in PORTS {
            for client in clients {
                asked.push((family, port, client.to_string(), server.to_string()));
            }
        }
    }
    let attempts: Vec<(String, String, u16)> = asked
        .iter()
        .map(|(_, port, client, server)| (client.clone(), server.clone(), *port))
        .collect();
    let through = peer.connect_all(&attempts);
    for ((family, port, client, _), through) in asked.into_iter().zip(through) {
        let path = host.family(family).unwrap();
        let prefix = if family == Family::Ipv4 { 32 } else { 128 };
        let question = Question {
            family,
            ports: PortSpec::parse(&port.to_string()).unwrap(),
            from: Some(format!("{client}/{prefix}").parse().unwrap()),
        };
        let answer = evaluate(path, &question, Utc::now());
        tally.questions += 1;
        let contradicted = match answer.state {
            PortState::Closed => through,
            // A miss on a loaded machine is tried again, patiently.
            PortState::Open | PortState::RateLimited => {
                !through && !peer.reaches(&client, question_server(family), port)
            }
            PortState::Unknown => {
                tally.unknown += 1;
                false
            }
            _ => false,
        };
        assert!(
            !contradicted,
            "seed {seed}: {family} port {port} from {client}: portlocker says {} ({}), but the \
             connection {}\n{set:#?}\n{}\n{}",
            answer.state.as_str(),
            answer.reason,
            if through {
                "got through"
            } else {
                "was dropped"
            },
            iptables_input(set, family),
            nft_input(set),
        );
    }
}
