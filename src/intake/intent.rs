//! What the owner wants right now: the control file's lines resolved against
//! the clock, `max_open`, and the start of each `for` kept in the state.
//! Pure: the time and the time zone deadlines are shown in are parameters.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, FixedOffset, TimeDelta, TimeZone, Timelike, Utc};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::config::{Family, ServiceName};
use crate::intake::control::{Action, ControlFile, Directive, Expiry};

/// When an open ends, in UTC as the kernel keeps time; None: it does not.
pub type Deadline = Option<DateTime<Utc>>;

/// The state a service should be in now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    Closed,
    /// Open to everyone, until the deadline.
    Open(Deadline),
    /// Closed to everyone but these networks, each until its deadline.
    OpenTo(BTreeMap<IpNet, Deadline>),
}

impl Want {
    /// Whether the sources of an `OpenTo` cover every address of `family`:
    /// `from ::/1` and `from 8000::/1` open to everyone, as `open` does.
    pub fn opens_to_all(&self, family: Family) -> bool {
        let Want::OpenTo(sources) = self else {
            return false;
        };
        let all: IpNet = match family {
            Family::Ipv4 => Ipv4Net::default().into(),
            Family::Ipv6 => Ipv6Net::default().into(),
        };
        let ours: Vec<IpNet> = (sources.keys())
            .filter(|net| net.addr().is_ipv4() == all.addr().is_ipv4())
            .copied()
            .collect();
        IpNet::aggregate(&ours).contains(&all)
    }
}

/// `wants` with no deadline for the kernel to enforce: for a kernel
/// without xt_time, where each run ends what has ended.
pub fn without_deadlines(wants: &BTreeMap<ServiceName, Want>) -> BTreeMap<ServiceName, Want> {
    wants
        .iter()
        .map(|(service, want)| {
            let want = match want {
                Want::Open(_) => Want::Open(None),
                Want::OpenTo(sources) => {
                    Want::OpenTo(sources.keys().map(|&net| (net, None)).collect())
                }
                Want::Closed => Want::Closed,
            };
            (service.clone(), want)
        })
        .collect()
}

/// The later of two deadlines; no deadline is the latest.
fn later(a: Deadline, b: Deadline) -> Deadline {
    a.zip(b).map(|(a, b)| a.max(b))
}

/// What one service should be now, and what to tell the owner about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub want: Want,
    /// Deadlines and sources in plain words, for the status page.
    pub note: String,
    /// The opens in force, each with its source and its end, as data (for
    /// `status --json`); empty when the service is closed.
    pub opens: Vec<Opening>,
}

/// One open line in force: who it lets in, and when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opening {
    /// The network of a `from` line; None: everyone.
    pub source: Option<IpNet>,
    /// When it ends; None: it does not.
    pub ends: Option<Ending>,
}

/// When an open ends, and what set that moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// The moment, with the UTC offset in force on its own date.
    pub at: DateTime<FixedOffset>,
    pub by: EndsBy,
}

/// What sets the end of an open: the earlier of its own clause and `max_open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndsBy {
    /// `until TIME`.
    Until,
    /// `for DURATION`, counted from the first run that applied the line.
    For(TimeDelta),
    /// `[firewall] max_open`, counted the same way.
    MaxOpen(TimeDelta),
}

/// What the owner asked for each service, kept across runs: per service,
/// the lines in force from the last accepted file that named it. A service
/// no file named is absent.
pub type Wanted = BTreeMap<ServiceName, Vec<Directive>>;

/// Takes in a freshly accepted file: each service it names gets its lines;
/// every other service keeps what it had. An empty file changes nothing.
pub fn merge(wanted: &mut Wanted, fresh: &ControlFile) {
    for (service, lines) in &fresh.directives {
        wanted.insert(service.clone(), lines.clone());
    }
}

/// Every source the wanted state names, per service.
pub fn sources_of(wanted: &Wanted) -> BTreeMap<ServiceName, BTreeSet<IpNet>> {
    wanted
        .iter()
        .map(|(service, lines)| {
            (
                service.clone(),
                lines.iter().filter_map(|d| d.source).collect(),
            )
        })
        .collect()
}

/// Turns every open in `wanted` into a close: for a state that can no
/// longer be trusted to open anything. Returns the services closed.
pub fn close_opens(wanted: &mut Wanted) -> Vec<ServiceName> {
    let mut closed = Vec::new();
    for (service, lines) in wanted.iter_mut() {
        if lines.iter().any(|d| d.action == Action::Open) {
            let line = lines.first().map_or(0, |d| d.line);
            *lines = vec![Directive {
                line,
                action: Action::Close,
                service: service.clone(),
                source: None,
                expiry: None,
            }];
            closed.push(service.clone());
        }
    }
    closed
}

/// The open lines of `wanted` whose end counts from their start (`for`, or
/// any open under `max_open`) and that have no start in `starts`, each with
/// the start that makes it end at `now`: for a run that cannot know, or
/// cannot keep, when their count began, so that it never begins it again.
pub fn uncounted(
    wanted: &Wanted,
    starts: &Starts,
    now: DateTime<FixedOffset>,
    max_open: Option<TimeDelta>,
) -> Starts {
    let mut ended = Starts::new();
    for directive in wanted
        .values()
        .flatten()
        .filter(|d| d.action == Action::Open)
    {
        let own = match directive.expiry {
            Some(Expiry::For(duration)) => Some(duration),
            _ => None,
        };
        let span = match (own, max_open) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let line = directive.render();
        if let Some(span) = span
            && !starts.contains_key(&line)
        {
            ended.insert(line, now - span);
        }
    }
    ended
}

/// Every configured service's intent, and the opens that have run out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub intents: BTreeMap<ServiceName, Intent>,
    /// One line per open that has ended as asked, for the log.
    pub ended: Vec<String>,
    /// Open lines applied for the first time, and the moment their count
    /// would start: kept only once the open is in the firewall.
    pub new_starts: Starts,
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

/// Forgets the starts of lines no longer wanted, so a line that changes
/// starts a new count.
pub fn retain_starts(starts: &mut Starts, wanted: &Wanted) {
    let lines: BTreeSet<String> = wanted.values().flatten().map(Directive::render).collect();
    starts.retain(|line, _| lines.contains(line));
}

/// Resolves `wanted` at `now`. A line without a start counts from `now`
/// (and is listed in `new_starts`). With `close_unnamed`, every service of
/// `services` that `wanted` does not name is closed. Deadlines are told in
/// `zone` (the server's), each with the UTC offset in force on its own date.
pub fn resolve<'a, Tz: TimeZone>(
    wanted: &Wanted,
    services: impl IntoIterator<Item = &'a ServiceName>,
    close_unnamed: bool,
    now: DateTime<FixedOffset>,
    starts: &Starts,
    max_open: Option<TimeDelta>,
    zone: &Tz,
) -> Resolved {
    let new_starts = unstarted(wanted, starts, now);
    let start_of = |d: &Directive| {
        let line = d.render();
        starts
            .get(&line)
            .or_else(|| new_starts.get(&line))
            .copied()
            .unwrap_or(now)
    };
    let mut resolved = Resolved::default();
    for (service, lines) in wanted {
        let mut tally = Tally::default();
        for directive in lines {
            if directive.action == Action::Close {
                tally.closed = true;
                continue;
            }
            let ending = ending(directive, start_of(directive), max_open).map(|ending| Ending {
                at: ending.at.with_timezone(zone).fixed_offset(),
                ..ending
            });
            tally.open(service, directive, ending, now);
        }
        resolved.ended.append(&mut tally.ended);
        resolved.intents.insert(service.clone(), tally.intent());
    }
    if close_unnamed {
        close_by_default(&mut resolved.intents, services);
    }
    resolved.new_starts = new_starts;
    resolved
}

/// The open lines of `wanted` with no start in `starts`: applied for the
/// first time, their count starts `now`.
fn unstarted(wanted: &Wanted, starts: &Starts, now: DateTime<FixedOffset>) -> Starts {
    let mut new_starts = Starts::new();
    for directive in wanted
        .values()
        .flatten()
        .filter(|d| d.action == Action::Open)
    {
        let line = directive.render();
        if !starts.contains_key(&line) {
            new_starts.insert(line, now);
        }
    }
    new_starts
}

/// One service's lines taken in one by one: what they open, to whom and
/// until when, and what to tell of it.
#[derive(Default)]
struct Tally {
    open_to: BTreeMap<IpNet, Deadline>,
    open_to_all: Option<Deadline>,
    opens: Vec<Opening>,
    notes: Vec<String>,
    /// A `close` line: it wins over every open.
    closed: bool,
    /// The log's lines for the opens that have ended.
    ended: Vec<String>,
}

impl Tally {
    /// Takes in an open line of `service` that ends as `ending` says.
    fn open(
        &mut self,
        service: &ServiceName,
        directive: &Directive,
        ending: Option<Ending>,
        now: DateTime<FixedOffset>,
    ) {
        let deadline = ending.map(|ending| ending.at);
        let until = deadline.map(|t| format!("until {}", shown(t)));
        if deadline.is_some_and(|t| now >= t) {
            let ended = format!("the open ended {}", shown(deadline.unwrap_or(now)));
            self.ended.push(format!("{service}: {ended}"));
            self.notes.push(match directive.source {
                Some(source) => format!("from {source}: {ended}"),
                None => ended,
            });
            return;
        }
        let deadline = deadline.map(|t| t.to_utc());
        self.opens.push(Opening {
            source: directive.source,
            ends: ending,
        });
        match directive.source {
            Some(source) => {
                let kept = self
                    .open_to
                    .get(&source)
                    .copied()
                    .map_or(deadline, |d| later(d, deadline));
                self.open_to.insert(source, kept);
                self.notes.push(match until {
                    Some(until) => format!("from {source} {until}"),
                    None => format!("from {source}"),
                });
            }
            None => {
                self.open_to_all = Some(self.open_to_all.map_or(deadline, |d| later(d, deadline)));
                self.notes.extend(until);
            }
        }
    }

    /// What the lines taken in add up to.
    fn intent(self) -> Intent {
        let mut opens = self.opens;
        if self.closed {
            opens.clear();
        }
        let want = if self.closed {
            Want::Closed
        } else if let Some(deadline) = self.open_to_all {
            Want::Open(deadline)
        } else if self.open_to.is_empty() {
            Want::Closed
        } else {
            Want::OpenTo(self.open_to)
        };
        if self.open_to_all.is_some() {
            // A plain open replaces `from` lines: only its own ends count.
            opens.retain(|opening| opening.source.is_none());
        }
        let note = self.notes.join("; ");
        Intent { want, note, opens }
    }
}

/// Closes every service of `services` that `intents` lacks: no control
/// file has named it.
fn close_by_default<'a>(
    intents: &mut BTreeMap<ServiceName, Intent>,
    services: impl IntoIterator<Item = &'a ServiceName>,
) {
    for service in services {
        intents.entry(service.clone()).or_insert_with(|| Intent {
            want: Want::Closed,
            note: "closed by default: no control file has opened it".into(),
            opens: Vec::new(),
        });
    }
}

/// When an open line ends: its own deadline, capped by `max_open` (the
/// earlier wins; on a tie, the line's own clause), to the whole second (the
/// kernel's), never later than asked.
fn ending(
    directive: &Directive,
    start: DateTime<FixedOffset>,
    max_open: Option<TimeDelta>,
) -> Option<Ending> {
    let own = match directive.expiry {
        Some(Expiry::Until(deadline)) => Some(Ending {
            at: deadline,
            by: EndsBy::Until,
        }),
        Some(Expiry::For(duration)) => Some(Ending {
            at: start + duration,
            by: EndsBy::For(duration),
        }),
        None => None,
    };
    let cap = max_open.map(|limit| Ending {
        at: start + limit,
        by: EndsBy::MaxOpen(limit),
    });
    let ending = match (own, cap) {
        (Some(own), Some(cap)) if cap.at < own.at => Some(cap),
        (own, cap) => own.or(cap),
    };
    ending.map(|ending| Ending {
        at: ending.at.with_nanosecond(0).unwrap_or(ending.at),
        ..ending
    })
}

/// A deadline as the page and the log show it: to the minute, with the
/// UTC offset it carries (the one in force on its date, in the server's zone).
fn shown(moment: DateTime<FixedOffset>) -> String {
    moment.format("%Y-%m-%d %H:%M %:z").to_string()
}

/// The wants of control file `text` under `config`, resolved at a fixed
/// moment: the shortest way for other modules' tests to say what they want.
#[cfg(test)]
pub fn wants_of(config: &crate::config::Config, text: &str) -> BTreeMap<ServiceName, Want> {
    let services = config.services.keys().cloned().collect();
    let context = crate::intake::control::Context {
        services: &services,
        host_name: "test-host",
        ipv6: config.firewall.ipv6,
    };
    let control = crate::intake::control::parse(text.as_bytes(), context).unwrap();
    let now = DateTime::parse_from_rfc3339("2026-11-25T12:00:00+01:00").unwrap();
    let mut wanted = Wanted::new();
    merge(&mut wanted, &control);
    resolve(
        &wanted,
        &services,
        false,
        now,
        &Starts::new(),
        None,
        &now.timezone(),
    )
    .wants()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sources that together are every address are everyone: `open`.
    #[test]
    fn sources_that_cover_a_family_open_to_all_of_it() {
        let want = |nets: &[&str]| {
            Want::OpenTo(
                nets.iter()
                    .map(|net| (net.parse().unwrap(), None))
                    .collect(),
            )
        };
        let halves = want(&["::/1", "8000::/1", "192.0.2.0/24"]);
        assert!(halves.opens_to_all(Family::Ipv6));
        assert!(!halves.opens_to_all(Family::Ipv4));
        assert!(!want(&["::/1"]).opens_to_all(Family::Ipv6));
        assert!(!Want::Closed.opens_to_all(Family::Ipv6));
    }
    use crate::intake::control::{self, Context};

    fn at(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap()
    }

    fn services() -> BTreeSet<ServiceName> {
        ["ssh", "vpn"].map(|s| ServiceName::new(s).unwrap()).into()
    }

    fn control(text: &str) -> ControlFile {
        let services = services();
        let context = Context {
            services: &services,
            host_name: "web-1",
            ipv6: true,
        };
        control::parse(text.as_bytes(), context).unwrap()
    }

    /// A run that accepts `text` at `now` and whose firewall work succeeds.
    struct Runs {
        wanted: Wanted,
        starts: Starts,
        max_open: Option<TimeDelta>,
    }

    impl Runs {
        fn new(max_open: Option<TimeDelta>) -> Runs {
            Runs {
                wanted: Wanted::new(),
                starts: Starts::new(),
                max_open,
            }
        }

        fn run(&mut self, text: Option<&str>, now: &str) -> Resolved {
            if let Some(text) = text {
                merge(&mut self.wanted, &control(text));
            }
            retain_starts(&mut self.starts, &self.wanted);
            let resolved = resolve(
                &self.wanted,
                &services(),
                false,
                at(now),
                &self.starts,
                self.max_open,
                &at(now).timezone(),
            );
            self.starts.extend(resolved.new_starts.clone());
            resolved
        }
    }

    /// ssh's want without its deadlines (tests of deadlines look at them
    /// apart), and its note.
    fn ssh(resolved: &Resolved) -> (Want, String) {
        let intent = &resolved.intents[&ServiceName::new("ssh").unwrap()];
        (bare(&intent.want), intent.note.clone())
    }

    fn bare(want: &Want) -> Want {
        match want {
            Want::Closed => Want::Closed,
            Want::Open(_) => Want::Open(None),
            Want::OpenTo(sources) => Want::OpenTo(sources.keys().map(|&net| (net, None)).collect()),
        }
    }

    fn open_to(nets: &[&str]) -> Want {
        Want::OpenTo(nets.iter().map(|text| (net(text), None)).collect())
    }

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn an_open_that_ends_carries_its_deadline() {
        let mut runs = Runs::new(Some(TimeDelta::hours(12)));
        let until = runs.run(
            Some("open ssh until 2026-11-25T18:00:00+01:00\n"),
            "2026-11-25T10:00:00Z",
        );
        let want = &until.intents[&ServiceName::new("ssh").unwrap()].want;
        assert_eq!(*want, Want::Open(Some(at("2026-11-25T17:00:00Z").to_utc())));
        // max_open caps a plain open from its start.
        let mut runs = Runs::new(Some(TimeDelta::hours(12)));
        let plain = runs.run(Some("open ssh\n"), "2026-11-25T10:00:00Z");
        let want = &plain.intents[&ServiceName::new("ssh").unwrap()].want;
        assert_eq!(*want, Want::Open(Some(at("2026-11-25T22:00:00Z").to_utc())));
    }

    #[test]
    fn until_closes_at_the_deadline() {
        let mut runs = Runs::new(None);
        let file = "open ssh until 2026-11-25T18:00:00+01:00\n";
        let before = runs.run(Some(file), "2026-11-25T17:59:00+01:00");
        assert_eq!(
            ssh(&before),
            (Want::Open(None), "until 2026-11-25 18:00 +01:00".into())
        );
        let after = runs.run(None, "2026-11-25T18:00:00+01:00");
        assert_eq!(
            ssh(&after),
            (
                Want::Closed,
                "the open ended 2026-11-25 18:00 +01:00".into()
            )
        );
        assert_eq!(after.ended, ["ssh: the open ended 2026-11-25 18:00 +01:00"]);
    }

    #[test]
    fn for_counts_from_the_first_run_that_applied_the_line() {
        let mut runs = Runs::new(None);
        let first = runs.run(Some("open ssh for 2h\n"), "2026-11-25T10:00:00Z");
        assert_eq!(ssh(&first).0, Want::Open(None));
        let later = runs.run(Some("open ssh for 2h\n"), "2026-11-25T11:59:00Z");
        assert_eq!(
            ssh(&later),
            (Want::Open(None), "until 2026-11-25 12:00 +00:00".into())
        );
        let ended = runs.run(None, "2026-11-25T12:00:00Z");
        assert_eq!(ssh(&ended).0, Want::Closed);

        // A changed line starts a new count.
        let again = runs.run(Some("open ssh for 3h\n"), "2026-11-25T12:30:00Z");
        assert_eq!(
            ssh(&again),
            (Want::Open(None), "until 2026-11-25 15:30 +00:00".into())
        );
        assert_eq!(runs.starts.len(), 1, "{:?}", runs.starts);
    }

    #[test]
    fn a_count_starts_only_when_a_run_keeps_it() {
        let wanted = {
            let mut wanted = Wanted::new();
            merge(&mut wanted, &control("open ssh for 1h\n"));
            wanted
        };
        // The firewall work of the first run failed: its start was not kept.
        let failed = resolve(
            &wanted,
            &services(),
            false,
            at("2026-11-25T10:00:00Z"),
            &Starts::new(),
            None,
            &Utc,
        );
        assert_eq!(failed.new_starts.len(), 1);
        let retried = resolve(
            &wanted,
            &services(),
            false,
            at("2026-11-25T11:30:00Z"),
            &Starts::new(),
            None,
            &Utc,
        );
        assert_eq!(
            ssh(&retried),
            (Want::Open(None), "until 2026-11-25 12:30 +00:00".into())
        );
    }

    #[test]
    fn a_file_that_does_not_name_a_service_keeps_its_want_and_its_count() {
        let mut runs = Runs::new(None);
        runs.run(Some("close ssh\nopen vpn for 1h\n"), "2026-11-25T10:00:00Z");
        // An empty file, then one naming only vpn: ssh stays closed.
        let empty = runs.run(Some(""), "2026-11-25T10:05:00Z");
        assert_eq!(ssh(&empty).0, Want::Closed);
        let other = runs.run(Some("close vpn\n"), "2026-11-25T10:10:00Z");
        assert_eq!(ssh(&other).0, Want::Closed);
        // A for-open that a later file does not name keeps counting from its start.
        let mut runs = Runs::new(None);
        runs.run(Some("open ssh for 1h\n"), "2026-11-25T10:00:00Z");
        runs.run(Some("close vpn\n"), "2026-11-25T10:30:00Z");
        let back = runs.run(Some("open ssh for 1h\n"), "2026-11-25T11:00:00Z");
        assert_eq!(
            ssh(&back).0,
            Want::Closed,
            "the same line must not start again"
        );
    }

    #[test]
    fn default_close_closes_every_service_not_opened() {
        let mut wanted = Wanted::new();
        merge(&mut wanted, &control("open vpn\n"));
        let resolved = resolve(
            &wanted,
            &services(),
            true,
            at("2026-11-25T10:00:00Z"),
            &Starts::new(),
            None,
            &Utc,
        );
        assert_eq!(ssh(&resolved).0, Want::Closed);
        let vpn = &resolved.intents[&ServiceName::new("vpn").unwrap()];
        assert_eq!(bare(&vpn.want), Want::Open(None));
        let kept = resolve(
            &wanted,
            &services(),
            false,
            at("2026-11-25T10:00:00Z"),
            &Starts::new(),
            None,
            &Utc,
        );
        assert!(!kept.intents.contains_key(&ServiceName::new("ssh").unwrap()));
    }

    #[test]
    fn an_uncounted_open_ends_now_and_an_open_without_a_count_stays() {
        let now = at("2026-11-25T10:00:00Z");
        let mut wanted = Wanted::new();
        merge(
            &mut wanted,
            &control("open ssh for 2h\nopen vpn until 2026-11-25T18:00:00Z\n"),
        );
        let mut starts = Starts::new();
        let ended = uncounted(&wanted, &starts, now, None);
        assert_eq!(ended.keys().collect::<Vec<_>>(), ["open ssh for 2h"]);
        starts.extend(ended);
        let resolved = resolve(&wanted, &services(), false, now, &starts, None, &Utc);
        assert_eq!(
            ssh(&resolved),
            (
                Want::Closed,
                "the open ended 2026-11-25 10:00 +00:00".into()
            )
        );
        let vpn = &resolved.intents[&ServiceName::new("vpn").unwrap()];
        assert_eq!(
            bare(&vpn.want),
            Want::Open(None),
            "an until has no count to lose"
        );
        assert!(
            resolved
                .new_starts
                .keys()
                .all(|line| line.starts_with("open vpn"))
        );

        // Under max_open every open counts, and the shorter span ends it now.
        let one_hour = Some(TimeDelta::hours(1));
        assert_eq!(uncounted(&wanted, &Starts::new(), now, one_hour).len(), 2);
        let mut starts = Starts::new();
        starts.insert("open ssh for 2h".into(), now - TimeDelta::minutes(5));
        let ended = uncounted(&wanted, &starts, now, one_hour);
        assert_eq!(ended.len(), 1, "a kept start is not lost: {ended:?}");
        starts.extend(ended);
        let resolved = resolve(&wanted, &services(), false, now, &starts, one_hour, &Utc);
        let vpn = &resolved.intents[&ServiceName::new("vpn").unwrap()];
        assert_eq!(bare(&vpn.want), Want::Closed);
        assert_eq!(ssh(&resolved).0, Want::Open(None), "a kept start is kept");
    }

    #[test]
    fn close_opens_leaves_only_closes() {
        let mut wanted = Wanted::new();
        merge(
            &mut wanted,
            &control("open ssh from 203.0.113.7\nclose vpn\n"),
        );
        assert_eq!(close_opens(&mut wanted), [ServiceName::new("ssh").unwrap()]);
        assert!(wanted.values().flatten().all(|d| d.action == Action::Close));
    }

    #[test]
    fn max_open_caps_every_open_including_plain_ones() {
        let twelve_hours = Some(TimeDelta::hours(12));
        let mut runs = Runs::new(twelve_hours);
        let first = runs.run(Some("open ssh\n"), "2026-11-25T00:00:00Z");
        assert_eq!(
            ssh(&first),
            (Want::Open(None), "until 2026-11-25 12:00 +00:00".into())
        );
        let late = runs.run(None, "2026-11-25T12:00:00Z");
        assert_eq!(ssh(&late).0, Want::Closed);
        let mut runs = Runs::new(twelve_hours);
        let first = runs.run(Some("open ssh for 1h\n"), "2026-11-25T00:00:00Z");
        assert_eq!(ssh(&first).1, "until 2026-11-25 01:00 +00:00");
    }

    #[test]
    fn from_lines_add_up_and_each_ends_on_its_own() {
        let mut runs = Runs::new(None);
        let file = "open ssh from 203.0.113.7 for 1h\nopen ssh from 198.51.100.0/24\nopen ssh from 2001:db8::/48\n";
        let now = runs.run(Some(file), "2026-11-25T10:00:00Z");
        let all = open_to(&["203.0.113.7/32", "198.51.100.0/24", "2001:db8::/48"]);
        assert_eq!(ssh(&now).0, all);
        // Each source carries its own deadline, for the kernel to enforce.
        let intent = &now.intents[&ServiceName::new("ssh").unwrap()];
        let Want::OpenTo(sources) = &intent.want else {
            panic!("{:?}", intent.want)
        };
        assert_eq!(
            sources[&net("203.0.113.7/32")],
            Some(at("2026-11-25T11:00:00Z").to_utc())
        );
        assert_eq!(sources[&net("198.51.100.0/24")], None);
        let later = runs.run(None, "2026-11-25T11:00:00Z");
        let (want, note) = ssh(&later);
        assert_eq!(want, open_to(&["198.51.100.0/24", "2001:db8::/48"]));
        assert!(
            note.starts_with("from 203.0.113.7/32: the open ended 2026-11-25 11:00 +00:00"),
            "{note}"
        );
    }

    #[test]
    fn a_plain_line_replaces_from_lines_and_close_wins() {
        let now = "2026-11-25T10:00:00Z";
        let mut runs = Runs::new(None);
        let open = runs.run(Some("open ssh from 203.0.113.7\nopen ssh\n"), now);
        assert_eq!(ssh(&open).0, Want::Open(None));
        let closed = runs.run(Some("open ssh from 203.0.113.7\nclose ssh\n"), now);
        assert_eq!(ssh(&closed).0, Want::Closed);
        let from = runs.run(Some("close ssh\nopen ssh from 203.0.113.7\n"), now);
        assert_eq!(ssh(&from).0, open_to(&["203.0.113.7/32"]));
    }

    /// A count that starts mid-second ends on the whole second before:
    /// the kernel's deadlines are whole seconds, and never later than asked.
    #[test]
    fn deadlines_are_whole_seconds() {
        let mut runs = Runs::new(None);
        let resolved = runs.run(
            Some("open ssh for 1h\nopen vpn from 203.0.113.7 for 2h\n"),
            "2026-11-25T10:00:00.75Z",
        );
        let ssh = &resolved.intents[&ServiceName::new("ssh").unwrap()].want;
        assert_eq!(*ssh, Want::Open(Some(at("2026-11-25T11:00:00Z").to_utc())));
        let vpn = &resolved.intents[&ServiceName::new("vpn").unwrap()].want;
        let Want::OpenTo(sources) = vpn else {
            panic!("{vpn:?}")
        };
        assert_eq!(
            sources.values().copied().collect::<Vec<_>>(),
            [Some(at("2026-11-25T12:00:00Z").to_utc())]
        );
    }

    #[test]
    fn every_from_line_ended_means_closed() {
        let mut runs = Runs::new(None);
        let resolved = runs.run(
            Some("open ssh from 203.0.113.7 until 2026-11-25T09:00:00Z\n"),
            "2026-11-25T10:00:00Z",
        );
        assert_eq!(ssh(&resolved).0, Want::Closed);
        assert_eq!(resolved.ended.len(), 1);
    }
}
