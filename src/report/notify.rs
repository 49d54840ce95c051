//! Notices to the owner: after a run that changed the firewall, after the
//! first of a series of failed runs, and after the run that recovers. The
//! text goes on stdin to `[notify] command` (an argv, never a shell) and in
//! a POST to `[notify] url`. Sent after the firewall work, bounded in time;
//! a notice that cannot be sent is a warning, never a failed run. The text
//! is the page's: it never holds the source URL. The command runs only
//! once it passes `files::check_program`, as every program root runs.

use std::time::Duration;

use chrono::{DateTime, FixedOffset};

use crate::config::{Config, NotifyCommand};
use crate::intake::fetch;
use crate::report::quiet::{Series, shown};
use crate::sys::files;
use crate::sys::runner::{Command, SystemRunner, Termination};

/// How long the notify command may run before it is killed.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(5);

/// Why a notice is sent: `PORTLOCKER_EVENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The run changed the firewall.
    Changed,
    /// The first failed run after a good one.
    Failed,
    /// The first good run after failed ones.
    Recovered,
    /// portlocker's rules were found missing (and put back): the first of an episode.
    Wiped,
    /// Another program keeps removing them: `watch` puts them back less often.
    Contested,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Changed => "changed",
            Event::Failed => "failed",
            Event::Recovered => "recovered",
            Event::Wiped => "wiped",
            Event::Contested => "contested",
        }
    }
}

/// A notice: why, and the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub event: Event,
    /// The host it is about, as `host_name` gives it.
    pub host: String,
    /// A few lines of plain text, each ending in a newline.
    pub text: String,
}

/// What a run did, as a notice needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run<'a> {
    pub host: &'a str,
    pub at: DateTime<FixedOffset>,
    /// Where the run stands in a series of failed runs.
    pub series: Option<&'a Series>,
    /// What changed in the firewall, one entry per service (`ssh closed`);
    /// empty when the run changed nothing.
    pub changes: &'a [String],
    /// Why the run failed.
    pub failure: Option<&'a str>,
    /// What of portlocker's rules it found missing, when that is told.
    pub wiped: Option<&'a str>,
}

/// The notice a run sends, if any: at most one per run. A failed run that
/// begins a series says so (and what it changed, if anything); so does the
/// run that ends one; otherwise a run that changed the firewall tells what.
pub fn notice(run: &Run) -> Option<Notice> {
    let host = if run.host.is_empty() {
        "this server"
    } else {
        run.host
    };
    let (event, mut text) = match (run.series, run.failure) {
        // Ports were open: the wipe leads, and the failure is told with it.
        (Some(Series::Began), Some(failure)) if run.wiped.is_some() => (
            Event::Wiped,
            format!(
                "{host}: portlocker's rules were wiped\n{}\nand the run failed: {failure}\n",
                run.wiped.unwrap_or_default()
            ),
        ),
        (Some(Series::Began), Some(failure)) => (
            Event::Failed,
            format!("{host}: portlocker failed\n{failure}\n"),
        ),
        (
            Some(Series::Ended {
                since,
                runs,
                failure,
            }),
            _,
        ) => (
            Event::Recovered,
            format!(
                "{host}: portlocker works again\nafter {runs} failed {} since {}; the last: {failure}\n",
                if *runs == 1 { "run" } else { "runs" },
                shown(*since)
            ),
        ),
        (_, _) if run.wiped.is_some() => (
            Event::Wiped,
            format!(
                "{host}: portlocker's rules were wiped\n{}\n",
                run.wiped.unwrap_or_default()
            ),
        ),
        _ if !run.changes.is_empty() => (Event::Changed, format!("{host}: the firewall changed\n")),
        _ => return None,
    };
    if !run.changes.is_empty() {
        if event != Event::Changed {
            text.push_str("changed:\n");
        }
        for change in run.changes {
            text.push_str(change);
            text.push('\n');
        }
    }
    text.push_str(&format!("at {}\n", shown(run.at)));
    Some(Notice {
        event,
        host: host.to_owned(),
        text,
    })
}

/// Tells `notice` to the command and POSTs it to the URL, each bounded; a
/// failure is a warning. `offline` (a boot run: no network yet) posts nothing.
pub fn send(config: &Config, notice: &Notice, offline: bool) {
    let event = notice.event.as_str();
    if let Some(configured) = &config.notify.command {
        tell_command(configured, notice);
    }
    if let Some(url) = &config.notify.url {
        if offline {
            log::info!("the notice ({event}) was not posted: an --offline run uses no network");
        } else {
            match fetch::post(url, &notice.text, &config.fetch) {
                Ok(()) => log::info!("notice ({event}) posted to notify.url"),
                Err(error) => log::warn!("the notice ({event}) was not posted: {error:#}"),
            }
        }
    }
}

/// Runs the notify command with `notice` on stdin, bounded in time — if it
/// passes the trust check every program root runs: another account's
/// program run as root would be that account's root shell. It runs by
/// path, not through the descriptor checked: every directory on that path
/// is root's and writable by no one else, so no one but root can change
/// what it leads to between the check and the exec (a `#!` script run
/// through a descriptor would see /dev/fd/N as its $0, or not start).
fn tell_command(configured: &NotifyCommand, notice: &Notice) {
    let event = notice.event.as_str();
    if let Err(error) = files::check_program(&configured.program, "notify.command") {
        log::warn!("the notice ({event}) was not told: the command was not run, since {error:#}");
        return;
    }
    let command = Command {
        program: configured.program.clone(),
        args: configured.args.clone(),
        stdin: Some(notice.text.clone()),
    };
    let env = [
        ("PORTLOCKER_EVENT", event),
        ("PORTLOCKER_HOST", notice.host.as_str()),
    ];
    let outcome = SystemRunner::with_limit(COMMAND_LIMIT).run_with_env(&command, &env);
    match outcome {
        Ok(done) => match done.termination {
            Termination::Code(0) => log::info!("notice ({event}) told to `{command}`"),
            Termination::Code(code) => log::warn!(
                "the notice ({event}) was not told: `{command}` exited with {code}{}",
                said(&done.stderr)
            ),
            Termination::Signal(signal) => log::warn!(
                "the notice ({event}) was not told: `{command}` was killed by signal {signal}{}",
                said(&done.stderr)
            ),
            Termination::TimedOut { after } => log::warn!(
                "the notice ({event}) was not told: `{command}` did not finish within {} s \
                 and was killed",
                after.as_secs()
            ),
        },
        Err(error) => log::warn!(
            "the notice ({event}) was not told: could not run `{command}` (notify.command): {error}"
        ),
    }
}

/// What a command said on stderr, for a warning: `: …` or nothing.
fn said(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        return String::new();
    }
    let mut shown: String = stderr.chars().take(300).collect();
    if shown.len() < stderr.len() {
        shown.push('…');
    }
    format!(": {}", shown.replace('\n', " / "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(text).unwrap()
    }

    fn run<'a>(
        series: Option<&'a Series>,
        changes: &'a [String],
        failure: Option<&'a str>,
    ) -> Run<'a> {
        Run {
            host: "web-1",
            at: at("2026-11-25T14:05:00+01:00"),
            series,
            changes,
            failure,
            wiped: None,
        }
    }

    #[test]
    fn a_change_says_what_changed_where_and_when() {
        let changes = [
            "ssh closed".to_owned(),
            "vpn open until 2026-11-25 18:00 +01:00".to_owned(),
        ];
        let notice = notice(&run(None, &changes, None)).unwrap();
        assert_eq!(notice.event, Event::Changed);
        assert_eq!(notice.host, "web-1");
        assert_eq!(
            notice.text,
            "web-1: the firewall changed\nssh closed\nvpn open until 2026-11-25 18:00 +01:00\n\
             at 2026-11-25 14:05:00 +01:00\n"
        );
        assert_eq!(super::notice(&run(None, &[], None)), None);
    }

    #[test]
    fn a_series_of_failures_is_told_when_it_begins_and_when_it_ends() {
        let failure =
            "the server answered 404 Not Found; enforced the last good control file instead";
        let began = notice(&run(Some(&Series::Began), &[], Some(failure))).unwrap();
        assert_eq!(began.event, Event::Failed);
        assert_eq!(
            began.text,
            format!("web-1: portlocker failed\n{failure}\nat 2026-11-25 14:05:00 +01:00\n")
        );
        // A repeat sends nothing, even when the run changed something.
        let changes = ["ssh closed".to_owned()];
        let repeat = notice(&run(None, &[], Some(failure)));
        assert_eq!(repeat, None);
        assert_eq!(
            notice(&run(None, &changes, Some(failure))).unwrap().event,
            Event::Changed
        );
        let ended = Series::Ended {
            since: at("2026-11-25T13:00:00+01:00"),
            runs: 13,
            failure: failure.to_owned(),
        };
        let recovered = notice(&run(Some(&ended), &changes, None)).unwrap();
        assert_eq!(recovered.event, Event::Recovered);
        assert_eq!(
            recovered.text,
            format!(
                "web-1: portlocker works again\nafter 13 failed runs since 2026-11-25 13:00:00 \
                 +01:00; the last: {failure}\nchanged:\nssh closed\nat 2026-11-25 14:05:00 +01:00\n"
            )
        );
    }

    #[test]
    fn a_wipe_says_what_was_missing_and_what_was_put_back() {
        let changes = ["ssh closed".to_owned()];
        let mut wiped = run(None, &changes, None);
        wiped.wiped = Some("portlocker's rules were missing (IPv4: chain PORTLOCKER is gone)");
        let notice = notice(&wiped).unwrap();
        assert_eq!(notice.event, Event::Wiped);
        assert_eq!(
            notice.text,
            "web-1: portlocker's rules were wiped\nportlocker's rules were missing (IPv4: chain \
             PORTLOCKER is gone)\nchanged:\nssh closed\nat 2026-11-25 14:05:00 +01:00\n"
        );
    }

    /// A run that finds a wipe and fails putting the rules back: the wipe
    /// is told (it was a failure notice alone, the wipe left out).
    #[test]
    fn a_wipe_a_failed_run_found_is_told_with_its_failure() {
        let mut failed = run(Some(&Series::Began), &[], Some("a firewall command failed"));
        failed.wiped = Some("portlocker's rules were missing (IPv4: chain PORTLOCKER is gone)");
        let notice = notice(&failed).unwrap();
        assert_eq!(notice.event, Event::Wiped);
        assert_eq!(
            notice.text,
            "web-1: portlocker's rules were wiped\nportlocker's rules were missing (IPv4: chain \
             PORTLOCKER is gone)\nand the run failed: a firewall command failed\nat 2026-11-25 \
             14:05:00 +01:00\n"
        );
    }

    #[test]
    fn a_host_without_a_name_is_this_server() {
        let changes = ["ssh closed".to_owned()];
        let mut nameless = run(None, &changes, None);
        nameless.host = "";
        let notice = notice(&nameless).unwrap();
        assert!(notice.text.starts_with("this server: "), "{}", notice.text);
    }

    #[test]
    fn stderr_is_shown_on_one_line_and_cut() {
        assert_eq!(said("  \n"), "");
        assert_eq!(said("no such user\nbye\n"), ": no such user / bye");
        assert_eq!(said(&"x".repeat(400)).chars().count(), 2 + 300 + 1);
    }
}
