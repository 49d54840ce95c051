//! How a running `watch` is known to the rest of portlocker: an exclusive
//! lock on `state_dir/watch` for as long as it lives, and in that file its
//! pid and the last moment it looked (its heartbeat). A cron or timer run
//! finding a live watcher leaves the work to it and asks it to run now; one
//! finding it stuck does the work itself. Never signals a process that is
//! not a portlocker holding the lock.

use std::fs::{self, File};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::sys::clock;
use crate::sys::files;

const FILE: &str = "watch";

/// A watcher that has not looked for this long is taken as stuck: its
/// slowest loop (a fetch and a run, each bounded) takes far less.
pub const STUCK_AFTER: Duration = Duration::from_secs(120);

/// This process is the watcher of its state directory.
#[derive(Debug)]
pub struct Presence {
    file: File,
    /// The fingerprint of the config this watcher runs with.
    config: u64,
    /// Where that config is.
    path: String,
}

/// Another process's watch, as its file tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    pub pid: u32,
    /// When it last looked.
    pub beat: Option<DateTime<Utc>>,
    /// The fingerprint of the config it runs with (`Config::fingerprint`).
    pub config: Option<u64>,
    /// Where that config is.
    pub config_path: Option<PathBuf>,
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

fn open(state_dir: &Path) -> Result<File> {
    let dir = files::Directory::open(state_dir, "state_dir", Some(0o700))
        .with_context(|| format!("cannot reach the state directory {}", state_dir.display()))?;
    dir.open_or_create(FILE, 0o600)
        .with_context(|| format!("cannot open {}", path(state_dir).display()))
}

/// Becomes the watcher of `state_dir`; the watcher already there when
/// another process is. (A cron run peeking holds the lock for an instant:
/// it is tried a few times.)
pub fn claim(
    state_dir: &Path,
    config: u64,
    path: Option<&Path>,
) -> Result<std::result::Result<Presence, Watcher>> {
    // One line: a path with a line break is not told.
    let path = path
        .map(|path| path.to_string_lossy().into_owned())
        .filter(|path| !path.contains('\n'))
        .unwrap_or_default();
    let file = open(state_dir)?;
    for _ in 0..20 {
        match file.try_lock() {
            Ok(()) => {
                let _ = file.set_len(0);
                let mut presence = Presence { file, config, path };
                presence.beat(clock::now_utc());
                return Ok(Ok(presence));
            }
            Err(fs::TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(25)),
            Err(fs::TryLockError::Error(error)) => {
                return Err(error).context("cannot lock the watch file");
            }
        }
    }
    Ok(Err(read(&file)))
}

impl Presence {
    /// Says that this watcher looked at `now`.
    pub fn beat(&mut self, now: DateTime<Utc>) {
        // Always the same length, written in place: a reader never finds
        // the file empty or half old.
        let text = format!(
            "{:>10} {:>20} {:016x} {}\n",
            std::process::id(),
            now.timestamp(),
            self.config,
            self.path
        );
        let _ = self.file.write_all_at(text.as_bytes(), 0);
    }

    /// Says that this watcher now runs with the config of `fingerprint`.
    pub fn reconfigured(&mut self, fingerprint: u64, now: DateTime<Utc>) {
        self.config = fingerprint;
        self.beat(now);
    }
}

/// The live watcher of `state_dir`, if there is one.
pub fn watcher(state_dir: &Path) -> Option<Watcher> {
    let dir = files::Directory::open(state_dir, "state_dir", None).ok()?;
    let file = dir.open_or_create(FILE, 0o600).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(fs::TryLockError::WouldBlock) => Some(read(&file)),
        Err(fs::TryLockError::Error(_)) => None,
    }
}

fn read(mut file: &File) -> Watcher {
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let _ = file.take(100).read_to_string(&mut text);
    let mut words = text.split_whitespace();
    let pid = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let beat = words
        .next()
        .and_then(|w| w.parse().ok())
        .and_then(|seconds| DateTime::from_timestamp(seconds, 0));
    let config = words.next().and_then(|w| u64::from_str_radix(w, 16).ok());
    let rest: Vec<&str> = words.collect();
    let config_path = (!rest.is_empty()).then(|| PathBuf::from(rest.join(" ")));
    Watcher {
        pid,
        beat,
        config,
        config_path,
    }
}

impl Watcher {
    /// Whether it looked recently enough, at `now`, to leave the work to it.
    pub fn alive(&self, now: DateTime<Utc>) -> bool {
        self.beat.is_some_and(|beat| {
            let since = now - beat;
            since >= -chrono::TimeDelta::seconds(5)
                && since.to_std().unwrap_or_default() < STUCK_AFTER
        })
    }

    /// Asks it to fetch and run now (SIGUSR1), if it is a portlocker.
    pub fn ask_to_run(&self) -> bool {
        self.signal(libc::SIGUSR1)
    }

    /// Asks it to read its config again, then run (SIGHUP), if it is a portlocker.
    pub fn ask_to_reload(&self) -> bool {
        self.signal(libc::SIGHUP)
    }

    fn signal(&self, signal: i32) -> bool {
        let comm = fs::read_to_string(format!("/proc/{}/comm", self.pid)).unwrap_or_default();
        if self.pid <= 1 || comm.trim() != "portlocker" {
            return false;
        }
        let Ok(pid) = i32::try_from(self.pid) else {
            return false;
        };
        // SAFETY: kill(2) of one process by pid; no memory is involved.
        unsafe { libc::kill(pid, signal) == 0 }
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        // The lock goes with the descriptor; an empty file says nobody beats.
        let _ = self.file.set_len(0);
        let _ = self.file.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_watcher_per_state_directory_known_by_its_beat() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(watcher(dir.path()), None);
        let now = clock::now_utc();
        let path = Path::new("/etc/portlocker/config.toml");
        let mut presence = claim(dir.path(), 0xfeed, Some(path)).unwrap().unwrap();
        let seen = watcher(dir.path()).expect("a watcher");
        assert_eq!(seen.pid, std::process::id());
        assert!(seen.alive(now));
        // The config it runs with, as a cron run compares it with its own.
        assert_eq!(seen.config, Some(0xfeed));
        assert_eq!(seen.config_path.as_deref(), Some(path));
        presence.reconfigured(u64::MAX, now);
        assert_eq!(watcher(dir.path()).unwrap().config, Some(u64::MAX));
        let second = claim(dir.path(), 0, None).unwrap().unwrap_err();
        assert_eq!(second.pid, std::process::id());
        // Stuck: it has not looked for longer than STUCK_AFTER.
        presence.beat(now - chrono::TimeDelta::seconds(121));
        assert!(!watcher(dir.path()).unwrap().alive(now));
        // A beat from the future (a clock set back) is not taken as alive for ever.
        presence.beat(now + chrono::TimeDelta::hours(1));
        assert!(!watcher(dir.path()).unwrap().alive(now));
        drop(presence);
        assert_eq!(watcher(dir.path()), None);
        assert!(claim(dir.path(), 0, None).unwrap().is_ok());
    }

    #[test]
    fn a_watcher_is_only_signalled_when_it_is_a_portlocker() {
        // This test process is not named portlocker.
        let of = |pid| Watcher {
            pid,
            beat: None,
            config: None,
            config_path: None,
        };
        assert!(!of(std::process::id()).ask_to_run());
        assert!(!of(std::process::id()).ask_to_reload());
        assert!(!of(1).ask_to_run());
        assert!(!of(0).ask_to_run());
    }
}
