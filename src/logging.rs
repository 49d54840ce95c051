//! Logging: an append-only log file with local timestamps, and stderr for
//! what cron should mail (warnings and errors unless told otherwise).

use std::fs::OpenOptions;
use std::io::LineWriter;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use simplelog::{
    ColorChoice, CombinedLogger, ConfigBuilder, LevelFilter, SharedLogger, TermLogger,
    TerminalMode, WriteLogger, format_description,
};

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
/// never truncated). A log file that cannot be opened is reported on
/// stderr and the run goes on: the firewall matters more than the log.
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
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path);
        match file {
            // LineWriter hands each line to the kernel in one write, and
            // O_APPEND keeps a line whole even if the run is killed.
            Ok(file) => loggers.push(WriteLogger::new(
                LevelFilter::Info,
                config(true),
                LineWriter::new(file),
            )),
            Err(error) => {
                open_error = Some(format!("cannot open log file {}: {error}", path.display()))
            }
        }
    }
    // Only fails if a logger is already set, as in tests that call init twice.
    let _ = CombinedLogger::init(loggers);
    if let Some(message) = open_error {
        log::warn!("{message}");
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
