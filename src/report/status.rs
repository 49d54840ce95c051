//! What one look at the firewall found, as every output renders it: the
//! report (per service and family: the state, what was asked, and why),
//! its outcome in one line, and the times as the owner reads them. The
//! page (`page`), the text status (`text`), `status --json` (`json`) and
//! the metrics render these values; none of them judges a rule. Pure.

use chrono::{DateTime, FixedOffset, SecondsFormat, TimeDelta};
use serde::{Serialize, Serializer};

use crate::config::Family;
use crate::firewall::model::PortState;
use crate::firewall::reasons::more_closed;
use crate::intake::intent::Opening;
use crate::intake::state::LastGood;

/// What one run (or one look, for `status`) found and did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The host it is about (`host_name`): one control file steers many servers.
    pub host: String,
    /// When the run started.
    pub run_at: DateTime<FixedOffset>,
    /// How often runs come (`[status] every`), to say when the next is due.
    pub every: TimeDelta,
    /// Why the run failed, in plain words, but for services not as asked
    /// (the rows tell those); None when nothing else failed.
    pub failure: Option<String>,
    /// When `portlocker reset` removed portlocker's rules, if no run has
    /// come since: nothing is enforced until the next run.
    pub reset_at: Option<DateTime<FixedOffset>>,
    /// In the config's order.
    pub services: Vec<ServiceRow>,
    /// The control file in force, if there is one.
    pub control_file: Option<Freshness>,
    /// `nftables`, or which iptables: `nf_tables` or `legacy`.
    pub backend: Option<String>,
    /// Things about this machine the owner should know.
    pub notices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRow {
    pub name: String,
    /// Ports as configured, e.g. `80/tcp`.
    pub ports: Vec<String>,
    /// One per managed family, IPv4 first.
    pub families: Vec<FamilyView>,
    /// The opens in force: who each lets in and when it ends.
    pub opens: Vec<Opening>,
    /// The deadline or sources of an open, in plain words; may be empty.
    pub note: String,
}

/// A service in one family: what is, what was asked, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyView {
    pub family: Family,
    pub state: PortState,
    /// What the control file asks (`Closed`, `Open` or `OpenToSources`);
    /// None when nothing asks (`default = "keep"` and no line names it).
    pub asked: Option<PortState>,
    /// The deciding rule(s), in the rules' own words.
    pub reason: String,
    /// When not as asked: what would make it so.
    pub advice: Option<String>,
    /// A source it is asked open to is kept out by others.
    pub shut_out: bool,
}

impl FamilyView {
    pub fn surprise(&self) -> Surprise {
        match Surprise::of(self.state, self.asked) {
            Surprise::Calm if self.shut_out => Surprise::Drift,
            surprise => surprise,
        }
    }
}

/// How a state compares with what is asked. The page colours the state
/// itself (open and closed differ at a glance) and marks surprise apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surprise {
    /// As the control file asks.
    Calm,
    /// Nothing asks anything of it.
    Unasked,
    /// Not as asked: a rule of others, a shared port, drift.
    Drift,
    /// Not known: never taken for closed.
    Unknown,
}

impl Surprise {
    /// How `state` compares with `asked`.
    pub fn of(state: PortState, asked: Option<PortState>) -> Surprise {
        match (state, asked) {
            (PortState::Unknown, _) => Surprise::Unknown,
            (_, None) => Surprise::Unasked,
            (state, Some(asked)) if state == asked => Surprise::Calm,
            // Open, with a flood dropped (ufw's `limit`): what an open asks.
            (PortState::RateLimited, Some(PortState::Open)) => Surprise::Calm,
            _ => Surprise::Drift,
        }
    }

    /// Its name on the page and in `status --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Surprise::Calm => "calm",
            Surprise::Unasked => "unasked",
            Surprise::Drift => "drift",
            Surprise::Unknown => "unknown",
        }
    }
}

/// One service in one family that is not as asked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Difference<'a> {
    pub row: &'a ServiceRow,
    pub view: &'a FamilyView,
}

impl Difference<'_> {
    /// Whether it lets fewer in than asked: the owner may be locked out.
    pub fn lockout(&self) -> bool {
        self.view.shut_out
            || (self.view.asked).is_some_and(|asked| more_closed(self.view.state, asked))
    }

    /// `ssh closed over IPv4 (asked: open)`.
    pub fn short(&self) -> String {
        if self.view.shut_out {
            return format!(
                "{} closed to some of its sources over {}",
                self.row.name, self.view.family
            );
        }
        format!(
            "{} {} over {} (asked: {})",
            self.row.name,
            self.view.state.as_str(),
            self.view.family,
            self.view.asked.map_or("nothing", PortState::as_str)
        )
    }

    /// The whole of it, for the log and cron: what, why, and what to do.
    pub fn text(&self) -> String {
        let view = self.view;
        let asked = match view.asked {
            Some(PortState::Closed) => "closes it",
            Some(PortState::OpenToSources) => "opens it to some sources only",
            _ => "opens it",
        };
        let ports = self.row.ports.join(",");
        let mut text = match view.shut_out {
            true => format!(
                "{}: {} {ports} is closed to sources the control file opens it to: {}",
                view.family, self.row.name, view.reason
            ),
            false => format!(
                "{}: {} {ports} is {}, but the control file {asked}: {}",
                view.family,
                self.row.name,
                view.state.as_str(),
                view.reason
            ),
        };
        if let Some(advice) = &view.advice {
            text.push_str("; ");
            text.push_str(advice);
        }
        text
    }
}

/// What a report says in one line, most pressing first.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<'a> {
    /// `reset` removed portlocker's rules and no run has come since.
    Reset(DateTime<FixedOffset>),
    /// Services not as asked (and perhaps a failure besides).
    NotAsAsked(Vec<Difference<'a>>),
    /// The run failed; no service is known to differ.
    Failed(&'a str),
    /// As asked where known; these states cannot be told.
    Unknown(Vec<Difference<'a>>),
    /// No control file has been accepted and nothing is asked: nothing is
    /// enforced, which is not "OK".
    NothingAsked,
    /// Every service is as asked.
    Ok,
}

impl Outcome<'_> {
    /// Its name in `status --json`, and its class on the page.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Reset(_) => "reset",
            Outcome::NotAsAsked(_) => "not_as_asked",
            Outcome::Failed(_) => "failed",
            Outcome::Unknown(_) => "unknown",
            Outcome::NothingAsked => "nothing_asked",
            Outcome::Ok => "ok",
        }
    }

    /// One word for the page's title.
    pub fn title(&self) -> &'static str {
        match self {
            Outcome::Reset(_) => "RESET",
            Outcome::NotAsAsked(_) => "NOT AS ASKED",
            Outcome::Failed(_) => "FAILED",
            Outcome::Unknown(_) => "UNKNOWN",
            Outcome::NothingAsked => "NOTHING ASKED",
            Outcome::Ok => "OK",
        }
    }
}

impl Report {
    /// Every service in every family that is not as asked, in order.
    pub fn differences(&self) -> Vec<Difference<'_>> {
        self.views(Surprise::Drift)
    }

    fn views(&self, surprise: Surprise) -> Vec<Difference<'_>> {
        self.services
            .iter()
            .flat_map(|row| {
                row.families
                    .iter()
                    .filter(move |view| view.surprise() == surprise)
                    .map(move |view| Difference { row, view })
            })
            .collect()
    }

    /// What the report says in one line, most pressing first: a reset,
    /// services not as asked, a failure, states not known, or all well.
    pub fn outcome(&self) -> Outcome<'_> {
        if let Some(at) = self.reset_at {
            return Outcome::Reset(at);
        }
        let differences = self.differences();
        if !differences.is_empty() {
            return Outcome::NotAsAsked(differences);
        }
        if let Some(failure) = &self.failure {
            return Outcome::Failed(failure);
        }
        let unknown: Vec<Difference> = self
            .views(Surprise::Unknown)
            .into_iter()
            .filter(|difference| difference.view.asked.is_some())
            .collect();
        if !unknown.is_empty() {
            return Outcome::Unknown(unknown);
        }
        let asks_nothing =
            (self.services.iter()).all(|row| row.families.iter().all(|v| v.asked.is_none()));
        if self.control_file.is_none() && asks_nothing {
            return Outcome::NothingAsked;
        }
        Outcome::Ok
    }

    /// Whether portlocker's rules are in force: not after `reset`, nor
    /// before any control file has asked anything.
    pub fn enforcing(&self) -> bool {
        !matches!(self.outcome(), Outcome::Reset(_) | Outcome::NothingAsked)
    }

    /// The outcome as the headline of the page and of `status`.
    pub fn headline(&self) -> String {
        match self.outcome() {
            Outcome::Reset(at) => format!(
                "Reset: portlocker enforces nothing until the next run (reset {})",
                shown(at, self.run_at)
            ),
            Outcome::NotAsAsked(differences) => {
                let each: Vec<String> = differences.iter().map(Difference::short).collect();
                format!("Not as asked: {}", each.join("; "))
            }
            Outcome::Failed(failure) => format!("Failed: {failure}"),
            Outcome::Unknown(unknown) => {
                let each: Vec<String> = unknown
                    .iter()
                    .map(|d| format!("{} over {}", d.row.name, d.view.family))
                    .collect();
                format!("Not known: {}", each.join("; "))
            }
            Outcome::NothingAsked => "Nothing asked yet: no control file has been accepted, so \
                                      portlocker enforces nothing"
                .to_owned(),
            Outcome::Ok => "OK: the firewall matches the control file".to_owned(),
        }
    }

    /// The host as a heading says it.
    pub fn host_shown(&self) -> &str {
        if self.host.is_empty() {
            "this server"
        } else {
            &self.host
        }
    }
}

/// How fresh the control file in force is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Freshness {
    /// The last fetch that brought it or confirmed it (304).
    #[serde(serialize_with = "rfc3339")]
    pub fetched_at: DateTime<FixedOffset>,
    /// When its content last changed.
    #[serde(serialize_with = "rfc3339")]
    pub changed_at: DateTime<FixedOffset>,
    /// When it was signed, if its signature was checked.
    #[serde(serialize_with = "rfc3339_or_null")]
    pub signed_at: Option<DateTime<FixedOffset>>,
}

impl Freshness {
    /// How fresh `last_good` is.
    pub fn of(last_good: &LastGood) -> Freshness {
        Freshness {
            fetched_at: last_good.fetched_at,
            changed_at: last_good.changed_at.unwrap_or(last_good.fetched_at),
            signed_at: last_good
                .signed_at
                .and_then(|unix| DateTime::from_timestamp(unix, 0))
                .map(|signed| signed.fixed_offset()),
        }
    }
}

/// A moment as `status --json` gives it: RFC 3339 in whole seconds, with
/// its offset (`+00:00`, never `Z`).
pub fn rfc3339_text(at: DateTime<FixedOffset>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// Serializes a moment as `rfc3339_text` gives it.
pub fn rfc3339<S: Serializer>(
    at: &DateTime<FixedOffset>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rfc3339_text(*at))
}

fn rfc3339_or_null<S: Serializer>(
    at: &Option<DateTime<FixedOffset>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// A moment with its UTC offset: `2026-11-25 14:05:00 +01:00`, in the
/// offset of `now`.
pub fn shown(at: DateTime<FixedOffset>, now: DateTime<FixedOffset>) -> String {
    at.with_timezone(&now.timezone())
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// A moment with how long ago it was: `2026-11-25 14:05:00 +01:00 (3 minutes ago)`.
pub fn moment(at: DateTime<FixedOffset>, now: DateTime<FixedOffset>) -> String {
    let shown = shown(at, now);
    match ago(at, now) {
        Some(ago) => format!("{shown} ({ago})"),
        None => shown,
    }
}

/// `3 minutes ago`, `5 days ago`; None under a minute.
pub fn ago(at: DateTime<FixedOffset>, now: DateTime<FixedOffset>) -> Option<String> {
    let ago = now - at;
    if ago < TimeDelta::minutes(1) {
        return None;
    }
    let (count, unit) = if ago < TimeDelta::hours(2) {
        (ago.num_minutes(), "minute")
    } else if ago < TimeDelta::days(2) {
        (ago.num_hours(), "hour")
    } else {
        (ago.num_days(), "day")
    };
    let plural = if count == 1 { "" } else { "s" };
    Some(format!("{count} {unit}{plural} ago"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn at(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap()
    }

    pub(crate) fn view(
        family: Family,
        state: PortState,
        asked: Option<PortState>,
        reason: &str,
    ) -> FamilyView {
        FamilyView {
            family,
            state,
            asked,
            reason: reason.into(),
            advice: None,
            shut_out: false,
        }
    }

    /// A report of four services: as asked (closed, open to sources), one
    /// family unknown, one open where closed was asked, one asked nothing.
    pub(crate) fn report(failure: Option<&str>) -> Report {
        use Family::{Ipv4, Ipv6};
        use PortState::*;
        Report {
            host: "web-1".into(),
            run_at: at("2026-11-25T14:05:00+01:00"),
            every: TimeDelta::minutes(5),
            failure: failure.map(String::from),
            reset_at: None,
            services: vec![
                ServiceRow {
                    name: "ssh".into(),
                    ports: vec!["22/tcp".into()],
                    families: vec![
                        view(Ipv4, Closed, Some(Closed), "`-A PORTLOCKER …` drops it"),
                        view(Ipv6, OpenToSources, Some(OpenToSources), "sources"),
                    ],
                    opens: Vec::new(),
                    note: "from 2001:db8::/48 until 2026-11-25 18:00 +01:00".into(),
                },
                ServiceRow {
                    name: "web".into(),
                    ports: vec!["80/tcp".into(), "443/tcp".into()],
                    families: vec![
                        view(Ipv4, Open, Some(Open), "nothing drops it"),
                        view(Ipv6, Unknown, Some(Open), "IPv6 could not be read"),
                    ],
                    opens: Vec::new(),
                    note: String::new(),
                },
                ServiceRow {
                    name: "backup".into(),
                    ports: vec!["873/tcp".into()],
                    families: vec![
                        view(
                            Ipv4,
                            Open,
                            Some(Closed),
                            "`-A INPUT -p tcp -m tcp --dport 873 -j ACCEPT` lets it through",
                        ),
                        view(Ipv6, Closed, Some(Closed), "drops"),
                    ],
                    opens: Vec::new(),
                    note: String::new(),
                },
                ServiceRow {
                    name: "mosh".into(),
                    ports: vec!["60000-61000/udp".into()],
                    families: vec![
                        view(Ipv4, Open, None, "nothing drops it"),
                        view(Ipv6, Open, None, "nothing drops it"),
                    ],
                    opens: Vec::new(),
                    note: String::new(),
                },
            ],
            control_file: Some(Freshness {
                fetched_at: at("2026-11-25T14:05:00+01:00"),
                changed_at: at("2026-11-25T11:00:00+01:00"),
                signed_at: None,
            }),
            backend: Some("nf_tables".into()),
            notices: vec!["Docker <is> here".into()],
        }
    }

    /// The report of `report`, every service as asked.
    pub(crate) fn calm_report() -> Report {
        let mut report = report(None);
        report.services.truncate(2);
        report.services[1].families[1].state = PortState::Open;
        report
    }

    #[test]
    fn surprise_compares_the_state_with_what_was_asked() {
        use PortState::*;
        let cases = [
            (Closed, Some(Closed), Surprise::Calm),
            (Open, Some(Open), Surprise::Calm),
            (OpenToSources, Some(OpenToSources), Surprise::Calm),
            (Open, Some(Closed), Surprise::Drift),
            (Partial, Some(Closed), Surprise::Drift),
            (Closed, Some(Open), Surprise::Drift),
            (Open, Some(OpenToSources), Surprise::Drift),
            (Unknown, Some(Closed), Surprise::Unknown),
            (Unknown, None, Surprise::Unknown),
            (Open, None, Surprise::Unasked),
            (RateLimited, Some(Open), Surprise::Calm),
            (RateLimited, Some(Closed), Surprise::Drift),
        ];
        for (state, asked, surprise) in cases {
            assert_eq!(Surprise::of(state, asked), surprise, "{state:?} {asked:?}");
        }
    }

    /// With no control file accepted and nothing asked, nothing is enforced:
    /// not "OK", on the page, in `status` or the JSON.
    #[test]
    fn nothing_asked_is_not_ok() {
        let mut fresh = report(None);
        fresh.control_file = None;
        for row in &mut fresh.services {
            for view in &mut row.families {
                view.asked = None;
                view.state = PortState::Open;
            }
        }
        assert_eq!(fresh.outcome().as_str(), "nothing_asked");
        assert!(!fresh.enforcing());
        assert!(
            fresh.headline().starts_with("Nothing asked yet"),
            "{}",
            fresh.headline()
        );
        // Once a file was accepted, a file that asks nothing is as asked.
        let mut accepted = fresh.clone();
        accepted.control_file = report(None).control_file;
        assert_eq!(accepted.outcome().as_str(), "ok");
    }

    /// A lockout is never OK: whatever differs from what was asked, more
    /// open or more closed, is the headline and names service and family.
    #[test]
    fn the_outcome_never_calls_a_difference_ok() {
        assert_eq!(
            calm_report().headline(),
            "OK: the firewall matches the control file"
        );
        let mut locked = calm_report();
        locked.services[0].families[0] = FamilyView {
            advice: Some("it is not portlocker's: remove it with `iptables -D …`".into()),
            ..view(
                Family::Ipv4,
                PortState::Closed,
                Some(PortState::Open),
                "`-A INPUT -p tcp -m tcp --dport 22 -j DROP` drops it",
            )
        };
        assert_eq!(locked.outcome().as_str(), "not_as_asked");
        assert_eq!(
            locked.headline(),
            "Not as asked: ssh closed over IPv4 (asked: open)"
        );
        let differences = locked.differences();
        assert!(differences[0].lockout());
        assert_eq!(
            differences[0].text(),
            "IPv4: ssh 22/tcp is closed, but the control file opens it: `-A INPUT -p tcp -m tcp \
             --dport 22 -j DROP` drops it; it is not portlocker's: remove it with `iptables -D …`"
        );
        // Open to sources as asked, but one of them kept out by others.
        let mut shut = calm_report();
        shut.services[0].families[0] = FamilyView {
            shut_out: true,
            ..view(
                Family::Ipv4,
                PortState::OpenToSources,
                Some(PortState::OpenToSources),
                "let in by portlocker; closed to 10.6.0.0/24 by `-A INPUT -s 10.6.0.0/24 -j DROP`",
            )
        };
        assert_eq!(
            shut.headline(),
            "Not as asked: ssh closed to some of its sources over IPv4"
        );
        assert!(shut.differences()[0].lockout());
        // More open than asked, with a failure besides: the difference leads.
        let report = report(Some("a firewall command failed"));
        assert_eq!(
            report.headline(),
            "Not as asked: backup open over IPv4 (asked: closed)"
        );
        assert!(!report.differences()[0].lockout());
        // A failure alone, then unknown states alone.
        let mut failed = calm_report();
        failed.failure = Some("the server answered 404 Not Found".into());
        assert_eq!(
            failed.headline(),
            "Failed: the server answered 404 Not Found"
        );
        let mut unknown = calm_report();
        unknown.services[1].families[1].state = PortState::Unknown;
        assert_eq!(unknown.headline(), "Not known: web over IPv6");
        assert_eq!(unknown.outcome().title(), "UNKNOWN");
    }

    #[test]
    fn after_a_reset_nothing_is_enforced_whatever_the_rows_say() {
        let mut reset = report(Some("x"));
        reset.reset_at = Some(at("2026-11-25T14:03:00+01:00"));
        assert_eq!(reset.outcome().as_str(), "reset");
        assert_eq!(
            reset.headline(),
            "Reset: portlocker enforces nothing until the next run (reset 2026-11-25 14:03:00 \
             +01:00)"
        );
    }

    #[test]
    fn json_times_are_rfc3339_seconds_with_their_offset() {
        let utc = DateTime::parse_from_rfc3339("2026-11-25T13:05:00.123456789Z").unwrap();
        assert_eq!(rfc3339_text(utc), "2026-11-25T13:05:00+00:00");
        let document = serde_json::to_value(Freshness {
            fetched_at: at("2026-11-25T14:05:00.5+01:00"),
            changed_at: utc,
            signed_at: None,
        })
        .unwrap();
        assert_eq!(
            document,
            serde_json::json!({
                "fetched_at": "2026-11-25T14:05:00+01:00",
                "changed_at": "2026-11-25T13:05:00+00:00",
                "signed_at": null
            })
        );
    }

    #[test]
    fn ages_read_naturally_with_their_offset() {
        let now = at("2026-11-25T14:05:00+01:00");
        assert_eq!(moment(now, now), "2026-11-25 14:05:00 +01:00");
        assert_eq!(
            moment(at("2026-11-25T14:04:00+01:00"), now),
            "2026-11-25 14:04:00 +01:00 (1 minute ago)"
        );
        assert_eq!(
            moment(at("2026-11-25T12:05:00Z"), now),
            "2026-11-25 13:05:00 +01:00 (60 minutes ago)"
        );
        assert_eq!(
            moment(at("2026-11-20T14:05:00+01:00"), now),
            "2026-11-20 14:05:00 +01:00 (5 days ago)"
        );
    }
}
