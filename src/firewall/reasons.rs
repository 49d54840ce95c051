//! Why a service is in its state in one family, in the rules' own words:
//! the evaluator's answer (`truth`) as the reason the report shows beside
//! each state, and, where it differs from what the control file asks, what
//! the owner can do about it — from the backend or manager whose rule it
//! is (`firewall::remedy`), never the removal of a default deny or of
//! another manager's rule. Pure: reads the host's model, runs nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::config::{Config, Family, PortSpec, ServiceName};
use crate::firewall::eval::Cited;
use crate::firewall::model::PortState;
use crate::firewall::ruleset::{Host, Manager};
use crate::firewall::truth::{self, Mismatch};
use crate::firewall::{self, Remedy};
use crate::intake::intent::Want;

/// A service's state in one family, why, and what would make it as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub state: PortState,
    /// The deciding rule(s), as their tool shows them, with what they do.
    pub reason: String,
    /// When the state is not what is asked: what to change, and where.
    pub advice: Option<String>,
    /// A source the control file opens it to is kept out by others: not as
    /// asked, though its state is the one asked (open to sources).
    pub shut_out: bool,
}

/// What `host` does to `service` in `family` at `now`, against what the
/// control file wants of it (`asking`: the want, and the state it asks for
/// in this family).
pub fn seen(
    config: &Config,
    host: &Host,
    family: Family,
    service: &ServiceName,
    asking: Option<(&Want, PortState)>,
    now: DateTime<Utc>,
) -> Seen {
    let found = truth::service_state(config, host, family, service, now);
    let differs = |&(_, asked): &(&Want, PortState)| {
        found.state != asked && found.state != PortState::Unknown
    };
    // Open to sources as asked may still keep out one of them.
    let to_sources = |&(want, _): &(&Want, PortState)| matches!(want, Want::OpenTo(_));
    let path = host.family(family);
    let mut advice: Vec<String> = Vec::new();
    let mut shut = Vec::new();
    let asked = asking.filter(|asking| differs(asking) || to_sources(asking));
    if let (Some((want, _)), Some(path)) = (asked, path) {
        let wants = BTreeMap::from([(service.clone(), want.clone())]);
        for mismatch in truth::mismatches(config, &wants, path, now) {
            if let Mismatch::SourceShut { source, by, .. } = &mismatch {
                let by: Vec<String> = by.iter().map(Cited::shown).collect();
                shut.push(format!("closed to {source} by {}", by.join(" and ")));
            }
            for fix in advise(config, &mismatch) {
                if !advice.contains(&fix) {
                    advice.push(fix);
                }
            }
        }
    }
    let reason = match shut.is_empty() {
        true => found.reason,
        false => format!("{}; {}", found.reason, shut.join("; ")),
    };
    Seen {
        state: found.state,
        reason,
        advice: (!advice.is_empty()).then(|| advice.join("; ")),
        shut_out: !shut.is_empty(),
    }
}

/// Whether `state` lets fewer in than `asked`: a lockout, rather than an
/// opening the owner did not ask for.
pub fn more_closed(state: PortState, asked: PortState) -> bool {
    match asked {
        PortState::Open => matches!(
            state,
            PortState::Closed | PortState::OpenToSources | PortState::Partial
        ),
        PortState::OpenToSources => state == PortState::Closed,
        _ => false,
    }
}

/// What would make one port as asked, for each thing in the way.
fn advise(config: &Config, mismatch: &Mismatch) -> Vec<String> {
    match mismatch {
        Mismatch::TooOpen {
            ports,
            passed_by: Some(by),
            ..
        } if by.rule.is_some() => vec![match (by.tag(), firewall::remedy(config, by)) {
            (Some(_), _) => format!("{} is portlocker's own", by.shown()),
            // What Docker publishes, portlocker closes where Docker forwards.
            (None, Remedy::OwnedBy(Manager::Docker)) if by.table == "nat" => format!(
                "{} is Docker's, publishing it: a run closes {ports} where Docker forwards \
                 (first in DOCKER-USER) once Docker's chains are there; where Docker keeps no \
                 DOCKER-USER (its nftables firewall, or iptables-legacy), stop publishing it \
                 through Docker",
                by.shown()
            ),
            (None, Remedy::OwnedBy(manager)) => format!(
                "{} is {manager}'s: close {ports} through {manager}, or accept it only where \
                 you mean to",
                by.shown()
            ),
            (None, _) => format!(
                "{} is not portlocker's: remove it, or accept {ports} only where you mean to",
                by.shown()
            ),
        }],
        // The run's failure says why (Docker, a rule portlocker cannot read).
        Mismatch::TooOpen { .. } => Vec::new(),
        // The reason beside it names a lone rule already.
        Mismatch::ClosedByOthers { ports, by, .. } if by.len() == 1 => {
            vec![whose(config, &by[0], *ports)]
        }
        Mismatch::ClosedByOthers { ports, by, .. } => by
            .iter()
            .map(|by| format!("{} closes it: {}", named(by), advice(config, by, *ports)))
            .collect(),
        Mismatch::SourceShut {
            ports, source, by, ..
        } => by
            .iter()
            .map(|by| {
                format!(
                    "{} closes it to {source}: {}",
                    named(by),
                    advice(config, by, *ports)
                )
            })
            .collect(),
        Mismatch::ClosedBySharer { ports, other, .. } => vec![format!(
            "it shares {ports} with {other}, which the control file closes: open {other} too, \
             or take {ports} out of one of them"
        )],
    }
}

/// What to do about the lone rule (or policy) `by`, which the reason beside
/// it names: `it is not portlocker's: remove it with …`.
fn whose(config: &Config, by: &Cited, ports: PortSpec) -> String {
    let advice = advice(config, by, ports);
    match (&by.rule, by.manager) {
        (Some(_), Some(manager)) => format!("it is {manager}'s: {advice}"),
        (Some(_), None) => format!("it is not portlocker's: {advice}"),
        (None, _) => advice,
    }
}

/// A rule (or policy) of others as a message's subject, with whose it is:
/// `` `RULE` is not portlocker's and``.
pub(crate) fn named(by: &Cited) -> String {
    match (&by.rule, by.manager) {
        (Some(_), Some(manager)) => format!("{} is {manager}'s and", by.shown()),
        (Some(_), None) => format!("{} is not portlocker's and", by.shown()),
        (None, _) => by.shown(),
    }
}

/// What the owner can do about `by`, which closes `ports`.
pub(crate) fn advice(config: &Config, by: &Cited, ports: PortSpec) -> String {
    match firewall::remedy(config, by) {
        Remedy::OwnedBy(manager) => format!("let {ports} in through {manager}"),
        Remedy::Remove(command) => format!("remove it with `{command}`"),
        Remedy::DefaultDeny if by.rule.is_none() => {
            format!("accept {ports} in a rule of your own in that chain")
        }
        Remedy::DefaultDeny => format!(
            "it drops every port no rule before it accepts, so accept {ports} in a rule of your \
             own before it"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::host::of_holdings;
    use crate::firewall::model::{ChainRules, FamilyHoldings, Holdings, Listed, split_listed};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn config(services: &str) -> Config {
        Config::parse(&format!(
            "source = \"-\"\n[firewall]\niptables = \"/sbin/iptables\"\nipv6 = false\n\
             [services]\n{services}"
        ))
        .unwrap()
    }

    /// A host whose IPv4 is INPUT (with `policy`, `input`) and portlocker's chain.
    fn host(c: &Config, policy: &str, input: &[&str], ours: Option<&[&str]>) -> Host {
        let chain = |policy: Option<&str>, lines: &[&str]| ChainRules {
            policy: policy.map(String::from),
            rules: lines
                .iter()
                .map(|line| Listed::new(split_listed(line)))
                .collect(),
        };
        let held = FamilyHoldings {
            input: chain(Some(policy), input),
            chain: ours.map(|rules| chain(None, rules)),
            docker_user: false,
        };
        let holdings = Holdings {
            families: BTreeMap::from([(Family::Ipv4, Some(held))]),
        };
        of_holdings(c, &holdings)
    }

    const JUMP: &str = "-m comment --comment portlocker:jump.a -j PORTLOCKER";
    const SSH_DROP: &str = "-p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment portlocker:ssh -j DROP";

    fn ssh() -> ServiceName {
        ServiceName::new("ssh").unwrap()
    }

    const OPEN: Option<(&Want, PortState)> = Some((&Want::Open(None), PortState::Open));

    /// The lockout: `open ssh`, then someone else's DROP for 22.
    #[test]
    fn a_lockout_names_the_rule_and_how_to_remove_it() {
        let c = config("ssh = 22\n");
        let host = host(
            &c,
            "ACCEPT",
            &[JUMP, "-p tcp -m tcp --dport 22 -j DROP"],
            Some(&[]),
        );
        let seen = seen(&c, &host, Family::Ipv4, &ssh(), OPEN, now());
        assert_eq!(seen.state, PortState::Closed);
        assert!(
            seen.reason
                .contains("`-A INPUT -p tcp -m tcp --dport 22 -j DROP`"),
            "{}",
            seen.reason
        );
        let advice = seen.advice.unwrap();
        assert!(
            advice.contains(
                "remove it with `/sbin/iptables -w 10 -D INPUT -p tcp -m tcp --dport 22 -j DROP`"
            ),
            "{advice}"
        );
        assert!(more_closed(seen.state, PortState::Open));
    }

    /// A port Docker publishes, asked closed while portlocker's rules are
    /// not yet where Docker forwards: the advice is not to go through
    /// Docker, which a run makes needless (hostile tester 11).
    #[test]
    fn a_port_docker_publishes_is_advised_as_a_run_closes_it() {
        let c = config("ssh = 22\n");
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
                    -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
                    -A DOCKER ! -i docker0 -p tcp -m tcp --dport 22 -j DNAT --to-destination 172.17.0.2:22\n\
                    COMMIT\n";
        let recorded = crate::firewall::host::Recorded {
            iptables_save: Some(save.to_owned()),
            local: vec!["192.0.2.1".parse().unwrap()],
            interfaces: Some(vec!["eth0".to_owned()]),
            ..Default::default()
        };
        let host = crate::firewall::host::from_recorded(&recorded, &[Family::Ipv4]).unwrap();
        let closed = Some((&Want::Closed, PortState::Closed));
        let seen = seen(&c, &host, Family::Ipv4, &ssh(), closed, now());
        assert_eq!(seen.state, PortState::Open, "{}", seen.reason);
        let advice = seen.advice.unwrap();
        assert!(
            advice.contains("a run closes 22/tcp where Docker forwards"),
            "{advice}"
        );
    }

    /// For a default deny, never the advice to delete it: that would open
    /// every other port.
    #[test]
    fn a_default_deny_and_a_policy_get_safe_advice() {
        let c = config("ssh = 22\n");
        let deny = host(&c, "ACCEPT", &["-j DROP"], None);
        let seen_deny = seen(&c, &deny, Family::Ipv4, &ssh(), OPEN, now());
        assert_eq!(seen_deny.state, PortState::Closed);
        let advice = seen_deny.advice.unwrap();
        assert!(
            advice.contains("drops every port no rule before it accepts, so accept 22/tcp"),
            "{advice}"
        );
        assert!(!advice.contains("-D INPUT"), "{advice}");
        let policy = host(&c, "DROP", &[], None);
        let seen_policy = seen(&c, &policy, Family::Ipv4, &ssh(), OPEN, now());
        assert_eq!(seen_policy.state, PortState::Closed);
        let advice = seen_policy.advice.unwrap();
        assert!(
            advice.contains("accept 22/tcp in a rule of your own"),
            "{advice}"
        );
        assert!(!advice.contains("remove"), "{advice}");
    }

    #[test]
    fn a_port_shared_with_a_closed_service_says_so() {
        let c = config("ssh = 22\nalt = 22\n");
        let alt_drop = SSH_DROP.replace("portlocker:ssh", "portlocker:alt");
        let host = host(&c, "ACCEPT", &[JUMP], Some(&[alt_drop.as_str()]));
        let seen = seen(&c, &host, Family::Ipv4, &ssh(), OPEN, now());
        assert_eq!(seen.state, PortState::Closed);
        assert_eq!(
            seen.advice.as_deref(),
            Some(
                "it shares 22/tcp with alt, which the control file closes: open alt too, or take \
                 22/tcp out of one of them"
            )
        );
    }

    #[test]
    fn as_asked_there_is_a_reason_and_no_advice() {
        let c = config("ssh = 22\nweb = [80, 443]\n");
        let ours = host(&c, "ACCEPT", &[JUMP], Some(&[SSH_DROP]));
        let closed = seen(
            &c,
            &ours,
            Family::Ipv4,
            &ssh(),
            Some((&Want::Closed, PortState::Closed)),
            now(),
        );
        assert_eq!(closed.state, PortState::Closed);
        assert!(
            closed.reason.contains("portlocker:ssh"),
            "{}",
            closed.reason
        );
        assert_eq!(closed.advice, None);
        let web = ServiceName::new("web").unwrap();
        let open = seen(&c, &ours, Family::Ipv4, &web, None, now());
        assert_eq!(open.state, PortState::Open);
        assert_eq!(open.advice, None);
        let half = host(
            &c,
            "ACCEPT",
            &[JUMP, "-p tcp -m tcp --dport 443 -j DROP"],
            Some(&[]),
        );
        let partly = seen(&c, &half, Family::Ipv4, &web, None, now());
        assert_eq!(partly.state, PortState::Partial);
        assert!(
            partly.reason.starts_with("80/tcp: ") && partly.reason.contains("; 443/tcp: "),
            "{}",
            partly.reason
        );
        let unread = seen(&c, &Host::default(), Family::Ipv6, &web, OPEN, now());
        assert_eq!(unread.state, PortState::Unknown);
        assert_eq!(unread.advice, None);
    }

    #[test]
    fn more_closed_is_a_lockout_in_either_kind_of_open() {
        use PortState::*;
        for (state, asked, lockout) in [
            (Closed, Open, true),
            (OpenToSources, Open, true),
            (Partial, Open, true),
            (Closed, OpenToSources, true),
            (Open, OpenToSources, false),
            (Open, Closed, false),
            (Partial, Closed, false),
            (Open, Open, false),
            (Unknown, Open, false),
            (Unknown, OpenToSources, false),
        ] {
            assert_eq!(more_closed(state, asked), lockout, "{state:?} {asked:?}");
        }
    }
}
