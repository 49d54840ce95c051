//! What each command does, step by step: the table of contents of portlocker.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, FixedOffset, Local};
use serde::Serialize;

use crate::backends;
use crate::check::{self, Severity};
use crate::cli::{Cli, Command as Subcommand};
use crate::config::{Config, ConfigError, ServiceName, Unnamed};
use crate::files;
use crate::firewall::{self, Command, CommandError, Firewall, Runner, SystemRunner};
use crate::intake;
use crate::intent::{self, Resolved, Starts, Want, Wanted};
use crate::logging::{self, Verbosity};
use crate::metrics;
use crate::model::{Change, Holdings, PortState};
use crate::plan::{self, SourcesSeen, Step};
use crate::source::Source;
use crate::state::{self, LastRun, Loaded, RunLock, State};
use crate::status::{self, Freshness, Report, ServiceRow};
use crate::verdict::{self, Mismatch};

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

/// The state for a run, and whether it was lost. A damaged one is reported
/// in `problems` (the run fails) and the run goes on from an empty state:
/// with `default = "close"` that closes every service.
fn load_state(config: &Config, problems: &mut Vec<String>) -> (State, bool) {
    match State::load(&config.state_dir) {
        Loaded::Kept(state) => (state, false),
        Loaded::Legacy(mut state) => {
            intake::migrate(config, &mut state);
            (state, false)
        }
        Loaded::Damaged(reason) => {
            let problem = format!("{reason}; going on without a kept state");
            log::error!("{problem}");
            problems.push(problem);
            (State::default(), true)
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
    let (mut state, lost) = load_state(config, &mut problems);
    let before = state.clone();
    let (kept, _) = intake::kept_wanted(config, &state);
    let intake = intake::take(config, &mut state, offline, run_at);
    problems.extend(intake.problem.clone());
    let max_open = config.firewall.max_open;
    if lost {
        // When each count began went with the state: an open that counts
        // is taken as ended, never begun again.
        let ended = intent::uncounted(&intake.wanted, &state.opens, run_at, max_open);
        for line in ended.keys() {
            log::warn!(
                "`{line}`: when its count began was lost with the state, so it is taken as ended; \
                 change the line to open again"
            );
        }
        state.opens.extend(ended);
    }
    let mut resolved = resolve(config, &intake.wanted, &state.opens, run_at);
    // A new wanted state, and the start of every count, are kept before the
    // firewall work, so a run killed during it still remembers what the
    // owner asked. An open whose count cannot be kept is not made: every
    // run would begin it again, and it would never end.
    let mut counting = state.clone();
    counting.opens.extend(resolved.new_starts.clone());
    if counting != before && !save(config, &counting, &mut problems) {
        let withheld = intent::uncounted(&intake.wanted, &state.opens, run_at, max_open);
        if !withheld.is_empty() {
            resolved = withhold(config, &intake.wanted, &withheld, &state.opens, run_at);
        }
    }

    let seen = sources_seen(&kept, &intake.wanted);
    let docker = config.status_file.is_some();
    // With nothing to enforce and a file refused, the firewall is not even read.
    let idle = intake.problem.is_some() && resolved.intents.is_empty();
    let outcome = match idle {
        true => Reconciled::idle(config),
        false => reconcile(config, runner, &resolved.wants(), &seen, docker),
    };
    // A count starts only once its open is in the firewall: all of the
    // work done, or the service let in somewhere all the same, so that an
    // open made ends in time even while other work keeps failing.
    for (line, start) in &resolved.new_starts {
        if outcome.failure.is_none() || lets_in(config, &outcome.holdings, &intake.wanted, line) {
            state.opens.insert(line.clone(), *start);
        }
    }
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

/// Writes the state; a failure is reported in `problems`, and the run goes
/// on. True when it was saved.
fn save(config: &Config, state: &State, problems: &mut Vec<String>) -> bool {
    match state.save(&config.state_dir) {
        Ok(()) => true,
        Err(error) => {
            let problem = format!("the state was not saved: {error:#}");
            log::error!("{problem}");
            problems.push(problem);
            false
        }
    }
}

/// What the owner wants now without the open lines of `withheld`, whose
/// counts could not be kept: their services closed, unless other lines open them.
fn withhold(
    config: &Config,
    wanted: &Wanted,
    withheld: &Starts,
    starts: &Starts,
    now: DateTime<FixedOffset>,
) -> Resolved {
    let mut rest = wanted.clone();
    for lines in rest.values_mut() {
        lines.retain(|d| !withheld.contains_key(&d.render()));
    }
    let mut resolved = resolve(config, &rest, starts, now);
    for line in withheld.keys() {
        log::warn!("`{line}` was not opened: its count could not be saved");
    }
    for (service, lines) in wanted {
        if lines.iter().any(|d| withheld.contains_key(&d.render()))
            && let Some(intent) = resolved.intents.get_mut(service)
            && intent.want == Want::Closed
        {
            intent.note =
                "not opened: the state cannot be saved, so its count could not be kept".into();
        }
    }
    resolved
}

/// Whether the service of the open `line` lets anyone in, in a family that was read.
fn lets_in(config: &Config, holdings: &Holdings, wanted: &Wanted, line: &str) -> bool {
    let Some(service) = wanted
        .iter()
        .find(|(_, lines)| lines.iter().any(|d| d.render() == line))
        .map(|(service, _)| service)
    else {
        return false;
    };
    config.families().into_iter().any(|family| {
        holdings.family(family).is_some_and(|held| {
            !matches!(
                verdict::service_state(config, held, family, service),
                PortState::Closed | PortState::Unknown
            )
        })
    })
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
    // After the configured backend is right, so no port closed there is open meanwhile.
    let swept = backends::sweep(config, firewall.runner);
    notices.extend(swept.tell_run());
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
        changes: applied.made.len() + swept.removed.len(),
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
    for (&family, held) in &holdings.families {
        let Some(held) = held else { continue };
        for mismatch in verdict::mismatches(config, wants, held, family) {
            match mismatch {
                Mismatch::TooOpen {
                    service,
                    ports,
                    state,
                    passed_by,
                } => {
                    let why = match &passed_by {
                        Some((chain, rule)) => {
                            format!(": `{}` lets it through first", rule.shown(chain))
                        }
                        None => String::new(),
                    };
                    let asked = match wants[&service] {
                        Want::Closed => "closed",
                        _ => "open to its sources only",
                    };
                    too_open.push(format!(
                        "{family}: {service} {ports} should be {asked} but is {}{why}",
                        state.as_str()
                    ));
                }
                Mismatch::ClosedByOthers {
                    service,
                    ports,
                    by: Some((chain, rule)),
                } => {
                    let fix = match firewall::removal(config, family, &chain, &rule) {
                        Some(remove) => format!("remove it with `{remove}`"),
                        // Deleting a default deny would open every other port.
                        None => format!(
                            "it drops every port no rule before it accepts, so accept {ports} \
                             in a rule of your own before it"
                        ),
                    };
                    let warning = format!(
                        "{family}: `{}` is not portlocker's and closes {service} {ports}, \
                         which the control file opens; {fix}",
                        rule.shown(&chain)
                    );
                    if !foreign.contains(&warning) {
                        foreign.push(warning);
                    }
                }
                // INPUT's policy: the owner's default deny, not a leftover.
                Mismatch::ClosedByOthers { by: None, .. } => {}
                Mismatch::ClosedBySharer {
                    service,
                    ports,
                    other,
                } => {
                    let warning = format!(
                        "{family}: {service} {ports} stays closed: it shares the port with \
                         {other}, which the control file closes"
                    );
                    if !foreign.contains(&warning) {
                        foreign.push(warning);
                    }
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

/// Prints each service and its state per family, read from the firewall now.
fn show_status(config: &Config, json: bool) -> Result<Exit> {
    let state = if json {
        peek_state(config)?.0
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

    /// A run that opens ssh where a rule of others drops it says how to
    /// stop that; for a default deny, never by deleting it, which would
    /// open every other port.
    #[test]
    fn a_rule_of_others_closing_an_open_port_gets_safe_advice() {
        use crate::config::Family;
        use crate::model::{ChainRules, FamilyHoldings, Listed, split_listed};
        let config = Config::parse(
            "source = \"-\"\n[firewall]\niptables = \"/sbin/iptables\"\nipv6 = false\n[services]\nssh = 22\n",
        )
        .unwrap();
        let wants = BTreeMap::from([(ServiceName::new("ssh").unwrap(), Want::Open)]);
        let warning = |rule: &str| {
            let held = FamilyHoldings {
                input: ChainRules {
                    policy: Some("ACCEPT".into()),
                    rules: vec![Listed::new(split_listed(rule))],
                },
                ..FamilyHoldings::default()
            };
            let holdings = Holdings {
                families: BTreeMap::from([(Family::Ipv4, Some(held))]),
            };
            let (too_open, foreign) = mismatches(&config, &wants, &holdings);
            assert_eq!(too_open, Vec::<String>::new());
            assert_eq!(foreign.len(), 1, "{foreign:?}");
            foreign[0].clone()
        };
        assert_eq!(
            warning("-p tcp -m tcp --dport 22 -j DROP"),
            "IPv4: `-A INPUT -p tcp -m tcp --dport 22 -j DROP` is not portlocker's and closes ssh \
             22/tcp, which the control file opens; remove it with \
             `/sbin/iptables -w 10 -D INPUT -p tcp -m tcp --dport 22 -j DROP`"
        );
        assert_eq!(
            warning("-j DROP"),
            "IPv4: `-A INPUT -j DROP` is not portlocker's and closes ssh 22/tcp, which the control \
             file opens; it drops every port no rule before it accepts, so accept 22/tcp in a rule \
             of your own before it"
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
