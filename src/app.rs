//! What each command does, step by step: the table of contents of portlocker.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use chrono::Local;
use serde::Serialize;

use crate::check::{self, Severity};
use crate::cli::{Cli, Command as Subcommand};
use crate::config::{Config, ConfigError};
pub use crate::exit::Exit;
use crate::firewall::leftovers;
use crate::firewall::model::Holdings;
use crate::firewall::plan;
use crate::firewall::ruleset::Host;
use crate::firewall::{self};
use crate::intake;
use crate::intake::intent::{self, Want};
use crate::intake::source::Source;
use crate::intake::state::{self, Loaded, RunLock, State};
use crate::report::logging::{self, Verbosity};
use crate::report::status::{self, Freshness, LastRunKnown, rfc3339_text};
use crate::run::{
    NEEDS_ROOT, publish, report, resolve, run_locked, sources_seen, summarise_errors, wait_jitter,
};
use crate::sys::runner::{CommandError, SystemRunner};

/// Runs the command line and tells how it ended. Errors are reported here.
pub fn main(cli: Cli) -> Exit {
    // reqwest is built without a default crypto provider: ring, not aws-lc,
    // keeps every run fast. Fails only if one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match dispatch(&cli) {
        Ok(exit) => exit,
        Err(error) if broken_pipe(&error) => {
            // The reader went away (`portlocker status | head`): nothing to report.
            Exit::Ok
        }
        Err(error) => {
            let usage = error.downcast_ref::<ConfigError>().is_some();
            if log::log_enabled!(log::Level::Error) {
                log::error!("{error:#}");
            } else {
                eprintln!("portlocker: {error:#}");
            }
            if usage { Exit::Usage } else { Exit::Failed }
        }
    }
}

fn broken_pipe(error: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    error.chain().any(|cause| {
        let io = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind);
        let json = cause
            .downcast_ref::<serde_json::Error>()
            .and_then(serde_json::Error::io_error_kind);
        io == Some(BrokenPipe) || json == Some(BrokenPipe)
    })
}

fn dispatch(cli: &Cli) -> Result<Exit> {
    let config = load_config(cli)?;
    let verbosity = if cli.global.quiet {
        Verbosity::Quiet
    } else if cli.global.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    match cli.command {
        None if cli.dry_run => {
            logging::init(verbosity, None);
            dry_run(&config, cli.offline)
        }
        None => {
            logging::init(verbosity, Some(&config.log_file));
            run(&config, cli.offline)
        }
        Some(Subcommand::Reset) => {
            logging::init(verbosity, Some(&config.log_file));
            reset(&config)
        }
        Some(Subcommand::Check { fetch }) => {
            logging::init(verbosity, None);
            check(cli, &config, fetch)
        }
        Some(Subcommand::Status { json }) => {
            logging::init(verbosity, None);
            show_status(&config, json)
        }
    }
}

/// The config, with `--source` and `--jitter` applied over it.
fn load_config(cli: &Cli) -> Result<Config> {
    let mut config = Config::load(&cli.global.config)?;
    if let Some(seconds) = cli.jitter {
        config.fetch.jitter = Duration::from_secs(seconds);
    }
    if let Some(text) = &cli.global.source {
        config.source = Source::parse(text)
            .context("--source")
            .map_err(ConfigError)?;
    }
    Ok(config)
}

/// The state as it is, for a look that changes nothing (empty if
/// unreadable), and whether it was lost. Run as root, a state directory
/// another account could change is refused.
fn peek_state(config: &Config) -> Result<(State, bool)> {
    state::check_trust(&config.state_dir).map_err(ConfigError)?;
    Ok(match State::peek(&config.state_dir) {
        Loaded::Kept(state) => (state, false),
        Loaded::Legacy(mut state) => {
            intake::migrate(config, &mut state);
            (state, false)
        }
        Loaded::Damaged(_) => (State::default(), true),
    })
}

/// Takes the run lock, or says why this run must stop without changing
/// anything. Run as root, first refuses a state directory another account
/// could change (a `ConfigError`: exit 2).
fn lock(config: &Config) -> Result<Option<RunLock>> {
    state::check_trust(&config.state_dir).map_err(ConfigError)?;
    let lock = state::lock(&config.state_dir)?;
    if lock.is_none() {
        log::warn!(
            "another portlocker run holds the lock in {}; this run changed nothing",
            config.state_dir.display()
        );
    }
    Ok(lock)
}

/// One cron run: fetch, validate, reconcile, log, status page, metrics.
fn run(config: &Config, offline: bool) -> Result<Exit> {
    if !offline {
        wait_jitter(config.fetch.jitter);
    }
    let Some(_lock) = lock(config)? else {
        return Ok(Exit::Busy);
    };
    let run_at = Local::now().fixed_offset();
    Ok(run_locked(
        config,
        offline,
        SystemRunner::new(config),
        run_at,
    ))
}

/// Removes everything portlocker put into the firewall.
fn reset(config: &Config) -> Result<Exit> {
    let Some(_lock) = lock(config)? else {
        return Ok(Exit::Busy);
    };
    let mut backend = firewall::backend_for(config, SystemRunner::new(config));
    // A configured backend that cannot run still leaves the rest to clear.
    let (reset, broken) = match backend.preflight() {
        Ok(()) => (backend.reset(), None),
        Err(reason) => (firewall::Reset::default(), Some(reason)),
    };
    if reset.errors.iter().any(CommandError::needs_root) {
        return Err(anyhow!("{NEEDS_ROOT}; nothing was changed"));
    }
    drop(backend);
    // And what portlocker left where the config no longer puts its rules.
    let (state, _) = peek_state(config)?;
    let places = leftovers::Elsewhere::everywhere(config, &state);
    let elsewhere = leftovers::sweep(&places, SystemRunner::new(config));
    publish_after_reset(config, &state);
    let mut out = std::io::stdout().lock();
    for line in reset.said.iter().chain(&elsewhere.removed) {
        writeln!(out, "{line}")?;
    }
    for error in &reset.errors {
        log::error!("{error}");
    }
    for problem in &elsewhere.problems {
        log::error!("could not remove portlocker's rules left elsewhere: {problem}");
    }
    if let Some(reason) = broken {
        return Err(match elsewhere.removed.is_empty() {
            true => anyhow!("{reason}; nothing was changed"),
            false => anyhow!("{reason}; only what portlocker left elsewhere was removed"),
        });
    }
    let failure = summarise_errors(&reset.errors).or_else(|| {
        (!elsewhere.clean()).then(|| "what portlocker left elsewhere could not be removed".into())
    });
    if let Some(failure) = failure {
        log::error!("reset failed: {failure}");
        return Ok(Exit::Failed);
    }
    if reset.changes + elsewhere.removed.len() == 0 {
        writeln!(
            out,
            "nothing to remove: the firewall holds nothing of portlocker's"
        )?;
    }
    log::info!("reset: {} firewall changes", reset.changes);
    Ok(Exit::Ok)
}

/// The page and the metrics after `reset`, read from the firewall: they
/// said closed for what reset has just opened.
fn publish_after_reset(config: &Config, state: &State) {
    if config.status_file.is_none() && config.metrics_file.is_none() {
        return;
    }
    let now = Local::now().fixed_offset();
    let mut backend = firewall::backend_for(config, SystemRunner::new(config));
    let (host, errors) = match backend.preflight() {
        Ok(()) => backend.read_host(),
        Err(_) => (Host::default(), Vec::new()),
    };
    let mut report = report(config, &host, None, summarise_errors(&errors), now);
    report.control_file = state.last_good.as_ref().map(Freshness::of);
    report.backend = firewall::backend(config);
    report.notices.push(format!(
        "portlocker reset at {}: its rules were removed; the next run applies the control file \
         again",
        now.format("%Y-%m-%d %H:%M")
    ));
    publish(config, &report, state.last_run.as_ref());
}

/// Prints what a run would do, changing nothing.
fn dry_run(config: &Config, offline: bool) -> Result<Exit> {
    let (state, lost) = peek_state(config)?;
    let now = Local::now().fixed_offset();
    let wanted = intake::look(config, &state, offline, now)?;
    let mut starts = state.opens.clone();
    if lost {
        // As a run does: a count whose start was lost is taken as ended.
        starts.extend(intent::uncounted(
            &wanted,
            &starts,
            now,
            config.firewall.max_open,
        ));
    }
    let resolved = resolve(config, &wanted, &starts, now);
    let mut backend = firewall::backend_for(config, SystemRunner::new(config));
    let (holdings, note) = match backend.preflight() {
        Ok(()) => match backend.observe(false) {
            (holdings, errors) if errors.is_empty() => (holdings, None),
            (_, errors) if errors.iter().any(CommandError::needs_root) => (
                Holdings::unknown(config),
                Some("cannot read the firewall without root".to_owned()),
            ),
            (_, errors) => (
                Holdings::unknown(config),
                Some(format!("could not read the firewall: {}", errors[0])),
            ),
        },
        Err(reason) => (
            Holdings::unknown(config),
            Some(format!("cannot read the firewall: {reason}")),
        ),
    };
    let (kept, _) = intake::kept_wanted(config, &state);
    let seen = sources_seen(&kept, &wanted);
    let steps = plan::plan(config, &resolved.wants(), &holdings, &seen);
    let mut lines = backend.dry_run(&steps, &holdings);
    drop(backend);
    let elsewhere = leftovers::Elsewhere::of(config, &state);
    lines.extend(leftovers::dry_run(&elsewhere, SystemRunner::new(config)));
    let mut out = std::io::stdout().lock();
    for (service, intent) in &resolved.intents {
        let want = match &intent.want {
            Want::Closed => "closed",
            Want::Open(_) => "open",
            Want::OpenTo(_) => "open to some sources",
        };
        let note = if intent.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", intent.note)
        };
        writeln!(out, "# the control file wants {service} {want}{note}")?;
    }
    if let Some(note) = note {
        writeln!(out, "# {note}")?;
    }
    if lines.is_empty() {
        writeln!(
            out,
            "# nothing to change: the firewall already matches the control file"
        )?;
    }
    for line in &lines {
        writeln!(out, "{line}")?;
    }
    Ok(Exit::Ok)
}

/// Finds what would make every run fail (see `check.rs`); `fetch`, or a
/// --source given, also fetches and validates the control file.
fn check(cli: &Cli, config: &Config, fetch: bool) -> Result<Exit> {
    let fetch = fetch || cli.global.source.is_some();
    Ok(match check::check(&cli.global.config, config, fetch)? {
        None | Some(Severity::Note) => Exit::Ok,
        Some(Severity::Problem) => Exit::Failed,
        Some(Severity::Refused) => Exit::Usage,
    })
}

/// Prints each service and its state per family, read from the firewall
/// now, with the last run and each open's deadline and sources from the state.
fn show_status(config: &Config, json: bool) -> Result<Exit> {
    let (state, lost) = peek_state(config)?;
    let mut backend = firewall::backend_for(config, SystemRunner::new(config));
    backend
        .preflight()
        .map_err(|reason| anyhow!("cannot read the firewall: {reason}"))?;
    let (host, errors) = backend.read_host();
    if errors.iter().any(CommandError::needs_root) {
        return Err(anyhow!(
            "reading the firewall needs root: run portlocker status as root"
        ));
    }
    let now = Local::now().fixed_offset();
    // What the kept state asks now, as a run would enforce it, for the deadlines and sources.
    let wanted = intake::asked(config, &state, now);
    let resolved = resolve(config, &wanted, &state.opens, now);
    let report = report(config, &host, Some(&resolved), None, now);
    let mut out = std::io::stdout().lock();
    if json {
        let document = StatusDocument {
            host: &config.host_name,
            services: report
                .services
                .iter()
                .map(|row| ServiceDocument {
                    name: &row.name,
                    ports: &row.ports,
                    state: row
                        .states
                        .iter()
                        .map(|(family, state)| (family.to_string().to_lowercase(), state.as_str()))
                        .collect(),
                    reason: row
                        .reasons
                        .iter()
                        .map(|(family, reason)| {
                            (family.to_string().to_lowercase(), reason.as_str())
                        })
                        .collect(),
                })
                .collect(),
            last_run: state.last_run.as_ref().map(|run| LastRunDocument {
                at: rfc3339_text(run.at),
                ok: run.ok,
                failure: run.failure.as_deref(),
                duration_ms: run.duration_ms,
            }),
            control_file: state.last_good.as_ref().map(Freshness::of),
            backend: firewall::backend(config),
            errors: errors.iter().map(ToString::to_string).collect(),
        };
        serde_json::to_writer_pretty(&mut out, &document)?;
        writeln!(out)?;
    } else {
        let last_run = match (&state.last_run, lost) {
            (_, true) => LastRunKnown::Lost,
            (Some(run), false) => LastRunKnown::Ran(run),
            (None, false) => LastRunKnown::None,
        };
        write!(out, "{}", status::table(&report, last_run))?;
    }
    for error in &errors {
        log::error!("{error}");
    }
    Ok(if errors.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    })
}

/// `portlocker status --json`: the firewall now, and the last run from the
/// state. Times are RFC 3339 in whole seconds, with their offset.
#[derive(Serialize)]
struct StatusDocument<'a> {
    host: &'a str,
    services: Vec<ServiceDocument<'a>>,
    last_run: Option<LastRunDocument<'a>>,
    control_file: Option<Freshness>,
    backend: Option<String>,
    /// Families that could not be read.
    errors: Vec<String>,
}

#[derive(Serialize)]
struct LastRunDocument<'a> {
    at: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<&'a str>,
    duration_ms: u64,
}

#[derive(Serialize)]
struct ServiceDocument<'a> {
    name: &'a str,
    ports: &'a [String],
    /// Per family (`ipv4`, `ipv6`): open, closed, open to sources, open
    /// (rate-limited), partly closed or unknown.
    state: BTreeMap<String, &'static str>,
    /// Per family: why, citing the deciding rules in their tool's words.
    reason: BTreeMap<String, &'a str>,
}
