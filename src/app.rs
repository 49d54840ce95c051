//! What each command does, step by step: the table of contents of portlocker.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use chrono::Local;
use serde::Serialize;

use crate::backends;
use crate::check::{self, Severity};
use crate::cli::{Cli, Command as Subcommand};
use crate::config::{Config, ConfigError};
pub use crate::exit::Exit;
use crate::firewall::{self, Command, CommandError, Firewall, SystemRunner};
use crate::intake;
use crate::intent::{self, Want};
use crate::logging::{self, Verbosity};
use crate::model::{Change, Holdings};
use crate::plan::{self, Step};
use crate::run::{
    NEEDS_ROOT, report, resolve, run_locked, sources_seen, summarise_errors, wait_jitter,
};
use crate::source::Source;
use crate::state::{self, Loaded, RunLock, State};
use crate::status::{self, Freshness, LastRunKnown, rfc3339_text};

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
    firewall::preflight(config).map_err(|reason| anyhow!("{reason}; nothing was changed"))?;
    let mut firewall = Firewall::new(config, SystemRunner::new(config));
    let (mut holdings, mut errors) = firewall.observe(false);
    if errors.iter().any(CommandError::needs_root) {
        return Err(anyhow!("{NEEDS_ROOT}; nothing was changed"));
    }
    let (steps, kept) = plan::reset(config, &holdings);
    let applied = firewall.apply(&steps, &mut holdings);
    errors.extend(applied.errors);
    let swept = backends::sweep(config, firewall.runner);
    let mut out = std::io::stdout().lock();
    for change in &applied.made {
        writeln!(out, "{change}")?;
    }
    for line in swept.tell_reset() {
        writeln!(out, "{line}")?;
    }
    errors.extend(swept.failed);
    for (family, rules) in &kept {
        log::warn!(
            "{family}: chain {} holds rules that are not portlocker's, so it stays, and so does its jump: {}",
            config.firewall.chain,
            rules.join(" | ")
        );
    }
    for error in &errors {
        log::error!("{error}");
    }
    if let Some(failure) = summarise_errors(&errors) {
        log::error!("reset failed: {failure}");
        return Ok(Exit::Failed);
    }
    let changes = applied.made.len() + swept.removed.len();
    if changes == 0 {
        writeln!(
            out,
            "nothing to remove: the firewall holds nothing of portlocker's"
        )?;
    }
    log::info!("reset: {changes} firewall changes");
    Ok(Exit::Ok)
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
    let (holdings, note) = match firewall::preflight(config) {
        Ok(()) => match Firewall::new(config, SystemRunner::new(config)).observe(false) {
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
    // What a run would also remove from the other backend.
    let leftovers = match &note {
        None => backends::Other::find(config).map(|other| {
            let found = other.look(&mut Firewall::new(&other.config, SystemRunner::new(config)));
            (other, found.steps)
        }),
        Some(_) => None,
    };
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
        writeln!(
            out,
            "# so each change below runs only if its check says it is needed"
        )?;
    }
    let leftover_steps = leftovers.as_ref().map_or(&[][..], |(_, steps)| &steps[..]);
    if steps.is_empty() && leftover_steps.is_empty() {
        writeln!(
            out,
            "# nothing to change: the firewall already matches the control file"
        )?;
    }
    for step in &steps {
        writeln!(out, "# {}", step.change)?;
        writeln!(out, "{}", shell_line(config, step))?;
    }
    for transaction in firewall::transactions(config, &steps, &holdings) {
        let restore = config.restore_binary(transaction.family).display();
        writeln!(
            out,
            "# {}: all of it in one transaction, as `{restore} --noflush` reads it:",
            transaction.family
        )?;
        for line in transaction.text.lines() {
            writeln!(out, "#   {line}")?;
        }
    }
    if let Some((other, steps)) = &leftovers {
        for step in steps {
            let family = BTreeSet::from([step.change.family()]);
            writeln!(
                out,
                "# {}, left in {}",
                step.change,
                other.describe(&family)
            )?;
            writeln!(out, "{}", shell_line(&other.config, step))?;
        }
    }
    Ok(Exit::Ok)
}

/// A step as one line of shell: the bare command when the firewall was read,
/// otherwise the command guarded by its check, exactly as a run decides.
fn shell_line(config: &Config, step: &Step) -> String {
    let family = step.change.family();
    let make = Command::iptables(config, family, firewall::args(&step.change));
    if step.checked {
        return make.to_string();
    }
    let check = Command::iptables(config, family, firewall::check_args(&step.change));
    match step.change {
        Change::NewChain { .. } => format!("{check} >/dev/null 2>&1 || {make}"),
        Change::DeleteChain { .. } => format!("if {check} >/dev/null 2>&1; then {make}; fi"),
        _ if step.change.removes() => format!("while {check} 2>/dev/null; do {make}; done"),
        _ => format!("{check} 2>/dev/null || {make}"),
    }
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
    firewall::preflight(config).map_err(|reason| anyhow!("cannot read the firewall: {reason}"))?;
    let (holdings, errors) = Firewall::new(config, SystemRunner::new(config)).observe(true);
    if errors.iter().any(CommandError::needs_root) {
        return Err(anyhow!(
            "reading the firewall needs root: run portlocker status as root"
        ));
    }
    let now = Local::now().fixed_offset();
    // What the kept state asks now, as a run would enforce it, for the deadlines and sources.
    let wanted = intake::asked(config, &state, now);
    let resolved = resolve(config, &wanted, &state.opens, now);
    let report = report(config, &holdings, Some(&resolved), None, now);
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
    /// Per family (`ipv4`, `ipv6`): open, closed, open to sources, partly closed or unknown.
    state: BTreeMap<String, &'static str>,
}
