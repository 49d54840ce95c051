//! What a run tells the owner, and what it keeps to itself because an
//! earlier run told it already: cron mails whatever a run prints, and the
//! same warning every five minutes buries the news. Pure: the decision
//! only; `logging::release` carries it out.

use chrono::{DateTime, FixedOffset, TimeDelta};

use crate::intake::state::{self, Failing, Told};
use crate::sys::clock::show_duration;

/// What a run found that the owner may already have been told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen<'a> {
    /// The `fingerprint` of the control file in force and of the run's notes.
    pub notes: String,
    /// Whether the run changed the firewall: a change is news, and the notes of its run with it.
    pub changed: bool,
    /// Why the run failed, as it is logged; None when it succeeded.
    pub failure: Option<&'a str>,
    /// When the run started.
    pub at: DateTime<FixedOffset>,
}

/// What a run tells, decided by `decide`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Telling {
    /// Whether the run's notes — its warnings, and what it logs of the
    /// control file — go to stderr (warnings) and to the log. When not,
    /// the log gets the run's summary line only.
    pub notes: bool,
    /// Whether the failure is printed on stderr; it is logged every run.
    pub failure: bool,
    /// Lines to add, on stderr and in the log, before the summary line.
    pub extra: Vec<String>,
    /// Where the run stands in a series of failed runs, for the notices.
    pub series: Option<Series>,
}

impl Telling {
    /// Everything told, as by a run that cannot keep what it told (its
    /// state could not be saved): the next run would not know it either.
    pub fn everything(self) -> Telling {
        Telling {
            notes: true,
            failure: true,
            ..self
        }
    }
}

/// A run that begins or ends a series of failed runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Series {
    /// The first failed run after a good one (or the first run of all).
    Began,
    /// The first good run after failed ones.
    Ended {
        /// When the first failed run started.
        since: DateTime<FixedOffset>,
        /// How many runs failed.
        runs: u64,
        /// The last failure.
        failure: String,
    },
}

/// A fingerprint of the control file in force (`content`) and of what the
/// run says about it, in order.
pub fn fingerprint(content: &str, notes: &[String]) -> String {
    let mut text = String::with_capacity(content.len() + 64);
    text.push_str(content);
    for note in notes {
        // A NUL never appears in either: no two inputs join to the same text.
        text.push('\0');
        text.push_str(note);
    }
    state::checksum(&text)
}

/// What a run that found `seen` tells, given what runs `told` before, and
/// what is told after it. Notes are told by the first run that finds them
/// (a new file, or new words about it) and by a run that changes the
/// firewall. A failure is printed by the first failed run, again when it
/// changes, and at most once every `repeat_after` while it stays the same;
/// the first good run after it says that it cleared.
pub fn decide(told: &Told, seen: &Seen, repeat_after: TimeDelta) -> (Telling, Told) {
    let notes = seen.changed || told.notes.as_deref() != Some(seen.notes.as_str());
    let mut extra = Vec::new();
    let mut series = None;
    let (failure, failing) = match (&told.failure, seen.failure) {
        (None, None) => (false, None),
        (Some(before), None) => {
            extra.push(format!(
                "runs work again: the failure since {} has cleared after {} failed {}",
                shown(before.since),
                before.runs,
                if before.runs == 1 { "run" } else { "runs" }
            ));
            series = Some(Series::Ended {
                since: before.since,
                runs: before.runs,
                failure: before.text.clone(),
            });
            (false, None)
        }
        (None, Some(text)) => {
            series = Some(Series::Began);
            let failing = Failing {
                text: text.to_owned(),
                since: seen.at,
                printed_at: seen.at,
                runs: 1,
            };
            (true, Some(failing))
        }
        (Some(before), Some(text)) => {
            let runs = before.runs + 1;
            let changed = steady(&before.text) != steady(text);
            // A clock set back would otherwise keep a failure quiet for as long.
            let due = seen.at - before.printed_at >= repeat_after || seen.at < before.printed_at;
            if due && !changed {
                extra.push(format!(
                    "every run has failed like this since {} ({runs} runs); the same failure \
                     is printed at most once every {} (notify.repeat_after)",
                    shown(before.since),
                    show_duration(repeat_after)
                ));
            }
            let print = changed || due;
            let failing = Failing {
                text: text.to_owned(),
                since: before.since,
                printed_at: if print { seen.at } else { before.printed_at },
                runs,
            };
            (print, Some(failing))
        }
    };
    let telling = Telling {
        notes,
        failure,
        extra,
        series,
    };
    let told = Told {
        notes: Some(seen.notes.clone()),
        failure: failing,
        wiped: told.wiped.clone(),
    };
    (telling, told)
}

/// A moment as the log and the page show it, with its UTC offset.
pub fn shown(at: DateTime<FixedOffset>) -> String {
    at.format("%Y-%m-%d %H:%M:%S %:z").to_string()
}

/// A failure's words without what changes from run to run while the
/// failure does not: a moment in seconds (a certificate's "verification
/// time 1796663966"), an age ("signed 5 hours 10 minutes ago"). Line
/// numbers and the like stay: a different bad line is a different failure.
fn steady(text: &str) -> String {
    const UNITS: [&str; 4] = ["day", "hour", "minute", "second"];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(|c: char| c.is_ascii_digit()) {
        out.push_str(&rest[..at]);
        let digits = rest[at..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(rest.len() - at, |n| n);
        let after = &rest[at + digits..];
        let aged = UNITS
            .iter()
            .any(|unit| after.starts_with(&format!(" {unit}")));
        match digits >= 6 || aged {
            true => out.push('#'),
            false => out.push_str(&rest[at..at + digits]),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-11-25T14:00:00+01:00").unwrap()
            + TimeDelta::minutes(minutes)
    }

    fn seen(notes: &str, failure: Option<&'static str>, minutes: i64) -> Seen<'static> {
        Seen {
            notes: notes.to_owned(),
            changed: false,
            failure,
            at: at(minutes),
        }
    }

    /// Runs every five minutes through `runs`, each `(notes, failure)`,
    /// from no state: what each told.
    fn series(runs: &[(&str, Option<&'static str>)]) -> Vec<Telling> {
        let mut told = Told::default();
        runs.iter()
            .enumerate()
            .map(|(n, (notes, failure))| {
                let (telling, after) = decide(
                    &told,
                    &seen(notes, *failure, 5 * n as i64),
                    TimeDelta::hours(1),
                );
                told = after;
                telling
            })
            .collect()
    }

    /// A failure whose words carry the moment or an age is the same failure
    /// run after run: printed once, not every five minutes; another bad line
    /// is another failure.
    #[test]
    fn a_failure_that_only_ages_is_the_same_failure() {
        let told = series(&[
            (
                "a",
                Some(
                    "invalid peer certificate: certificate expired: verification time 1796663966 (UNIX)",
                ),
            ),
            (
                "a",
                Some(
                    "invalid peer certificate: certificate expired: verification time 1796664266 (UNIX)",
                ),
            ),
            (
                "a",
                Some("the file was signed 5 hours 10 minutes ago, longer than max_age"),
            ),
            (
                "a",
                Some("the file was signed 5 hours 15 minutes ago, longer than max_age"),
            ),
            ("a", Some("line 3: unknown service")),
            ("a", Some("line 4: unknown service")),
        ]);
        let printed: Vec<bool> = told.iter().map(|t| t.failure).collect();
        assert_eq!(printed, [true, false, true, false, true, true]);
    }

    #[test]
    fn notes_are_told_by_the_first_run_that_finds_them() {
        let told = series(&[
            ("a", None),
            ("a", None),
            ("a", None),
            ("b", None),
            ("a", None),
        ]);
        let notes: Vec<bool> = told.iter().map(|t| t.notes).collect();
        assert_eq!(notes, [true, false, false, true, true]);
        assert!(
            told.iter()
                .all(|t| !t.failure && t.extra.is_empty() && t.series.is_none())
        );
    }

    #[test]
    fn a_run_that_changes_the_firewall_tells_its_notes() {
        let (_, told) = decide(&Told::default(), &seen("a", None, 0), TimeDelta::hours(1));
        let changed = Seen {
            changed: true,
            ..seen("a", None, 5)
        };
        assert!(decide(&told, &changed, TimeDelta::hours(1)).0.notes);
        assert!(
            !decide(&told, &seen("a", None, 5), TimeDelta::hours(1))
                .0
                .notes
        );
    }

    #[test]
    fn a_failure_is_printed_first_then_hourly_then_when_it_changes_or_clears() {
        const GONE: Option<&str> = Some("the server answered 404 Not Found");
        const HUNG: Option<&str> = Some("no complete answer within fetch.timeout_secs (20 s)");
        // 14 runs of 404 (65 minutes), a timeout, the 404 again, then good runs.
        let mut runs = vec![("a", GONE); 14];
        runs.extend([("a", HUNG), ("a", GONE), ("a", None), ("a", None)]);
        let told = series(&runs);
        let printed: Vec<usize> = (0..told.len()).filter(|&n| told[n].failure).collect();
        // The first, the one an hour later (run 12 at 60 minutes), the changes.
        assert_eq!(printed, [0, 12, 14, 15]);
        assert_eq!(told[0].series, Some(Series::Began));
        assert!(told[1..16].iter().all(|t| t.series.is_none()));
        assert_eq!(
            told[12].extra,
            [
                "every run has failed like this since 2026-11-25 14:00:00 +01:00 (13 runs); the \
                 same failure is printed at most once every 1h (notify.repeat_after)"
            ]
        );
        assert!(told[14].extra.is_empty() && told[15].extra.is_empty());
        assert_eq!(
            told[16].extra,
            [
                "runs work again: the failure since 2026-11-25 14:00:00 +01:00 has cleared after 16 failed runs"
            ]
        );
        assert_eq!(
            told[16].series,
            Some(Series::Ended {
                since: at(0),
                runs: 16,
                failure: GONE.unwrap().to_owned()
            })
        );
        assert!(!told[16].failure);
        assert_eq!(told[17], series(&[("a", None), ("a", None)])[1]);
    }

    #[test]
    fn a_clock_set_back_prints_the_failure_again() {
        let failure = Some("the server answered 503 Service Unavailable");
        let (_, told) = decide(
            &Told::default(),
            &seen("a", failure, 60),
            TimeDelta::hours(1),
        );
        let (telling, after) = decide(&told, &seen("a", failure, 0), TimeDelta::hours(1));
        assert!(telling.failure);
        assert_eq!(after.failure.unwrap().printed_at, at(0));
    }

    #[test]
    fn a_lost_state_tells_everything_again() {
        let failure = Some("the server answered 404 Not Found");
        let (telling, _) = decide(
            &Told::default(),
            &seen("a", failure, 0),
            TimeDelta::hours(1),
        );
        assert!(telling.notes && telling.failure);
        assert_eq!(telling.series, Some(Series::Began));
    }

    #[test]
    fn fingerprints_tell_content_and_notes_apart() {
        let one = fingerprint("close ssh\n", &["a".into(), "b".into()]);
        assert_eq!(one, fingerprint("close ssh\n", &["a".into(), "b".into()]));
        for other in [
            fingerprint("close ssh\n", &["a".into()]),
            fingerprint("close ssh\n", &["b".into(), "a".into()]),
            fingerprint("close ssh\n", &["ab".into()]),
            fingerprint("close ssh\na", &["b".into()]),
            fingerprint("open ssh\n", &["a".into(), "b".into()]),
        ] {
            assert_ne!(one, other);
        }
    }
}
