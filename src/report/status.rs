//! What a run found and did, as the owner reads it: the report and the HTML
//! status page for a phone. Pure: writing the page is `files::write_atomic`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset, SecondsFormat, TimeDelta};
use serde::{Serialize, Serializer};

use crate::config::Family;
use crate::firewall::model::PortState;
use crate::intake::state::{LastGood, LastRun};

/// What one run found and did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The host it is about (`host_name`): one control file steers many servers.
    pub host: String,
    /// When the run started.
    pub run_at: DateTime<FixedOffset>,
    /// How often runs come (`[status] every`), to say when the next is due.
    pub every: TimeDelta,
    /// None when the run succeeded; otherwise why it failed, in plain words.
    pub failure: Option<String>,
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
    pub states: Vec<(Family, PortState)>,
    /// Why each family's state is what it is: the deciding rule or rules,
    /// in their tool's words.
    pub reasons: BTreeMap<Family, String>,
    /// The state the control file asks for in each family (`Closed`,
    /// `Open` or `OpenToSources`); empty when nothing asks (`default =
    /// "keep"` and no line names it), or when it is not known.
    pub asked: BTreeMap<Family, PortState>,
    /// The deadline or sources of an open, in plain words; may be empty.
    pub note: String,
}

/// How a state compares with what is asked: the page colours surprise,
/// not words, so an open the owner asked for is as calm as a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surprise {
    /// As the control file asks.
    Calm,
    /// Nothing asks anything of it.
    Unasked,
    /// Not as asked: drift, a rule of others, a port shared with a closed service.
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
            _ => Surprise::Drift,
        }
    }

    /// The class on the page.
    fn class(self) -> &'static str {
        match self {
            Surprise::Calm => "calm",
            Surprise::Unasked => "unasked",
            Surprise::Drift => "drift",
            Surprise::Unknown => "unknown",
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

const STYLE: &str = "\
:root{color-scheme:light dark;--bg:#fff;--fg:#161616;--muted:#5a5a5a;--line:#d0d0d0;\
--calm:#17612e;--bad:#a4161a;--bad-bg:#fbe9e9;--warn:#8a5a00;--warn-bg:#fdf3dc}\
@media (prefers-color-scheme:dark){:root{--bg:#121212;--fg:#ececec;--muted:#a8a8a8;\
--line:#3a3a3a;--calm:#5fd08a;--bad:#ff8a8a;--bad-bg:#3a1414;--warn:#f0c060;--warn-bg:#33280f}}\
*{box-sizing:border-box}\
body{margin:0 auto;padding:1rem;max-width:44rem;background:var(--bg);color:var(--fg);\
font:16px/1.45 system-ui,-apple-system,sans-serif;overflow-wrap:anywhere}\
h1{font-size:1.25rem;margin:0 0 .75rem}h1 .tool{color:var(--muted);font-weight:400}\
.outcome{margin:0 0 1rem;padding:.75rem 1rem;border-radius:.5rem;border:2px solid;font-weight:600}\
.outcome.ok{color:var(--calm)}.outcome.failed{color:var(--bad);background:var(--bad-bg);border-width:3px}\
.services{list-style:none;margin:0;padding:0}\
.service{padding:.6rem 0;border-bottom:1px solid var(--line)}\
.name{font-weight:600;margin-right:.25rem}.ports{color:var(--muted)}\
.states{margin:.25rem 0 0;color:var(--muted)}\
.state{display:inline-block;margin:.15rem .1rem .15rem 0;padding:.05rem .5rem;border:1px solid;border-radius:1rem;font-size:.9rem}\
.calm{color:var(--calm)}.unasked{color:var(--muted)}\
.drift{color:var(--bad);background:var(--bad-bg);border-width:2px;font-weight:700}\
.unknown{color:var(--warn);background:var(--warn-bg);border-width:2px;font-weight:700}\
.note{margin:.25rem 0 0;color:var(--muted);font-size:.9rem}\
.reason{margin:.25rem 0 0;font-size:.85rem}\
dl{margin:1rem 0 0;display:grid;grid-template-columns:max-content 1fr;gap:.2rem .75rem;font-size:.9rem}\
dt{color:var(--muted)}dd{margin:0}\
.notices{margin:1rem 0 0;padding-left:1.2rem;color:var(--warn);font-size:.9rem}\
.grammar{margin:1.25rem 0 0;color:var(--muted);font-size:.85rem}\
code{font:.85rem ui-monospace,monospace}";

/// The complete page for `report`. It reads as plain text too (a text
/// browser, a screen reader, a copy): words are apart, every state says
/// in words what its colour says.
pub fn render(report: &Report) -> String {
    let now = report.run_at;
    let host = if report.host.is_empty() {
        "this server"
    } else {
        report.host.as_str()
    };
    let (class, outcome) = match &report.failure {
        None => ("ok", "OK: the firewall matches the control file".to_owned()),
        Some(reason) => ("failed", format!("Failed: {reason}")),
    };
    let title = if report.failure.is_none() {
        "OK"
    } else {
        "FAILED"
    };

    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"color-scheme\" content=\"light dark\">\n\
         <title>{host}: {title} · portlocker</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1><span class=\"host\">{host}</span> <span class=\"tool\">· portlocker</span></h1>\n\
         <p class=\"outcome {class}\" id=\"outcome\">{}</p>\n<ul class=\"services\">\n",
        escape(&outcome),
        host = escape(host),
    );
    for row in &report.services {
        let _ = write!(
            page,
            "<li class=\"service\" data-service=\"{name}\"><span class=\"name\">{name}</span> \
             <span class=\"ports\">{}</span><div class=\"states\">",
            escape(&row.ports.join(", ")),
            name = escape(&row.name),
        );
        for (index, (family, state)) in row.states.iter().enumerate() {
            let surprise = Surprise::of(*state, row.asked.get(family).copied());
            // What the colour says, in words too.
            let asked = match (surprise, row.asked.get(family)) {
                (Surprise::Drift, Some(asked)) => format!(" (asked: {})", asked.as_str()),
                _ => String::new(),
            };
            let _ = write!(
                page,
                "{}<span class=\"state {}\" data-family=\"{family}\">{family} {}{asked}</span>",
                if index == 0 { "" } else { ", " },
                surprise.class(),
                state.as_str()
            );
        }
        page.push_str("</div>");
        for (family, _, reason) in surprising(row) {
            let _ = write!(
                page,
                "<p class=\"reason\" data-family=\"{family}\">{family}: {}</p>",
                escape(reason)
            );
        }
        if !row.note.is_empty() {
            let _ = write!(page, "<p class=\"note\">{}</p>", escape(&row.note));
        }
        page.push_str("</li>\n");
    }
    page.push_str("</ul>\n<dl>\n");
    let mut fact = |term: &str, value: String| {
        let _ = writeln!(page, "<dt>{term}</dt><dd>{}</dd>", escape(&value));
    };
    fact("This run", moment(now, now));
    fact(
        "Next run",
        format!(
            "due by about {}; if that time has passed, this page is stale",
            shown(now + report.every, now)
        ),
    );
    match &report.control_file {
        Some(file) => {
            fact("Last good fetch", moment(file.fetched_at, now));
            fact("Control file changed", moment(file.changed_at, now));
            fact(
                "Signed",
                match file.signed_at {
                    Some(signed) => format!("yes, {}", moment(signed, now)),
                    None => "no".to_owned(),
                },
            );
        }
        None => fact("Control file", "none accepted yet".to_owned()),
    }
    fact(
        "Firewall",
        match report.backend.as_deref() {
            Some("nftables") => "nftables (table inet portlocker)".to_owned(),
            Some(backend) => format!("iptables ({backend})"),
            None => "iptables".to_owned(),
        },
    );
    page.push_str("</dl>\n");
    if !report.notices.is_empty() {
        page.push_str("<ul class=\"notices\">\n");
        for notice in &report.notices {
            let _ = writeln!(page, "<li>{}</li>", escape(notice));
        }
        page.push_str("</ul>\n");
    }
    if let Some(first) = report.services.first() {
        let name = escape(&first.name);
        let _ = writeln!(
            page,
            "<p class=\"grammar\">Control file lines: <code>open {name}</code>, \
             <code>close {name}</code>, <code>open {name} for 1h</code>, \
             <code>open {name} from 203.0.113.7</code>, <code>close {name} on web-*</code></p>"
        );
    }
    page.push_str("</body>\n</html>\n");
    page
}

/// What the state says of the last run, for `table`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastRunKnown<'a> {
    Ran(&'a LastRun),
    /// No run has kept a state yet.
    None,
    /// The state file is damaged: nothing is known of the last run.
    Lost,
}

/// `portlocker status` as text: a header line with the last run, then a
/// column per family, each as wide as its widest entry, and each open's
/// deadline and sources.
pub fn table(report: &Report, last_run: LastRunKnown) -> String {
    let now = report.run_at;
    let host = if report.host.is_empty() {
        "this server"
    } else {
        report.host.as_str()
    };
    let mut text = match last_run {
        LastRunKnown::None => format!("{host}: no run yet\n"),
        LastRunKnown::Lost => format!(
            "{host}: the last run is not known: the state file is damaged (see portlocker check)\n"
        ),
        LastRunKnown::Ran(run) => {
            let outcome = match &run.failure {
                None if run.ok => "ok".to_owned(),
                None => "failed".to_owned(),
                Some(failure) => format!("failed: {failure}"),
            };
            format!("{host}: last run {}: {outcome}\n", moment(run.at, now))
        }
    };
    let families: Vec<Family> = report
        .services
        .first()
        .map(|row| row.states.iter().map(|(family, _)| *family).collect())
        .unwrap_or_default();
    let mut rows: Vec<Vec<String>> = vec![
        ["SERVICE", "PORTS"]
            .into_iter()
            .map(String::from)
            .chain(families.iter().map(ToString::to_string))
            .collect(),
    ];
    let notes = report.services.iter().any(|row| !row.note.is_empty());
    if notes {
        rows[0].push("UNTIL / FROM".to_owned());
    }
    for row in &report.services {
        let mut cells = vec![row.name.clone(), row.ports.join(",")];
        cells.extend(
            row.states
                .iter()
                .map(|(_, state)| state.as_str().replace(' ', "-")),
        );
        if notes {
            cells.push(row.note.clone());
        }
        rows.push(cells);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|cells| cells.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for cells in &rows {
        let mut line = String::new();
        for (cell, width) in cells.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    for row in &report.services {
        for (family, state, reason) in surprising(row) {
            let _ = writeln!(text, "{} {family} {}: {reason}", row.name, state.as_str());
        }
    }
    text
}

/// Each state of `row` that is not as asked or not known, with why.
fn surprising(row: &ServiceRow) -> impl Iterator<Item = (Family, PortState, &str)> {
    row.states.iter().filter_map(|&(family, state)| {
        let surprise = Surprise::of(state, row.asked.get(&family).copied());
        let reason = row.reasons.get(&family)?;
        let shown = matches!(surprise, Surprise::Drift | Surprise::Unknown);
        shown.then_some((family, state, reason.as_str()))
    })
}

/// A moment with its UTC offset: `2026-11-25 14:05:00 +01:00`, in the
/// offset of `now`.
fn shown(at: DateTime<FixedOffset>, now: DateTime<FixedOffset>) -> String {
    at.with_timezone(&now.timezone())
        .format("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

/// A moment with how long ago it was: `2026-11-25 14:05:00 +01:00 (3 minutes ago)`.
fn moment(at: DateTime<FixedOffset>, now: DateTime<FixedOffset>) -> String {
    let shown = shown(at, now);
    let ago = now - at;
    if ago < TimeDelta::minutes(1) {
        return shown;
    }
    let (count, unit) = if ago < TimeDelta::hours(2) {
        (ago.num_minutes(), "minute")
    } else if ago < TimeDelta::days(2) {
        (ago.num_hours(), "hour")
    } else {
        (ago.num_days(), "day")
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{shown} ({count} {unit}{plural} ago)")
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap()
    }

    fn both(state: PortState) -> BTreeMap<Family, PortState> {
        BTreeMap::from([(Family::Ipv4, state), (Family::Ipv6, state)])
    }

    pub(crate) fn report(failure: Option<&str>) -> Report {
        Report {
            host: "web-1".into(),
            run_at: at("2026-11-25T14:05:00+01:00"),
            every: TimeDelta::minutes(5),
            failure: failure.map(String::from),
            services: vec![
                ServiceRow {
                    name: "ssh".into(),
                    ports: vec!["22/tcp".into()],
                    states: vec![
                        (Family::Ipv4, PortState::Closed),
                        (Family::Ipv6, PortState::OpenToSources),
                    ],
                    asked: BTreeMap::from([
                        (Family::Ipv4, PortState::Closed),
                        (Family::Ipv6, PortState::OpenToSources),
                    ]),
                    note: "from 2001:db8::/48 until 2026-11-25 18:00 +01:00".into(),
                    reasons: BTreeMap::new(),
                },
                ServiceRow {
                    name: "web".into(),
                    ports: vec!["80/tcp".into(), "443/tcp".into()],
                    states: vec![
                        (Family::Ipv4, PortState::Open),
                        (Family::Ipv6, PortState::Unknown),
                    ],
                    asked: both(PortState::Open),
                    note: String::new(),
                    reasons: BTreeMap::new(),
                },
                ServiceRow {
                    name: "backup".into(),
                    ports: vec!["873/tcp".into()],
                    states: vec![
                        (Family::Ipv4, PortState::Open),
                        (Family::Ipv6, PortState::Closed),
                    ],
                    asked: both(PortState::Closed),
                    note: String::new(),
                    reasons: BTreeMap::new(),
                },
                ServiceRow {
                    name: "mosh".into(),
                    ports: vec!["60000-61000/udp".into()],
                    states: vec![
                        (Family::Ipv4, PortState::Open),
                        (Family::Ipv6, PortState::Open),
                    ],
                    asked: BTreeMap::new(),
                    note: String::new(),
                    reasons: BTreeMap::new(),
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

    #[test]
    fn a_good_run_shows_host_outcome_then_every_service_in_order_and_the_facts() {
        let page = render(&report(None));
        assert!(page.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
        assert!(page.ends_with("</html>\n"));
        assert!(page.contains("<meta charset=\"utf-8\">"));
        assert!(
            page.contains(
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            )
        );
        assert!(page.contains("@media (prefers-color-scheme:dark)"));
        assert!(page.contains("<title>web-1: OK · portlocker</title>"));
        assert!(page.contains(
            "<h1><span class=\"host\">web-1</span> <span class=\"tool\">· portlocker</span></h1>"
        ));
        let outcome = page
            .find("id=\"outcome\">OK: the firewall matches the control file</p>")
            .unwrap();
        let rows: Vec<usize> = ["ssh", "web", "backup", "mosh"]
            .iter()
            .map(|name| page.find(&format!("data-service=\"{name}\"")).unwrap())
            .collect();
        assert!(outcome < rows[0], "the outcome must come first");
        assert!(rows.windows(2).all(|pair| pair[0] < pair[1]), "{rows:?}");
        assert!(page.contains(
            "<span class=\"name\">ssh</span> <span class=\"ports\">22/tcp</span><div class=\"states\">\
             <span class=\"state calm\" data-family=\"IPv4\">IPv4 closed</span>, \
             <span class=\"state calm\" data-family=\"IPv6\">IPv6 open to sources</span></div>"
        ));
        assert!(
            page.contains("<p class=\"note\">from 2001:db8::/48 until 2026-11-25 18:00 +01:00</p>")
        );
        assert!(page.contains("<span class=\"ports\">80/tcp, 443/tcp</span>"));
        assert!(page.contains("<dt>This run</dt><dd>2026-11-25 14:05:00 +01:00</dd>"));
        assert!(page.contains(
            "<dt>Next run</dt><dd>due by about 2026-11-25 14:10:00 +01:00; if that time has \
             passed, this page is stale</dd>"
        ));
        assert!(page.contains(
            "<dt>Control file changed</dt><dd>2026-11-25 11:00:00 +01:00 (3 hours ago)</dd>"
        ));
        assert!(page.contains("<dt>Signed</dt><dd>no</dd>"));
        assert!(page.contains("<dt>Firewall</dt><dd>iptables (nf_tables)</dd>"));
        assert!(page.contains("<li>Docker &lt;is&gt; here</li>"));
        // The reminder of the grammar is last, with the first service, and never a URL.
        let grammar = page
            .find(
                "<p class=\"grammar\">Control file lines: <code>open ssh</code>, \
             <code>close ssh</code>, <code>open ssh for 1h</code>, ",
            )
            .unwrap();
        assert!(grammar > page.find("<dl>").unwrap());
        assert!(
            !page.contains("<script")
                && !page.contains("src=")
                && !page.contains("href=")
                && !page.contains("url(")
                && !page.contains("://")
        );
    }

    /// An asked-for open is as calm as an asked-for close; what differs
    /// from the control file, and what is unknown, stand out and say so.
    #[test]
    fn states_are_coloured_by_surprise_and_say_it_in_words() {
        let page = render(&report(None));
        for (family, class, text) in [
            ("IPv4", "calm", "IPv4 open"),
            ("IPv6", "unknown", "IPv6 unknown"),
        ] {
            assert!(
                page.contains(&format!(
                    "<span class=\"state {class}\" data-family=\"{family}\">{text}</span>"
                )),
                "{family}"
            );
        }
        assert!(page.contains(
            "<span class=\"state drift\" data-family=\"IPv4\">IPv4 open (asked: closed)</span>, \
             <span class=\"state calm\" data-family=\"IPv6\">IPv6 closed</span>"
        ));
        assert!(
            page.contains("<span class=\"state unasked\" data-family=\"IPv4\">IPv4 open</span>")
        );
        let cases = [
            (PortState::Closed, Some(PortState::Closed), Surprise::Calm),
            (PortState::Open, Some(PortState::Open), Surprise::Calm),
            (
                PortState::OpenToSources,
                Some(PortState::OpenToSources),
                Surprise::Calm,
            ),
            (PortState::Open, Some(PortState::Closed), Surprise::Drift),
            (PortState::Partial, Some(PortState::Closed), Surprise::Drift),
            (PortState::Closed, Some(PortState::Open), Surprise::Drift),
            (
                PortState::Open,
                Some(PortState::OpenToSources),
                Surprise::Drift,
            ),
            (
                PortState::Unknown,
                Some(PortState::Closed),
                Surprise::Unknown,
            ),
            (PortState::Unknown, None, Surprise::Unknown),
            (PortState::Open, None, Surprise::Unasked),
        ];
        for (state, asked, surprise) in cases {
            assert_eq!(Surprise::of(state, asked), surprise, "{state:?} {asked:?}");
        }
    }

    #[test]
    fn a_failure_is_shown_escaped() {
        let page = render(&report(Some("line 2: unknown service `<b>&x`")));
        assert!(page.contains(
            "<p class=\"outcome failed\" id=\"outcome\">Failed: line 2: unknown service `&lt;b&gt;&amp;x`</p>"
        ));
        assert!(page.contains("<title>web-1: FAILED · portlocker</title>"));
        assert!(!page.contains("<b>"));
    }

    #[test]
    fn the_status_table_has_a_header_line_and_columns_as_wide_as_their_names() {
        let last_run = LastRun {
            at: at("2026-11-25T14:00:00+01:00"),
            ok: true,
            failure: None,
            duration_ms: 9,
        };
        assert_eq!(
            table(&report(None), LastRunKnown::Ran(&last_run)),
            "web-1: last run 2026-11-25 14:00:00 +01:00 (5 minutes ago): ok\n\
             SERVICE  PORTS            IPv4    IPv6             UNTIL / FROM\n\
             ssh      22/tcp           closed  open-to-sources  from 2001:db8::/48 until 2026-11-25 18:00 +01:00\n\
             web      80/tcp,443/tcp   open    unknown\n\
             backup   873/tcp          open    closed\n\
             mosh     60000-61000/udp  open    open\n"
        );
        let failed = LastRun {
            ok: false,
            failure: Some("the server answered 404 Not Found".into()),
            ..last_run
        };
        let mut plain = report(None);
        plain.services.truncate(1);
        plain.services[0].note.clear();
        assert_eq!(
            table(&plain, LastRunKnown::Ran(&failed)),
            "web-1: last run 2026-11-25 14:00:00 +01:00 (5 minutes ago): failed: the server \
             answered 404 Not Found\n\
             SERVICE  PORTS   IPv4    IPv6\n\
             ssh      22/tcp  closed  open-to-sources\n"
        );
        assert!(table(&plain, LastRunKnown::None).starts_with("web-1: no run yet\n"));
        assert!(
            table(&plain, LastRunKnown::Lost)
                .starts_with("web-1: the last run is not known: the state file is damaged")
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
