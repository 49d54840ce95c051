//! What the evaluator says of each configured service, per family, and
//! where that differs from what the owner wants: the one source of the
//! states status, the page, the JSON, the metrics, `check` and a run's
//! verdict report. Pure: reads the model, runs nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use crate::config::{Config, Family, PortSpec, ServiceName};
use crate::firewall::eval::{Answer, Cited, Judge, Question, evaluate};
use crate::firewall::model::PortState;
use crate::firewall::ruleset::{Host, InputPath};
use crate::intake::intent::Want;

/// A service's state in one family, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub state: PortState,
    pub reason: String,
}

/// The state of `service` in `family` of `host`: from its ports' answers;
/// unknown, with why, where the family could not be read.
pub fn service_state(
    config: &Config,
    host: &Host,
    family: Family,
    service: &ServiceName,
    now: DateTime<Utc>,
) -> ServiceState {
    let path = match host.families.get(&family) {
        Some(Ok(path)) => path,
        Some(Err(why)) => {
            return ServiceState {
                state: PortState::Unknown,
                reason: format!("the firewall could not be read: {why}"),
            };
        }
        None => {
            return ServiceState {
                state: PortState::Unknown,
                reason: "the firewall was not read".to_owned(),
            };
        }
    };
    let answers: Vec<(PortSpec, Answer)> = config.services[service]
        .iter()
        .map(|&ports| (ports, port_answer(path, family, ports, None, now)))
        .collect();
    combine(&answers)
}

/// The answer for one port spec, from anywhere or from `from`.
pub fn port_answer(
    path: &InputPath,
    family: Family,
    ports: PortSpec,
    from: Option<IpNet>,
    now: DateTime<Utc>,
) -> Answer {
    evaluate(
        path,
        &Question {
            family,
            ports,
            from,
        },
        now,
    )
}

/// One state for a service from its ports' answers, with the reason of
/// the port that decides it.
fn combine(answers: &[(PortSpec, Answer)]) -> ServiceState {
    let states: Vec<PortState> = answers.iter().map(|(_, answer)| answer.state).collect();
    let all = |wanted: PortState| states.iter().all(|&state| state == wanted);
    let state = if states.contains(&PortState::Unknown) {
        PortState::Unknown
    } else if all(PortState::Closed) {
        PortState::Closed
    } else if all(PortState::Open) {
        PortState::Open
    } else if all(PortState::RateLimited) {
        PortState::RateLimited
    } else if states
        .iter()
        .all(|state| matches!(state, PortState::Closed | PortState::OpenToSources))
    {
        PortState::OpenToSources
    } else {
        PortState::Partial
    };
    let reason = match answers {
        [(_, only)] => only.reason.clone(),
        many => many
            .iter()
            .filter(|(_, answer)| answer.state == state || state == PortState::Partial)
            .map(|(ports, answer)| format!("{ports}: {}", answer.reason))
            .collect::<Vec<_>>()
            .join("; "),
    };
    ServiceState { state, reason }
}

/// Where what reaches a service in one family differs from what is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// `ports` of `service` are more open than wanted; `passed_by` is the
    /// first rule that lets some new connections through.
    TooOpen {
        service: ServiceName,
        ports: PortSpec,
        state: PortState,
        passed_by: Option<Cited>,
        reason: String,
    },
    /// `ports` of `service`, wanted open, are closed by what is not
    /// portlocker's: rules, or a chain's policy.
    ClosedByOthers {
        service: ServiceName,
        ports: PortSpec,
        by: Vec<Cited>,
    },
    /// `ports` of `service`, wanted open, are closed by portlocker's rule
    /// for `other`, a service that shares the port and is wanted closed.
    ClosedBySharer {
        service: ServiceName,
        ports: PortSpec,
        other: String,
    },
    /// `ports` of `service`, opened to `source`, are still closed to it by
    /// what is not portlocker's.
    SourceShut {
        service: ServiceName,
        ports: PortSpec,
        source: IpNet,
        by: Vec<Cited>,
    },
}

/// Compares what `path` does to the managed ports with `wants`, port by
/// port: what runs check after their changes, and `check` on the firewall
/// as a run would leave it.
pub fn mismatches(
    config: &Config,
    wants: &BTreeMap<ServiceName, Want>,
    path: &InputPath,
    now: DateTime<Utc>,
) -> Vec<Mismatch> {
    let family = path.family;
    let judge = Judge::new(path);
    let ask = |ports, from| {
        judge.answer(
            &Question {
                family,
                ports,
                from,
            },
            now,
        )
    };
    let mut found = Vec::new();
    for (service, want) in wants {
        for &ports in &config.services[service] {
            let answer = ask(ports, None);
            found.extend(mismatch(service, ports, want, answer, family));
            if let Want::OpenTo(sources) = want {
                for &source in sources.keys().filter(|net| in_family(net, family)) {
                    let answer = ask(ports, Some(source));
                    if answer.state == PortState::Closed && ours_not_deciding(&answer) {
                        found.push(Mismatch::SourceShut {
                            service: service.clone(),
                            ports,
                            source,
                            by: answer.dropped_by,
                        });
                    }
                }
            }
        }
    }
    found
}

/// What one port's answer says against what is wanted of it.
fn mismatch(
    service: &ServiceName,
    ports: PortSpec,
    want: &Want,
    answer: Answer,
    family: Family,
) -> Option<Mismatch> {
    let everyone = want.opens_to_all(family);
    let allowed: &[PortState] = match want {
        Want::Closed => &[PortState::Closed],
        // Sources that are everyone: open is as asked.
        Want::OpenTo(_) if everyone => return closed_when_open(service, ports, answer),
        Want::OpenTo(_) => &[PortState::Closed, PortState::OpenToSources],
        Want::Open(_) => return closed_when_open(service, ports, answer),
    };
    (!allowed.contains(&answer.state)).then(|| Mismatch::TooOpen {
        service: service.clone(),
        ports,
        state: answer.state,
        passed_by: answer.passed_by.first().cloned(),
        reason: answer.reason,
    })
}

/// A port wanted open that is closed: by a sharer's rule of portlocker's,
/// or by others.
fn closed_when_open(service: &ServiceName, ports: PortSpec, answer: Answer) -> Option<Mismatch> {
    if answer.state != PortState::Closed {
        return None;
    }
    let sharer = answer
        .dropped_by
        .iter()
        .filter_map(|by| by.tag())
        .map(|tag| tag.trim_start_matches("portlocker:"))
        .find(|other| *other != service.as_str());
    if let Some(other) = sharer {
        return Some(Mismatch::ClosedBySharer {
            service: service.clone(),
            ports,
            other: other.to_owned(),
        });
    }
    ours_not_deciding(&answer).then(|| Mismatch::ClosedByOthers {
        service: service.clone(),
        ports,
        by: answer.dropped_by,
    })
}

/// Whether none of what drops it is portlocker's own.
fn ours_not_deciding(answer: &Answer) -> bool {
    answer.dropped_by.iter().all(|by| by.tag().is_none())
}

fn in_family(net: &IpNet, family: Family) -> bool {
    matches!(
        (net, family),
        (IpNet::V4(_), Family::Ipv4) | (IpNet::V6(_), Family::Ipv6)
    )
}

/// The state `held` (portlocker's part of one family, nothing else hooked)
/// gives `service`: for tests of what a backend holds.
#[cfg(test)]
pub(crate) fn held_state(
    config: &Config,
    held: &crate::firewall::model::FamilyHoldings,
    family: Family,
    service: &ServiceName,
    now: DateTime<Utc>,
) -> PortState {
    let holdings = crate::firewall::model::Holdings {
        families: [(family, Some(held.clone()))].into(),
    };
    let host = crate::firewall::host::of_holdings(config, &holdings);
    service_state(config, &host, family, service, now).state
}
