//! portlocker's own state in `state_dir`: the run lock, and the last good
//! control file with the validators for a conditional fetch. Every write
//! replaces a whole file atomically, so a run killed at any moment leaves
//! the state as it was before or as it is after.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::config::is_root;
use crate::fetch::Validators;
use crate::files::{self, write_atomic};
use crate::intent::Starts;

const STATE_FILE: &str = "state.toml";
const LOCK_FILE: &str = "lock";

/// Held for the whole of a run: an exclusive `flock` on `state_dir/lock`,
/// released by the kernel when the process ends, however it ends.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Takes the run lock without waiting; `None` when another run holds it.
pub fn lock(state_dir: &Path) -> Result<Option<RunLock>> {
    ensure_dir(state_dir)?;
    let path = state_dir.join(LOCK_FILE);
    let file = files::open_no_follow(
        &path,
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600),
    )
    .with_context(|| format!("cannot open the run lock {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(RunLock { _file: file })),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Run as root, refuses a `state_dir` that someone other than root could
/// change, or a file or link in it that someone else could have planted:
/// whoever writes the state chooses the control file a 304 enforces. A
/// missing `state_dir` is fine; root creates it, mode 700.
pub fn check_trust(state_dir: &Path) -> Result<()> {
    if !is_root()
        || fs::symlink_metadata(state_dir).is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
    {
        return Ok(());
    }
    files::check_trusted_dir(state_dir, "state_dir")
}

/// Creates `state_dir` (mode 700: the last good file holds the secret URL).
fn ensure_dir(state_dir: &Path) -> Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
    {
        Ok(()) => Ok(()),
        Err(error) => Err(error)
            .with_context(|| format!("cannot create the state directory {}", state_dir.display())),
    }
}

/// Everything portlocker remembers between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The last control file that passed validation.
    pub last_good: Option<LastGood>,
    /// When each open line in force was first applied, for `for` and `max_open`.
    #[serde(default, skip_serializing_if = "Starts::is_empty")]
    pub opens: Starts,
    /// How the last run ended.
    pub last_run: Option<LastRun>,
}

/// How a run ended, for `status --json` and the metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    pub at: DateTime<FixedOffset>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub duration_ms: u64,
}

/// A control file that passed validation, as fetched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastGood {
    /// Where it came from, in full (the state file is readable by root only).
    pub source: String,
    /// When it was last fetched, or confirmed unchanged by a 304.
    pub fetched_at: DateTime<FixedOffset>,
    /// When its content last changed (missing in state from older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<DateTime<FixedOffset>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// When it was signed (Unix seconds), if a signature was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_at: Option<i64>,
    /// The file itself, exactly as it passed validation.
    pub body: String,
}

impl LastGood {
    /// The validators to send when fetching `source` again.
    pub fn validators_for(&self, source: &str) -> Option<Validators> {
        let validators = Validators {
            etag: self.etag.clone(),
            last_modified: self.last_modified.clone(),
        };
        (self.source == source && !validators.is_empty()).then_some(validators)
    }
}

impl State {
    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE)
    }

    /// Reads the state; a missing file is an empty state.
    pub fn load(state_dir: &Path) -> Result<State> {
        let path = State::path(state_dir);
        let text = match files::read_no_follow(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(State::default()),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        toml::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }

    /// Replaces the state file as a whole.
    pub fn save(&self, state_dir: &Path) -> Result<()> {
        ensure_dir(state_dir)?;
        let text = toml::to_string(self).context("cannot encode the state")?;
        write_atomic(&State::path(state_dir), text.as_bytes(), 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode_of(path: &Path) -> io::Result<u32> {
        Ok(fs::metadata(path)?.permissions().mode() & 0o7777)
    }

    fn last_good() -> LastGood {
        LastGood {
            source: "https://example.org/c.txt".into(),
            fetched_at: DateTime::parse_from_rfc3339("2026-11-25T14:05:00+01:00").unwrap(),
            changed_at: None,
            etag: Some("\"abc\"".into()),
            last_modified: None,
            signed_at: Some(1_795_000_000),
            body: "close ssh\n# \"quoted\" \\ and 'single'\n".into(),
        }
    }

    #[test]
    fn state_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        assert_eq!(State::load(&state_dir).unwrap(), State::default());
        let mut opens = Starts::new();
        opens.insert("open ssh for 2h".into(), last_good().fetched_at);
        let state = State {
            last_good: Some(last_good()),
            opens,
            last_run: Some(LastRun {
                at: last_good().fetched_at,
                ok: false,
                failure: Some("the server answered 404 Not Found".into()),
                duration_ms: 12,
            }),
        };
        state.save(&state_dir).unwrap();
        assert_eq!(State::load(&state_dir).unwrap(), state);
        assert_eq!(mode_of(&state_dir).unwrap(), 0o700);
        assert_eq!(mode_of(&State::path(&state_dir)).unwrap(), 0o600);
    }

    #[test]
    fn a_damaged_state_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), "last_good = 3").unwrap();
        let error = format!("{:#}", State::load(dir.path()).unwrap_err());
        assert!(error.contains("state.toml is damaged"), "{error}");
    }

    #[test]
    fn links_where_state_files_should_be_are_refused_not_followed() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let planted = dir.path().join("planted");
        State {
            last_good: Some(last_good()),
            ..State::default()
        }
        .save(&planted)
        .unwrap();
        let state_dir = dir.path().join("state");
        fs::create_dir(&state_dir).unwrap();
        symlink(State::path(&planted), State::path(&state_dir)).unwrap();
        let error = format!("{:#}", State::load(&state_dir).unwrap_err());
        assert!(
            error.contains("state.toml: it is a symbolic link"),
            "{error}"
        );
        // A link to nowhere: followed, it would make root create the file there.
        let elsewhere = dir.path().join("elsewhere");
        symlink(&elsewhere, state_dir.join(LOCK_FILE)).unwrap();
        let error = format!("{:#}", lock(&state_dir).unwrap_err());
        assert!(error.contains("lock: it is a symbolic link"), "{error}");
        assert!(!elsewhere.exists());
    }

    #[test]
    fn as_root_a_state_dir_others_can_write_is_refused() {
        use std::io::Write as _;
        if !is_root() {
            let _ = writeln!(io::stderr(), "SKIPPED state::tests trust: not root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        check_trust(&state_dir).expect("a missing state_dir is created by root");
        lock(&state_dir).unwrap();
        State::default().save(&state_dir).unwrap();
        check_trust(&state_dir).unwrap();
        assert_eq!(mode_of(&state_dir.join(LOCK_FILE)).unwrap(), 0o600);
        fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o777)).unwrap();
        let error = check_trust(&state_dir).unwrap_err().to_string();
        assert!(error.contains("chmod go-w"), "{error}");
    }

    #[test]
    fn validators_only_for_the_same_source() {
        let good = last_good();
        let validators = good.validators_for("https://example.org/c.txt").unwrap();
        assert_eq!(validators.etag.as_deref(), Some("\"abc\""));
        assert_eq!(good.validators_for("https://example.org/other.txt"), None);
        let bare = LastGood {
            etag: None,
            ..last_good()
        };
        assert_eq!(bare.validators_for("https://example.org/c.txt"), None);
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap().expect("first lock");
        assert!(
            lock(dir.path()).unwrap().is_none(),
            "a second lock was granted"
        );
        drop(held);
        assert!(lock(dir.path()).unwrap().is_some());
    }
}
