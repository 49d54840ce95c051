//! What the rules in order do to a new connection to a port: the truth that
//! status, the page and the metrics report. A port counts as closed only
//! when a rule that drops it for everyone is reached before anything that
//! lets it through; where the rules do not say, the answer is unknown —
//! never closed. Pure: reads holdings, runs nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use ipnet::IpNet;

use crate::config::{Config, Family, PortSpec, Protocol, ServiceName};
use crate::firewall::model::{ChainRules, FamilyHoldings, Listed, PortState};
use crate::intake::intent::Want;

/// What happens to a new connection to one port spec from an address on
/// the internet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub state: PortState,
    /// The rule that decided, with its chain, when one did (not the policy).
    pub decided_by: Option<(String, Listed)>,
    /// The first rule that let some new connections through, with its chain.
    pub passed_by: Option<(String, Listed)>,
}

/// The state of `service` in one family, from its ports' verdicts.
pub fn service_state(
    config: &Config,
    held: &FamilyHoldings,
    family: Family,
    service: &ServiceName,
    now: DateTime<Utc>,
) -> PortState {
    let states: Vec<PortState> = config.services[service]
        .iter()
        .map(|ports| port_verdict(config, held, family, *ports, now).state)
        .collect();
    combine(&states)
}

/// Where the rules of one family do something other than what is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// `ports` of `service` are more open than wanted; `passed_by` is the
    /// first rule that lets some new connections through, with its chain.
    TooOpen {
        service: ServiceName,
        ports: PortSpec,
        state: PortState,
        passed_by: Option<(String, Listed)>,
    },
    /// `ports` of `service`, wanted open, are closed by something that is
    /// not portlocker's: a rule, with its chain, or INPUT's policy (None).
    ClosedByOthers {
        service: ServiceName,
        ports: PortSpec,
        by: Option<(String, Listed)>,
    },
    /// `ports` of `service`, wanted open, are closed by portlocker's rule
    /// for `other`, a service that shares the port and is wanted closed.
    ClosedBySharer {
        service: ServiceName,
        ports: PortSpec,
        other: String,
    },
}

/// Compares what the rules of `family` do with `wants`, port by port:
/// what runs check after their changes, and `check` on the firewall as a
/// run would leave it.
pub fn mismatches(
    config: &Config,
    wants: &BTreeMap<ServiceName, Want>,
    held: &FamilyHoldings,
    family: Family,
    now: DateTime<Utc>,
) -> Vec<Mismatch> {
    let mut found = Vec::new();
    for (service, want) in wants {
        for &ports in &config.services[service] {
            let verdict = port_verdict(config, held, family, ports, now);
            let allowed: &[PortState] = match want {
                Want::Closed => &[PortState::Closed],
                Want::OpenTo(_) => &[PortState::Closed, PortState::OpenToSources],
                Want::Open(_) => {
                    let tag = verdict.decided_by.as_ref().and_then(|(_, rule)| rule.tag());
                    let sharer = tag
                        .map(|tag| tag.trim_start_matches("portlocker:"))
                        .filter(|other| *other != service.as_str());
                    if let (PortState::Closed, Some(other)) = (verdict.state, sharer) {
                        found.push(Mismatch::ClosedBySharer {
                            service: service.clone(),
                            ports,
                            other: other.to_owned(),
                        });
                        continue;
                    }
                    if verdict.state == PortState::Closed && tag.is_none() {
                        found.push(Mismatch::ClosedByOthers {
                            service: service.clone(),
                            ports,
                            by: verdict.decided_by,
                        });
                    }
                    continue;
                }
            };
            if !allowed.contains(&verdict.state) {
                found.push(Mismatch::TooOpen {
                    service: service.clone(),
                    ports,
                    state: verdict.state,
                    passed_by: verdict.passed_by,
                });
            }
        }
    }
    found
}

/// One state for a service from the states of its ports.
fn combine(states: &[PortState]) -> PortState {
    let all = |wanted: PortState| states.iter().all(|&state| state == wanted);
    if states.contains(&PortState::Unknown) {
        PortState::Unknown
    } else if all(PortState::Closed) {
        PortState::Closed
    } else if all(PortState::Open) {
        PortState::Open
    } else if states
        .iter()
        .all(|state| matches!(state, PortState::Closed | PortState::OpenToSources))
    {
        PortState::OpenToSources
    } else {
        PortState::Partial
    }
}

/// Walks INPUT, and portlocker's chain where INPUT jumps to it, as the
/// kernel would for a new connection to `ports`.
pub fn port_verdict(
    config: &Config,
    held: &FamilyHoldings,
    family: Family,
    ports: PortSpec,
    now: DateTime<Utc>,
) -> Verdict {
    let ours = config.firewall.chain.as_str();
    let mut walk = Walk::default();
    for rule in &held.input.rules {
        let Some(effect) = effect(rule, family, ports, now) else {
            continue;
        };
        if effect.target == Target::Return && effect.reach == Reach::All {
            // RETURN from INPUT falls to the policy.
            break;
        }
        let outcome = match (&effect.target, &effect.reach) {
            (Target::Chain(name), Reach::All)
                if name == ours && !config.firewall.chain.is_input() =>
            {
                match &held.chain {
                    Some(chain) => walk.chain(chain, ours, family, ports, now),
                    // A jump to a chain that could not be read.
                    None => Some(Decision::Unknown),
                }
            }
            _ => walk.step(&effect, rule, "INPUT"),
        };
        if let Some(decision) = outcome {
            return walk.finish(decision);
        }
    }
    let decision = match held.input.policy.as_deref() {
        Some("ACCEPT") => Decision::Pass,
        Some("DROP") => Decision::Drop(None),
        _ => Decision::Unknown,
    };
    walk.finish(decision)
}

/// What the walk has seen so far.
#[derive(Debug, Default)]
struct Walk {
    /// Some known sources get through.
    some_pass: bool,
    /// Something the rules do not tell may get through.
    unknown_pass: bool,
    /// The first rule that let something through.
    passed_by: Option<(String, Listed)>,
}

#[derive(Debug)]
enum Decision {
    Pass,
    Drop(Option<(String, Listed)>),
    Unknown,
}

impl Walk {
    /// Walks portlocker's chain; None when the connection returns to INPUT.
    fn chain(
        &mut self,
        chain: &ChainRules,
        name: &str,
        family: Family,
        ports: PortSpec,
        now: DateTime<Utc>,
    ) -> Option<Decision> {
        for rule in &chain.rules {
            let Some(effect) = effect(rule, family, ports, now) else {
                continue;
            };
            if effect.target == Target::Return && effect.reach == Reach::All {
                return None;
            }
            if let Some(decision) = self.step(&effect, rule, name) {
                return Some(decision);
            }
        }
        None
    }

    /// One rule that applies to the port; Some when it decides. A RETURN
    /// for everyone is the caller's: it leaves the chain.
    fn step(&mut self, effect: &Effect, rule: &Listed, chain: &str) -> Option<Decision> {
        match &effect.target {
            // A RETURN for some gets them past this chain's drops.
            Target::Accept | Target::Return => {}
            Target::Drop => {
                if effect.reach == Reach::All && effect.leaky {
                    // Closed but for untracked packets, which this run cannot rule out.
                    self.unknown_pass = true;
                }
                return (effect.reach == Reach::All)
                    .then(|| Decision::Drop(Some((chain.to_owned(), rule.clone()))));
            }
            // Another chain may accept or drop; only what it lets through matters here.
            Target::Chain(_) => {
                self.unknown_pass = true;
                self.passed_by
                    .get_or_insert_with(|| (chain.to_owned(), rule.clone()));
                return None;
            }
            Target::Continue => return None,
        }
        self.passed_by
            .get_or_insert_with(|| (chain.to_owned(), rule.clone()));
        match effect.reach {
            Reach::All => Some(Decision::Pass),
            Reach::Sources => {
                self.some_pass = true;
                None
            }
            Reach::Unknown => {
                self.unknown_pass = true;
                None
            }
        }
    }

    fn finish(self, decision: Decision) -> Verdict {
        let passed_by = self.passed_by;
        match decision {
            Decision::Pass => Verdict {
                state: PortState::Open,
                decided_by: None,
                passed_by,
            },
            Decision::Unknown => Verdict {
                state: PortState::Unknown,
                decided_by: None,
                passed_by,
            },
            Decision::Drop(by) => Verdict {
                state: if self.unknown_pass {
                    PortState::Unknown
                } else if self.some_pass {
                    PortState::OpenToSources
                } else {
                    PortState::Closed
                },
                decided_by: by,
                passed_by,
            },
        }
    }
}

/// What a rule does to new connections to the port, when it concerns them.
#[derive(Debug, PartialEq, Eq)]
struct Effect {
    target: Target,
    reach: Reach,
    /// It matches new connections only as conntrack tracks them: packets a
    /// NOTRACK rule left untracked go past it.
    leaky: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Target {
    Accept,
    Drop,
    Return,
    /// Another chain: it may decide either way.
    Chain(String),
    /// Logs or marks, and the packet goes on.
    Continue,
}

/// Which new connections to the port the rule matches.
#[derive(Debug, PartialEq, Eq)]
enum Reach {
    All,
    /// Only from some known networks.
    Sources,
    /// Under conditions portlocker does not evaluate.
    Unknown,
}

/// Targets after which the packet goes on to the next rule.
const NON_TERMINAL: &[&str] = &[
    "LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "CT", "AUDIT", "TRACE", "CLASSIFY", "TCPMSS",
];

/// The effect of `rule` on a new connection to `ports` in `family`, or None
/// when it cannot match one (another protocol or port, loopback only,
/// established connections only).
fn effect(rule: &Listed, family: Family, ports: PortSpec, now: DateTime<Utc>) -> Option<Effect> {
    let words = &rule.spec;
    let mut unknown = false;
    let mut source = false;
    let mut untracked_pass = false;
    let mut target = None;
    let mut i = 0;
    let value = |i: usize| words.get(i + 1).map(String::as_str).unwrap_or("");
    while i < words.len() {
        let word = words[i].as_str();
        match word {
            "!" => {
                // A negated match: too many cases to follow honestly. Skip
                // the option it negates and its values, never reading them
                // as a positive match (`! --dport 23` is not `--dport 23`).
                unknown = true;
                i += 2;
                while words.get(i).is_some_and(|word| !word.starts_with('-')) {
                    i += 1;
                }
                continue;
            }
            "-s" => match value(i).parse::<IpNet>() {
                Ok(net) if net.prefix_len() == 0 && same_family(&net, family) => {}
                Ok(_) => source = true,
                Err(_) => unknown = true,
            },
            "-i" if value(i) == "lo" => return None,
            "-p" => match value(i) {
                "all" | "0" => {}
                "tcp" | "6" if ports.protocol == Protocol::Tcp => {}
                "udp" | "17" if ports.protocol == Protocol::Udp => {}
                _ => return None,
            },
            "-m" => match value(i) {
                "tcp" | "udp" | "comment" | "conntrack" | "state" | "multiport" | "time" => {}
                _ => unknown = true,
            },
            // xt_time, in UTC: the rule matches from its start to its stop.
            "--datestart" | "--datestop" => match kernel_moment(value(i)) {
                Some(moment) if word == "--datestart" && now < moment => return None,
                Some(moment) if word == "--datestop" && now > moment => return None,
                Some(_) => {}
                None => unknown = true,
            },
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                match covers(value(i), ports) {
                    Coverage::All => {}
                    Coverage::None => return None,
                    Coverage::Part => unknown = true,
                }
            }
            "--tcp-flags" => {
                let new =
                    value(i) == "FIN,SYN,RST,ACK" && words.get(i + 2).is_some_and(|w| w == "SYN");
                if !new {
                    unknown = true;
                }
                i += 3;
                continue;
            }
            "--ctstate" | "--state" => {
                // An untracked packet (a NOTRACK rule in the raw table) is
                // never NEW: a rule for NEW alone does not see it.
                let states: Vec<&str> = value(i).split(',').collect();
                match (states.contains(&"NEW"), states.contains(&"UNTRACKED")) {
                    (false, _) => return None,
                    (true, false) => untracked_pass = true,
                    (true, true) => {}
                }
            }
            "--comment" => {}
            "-j" | "-g" => {
                let name = value(i);
                target = Some(match name {
                    "ACCEPT" => Target::Accept,
                    "DROP" | "REJECT" => Target::Drop,
                    "RETURN" => Target::Return,
                    _ if NON_TERMINAL.contains(&name) => Target::Continue,
                    other => Target::Chain(other.to_owned()),
                });
                // What follows are the target's own options.
                break;
            }
            _ => {
                unknown = true;
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    let target = target.unwrap_or(Target::Continue);
    let reach = if unknown {
        Reach::Unknown
    } else if source {
        Reach::Sources
    } else {
        Reach::All
    };
    Some(Effect {
        target,
        reach,
        leaky: untracked_pass,
    })
}

/// A moment as xt_time lists it (`2026-12-01T18:00:00`, UTC).
fn kernel_moment(text: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
        .ok()
        .map(|naive| naive.and_utc())
}

fn same_family(net: &IpNet, family: Family) -> bool {
    matches!(
        (net, family),
        (IpNet::V4(_), Family::Ipv4) | (IpNet::V6(_), Family::Ipv6)
    )
}

enum Coverage {
    All,
    None,
    Part,
}

/// How much of `ports` a `--dport(s)` value (`22`, `60000:61000`, `22,80:90`) covers.
fn covers(value: &str, ports: PortSpec) -> Coverage {
    let mut ranges = Vec::new();
    for item in value.split(',') {
        let (low, high) = item.split_once(':').unwrap_or((item, item));
        let (Ok(low), Ok(high)) = (low.parse::<u16>(), high.parse::<u16>()) else {
            return Coverage::Part;
        };
        ranges.push((low, high));
    }
    let wanted = u32::from(ports.last) - u32::from(ports.first) + 1;
    let covered: u32 = (ports.first..=ports.last)
        .filter(|port| ranges.iter().any(|(low, high)| low <= port && port <= high))
        .count() as u32;
    match covered {
        0 => Coverage::None,
        n if n == wanted => Coverage::All,
        _ => Coverage::Part,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The moment verdicts are read at in tests.
    fn test_now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .to_utc()
    }
    use crate::firewall::model::split_listed;

    fn config(extra: &str) -> Config {
        Config::parse(&format!(
            "source = \"-\"\n[firewall]\n{extra}\n[services]\nssh = 22\nmosh = \"60000-61000/udp\"\nweb = [80, 443]\n"
        ))
        .unwrap()
    }

    fn chain(policy: Option<&str>, lines: &[&str]) -> ChainRules {
        ChainRules {
            policy: policy.map(String::from),
            rules: lines
                .iter()
                .map(|line| Listed::new(split_listed(line)))
                .collect(),
        }
    }

    const JUMP: &str = "-m comment --comment portlocker:jump.a -j PORTLOCKER";
    const SSH_DROP: &str = "-p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment portlocker:ssh -j DROP";

    fn ssh(config: &Config, input: &[&str], ours: Option<&[&str]>) -> PortState {
        let held = FamilyHoldings {
            input: chain(Some("ACCEPT"), input),
            chain: ours.map(|rules| chain(None, rules)),
            docker_user: false,
        };
        let ssh = ServiceName::new("ssh").unwrap();
        service_state(config, &held, Family::Ipv4, &ssh, test_now())
    }

    #[test]
    fn the_states_as_the_rules_in_order_make_them() {
        use PortState::*;
        let c = config("");
        // INPUT's rules, portlocker's chain's (None: no such chain), the state.
        type Case<'a> = (&'a [&'a str], Option<&'a [&'a str]>, PortState);
        let cases: &[Case] = &[
            (&[], None, Open),
            (&[JUMP], Some(&[]), Open),
            (&[JUMP], Some(&[SSH_DROP]), Closed),
            // The owner's ACCEPT inside portlocker's chain, above the DROP.
            (
                &[JUMP],
                Some(&["-p tcp -m tcp --dport 22 -j ACCEPT", SSH_DROP]),
                Open,
            ),
            (&[JUMP], Some(&["-j RETURN", SSH_DROP]), Open),
            (&[JUMP], Some(&["-p tcp -j ACCEPT", SSH_DROP]), Open),
            // Another port's ACCEPT changes nothing.
            (
                &[JUMP],
                Some(&["-p tcp -m tcp --dport 80 -j ACCEPT", SSH_DROP]),
                Closed,
            ),
            (&[JUMP], Some(&["-p udp -j ACCEPT", SSH_DROP]), Closed),
            // Sources let through before the DROP.
            (
                &[JUMP],
                Some(&[
                    "-s 203.0.113.7/32 -p tcp -m tcp --dport 22 -m comment --comment portlocker:ssh -j RETURN",
                    SSH_DROP,
                ]),
                OpenToSources,
            ),
            // A rule portlocker cannot evaluate, above the DROP.
            (
                &[JUMP],
                Some(&["-m set --match-set allow src -j ACCEPT", SSH_DROP]),
                Unknown,
            ),
            (&[JUMP], Some(&["-j SOMEWHERE", SSH_DROP]), Unknown),
            // Rules that cannot match a new connection from the internet.
            (
                &[JUMP],
                Some(&[
                    "-i lo -j ACCEPT",
                    "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                    SSH_DROP,
                ]),
                Closed,
            ),
            // A jump that is not first: what is above it decides first.
            (
                &["-p tcp -m tcp --dport 22 -j ACCEPT", JUMP],
                Some(&[SSH_DROP]),
                Open,
            ),
            // An untagged DROP of the owner's (the original script's rule).
            (
                &[JUMP, "-p tcp -m tcp --dport 22 -j DROP"],
                Some(&[]),
                Closed,
            ),
            (&["-p tcp -m tcp --dport 22 -j DROP"], None, Closed),
            // A conditional drop does not close a port for everyone.
            (&["-s 198.51.100.0/24 -j DROP"], None, Open),
            // A jump to a chain that could not be read.
            (&[JUMP], None, Unknown),
        ];
        for (input, ours, expected) in cases {
            assert_eq!(ssh(&c, input, *ours), *expected, "{input:?} {ours:?}");
        }
    }

    #[test]
    fn with_chain_input_an_accept_above_the_drop_opens() {
        let c = config("chain = \"INPUT\"");
        assert_eq!(ssh(&c, &[SSH_DROP], None), PortState::Closed);
        assert_eq!(
            ssh(&c, &["-p tcp -m tcp --dport 22 -j ACCEPT", SSH_DROP], None),
            PortState::Open
        );
        assert_eq!(
            ssh(
                &c,
                &[
                    "-s 10.0.0.0/8 -p tcp -m tcp --dport 22 -m comment --comment portlocker:ssh -j ACCEPT",
                    SSH_DROP
                ],
                None
            ),
            PortState::OpenToSources
        );
    }

    #[test]
    fn policy_drop_closes_what_nothing_accepts() {
        let c = config("");
        let held = FamilyHoldings {
            input: chain(Some("DROP"), &["-p tcp -m tcp --dport 22 -j ACCEPT"]),
            chain: None,
            docker_user: false,
        };
        let web = ServiceName::new("web").unwrap();
        let ssh = ServiceName::new("ssh").unwrap();
        assert_eq!(
            service_state(&c, &held, Family::Ipv4, &ssh, test_now()),
            PortState::Open
        );
        assert_eq!(
            service_state(&c, &held, Family::Ipv4, &web, test_now()),
            PortState::Closed
        );
    }

    #[test]
    fn ranges_and_multiport() {
        let c = config("");
        let ports = PortSpec::parse("60000-61000/udp").unwrap();
        let held = |lines: &[&str]| FamilyHoldings {
            input: chain(Some("ACCEPT"), lines),
            chain: None,
            docker_user: false,
        };
        let state =
            |lines: &[&str]| port_verdict(&c, &held(lines), Family::Ipv4, ports, test_now()).state;
        assert_eq!(
            state(&["-p udp -m udp --dport 60000:61000 -j DROP"]),
            PortState::Closed
        );
        assert_eq!(
            state(&["-p udp -m multiport --dports 1,59000:62000 -j DROP"]),
            PortState::Closed
        );
        assert_eq!(
            state(&["-p udp -m udp --dport 60500 -j ACCEPT", "-p udp -j DROP"]),
            PortState::Unknown
        );
        assert_eq!(
            state(&["-p udp -m udp --dport 60500 -j DROP"]),
            PortState::Open
        );
        assert_eq!(
            state(&["-p tcp -m tcp --dport 60000:61000 -j DROP"]),
            PortState::Open
        );
    }

    #[test]
    fn a_service_is_closed_only_when_every_port_is() {
        use PortState::*;
        assert_eq!(combine(&[Closed, Closed]), Closed);
        assert_eq!(combine(&[Closed, Open]), Partial);
        assert_eq!(combine(&[Closed, OpenToSources]), OpenToSources);
        assert_eq!(combine(&[Closed, Unknown]), Unknown);
        assert_eq!(combine(&[Open, Open]), Open);
    }

    #[test]
    fn a_negated_match_is_never_read_as_a_positive_one() {
        let c = config("chain = \"INPUT\"");
        for rule in [
            "-p tcp -m tcp ! --dport 23 -j ACCEPT",
            "! -p udp -j ACCEPT",
            "-p tcp -m multiport ! --dports 25,465 -j ACCEPT",
            "-m conntrack ! --ctstate INVALID -j ACCEPT",
            "-p tcp -m tcp ! --dport 1:21 -j ACCEPT",
            "! -i lo -j ACCEPT",
            "! -s 10.0.0.0/8 -j ACCEPT",
        ] {
            let state = ssh(&c, &[rule, SSH_DROP], None);
            assert_ne!(state, PortState::Closed, "{rule}");
            assert_eq!(state, PortState::Unknown, "{rule}");
        }
    }

    #[test]
    fn a_drop_for_new_connections_alone_is_not_sure_to_close_a_udp_port() {
        let c = config("");
        let ports = PortSpec::parse("60000-61000/udp").unwrap();
        let held = |rule: &str| FamilyHoldings {
            input: chain(Some("ACCEPT"), &[rule]),
            chain: None,
            docker_user: false,
        };
        let state =
            |rule: &str| port_verdict(&c, &held(rule), Family::Ipv4, ports, test_now()).state;
        // A NOTRACK rule in the raw table would carry a new flow past it.
        assert_eq!(
            state("-p udp -m udp --dport 60000:61000 -m conntrack --ctstate NEW -j DROP"),
            PortState::Unknown
        );
        assert_eq!(
            state("-p udp -m udp --dport 60000:61000 -m conntrack --ctstate NEW,UNTRACKED -j DROP"),
            PortState::Closed
        );
    }
}
