//! The run as Prometheus text-format metrics, for node_exporter's textfile
//! collector. Pure.

use std::fmt::Write as _;

use crate::firewall::model::PortState;
use crate::intake::state::LastRun;
use crate::report::status::Report;

/// The metrics file for a run: last run time, success, duration, last good
/// fetch, and whether each service is closed per family (1 closed, 0 open,
/// open to some sources, or partly closed; absent when unknown).
pub fn render(report: &Report, last_run: &LastRun) -> String {
    let mut text = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(text, "# HELP portlocker_{name} {help}");
        let _ = writeln!(text, "# TYPE portlocker_{name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(text, "portlocker_{name}{labels} {value}");
        }
    };
    gauge(
        "last_run_timestamp_seconds",
        "When the last run started, in Unix seconds.",
        &[(String::new(), last_run.at.timestamp() as f64)],
    );
    gauge(
        "last_run_success",
        "1 if the last run made the firewall match the control file, else 0.",
        &[(String::new(), f64::from(u8::from(last_run.ok)))],
    );
    gauge(
        "last_run_duration_seconds",
        "How long the last run took.",
        &[(String::new(), last_run.duration_ms as f64 / 1000.0)],
    );
    if let Some(file) = &report.control_file {
        gauge(
            "last_good_fetch_timestamp_seconds",
            "When a valid control file was last fetched or confirmed unchanged, in Unix seconds.",
            &[(String::new(), file.fetched_at.timestamp() as f64)],
        );
    }
    let closed: Vec<(String, f64)> = report
        .services
        .iter()
        .flat_map(|row| {
            row.states.iter().filter_map(move |(family, state)| {
                let value = match state {
                    PortState::Closed => 1.0,
                    PortState::Unknown => return None,
                    _ => 0.0,
                };
                let family = family.to_string().to_lowercase();
                Some((
                    format!("{{service=\"{}\",family=\"{family}\"}}", row.name),
                    value,
                ))
            })
        })
        .collect();
    gauge(
        "service_closed",
        "1 if the service is closed to everyone in this address family, else 0.",
        &closed,
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Family;
    use crate::report::status::{Freshness, ServiceRow};
    use chrono::DateTime;

    #[test]
    fn every_metric_with_its_help_and_type() {
        let at = DateTime::parse_from_rfc3339("2026-11-25T14:05:00+01:00").unwrap();
        let report = Report {
            host: "web-1".into(),
            run_at: at,
            every: chrono::TimeDelta::minutes(5),
            failure: None,
            services: vec![ServiceRow {
                reasons: Default::default(),
                name: "ssh".into(),
                ports: vec!["22/tcp".into()],
                states: vec![
                    (Family::Ipv4, PortState::Closed),
                    (Family::Ipv6, PortState::Unknown),
                ],
                asked: Default::default(),
                note: String::new(),
            }],
            control_file: Some(Freshness {
                fetched_at: at,
                changed_at: at,
                signed_at: None,
            }),
            backend: None,
            notices: Vec::new(),
        };
        let last_run = LastRun {
            at,
            ok: true,
            failure: None,
            duration_ms: 1234,
        };
        let text = render(&report, &last_run);
        for line in [
            "# TYPE portlocker_last_run_timestamp_seconds gauge",
            "portlocker_last_run_timestamp_seconds 1795611900",
            "portlocker_last_run_success 1",
            "portlocker_last_run_duration_seconds 1.234",
            "portlocker_last_good_fetch_timestamp_seconds 1795611900",
            "portlocker_service_closed{service=\"ssh\",family=\"ipv4\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from:\n{text}"
            );
        }
        assert!(
            !text.contains("ipv6"),
            "an unknown state must not be reported as open:\n{text}"
        );
    }
}
