//! The HTML status page the owner checks from a phone, and the atomic write
//! that keeps a web server from ever serving half of it. `render` is pure.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use chrono::NaiveDateTime;

use crate::config::Family;
use crate::plan::PortState;

/// What one run found and did, as the owner should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// None when the run succeeded; otherwise why it failed, in plain words.
    pub failure: Option<String>,
    pub services: Vec<ServiceRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    pub name: String,
    /// Ports as configured, e.g. `80/tcp, 443/tcp`.
    pub ports: String,
    pub states: Vec<(Family, PortState)>,
    /// The deadline or sources of an open, in plain words; may be empty.
    pub note: String,
}

/// The complete page for `report`, stamped with the time of the run.
pub fn render(report: &Report, run_at: NaiveDateTime) -> String {
    let (outcome_class, outcome) = match &report.failure {
        None => ("ok", "OK: the firewall matches the control file".to_owned()),
        Some(reason) => ("failed", format!("Failed: {reason}")),
    };
    let families: Vec<Family> = report
        .services
        .first()
        .map(|row| row.states.iter().map(|(family, _)| *family).collect())
        .unwrap_or_default();

    let mut page = String::new();
    page.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        "<title>portlocker</title>\n<style>\n",
        "body{font-family:system-ui,sans-serif;margin:1em;max-width:40em}\n",
        "table{border-collapse:collapse;width:100%}\n",
        "th,td{text-align:left;padding:.4em;border-bottom:1px solid #ccc}\n",
        ".ok{color:#17612e}.failed{color:#a4161a}\n",
        ".closed{color:#17612e}.open{color:#a4161a}\n",
        "</style>\n</head>\n<body>\n<h1>portlocker</h1>\n",
    ));
    let _ = writeln!(
        page,
        "<p class=\"{outcome_class}\"><strong>{}</strong></p>",
        escape(&outcome)
    );
    page.push_str("<table>\n<tr><th>Service</th><th>Ports</th>");
    for family in &families {
        let _ = write!(page, "<th>{family}</th>");
    }
    page.push_str("<th>Notes</th></tr>\n");
    for row in &report.services {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td>",
            escape(&row.name),
            escape(&row.ports)
        );
        for (_, state) in &row.states {
            let class = state.as_str().replace(' ', "-");
            let _ = write!(page, "<td class=\"{class}\">{}</td>", state.as_str());
        }
        let _ = write!(page, "<td>{}</td>", escape(&row.note));
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n");
    let _ = writeln!(
        page,
        "<p>Run at {}.</p>\n</body>\n</html>",
        run_at.format("%Y-%m-%d %H:%M:%S")
    );
    page
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

/// Replaces `path` with `contents` in one step: a reader sees the old file
/// or the new one, never a mix, even if this process is killed midway.
/// Callers hold the run lock, so one fixed temporary name is enough, and a
/// temporary left by a killed run is simply overwritten by the next.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let directory = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let temporary = directory.join(format!(".{}.tmp", name.to_string_lossy()));
    let written = (|| -> Result<()> {
        let mut file = fs::File::create(&temporary)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        // Make the rename itself durable.
        fs::File::open(directory)?.sync_all()?;
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_at() -> NaiveDateTime {
        NaiveDateTime::parse_from_str("2026-11-25 14:05:00", "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn report(failure: Option<&str>) -> Report {
        Report {
            failure: failure.map(String::from),
            services: vec![
                ServiceRow {
                    name: "ssh".into(),
                    ports: "22/tcp".into(),
                    states: vec![
                        (Family::Ipv4, PortState::Closed),
                        (Family::Ipv6, PortState::Closed),
                    ],
                    note: String::new(),
                },
                ServiceRow {
                    name: "web".into(),
                    ports: "80/tcp, 443/tcp".into(),
                    states: vec![
                        (Family::Ipv4, PortState::Open),
                        (Family::Ipv6, PortState::Unknown),
                    ],
                    note: "until 2026-11-25 18:00".into(),
                },
            ],
        }
    }

    #[test]
    fn a_good_run_shows_ok_time_and_every_service() {
        let page = render(&report(None), run_at());
        assert!(page.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
        assert!(page.ends_with("</html>\n"));
        assert!(page.contains("<meta charset=\"utf-8\">"));
        assert!(
            page.contains(
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            )
        );
        assert!(page.contains("<strong>OK: the firewall matches the control file</strong>"));
        assert!(page.contains("<th>IPv4</th><th>IPv6</th><th>Notes</th>"));
        assert!(page.contains("<td>until 2026-11-25 18:00</td>"));
        assert!(page.contains(
            "<tr><td>ssh</td><td>22/tcp</td><td class=\"closed\">closed</td><td class=\"closed\">closed</td><td></td></tr>"
        ));
        assert!(page.contains(
            "<td>80/tcp, 443/tcp</td><td class=\"open\">open</td><td class=\"unknown\">unknown</td>"
        ));
        assert!(page.contains("Run at 2026-11-25 14:05:00."));
        assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("href="));
    }

    #[test]
    fn a_failure_is_shown_escaped() {
        let page = render(&report(Some("line 2: unknown service `<b>&x`")), run_at());
        assert!(page.contains(
            "<p class=\"failed\"><strong>Failed: line 2: unknown service `&lt;b&gt;&amp;x`</strong></p>"
        ));
        assert!(!page.contains("<b>"));
    }

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.html");
        write_atomic(&path, b"old", 0o644).unwrap();
        write_atomic(&path, b"new page", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new page");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["status.html"]);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn atomic_write_into_a_missing_directory_fails_and_says_where() {
        let error = write_atomic(Path::new("/nonexistent-dir/x.html"), b"x", 0o644).unwrap_err();
        assert!(format!("{error:#}").contains("/nonexistent-dir/x.html"));
    }
}
