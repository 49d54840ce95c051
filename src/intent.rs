//! What the owner wants right now: the control file's lines resolved against
//! the clock, `max_open`, and the start of each `for` kept in the state.
//! Pure: the time is a parameter.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, FixedOffset, TimeDelta};
use ipnet::IpNet;

use crate::config::ServiceName;
use crate::control::{Action, ControlFile, Directive, Expiry};

/// The state a service should be in now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    Closed,
    Open,
    /// Closed to everyone but these networks.
    OpenTo(BTreeSet<IpNet>),
}

/// What one service should be now, and what to tell the owner about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub want: Want,
    /// Deadlines and sources in plain words, for the status page.
    pub note: String,
}

/// Every named service's intent, and the opens that have run out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub intents: BTreeMap<ServiceName, Intent>,
    /// One line per open that has ended as asked, for the log.
    pub ended: Vec<String>,
}

impl Resolved {
    pub fn wants(&self) -> BTreeMap<ServiceName, Want> {
        self.intents
            .iter()
            .map(|(service, intent)| (service.clone(), intent.want.clone()))
            .collect()
    }
}

/// When each open line was first applied, by its canonical text.
pub type Starts = BTreeMap<String, DateTime<FixedOffset>>;

/// Resolves `control` at `now`. `starts` gains the lines applied for the
/// first time and loses the lines no longer in the file, so a line that
/// changes, or goes and comes back, starts a new count.
pub fn resolve(
    control: &ControlFile,
    now: DateTime<FixedOffset>,
    starts: &mut Starts,
    max_open: Option<TimeDelta>,
) -> Resolved {
    let opens: Vec<&Directive> = control
        .directives
        .values()
        .flatten()
        .filter(|d| d.action == Action::Open)
        .collect();
    starts.retain(|line, _| opens.iter().any(|d| d.render() == *line));
    for directive in &opens {
        starts.entry(directive.render()).or_insert(now);
    }

    let mut resolved = Resolved::default();
    for (service, lines) in &control.directives {
        let mut open_to = BTreeSet::new();
        let mut notes = Vec::new();
        let mut open_to_all = false;
        let mut closed = false;
        for directive in lines {
            if directive.action == Action::Close {
                closed = true;
                continue;
            }
            let deadline = deadline(directive, starts[&directive.render()], max_open);
            let until = deadline.map(|t| format!("until {}", shown(t, now)));
            if deadline.is_some_and(|t| now >= t) {
                let ended = format!("the open ended {}", shown(deadline.unwrap_or(now), now));
                resolved
                    .ended
                    .push(format!("line {}: {service}: {ended}", directive.line));
                notes.push(match directive.source {
                    Some(source) => format!("from {source}: {ended}"),
                    None => ended,
                });
                continue;
            }
            match directive.source {
                Some(source) => {
                    open_to.insert(source);
                    notes.push(match until {
                        Some(until) => format!("from {source} {until}"),
                        None => format!("from {source}"),
                    });
                }
                None => {
                    open_to_all = true;
                    notes.extend(until);
                }
            }
        }
        let want = if closed {
            Want::Closed
        } else if open_to_all {
            Want::Open
        } else if open_to.is_empty() {
            Want::Closed
        } else {
            Want::OpenTo(open_to)
        };
        let note = notes.join("; ");
        resolved
            .intents
            .insert(service.clone(), Intent { want, note });
    }
    resolved
}

/// When an open line ends: its own deadline, capped by `max_open`.
fn deadline(
    directive: &Directive,
    start: DateTime<FixedOffset>,
    max_open: Option<TimeDelta>,
) -> Option<DateTime<FixedOffset>> {
    let own = match directive.expiry {
        Some(Expiry::Until(deadline)) => Some(deadline),
        Some(Expiry::For(duration)) => Some(start + duration),
        None => None,
    };
    let cap = max_open.map(|limit| start + limit);
    match (own, cap) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A moment as the owner reads it: in the server's offset now.
fn shown(moment: DateTime<FixedOffset>, now: DateTime<FixedOffset>) -> String {
    moment
        .with_timezone(&now.timezone())
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

/// The wants of control file `text` under `config`, resolved at a fixed
/// moment: the shortest way for other modules' tests to say what they want.
#[cfg(test)]
pub fn wants_of(config: &crate::config::Config, text: &str) -> BTreeMap<ServiceName, Want> {
    let services = config.services.keys().cloned().collect();
    let context = crate::control::Context {
        services: &services,
        host_name: "test-host",
        ipv6: config.firewall.ipv6,
    };
    let control = crate::control::parse(text.as_bytes(), context).unwrap();
    let now = DateTime::parse_from_rfc3339("2026-11-25T12:00:00+01:00").unwrap();
    resolve(&control, now, &mut Starts::new(), None).wants()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{self, Context};

    fn at(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap()
    }

    fn control(text: &str) -> ControlFile {
        let services = ["ssh", "vpn"].map(|s| ServiceName::new(s).unwrap()).into();
        let context = Context {
            services: &services,
            host_name: "web-1",
            ipv6: true,
        };
        control::parse(text.as_bytes(), context).unwrap()
    }

    fn ssh(resolved: &Resolved) -> (Want, String) {
        let intent = &resolved.intents[&ServiceName::new("ssh").unwrap()];
        (intent.want.clone(), intent.note.clone())
    }

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn until_closes_at_the_deadline() {
        let file = control("open ssh until 2026-11-25T18:00:00+01:00\n");
        let mut starts = Starts::new();
        let before = resolve(&file, at("2026-11-25T17:59:00+01:00"), &mut starts, None);
        assert_eq!(ssh(&before), (Want::Open, "until 2026-11-25 18:00".into()));
        let after = resolve(&file, at("2026-11-25T18:00:00+01:00"), &mut starts, None);
        assert_eq!(
            ssh(&after),
            (Want::Closed, "the open ended 2026-11-25 18:00".into())
        );
        assert_eq!(
            after.ended,
            ["line 1: ssh: the open ended 2026-11-25 18:00"]
        );
    }

    #[test]
    fn for_counts_from_the_first_run_that_applied_the_line() {
        let file = control("open ssh for 2h\n");
        let mut starts = Starts::new();
        let first = resolve(&file, at("2026-11-25T10:00:00Z"), &mut starts, None);
        assert_eq!(ssh(&first).0, Want::Open);
        let later = resolve(&file, at("2026-11-25T11:59:00Z"), &mut starts, None);
        assert_eq!(ssh(&later), (Want::Open, "until 2026-11-25 12:00".into()));
        let ended = resolve(&file, at("2026-11-25T12:00:00Z"), &mut starts, None);
        assert_eq!(ssh(&ended).0, Want::Closed);

        // A changed line starts a new count.
        let changed = control("open ssh for 3h\n");
        let again = resolve(&changed, at("2026-11-25T12:30:00Z"), &mut starts, None);
        assert_eq!(ssh(&again), (Want::Open, "until 2026-11-25 15:30".into()));
        assert_eq!(starts.len(), 1, "{starts:?}");
    }

    #[test]
    fn a_line_that_goes_and_comes_back_starts_again() {
        let mut starts = Starts::new();
        resolve(
            &control("open ssh for 1h\n"),
            at("2026-11-25T10:00:00Z"),
            &mut starts,
            None,
        );
        resolve(
            &control("close ssh\n"),
            at("2026-11-25T10:30:00Z"),
            &mut starts,
            None,
        );
        assert!(starts.is_empty());
        let back = resolve(
            &control("open ssh for 1h\n"),
            at("2026-11-25T12:00:00Z"),
            &mut starts,
            None,
        );
        assert_eq!(ssh(&back).0, Want::Open);
    }

    #[test]
    fn max_open_caps_every_open_including_plain_ones() {
        let twelve_hours = Some(TimeDelta::hours(12));
        let mut starts = Starts::new();
        let plain = control("open ssh\n");
        let first = resolve(
            &plain,
            at("2026-11-25T00:00:00Z"),
            &mut starts,
            twelve_hours,
        );
        assert_eq!(ssh(&first), (Want::Open, "until 2026-11-25 12:00".into()));
        let late = resolve(
            &plain,
            at("2026-11-25T12:00:00Z"),
            &mut starts,
            twelve_hours,
        );
        assert_eq!(ssh(&late).0, Want::Closed);
        let short = control("open ssh for 1h\n");
        let mut starts = Starts::new();
        let first = resolve(
            &short,
            at("2026-11-25T00:00:00Z"),
            &mut starts,
            twelve_hours,
        );
        assert_eq!(ssh(&first).1, "until 2026-11-25 01:00");
    }

    #[test]
    fn from_lines_add_up_and_each_ends_on_its_own() {
        let file = control(
            "open ssh from 203.0.113.7 for 1h\nopen ssh from 198.51.100.0/24\nopen ssh from 2001:db8::/48\n",
        );
        let mut starts = Starts::new();
        let now = resolve(&file, at("2026-11-25T10:00:00Z"), &mut starts, None);
        let all = [
            net("203.0.113.7/32"),
            net("198.51.100.0/24"),
            net("2001:db8::/48"),
        ];
        assert_eq!(ssh(&now).0, Want::OpenTo(all.into()));
        let later = resolve(&file, at("2026-11-25T11:00:00Z"), &mut starts, None);
        let (want, note) = ssh(&later);
        assert_eq!(
            want,
            Want::OpenTo([net("198.51.100.0/24"), net("2001:db8::/48")].into())
        );
        assert!(
            note.starts_with("from 203.0.113.7/32: the open ended 2026-11-25 11:00"),
            "{note}"
        );
    }

    #[test]
    fn a_plain_line_replaces_from_lines_and_close_wins() {
        let mut starts = Starts::new();
        let now = at("2026-11-25T10:00:00Z");
        let file = control("open ssh from 203.0.113.7\nopen ssh\n");
        assert_eq!(ssh(&resolve(&file, now, &mut starts, None)).0, Want::Open);
        let file = control("open ssh from 203.0.113.7\nclose ssh\n");
        assert_eq!(ssh(&resolve(&file, now, &mut starts, None)).0, Want::Closed);
        let file = control("close ssh\nopen ssh from 203.0.113.7\n");
        let want = ssh(&resolve(&file, now, &mut starts, None)).0;
        assert_eq!(want, Want::OpenTo([net("203.0.113.7/32")].into()));
    }

    #[test]
    fn every_from_line_ended_means_closed() {
        let file = control("open ssh from 203.0.113.7 until 2026-11-25T09:00:00Z\n");
        let resolved = resolve(&file, at("2026-11-25T10:00:00Z"), &mut Starts::new(), None);
        assert_eq!(ssh(&resolved).0, Want::Closed);
        assert_eq!(resolved.ended.len(), 1);
    }
}
