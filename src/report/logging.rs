//! Logging: an append-only log file with local timestamps, and stderr for
//! what cron should mail (warnings and errors unless told otherwise).
//! During a run, what it says is held back until `release`, which tells
//! it as `quiet::decide` says: cron mails what is new, not the same words
//! every five minutes. A firewall change reaches the log at once, after
//! what the run said before it (the fetch, the file's warnings).

use std::io::{self, Write};
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError, RwLock};

use log::{Level, Log, Metadata, Record};
use simplelog::{
    ColorChoice, ConfigBuilder, LevelFilter, SharedLogger, TermLogger, TerminalMode, WriteLogger,
    format_description,
};

use crate::report::quiet::Telling;
use crate::sys::files;

/// The target of a run's summary line: it reaches the log whatever
/// `release` is told (on stderr, a failure's only when told).
pub const SUMMARY: &str = "portlocker::summary";

/// The module whose info lines go to the log at once, even during a run:
/// the firewall changes made, which a run killed before its end must not lose.
const AT_ONCE: &str = "portlocker::firewall";

/// The log's mode when portlocker creates it; dist/portlocker.logrotate
/// creates it the same after a rotation.
pub const LOG_MODE: u32 = 0o640;

/// How much goes to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Errors only.
    Quiet,
    /// Warnings and errors: a successful run prints nothing.
    Normal,
    /// Also what the run does, and whatever a run would keep quiet.
    Verbose,
}

/// Sets up logging to stderr and, when given, to `log_file` (appended to,
/// never truncated). A log file that cannot be opened, or that is a
/// symbolic link (never followed: another account may have planted it), is
/// reported on stderr and the run goes on: the firewall matters more than
/// the log.
pub fn init(verbosity: Verbosity, log_file: Option<&Path>) {
    let stderr_level = match verbosity {
        Verbosity::Quiet => LevelFilter::Error,
        Verbosity::Normal => LevelFilter::Warn,
        Verbosity::Verbose => LevelFilter::Debug,
    };
    let stderr: Box<dyn SharedLogger> = TermLogger::new(
        stderr_level,
        config(false),
        TerminalMode::Stderr,
        ColorChoice::Never,
    );
    let mut file: Option<Box<dyn SharedLogger>> = None;
    let mut identity = None;
    let mut open_error = None;
    if let Some(path) = log_file {
        match open_log(path) {
            Ok((opened, id)) => (file, identity) = (Some(opened), Some(id)),
            Err(error) => {
                open_error = Some(format!(
                    "cannot open log file {}: {error}; logging to stderr only",
                    path.display()
                ))
            }
        }
    }
    let max_level = match file {
        Some(_) => stderr_level.max(LevelFilter::Info),
        None => stderr_level,
    };
    let gate: &'static Gate = Box::leak(Box::new(Gate {
        stderr,
        file: RwLock::new(file),
        path: log_file.map(Path::to_path_buf),
        identity: Mutex::new(identity),
        verbose: verbosity == Verbosity::Verbose,
    }));
    // Only fails if a logger is already set, as in tests that call init twice.
    if GATE.set(gate).is_ok() && log::set_logger(gate).is_ok() {
        log::set_max_level(max_level);
    }
    if let Some(message) = open_error {
        log::warn!("{message}");
    }
}

/// Opens the log file at `path` for appending; the logger, and the file's
/// (device, inode).
fn open_log(path: &Path) -> io::Result<(Box<dyn SharedLogger>, (u64, u64))> {
    use std::os::unix::fs::MetadataExt;
    let opened = files::open_append(path, LOG_MODE)?;
    let meta = opened.metadata()?;
    let logger: Box<dyn SharedLogger> =
        WriteLogger::new(LevelFilter::Info, config(true), WholeLines::new(opened));
    Ok((logger, (meta.dev(), meta.ino())))
}

/// Opens the log file again when it is no longer the one being written
/// (logrotate moved it away): `watch`, which lives for days, calls it
/// before each run. A file that cannot be opened keeps the old one.
pub fn reopen_if_moved() {
    use std::os::unix::fs::MetadataExt;
    let Some(gate) = GATE.get() else { return };
    let Some(path) = &gate.path else { return };
    let now = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    let mut identity = gate.identity.lock().unwrap_or_else(PoisonError::into_inner);
    if now.is_some() && now == *identity {
        return;
    }
    if let Ok((opened, id)) = open_log(path) {
        *gate.file.write().unwrap_or_else(PoisonError::into_inner) = Some(opened);
        *identity = Some(id);
    }
}

/// The logger: stderr and the log file, with the held records of a run.
struct Gate {
    stderr: Box<dyn SharedLogger>,
    file: RwLock<Option<Box<dyn SharedLogger>>>,
    /// Where the log file is, and the (device, inode) of the one open.
    path: Option<std::path::PathBuf>,
    identity: Mutex<Option<(u64, u64)>>,
    /// With -v stderr gets every record as it comes, held or not.
    verbose: bool,
}

static GATE: OnceLock<&'static Gate> = OnceLock::new();

/// The records of the run being held, in order; None when none is.
static HELD: Mutex<Option<Vec<Held>>> = Mutex::new(None);

/// A record held back until the run ends.
#[derive(Debug, Clone)]
struct Held {
    level: Level,
    target: String,
    text: String,
    /// Written to the log already, before a firewall change it led to.
    logged: bool,
}

impl Gate {
    fn to_file(&self, level: Level, target: &str, text: &str) {
        if let Some(file) = self
            .file
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            emit(file.as_ref(), level, target, text);
        }
    }

    /// Writes to the log the held records not yet there, but the summary.
    fn log_held_first(&self, records: &mut [Held]) {
        for record in records
            .iter_mut()
            .filter(|record| !record.logged && record.target != SUMMARY)
        {
            self.to_file(record.level, &record.target, &record.text);
            record.logged = true;
        }
    }
}

/// Hands one record to `logger`, which applies its own level and filter.
fn emit(logger: &dyn Log, level: Level, target: &str, text: &str) {
    logger.log(
        &Record::builder()
            .level(level)
            .target(target)
            .args(format_args!("{text}"))
            .build(),
    );
}

fn held() -> std::sync::MutexGuard<'static, Option<Vec<Held>>> {
    HELD.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Log for Gate {
    fn enabled(&self, metadata: &Metadata) -> bool {
        let file = self.file.read().unwrap_or_else(PoisonError::into_inner);
        self.stderr.enabled(metadata) || file.as_ref().is_some_and(|f| f.enabled(metadata))
    }

    fn log(&self, record: &Record) {
        let target = record.target();
        if !target.starts_with("portlocker") {
            return;
        }
        let at_once = record.level() > Level::Info
            || (record.level() == Level::Info && target.starts_with(AT_ONCE));
        if let Some(records) = held().as_mut() {
            if !at_once {
                records.push(Held {
                    level: record.level(),
                    target: target.to_owned(),
                    text: record.args().to_string(),
                    logged: false,
                });
                if self.verbose {
                    self.stderr.log(record);
                }
                return;
            }
            if record.level() == Level::Info {
                // A change is news, so the run tells its notes (`quiet::decide`):
                // what led to it (a fetch, a file's warnings) goes first.
                self.log_held_first(records);
            }
        }
        self.stderr.log(record);
        if let Some(file) = self
            .file
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            file.log(record);
        }
    }

    fn flush(&self) {
        self.stderr.flush();
        if let Some(file) = self
            .file
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            file.flush();
        }
    }
}

/// Holds back what is logged from now on, to stderr and to the log file
/// alike (but the firewall changes, which reach the log at once), until
/// `release`.
pub fn hold() {
    *held() = Some(Vec::new());
}

/// Ends holding and drops what was held: a look that changes nothing
/// (watch's, between runs) tells nothing of what it read.
pub fn discard() {
    held().take();
}

/// The notes held so far: the info and warning lines of the run, but its
/// summary line; what `quiet::fingerprint` is made of.
pub fn held_notes() -> Vec<String> {
    held()
        .iter()
        .flatten()
        .filter(|record| record.level >= Level::Warn && record.level <= Level::Info)
        .filter(|record| record.target != SUMMARY)
        .map(|record| record.text.clone())
        .collect()
}

/// Ends holding and tells what was held as `telling` says: errors and the
/// summary line reach the log always, stderr only for a failure told; the
/// notes reach both only when told. `telling.extra` comes before the
/// summary line.
pub fn release(telling: &Telling) {
    let Some(records) = held().take() else {
        return;
    };
    let Some(gate) = GATE.get() else {
        return;
    };
    let (summary, notes): (Vec<Held>, Vec<Held>) = records
        .into_iter()
        .partition(|record| record.target == SUMMARY);
    let tell = |record: &Held| {
        let (logged, printed) = destinations(record.level, &record.target, telling, gate.verbose);
        if logged && !record.logged {
            gate.to_file(record.level, &record.target, &record.text);
        }
        if printed {
            emit(
                gate.stderr.as_ref(),
                record.level,
                &record.target,
                &record.text,
            );
        }
    };
    notes.iter().for_each(tell);
    for line in &telling.extra {
        gate.to_file(Level::Warn, "portlocker::quiet", line);
        emit(gate.stderr.as_ref(), Level::Warn, "portlocker::quiet", line);
    }
    summary.iter().for_each(tell);
    gate.flush();
}

/// Where a held record goes: (the log file, stderr). Errors and the
/// summary line are logged always; the notes (info and warnings) only when
/// told. On stderr an error only with a failure told, a warning only with
/// the notes told; with -v it is there already.
fn destinations(level: Level, target: &str, telling: &Telling, verbose: bool) -> (bool, bool) {
    let logged = level == Level::Error || target == SUMMARY || telling.notes;
    let printed = !verbose
        && match level {
            Level::Error => telling.failure,
            Level::Warn => telling.notes,
            _ => false,
        };
    (logged, printed)
}

/// Hands the file whole lines only, each in one `write` however long (with
/// any other lines that ended in the same call). With O_APPEND one write of
/// a regular file lands whole at the end, so lines of two processes never
/// interleave and a killed run leaves no half line. (`LineWriter` splits a
/// line that arrives in pieces longer than its 1 KiB buffer.)
struct WholeLines<W: Write> {
    inner: W,
    /// Bytes of the line not yet ended.
    pending: Vec<u8>,
}

impl<W: Write> WholeLines<W> {
    fn new(inner: W) -> WholeLines<W> {
        WholeLines {
            inner,
            pending: Vec::new(),
        }
    }

    /// Writes the first `len` pending bytes, then forgets them, written or
    /// not: a log that cannot be written must not grow in memory.
    fn emit(&mut self, len: usize) -> io::Result<()> {
        let mut written = 0;
        let result = loop {
            if written == len {
                break Ok(());
            }
            match self.inner.write(&self.pending[written..len]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                // Short only on a full disk or a signal; the rest follows.
                Ok(n) => written += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => break Err(error),
            }
        };
        self.pending.drain(..len);
        result
    }
}

impl<W: Write> Write for WholeLines<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        if let Some(last) = bytes.iter().rposition(|&b| b == b'\n') {
            let end = self.pending.len() - bytes.len() + last + 1;
            self.emit(end)?;
        }
        Ok(bytes.len())
    }

    /// Flushes the lines written so far; a line not yet ended waits for its end.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Drop for WholeLines<W> {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let _ = self.emit(self.pending.len());
        }
    }
}

fn config(with_time: bool) -> simplelog::Config {
    let mut builder = ConfigBuilder::new();
    builder
        .add_filter_allow_str("portlocker")
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off);
    if with_time {
        builder
            .set_time_level(LevelFilter::Error)
            .set_time_format_custom(format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ));
        // Falls back to UTC when the local offset cannot be determined.
        let _ = builder.set_time_offset_to_local();
    } else {
        builder.set_time_level(LevelFilter::Off);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records every `write` call it gets, accepting at most `limit` bytes each.
    #[derive(Clone)]
    struct Recorder {
        calls: Arc<Mutex<Vec<Vec<u8>>>>,
        limit: usize,
    }

    impl Recorder {
        fn new(limit: usize) -> Recorder {
            Recorder {
                calls: Arc::default(),
                limit,
            }
        }

        fn calls(&self) -> Vec<Vec<u8>> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Write for Recorder {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let n = bytes.len().min(self.limit);
            self.calls.lock().unwrap().push(bytes[..n].to_vec());
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn held_records_go_where_the_telling_says() {
        let telling = |notes, failure| Telling {
            notes,
            failure,
            extra: Vec::new(),
            series: None,
        };
        let note = "portlocker::intake";
        // (level, target, notes told, failure told, verbose) -> (logged, printed)
        let cases = [
            (Level::Warn, note, false, false, false, (false, false)),
            (Level::Info, note, false, false, false, (false, false)),
            (Level::Warn, note, true, false, false, (true, true)),
            (Level::Info, note, true, false, false, (true, false)),
            (Level::Error, note, false, false, false, (true, false)),
            (Level::Error, note, false, true, false, (true, true)),
            (Level::Error, SUMMARY, false, false, false, (true, false)),
            (Level::Error, SUMMARY, false, true, false, (true, true)),
            (Level::Info, SUMMARY, false, false, false, (true, false)),
            (Level::Info, SUMMARY, true, true, false, (true, false)),
            // With -v stderr had it as it came.
            (Level::Warn, note, true, true, true, (true, false)),
            (Level::Error, SUMMARY, false, true, true, (true, false)),
        ];
        for (level, target, notes, failure, verbose, expected) in cases {
            assert_eq!(
                destinations(level, target, &telling(notes, failure), verbose),
                expected,
                "{level} {target} notes={notes} failure={failure} verbose={verbose}"
            );
        }
    }

    #[test]
    fn a_line_written_in_pieces_reaches_the_file_in_one_write() {
        let recorder = Recorder::new(usize::MAX);
        let mut lines = WholeLines::new(recorder.clone());
        write!(lines, "2026-11-25 14:05:00 ").unwrap();
        write!(lines, "[INFO] ").unwrap();
        lines.flush().unwrap();
        assert!(recorder.calls().is_empty(), "half a line was written");
        writeln!(lines, "run ok").unwrap();
        writeln!(lines, "second").unwrap();
        assert_eq!(
            recorder.calls(),
            [
                b"2026-11-25 14:05:00 [INFO] run ok\n".to_vec(),
                b"second\n".to_vec()
            ]
        );
    }

    #[test]
    fn a_5000_byte_line_is_one_write() {
        let recorder = Recorder::new(usize::MAX);
        let mut lines = WholeLines::new(recorder.clone());
        // In pieces, as simplelog writes a record: `LineWriter` made three writes of this.
        write!(lines, "[WARN] ").unwrap();
        write!(lines, "{}", "x".repeat(5000)).unwrap();
        writeln!(lines).unwrap();
        let calls = recorder.calls();
        assert_eq!(calls.len(), 1, "{} writes", calls.len());
        assert_eq!(calls[0].len(), 5008);
    }

    #[test]
    fn a_long_record_through_simplelog_is_one_write() {
        use log::{Level, Log, Record};
        let recorder = Recorder::new(usize::MAX);
        let logger = WriteLogger::new(
            LevelFilter::Info,
            config(true),
            WholeLines::new(recorder.clone()),
        );
        let long = "y".repeat(5000);
        logger.log(
            &Record::builder()
                .level(Level::Warn)
                .target("portlocker::app")
                .args(format_args!("status page not updated: {long}"))
                .build(),
        );
        logger.flush();
        let calls = recorder.calls();
        assert_eq!(calls.len(), 1, "{} writes", calls.len());
        let line = String::from_utf8(calls[0].clone()).unwrap();
        assert!(
            line.contains("[WARN] status page not updated: yyy"),
            "{line}"
        );
        assert!(line.ends_with(&format!("{long}\n")));
    }

    #[test]
    fn a_short_write_goes_on_with_the_rest() {
        let recorder = Recorder::new(7);
        let mut lines = WholeLines::new(recorder.clone());
        writeln!(lines, "a line longer than seven bytes").unwrap();
        let calls = recorder.calls();
        assert!(calls.len() > 1);
        assert_eq!(calls.concat(), b"a line longer than seven bytes\n");
    }
}
