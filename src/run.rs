//! One cron run, step by step: the wanted state in, the firewall made to
//! match, the host read back and judged by the evaluator, the state, log,
//! page and metrics out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, Utc};

use crate::config::{Config, Family, ServiceName, Unnamed};
use crate::exit::Exit;
use crate::firewall::eval::Cited;
use crate::firewall::host::{self, Recall};
use crate::firewall::leftovers;
use crate::firewall::model::{self, Change, Holdings, PortState};
use crate::firewall::plan::{self, SourcesSeen};
use crate::firewall::ruleset::{Host, Manager};
use crate::firewall::truth::{self, Mismatch};
use crate::firewall::{self, Remedy};
use crate::intake;
use crate::intake::intent::{self, Resolved, Starts, Want, Wanted};
use crate::intake::state::{LastRun, Loaded, State};
use crate::report::logging;
use crate::report::metrics;
use crate::report::notify;
use crate::report::quiet::{self, Seen};
use crate::report::status::{self, Freshness, Report, ServiceRow};
use crate::sys::files;
use crate::sys::runner::{CommandError, Runner};

/// The state for a run, and whether it was lost. A damaged one is reported
/// in `problems` (the run fails) and the run goes on from an empty state:
/// with `default = "close"` that closes every service.
pub(crate) fn load_state(config: &Config, problems: &mut Vec<String>) -> (State, bool) {
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

/// With `default = "close"`, services no file opened are closed.
fn close_unnamed(config: &Config) -> bool {
    config.firewall.default == Unnamed::Close
}

/// What the owner wants now, at `now`; opens that ended go to the log.
pub(crate) fn resolve(
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
pub(crate) fn sources_seen(before: &Wanted, after: &Wanted) -> SourcesSeen {
    let mut seen = intent::sources_of(before);
    for (service, sources) in intent::sources_of(after) {
        seen.entry(service).or_default().extend(sources);
    }
    seen
}

/// A run that holds the lock, at `run_at`, with `runner` at the firewall
/// seam (the property tests drive it with an in-memory iptables).
pub fn run_locked<'a, R: Runner + 'a>(
    config: &'a Config,
    offline: bool,
    runner: R,
    run_at: DateTime<FixedOffset>,
) -> Exit {
    let started = Instant::now();
    // What the run says is told at its end, as `quiet::decide` finds.
    logging::hold();
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
        false => reconcile(
            config,
            runner,
            &resolved.wants(),
            &seen,
            docker,
            run_at.to_utc(),
            &leftovers::Elsewhere::of(config, &state).sparing(unasked(config, &resolved)),
        ),
    };
    if outcome.elsewhere_clean {
        leftovers::remember(config, &mut state);
    }
    // A count starts only once its open is in the firewall: all of the
    // work done, or the service let in somewhere all the same, so that an
    // open made ends in time even while other work keeps failing.
    for (line, start) in &resolved.new_starts {
        if outcome.failure.is_none()
            || lets_in(config, &outcome.host, &intake.wanted, line, run_at.to_utc())
        {
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

    let mut failure = (!failure.is_empty()).then_some(failure);
    state.last_run = Some(LastRun {
        at: run_at,
        ok: failure.is_none(),
        failure: failure.clone(),
        duration_ms: started.elapsed().as_millis() as u64,
    });

    let mut report = report(
        config,
        &outcome.host,
        Some(&resolved),
        failure.clone(),
        run_at,
    );
    report.run_at = run_at;
    report.control_file = state.last_good.as_ref().map(Freshness::of);
    report.notices = notices(config, &outcome.holdings, outcome.notices);
    if config.status_file.is_some() {
        report.backend = firewall::backend(config);
    }
    publish(config, &report, state.last_run.as_ref());

    // What this run tells, against what runs before it told; kept in the
    // same save as the rest of the state.
    let content = state
        .last_good
        .as_ref()
        .map_or("", |good| good.body.as_str());
    let seen = Seen {
        notes: quiet::fingerprint(content, &logging::held_notes()),
        changed: outcome.changes > 0,
        failure: failure.as_deref(),
        at: run_at,
    };
    let (mut telling, told) = quiet::decide(&before.told, &seen, config.notify.repeat_after);
    state.told = told;
    let mut not_saved = Vec::new();
    save(config, &state, &mut not_saved);
    if let Some(reason) = not_saved.first() {
        let more = match &failure {
            None => reason.clone(),
            Some(failure) => format!("{failure}, and {reason}"),
        };
        if let Some(last_run) = &mut state.last_run {
            last_run.ok = false;
            last_run.failure = Some(more.clone());
        }
        // What was told cannot be kept, so the next run would not know it: tell it all.
        let seen = Seen {
            failure: Some(&more),
            ..seen
        };
        telling = quiet::decide(&before.told, &seen, config.notify.repeat_after)
            .0
            .everything();
        report.failure = Some(more.clone());
        publish(config, &report, state.last_run.as_ref());
        failure = Some(more);
    }

    let exit = match &failure {
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
                target: logging::SUMMARY,
                "run ok from {from}: {changed}; {}",
                states_in_words(&report)
            );
            Exit::Ok
        }
        Some(reason) => {
            log::error!(target: logging::SUMMARY, "run failed: {reason}");
            Exit::Failed
        }
    };
    logging::release(&telling);

    // Last, when the firewall work is done and kept: a notice cannot delay or undo it.
    let changes = match outcome.changes {
        0 => Vec::new(),
        n => changed_in_words(&report, &outcome.touched, n),
    };
    let run = notify::Run {
        host: &config.host_name,
        at: run_at,
        series: telling.series.as_ref(),
        changes: &changes,
        failure: failure.as_deref(),
    };
    if let Some(notice) = notify::notice(&run) {
        notify::send(config, &notice, offline);
    }
    exit
}

/// What a run that made `count` changes changed, one line per service
/// whose rules changed, in its state now (`vpn open until …`).
fn changed_in_words(report: &Report, touched: &BTreeSet<String>, count: usize) -> Vec<String> {
    let mut lines: Vec<String> = report
        .services
        .iter()
        .filter(|row| touched.contains(&row.name))
        .map(|row| {
            let state = row_in_words(row);
            match row.note.as_str() {
                "" => state,
                note if note.starts_with("until ") || note.starts_with("from ") => {
                    format!("{state} {note}")
                }
                note => format!("{state} ({note})"),
            }
        })
        .collect();
    for gone in touched {
        if !report.services.iter().any(|row| &row.name == gone) {
            lines.push(format!(
                "{gone}: its rules were removed (it is no longer in the config)"
            ));
        }
    }
    if lines.is_empty() {
        let changes = if count == 1 { "change" } else { "changes" };
        lines.push(format!(
            "portlocker's own rules were put right ({count} {changes}); no service changed"
        ));
    }
    lines
}

/// Writes the status page and the metrics for `report`; a write that fails is a warning.
pub(crate) fn publish(config: &Config, report: &Report, last_run: Option<&LastRun>) {
    if let Some(path) = &config.status_file
        && let Err(error) = files::write_atomic(path, status::render(report).as_bytes(), 0o644)
    {
        log::warn!("status page not updated: {error:#}");
    }
    if let (Some(path), Some(last_run)) = (&config.metrics_file, last_run)
        && let Err(error) =
            files::write_atomic(path, metrics::render(report, last_run).as_bytes(), 0o644)
    {
        log::warn!("metrics not updated: {error:#}");
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
fn lets_in(config: &Config, host: &Host, wanted: &Wanted, line: &str, now: DateTime<Utc>) -> bool {
    let Some(service) = wanted
        .iter()
        .find(|(_, lines)| lines.iter().any(|d| d.render() == line))
        .map(|(service, _)| service)
    else {
        return false;
    };
    config.families().into_iter().any(|family| {
        !matches!(
            truth::service_state(config, host, family, service, now).state,
            PortState::Closed | PortState::Unknown
        )
    })
}

/// What the owner should know about this machine besides the services.
fn notices(config: &Config, holdings: &Holdings, mut notices: Vec<String>) -> Vec<String> {
    let has_ipv6 = Path::new("/proc/net/if_inet6").exists();
    if config.firewall.ipv6 && !has_ipv6 {
        notices.push("IPv6 is not available in this kernel: set firewall.ipv6 = false".into());
    }
    if !config.firewall.ipv6 && has_ipv6 {
        notices.push(
            "IPv6 is not managed (firewall.ipv6 = false), but this host has IPv6: every port \
             portlocker closes stays open over IPv6 unless another firewall closes it"
                .into(),
        );
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
pub(crate) fn wait_jitter(jitter: Duration) {
    use std::hash::{BuildHasher, Hasher};
    if jitter.is_zero() {
        return;
    }
    // A randomly keyed hash: random enough to spread requests, no extra crate.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let pause = Duration::from_millis(random % (jitter.as_millis() as u64 + 1));
    // Differs every run: for -v only, never the log (a quiet run logs one line).
    log::debug!("waiting {} ms before fetching (jitter)", pause.as_millis());
    std::thread::sleep(pause);
}

/// What reconciling did.
#[derive(Debug)]
struct Reconciled {
    /// What portlocker's part of the firewall holds after it.
    holdings: Holdings,
    /// The host's whole way in after it, as the evaluator judges it.
    host: Host,
    /// Commands that changed the firewall.
    changes: usize,
    /// The services whose rules those changes were (by name: a service
    /// taken out of the config too).
    touched: BTreeSet<String>,
    /// Repairs and rules of others worth showing on the status page.
    notices: Vec<String>,
    failure: Option<String>,
    /// The backend the config does not name is known to hold nothing of
    /// portlocker's: this run looked and found it so, or had no need to.
    elsewhere_clean: bool,
}

impl Reconciled {
    /// Nothing done, nothing read.
    fn idle(config: &Config) -> Reconciled {
        Reconciled {
            holdings: Holdings::unknown(config),
            host: Host::default(),
            changes: 0,
            touched: BTreeSet::new(),
            notices: Vec::new(),
            failure: None,
            elsewhere_clean: false,
        }
    }
}

/// Makes the firewall hold what `wants` asks, then reads the host back and
/// judges it: a service asked closed that is not closed fails the run,
/// naming the rule that lets it through.
fn reconcile<'a, R: Runner + 'a>(
    config: &'a Config,
    runner: R,
    wants: &BTreeMap<ServiceName, Want>,
    seen: &SourcesSeen,
    docker: bool,
    now: DateTime<Utc>,
    elsewhere: &leftovers::Elsewhere,
) -> Reconciled {
    // What the plan read, the verdicts read again without a second process.
    let mut runner = Recall::new(runner);
    let mut backend = firewall::backend_for(config, &mut runner);
    let moved = elsewhere.moved_chain();
    let enforced = match enforce(config, backend.as_mut(), wants, seen, (docker, moved)) {
        Ok(enforced) => enforced,
        Err(reason) => {
            return Reconciled {
                failure: Some(format!("{reason}; nothing was changed")),
                ..Reconciled::idle(config)
            };
        }
    };
    let Enforced {
        holdings,
        errors,
        made,
    } = enforced;
    for error in errors.iter().filter(|error| !error.after_hang()) {
        log::error!("{error}");
    }
    let mut notices = moved_jumps(config, &made);
    let (mut host, _) = backend.read_host();
    notices.extend(firewalld_warning(config, &host));
    let (too_open, foreign_closes) = mismatches(config, wants, &host, now);
    for warning in &foreign_closes {
        log::warn!("{warning}");
    }
    notices.extend(foreign_closes);
    // Rules portlocker left where it no longer looks are removed only once
    // the configured backend holds what the owner asked, read back: until
    // then they may be all that keeps a port closed.
    let right = errors.is_empty() && too_open.is_empty();
    let mut tidied_changes = 0;
    let mut elsewhere_clean = elsewhere.is_empty();
    if right {
        let tidied = backend.tidy();
        tidied_changes = tidied.changes;
        notices.extend(tidied.notices);
    }
    drop(backend);
    if right && !elsewhere.is_empty() {
        let swept = leftovers::sweep(elsewhere, &mut runner);
        tidied_changes += swept.removed.len();
        notices.extend(swept.tell_run());
        elsewhere_clean = swept.clean();
    }
    if tidied_changes > 0 {
        // What was removed may have been all that closed a port.
        host = host::read(config, &mut runner, &mut Vec::new()).0;
    }
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
        host,
        changes: made.len() + tidied_changes,
        touched: made.iter().filter_map(service_of).collect(),
        notices,
        failure,
        elsewhere_clean,
    }
}

/// What making the firewall match did.
struct Enforced {
    /// portlocker's part, read back after the changes.
    holdings: Holdings,
    errors: Vec<CommandError>,
    /// Every change made.
    made: Vec<Change>,
}

/// Reads portlocker's part, plans, applies, and reads it back; Err when
/// nothing can be done (the backend cannot run, or needs root).
fn enforce(
    config: &Config,
    backend: &mut dyn firewall::FirewallBackend,
    wants: &BTreeMap<ServiceName, Want>,
    seen: &SourcesSeen,
    (docker, moved_chain): (bool, bool),
) -> Result<Enforced, String> {
    backend.preflight()?;
    let (mut holdings, mut errors) = backend.observe(docker);
    if errors.iter().any(CommandError::needs_root) {
        return Err(NEEDS_ROOT.to_owned());
    }
    let mut steps = plan::plan(config, wants, &holdings, seen);
    if moved_chain {
        steps.extend(plan::old_jumps(config, &holdings));
    }
    let mut applied = backend.apply(&steps, &mut holdings);
    if applied.errors.iter().any(CommandError::lacks_time_match) {
        // Deadlines then end only when a run comes after them, as before.
        log::warn!(
            "this kernel has no xt_time match: an open that ends is closed by the first run after \
             its deadline, not by the kernel at the deadline"
        );
        let wants = intent::without_deadlines(wants);
        let steps = plan::plan(config, &wants, &holdings, seen);
        applied = backend.apply(&steps, &mut holdings);
    }
    errors.extend(applied.errors);
    if !applied.made.is_empty() {
        // What the firewall holds now, as it said on committing the changes
        // or read back — not what the changes should have made: the verdicts,
        // the page and the metrics must tell what is there.
        let (read_back, read_errors) = match applied.confirmed {
            Some(confirmed) => (confirmed, Vec::new()),
            None => backend.observe(docker),
        };
        holdings = read_back;
        errors.extend(read_errors);
    }
    Ok(Enforced {
        holdings,
        errors,
        made: applied.made,
    })
}

/// A notice per family whose jump to portlocker's chain had to be moved
/// back to the top of INPUT.
fn moved_jumps(config: &Config, made: &[Change]) -> Vec<String> {
    let mut notices = Vec::new();
    for family in config.families() {
        let of_family = |change: &&Change| change.family() == family;
        let deleted = made
            .iter()
            .filter(of_family)
            .any(|c| matches!(c, Change::DeleteJump { .. }));
        let inserted = made
            .iter()
            .filter(of_family)
            .any(|c| matches!(c, Change::InsertJump { .. }));
        if deleted && inserted {
            let notice = format!(
                "{family}: the jump to {} was not first in INPUT; it was moved back to the top",
                config.firewall.chain
            );
            log::warn!("{notice}");
            notices.push(notice);
        }
    }
    notices
}

/// With firewalld here and the iptables backend, every start and reload of
/// firewalld empties the tables portlocker's rules are in: said (and
/// logged) each run, told once by the quiet rules.
pub(crate) fn firewalld_warning(config: &Config, host: &Host) -> Option<String> {
    let here = host.managers().contains(&Manager::Firewalld);
    (here && config.firewall.backend == crate::config::BackendKind::Iptables).then(|| {
        let warning = "firewalld is running here: every start and reload of firewalld empties \
                       iptables' tables, portlocker's rules with them, until the next run; set \
                       backend = \"nftables\" in [firewall], whose table firewalld leaves alone"
            .to_owned();
        log::warn!("{warning}");
        warning
    })
}

/// The configured services nothing in force asks anything of: with
/// `default = "keep"`, what the firewall holds of them stays.
fn unasked(config: &Config, resolved: &Resolved) -> BTreeSet<String> {
    let wants = resolved.wants();
    config
        .services
        .keys()
        .filter(|service| !wants.contains_key(*service))
        .map(ToString::to_string)
        .collect()
}

/// The service a change is about, if it is about one.
fn service_of(change: &Change) -> Option<String> {
    match change {
        Change::Append(rule) | Change::Delete(rule) => Some(rule.service.to_string()),
        Change::DeleteListed { spec, .. } => model::tag_of(spec)
            .and_then(|tag| tag.strip_prefix("portlocker:"))
            .filter(|name| ServiceName::new(name).is_ok())
            .map(str::to_owned),
        _ => None,
    }
}

/// Where the host, as the evaluator judges it, differs from what is
/// wanted: ports more open than asked (a failure, with why), and what of
/// others closes a port the control file opens (a warning, with what can be
/// done: the command that removes a rule of the owner's, the manager whose
/// rule it is, never the removal of a default deny or another manager's rule).
fn mismatches(
    config: &Config,
    wants: &BTreeMap<ServiceName, Want>,
    host: &Host,
    now: DateTime<Utc>,
) -> (Vec<String>, Vec<String>) {
    let mut too_open = Vec::new();
    let mut foreign = Vec::new();
    for path in host.families.values().flatten() {
        let family = path.family;
        for mismatch in truth::mismatches(config, wants, path, now) {
            let said = match mismatch {
                Mismatch::TooOpen {
                    service,
                    ports,
                    state,
                    passed_by,
                    reason,
                } => {
                    let asked = match wants[&service] {
                        Want::Closed => "closed",
                        _ => "open to its sources only",
                    };
                    // The rule that lets it through, where one does; else why.
                    let why = match passed_by.filter(|_| !reason.starts_with("published")) {
                        Some(by) if by.rule.is_some() => format!("{} lets it through first", by.shown()),
                        _ => reason,
                    };
                    too_open.push(format!(
                        "{family}: {service} {ports} should be {asked} but is {}: {why}",
                        state.as_str()
                    ));
                    continue;
                }
                Mismatch::ClosedByOthers { service, ports, by } => by
                    .iter()
                    .map(|by| {
                        format!(
                            "{family}: {} closes {service} {ports}, which the control file opens; {}",
                            named(by),
                            advice(config, by, ports)
                        )
                    })
                    .collect(),
                Mismatch::SourceShut {
                    service,
                    ports,
                    source,
                    by,
                } => by
                    .iter()
                    .map(|by| {
                        format!(
                            "{family}: {} closes {service} {ports} to {source}, which the control \
                             file opens it to; {}",
                            named(by),
                            advice(config, by, ports)
                        )
                    })
                    .collect(),
                Mismatch::ClosedBySharer {
                    service,
                    ports,
                    other,
                } => vec![format!(
                    "{family}: {service} {ports} stays closed: it shares the port with \
                     {other}, which the control file closes"
                )],
            };
            for warning in said {
                if !foreign.contains(&warning) {
                    foreign.push(warning);
                }
            }
        }
    }
    (too_open, foreign)
}

/// A rule (or policy) of others as a message's subject, with whose it is:
/// `` `RULE` is not portlocker's and``.
pub(crate) fn named(by: &Cited) -> String {
    match (&by.rule, by.manager) {
        (Some(_), Some(manager)) => format!("{} is {manager}'s and", by.shown()),
        (Some(_), None) => format!("{} is not portlocker's and", by.shown()),
        (None, _) => by.shown(),
    }
}

/// What the owner can do about `by`, which closes `ports`.
pub(crate) fn advice(config: &Config, by: &Cited, ports: crate::config::PortSpec) -> String {
    match firewall::remedy(config, by) {
        Remedy::OwnedBy(manager) => format!("let {ports} in through {manager}"),
        Remedy::Remove(command) => format!("remove it with `{command}`"),
        Remedy::DefaultDeny if by.rule.is_none() => {
            format!("accept {ports} in a rule of your own in that chain")
        }
        Remedy::DefaultDeny => format!(
            "it drops every port no rule before it accepts, so accept {ports} in a rule of your \
             own before it"
        ),
    }
}

pub(crate) const NEEDS_ROOT: &str = "changing the firewall needs root: run portlocker as root (from root's crontab), or try --dry-run";

pub(crate) fn summarise_errors(errors: &[CommandError]) -> Option<String> {
    match errors {
        [] => None,
        [only] => Some(format!("a firewall command failed: {only}")),
        [first, rest @ ..] => Some(format!(
            "{} firewall commands failed, the first: {first}",
            rest.len() + 1
        )),
    }
}

/// The report of a run for the status page and the summary line, the
/// services in the config's order, each state as the evaluator finds it
/// in `host`, with why.
pub(crate) fn report(
    config: &Config,
    host: &Host,
    resolved: Option<&Resolved>,
    failure: Option<String>,
    now: DateTime<FixedOffset>,
) -> Report {
    let services = config
        .services_in_order()
        .into_iter()
        .map(|(service, specs)| {
            let found: Vec<(Family, truth::ServiceState)> = config
                .families()
                .into_iter()
                .map(|family| {
                    (
                        family,
                        truth::service_state(config, host, family, service, now.to_utc()),
                    )
                })
                .collect();
            ServiceRow {
                name: service.to_string(),
                note: resolved
                    .and_then(|r| r.intents.get(service))
                    .map(|intent| intent.note.clone())
                    .unwrap_or_default(),
                asked: asked(config, resolved, service),
                ports: specs.iter().map(ToString::to_string).collect(),
                states: found
                    .iter()
                    .map(|(family, found)| (*family, found.state))
                    .collect(),
                reasons: found
                    .into_iter()
                    .map(|(family, found)| (family, found.reason))
                    .collect(),
            }
        })
        .collect();
    Report {
        host: config.host_name.clone(),
        run_at: now,
        every: config.every,
        failure,
        services,
        control_file: None,
        backend: None,
        notices: Vec::new(),
    }
}

/// What the control file asks of `service`, per family: a source opens
/// nothing in the other.
fn asked(
    config: &Config,
    resolved: Option<&Resolved>,
    service: &ServiceName,
) -> BTreeMap<Family, PortState> {
    let Some(intent) = resolved.and_then(|r| r.intents.get(service)) else {
        return BTreeMap::new();
    };
    config
        .families()
        .into_iter()
        .map(|family| {
            let state = match &intent.want {
                Want::Closed => PortState::Closed,
                Want::Open(_) => PortState::Open,
                Want::OpenTo(sources) if sources.keys().any(|net| in_family(net, family)) => {
                    PortState::OpenToSources
                }
                Want::OpenTo(_) => PortState::Closed,
            };
            (family, state)
        })
        .collect()
}

fn in_family(net: &ipnet::IpNet, family: Family) -> bool {
    match family {
        Family::Ipv4 => matches!(net, ipnet::IpNet::V4(_)),
        Family::Ipv6 => matches!(net, ipnet::IpNet::V6(_)),
    }
}

/// `ssh closed, web open, vpn closed on IPv4 and open on IPv6`.
fn states_in_words(report: &Report) -> String {
    let rows: Vec<String> = report.services.iter().map(row_in_words).collect();
    rows.join(", ")
}

/// `ssh closed`, or `vpn closed on IPv4 and open on IPv6`.
fn row_in_words(row: &ServiceRow) -> String {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The moment verdicts are read at in tests.
    fn test_now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .to_utc()
    }

    #[test]
    fn a_change_is_told_per_service_whose_rules_changed_in_its_state_now() {
        use crate::config::Family;
        let row = |name: &str, states: &[PortState], note: &str| ServiceRow {
            reasons: BTreeMap::new(),
            name: name.into(),
            ports: vec!["22/tcp".into()],
            states: [Family::Ipv4, Family::Ipv6]
                .into_iter()
                .zip(states.iter().copied())
                .collect(),
            asked: BTreeMap::new(),
            note: note.into(),
        };
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-25T14:05:00+01:00").unwrap();
        let report = Report {
            host: "web-1".into(),
            run_at: at,
            every: chrono::TimeDelta::minutes(5),
            failure: None,
            services: vec![
                row(
                    "ssh",
                    &[PortState::Closed; 2],
                    "the open ended 2026-11-25 14:00 +01:00",
                ),
                row(
                    "vpn",
                    &[PortState::Open; 2],
                    "until 2026-11-25 18:00 +01:00",
                ),
                row(
                    "web",
                    &[PortState::OpenToSources, PortState::Closed],
                    "from 198.51.100.0/24",
                ),
                row("mosh", &[PortState::Open; 2], ""),
            ],
            control_file: None,
            backend: None,
            notices: Vec::new(),
        };
        let touched = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            changed_in_words(&report, &touched(&["web", "ssh", "vpn", "old"]), 7),
            [
                "ssh closed (the open ended 2026-11-25 14:00 +01:00)",
                "vpn open until 2026-11-25 18:00 +01:00",
                "web open to sources on IPv4 and closed on IPv6 from 198.51.100.0/24",
                "old: its rules were removed (it is no longer in the config)",
            ]
        );
        assert_eq!(
            changed_in_words(&report, &touched(&[]), 1),
            ["portlocker's own rules were put right (1 change); no service changed"]
        );
    }

    /// A run that opens ssh where a rule of others drops it says how to
    /// stop that; for a default deny, never by deleting it, which would
    /// open every other port.
    #[test]
    fn a_rule_of_others_closing_an_open_port_gets_safe_advice() {
        use crate::config::Family;
        use crate::firewall::model::{ChainRules, FamilyHoldings, Listed, split_listed};
        let config = Config::parse(
            "source = \"-\"\n[firewall]\niptables = \"/sbin/iptables\"\nipv6 = false\n[services]\nssh = 22\n",
        )
        .unwrap();
        let wants = BTreeMap::from([(ServiceName::new("ssh").unwrap(), Want::Open(None))]);
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
            let host = crate::firewall::host::of_holdings(&config, &holdings);
            let (too_open, foreign) = mismatches(&config, &wants, &host, test_now());
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
}
