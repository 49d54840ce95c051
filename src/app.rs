//! What each command does, step by step: the table of contents of portlocker.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, FixedOffset, Local};
use serde::Serialize;

use crate::cli::{Cli, Command as Subcommand};
use crate::config::{Config, ConfigError, ServiceName, Unnamed};
use crate::files;
use crate::firewall::{self, Command, CommandError, Firewall, Runner, SystemRunner};
use crate::intake::{self, fetch_control};
use crate::intent::{self, Resolved, Starts, Want, Wanted};
use crate::logging::{self, Verbosity};
use crate::metrics;
use crate::model::{Change, Holdings, PortState};
use crate::plan::{self, SourcesSeen, Step};
use crate::source::Source;
use crate::state::{self, LastRun, Loaded, RunLock, State};
use crate::status::{self, Freshness, Report, ServiceRow};
use crate::verdict;

/// The exit codes, each with one meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The firewall now matches the control file (or: the check passed).
    Ok = 0,
    /// The run failed; nothing from a bad control file was applied.
    Failed = 1,
    /// Usage or config error; nothing was done.
    Usage = 2,
    /// Another run holds the lock; this one changed nothing (EX_TEMPFAIL).
    Busy = 75,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}

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
        Some(Subcommand::Check) => {
            logging::init(verbosity, None);
            check(cli, &config)
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

/// The state as it is, for a look that changes nothing; empty if unreadable.
/// Run as root, a state directory another account could change is refused.
fn peek_state(config: &Config) -> Result<State> {
    state::check_trust(&config.state_dir).map_err(ConfigError)?;
    Ok(match State::peek(&config.state_dir) {
        Loaded::Kept(state) => state,
        Loaded::Legacy(mut state) => {
            intake::migrate(config, &mut state);
            state
        }
        Loaded::Damaged(_) => State::default(),
    })
}

/// The state for a run. A damaged one is reported in `problems` (the run
/// fails) and the run goes on from an empty state: with `default =
/// "close"` that closes every service.
fn load_state(config: &Config, problems: &mut Vec<String>) -> State {
    match State::load(&config.state_dir) {
        Loaded::Kept(state) => state,
        Loaded::Legacy(mut state) => {
            intake::migrate(config, &mut state);
            state
        }
        Loaded::Damaged(reason) => {
            let problem = format!("{reason}; going on without a kept state");
            log::error!("{problem}");
            problems.push(problem);
            State::default()
        }
    }
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

/// With `default = "close"`, services no file opened are closed.
fn close_unnamed(config: &Config) -> bool {
    config.firewall.default == Unnamed::Close
}

/// What the owner wants now, at `now`; opens that ended go to the log.
fn resolve(
    config: &Config,
    wanted: &Wanted,
    starts: &Starts,
    now: DateTime<FixedOffset>,
) -> Resolved {
    let resolved = intent::resolve(
        wanted,
        config.services.keys(),
        close_unnamed(config),
        now,
        starts,
        config.firewall.max_open,
    );
    for ended in &resolved.ended {
        // The open ending as asked: worth a log line, not a mail from cron.
        log::info!("{ended}; closed");
    }
    resolved
}

/// Every source that may have a rule: in the state before and after this run's file.
fn sources_seen(before: &Wanted, after: &Wanted) -> SourcesSeen {
    let mut seen = intent::sources_of(before);
    for (service, sources) in intent::sources_of(after) {
        seen.entry(service).or_default().extend(sources);
    }
    seen
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

/// A run that holds the lock, at `run_at`, with `runner` at the iptables
/// seam (the property tests drive it with an in-memory firewall).
pub fn run_locked<R: Runner>(
    config: &Config,
    offline: bool,
    runner: R,
    run_at: DateTime<FixedOffset>,
) -> Exit {
    let started = Instant::now();
    let mut problems = Vec::new();
    let mut state = load_state(config, &mut problems);
    let before = state.clone();
    let (kept, _) = intake::kept_wanted(config, &state);
    let intake = intake::take(config, &mut state, offline, run_at);
    problems.extend(intake.problem.clone());
    let resolved = resolve(config, &intake.wanted, &state.opens, run_at);
    // A new wanted state is kept before the firewall work, so a run killed
    // during it still remembers what the owner asked.
    if state != before {
        save(config, &state, &mut problems);
    }

    let seen = sources_seen(&kept, &intake.wanted);
    let docker = config.status_file.is_some();
    // With nothing to enforce and a file refused, the firewall is not even read.
    let idle = intake.problem.is_some() && resolved.intents.is_empty();
    let outcome = match idle {
        true => Reconciled::idle(config),
        false => reconcile(config, runner, &resolved.wants(), &seen, docker),
    };
    state
        .opens
        .extend(kept_starts(config, &intake.wanted, &resolved, &outcome));
    let nothing_kept = state.last_good.is_none() && state.wanted.is_empty();
    let mut failure = problems.join("; ");
    if !failure.is_empty() && outcome.changes == 0 && nothing_kept {
        failure.push_str("; nothing was changed");
    }
    if let Some(more) = &outcome.failure {
        if failure.is_empty() {
            failure = more.clone();
        } else {
            failure = format!("{failure}, and {more}");
        }
    }

    state.last_run = Some(LastRun {
        at: run_at,
        ok: failure.is_empty(),
        failure: (!failure.is_empty()).then(|| failure.clone()),
        duration_ms: started.elapsed().as_millis() as u64,
    });
    let mut not_saved = Vec::new();
    save(config, &state, &mut not_saved);
    if let Some(reason) = not_saved.first() {
        failure = if failure.is_empty() {
            reason.clone()
        } else {
            format!("{failure}, and {reason}")
        };
        if let Some(last_run) = &mut state.last_run {
            last_run.ok = false;
            last_run.failure = Some(failure.clone());
        }
    }
    let failure = (!failure.is_empty()).then_some(failure);

    let mut report = report(config, &outcome.holdings, Some(&resolved), failure.clone());
    report.run_at = run_at;
    report.control_file = state.last_good.as_ref().map(Freshness::of);
    report.notices = notices(config, &outcome.holdings, outcome.notices);
    if let Some(path) = &config.status_file {
        report.backend = firewall::backend(config);
        if let Err(error) = files::write_atomic(path, status::render(&report).as_bytes(), 0o644) {
            log::warn!("status page not updated: {error:#}");
        }
    }
    if let (Some(path), Some(last_run)) = (&config.metrics_file, &state.last_run) {
        let text = metrics::render(&report, last_run);
        if let Err(error) = files::write_atomic(path, text.as_bytes(), 0o644) {
            log::warn!("metrics not updated: {error:#}");
        }
    }

    match failure {
        None => {
            let changed = match outcome.changes {
                0 => "no change".to_owned(),
                1 => "1 firewall change".to_owned(),
                n => format!("{n} firewall changes"),
            };
            let from = if offline {
                "the last good control file".to_owned()
            } else {
                config.source.to_string()
            };
            log::info!(
                "run ok from {from}: {changed}; {}",
                states_in_words(&report)
            );
            Exit::Ok
        }
        Some(reason) => {
            log::error!("run failed: {reason}");
            Exit::Failed
        }
    }
}

/// The counts a run starts. A count starts once its open is in the
/// firewall: every new one when the firewall work succeeded, otherwise
/// those of services that let something through in a family read back —
/// so a failure elsewhere (a rule of others, an ip6tables that fails every
/// call) never keeps an open from ending.
fn kept_starts(
    config: &Config,
    wanted: &Wanted,
    resolved: &Resolved,
    outcome: &Reconciled,
) -> Starts {
    if outcome.failure.is_none() {
        return resolved.new_starts.clone();
    }
    let in_firewall = |service: &ServiceName| {
        outcome.holdings.families.iter().any(|(&family, held)| {
            held.as_ref().is_some_and(|held| {
                verdict::service_state(config, held, family, service) != PortState::Closed
            })
        })
    };
    let service_of = |line: &str| {
        wanted
            .iter()
            .find(|(_, lines)| lines.iter().any(|d| d.render() == line))
            .map(|(service, _)| service)
    };
    resolved
        .new_starts
        .iter()
        .filter(|(line, _)| service_of(line).is_some_and(in_firewall))
        .map(|(line, start)| (line.clone(), *start))
        .collect()
}

/// Writes the state; a failure is reported in `problems`, and the run goes on.
fn save(config: &Config, state: &State, problems: &mut Vec<String>) {
    if let Err(error) = state.save(&config.state_dir) {
        let problem = format!("the state was not saved: {error:#}");
        log::error!("{problem}");
        problems.push(problem);
    }
}

/// What the owner should know about this machine besides the services.
fn notices(config: &Config, holdings: &Holdings, mut notices: Vec<String>) -> Vec<String> {
    if config.firewall.ipv6 && !Path::new("/proc/net/if_inet6").exists() {
        notices.push("IPv6 is not available in this kernel: set firewall.ipv6 = false".into());
    }
    if holdings
        .families
        .values()
        .flatten()
        .any(|held| held.docker_user)
    {
        notices.push(
            "Docker is here (a DOCKER-USER chain exists): ports published by containers bypass INPUT, \
             so portlocker cannot close them; filter them in DOCKER-USER"
                .into(),
        );
    }
    notices
}

/// Sleeps a random time up to `jitter`, so many servers on the same cron
/// minute do not all fetch at once.
fn wait_jitter(jitter: Duration) {
    use std::hash::{BuildHasher, Hasher};
    if jitter.is_zero() {
        return;
    }
    // A randomly keyed hash: random enough to spread requests, no extra crate.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let pause = Duration::from_millis(random % (jitter.as_millis() as u64 + 1));
    log::info!("waiting {} ms before fetching (jitter)", pause.as_millis());
    std::thread::sleep(pause);
}

/// What reconciling did.
#[derive(Debug)]
struct Reconciled {
    /// What the firewall holds after it.
    holdings: Holdings,
    /// Commands that changed the firewall.
    changes: usize,
    /// Repairs and rules of others worth showing on the status page.
    notices: Vec<String>,
    failure: Option<String>,
}

impl Reconciled {
    /// Nothing done, nothing read.
    fn idle(config: &Config) -> Reconciled {
        Reconciled {
            holdings: Holdings::unknown(config),
            changes: 0,
            notices: Vec::new(),
            failure: None,
        }
    }
}

/// Makes the firewall hold what `wants` asks, then reads the result back
/// through the verdicts: a service asked closed that is not closed fails
/// the run, naming the rule that lets it through.
fn reconcile<R: Runner>(
    config: &Config,
    runner: R,
    wants: &BTreeMap<ServiceName, Want>,
    seen: &SourcesSeen,
    docker: bool,
) -> Reconciled {
    let failed = |reason: String| Reconciled {
        holdings: Holdings::unknown(config),
        changes: 0,
        notices: Vec::new(),
        failure: Some(format!("{reason}; nothing was changed")),
    };
    if let Err(reason) = firewall::preflight(config) {
        return failed(reason);
    }
    let mut firewall = Firewall::new(config, runner);
    let (mut holdings, mut errors) = firewall.observe(docker);
    if errors.iter().any(CommandError::needs_root) {
        return failed(NEEDS_ROOT.to_owned());
    }
    let steps = plan::plan(config, wants, &holdings, seen);
    let applied = firewall.apply(&steps, &mut holdings);
    errors.extend(applied.errors);
    for error in errors.iter().filter(|error| !error.after_hang()) {
        log::error!("{error}");
    }
    let mut notices = Vec::new();
    for family in config.families() {
        let moved =
            applied.made.iter().any(
                |change| matches!(change, Change::DeleteJump { family: f, .. } if *f == family),
            ) && applied.made.iter().any(
                |change| matches!(change, Change::InsertJump { family: f, .. } if *f == family),
            );
        if moved {
            let notice = format!(
                "{family}: the jump to {} was not first in INPUT; it was moved back to the top",
                config.firewall.chain
            );
            log::warn!("{notice}");
            notices.push(notice);
        }
    }
    let (too_open, foreign_closes) = mismatches(config, wants, &holdings);
    for warning in &foreign_closes {
        log::warn!("{warning}");
    }
    notices.extend(foreign_closes);
    let mut failure = summarise_errors(&errors);
    if !too_open.is_empty() {
        let reason = too_open.join("; ");
        failure = Some(match failure {
            None => reason,
            Some(failure) => format!("{failure}; {reason}"),
        });
    }
    Reconciled {
        holdings,
        changes: applied.made.len(),
        notices,
        failure,
    }
}

/// Where the firewall, read through the verdicts, differs from what is
/// wanted: ports more open than asked (a failure, naming the rule that
/// lets them through), and rules of others that close a port the control
/// file opens (a warning, with the command that removes the rule).
fn mismatches(
    config: &Config,
    wants: &BTreeMap<ServiceName, Want>,
    holdings: &Holdings,
) -> (Vec<String>, Vec<String>) {
    let mut too_open = Vec::new();
    let mut foreign = Vec::new();
    for (service, want) in wants {
        for (&family, held) in &holdings.families {
            let Some(held) = held else { continue };
            for &ports in &config.services[service] {
                let verdict = verdict::port_verdict(config, held, family, ports);
                let allowed: &[PortState] = match want {
                    Want::Closed => &[PortState::Closed],
                    Want::OpenTo(_) => &[PortState::Closed, PortState::OpenToSources],
                    Want::Open => {
                        if let (PortState::Closed, Some((chain, rule))) =
                            (verdict.state, &verdict.decided_by)
                            && rule.tag().is_none()
                        {
                            let mut args = vec!["-D".to_owned(), chain.clone()];
                            args.extend(rule.spec.iter().cloned());
                            let remove = Command::iptables(config, family, args);
                            let warning = format!(
                                "{family}: `{}` is not portlocker's and closes {service} {ports}, \
                                 which the control file opens; remove it with `{remove}`",
                                rule.shown(chain)
                            );
                            if !foreign.contains(&warning) {
                                foreign.push(warning);
                            }
                        }
                        continue;
                    }
                };
                if !allowed.contains(&verdict.state) {
                    let why = match &verdict.passed_by {
                        Some((chain, rule)) => {
                            format!(": `{}` lets it through first", rule.shown(chain))
                        }
                        None => String::new(),
                    };
                    let asked = match want {
                        Want::Closed => "closed",
                        _ => "open to its sources only",
                    };
                    too_open.push(format!(
                        "{family}: {service} {ports} should be {asked} but is {}{why}",
                        verdict.state.as_str()
                    ));
                }
            }
        }
    }
    (too_open, foreign)
}

const NEEDS_ROOT: &str = "changing the firewall needs root: run portlocker as root (from root's crontab), or try --dry-run";

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
    let mut out = std::io::stdout().lock();
    for change in &applied.made {
        writeln!(out, "{change}")?;
    }
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
    if applied.made.is_empty() {
        writeln!(
            out,
            "nothing to remove: the firewall holds nothing of portlocker's"
        )?;
    }
    log::info!("reset: {} firewall changes", applied.made.len());
    Ok(Exit::Ok)
}

fn summarise_errors(errors: &[CommandError]) -> Option<String> {
    match errors {
        [] => None,
        [only] => Some(format!("a firewall command failed: {only}")),
        [first, rest @ ..] => Some(format!(
            "{} firewall commands failed, the first: {first}",
            rest.len() + 1
        )),
    }
}

/// Prints what a run would do, changing nothing.
fn dry_run(config: &Config, offline: bool) -> Result<Exit> {
    let state = peek_state(config)?;
    let now = Local::now().fixed_offset();
    let wanted = intake::look(config, &state, offline, now)?;
    let resolved = resolve(config, &wanted, &state.opens, now);
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
    let mut out = std::io::stdout().lock();
    for (service, intent) in &resolved.intents {
        let want = match &intent.want {
            Want::Closed => "closed",
            Want::Open => "open",
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
    if steps.is_empty() {
        writeln!(
            out,
            "# nothing to change: the firewall already matches the control file"
        )?;
    }
    for step in &steps {
        writeln!(out, "# {}", step.change)?;
        writeln!(out, "{}", shell_line(config, step))?;
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

/// Validates the config and, with --source, the control file.
fn check(cli: &Cli, config: &Config) -> Result<Exit> {
    let names: Vec<&str> = config.services.keys().map(ServiceName::as_str).collect();
    println!(
        "config {}: ok ({} services: {})",
        cli.global.config.display(),
        names.len(),
        names.join(", ")
    );
    if cli.global.source.is_some() {
        let control = fetch_control(config, &peek_state(config)?)?;
        let mut lines: Vec<String> = control
            .directives
            .values()
            .flatten()
            .map(|d| d.render())
            .collect();
        if control.other_hosts > 0 {
            lines.push(format!("{} lines for other hosts", control.other_hosts));
        }
        println!(
            "control file from {}: ok ({})",
            config.source,
            if lines.is_empty() {
                "changes nothing".to_owned()
            } else {
                lines.join(", ")
            }
        );
    }
    Ok(Exit::Ok)
}

/// Prints each service and its state per family, read from the firewall now.
fn show_status(config: &Config, json: bool) -> Result<Exit> {
    let state = if json {
        peek_state(config)?
    } else {
        State::default()
    };
    firewall::preflight(config).map_err(|reason| anyhow!("cannot read the firewall: {reason}"))?;
    let (holdings, errors) = Firewall::new(config, SystemRunner::new(config)).observe(true);
    if errors.iter().any(CommandError::needs_root) {
        return Err(anyhow!(
            "reading the firewall needs root: run portlocker status as root"
        ));
    }
    let report = report(config, &holdings, None, None);
    let mut out = std::io::stdout().lock();
    if json {
        let document = StatusDocument {
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
            last_run: state.last_run.as_ref(),
            control_file: state.last_good.as_ref().map(Freshness::of),
            backend: firewall::backend(config),
            errors: errors.iter().map(ToString::to_string).collect(),
        };
        serde_json::to_writer_pretty(&mut out, &document)?;
        writeln!(out)?;
    } else {
        let mut header = format!("{:<16} {:<24}", "SERVICE", "PORTS");
        for family in config.families() {
            header.push_str(&format!(" {:<16}", family.to_string()));
        }
        writeln!(out, "{}", header.trim_end())?;
        for row in &report.services {
            let mut line = format!("{:<16} {:<24}", row.name, row.ports.join(","));
            for (_, state) in &row.states {
                line.push_str(&format!(" {:<16}", state.as_str().replace(' ', "-")));
            }
            writeln!(out, "{}", line.trim_end())?;
        }
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

/// `portlocker status --json`: the firewall now, and the last run from the state.
#[derive(Serialize)]
struct StatusDocument<'a> {
    services: Vec<ServiceDocument<'a>>,
    last_run: Option<&'a LastRun>,
    control_file: Option<Freshness>,
    backend: Option<String>,
    /// Families that could not be read.
    errors: Vec<String>,
}

#[derive(Serialize)]
struct ServiceDocument<'a> {
    name: &'a str,
    ports: &'a [String],
    /// Per family (`ipv4`, `ipv6`): open, closed, open to sources, partly closed or unknown.
    state: BTreeMap<String, &'static str>,
}

/// The report of a run for the status page and the summary line.
fn report(
    config: &Config,
    holdings: &Holdings,
    resolved: Option<&Resolved>,
    failure: Option<String>,
) -> Report {
    let note = |service: &ServiceName| {
        resolved
            .and_then(|r| r.intents.get(service))
            .map(|intent| intent.note.clone())
            .unwrap_or_default()
    };
    let services = config
        .services
        .iter()
        .map(|(service, specs)| ServiceRow {
            name: service.to_string(),
            note: note(service),
            ports: specs.iter().map(ToString::to_string).collect(),
            states: config
                .families()
                .into_iter()
                .map(|family| {
                    let state = match holdings.family(family) {
                        Some(held) => verdict::service_state(config, held, family, service),
                        None => PortState::Unknown,
                    };
                    (family, state)
                })
                .collect(),
        })
        .collect();
    Report {
        run_at: Local::now().fixed_offset(),
        failure,
        services,
        control_file: None,
        backend: None,
        notices: Vec::new(),
    }
}

/// `ssh closed, web open, vpn closed on IPv4 and open on IPv6`.
fn states_in_words(report: &Report) -> String {
    let rows: Vec<String> = report
        .services
        .iter()
        .map(|row| {
            let states: BTreeSet<PortState> = row.states.iter().map(|(_, s)| *s).collect();
            if states.len() == 1 {
                format!("{} {}", row.name, row.states[0].1.as_str())
            } else {
                let each: Vec<String> = row
                    .states
                    .iter()
                    .map(|(family, state)| format!("{} on {family}", state.as_str()))
                    .collect();
                format!("{} {}", row.name, each.join(" and "))
            }
        })
        .collect();
    rows.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use crate::fake::{FakeIptables, Fate, Probe};
    use chrono::TimeDelta;

    /// A config in `dir`, with `firewall` lines, whose iptables binaries
    /// exist for the preflight; runs are driven in-process with the fake.
    fn config_in(dir: &Path, firewall: &str) -> Config {
        let bin = dir.join("bin");
        std::fs::create_dir(&bin).unwrap();
        for name in ["iptables", "ip6tables"] {
            std::fs::write(bin.join(name), "").unwrap();
        }
        let text = format!(
            "source = {:?}\nstate_dir = {:?}\nhost_name = \"test-host\"\n[firewall]\n\
             iptables = {:?}\nip6tables = {:?}\n{firewall}\n[services]\nssh = 22\nvpn = 1723\n",
            dir.join("control.txt"),
            dir.join("state"),
            bin.join("iptables"),
            bin.join("ip6tables"),
        );
        Config::parse(&text).unwrap()
    }

    fn ssh_from_anywhere(fake: &FakeIptables, binary: &str) -> Fate {
        let probe = Probe {
            protocol: Protocol::Tcp,
            port: 22,
            from: "192.0.2.10".parse().unwrap(),
        };
        fake.fate(binary, probe)
    }

    fn at(minutes: i64) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-11-25T10:00:00+01:00").unwrap()
            + TimeDelta::minutes(minutes)
    }

    #[test]
    fn an_open_for_a_while_ends_while_a_rule_of_others_fails_every_run() {
        // Another tool accepts vpn ahead of portlocker's rules in INPUT, so
        // every run fails; ssh's hour must end all the same.
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "chain = \"INPUT\"");
        std::fs::write(
            dir.path().join("control.txt"),
            "open ssh for 1h\nclose vpn\n",
        )
        .unwrap();
        let mut fake = FakeIptables::default();
        for binary in ["iptables", "ip6tables"] {
            fake.admin(binary, "-I INPUT 1 -p tcp -m tcp --dport 1723 -j ACCEPT");
        }
        assert_eq!(run_locked(&config, false, &mut fake, at(0)), Exit::Failed);
        assert_eq!(ssh_from_anywhere(&fake, "iptables"), Fate::Accepted);
        assert_eq!(run_locked(&config, false, &mut fake, at(61)), Exit::Failed);
        assert_eq!(
            ssh_from_anywhere(&fake, "iptables"),
            Fate::Dropped,
            "ssh was opened for 1h, 61 minutes ago"
        );
    }

    #[test]
    fn an_open_for_a_while_ends_while_ip6tables_fails_every_call() {
        // A kernel without IPv6, and ipv6 = true: every run fails.
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "");
        let mut fake = FakeIptables::default();
        fake.broken = Some("ip6tables");
        let source = dir.path().join("control.txt");
        std::fs::write(&source, "close ssh\n").unwrap();
        assert_eq!(run_locked(&config, false, &mut fake, at(-5)), Exit::Failed);
        assert_eq!(ssh_from_anywhere(&fake, "iptables"), Fate::Dropped);
        std::fs::write(&source, "open ssh for 1h\n").unwrap();
        assert_eq!(run_locked(&config, false, &mut fake, at(0)), Exit::Failed);
        assert_eq!(ssh_from_anywhere(&fake, "iptables"), Fate::Accepted);
        assert_eq!(run_locked(&config, false, &mut fake, at(61)), Exit::Failed);
        assert_eq!(
            ssh_from_anywhere(&fake, "iptables"),
            Fate::Dropped,
            "ssh was opened for 1h, 61 minutes ago"
        );
    }

    #[test]
    fn exit_codes_are_fixed() {
        assert_eq!(Exit::Ok as u8, 0);
        assert_eq!(Exit::Failed as u8, 1);
        assert_eq!(Exit::Usage as u8, 2);
        assert_eq!(Exit::Busy as u8, 75);
    }
}
