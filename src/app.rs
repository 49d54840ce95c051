//! What each command does, step by step: the table of contents of portlocker.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, FixedOffset, Local};

use crate::check::{self, Severity};
use crate::cli::{Cli, Command as Subcommand};
use crate::config::{self, Config, ConfigError};
pub use crate::exit::Exit;
use crate::firewall::forward::Mirror;
use crate::firewall::leftovers;
use crate::firewall::model::Holdings;
use crate::firewall::plan;
use crate::firewall::ruleset::Host;
use crate::firewall::{self};
use crate::intake;
use crate::intake::fetch::Fetcher;
use crate::intake::intent::{self, Want};
use crate::intake::source::Source;
use crate::intake::state::{self, Loaded, RunLock, State};
use crate::report;
use crate::report::logging::{self, Verbosity};
use crate::report::quiet::shown;
use crate::report::status::Freshness;
use crate::report::text::LastRunKnown;
use crate::run::{
    NEEDS_ROOT, Occasion, ipv6_notice, publish, report, resolve, run_as, sources_seen,
    summarise_errors, wait_jitter,
};
use crate::sys::clock;
use crate::sys::runner::{CommandError, SystemRunner};
use crate::watch::{self, presence};

/// Runs the command line and tells how it ended. Errors are reported here.
pub fn main(cli: Cli) -> Exit {
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
    let enforcing = cli.command.is_none() && !cli.dry_run;
    let config = match load_config(cli) {
        Ok(config) => config,
        // A run (cron's, the boot unit's) with a config it cannot use
        // enforces the last one it could: closed stays closed.
        Err(error) if enforcing => return run_kept_config(cli, error),
        Err(error) => return Err(error),
    };
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
            keep_config(&config);
            let invoked = Invoked {
                offline: cli.offline,
                source_given: cli.global.source.is_some(),
                failing: None,
            };
            run(&config, invoked)
        }
        Some(Subcommand::Reset) => {
            logging::init(verbosity, Some(&config.log_file));
            reset(&config)
        }
        Some(Subcommand::Watch { ref every }) => {
            logging::init(verbosity, Some(&config.log_file));
            let every = every.as_deref().map(watch_every).transpose()?;
            // Each config watch takes is kept, as a run's is: the one a
            // run enforces if the config is then broken (at boot, say).
            let taken = |mut config: Config| {
                if let Some(every) = every {
                    config.watch.every = every;
                }
                keep_config(&config);
                config
            };
            watch::watch(taken(config), &|| Ok(taken(load_config(cli)?)))
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

/// Where a run keeps a copy of the last config it could use, in `state_dir`.
const KEPT_CONFIG: &str = "config.last-good.toml";

/// Keeps a copy of the config a run uses in `state_dir` (root's, 700): the
/// one a later run enforces if the config then cannot be used.
fn keep_config(config: &Config) {
    let Some(path) = &config.path else {
        return;
    };
    let kept = || -> Result<()> {
        // A byte-order mark opens a text, never its middle (after the header).
        let text = config.text.strip_prefix('\u{feff}').unwrap_or(&config.text);
        let text = format!("{}{text}", kept_header(path));
        let text = text.as_bytes();
        let dir = crate::sys::files::Directory::open(&config.state_dir, "state_dir", Some(0o700))?;
        if dir.read(KEPT_CONFIG).ok().as_deref() != Some(text) {
            dir.replace(KEPT_CONFIG, text, 0o600)?;
        }
        Ok(())
    };
    if let Err(error) = kept() {
        log::info!("the config was not kept in state_dir: {error:#}");
    }
}

/// The first line of the copy kept of the config at `path`: whose it is.
fn kept_header(path: &Path) -> String {
    format!(
        "# portlocker's copy of {}, the last config a run could use\n",
        path.display()
    )
}

/// A run whose config cannot be used (`error`): it enforces the copy the
/// last run that could use it kept, and fails (1), saying why. Without a
/// kept copy, the error stands (exit 2).
fn run_kept_config(cli: &Cli, error: anyhow::Error) -> Result<Exit> {
    // Only this config's own copy: never another config's that a state
    // directory happens to hold. The one the refused config names is tried
    // first, then the default one, as another account that can rewrite
    // the config could name a state directory without a copy.
    let path = cli.global.config.canonicalize();
    let path = path.as_deref().unwrap_or(&cli.global.config);
    let named = config::state_dir_of(&cli.global.config);
    let own_copy = |state_dir: PathBuf| {
        let kept = state_dir.join(KEPT_CONFIG);
        let config = Config::load(&kept).ok()?;
        let own = config.text.starts_with(&kept_header(path)) && config.state_dir == state_dir;
        own.then_some((kept, config))
    };
    let candidates = named
        .into_iter()
        .chain([PathBuf::from(config::DEFAULT_STATE_DIR)]);
    let Some((kept, mut config)) = candidates.into_iter().find_map(own_copy) else {
        return Err(error);
    };
    if let Some(seconds) = cli.jitter {
        config.fetch.jitter = Duration::from_secs(seconds);
    }
    let verbosity = if cli.global.quiet {
        Verbosity::Quiet
    } else {
        Verbosity::Normal
    };
    logging::init(verbosity, Some(&config.log_file));
    let failing = format!(
        "{error:#}; the last config a run could use ({}) is enforced instead, with the last good \
         control file and no fetch, until this is fixed",
        kept.display()
    );
    // Offline: never the source of a config the owner has replaced.
    let invoked = Invoked {
        offline: true,
        source_given: false,
        failing: Some(failing),
    };
    run(&config, invoked)?;
    Ok(Exit::Failed)
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

/// A run later than any the state tells of (it began, by the lock, and did
/// not save the state): a full disk, say. Its own failure is in the log
/// and on its page; the state tells of an earlier one.
fn unsaved_run(state: &State, state_dir: &Path) -> Option<String> {
    let began = state::last_began(state_dir)?;
    let told = [state.last_run.as_ref().map(|run| run.at), state.reset_at];
    // A run's time kept to the second may read up to a second early; kept
    // to the nanosecond, a run in the same second is told apart.
    let slack = |at: DateTime<FixedOffset>| match at.timestamp_subsec_nanos() {
        0 => chrono::TimeDelta::seconds(2),
        _ => chrono::TimeDelta::milliseconds(1),
    };
    if told.into_iter().flatten().any(|at| began <= at + slack(at)) {
        return None;
    }
    Some(format!(
        "the run at {} could not save the state (its failure is in the log and on the page), \
         so what follows may not be what it did",
        shown(began)
    ))
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

/// `--every`, as `[watch] every` reads it.
fn watch_every(text: &str) -> Result<Duration> {
    config::watch_every(text)
        .context("--every")
        .map_err(|error| ConfigError(error).into())
}

/// One cron run: fetch, validate, reconcile, log, status page, metrics.
/// While `portlocker watch` runs and looks, it is asked to run now instead.
/// How a one-shot run was asked for.
struct Invoked {
    /// `--offline`: the last good control file, no fetch.
    offline: bool,
    /// `--source`: a control file other than the config's.
    source_given: bool,
    /// Why it fails whatever it does (see `Occasion::failing`).
    failing: Option<String>,
}

fn run(config: &Config, invoked: Invoked) -> Result<Exit> {
    let Invoked {
        offline,
        source_given,
        failing,
    } = invoked;
    state::check_trust(&config.state_dir).map_err(ConfigError)?;
    let watcher = presence::watcher(&config.state_dir);
    if let Some(watcher) = &watcher
        && watcher.alive(clock::now_utc())
    {
        // Watch fetches the config's source: what this run was given
        // would be undone by its next fetch, so none of it is applied.
        if source_given {
            log::error!(
                "portlocker watch (pid {}) is running and fetches the config's source: a run \
                 with --source would be undone by its next fetch, so nothing was done; stop \
                 watch first (`systemctl stop portlocker-watch`), or change the source",
                watcher.pid
            );
            return Ok(Exit::Busy);
        }
        // The config cannot be used: watch goes on with the one it read
        // (a kept copy is no other config), and this run says why.
        if let Some(why) = &failing {
            log::error!(
                "{why}; portlocker watch (pid {}) is running and keeps the config it last read: \
                 fix the config, then reload watch (`systemctl reload portlocker-watch`)",
                watcher.pid
            );
            return Ok(Exit::Failed);
        }
        // Another config on the same state directory: its closes would
        // never be made, and a silent exit 0 would say they were.
        if let (Some(theirs), Some(ours)) = (&watcher.config_path, &config.path)
            && theirs != ours
        {
            log::error!(
                "portlocker watch (pid {}) runs with the config {}, not this run's {}, on the same \
                 state_dir: this run did nothing; give each config its own state_dir, or run one",
                watcher.pid,
                theirs.display(),
                ours.display()
            );
            return Ok(Exit::Failed);
        }
        // A config edited since watch read it is read again, then run.
        let asked = match watcher.config == Some(config.fingerprint()) {
            true => watcher.ask_to_run().then_some(" and was asked to run now"),
            false => watcher
                .ask_to_reload()
                .then_some(" and was asked to read the changed config, then run"),
        };
        log::info!(
            "portlocker watch (pid {}) is running{}; this run left the work to it",
            watcher.pid,
            asked.unwrap_or_default()
        );
        return Ok(Exit::Ok);
    }
    if !offline {
        wait_jitter(config.fetch.jitter);
    }
    let Some(_lock) = lock(config)? else {
        return Ok(Exit::Busy);
    };
    let fetcher = Fetcher::new(&config.fetch);
    let stuck = watcher.map(|watcher| {
        let last = watcher.beat.map_or("never".to_owned(), |beat| {
            shown(beat.with_timezone(&Local).fixed_offset())
        });
        format!(
            "portlocker watch (pid {}) holds its lock but has not looked since {last}: this run \
             did the work; restart it with `systemctl restart portlocker-watch`",
            watcher.pid
        )
    });
    let occasion = Occasion {
        offline,
        at: clock::now_local(),
        fetcher: &fetcher,
        seen_in_place: None,
        log_unchanged: true,
        notes: stuck.into_iter().collect(),
        failing,
        network: !offline,
    };
    Ok(run_as(config, SystemRunner::new(config), &occasion))
}

/// Removes everything portlocker put into the firewall.
fn reset(config: &Config) -> Result<Exit> {
    state::check_trust(&config.state_dir).map_err(ConfigError)?;
    if let Some(watcher) = presence::watcher(&config.state_dir) {
        log::error!(
            "portlocker watch (pid {}) is running and would put the rules back at once: stop it \
             first (`systemctl stop portlocker-watch`), then reset; nothing was changed",
            watcher.pid
        );
        return Ok(Exit::Busy);
    }
    let Some(_lock) = lock(config)? else {
        return Ok(Exit::Busy);
    };
    let (reset, broken, unusable) = reset_backend(config)?;
    // And what portlocker left where the config no longer puts its rules.
    let (mut state, lost) = peek_state(config)?;
    let places = leftovers::Elsewhere::everywhere(config, &state);
    let elsewhere = leftovers::sweep(&places, SystemRunner::new(config));
    let failure = reset_failure(unusable, &reset, &elsewhere);
    let now = clock::now_local();
    if !lost {
        save_reset(config, &mut state, now);
    }
    publish_after_reset(config, &state, now, broken.clone().or(failure.clone()));
    tell_reset(&reset, &elsewhere, broken, failure)
}

/// Removes portlocker's rules through the configured backend: what it
/// did, why it could not run at all (if it could not), and one line per
/// family it could not drive.
fn reset_backend(config: &Config) -> Result<(firewall::Reset, Option<String>, Vec<String>)> {
    let mut backend = firewall::backend_for(config, SystemRunner::new(config));
    // A configured backend that cannot run still leaves the rest to clear;
    // a family that cannot, the other families.
    let (reset, broken) = match backend.preflight() {
        Ok(()) => (backend.reset(), None),
        Err(reason) => (firewall::Reset::default(), Some(reason)),
    };
    let unusable = match broken {
        Some(_) => Vec::new(),
        None => (backend.unusable().into_iter())
            .map(|(family, why)| format!("{family}: {why}; its rules were not removed"))
            .collect(),
    };
    if reset.errors.iter().any(CommandError::needs_root) {
        return Err(anyhow!("{NEEDS_ROOT}; nothing was changed"));
    }
    Ok((reset, broken, unusable))
}

/// What kept `reset` from removing all of portlocker's rules, in one
/// line; None when nothing did.
fn reset_failure(
    unusable: Vec<String>,
    reset: &firewall::Reset,
    elsewhere: &leftovers::Swept,
) -> Option<String> {
    let mut failures = unusable;
    failures.extend(summarise_errors(&reset.errors));
    if !elsewhere.clean() {
        failures.push("what portlocker left elsewhere could not be removed".into());
    }
    (!failures.is_empty()).then(|| failures.join("; "))
}

/// Keeps in the state that portlocker's rules were removed at `now`.
fn save_reset(config: &Config, state: &mut State, now: DateTime<FixedOffset>) {
    // Until the next run, `status` and the page say nothing is enforced;
    // and portlocker's rules are gone on purpose: the next run must not
    // tell it as a wipe.
    state.reset_at = Some(now);
    state.in_place = None;
    if let Err(error) = state.save(&config.state_dir, config.fetch.max_bytes, false) {
        log::warn!(
            "the state was not saved, so status cannot tell of the reset, and the next run \
             may take it for a wipe: {error:#}"
        );
    }
}

/// Tells what `reset` removed (stdout) and what it could not (the log),
/// and how it ended: an error when the backend could not run (`broken`),
/// failed when anything was left.
fn tell_reset(
    reset: &firewall::Reset,
    elsewhere: &leftovers::Swept,
    broken: Option<String>,
    failure: Option<String>,
) -> Result<Exit> {
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

/// The page and the metrics after `reset` at `now`, read from the
/// firewall: they say that nothing is enforced until the next run, and
/// show the states the firewall holds without portlocker's rules.
fn publish_after_reset(
    config: &Config,
    state: &State,
    now: DateTime<FixedOffset>,
    failure: Option<String>,
) {
    if config.status_file.is_none() && config.metrics_file.is_none() {
        return;
    }
    let mut backend = firewall::backend_for(config, SystemRunner::new(config));
    let (host, errors) = match backend.preflight() {
        Ok(()) => backend.read_host(),
        Err(_) => (Host::default(), Vec::new()),
    };
    let failure = failure.or_else(|| summarise_errors(&errors));
    let mut report = report(config, &host, None, failure, now);
    report.reset_at = Some(now);
    report.control_file = state.last_good.as_ref().map(Freshness::of);
    report.backend = firewall::backend(config);
    publish(config, &report, state.last_run.as_ref());
}

/// Prints what a run would do, changing nothing.
fn dry_run(config: &Config, offline: bool) -> Result<Exit> {
    let (state, lost) = peek_state(config)?;
    let now = clock::now_local();
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
    let unusable = backend.unusable();
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
    let broken_all = backend.preflight().is_err();
    // Shown as a run would make them once its program can run: unread.
    let mut holdings = holdings;
    for family in unusable.keys() {
        holdings.families.insert(*family, None);
    }
    let (kept, _) = intake::kept_wanted(config, &state);
    let seen = sources_seen(&kept, &wanted);
    let steps = plan::plan(config, &resolved.wants(), &holdings, &seen);
    let mut lines = backend.dry_run(&steps, &holdings);
    // The forward path mirrors portlocker's place as the steps would leave it.
    let mut after = holdings.clone();
    for step in &steps {
        after.record(config, &step.change);
    }
    let mirror = Mirror::of(config, &after).knowing_docker(state.docker_seen);
    let forwarded = backend.forward(&mirror, true);
    lines.extend(forwarded.said);
    lines.extend(
        (forwarded.errors.iter())
            .map(|error| format!("# could not read the forward path: {error}")),
    );
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
    for (family, why) in unusable.iter().filter(|_| !broken_all) {
        writeln!(out, "# cannot read the firewall: {family}: {why}")?;
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
    // Each family that could not be read is said apart, the others shown.
    let mut errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let unusable = backend.unusable().into_iter();
    errors.extend(
        unusable.map(|(family, why)| format!("{family}: cannot change the firewall: {why}")),
    );
    let now = clock::now_local();
    // What the kept state asks now, as a run would enforce it, for the deadlines and sources.
    let wanted = intake::asked(config, &state, now);
    let resolved = resolve(config, &wanted, &state.opens, now);
    // After a reset nothing is enforced: nothing is asked until the next run.
    let resolved = state.reset_at.is_none().then_some(&resolved);
    // What cannot be read now, or else a last run that failed: never "OK"
    // over a failure the page of that run shows.
    let last_failed = (state.last_run.as_ref())
        .filter(|run| !run.ok)
        .map(|_| "the last run failed (see its failure)".to_owned());
    let failure = (errors.first().cloned())
        .or(unsaved_run(&state, &config.state_dir))
        .or(last_failed);
    let mut report = report(config, &host, resolved, failure, now);
    report.reset_at = state.reset_at;
    report.control_file = state.last_good.as_ref().map(Freshness::of);
    report.backend = firewall::backend(config);
    report.notices.extend(ipv6_notice(config));
    let mut out = std::io::stdout().lock();
    if json {
        let document = report::json::document(&report, state.last_run.as_ref(), &errors);
        serde_json::to_writer_pretty(&mut out, &document)?;
        writeln!(out)?;
    } else {
        let last_run = match (&state.last_run, lost) {
            (_, true) => LastRunKnown::Lost,
            (Some(run), false) => LastRunKnown::Ran(run),
            (None, false) => LastRunKnown::None,
        };
        write!(out, "{}", report::text::table(&report, last_run))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::state::LastRun;

    /// A run that began after the last one the state tells of, even within
    /// the same second, and saved nothing: status says so.
    #[test]
    fn a_run_that_saved_nothing_is_told_even_in_the_same_second() {
        let dir = tempfile::tempdir().unwrap();
        let lock = state::lock(dir.path()).unwrap().unwrap();
        drop(lock);
        let began = state::last_began(dir.path()).unwrap();
        let at = |offset_ms: i64| State {
            last_run: Some(LastRun {
                at: began + chrono::TimeDelta::milliseconds(offset_ms),
                ok: true,
                failure: None,
                duration_ms: 1,
            }),
            ..State::default()
        };
        // Saved by that run: its time is a moment after the lock's.
        assert_eq!(unsaved_run(&at(3), dir.path()), None);
        // The state tells of an earlier run, 300 ms before.
        let told = unsaved_run(&at(-300), dir.path()).unwrap();
        assert!(told.contains("could not save the state"), "{told}");
    }
}
