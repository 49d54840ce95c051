//! `portlocker status --json`: one document carrying what the text status
//! and the page show — the outcome and its headline, each service's state
//! per family with what was asked and why, its deadlines and sources, the
//! last run, the control file, the notices. Times are RFC 3339 in whole
//! seconds, with their offset. Pure: serde does the writing.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Family;
use crate::firewall::model::PortState;
use crate::intake::intent::{EndsBy, Opening};
use crate::intake::state::LastRun;
use crate::report::status::{Freshness, Outcome, Report, ServiceRow, Surprise, rfc3339_text};
use crate::sys::clock::show_duration;

/// The document.
#[derive(Debug, Serialize)]
pub struct StatusDocument<'a> {
    pub host: &'a str,
    /// `ok`, `not_as_asked`, `failed`, `unknown` or `reset`.
    pub outcome: &'static str,
    /// The outcome in one line, as the page and the text status say it.
    pub headline: String,
    /// Whether portlocker's rules are in force: false after `reset`, until the next run.
    pub enforcing: bool,
    /// When `reset` removed portlocker's rules, if no run has come since.
    pub reset_at: Option<String>,
    pub services: Vec<ServiceDocument<'a>>,
    /// Every service and family not as asked, with why and what to do.
    pub differences: Vec<String>,
    pub last_run: Option<LastRunDocument<'a>>,
    pub control_file: Option<Freshness>,
    pub backend: Option<&'a str>,
    pub notices: &'a [String],
    /// Families that could not be read.
    pub errors: &'a [String],
}

#[derive(Debug, Serialize)]
pub struct LastRunDocument<'a> {
    pub at: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<&'a str>,
    pub duration_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct ServiceDocument<'a> {
    pub name: &'a str,
    pub ports: &'a [String],
    /// Per family (`ipv4`, `ipv6`): open, closed, open to sources, partly closed or unknown.
    pub state: BTreeMap<String, &'static str>,
    /// Per family, what the control file asks; a family nothing asks is absent.
    pub asked: BTreeMap<String, &'static str>,
    /// Per family: the state, what was asked, whether it is as asked
    /// (absent when nothing asks or the state is unknown), and why.
    pub families: BTreeMap<String, FamilyDocument<'a>>,
    /// The opens in force, each with its source and its end.
    pub opens: Vec<OpenDocument>,
    /// The deadlines and sources in plain words, as the page shows them.
    pub note: &'a str,
}

#[derive(Debug, Serialize)]
pub struct FamilyDocument<'a> {
    pub state: &'static str,
    pub asked: Option<&'static str>,
    pub as_asked: Option<bool>,
    /// The deciding rule(s), in the rules' own words.
    pub reason: &'a str,
    /// When not as asked: what would make it so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct OpenDocument {
    /// The network of a `from` line; null: everyone.
    pub from: Option<String>,
    /// When it ends, with the UTC offset in force on that date; null: never.
    pub until: Option<String>,
    /// What sets the end: `until`, `for` or `max_open`; null: nothing.
    pub ends_by: Option<&'static str>,
    /// The line's `for`, or `max_open`, when that sets the end (`2h`).
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_open: Option<String>,
}

/// The document for `report`, with the last run kept in the state and the
/// families that could not be read.
pub fn document<'a>(
    report: &'a Report,
    last_run: Option<&'a LastRun>,
    errors: &'a [String],
) -> StatusDocument<'a> {
    let outcome = report.outcome();
    let differences = match &outcome {
        Outcome::NotAsAsked(differences) => differences.iter().map(|d| d.text()).collect(),
        _ => Vec::new(),
    };
    StatusDocument {
        host: &report.host,
        outcome: outcome.as_str(),
        headline: report.headline(),
        enforcing: report.enforcing(),
        reset_at: report.reset_at.map(rfc3339_text),
        services: report.services.iter().map(service).collect(),
        differences,
        last_run: last_run.map(|run| LastRunDocument {
            at: rfc3339_text(run.at),
            ok: run.ok,
            failure: run.failure.as_deref(),
            duration_ms: run.duration_ms,
        }),
        control_file: report.control_file.clone(),
        backend: report.backend.as_deref(),
        notices: &report.notices,
        errors,
    }
}

fn key(family: Family) -> String {
    family.to_string().to_lowercase()
}

fn service(row: &ServiceRow) -> ServiceDocument<'_> {
    ServiceDocument {
        name: &row.name,
        ports: &row.ports,
        state: row
            .families
            .iter()
            .map(|view| (key(view.family), view.state.as_str()))
            .collect(),
        asked: row
            .families
            .iter()
            .filter_map(|view| Some((key(view.family), view.asked?.as_str())))
            .collect(),
        families: row
            .families
            .iter()
            .map(|view| {
                let as_asked = view
                    .asked
                    .filter(|_| view.state != PortState::Unknown)
                    .map(|_| view.surprise() == Surprise::Calm);
                let document = FamilyDocument {
                    state: view.state.as_str(),
                    asked: view.asked.map(PortState::as_str),
                    as_asked,
                    reason: &view.reason,
                    advice: view.advice.as_deref(),
                };
                (key(view.family), document)
            })
            .collect(),
        opens: row.opens.iter().map(open).collect(),
        note: &row.note,
    }
}

fn open(opening: &Opening) -> OpenDocument {
    let ends = opening.ends.as_ref();
    OpenDocument {
        from: opening.source.map(|net| net.to_string()),
        until: ends.map(|ends| rfc3339_text(ends.at)),
        ends_by: ends.map(|ends| match ends.by {
            EndsBy::Until => "until",
            EndsBy::For(_) => "for",
            EndsBy::MaxOpen(_) => "max_open",
        }),
        for_: ends.and_then(|ends| match ends.by {
            EndsBy::For(span) => Some(show_duration(span)),
            _ => None,
        }),
        max_open: ends.and_then(|ends| match ends.by {
            EndsBy::MaxOpen(span) => Some(show_duration(span)),
            _ => None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::intent::Ending;
    use crate::report::status::tests::{at, report};
    use chrono::TimeDelta;
    use serde_json::json;

    #[test]
    fn the_document_carries_what_the_page_shows() {
        let mut report = report(None);
        report.services[0].opens = vec![
            Opening {
                source: Some("2001:db8::/48".parse().unwrap()),
                ends: Some(Ending {
                    at: at("2026-11-25T18:00:00+01:00"),
                    by: EndsBy::Until,
                }),
            },
            Opening {
                source: Some("198.51.100.0/24".parse().unwrap()),
                ends: Some(Ending {
                    at: at("2026-11-25T16:05:00+01:00"),
                    by: EndsBy::For(TimeDelta::hours(2)),
                }),
            },
        ];
        report.services[1].opens = vec![Opening {
            source: None,
            ends: Some(Ending {
                at: at("2026-11-26T02:00:00+01:00"),
                by: EndsBy::MaxOpen(TimeDelta::hours(12)),
            }),
        }];
        let last_run = LastRun {
            at: at("2026-11-25T14:05:00+01:00"),
            ok: false,
            failure: Some("IPv4: backup 873/tcp should be closed but is open".into()),
            duration_ms: 12,
        };
        let errors = vec!["ip6tables: can't initialize".to_owned()];
        let value = serde_json::to_value(document(&report, Some(&last_run), &errors)).unwrap();
        assert_eq!(value["outcome"], json!("not_as_asked"));
        assert_eq!(
            value["headline"],
            json!("Not as asked: backup open over IPv4 (asked: closed)")
        );
        assert_eq!(value["enforcing"], json!(true));
        assert_eq!(value["reset_at"], json!(null));
        assert_eq!(
            value["differences"],
            json!([
                "IPv4: backup 873/tcp is open, but the control file closes it: \
                 `-A INPUT -p tcp -m tcp --dport 873 -j ACCEPT` lets it through"
            ])
        );
        let ssh = &value["services"][0];
        assert_eq!(
            ssh["state"],
            json!({"ipv4": "closed", "ipv6": "open to sources"})
        );
        assert_eq!(
            ssh["asked"],
            json!({"ipv4": "closed", "ipv6": "open to sources"})
        );
        assert_eq!(
            ssh["opens"],
            json!([
                {"from": "2001:db8::/48", "until": "2026-11-25T18:00:00+01:00", "ends_by": "until"},
                {"from": "198.51.100.0/24", "until": "2026-11-25T16:05:00+01:00", "ends_by": "for",
                 "for": "2h"}
            ])
        );
        assert_eq!(
            ssh["note"],
            json!("from 2001:db8::/48 until 2026-11-25 18:00 +01:00")
        );
        assert_eq!(
            value["services"][1]["opens"],
            json!([{"from": null, "until": "2026-11-26T02:00:00+01:00", "ends_by": "max_open",
                    "max_open": "12h"}])
        );
        assert_eq!(
            value["services"][1]["families"]["ipv6"],
            json!({"state": "unknown", "asked": "open", "as_asked": null,
                   "reason": "IPv6 could not be read"})
        );
        assert_eq!(
            value["services"][2]["families"]["ipv4"]["as_asked"],
            json!(false)
        );
        let mosh = &value["services"][3];
        assert_eq!(mosh["asked"], json!({}));
        assert_eq!(mosh["families"]["ipv4"]["asked"], json!(null));
        assert_eq!(value["last_run"]["ok"], json!(false));
        assert_eq!(value["notices"], json!(["Docker <is> here"]));
        assert_eq!(value["errors"], json!(["ip6tables: can't initialize"]));
        assert_eq!(value["backend"], json!("nf_tables"));
    }

    #[test]
    fn after_a_reset_the_document_says_nothing_is_enforced() {
        let mut report = report(None);
        report.reset_at = Some(at("2026-11-25T14:03:00+01:00"));
        let value = serde_json::to_value(document(&report, None, &[])).unwrap();
        assert_eq!(value["outcome"], json!("reset"));
        assert_eq!(value["enforcing"], json!(false));
        assert_eq!(value["reset_at"], json!("2026-11-25T14:03:00+01:00"));
        assert!(
            value["headline"]
                .as_str()
                .unwrap()
                .starts_with("Reset: portlocker enforces nothing until the next run")
        );
    }
}
