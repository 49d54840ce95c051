//! The run as Prometheus text-format metrics, for node_exporter's textfile
//! collector: when it ran and whether it worked, whether portlocker's rules
//! are in force, and per service and family whether it is closed and
//! whether it is as the control file asks. Pure.

use std::fmt::Write as _;

use crate::firewall::model::PortState;
use crate::intake::state::LastRun;
use crate::report::status::{FamilyView, Report, Surprise};

/// The metrics file for a run: last run time, success, duration, last good
/// fetch, whether portlocker enforces anything (0 after `reset`), whether
/// each service is closed per family (1 closed, 0 open, open to some
/// sources, or partly closed; absent when unknown), and whether it is as
/// asked (1 as asked, 0 not; absent when nothing asks or it is unknown).
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
    gauge(
        "enforcing",
        "1 if portlocker's rules are in force, 0 after `portlocker reset` until the next run.",
        &[(String::new(), f64::from(u8::from(report.enforcing())))],
    );
    let closed = per_family(report, |view| match view.state {
        PortState::Closed => Some(1.0),
        PortState::Unknown => None,
        _ => Some(0.0),
    });
    gauge(
        "service_closed",
        "1 if the service is closed to everyone in this address family, else 0.",
        &closed,
    );
    let as_asked = per_family(report, |view| match view.surprise() {
        Surprise::Calm => Some(1.0),
        Surprise::Drift => Some(0.0),
        Surprise::Unasked | Surprise::Unknown => None,
    });
    gauge(
        "service_as_asked",
        "1 if the service is as the control file asks in this address family, 0 if it is more \
         open or more closed.",
        &as_asked,
    );
    text
}

/// One sample per service and family that `value` gives a value for.
fn per_family(report: &Report, value: impl Fn(&FamilyView) -> Option<f64>) -> Vec<(String, f64)> {
    report
        .services
        .iter()
        .flat_map(|row| {
            row.families.iter().filter_map(|view| {
                let family = view.family.to_string().to_lowercase();
                let labels = format!("{{service=\"{}\",family=\"{family}\"}}", row.name);
                Some((labels, value(view)?))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Family;
    use crate::report::status::tests::view;
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
            reset_at: None,
            services: vec![
                ServiceRow {
                    name: "ssh".into(),
                    ports: vec!["22/tcp".into()],
                    families: vec![
                        view(Family::Ipv4, PortState::Closed, None, ""),
                        view(Family::Ipv6, PortState::Unknown, Some(PortState::Open), ""),
                    ],
                    opens: Vec::new(),
                    note: String::new(),
                },
                ServiceRow {
                    name: "vpn".into(),
                    ports: vec!["1723/tcp".into()],
                    families: vec![
                        view(Family::Ipv4, PortState::Closed, Some(PortState::Open), ""),
                        view(Family::Ipv6, PortState::Open, Some(PortState::Open), ""),
                    ],
                    opens: Vec::new(),
                    note: String::new(),
                },
            ],
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
            "portlocker_enforcing 1",
            "# TYPE portlocker_service_as_asked gauge",
            "portlocker_service_as_asked{service=\"vpn\",family=\"ipv4\"} 0",
            "portlocker_service_as_asked{service=\"vpn\",family=\"ipv6\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from:\n{text}"
            );
        }
        assert!(
            !text.contains("service=\"ssh\",family=\"ipv6\""),
            "an unknown state must not be reported as open, nor as asked:\n{text}"
        );
        assert!(
            !text.contains("portlocker_service_as_asked{service=\"ssh\",family=\"ipv4\"}"),
            "nothing asks ssh over IPv4:\n{text}"
        );
        let reset = Report {
            reset_at: Some(at),
            ..report
        };
        assert!(
            render(&reset, &last_run)
                .lines()
                .any(|l| l == "portlocker_enforcing 0")
        );
    }
}
