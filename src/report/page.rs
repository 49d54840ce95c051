//! The HTML status page for a phone: the outcome first, then every service
//! with its state per family — coloured by state (open and closed differ at
//! a glance), what differs from the control file marked apart and said in
//! words — then the times. Pure: writing it is `files::write_atomic`.

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset};

use crate::firewall::model::PortState;
use crate::report::status::{Outcome, Report, Surprise, ago};

const STYLE: &str = "\
:root{color-scheme:light dark;--bg:#fff;--fg:#161616;--muted:#5a5a5a;--line:#d0d0d0;\
--ok:#17612e;--ok-bg:#e6f4ea;--bad:#a4161a;--bad-bg:#fbe9e9;--warn:#7a4f00;--warn-bg:#fdf3dc;\
--shut:#1b5e34;--shut-bg:#dff0e4;--open:#0b4f9c;--open-bg:#e2ecfa}\
@media (prefers-color-scheme:dark){:root{--bg:#121212;--fg:#ececec;--muted:#a8a8a8;\
--line:#3a3a3a;--ok:#5fd08a;--ok-bg:#10291a;--bad:#ff8a8a;--bad-bg:#3a1414;--warn:#f0c060;\
--warn-bg:#33280f;--shut:#7ee0a0;--shut-bg:#123020;--open:#8ab8ff;--open-bg:#132844}}\
*{box-sizing:border-box}\
body{margin:0 auto;padding:1rem;max-width:44rem;background:var(--bg);color:var(--fg);\
font:16px/1.45 system-ui,-apple-system,sans-serif;overflow-wrap:anywhere}\
h1{font-size:1.25rem;margin:0 0 .75rem}h1 .tool{color:var(--muted);font-weight:400}\
.outcome{margin:0 0 1rem;padding:.75rem 1rem;border-radius:.5rem;border:2px solid}\
.outcome p,.outcome ul{margin:0}.outcome .headline{font-weight:700}\
.outcome ul{padding-left:1.1rem}.outcome li,.outcome .more{margin-top:.4rem;font-size:.9rem}\
.outcome .lines,.outcome .also{white-space:pre-line}\
.outcome.ok{color:var(--ok);background:var(--ok-bg)}\
.outcome.failed,.outcome.not_as_asked{color:var(--bad);background:var(--bad-bg);border-width:3px}\
.outcome.reset,.outcome.unknown,.outcome.nothing_asked{color:var(--warn);background:var(--warn-bg);border-width:3px}\
.services{list-style:none;margin:0;padding:0}\
.service{padding:.6rem 0;border-bottom:1px solid var(--line)}\
.name{font-weight:600;margin-right:.25rem}.ports{color:var(--muted)}\
.states{margin:.2rem 0 0}\
.state{display:inline-block;margin:.15rem .1rem .15rem 0;padding:.1rem .6rem;border:2px solid;\
border-radius:1rem;font-size:.9rem;font-weight:600;overflow-wrap:normal}\
.is-closed{color:var(--shut);background:var(--shut-bg)}\
.is-open{color:var(--open);background:var(--open-bg)}\
.is-sources{color:var(--open);background:transparent;border-style:dashed}\
.is-partly,.is-unknown{color:var(--warn);background:var(--warn-bg);border-style:dashed}\
.drift{outline:3px solid var(--bad);outline-offset:1px}\
.asked{color:var(--bad);font-weight:700}\
.sep{font-size:0}\
.note{margin:.3rem 0 0;color:var(--muted);font-size:.9rem}\
dl{margin:1rem 0 0;display:grid;grid-template-columns:max-content 1fr;gap:.2rem .75rem;font-size:.9rem}\
dt{color:var(--muted)}dd{margin:0}\
.notices{margin:1rem 0 0;padding-left:1.2rem;color:var(--warn);font-size:.9rem}\
.notices li{margin-top:.3rem}\
.grammar{margin:1.25rem 0 0;color:var(--muted);font-size:.85rem}\
.time,.nobr{white-space:nowrap}\
code{font:.85rem ui-monospace,monospace;overflow-wrap:break-word}";

/// The complete page for `report`. It reads as plain text too (a text
/// browser, a screen reader, a copy): words are apart, every state says in
/// words what its colour says.
pub fn render(report: &Report) -> String {
    let host = escape(report.host_shown());
    let outcome = report.outcome();
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"color-scheme\" content=\"light dark\">\n\
         <title>{host}: {} · portlocker</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1><span class=\"host\">{host}</span> <span class=\"tool\">· portlocker</span></h1>\n",
        outcome.title()
    );
    outcome_box(&mut page, report, &outcome);
    page.push_str("<ul class=\"services\">\n");
    for row in &report.services {
        let _ = write!(
            page,
            "<li class=\"service\" data-service=\"{name}\"><span class=\"name\">{name}</span> \
             <span class=\"ports\">{}</span><div class=\"states\">",
            escape(&row.ports.join(", ")),
            name = escape(&row.name),
        );
        let last = row.families.len().saturating_sub(1);
        for (index, view) in row.families.iter().enumerate() {
            let surprise = view.surprise();
            // What the marks say, in words too.
            let asked = match (surprise, view.asked) {
                (Surprise::Drift, Some(asked)) => {
                    format!(" <span class=\"asked\">(asked: {})</span>", asked.as_str())
                }
                _ => String::new(),
            };
            // Apart in a copy, but no comma left dangling where pills wrap.
            let separator = if index < last {
                "<span class=\"sep\">,</span> "
            } else {
                ""
            };
            let _ = write!(
                page,
                "<span class=\"state {} {}\" data-family=\"{family}\">{family} {}{asked}</span>{separator}",
                state_class(view.state),
                surprise.as_str(),
                view.state.as_str(),
                family = view.family,
            );
        }
        page.push_str("</div>");
        if !row.note.is_empty() {
            let _ = write!(page, "<p class=\"note\">{}</p>", with_times(&row.note));
        }
        page.push_str("</li>\n");
    }
    page.push_str("</ul>\n");
    facts(&mut page, report);
    if !report.notices.is_empty() {
        page.push_str("<ul class=\"notices\">\n");
        for notice in &report.notices {
            let _ = writeln!(page, "<li>{}</li>", with_code(notice));
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

/// The class a state is coloured by.
fn state_class(state: PortState) -> &'static str {
    match state {
        PortState::Closed => "is-closed",
        PortState::Open | PortState::RateLimited => "is-open",
        PortState::OpenToSources => "is-sources",
        PortState::Partial => "is-partly",
        PortState::Unknown => "is-unknown",
    }
}

/// The outcome, first on the page: its headline, then what explains it.
fn outcome_box(page: &mut String, report: &Report, outcome: &Outcome) {
    // A failure of several lines (bad lines, one each): its first is the headline.
    let headline = report.headline();
    let (headline, rest) = headline.split_once('\n').unwrap_or((&headline, ""));
    let _ = write!(
        page,
        "<div class=\"outcome {}\" id=\"outcome\"><p class=\"headline\">{}</p>",
        outcome.as_str(),
        with_code(headline)
    );
    if !rest.is_empty() {
        let _ = write!(page, "<p class=\"more lines\">{}</p>", with_code(rest));
    }
    match outcome {
        Outcome::NotAsAsked(differences) => {
            page.push_str("<ul>");
            for difference in differences {
                let _ = write!(page, "<li>{}</li>", with_code(&difference.text()));
            }
            page.push_str("</ul>");
            if let Some(failure) = &report.failure {
                let _ = write!(
                    page,
                    "<p class=\"more also\">The run failed besides: {}</p>",
                    with_code(failure)
                );
            }
        }
        Outcome::Reset(_) => {
            let _ = write!(
                page,
                "<p class=\"more\">The states below are the firewall without portlocker's rules. \
                 The next run, due by about {}, applies the control file again.</p>",
                time(report.run_at + report.every, report.run_at)
            );
            if let Some(failure) = &report.failure {
                let _ = write!(page, "<p class=\"more also\">{}</p>", with_code(failure));
            }
        }
        Outcome::Unknown(unknown) => {
            page.push_str("<ul>");
            for difference in unknown {
                let _ = write!(
                    page,
                    "<li>{} over {}: {}</li>",
                    escape(&difference.row.name),
                    difference.view.family,
                    with_code(&difference.view.reason)
                );
            }
            page.push_str("</ul>");
        }
        Outcome::Failed(_) | Outcome::NothingAsked | Outcome::Ok => {}
    }
    page.push_str("</div>\n");
}

/// The times and the firewall, as terms and values.
fn facts(page: &mut String, report: &Report) {
    let now = report.run_at;
    page.push_str("<dl>\n");
    let mut fact = |term: &str, value: String| {
        let _ = writeln!(page, "<dt>{term}</dt><dd>{value}</dd>");
    };
    fact("This run", moment(now, now));
    fact(
        "Next run",
        format!(
            "due by {}; later, this page is stale",
            time(now + report.every, now)
        ),
    );
    match &report.control_file {
        Some(file) => {
            fact("Last fetch", moment(file.fetched_at, now));
            fact("File changed", moment(file.changed_at, now));
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
        escape(&match report.backend.as_deref() {
            Some("nftables") => "nftables (table inet portlocker)".to_owned(),
            Some(backend) => format!("iptables ({backend})"),
            None => "iptables".to_owned(),
        }),
    );
    page.push_str("</dl>\n");
}

/// A moment that never wraps inside: `<span class="time">2026-11-25 14:05:00 +01:00</span>`;
/// the date is left out on the day of `now`.
fn time(at: DateTime<FixedOffset>, now: DateTime<FixedOffset>) -> String {
    let at = at.with_timezone(&now.timezone());
    let format = if at.date_naive() == now.date_naive() {
        "%H:%M:%S %:z"
    } else {
        "%Y-%m-%d %H:%M:%S %:z"
    };
    format!("<span class=\"time\">{}</span>", at.format(format))
}

/// A moment in full, and how long ago it was.
fn moment(at: DateTime<FixedOffset>, now: DateTime<FixedOffset>) -> String {
    let shown = at
        .with_timezone(&now.timezone())
        .format("%Y-%m-%d %H:%M:%S %:z");
    match ago(at, now) {
        Some(ago) => format!("<span class=\"time\">{shown}</span> ({ago})"),
        None => format!("<span class=\"time\">{shown}</span>"),
    }
}

/// Escaped text whose deadlines (`2026-11-25 18:00 +01:00`) never wrap inside.
fn with_times(text: &str) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let mut out = Vec::new();
    let mut index = 0;
    while index < words.len() {
        let is_time = index + 2 < words.len()
            && words[index].len() == 10
            && words[index].as_bytes().get(4) == Some(&b'-')
            && words[index + 1].contains(':')
            && (words[index + 2].starts_with('+') || words[index + 2].starts_with('-'));
        if is_time {
            let joined = words[index..index + 3].join(" ");
            // Punctuation after it stays outside.
            let (time, rest) =
                joined.split_at(joined.trim_end_matches([';', ',', ':', '.', ')']).len());
            out.push(format!(
                "<span class=\"time\">{}</span>{}",
                escape(time),
                escape(rest)
            ));
            index += 3;
        } else {
            out.push(escape(words[index]));
            index += 1;
        }
    }
    out.join(" ")
}

/// Escaped text whose `backquoted` parts are code, shown without the
/// backquotes: a command breaks between its words, never inside a flag,
/// and a flag stays on the line of its value.
pub fn with_code(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    let quotes = text.matches('`').count();
    for (index, part) in text.split('`').enumerate() {
        // An unpaired backquote at the end stays as it is.
        let paired = index < quotes;
        if index % 2 == 1 && paired {
            let _ = write!(out, "<code>{}</code>", command_words(part));
        } else if index % 2 == 1 {
            out.push('`');
            out.push_str(&escape(part));
        } else {
            out.push_str(&with_times(part));
        }
    }
    out
}

/// A command's words, each flag kept with its value on one line.
fn command_words(command: &str) -> String {
    let words: Vec<&str> = command.split(' ').collect();
    let mut groups: Vec<String> = Vec::new();
    let mut index = 0;
    while index < words.len() {
        let word = words[index];
        let value = words.get(index + 1).filter(|next| !next.starts_with('-'));
        match value {
            Some(value) if word.starts_with('-') && word.len() + value.len() < 32 => {
                groups.push(format!(
                    "<span class=\"nobr\">{} {}</span>",
                    escape(word),
                    escape(value)
                ));
                index += 2;
            }
            _ => {
                groups.push(escape(word));
                index += 1;
            }
        }
    }
    groups.join(" ")
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
    use crate::config::Family;
    use crate::report::status::FamilyView;
    use crate::report::status::tests::{at, calm_report, report};

    #[test]
    fn a_good_run_shows_host_outcome_then_every_service_in_order_and_the_facts() {
        let page = render(&calm_report());
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
            .find(
                "<div class=\"outcome ok\" id=\"outcome\"><p class=\"headline\">OK: the firewall \
                 matches the control file</p></div>",
            )
            .unwrap();
        let rows: Vec<usize> = ["ssh", "web"]
            .iter()
            .map(|name| page.find(&format!("data-service=\"{name}\"")).unwrap())
            .collect();
        assert!(outcome < rows[0], "the outcome must come first");
        assert!(rows[0] < rows[1]);
        assert!(page.contains(
            "<span class=\"name\">ssh</span> <span class=\"ports\">22/tcp</span><div class=\"states\">\
             <span class=\"state is-closed calm\" data-family=\"IPv4\">IPv4 closed</span><span class=\"sep\">,</span> \
             <span class=\"state is-sources calm\" data-family=\"IPv6\">IPv6 open to sources</span></div>"
        ));
        assert!(page.contains(
            "<p class=\"note\">from 2001:db8::/48 until <span class=\"time\">2026-11-25 18:00 \
             +01:00</span></p>"
        ));
        assert!(page.contains("<span class=\"ports\">80/tcp, 443/tcp</span>"));
        assert!(page.contains(
            "<dt>This run</dt><dd><span class=\"time\">2026-11-25 14:05:00 +01:00</span></dd>"
        ));
        assert!(page.contains(
            "<dt>Next run</dt><dd>due by <span class=\"time\">14:10:00 +01:00</span>; later, \
             this page is stale</dd>"
        ));
        assert!(page.contains(
            "<dt>File changed</dt><dd><span class=\"time\">2026-11-25 11:00:00 \
             +01:00</span> (3 hours ago)</dd>"
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

    /// Open and closed look different; what differs from the control file
    /// is marked apart and says so in words.
    #[test]
    fn states_are_coloured_by_state_and_surprise_is_marked_apart() {
        let page = render(&report(None));
        for (family, class, text) in [
            ("IPv4", "is-open calm", "IPv4 open"),
            ("IPv6", "is-unknown unknown", "IPv6 unknown"),
        ] {
            assert!(
                page.contains(&format!(
                    "<span class=\"state {class}\" data-family=\"{family}\">{text}"
                )),
                "{family}"
            );
        }
        assert!(page.contains(
            "<span class=\"state is-open drift\" data-family=\"IPv4\">IPv4 open <span \
             class=\"asked\">(asked: closed)</span></span><span class=\"sep\">,</span> "
        ));
        assert!(page.contains(
            "<span class=\"state is-open unasked\" data-family=\"IPv4\">IPv4 open</span><span class=\"sep\">"
        ));
    }

    /// The lockout: the headline says so, in the colour of a
    /// failure, and names the service, the family and the rule.
    #[test]
    fn a_lockout_is_the_headline_with_its_rule_and_fix() {
        let mut report = calm_report();
        report.services[0].families[0] = FamilyView {
            family: Family::Ipv4,
            state: PortState::Closed,
            asked: Some(PortState::Open),
            reason: "`-A INPUT -p tcp -m tcp --dport 22 -j DROP` drops it".into(),
            advice: Some(
                "it is not portlocker's: remove it with `/sbin/iptables -w 10 -D INPUT -p tcp -m \
                 tcp --dport 22 -j DROP`"
                    .into(),
            ),
            shut_out: false,
        };
        let page = render(&report);
        assert!(page.contains("<title>web-1: NOT AS ASKED · portlocker</title>"));
        assert!(page.contains(
            "<div class=\"outcome not_as_asked\" id=\"outcome\"><p class=\"headline\">Not as \
             asked: ssh closed over IPv4 (asked: open)</p><ul><li>IPv4: ssh 22/tcp is closed, but \
             the control file opens it: <code><span class=\"nobr\">-A INPUT</span> <span \
             class=\"nobr\">-p tcp</span> <span \
             class=\"nobr\">-m tcp</span> <span class=\"nobr\">--dport 22</span> <span \
             class=\"nobr\">-j DROP</span></code> drops it; it is not portlocker&#39;s: remove it \
             with <code>/sbin/iptables <span class=\"nobr\">-w 10</span> <span class=\"nobr\">-D \
             INPUT</span>"
        ));
        assert!(!page.contains('`'), "no literal backquote on the page");
    }

    #[test]
    fn a_failure_is_shown_escaped_without_backquotes() {
        let mut report = calm_report();
        report.failure = Some("line 2: unknown service `<b>&x`".into());
        let page = render(&report);
        assert!(page.contains(
            "<div class=\"outcome failed\" id=\"outcome\"><p class=\"headline\">Failed: line 2: \
             unknown service <code>&lt;b&gt;&amp;x</code></p></div>"
        ));
        assert!(page.contains("<title>web-1: FAILED · portlocker</title>"));
        assert!(!page.contains("<b>"));
    }

    /// Bad lines come one per line: the first line of the failure is the
    /// headline, the rest follows as lines.
    #[test]
    fn a_failure_of_several_lines_keeps_its_lines() {
        let mut report = calm_report();
        report.failure = Some(
            "control file from x: 2 invalid lines:\n  line 2: unknown service `vnp`\n  line \
             3: unexpected `now`\nenforced the last good control file instead"
                .into(),
        );
        let page = render(&report);
        assert!(page.contains(
            "<p class=\"headline\">Failed: control file from x: 2 invalid lines:</p><p \
             class=\"more lines\">  line 2: unknown service <code>vnp</code>\n  line 3: \
             unexpected <code>now</code>\nenforced the last good control file instead</p>"
        ));
        assert!(STYLE.contains(".outcome .lines,.outcome .also{white-space:pre-line}"));
    }

    #[test]
    fn after_a_reset_the_page_says_nothing_is_enforced() {
        let mut report = calm_report();
        report.reset_at = Some(at("2026-11-25T14:03:00+01:00"));
        let page = render(&report);
        assert!(page.contains("<title>web-1: RESET · portlocker</title>"));
        assert!(page.contains(
            "<div class=\"outcome reset\" id=\"outcome\"><p class=\"headline\">Reset: portlocker \
             enforces nothing until the next run (reset <span class=\"time\">2026-11-25 14:03:00 \
             +01:00</span>)</p><p \
             class=\"more\">The states below are the firewall without portlocker's rules. The \
             next run, due by about <span class=\"time\">14:10:00 +01:00</span>, applies the \
             control file again.</p></div>"
        ));
    }

    #[test]
    fn code_and_times_keep_together() {
        assert_eq!(
            with_code("run `portlocker check` now"),
            "run <code>portlocker check</code> now"
        );
        assert_eq!(with_code("an odd ` stays"), "an odd ` stays");
        assert_eq!(
            with_times("from 198.51.100.0/24 until 2026-11-25 18:00 +01:00; from x"),
            "from 198.51.100.0/24 until <span class=\"time\">2026-11-25 18:00 +01:00</span>; \
             from x"
        );
        assert_eq!(
            command_words("iptables -w 10 -D INPUT -p tcp --syn -j DROP"),
            "iptables <span class=\"nobr\">-w 10</span> <span class=\"nobr\">-D INPUT</span> \
             <span class=\"nobr\">-p tcp</span> --syn <span class=\"nobr\">-j DROP</span>"
        );
    }
}
