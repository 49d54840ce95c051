//! Why a service is in its state in one family, in the rules' own words:
//! today's verdicts (`verdict`) turned into the reason the report shows
//! beside each state, and, where it differs from what the control file
//! asks, what the owner can do about it. Pure: reads holdings, runs nothing.

use chrono::{DateTime, Utc};

use crate::config::{Config, Family, PortSpec, ServiceName};
use crate::firewall::iptables;
use crate::firewall::model::{FamilyHoldings, Listed, PortState};
use crate::firewall::verdict::{self, Verdict};

/// A service's state in one family, why, and what would make it as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub state: PortState,
    /// The deciding rule(s), as `iptables -S` shows them, with what they do.
    pub reason: String,
    /// When the state is not what `asked` says: what to change, and where.
    pub advice: Option<String>,
}

/// What `held` (None: the family could not be read) does to `service` in
/// `family` at `now`, against what the control file asks (`asked`).
pub fn seen(
    config: &Config,
    held: Option<&FamilyHoldings>,
    family: Family,
    service: &ServiceName,
    asked: Option<PortState>,
    now: DateTime<Utc>,
) -> Seen {
    let Some(held) = held else {
        return Seen {
            state: PortState::Unknown,
            reason: format!("{family} could not be read"),
            advice: None,
        };
    };
    let ports: Vec<(PortSpec, Verdict)> = config.services[service]
        .iter()
        .map(|&ports| {
            let verdict = verdict::port_verdict(config, held, family, ports, now);
            (ports, verdict)
        })
        .collect();
    let state = verdict::service_state(config, held, family, service, now);
    // The ports that make the difference, when there is one; else all.
    let differing: Vec<&(PortSpec, Verdict)> = match asked {
        Some(asked) if state != asked && state != PortState::Unknown => ports
            .iter()
            .filter(|(_, verdict)| verdict.state != asked)
            .collect(),
        _ => ports.iter().collect(),
    };
    let each: Vec<(PortSpec, String)> = differing
        .iter()
        .map(|(spec, verdict)| (*spec, port_reason(verdict)))
        .collect();
    // One reason for all the ports, or each port's own.
    let reason = if each.windows(2).all(|pair| pair[0].1 == pair[1].1) || ports.len() == 1 {
        each.first()
            .map(|(_, reason)| reason.clone())
            .unwrap_or_default()
    } else {
        let listed: Vec<String> = each
            .iter()
            .map(|(spec, reason)| format!("{spec}: {reason}"))
            .collect();
        listed.join("; ")
    };
    let mut advice: Vec<String> = Vec::new();
    for (spec, verdict) in &differing {
        if let Some(asked) = asked.filter(|&asked| asked != state && state != PortState::Unknown)
            && let Some(fix) = port_advice(config, family, service, *spec, verdict, asked)
            && !advice.contains(&fix)
        {
            advice.push(fix);
        }
    }
    Seen {
        state,
        reason,
        advice: (!advice.is_empty()).then(|| advice.join("; ")),
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

/// What decided one port's verdict, in the rules' words.
fn port_reason(verdict: &Verdict) -> String {
    let shown = |(chain, rule): &(String, Listed)| format!("`{}`", rule.shown(chain));
    let decided = verdict.decided_by.as_ref().map(shown);
    let passed = verdict.passed_by.as_ref().map(shown);
    match verdict.state {
        PortState::Open => match passed {
            Some(rule) => format!("{rule} lets it through"),
            None => "nothing drops it, and INPUT's policy is ACCEPT".to_owned(),
        },
        PortState::Closed => match decided {
            Some(rule) => format!("{rule} drops it"),
            None => "INPUT's policy DROP drops it".to_owned(),
        },
        PortState::OpenToSources => {
            let dropper = decided.unwrap_or_else(|| "INPUT's policy DROP".to_owned());
            match passed {
                Some(rule) => format!("{rule} lets some sources through; {dropper} drops the rest"),
                None => format!("{dropper} drops all but some sources"),
            }
        }
        PortState::Partial | PortState::Unknown => match passed {
            Some(rule) => format!("what {rule} lets through cannot be told"),
            None => "the rules do not say what becomes of it".to_owned(),
        },
    }
}

/// What would make one port as asked, when its verdict says otherwise.
fn port_advice(
    config: &Config,
    family: Family,
    service: &ServiceName,
    ports: PortSpec,
    verdict: &Verdict,
    asked: PortState,
) -> Option<String> {
    if verdict.state == asked {
        return None;
    }
    if !more_closed(verdict.state, asked) {
        // More open than asked: the run says which rule, and `check` how to fix it.
        let (chain, rule) = verdict.passed_by.as_ref()?;
        return Some(match rule.tag() {
            Some(_) => format!("`{}` is portlocker's own", rule.shown(chain)),
            None => format!(
                "`{}` is not portlocker's: remove it, or accept {ports} only where you mean to",
                rule.shown(chain)
            ),
        });
    }
    let Some((chain, rule)) = &verdict.decided_by else {
        return Some(format!(
            "INPUT's policy is DROP: accept {ports} in a rule of your own"
        ));
    };
    let sharer = rule
        .tag()
        .map(|tag| tag.trim_start_matches("portlocker:"))
        .filter(|other| *other != service.as_str() && !other.starts_with("jump."));
    if let Some(other) = sharer {
        return Some(format!(
            "it shares {ports} with {other}, which the control file closes: open {other} too, \
             or take {ports} out of one of them"
        ));
    }
    if rule.tag().is_some() {
        // portlocker's own rule for this service: the next run puts it right.
        return None;
    }
    Some(match iptables::removal(config, family, chain, rule) {
        Some(remove) => format!("it is not portlocker's: remove it with `{remove}`"),
        // Deleting a default deny would open every other port.
        None => format!(
            "it is not portlocker's and drops every port no rule before it accepts: accept \
             {ports} in a rule of your own before it"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::model::{ChainRules, split_listed};

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

    fn held(policy: &str, input: &[&str], ours: Option<&[&str]>) -> FamilyHoldings {
        let chain = |policy: Option<&str>, lines: &[&str]| ChainRules {
            policy: policy.map(String::from),
            rules: lines
                .iter()
                .map(|line| Listed::new(split_listed(line)))
                .collect(),
        };
        FamilyHoldings {
            input: chain(Some(policy), input),
            chain: ours.map(|rules| chain(None, rules)),
            docker_user: false,
        }
    }

    const JUMP: &str = "-m comment --comment portlocker:jump.a -j PORTLOCKER";
    const SSH_DROP: &str = "-p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment portlocker:ssh -j DROP";

    fn ssh() -> ServiceName {
        ServiceName::new("ssh").unwrap()
    }

    /// The lockout: `open ssh`, then someone else's DROP for 22.
    #[test]
    fn a_lockout_names_the_rule_and_how_to_remove_it() {
        let c = config("ssh = 22\n");
        let held = held(
            "ACCEPT",
            &[JUMP, "-p tcp -m tcp --dport 22 -j DROP"],
            Some(&[]),
        );
        let seen = seen(
            &c,
            Some(&held),
            Family::Ipv4,
            &ssh(),
            Some(PortState::Open),
            now(),
        );
        assert_eq!(seen.state, PortState::Closed);
        assert_eq!(
            seen.reason,
            "`-A INPUT -p tcp -m tcp --dport 22 -j DROP` drops it"
        );
        assert_eq!(
            seen.advice.as_deref(),
            Some(
                "it is not portlocker's: remove it with \
                 `/sbin/iptables -w 10 -D INPUT -p tcp -m tcp --dport 22 -j DROP`"
            )
        );
        assert!(more_closed(seen.state, PortState::Open));
    }

    /// For a default deny, never the advice to delete it: that would open
    /// every other port.
    #[test]
    fn a_default_deny_and_a_policy_get_safe_advice() {
        let c = config("ssh = 22\n");
        let open = Some(PortState::Open);
        let deny = held("ACCEPT", &["-j DROP"], None);
        let seen_deny = seen(&c, Some(&deny), Family::Ipv4, &ssh(), open, now());
        assert_eq!(seen_deny.reason, "`-A INPUT -j DROP` drops it");
        assert_eq!(
            seen_deny.advice.as_deref(),
            Some(
                "it is not portlocker's and drops every port no rule before it accepts: accept \
                 22/tcp in a rule of your own before it"
            )
        );
        let policy = held("DROP", &[], None);
        let seen_policy = seen(&c, Some(&policy), Family::Ipv4, &ssh(), open, now());
        assert_eq!(seen_policy.reason, "INPUT's policy DROP drops it");
        assert_eq!(
            seen_policy.advice.as_deref(),
            Some("INPUT's policy is DROP: accept 22/tcp in a rule of your own")
        );
    }

    #[test]
    fn a_port_shared_with_a_closed_service_says_so() {
        let c = config("ssh = 22\nalt = 22\n");
        let alt_drop = SSH_DROP.replace("portlocker:ssh", "portlocker:alt");
        let held = held("ACCEPT", &[JUMP], Some(&[alt_drop.as_str()]));
        let seen = seen(
            &c,
            Some(&held),
            Family::Ipv4,
            &ssh(),
            Some(PortState::Open),
            now(),
        );
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
        let ours = held("ACCEPT", &[JUMP], Some(&[SSH_DROP]));
        let closed = seen(
            &c,
            Some(&ours),
            Family::Ipv4,
            &ssh(),
            Some(PortState::Closed),
            now(),
        );
        assert_eq!(
            closed,
            Seen {
                state: PortState::Closed,
                reason: format!("`-A PORTLOCKER {SSH_DROP}` drops it"),
                advice: None,
            }
        );
        let web = ServiceName::new("web").unwrap();
        let open = seen(&c, Some(&ours), Family::Ipv4, &web, None, now());
        assert_eq!(open.state, PortState::Open);
        assert_eq!(
            open.reason,
            "nothing drops it, and INPUT's policy is ACCEPT"
        );
        let half = held(
            "ACCEPT",
            &[JUMP, "-p tcp -m tcp --dport 443 -j DROP"],
            Some(&[]),
        );
        let partly = seen(&c, Some(&half), Family::Ipv4, &web, None, now());
        assert_eq!(partly.state, PortState::Partial);
        assert_eq!(
            partly.reason,
            "80/tcp: nothing drops it, and INPUT's policy is ACCEPT; 443/tcp: \
             `-A INPUT -p tcp -m tcp --dport 443 -j DROP` drops it"
        );
        let unread = seen(&c, None, Family::Ipv6, &web, Some(PortState::Open), now());
        assert_eq!(unread.state, PortState::Unknown);
        assert_eq!(unread.reason, "IPv6 could not be read");
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
