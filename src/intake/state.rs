//! portlocker's own state in `state_dir`: the run lock, what the owner asked
//! for each service, and the last good control file with the validators for
//! a conditional fetch. Every write replaces a whole file atomically, so a
//! run killed at any moment leaves the state as it was before or as it is
//! after; a file that is damaged anyway is told apart from an empty state.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::intake::fetch::Validators;
use crate::intake::intent::Starts;
use crate::sys::files::{Directory, is_root};

const STATE_FILE: &str = "state.toml";
/// Where a damaged state file is kept for the owner to look at.
const DAMAGED_FILE: &str = "state.toml.damaged";
/// The last line of every state file: a checksum of all before it, so a
/// truncated or damaged file is never taken for a shorter valid one.
const CHECK_PREFIX: &str = "# check ";
const LOCK_FILE: &str = "lock";
/// What messages call the directory.
const WHAT: &str = "state_dir";

/// Held for the whole of a run: an exclusive `flock` on `state_dir/lock`,
/// released by the kernel when the process ends, however it ends.
#[derive(Debug)]
pub struct RunLock {
    _file: fs::File,
}

/// Takes the run lock without waiting; `None` when another run holds it.
pub fn lock(state_dir: &Path) -> Result<Option<RunLock>> {
    let path = state_dir.join(LOCK_FILE);
    let file = reach(state_dir, true)?
        .open_or_create(LOCK_FILE, 0o600)
        .with_context(|| format!("cannot open the run lock {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            // When this run began, for `last_began`: a time, not data, so a
            // full disk keeps it too.
            let _ = file.set_modified(std::time::SystemTime::now());
            // What runs killed while writing left (the state names the
            // secret source): an hour old, no process is writing it.
            if let Ok(dir) = reach(state_dir, false) {
                let hour = std::time::Duration::from_secs(3600);
                for name in dir.sweep_temporaries(hour).unwrap_or_default() {
                    log::info!("removed {name}, left in state_dir by a run that was killed");
                }
            }
            Ok(Some(RunLock { _file: file }))
        }
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// When the last run that took the lock began (its time on the lock file);
/// None before any, or while a run holds it. Later than the last run the
/// state tells of, it tells of a run that could not save the state.
pub fn last_began(state_dir: &Path) -> Option<DateTime<FixedOffset>> {
    let file = reach(state_dir, false).ok()?.open_read(LOCK_FILE).ok()?;
    file.try_lock_shared().ok()?;
    let began = file.metadata().ok()?.modified().ok()?;
    Some(DateTime::<chrono::Utc>::from(began).fixed_offset())
}

/// Run as root, refuses a `state_dir` that someone other than root could
/// change — it, a directory above it, or a file or link in it that someone
/// else could have planted: whoever writes the state chooses the control
/// file a 304 enforces. A missing `state_dir` is fine; root creates it,
/// mode 700, through directories only root can change.
pub fn check_trust(state_dir: &Path) -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    match Directory::open(state_dir, WHAT, None) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error.into()),
        Ok(dir) => dir.check_entries(WHAT),
    }
}

/// The state directory, held by descriptor; with `create`, made if missing
/// (mode 700: the last good file holds the secret URL).
fn reach(state_dir: &Path, create: bool) -> io::Result<Directory> {
    Directory::open(state_dir, WHAT, create.then_some(0o700))
}

/// Everything portlocker remembers between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The last control file that passed validation.
    pub last_good: Option<LastGood>,
    /// What the owner asked for each service, as the lines in force from
    /// the last accepted file that named it (canonical form). A service
    /// missing here was never named.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub wanted: BTreeMap<String, Vec<String>>,
    /// When each open line in force was first applied, for `for` and `max_open`.
    #[serde(default, skip_serializing_if = "Starts::is_empty")]
    pub opens: Starts,
    /// The one backend (`iptables`, `nftables`) that holds portlocker's
    /// rules, as the last run to look into the other found: the other holds
    /// none. Unset (a state from before backends, or lost): a run looks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// With iptables, the chain that holds them, and whether ip6tables does
    /// too: a run looks into the old ones when the config names others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<bool>,
    /// When `portlocker reset` removed portlocker's rules, until a run
    /// enforces them again: `status` and the page then say nothing is enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<DateTime<FixedOffset>>,
    /// Where the last run that found them whole left portlocker's rules,
    /// and what they closed: a run that finds them gone says what was
    /// reachable, and since when at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_place: Option<InPlace>,
    /// The services whose rules the last run saw in portlocker's place and
    /// knew for its own (a service taken out of the config included, until
    /// its rules are gone): a rule of any other service there is another
    /// config's, on the same chain.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tagged: BTreeSet<String>,
    /// The ports of each service in `wanted`, as the config of the run that
    /// saved it had them (`22/tcp`): a service renamed in the config keeps
    /// what was asked of it under its new name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, String>,
    /// The services of the config the last run ran with, kept before its
    /// firewall work: a rule tagged for one is this config's own (drift,
    /// or a service since taken out), even when that run was killed before
    /// it could record what it left (`tagged`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub configured: BTreeSet<String>,
    /// Why the last run that fetched could not use what it fetched (a dead
    /// source, a bad file): a run that does not fetch (`--offline`, watch's
    /// repairs) still fails on it, so it never reads as cleared until a
    /// fetch clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intake_failure: Option<String>,
    /// A run found Docker here (its DOCKER-USER chain): later runs make
    /// the mirror where it forwards even before Docker starts (at boot), so
    /// what it publishes is closed from the start (`firewall/forward.rs`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub docker_seen: bool,
    /// How the last run ended.
    pub last_run: Option<LastRun>,
    /// What runs have told the owner already, so that it is not told again.
    #[serde(default, skip_serializing_if = "Told::is_empty")]
    pub told: Told,
}

/// What runs have told the owner, for `quiet::decide`: cron mails whatever
/// a run prints, so the same words every five minutes would bury the news.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Told {
    /// A fingerprint of the control file in force and of what the run that
    /// first saw it told about it (its warnings, an open that ended): runs
    /// that find the same print none of it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// The failure of the runs since the last good one, if the last failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failing>,
    /// The episode of wipes of portlocker's rules told last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wiped: Option<WipeEpisode>,
}

impl Told {
    pub fn is_empty(&self) -> bool {
        self.notes.is_none() && self.failure.is_none() && self.wiped.is_none()
    }
}

/// Wipes of portlocker's rules that came less than `notify.repeat_after`
/// apart: the first was told, the rest only logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipeEpisode {
    /// When the first was found.
    pub since: DateTime<FixedOffset>,
    /// When the latest was found.
    pub last: DateTime<FixedOffset>,
    /// How many were found.
    pub wipes: u64,
}

/// portlocker's rules as a run left them, whole, read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InPlace {
    /// When that run was.
    pub at: DateTime<FixedOffset>,
    /// The kernel's boot it was in: a reboot empties the firewall, and the
    /// boot unit closes it again before any interface is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
    /// Where they were (`iptables PORTLOCKER`, `nftables inet portlocker`).
    pub place: String,
    /// The families that held them (`IPv4`, `IPv6`).
    pub families: Vec<String>,
    /// The services they kept closed, wholly or for some sources.
    pub services: Vec<String>,
}

/// A series of failed runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failing {
    /// The last run's failure, as logged.
    pub text: String,
    /// When the first failed run of the series started.
    pub since: DateTime<FixedOffset>,
    /// When the failure was last printed on stderr.
    pub printed_at: DateTime<FixedOffset>,
    /// How many runs in a row have failed.
    pub runs: u64,
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
    /// The minisign signature it was accepted with, to check it again
    /// against the configured key whenever the kept copy is used; for a
    /// file that carried it, its `#minisig` lines without the prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The file itself, exactly as it passed validation; for a file that
    /// carried its signature, what was signed (the lines above it).
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
    /// The state file in `state_dir`.
    pub(crate) fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE)
    }

    /// Reads the state; a missing file is an empty state. A file that is
    /// damaged (unparsable, empty, truncated) or unreadable is moved aside
    /// and reported as `Loaded::Damaged`, never taken for an empty state.
    pub fn load(state_dir: &Path) -> Loaded {
        State::read(state_dir, true)
    }

    /// Reads the state for a look that changes nothing: a damaged file stays.
    pub fn peek(state_dir: &Path) -> Loaded {
        State::read(state_dir, false)
    }

    fn read(state_dir: &Path, move_damaged_aside: bool) -> Loaded {
        let path = State::path(state_dir);
        // Bytes, not text: a file that is not UTF-8 is damaged, and moved aside.
        let read = reach(state_dir, false).and_then(|dir| Ok((dir.read(STATE_FILE)?, dir)));
        let (text, dir) = match read {
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Loaded::Kept(State::default());
            }
            Err(error) => {
                return Loaded::Damaged(format!("cannot read {}: {error}", path.display()));
            }
        };
        match State::decode(&text) {
            Ok((state, legacy)) if legacy => Loaded::Legacy(state),
            Ok((state, _)) => Loaded::Kept(state),
            Err(reason) if !move_damaged_aside => {
                Loaded::Damaged(format!("{} is damaged ({reason})", path.display()))
            }
            Err(reason) => {
                let aside = state_dir.join(DAMAGED_FILE);
                let kept = match dir.rename(STATE_FILE, DAMAGED_FILE) {
                    Ok(()) => format!("kept aside as {}", aside.display()),
                    Err(error) => format!("could not be moved aside ({error})"),
                };
                Loaded::Damaged(format!("{} is damaged ({reason}); {kept}", path.display()))
            }
        }
    }

    /// Decodes a state file; true when it is from before the checksum line.
    fn decode(bytes: &[u8]) -> Result<(State, bool), String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
        let body_end = text.trim_end_matches('\n').rfind('\n').map_or(0, |i| i + 1);
        let (body, last) = text.split_at(body_end);
        match last.strip_prefix(CHECK_PREFIX) {
            Some(check) => {
                if check.trim_end() != checksum(body) {
                    return Err("its checksum does not match: truncated or changed".into());
                }
                let state = toml::from_str(body).map_err(|error| error.message().to_owned())?;
                Ok((state, false))
            }
            None => {
                // Written by a version before the checksum: whole only if it
                // parses and ends with the last run, which every run writes last.
                let state: State =
                    toml::from_str(text).map_err(|error| error.message().to_owned())?;
                if state.last_run.is_none() || !state.wanted.is_empty() {
                    return Err("it has no checksum line: truncated?".into());
                }
                Ok((state, true))
            }
        }
    }

    /// Replaces the state file as a whole, then keeps room beside it for a
    /// next state whose control file is up to `max_file` bytes. On a full
    /// disk that room is given up to it only `for_a_close` (a save that may
    /// keep a close): given up to a run that changed nothing, it would be
    /// gone when the owner closes something.
    pub fn save(&self, state_dir: &Path, max_file: u64, for_a_close: bool) -> Result<Saved> {
        let mut text = toml::to_string(self).context("cannot encode the state")?;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let check = checksum(&text);
        text.push_str(&format!("{CHECK_PREFIX}{check}\n"));
        let cannot = || format!("cannot write {}", State::path(state_dir).display());
        let dir = reach(state_dir, true).with_context(cannot)?;
        let write = || dir.replace(STATE_FILE, text.as_bytes(), 0o600);
        match write() {
            Ok(()) => {}
            Err(error)
                if error.raw_os_error() == Some(libc::ENOSPC)
                    && for_a_close
                    && dir.remove(RESERVE_FILE).with_context(cannot)? =>
            {
                write().with_context(cannot)?;
                return Ok(Saved::FromReserve);
            }
            Err(error) => return Err(error).with_context(cannot),
        }
        match dir.reserve(RESERVE_FILE, reserve_for(text.len(), max_file)) {
            Ok(()) => Ok(Saved::Plainly),
            Err(error) => Ok(Saved::NothingKept(error.to_string())),
        }
    }
}

/// Space kept beside the state for the state alone: a full disk (a runaway
/// log, another account's files) must not keep a close from the state, or a
/// reboot would restore the state from before it.
pub const RESERVE_FILE: &str = "reserve";

/// The space kept for the next state after one of `bytes`: room for it with
/// a control file of `max_file` bytes more, and 8 KiB besides.
fn reserve_for(bytes: usize, max_file: u64) -> u64 {
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    (bytes.saturating_add(max_file).saturating_add(8192)).next_multiple_of(4096)
}

/// Whether `after` may close what `before` leaves open: a `close` line
/// added, or an open line taken away (an open that ends, a source).
pub fn may_close(before: &State, after: &State) -> bool {
    let closing = |line: &String| line.starts_with("close ");
    let no_lines = Vec::new();
    let services = before.wanted.keys().chain(after.wanted.keys());
    services.into_iter().any(|service| {
        let old = before.wanted.get(service).unwrap_or(&no_lines);
        let new = after.wanted.get(service).unwrap_or(&no_lines);
        let added = new.iter().filter(|line| !old.contains(line));
        let taken = old.iter().filter(|line| !new.contains(line));
        added.clone().any(closing) || taken.clone().any(|line| !closing(line))
    })
}

/// How a save went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    /// Saved, with the space for the next save kept.
    Plainly,
    /// Saved only in the space kept for it: the disk is full.
    FromReserve,
    /// Saved, but the space for the next save could not be kept (why).
    NothingKept(String),
}

/// What reading the state found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// The state as last saved (empty when there was none).
    Kept(State),
    /// A whole state file from a version that kept no wanted state.
    Legacy(State),
    /// Why the state could not be used; the damaged file was moved aside.
    Damaged(String),
}

/// FNV-1a, 64 bits, as hex: enough to tell a damaged file, no crate needed.
pub(crate) fn checksum(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
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
            signature: None,
            body: "close ssh\n# \"quoted\" \\ and 'single'\n".into(),
        }
    }

    #[test]
    fn state_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        assert_eq!(State::load(&state_dir), Loaded::Kept(State::default()));
        let mut opens = Starts::new();
        opens.insert("open ssh for 2h".into(), last_good().fetched_at);
        let state = State {
            last_good: Some(last_good()),
            wanted: [("ssh".to_owned(), vec!["open ssh for 2h".to_owned()])].into(),
            opens,
            backend: Some("iptables".into()),
            chain: Some("PORTLOCKER".into()),
            ipv6: Some(true),
            reset_at: Some(last_good().fetched_at),
            in_place: Some(InPlace {
                at: last_good().fetched_at,
                boot: Some("5e1f…".into()),
                place: "iptables PORTLOCKER".into(),
                families: vec!["IPv4".into(), "IPv6".into()],
                services: vec!["ssh".into()],
            }),
            tagged: ["ssh".to_owned()].into(),
            ports: [("ssh".to_owned(), "22/tcp".to_owned())].into(),
            configured: ["ssh".to_owned()].into(),
            intake_failure: Some("the server answered 404 Not Found".into()),
            docker_seen: true,
            last_run: Some(LastRun {
                at: last_good().fetched_at,
                ok: false,
                failure: Some("the server answered 404 Not Found".into()),
                duration_ms: 12,
            }),
            told: Told {
                notes: Some("0123456789abcdef".into()),
                failure: Some(Failing {
                    text: "the server answered 404 Not Found".into(),
                    since: last_good().fetched_at,
                    printed_at: last_good().fetched_at,
                    runs: 3,
                }),
                wiped: Some(WipeEpisode {
                    since: last_good().fetched_at,
                    last: last_good().fetched_at,
                    wipes: 2,
                }),
            },
        };
        state.save(&state_dir, 65536, true).unwrap();
        assert_eq!(State::load(&state_dir), Loaded::Kept(state));
        assert_eq!(mode_of(&state_dir).unwrap(), 0o700);
        assert_eq!(mode_of(&State::path(&state_dir)).unwrap(), 0o600);
    }

    #[test]
    fn a_damaged_state_file_is_never_taken_for_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let state = State {
            last_good: Some(last_good()),
            wanted: [("ssh".to_owned(), vec!["close ssh".to_owned()])].into(),
            ..State::default()
        };
        state.save(dir.path(), 65536, true).unwrap();
        let whole = fs::read_to_string(State::path(dir.path())).unwrap();
        // Cut at every line boundary and in the middle of lines, and empty.
        let mut cuts: Vec<usize> = whole.match_indices('\n').map(|(i, _)| i + 1).collect();
        cuts.extend([0, 1, whole.len() / 2, whole.len() - 3]);
        for cut in cuts.into_iter().filter(|&cut| cut < whole.len()) {
            fs::write(State::path(dir.path()), &whole[..cut]).unwrap();
            match State::load(dir.path()) {
                Loaded::Damaged(reason) => {
                    assert!(reason.contains("state.toml is damaged"), "{reason}");
                    assert!(reason.contains("state.toml.damaged"), "{reason}");
                }
                other => panic!("a file cut at {cut} was taken as {other:?}"),
            }
            assert_eq!(
                fs::read_to_string(dir.path().join(DAMAGED_FILE)).unwrap(),
                &whole[..cut]
            );
        }
        fs::write(
            State::path(dir.path()),
            whole.replace("close ssh", "open ssh"),
        )
        .unwrap();
        assert!(matches!(State::load(dir.path()), Loaded::Damaged(_)));
    }

    #[test]
    fn a_state_file_that_is_not_text_is_damaged_and_moved_aside_too() {
        let dir = tempfile::tempdir().unwrap();
        State {
            last_good: Some(last_good()),
            ..State::default()
        }
        .save(dir.path(), 65536, true)
        .unwrap();
        let mut bytes = fs::read(State::path(dir.path())).unwrap();
        bytes[3] = 0xff;
        fs::write(State::path(dir.path()), &bytes).unwrap();
        match State::load(dir.path()) {
            Loaded::Damaged(reason) => {
                assert!(reason.contains("is damaged (not UTF-8 text)"), "{reason}");
                assert!(reason.contains("state.toml.damaged"), "{reason}");
            }
            other => panic!("a file that is not text was taken as {other:?}"),
        }
        assert_eq!(fs::read(dir.path().join(DAMAGED_FILE)).unwrap(), bytes);
        assert!(!State::path(dir.path()).exists());
    }

    #[test]
    fn a_whole_state_file_of_the_first_version_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let old = "[last_good]\nsource = \"-\"\nfetched_at = \"2026-11-25T14:05:00+01:00\"\nbody = \"close ssh\\n\"\n\n\
                   [last_run]\nat = \"2026-11-25T14:05:00+01:00\"\nok = true\nduration_ms = 3\n";
        fs::write(State::path(dir.path()), old).unwrap();
        let Loaded::Legacy(state) = State::load(dir.path()) else {
            panic!("not read as a legacy state");
        };
        assert_eq!(state.last_good.unwrap().body, "close ssh\n");
        // The same file cut before its last run is damaged.
        fs::write(
            State::path(dir.path()),
            &old[..old.find("[last_run]").unwrap()],
        )
        .unwrap();
        assert!(matches!(State::load(dir.path()), Loaded::Damaged(_)));
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
        .save(&planted, 65536, true)
        .unwrap();
        let state_dir = dir.path().join("state");
        fs::create_dir(&state_dir).unwrap();
        symlink(State::path(&planted), State::path(&state_dir)).unwrap();
        let Loaded::Damaged(error) = State::peek(&state_dir) else {
            panic!("a linked state file was read");
        };
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
        State::default().save(&state_dir, 65536, true).unwrap();
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

    #[test]
    fn only_a_change_that_may_close_may_take_the_room_kept_for_it() {
        let state = |lines: &[(&str, &[&str])]| State {
            wanted: (lines.iter())
                .map(|(service, lines)| {
                    let lines = lines.iter().map(|line| line.to_string()).collect();
                    (service.to_string(), lines)
                })
                .collect(),
            ..State::default()
        };
        let before = state(&[
            ("ssh", &["open ssh from 192.0.2.0/24"]),
            ("web", &["close web"]),
        ]);
        assert!(!may_close(&before, &before), "nothing changed");
        let more = state(&[
            (
                "ssh",
                &[
                    "open ssh from 192.0.2.0/24",
                    "open ssh from 198.51.100.7/32",
                ],
            ),
            ("web", &["close web"]),
        ]);
        assert!(!may_close(&before, &more), "a source added");
        let opened = state(&[
            ("ssh", &["open ssh from 192.0.2.0/24"]),
            ("web", &["open web"]),
        ]);
        assert!(!may_close(&before, &opened), "web opened");
        assert!(may_close(&more, &before), "a source taken away");
        assert!(may_close(&opened, &before), "web closed");
        let vpn = state(&[
            ("ssh", &["open ssh from 192.0.2.0/24"]),
            ("web", &["close web"]),
            ("vpn", &["close vpn"]),
        ]);
        assert!(may_close(&before, &vpn), "a service closed first");
    }

    /// A run killed while writing leaves `.state.toml.XXXXXXXXXXXX.tmp`
    /// (it names the secret source): the next run to take the lock removes
    /// one an hour old, never a young one another process may be writing,
    /// nor a file of any other name.
    #[test]
    fn a_run_sweeps_what_killed_runs_left() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        State::default().save(&state_dir, 65536, true).unwrap();
        let old = state_dir.join(".state.toml.0123456789ab.tmp");
        let young = state_dir.join(".state.toml.ba9876543210.tmp");
        let other = state_dir.join(".state.toml.notrandom.tmp");
        for path in [&old, &young, &other] {
            fs::write(path, "source = \"https://example.org/secret\"\n").unwrap();
        }
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        for path in [&old, &other] {
            let file = fs::File::options().write(true).open(path).unwrap();
            file.set_modified(two_hours_ago).unwrap();
        }
        drop(lock(&state_dir).unwrap().unwrap());
        assert!(!old.exists(), "an hour-old leftover stayed");
        assert!(young.exists(), "a young temporary file went");
        assert!(other.exists(), "a file of another name went");
    }
}
