//! `portlocker status` as text: the last run, the outcome in one line (and
//! each difference with its rule and fix), then a column per family, each
//! as wide as its widest entry, each open's deadline and sources, then the notices
//! (what the page tells of this machine). Pure.

use std::fmt::Write as _;

use crate::config::Family;
use crate::firewall::model::PortState;
use crate::intake::state::LastRun;
use crate::report::status::{Outcome, Report, Surprise, moment};

/// What the state says of the last run, for `table`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastRunKnown<'a> {
    Ran(&'a LastRun),
    /// No run has kept a state yet.
    None,
    /// The state file is damaged: nothing is known of the last run.
    Lost,
}

/// The whole text status for `report`.
pub fn table(report: &Report, last_run: LastRunKnown) -> String {
    let now = report.run_at;
    let host = report.host_shown();
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
    let _ = writeln!(text, "{}", report.headline());
    match report.outcome() {
        Outcome::NotAsAsked(differences) => {
            for difference in differences {
                let _ = writeln!(text, "  {}", difference.text());
            }
        }
        Outcome::Unknown(unknown) => {
            for difference in unknown {
                let _ = writeln!(
                    text,
                    "  {} over {}: {}",
                    difference.row.name, difference.view.family, difference.view.reason
                );
            }
        }
        _ => {}
    }
    text.push_str(&columns(report));
    for notice in &report.notices {
        let _ = writeln!(text, "Notice: {notice}");
    }
    text
}

/// The services as columns: name, ports, a state per family (with what was
/// asked where it differs), and the deadlines and sources.
fn columns(report: &Report) -> String {
    let families: Vec<Family> = report
        .services
        .first()
        .map(|row| row.families.iter().map(|view| view.family).collect())
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
        cells.extend(row.families.iter().map(|view| {
            let state = word(view.state);
            match (view.surprise(), view.asked) {
                (Surprise::Drift, Some(asked)) => format!("{state} (asked: {})", word(asked)),
                _ => state,
            }
        }));
        if notes {
            cells.push(row.note.clone());
        }
        rows.push(cells);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|column| {
            rows.iter()
                .filter_map(|cells| cells.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for cells in &rows {
        let mut line = String::new();
        for (cell, width) in cells.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// A state as one word (`open-to-sources`), as docs/STATUS.md lists them:
/// a cell of the table never holds a space of its own.
fn word(state: PortState) -> String {
    state.as_str().replace(' ', "-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::status::tests::{at, calm_report, report};

    fn last_run() -> LastRun {
        LastRun {
            at: at("2026-11-25T14:00:00+01:00"),
            ok: true,
            failure: None,
            duration_ms: 9,
        }
    }

    /// The owner reads what a state word means in docs/STATUS.md: each one
    /// the table can print is listed there (hostile tester 8, finding 10:
    /// `open-(rate-limited)` was not).
    #[test]
    fn every_state_word_is_documented() {
        let documented = include_str!("../../docs/STATUS.md");
        let states = documented
            .split_once("\nStates: ")
            .and_then(|(_, rest)| rest.split_once("\n\n"))
            .map(|(states, _)| states)
            .expect("docs/STATUS.md lists the states after `States: `");
        for state in PortState::ALL {
            let word = format!("`{}`", word(state));
            assert!(states.contains(&word), "{word} is not in {states:?}");
        }
    }

    #[test]
    fn the_status_has_the_last_run_the_outcome_and_columns_as_wide_as_their_names() {
        let last_run = last_run();
        assert_eq!(
            table(&calm_report(), LastRunKnown::Ran(&last_run)),
            "web-1: last run 2026-11-25 14:00:00 +01:00 (5 minutes ago): ok\n\
             OK: the firewall matches the control file\n\
             SERVICE  PORTS           IPv4    IPv6             UNTIL / FROM\n\
             ssh      22/tcp          closed  open-to-sources  from 2001:db8::/48 until 2026-11-25 18:00 +01:00\n\
             web      80/tcp,443/tcp  open    open\n\
             Notice: Docker <is> here\n"
        );
        let failed = LastRun {
            ok: false,
            failure: Some("the server answered 404 Not Found".into()),
            ..last_run
        };
        let mut plain = calm_report();
        plain.services.truncate(1);
        plain.services[0].note.clear();
        plain.notices.clear();
        plain.failure = failed.failure.clone();
        assert_eq!(
            table(&plain, LastRunKnown::Ran(&failed)),
            "web-1: last run 2026-11-25 14:00:00 +01:00 (5 minutes ago): failed: the server \
             answered 404 Not Found\n\
             Failed: the server answered 404 Not Found\n\
             SERVICE  PORTS   IPv4    IPv6\n\
             ssh      22/tcp  closed  open-to-sources\n"
        );
        assert!(table(&plain, LastRunKnown::None).starts_with("web-1: no run yet\n"));
        assert!(
            table(&plain, LastRunKnown::Lost)
                .starts_with("web-1: the last run is not known: the state file is damaged")
        );
    }

    /// `status` shows a lockout as one: the asked state beside the state,
    /// and the rule that decides it.
    #[test]
    fn a_difference_shows_what_was_asked_and_why() {
        let mut report = report(None);
        report.services[0].families[0].state = PortState::Closed;
        report.services[0].families[0].asked = Some(PortState::Open);
        report.services[0].families[0].reason =
            "`-A INPUT -p tcp -m tcp --dport 22 -j DROP` drops it".into();
        let text = table(&report, LastRunKnown::Ran(&last_run()));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "Not as asked: ssh closed over IPv4 (asked: open); backup open over IPv4 (asked: closed)"
        );
        assert_eq!(
            lines[2],
            "  IPv4: ssh 22/tcp is closed, but the control file opens it: \
             `-A INPUT -p tcp -m tcp --dport 22 -j DROP` drops it"
        );
        assert!(
            lines
                .iter()
                .any(|line| line.starts_with("ssh ") && line.contains("closed (asked: open)")),
            "{text}"
        );
        assert!(
            lines
                .iter()
                .any(|line| line.starts_with("backup ") && line.contains("open (asked: closed)")),
            "{text}"
        );
    }
}
