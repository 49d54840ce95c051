//! What a run found and did, as the owner reads it: the report and the HTML
//! status page for a phone. Pure: writing the page is `files::write_atomic`.

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset, TimeDelta};
use serde::Serialize;

use crate::config::Family;
use crate::model::PortState;
use crate::state::LastGood;

/// What one run found and did.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// When the run started.
    pub run_at: DateTime<FixedOffset>,
    /// None when the run succeeded; otherwise why it failed, in plain words.
    pub failure: Option<String>,
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
    /// The deadline or sources of an open, in plain words; may be empty.
    pub note: String,
}

/// How fresh the control file in force is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Freshness {
    /// The last fetch that brought it or confirmed it (304).
    pub fetched_at: DateTime<FixedOffset>,
    /// When its content last changed.
    pub changed_at: DateTime<FixedOffset>,
    /// When it was signed, if its signature was checked.
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

const STYLE: &str = "\
:root{color-scheme:light dark;--bg:#fff;--fg:#161616;--muted:#5a5a5a;--line:#d0d0d0;\
--ok:#17612e;--bad:#a4161a;--warn:#8a5a00}\
@media (prefers-color-scheme:dark){:root{--bg:#121212;--fg:#ececec;--muted:#a8a8a8;\
--line:#3a3a3a;--ok:#5fd08a;--bad:#ff8a8a;--warn:#f0c060}}\
*{box-sizing:border-box}\
body{margin:0 auto;padding:1rem;max-width:44rem;background:var(--bg);color:var(--fg);\
font:16px/1.45 system-ui,-apple-system,sans-serif;overflow-wrap:anywhere}\
h1{font-size:1.25rem;margin:0 0 .75rem}\
.outcome{margin:0 0 1rem;padding:.75rem 1rem;border-radius:.5rem;border:2px solid;font-weight:600}\
.outcome.ok{color:var(--ok)}.outcome.failed{color:var(--bad)}\
.services{list-style:none;margin:0;padding:0}\
.service{padding:.6rem 0;border-bottom:1px solid var(--line)}\
.name{font-weight:600;margin-right:.5rem}.ports{color:var(--muted)}\
.states{margin:.25rem 0 0}\
.state{display:inline-block;margin:.15rem .4rem .15rem 0;padding:.05rem .5rem;border:1px solid;border-radius:1rem;font-size:.9rem}\
.closed{color:var(--ok)}.open{color:var(--bad)}.sources,.partly-closed,.unknown{color:var(--warn)}\
.note{margin:.25rem 0 0;color:var(--muted);font-size:.9rem}\
dl{margin:1rem 0 0;display:grid;grid-template-columns:max-content 1fr;gap:.2rem .75rem;font-size:.9rem}\
dt{color:var(--muted)}dd{margin:0}\
.notices{margin:1rem 0 0;padding-left:1.2rem;color:var(--warn);font-size:.9rem}";

/// The complete page for `report`.
pub fn render(report: &Report) -> String {
    let now = report.run_at;
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
         <title>portlocker: {title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>portlocker</h1>\n<p class=\"outcome {class}\" id=\"outcome\">{}</p>\n<ul class=\"services\">\n",
        escape(&outcome)
    );
    for row in &report.services {
        let _ = write!(
            page,
            "<li class=\"service\" data-service=\"{name}\"><span class=\"name\">{name}</span>\
             <span class=\"ports\">{}</span><div class=\"states\">",
            escape(&row.ports.join(", ")),
            name = escape(&row.name),
        );
        for (family, state) in &row.states {
            let class = match state {
                PortState::OpenToSources => "sources".to_owned(),
                other => other.as_str().replace(' ', "-"),
            };
            let _ = write!(
                page,
                "<span class=\"state {class}\" data-family=\"{family}\">{family} {}</span>",
                state.as_str()
            );
        }
        page.push_str("</div>");
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
    page.push_str("</body>\n</html>\n");
    page
}

/// A moment with how long ago it was: `2026-11-25 14:05 (3 minutes ago)`.
fn moment(at: DateTime<FixedOffset>, now: DateTime<FixedOffset>) -> String {
    let shown = at
        .with_timezone(&now.timezone())
        .format("%Y-%m-%d %H:%M:%S");
    let ago = now - at;
    if ago < TimeDelta::minutes(1) {
        return shown.to_string();
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

    pub(crate) fn report(failure: Option<&str>) -> Report {
        Report {
            run_at: at("2026-11-25T14:05:00+01:00"),
            failure: failure.map(String::from),
            services: vec![
                ServiceRow {
                    name: "ssh".into(),
                    ports: vec!["22/tcp".into()],
                    states: vec![
                        (Family::Ipv4, PortState::Closed),
                        (Family::Ipv6, PortState::OpenToSources),
                    ],
                    note: "from 2001:db8::/48 until 2026-11-25 18:00".into(),
                },
                ServiceRow {
                    name: "web".into(),
                    ports: vec!["80/tcp".into(), "443/tcp".into()],
                    states: vec![
                        (Family::Ipv4, PortState::Open),
                        (Family::Ipv6, PortState::Unknown),
                    ],
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

    #[test]
    fn a_good_run_shows_outcome_first_then_every_service_and_the_facts() {
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
        let outcome = page
            .find("id=\"outcome\">OK: the firewall matches the control file</p>")
            .unwrap();
        let ssh = page.find("data-service=\"ssh\"").unwrap();
        assert!(outcome < ssh, "the outcome must come first");
        assert!(page.contains("<span class=\"ports\">22/tcp</span>"));
        assert!(
            page.contains("<span class=\"state closed\" data-family=\"IPv4\">IPv4 closed</span>")
        );
        assert!(page.contains(
            "<span class=\"state sources\" data-family=\"IPv6\">IPv6 open to sources</span>"
        ));
        assert!(page.contains("<p class=\"note\">from 2001:db8::/48 until 2026-11-25 18:00</p>"));
        assert!(page.contains("<span class=\"ports\">80/tcp, 443/tcp</span>"));
        assert!(page.contains("<dt>This run</dt><dd>2026-11-25 14:05:00</dd>"));
        assert!(
            page.contains(
                "<dt>Control file changed</dt><dd>2026-11-25 11:00:00 (3 hours ago)</dd>"
            )
        );
        assert!(page.contains("<dt>Signed</dt><dd>no</dd>"));
        assert!(page.contains("<dt>Firewall</dt><dd>iptables (nf_tables)</dd>"));
        assert!(page.contains("<li>Docker &lt;is&gt; here</li>"));
        assert!(
            !page.contains("<script")
                && !page.contains("src=")
                && !page.contains("href=")
                && !page.contains("url(")
        );
    }

    #[test]
    fn a_failure_is_shown_escaped() {
        let page = render(&report(Some("line 2: unknown service `<b>&x`")));
        assert!(page.contains(
            "<p class=\"outcome failed\" id=\"outcome\">Failed: line 2: unknown service `&lt;b&gt;&amp;x`</p>"
        ));
        assert!(page.contains("<title>portlocker: FAILED</title>"));
        assert!(!page.contains("<b>"));
    }

    #[test]
    fn ages_read_naturally() {
        let now = at("2026-11-25T14:05:00+01:00");
        assert_eq!(moment(now, now), "2026-11-25 14:05:00");
        assert_eq!(
            moment(at("2026-11-25T14:04:00+01:00"), now),
            "2026-11-25 14:04:00 (1 minute ago)"
        );
        assert_eq!(
            moment(at("2026-11-25T12:05:00Z"), now),
            "2026-11-25 13:05:00 (60 minutes ago)"
        );
        assert_eq!(
            moment(at("2026-11-20T14:05:00+01:00"), now),
            "2026-11-20 14:05:00 (5 days ago)"
        );
    }
}
