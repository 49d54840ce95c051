//! Logging: an append-only log file with local timestamps, and stderr for
//! what cron should mail (warnings and errors unless told otherwise).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use simplelog::{
    ColorChoice, CombinedLogger, ConfigBuilder, LevelFilter, SharedLogger, TermLogger,
    TerminalMode, WriteLogger, format_description,
};

use crate::files;

/// How much goes to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Errors only.
    Quiet,
    /// Warnings and errors: a successful run prints nothing.
    Normal,
    /// Also what the run does.
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
        Verbosity::Verbose => LevelFilter::Info,
    };
    let mut loggers: Vec<Box<dyn SharedLogger>> = vec![TermLogger::new(
        stderr_level,
        config(false),
        TerminalMode::Stderr,
        ColorChoice::Never,
    )];
    let mut open_error = None;
    if let Some(path) = log_file {
        let file = files::open_no_follow(
            path,
            OpenOptions::new().append(true).create(true).mode(0o640),
        );
        match file {
            Ok(file) => loggers.push(WriteLogger::new(
                LevelFilter::Info,
                config(true),
                WholeLines::new(file),
            )),
            Err(error) => {
                open_error = Some(format!(
                    "cannot open log file {}: {error}; logging to stderr only",
                    path.display()
                ))
            }
        }
    }
    // Only fails if a logger is already set, as in tests that call init twice.
    let _ = CombinedLogger::init(loggers);
    if let Some(message) = open_error {
        log::warn!("{message}");
    }
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
