//! One cron run, step by step: the wanted state in, the firewall made to
//! match, the host read back and judged by the evaluator, the state, log,
//! page and metrics out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, Local, Utc};

use crate::config::{Config, Family, ServiceName, Unnamed};
use crate::exit::Exit;
use crate::firewall::forward::Mirror;
use crate::firewall::host::{self, Recall};
use crate::firewall::leftovers;
use crate::firewall::model::{self, Change, Holdings, Listed, PortState};
use crate::firewall::plan::{self, SourcesSeen, Unwritable};
use crate::firewall::reasons;
use crate::firewall::ruleset::{Host, Manager};
use crate::firewall::truth::{self, Mismatch};
use crate::firewall::{self, Applied, Tidied};
use crate::intake;
use crate::intake::fetch::Fetcher;
use crate::intake::intent::{self, Resolved, Starts, Want, Wanted};
use crate::intake::state::{self, LastRun, Loaded, Saved, State, WipeEpisode};
use crate::report::logging;
use crate::report::metrics;
use crate::report::notify;
use crate::report::page;
use crate::report::quiet::{self, Seen};
use crate::report::status::{FamilyView, Freshness, Report, ServiceRow};
use crate::report::wiped;
use crate::sys::clock::show_duration;
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
        &Local,
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

/// What a run is asked to be, beyond the config: what the caller injects.
pub struct Occasion<'a> {
    /// Enforce the last good control file without fetching.
    pub offline: bool,
    /// The moment the run is at (its deadlines, its state, its page).
    pub at: DateTime<FixedOffset>,
    /// What fetches the control file: `watch` keeps one alive across runs.
    pub fetcher: &'a Fetcher,
    /// A moment after the last run that the caller saw portlocker's rules
    /// whole (watch's last look), for what a wipe found says.
    pub seen_in_place: Option<DateTime<FixedOffset>>,
    /// Whether a good run that changed nothing logs its summary line
    /// (cron's runs: each; watch's, every few seconds: now and then).
    pub log_unchanged: bool,
    /// Warnings the caller found, told by the run's quiet rules.
    pub notes: Vec<String>,
    /// Why the run fails whatever it does (the config given could not be
    /// used, and the last one kept is enforced): on its page, its metrics
    /// and its state as on its exit.
    pub failing: Option<String>,
    /// Whether the network may be used for a notice (not at boot, before it is up).
    pub network: bool,
}

/// A one-shot run that holds the lock, at `run_at`, with `runner` at the
/// firewall seam (the property tests drive it with an in-memory iptables).
#[cfg(test)]
pub fn run_locked<'a, R: Runner + 'a>(
    config: &'a Config,
    offline: bool,
    runner: R,
    run_at: DateTime<FixedOffset>,
) -> Exit {
    let fetcher = Fetcher::new(&config.fetch);
    let occasion = Occasion {
        offline,
        at: run_at,
        fetcher: &fetcher,
        seen_in_place: None,
        log_unchanged: true,
        notes: Vec::new(),
        failing: None,
        network: !offline,
    };
    run_as(config, runner, &occasion)
}

/// A run that holds the lock, as `occasion` says.
pub fn run_as<'a, R: Runner + 'a>(config: &'a Config, runner: R, occasion: &Occasion) -> Exit {
    let started = Instant::now();
    // What the run says is told at its end, as `quiet::decide` finds.
    logging::hold();
    for note in &occasion.notes {
        log::warn!("{note}");
    }
    let mut asked = take_in(config, occasion);
    let outcome = enforce_asked(config, runner, &asked, occasion.at);
    settle(config, &mut asked, &outcome, occasion.at);
    let mut told = tell(config, &mut asked, &outcome, occasion, started);
    keep(config, &mut asked, &mut told, occasion.at);
    let exit = summarise(config, &told, &outcome, occasion);
    logging::release(&told.telling);
    // Last, when the firewall work is done and kept: a notice cannot delay or undo it.
    notify_owner(config, &told, &outcome, occasion);
    exit
}

/// What a run takes in: the state as kept before it and as it goes on,
/// what is asked now, and what went wrong on the way.
struct Asked {
    state: State,
    before: State,
    problems: Vec<String>,
    intake: intake::Intake,
    resolved: Resolved,
    /// What earlier runs of this config knew: sources, and services.
    known: Known,
}

/// What the runs of this config (this state) have known, beyond this run's
/// file: every source that may have a rule, and every service named (None
/// when the state was lost: then any tagged rule may be this config's).
pub(crate) struct Known {
    sources: SourcesSeen,
    services: Option<BTreeSet<String>>,
    /// An earlier run found Docker here.
    docker_seen: bool,
}

/// Loads the state, takes in the control file, and resolves what is asked
/// now; the new wanted state and the start of every count are kept before
/// the firewall work, so a run killed during it still remembers what the
/// owner asked.
fn take_in(config: &Config, occasion: &Occasion) -> Asked {
    let run_at = occasion.at;
    let mut problems = Vec::new();
    let (mut state, lost) = load_state(config, &mut problems);
    for carried in intake::carry_renames(config, &mut state) {
        log::warn!("{carried}");
    }
    let before = state.clone();
    let (kept, _) = intake::kept_wanted(config, &state);
    let intake = intake::take(
        config,
        occasion.fetcher,
        &mut state,
        occasion.offline,
        run_at,
    );
    problems.extend(occasion.failing.clone());
    problems.extend(intake.problem.clone());
    match occasion.offline {
        false => state.intake_failure = intake.problem.clone(),
        true => problems.extend(state.intake_failure.clone()),
    }
    state.configured = config.services.keys().map(ToString::to_string).collect();
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
    // An open whose count cannot be kept is not made: every run would
    // begin it again, and it would never end.
    let mut counting = state.clone();
    counting.opens.extend(resolved.new_starts.clone());
    // Never with the room kept for a close: a count is no close.
    if counting != before && !save(config, &counting, false, &mut problems) {
        let withheld = intent::uncounted(&intake.wanted, &state.opens, run_at, max_open);
        if !withheld.is_empty() {
            resolved = withhold(config, &intake.wanted, &withheld, &state.opens, run_at);
        }
    }
    let known = Known {
        docker_seen: before.docker_seen,
        sources: sources_seen(&kept, &intake.wanted),
        services: (!lost).then(|| {
            let left = before
                .in_place
                .iter()
                .flat_map(|left| left.services.clone());
            (before.wanted.keys().cloned())
                .chain(before.tagged.iter().cloned())
                .chain(before.configured.iter().cloned())
                .chain(left)
                .chain(config.services.keys().map(ToString::to_string))
                .collect()
        }),
    };
    Asked {
        state,
        before,
        problems,
        intake,
        resolved,
        known,
    }
}

/// Makes the firewall hold what is asked, unless there is nothing to
/// enforce and the file was refused: then the firewall is not even read.
fn enforce_asked<'a, R: Runner + 'a>(
    config: &'a Config,
    runner: R,
    asked: &Asked,
    run_at: DateTime<FixedOffset>,
) -> Reconciled {
    if asked.intake.problem.is_some() && asked.resolved.intents.is_empty() {
        return Reconciled::idle(config);
    }
    let spared = unasked(config, &asked.resolved);
    reconcile(
        config,
        runner,
        &asked.resolved.wants(),
        &asked.known,
        config.status_file.is_some(),
        run_at.to_utc(),
        &leftovers::Elsewhere::of(config, &asked.state).sparing(spared),
    )
}

/// What the firewall work means for the state: leftovers known gone, a
/// refused file not kept as good, and each count started once its open is
/// in the firewall.
fn settle(config: &Config, asked: &mut Asked, outcome: &Reconciled, run_at: DateTime<FixedOffset>) {
    let state = &mut asked.state;
    if outcome.elsewhere_clean {
        leftovers::remember(config, state);
    }
    state.docker_seen |= outcome.docker;
    // What is this config's in its place, for the next run to tell from
    // another config's: what a family could not read keeps what was known.
    if outcome.holdings.families.values().all(Option::is_some) {
        let mut tagged = tagged_services(config, &outcome.holdings);
        if let Some(known) = &asked.known.services {
            tagged.retain(|name| known.contains(name));
        }
        state.tagged = tagged;
    }
    if outcome.unwritable && state.last_good != asked.before.last_good {
        // Its lines stay in force as closes; the file is not taken as good.
        log::warn!(
            "the control file is not kept as the last good one: the firewall refused a line of it"
        );
        state.last_good = asked.before.last_good.clone();
    }
    // A service `default = "close"` closed is kept asked closed: switched
    // to "keep", it stays closed through a reboot, as the owner last saw it.
    if close_unnamed(config) {
        for (service, intent) in &asked.resolved.intents {
            let named = asked.intake.wanted.contains_key(service);
            if !named && intent.want == Want::Closed {
                let close = vec![format!("close {service}")];
                state.wanted.entry(service.to_string()).or_insert(close);
            }
        }
    }
    // All of the work done, or the service let in somewhere all the same —
    // by the host as read, or by portlocker's own place as its commit left
    // it (the host may not have been read) — so that an open made ends in
    // time even while other work keeps failing.
    let ours = host::of_holdings(config, &outcome.holdings);
    for (line, start) in &asked.resolved.new_starts {
        let wanted = &asked.intake.wanted;
        let lets_in = |host: &Host| lets_in(config, host, wanted, line, run_at.to_utc());
        if outcome.failure.is_none() || lets_in(&outcome.host) || lets_in(&ours) {
            state.opens.insert(line.clone(), *start);
        }
    }
}

/// What a run tells: its report and failure, a wipe it found, whether it
/// is news, and what the quiet rules let out.
struct Told {
    report: Report,
    failure: Option<String>,
    wipe: WipeSeen,
    news: bool,
    /// The fingerprint the quiet rules were given (`quiet::Seen::notes`).
    notes: String,
    telling: quiet::Telling,
}

/// Builds the report, publishes the page and the metrics, and decides
/// what is told against what runs before told; the state records both.
fn tell(
    config: &Config,
    asked: &mut Asked,
    outcome: &Reconciled,
    occasion: &Occasion,
    started: Instant,
) -> Told {
    let (state, before, run_at) = (&mut asked.state, &asked.before, occasion.at);
    let nothing_kept = state.last_good.is_none() && state.wanted.is_empty();
    let mut report = report(config, &outcome.host, Some(&asked.resolved), None, run_at);
    let (page_failure, failure) = failures(&asked.problems, outcome, nothing_kept, &report);
    report.failure = page_failure;
    report.control_file = state.last_good.as_ref().map(Freshness::of);
    report.notices = notices(config, &outcome.holdings, outcome.notices.clone());
    let wipe = wipe_seen(config, before, &outcome.gone, occasion);
    report.notices.extend(wipe.text.clone());
    if config.status_file.is_some() {
        report.backend = firewall::backend(config);
    }
    // A run enforces again what a reset took away.
    state.reset_at = None;
    state.last_run = Some(LastRun {
        at: run_at,
        ok: failure.is_none(),
        failure: failure.clone(),
        duration_ms: started.elapsed().as_millis() as u64,
    });
    publish(config, &report, state.last_run.as_ref());

    // Putting back a wipe already told is no news, unless the owner asked anew.
    let repair_only = wipe.text.is_some() && !wipe.tell && state.wanted == before.wanted;
    let news = outcome.changes > 0 && !repair_only;
    let content = (state.last_good.as_ref()).map_or("", |good| good.body.as_str());
    let notes = quiet::fingerprint(content, &logging::held_notes());
    let seen = Seen {
        notes: notes.clone(),
        changed: news || wipe.tell,
        failure: failure.as_deref(),
        at: run_at,
    };
    if let Some(text) = &wipe.text {
        // After the fingerprint: a wipe's words change with each, and are
        // told by their own rule (once per episode), not by the notes'.
        match wipe.tell {
            true => log::warn!("{text}"),
            false => log::info!(
                "{text} (told once for wipes less than {} apart)",
                show_duration(config.notify.repeat_after)
            ),
        }
    }
    let (telling, told) = quiet::decide(&before.told, &seen, config.notify.repeat_after);
    state.told = told;
    state.told.wiped = wipe.episode.clone();
    // Where the rules are now, for the next run to tell a wipe; kept as it
    // was when a family could not be read.
    let read = (config.families().into_iter()).all(|f| outcome.holdings.family(f).is_some());
    state.in_place = match read {
        true => wiped::left(
            config,
            &outcome.holdings,
            &report,
            run_at,
            boot_id().as_deref(),
        ),
        false => before.in_place.clone(),
    };
    Told {
        report,
        failure,
        wipe,
        news,
        notes,
        telling,
    }
}

/// Saves the state; a state that cannot be saved fails the run, and is
/// told whole (the next run would not know what this one told).
fn keep(config: &Config, asked: &mut Asked, told: &mut Told, run_at: DateTime<FixedOffset>) {
    let state = &mut asked.state;
    intake::remember_ports(config, state);
    // A save this run already failed to make (its count) is told once.
    let mut problems = asked.problems.clone();
    let known = problems.len();
    let for_a_close = state::may_close(&asked.before, state);
    save(config, state, for_a_close, &mut problems);
    let Some(reason) = problems.get(known) else {
        return;
    };
    let more = match &told.failure {
        None => reason.clone(),
        Some(failure) => format!("{failure}, and {reason}"),
    };
    if let Some(last_run) = &mut state.last_run {
        last_run.ok = false;
        last_run.failure = Some(more.clone());
    }
    let seen = Seen {
        notes: told.notes.clone(),
        changed: told.news || told.wipe.tell,
        failure: Some(&more),
        at: run_at,
    };
    told.telling = quiet::decide(&asked.before.told, &seen, config.notify.repeat_after)
        .0
        .everything();
    told.report.failure = Some(match told.report.failure.take() {
        None => reason.clone(),
        Some(failure) => format!("{failure}, and {reason}"),
    });
    publish(config, &told.report, state.last_run.as_ref());
    told.failure = Some(more);
}

/// The exit, and the run's one summary line: a failure always; success
/// when something changed, or when the occasion logs every run.
fn summarise(config: &Config, told: &Told, outcome: &Reconciled, occasion: &Occasion) -> Exit {
    let Some(reason) = &told.failure else {
        if occasion.log_unchanged || outcome.changes > 0 {
            let changed = match outcome.changes {
                0 => "no change".to_owned(),
                1 => "1 firewall change".to_owned(),
                n => format!("{n} firewall changes"),
            };
            let from = match occasion.offline {
                true => "the last good control file".to_owned(),
                false => config.source.to_string(),
            };
            log::info!(
                target: logging::SUMMARY,
                "run ok from {from}: {changed}; {}",
                states_in_words(&told.report)
            );
        }
        return Exit::Ok;
    };
    log::error!(target: logging::SUMMARY, "run failed: {reason}");
    Exit::Failed
}

/// Sends the owner's notice of this run, when the quiet rules say there is
/// one: a change that is news, a failure to tell, a wipe first seen.
fn notify_owner(config: &Config, told: &Told, outcome: &Reconciled, occasion: &Occasion) {
    let changes = match outcome.changes {
        n if n > 0 && (told.news || told.wipe.tell) => {
            changed_in_words(&told.report, &outcome.touched, n)
        }
        _ => Vec::new(),
    };
    let run = notify::Run {
        host: &config.host_name,
        at: occasion.at,
        series: told.telling.series.as_ref(),
        changes: &changes,
        failure: told.failure.as_deref(),
        wiped: told.wipe.text.as_deref().filter(|_| told.wipe.tell),
    };
    if let Some(notice) = notify::notice(&run) {
        notify::send(config, &notice, !occasion.network);
    }
}

/// Why the run failed: for the page, what failed but for the services not
/// as asked (the page shows those itself); for the log, cron and the exit
/// code, all of it, a lockout included (see the README: a service more
/// closed than asked fails the run, so that cron hears of it).
fn failures(
    problems: &[String],
    outcome: &Reconciled,
    nothing_kept: bool,
    report: &Report,
) -> (Option<String>, Option<String>) {
    let mut before = problems.join("; ");
    if !before.is_empty() && outcome.changes == 0 && nothing_kept {
        before.push_str("; nothing was changed");
    }
    let and = |first: &str, more: Option<&String>| match more {
        None => first.to_owned(),
        Some(more) if first.is_empty() => more.clone(),
        Some(more) => format!("{first}, and {more}"),
    };
    let page = and(&before, outcome.command_failure.as_ref());
    let mut all = and(&before, outcome.failure.as_ref());
    for difference in report.differences().iter().filter(|d| d.lockout()) {
        if !all.is_empty() {
            all.push_str("; ");
        }
        all.push_str(&difference.text());
    }
    let some = |text: String| (!text.is_empty()).then_some(text);
    (some(page), some(all))
}

/// A wipe of portlocker's rules that a run found, and how it is told.
struct WipeSeen {
    /// What was missing, reachable, and since when (`wiped::found`).
    text: Option<String>,
    /// Told: the first of an episode.
    tell: bool,
    episode: Option<WipeEpisode>,
}

/// Whether the rules the run before left in place were `gone` when this
/// run looked, and whether that is told (`report/wiped.rs`).
fn wipe_seen(
    config: &Config,
    before: &State,
    gone: &[(Family, String)],
    occasion: &Occasion,
) -> WipeSeen {
    let boot = boot_id();
    let text = wiped::found(
        config,
        before.in_place.as_ref(),
        gone,
        occasion.seen_in_place,
        boot.as_deref(),
    );
    let (tell, episode) = wiped::decide(
        before.told.wiped.as_ref(),
        text.is_some(),
        occasion.at,
        config.notify.repeat_after,
    );
    WipeSeen {
        text,
        tell,
        episode,
    }
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
        && let Err(error) = files::write_atomic(path, page::render(report).as_bytes(), 0o644)
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

/// Writes the state; a failure is reported in `problems` (unless it is there
/// already), and the run goes on. True when it was saved.
fn save(config: &Config, state: &State, for_a_close: bool, problems: &mut Vec<String>) -> bool {
    let dir = config.state_dir.display();
    match state.save(&config.state_dir, config.fetch.max_bytes, for_a_close) {
        Ok(Saved::Plainly) => true,
        Ok(Saved::NothingKept(why)) => {
            log::warn!(
                "no space could be kept in {dir} for the next save of the state ({why}): if the \
                 disk fills up, a close may not outlive a reboot; free space there"
            );
            true
        }
        Ok(Saved::FromReserve) => {
            let problem = format!(
                "the disk holding {dir} is full: the state was saved only in the space kept \
                 for it, and the next change may find none; free space there"
            );
            tell_once(problem, problems);
            true
        }
        Err(error) => {
            tell_once(format!("the state was not saved: {error:#}"), problems);
            false
        }
    }
}

/// Logs `problem` and adds it to `problems`, unless it is there already.
fn tell_once(problem: String, problems: &mut Vec<String>) {
    if !problems.contains(&problem) {
        log::error!("{problem}");
        problems.push(problem);
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

/// The kernel's id of this boot.
fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_owned())
}

/// What the owner should know about this machine besides the services.
fn notices(config: &Config, holdings: &Holdings, mut notices: Vec<String>) -> Vec<String> {
    notices.extend(ipv6_notice(config));
    if holdings
        .families
        .values()
        .flatten()
        .any(|held| held.docker_user)
    {
        notices.push(
            "Docker is here (a DOCKER-USER chain exists): ports its containers publish bypass \
             INPUT, so portlocker's rules are mirrored where they are forwarded (first in \
             DOCKER-USER; with nftables, table inet portlocker-fwd), matched by the port a \
             connection was sent to"
                .into(),
        );
    }
    notices
}

/// Whether firewall.ipv6 fits this kernel: what the page of every run and
/// `status` (text and JSON) tell alike.
pub(crate) fn ipv6_notice(config: &Config) -> Option<String> {
    let has_ipv6 = Path::new("/proc/net/if_inet6").exists();
    match (config.firewall.ipv6, has_ipv6) {
        (true, false) => {
            Some("IPv6 is not available in this kernel: set firewall.ipv6 = false".into())
        }
        (false, true) => Some(
            "IPv6 is not managed (firewall.ipv6 = false), but this host has IPv6: every port \
             portlocker closes stays open over IPv6 unless another firewall closes it"
                .into(),
        ),
        _ => None,
    }
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
    /// Why reconciling failed: commands that failed, and ports more open
    /// than asked.
    failure: Option<String>,
    /// Commands that failed, alone (the page shows the ports itself).
    command_failure: Option<String>,
    /// The backend the config does not name is known to hold nothing of
    /// portlocker's: this run looked and found it so, or had no need to.
    elsewhere_clean: bool,
    /// What was missing of portlocker's place when the run first looked, per family.
    gone: Vec<(Family, String)>,
    /// The firewall refused a rule the wanted state asks for.
    unwritable: bool,
    /// Docker's chain is here (or was made for it).
    docker: bool,
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
            command_failure: None,
            elsewhere_clean: false,
            gone: Vec::new(),
            unwritable: false,
            docker: false,
        }
    }
}

/// Makes the firewall hold what `wants` asks, then reads the host back and
/// judges it: a service asked closed that is not closed fails the run,
/// naming what lets it through.
fn reconcile<'a, R: Runner + 'a>(
    config: &'a Config,
    runner: R,
    wants: &BTreeMap<ServiceName, Want>,
    known: &Known,
    docker: bool,
    now: DateTime<Utc>,
    elsewhere: &leftovers::Elsewhere,
) -> Reconciled {
    // What the plan read, the verdicts read again without a second process.
    let mut runner = Recall::new(runner);
    let mut backend = firewall::backend_for(config, &mut runner);
    let moved = elsewhere.moved_chain();
    let enforced = match enforce(config, backend.as_mut(), wants, known, (docker, moved)) {
        Ok(enforced) => enforced,
        Err(reason) => {
            let failure = Some(format!("{reason}; nothing was changed"));
            return Reconciled {
                failure: failure.clone(),
                command_failure: failure,
                ..Reconciled::idle(config)
            };
        }
    };
    let Enforced {
        holdings,
        mut errors,
        applied,
        unwritable,
        unusable,
        gone,
    } = enforced;
    // Ports Docker publishes go through forwarding, where the rules on
    // input never see them: portlocker's, as its place now holds them, go
    // there too.
    let mirror = Mirror::of(config, &holdings).knowing_docker(known.docker_seen);
    let forwarded = backend.forward(&mirror, false);
    errors.extend(forwarded.errors);
    if forwarded.restored && applied.made.is_empty() {
        log::warn!(
            "the rules where Docker forwards the ports it publishes did not hold what portlocker's \
             chain holds (another program removed or changed them, or Docker made its chains \
             anew) and were put back: until then, ports Docker publishes that portlocker closes \
             may have been reachable"
        );
    }
    // A way in that cannot be read cannot be told closed: the run fails on it.
    let (read, read_errors) = backend.read_host();
    errors.extend(read_errors);
    // portlocker's own part as its commit left it (or as read back), the
    // rest as read now: a wipe in between is the next run's to tell, as a
    // wipe — in watch, at once.
    let mut host = host::with_ours_if_gone(config, &read, &holdings);
    tell_errors(&errors, &unwritable.said);
    let mut notices = moved_jumps(config, &applied.made);
    notices.extend(strangers_removed(&applied.made));
    if let Some(warning) = firewalld_warning(config, &host) {
        log::warn!("{warning}");
        notices.push(warning);
    }
    // A port more closed than asked is told from the report's rows, with
    // what closes it: the run fails on it (see `failures`).
    let mut too_open = too_open(config, wants, &host, now);
    // Rules portlocker left where it no longer looks are removed only once
    // the configured backend holds what the owner asked, read back: until
    // then they may be all that keeps a port closed.
    let right = errors.is_empty() && too_open.is_empty() && unusable.is_empty();
    let mut tidied = Tidied::default();
    if right {
        tidied = backend.tidy();
    }
    drop(backend);
    let (swept, elsewhere_clean) = match right {
        true => sweep(elsewhere, &mut runner),
        false => (Tidied::default(), elsewhere.is_empty()),
    };
    notices.extend(tidied.notices.into_iter().chain(swept.notices));
    let tidied_changes = tidied.changes + swept.changes;
    if tidied_changes > 0 {
        // What was removed may have been all that closed a port.
        host = host::read(config, &mut runner, &mut Vec::new()).0;
        too_open = self::too_open(config, wants, &host, now);
    }
    let (failure, command_failure) =
        firewall_failures(unusable, &errors, &unwritable.said, too_open);
    Reconciled {
        holdings,
        host,
        changes: applied.made.len() + forwarded.changes + tidied_changes,
        touched: applied.made.iter().filter_map(service_of).collect(),
        notices,
        failure,
        command_failure,
        elsewhere_clean,
        gone,
        unwritable: !unwritable.said.is_empty(),
        docker: forwarded.docker,
    }
}

/// Logs each failed command once (the plan and the verdicts may read the
/// same chain and fail alike), then what could not be written.
fn tell_errors(errors: &[CommandError], unwritten: &[String]) {
    let mut told = BTreeSet::new();
    for error in errors.iter().filter(|error| !error.after_hang()) {
        if told.insert(error.to_string()) {
            log::error!("{error}");
        }
    }
    for said in unwritten {
        log::error!("{said}");
    }
}

/// Why the firewall work failed, and why but for ports more open than
/// asked (the page shows those itself).
fn firewall_failures(
    unusable: Vec<String>,
    errors: &[CommandError],
    unwritten: &[String],
    too_open: Vec<String>,
) -> (Option<String>, Option<String>) {
    let mut commands = unusable;
    commands.extend(summarise_errors(errors));
    commands.extend(unwritten.iter().cloned());
    let command_failure = (!commands.is_empty()).then(|| commands.join("; "));
    let mut reasons = commands;
    reasons.extend(too_open);
    let failure = (!reasons.is_empty()).then(|| reasons.join("; "));
    (failure, command_failure)
}

/// Removes what portlocker left in the backend the config does not name
/// (or in a chain it no longer uses); returns what was done, and whether
/// nothing of portlocker's is left there.
fn sweep<R: Runner>(elsewhere: &leftovers::Elsewhere, runner: &mut R) -> (Tidied, bool) {
    if elsewhere.is_empty() {
        return (Tidied::default(), true);
    }
    let swept = leftovers::sweep(elsewhere, runner);
    let tidied = Tidied {
        changes: swept.removed.len(),
        notices: swept.tell_run(),
    };
    (tidied, swept.clean())
}

/// What making the firewall match did.
struct Enforced {
    /// portlocker's part, read back after the changes.
    holdings: Holdings,
    errors: Vec<CommandError>,
    /// Every change made.
    applied: Applied,
    /// What the firewall refused, and what was done instead.
    unwritable: Unwritable,
    /// Each family that cannot be driven, and why.
    unusable: Vec<String>,
    /// What was missing of portlocker's place when the run first looked.
    gone: Vec<(Family, String)>,
}

/// Reads portlocker's part, plans, commits (again without what the
/// Whether `rule`, tagged in portlocker's place, closes for another config
/// on the same chain: one for a service this config's runs never knew.
/// Such a close is never this run's to remove; what lets a source in is,
/// as it could undo a close of this config's. (A tagged rule of a service
/// this config knows is its own: drift, to repair.)
fn stranger_close(rule: &Listed, known: &Known) -> bool {
    let Some(services) = &known.services else {
        return false;
    };
    let Some(name) = rule.service() else {
        return false;
    };
    let closes = matches!(rule.target(), Some("DROP" | "REJECT"));
    closes && !services.contains(name)
}

/// The services of `holdings`' rules for which `stranger` holds.
fn strangers(
    holdings: &Holdings,
    config: &Config,
    stranger: impl Fn(&Listed) -> bool,
) -> BTreeSet<String> {
    (holdings.families.values().flatten())
        .flat_map(|held| held.tagged(config))
        .filter(|rule| stranger(rule))
        .filter_map(Listed::service)
        .map(str::to_owned)
        .collect()
}

/// The services whose tagged rules portlocker's place holds.
fn tagged_services(config: &Config, holdings: &Holdings) -> BTreeSet<String> {
    (holdings.families.values().flatten())
        .flat_map(|held| held.tagged(config))
        .filter_map(Listed::service)
        .map(str::to_owned)
        .collect()
}

/// firewall refuses), and reads it back; Err when nothing can be done (the
/// backend cannot run, or needs root). A family that cannot be driven is
/// told; the others' work goes on.
fn enforce(
    config: &Config,
    backend: &mut dyn firewall::FirewallBackend,
    wants: &BTreeMap<ServiceName, Want>,
    known: &Known,
    (docker, moved_chain): (bool, bool),
) -> Result<Enforced, String> {
    backend.preflight()?;
    let unusable: Vec<String> = (backend.unusable().into_iter())
        .map(|(family, why)| format!("{family}: {why}; its rules were not changed"))
        .collect();
    let (mut holdings, mut errors) = backend.observe(docker);
    if errors.iter().any(CommandError::needs_root) {
        return Err(NEEDS_ROOT.to_owned());
    }
    let gone = wiped::gone_in(config, &holdings);

    let stranger = |rule: &Listed| stranger_close(rule, known);
    let strangers = strangers(&holdings, config, stranger);
    if !strangers.is_empty() {
        log::warn!(
            "{} holds closes of portlocker's for {}, which this config does not have and its \
             state_dir never named: another config's, on the same chain? They are left as they \
             are; give each config its own firewall.chain and state_dir",
            wiped::place(config),
            strangers.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let (mut applied, unwritable) = firewall::commit(backend, &mut holdings, |refused, held| {
        let held = held.without(config, stranger);
        let mut steps = plan::plan_within(config, wants, &held, &known.sources, refused);
        if moved_chain {
            steps.extend(plan::old_jumps(config, &held));
        }
        steps
    });
    errors.append(&mut applied.errors);
    if !applied.made.is_empty() {
        // What the firewall holds now, as it said on committing the changes
        // or read back — not what the changes should have made: the verdicts,
        // the page and the metrics must tell what is there.
        let (read_back, read_errors) = match applied.confirmed.take() {
            Some(confirmed) => (confirmed, Vec::new()),
            None => backend.observe(docker),
        };
        holdings = read_back;
        errors.extend(read_errors);
    }
    Ok(Enforced {
        holdings,
        errors,
        applied,
        unwritable,
        unusable,
        gone,
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

/// A notice per rule portlocker did not make that a run removed from its
/// own place (nftables' table) and that let something through: what it let
/// in was reachable until then.
fn strangers_removed(made: &[Change]) -> Vec<String> {
    let mut notices = Vec::new();
    for change in made {
        let Change::DeleteListed { family, spec, .. } = change else {
            continue;
        };
        let listed = Listed::new(spec.clone());
        let stranger = listed
            .tag()
            .is_some_and(|tag| tag.starts_with("portlocker:?"));
        let lets_through = !matches!(listed.target(), Some("DROP" | "REJECT"));
        if stranger && lets_through {
            let notice = format!(
                "{family}: a rule portlocker did not make was in its own place ({change}); it \
                 was removed, and what it let through was reachable until this run"
            );
            log::warn!("{notice}");
            notices.push(notice);
        }
    }
    notices
}

/// With firewalld here and the iptables backend, every start and reload of
/// firewalld empties the tables portlocker's rules are in: said (and
/// logged) each run, told once by the quiet rules, and by `check` as a
/// problem: each caller tells it, so `check` says it once.
pub(crate) fn firewalld_warning(config: &Config, host: &Host) -> Option<String> {
    let here = host.managers().contains(&Manager::Firewalld);
    (here && config.firewall.backend == crate::config::BackendKind::Iptables).then(|| {
        "firewalld is running here: every start and reload of firewalld empties \
         iptables' tables, portlocker's rules with them, until the next run; set \
         backend = \"nftables\" in [firewall], whose table firewalld leaves alone"
            .to_owned()
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

/// Where the host, as the evaluator judges it, is more open than wanted: a
/// failure each, naming the rule that lets the port through, or why.
fn too_open(
    config: &Config,
    wants: &BTreeMap<ServiceName, Want>,
    host: &Host,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut too_open = Vec::new();
    for path in host.families.values().flatten() {
        let family = path.family;
        for mismatch in truth::mismatches(config, wants, path, now) {
            let Mismatch::TooOpen {
                service,
                ports,
                state,
                passed_by,
                reason,
            } = mismatch
            else {
                // Closed more than asked: the report's rows tell it.
                continue;
            };
            let asked = match wants[&service] {
                Want::Closed => "closed",
                _ => "open to its sources only",
            };
            // The rule that lets it through, where one does; else why.
            let why = match passed_by.filter(|_| !reason.contains("published by")) {
                Some(by) if by.rule.is_some() => format!("{} lets it through first", by.shown()),
                _ => reason,
            };
            too_open.push(format!(
                "{family}: {service} {ports} should be {asked} but is {}: {why}",
                state.as_str()
            ));
        }
    }
    too_open
}

pub(crate) const NEEDS_ROOT: &str = "changing the firewall needs root: run portlocker as root (from root's crontab), or try --dry-run";

pub(crate) fn summarise_errors(errors: &[CommandError]) -> Option<String> {
    // The plan and the verdicts may read the same chain and fail alike:
    // one failure, however often it was met.
    let mut distinct: Vec<String> = Vec::new();
    for error in errors {
        let said = error.to_string();
        if !distinct.contains(&said) {
            distinct.push(said);
        }
    }
    match &distinct[..] {
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
    let note = |service: &ServiceName| {
        resolved
            .and_then(|r| r.intents.get(service))
            .map(|intent| intent.note.clone())
            .unwrap_or_default()
    };
    let asked = |service: &ServiceName| match resolved.and_then(|r| r.intents.get(service)) {
        Some(intent) => asked_of(config, &intent.want),
        None => BTreeMap::new(),
    };
    let services = config
        .services_in_order()
        .into_iter()
        .map(|(service, specs)| {
            let asked = asked(service);
            let want = resolved
                .and_then(|r| r.intents.get(service))
                .map(|intent| &intent.want);
            ServiceRow {
                name: service.to_string(),
                note: note(service),
                opens: resolved
                    .and_then(|r| r.intents.get(service))
                    .map(|intent| intent.opens.clone())
                    .unwrap_or_default(),
                ports: specs.iter().map(ToString::to_string).collect(),
                families: config
                    .families()
                    .into_iter()
                    .map(|family| {
                        let asked = asked.get(&family).copied();
                        let asking = want.zip(asked);
                        let seen =
                            reasons::seen(config, host, family, service, asking, now.to_utc());
                        FamilyView {
                            family,
                            state: seen.state,
                            asked,
                            reason: seen.reason,
                            advice: seen.advice,
                            shut_out: seen.shut_out,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    Report {
        host: config.host_name.clone(),
        run_at: now,
        every: config.every,
        failure,
        reset_at: None,
        services,
        control_file: None,
        backend: None,
        notices: Vec::new(),
    }
}

/// The state `want` asks for in each family: a source opens nothing in the other.
fn asked_of(config: &Config, want: &Want) -> BTreeMap<Family, PortState> {
    let state = |family| match want {
        Want::Closed => PortState::Closed,
        Want::Open(_) => PortState::Open,
        Want::OpenTo(_) if want.opens_to_all(family) => PortState::Open,
        Want::OpenTo(sources) if sources.keys().any(|net| in_family(net, family)) => {
            PortState::OpenToSources
        }
        Want::OpenTo(_) => PortState::Closed,
    };
    (config.families().into_iter())
        .map(|family| (family, state(family)))
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
    let states: BTreeSet<PortState> = row.families.iter().map(|view| view.state).collect();
    if states.len() == 1 {
        format!("{} {}", row.name, row.families[0].state.as_str())
    } else {
        let each: Vec<String> = row
            .families
            .iter()
            .map(|view| format!("{} on {}", view.state.as_str(), view.family))
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

    /// A failure met twice (the plan's read and the verdicts' read of the
    /// same chain) is one failure, not "2 firewall commands failed".
    #[test]
    fn a_failure_met_twice_is_summed_up_once() {
        use crate::sys::runner::{Command, Failure};
        let failed = |chain: &str| CommandError {
            command: Command {
                program: "/usr/sbin/iptables".into(),
                args: vec!["-S".into(), chain.into()],
                stdin: None,
            },
            failure: Failure::Exited {
                code: 4,
                stderr: "resource busy".into(),
            },
        };
        let twice = [failed("INPUT"), failed("INPUT")];
        let said = summarise_errors(&twice).unwrap();
        assert!(said.starts_with("a firewall command failed: "), "{said}");
        let two = [failed("INPUT"), failed("PORTLOCKER")];
        let said = summarise_errors(&two).unwrap();
        assert!(said.starts_with("2 firewall commands failed"), "{said}");
    }

    #[test]
    fn a_change_is_told_per_service_whose_rules_changed_in_its_state_now() {
        use crate::config::Family;
        let row = |name: &str, states: &[PortState], note: &str| ServiceRow {
            name: name.into(),
            ports: vec!["22/tcp".into()],
            families: [Family::Ipv4, Family::Ipv6]
                .into_iter()
                .zip(states.iter().copied())
                .map(|(family, state)| FamilyView {
                    family,
                    state,
                    asked: None,
                    reason: String::new(),
                    advice: None,
                    shut_out: false,
                })
                .collect(),
            opens: Vec::new(),
            note: note.into(),
        };
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-25T14:05:00+01:00").unwrap();
        let report = Report {
            host: "web-1".into(),
            run_at: at,
            every: chrono::TimeDelta::minutes(5),
            failure: None,
            reset_at: None,
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

    /// The lockout: `open ssh`, and a rule of others that drops
    /// 22. The report says closed (asked: open) with the rule, and the run
    /// fails with the rule and how to remove it; the page's failure is left
    /// to the rows.
    #[test]
    fn a_lockout_is_a_difference_and_fails_the_run_with_its_fix() {
        use crate::firewall::model::{ChainRules, FamilyHoldings, Listed, split_listed};
        use crate::intake::intent::Intent;
        let config = Config::parse(
            "source = \"-\"\n[firewall]\niptables = \"/sbin/iptables\"\nipv6 = false\n[services]\nssh = 22\n",
        )
        .unwrap();
        let held = FamilyHoldings {
            input: ChainRules {
                policy: Some("ACCEPT".into()),
                rules: vec![Listed::new(split_listed(
                    "-p tcp -m tcp --dport 22 -j DROP",
                ))],
            },
            ..FamilyHoldings::default()
        };
        let holdings = Holdings {
            families: BTreeMap::from([(Family::Ipv4, Some(held))]),
        };
        let resolved = Resolved {
            intents: BTreeMap::from([(
                ServiceName::new("ssh").unwrap(),
                Intent {
                    want: Want::Open(None),
                    note: String::new(),
                    opens: Vec::new(),
                },
            )]),
            ..Resolved::default()
        };
        let now = test_now().fixed_offset();
        let host = crate::firewall::host::of_holdings(&config, &holdings);
        let report = report(&config, &host, Some(&resolved), None, now);
        let view = &report.services[0].families[0];
        assert_eq!(
            (view.state, view.asked),
            (PortState::Closed, Some(PortState::Open))
        );
        assert_eq!(
            report.headline(),
            "Not as asked: ssh closed over IPv4 (asked: open)"
        );
        let outcome = Reconciled::idle(&config);
        let (page, run) = failures(&[], &outcome, false, &report);
        assert_eq!(page, None);
        assert_eq!(
            run.as_deref(),
            Some(
                "IPv4: ssh 22/tcp is closed, but the control file opens it: dropped by `-A INPUT \
                 -p tcp -m tcp --dport 22 -j DROP`; it is not portlocker's: remove it with \
                 `/sbin/iptables -w 10 -D INPUT -p tcp -m tcp --dport 22 -j DROP`"
            )
        );
        // A fetch that failed too: the page tells that, the run all of it.
        let problems = ["the server answered 404 Not Found".to_owned()];
        let (page, run) = failures(&problems, &outcome, false, &report);
        assert_eq!(page.as_deref(), Some("the server answered 404 Not Found"));
        assert!(
            run.unwrap()
                .starts_with("the server answered 404 Not Found; IPv4: ssh 22/tcp is closed")
        );
    }
}
