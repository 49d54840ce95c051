//! `portlocker watch`: the resident alternative to the timer. Each of its
//! iterations is a run — the same stages (`run::run_as`) with the same
//! lock, state, deadlines, page, metrics, notices and quiet rules: an
//! online run when the source is due or poked, an offline one from the
//! kept file when only the firewall needs putting right. Between runs it
//! only looks: netfilter's news of every commit (`netlink`), a cheap
//! generation check, and where no news comes (iptables-legacy) a look at
//! its place every second. It listens on no socket: every connection it
//! has, it opened.

mod inbox;
pub mod netlink;
mod poke;
pub(crate) mod presence;
pub(crate) mod schedule;
mod verify;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use chrono::{DateTime, FixedOffset};

use crate::config::{BackendKind, Config, ConfigError};
use crate::exit::Exit;
use crate::firewall::{self, forward};
use crate::intake::fetch::Fetcher;
use crate::intake::state::{self, RunLock};
use crate::report::logging;
use crate::report::notify::{self, Event, Notice};
use crate::run::{self, Occasion};
use crate::sys::clock;
use crate::sys::runner::{SystemRunner, started_lately};
use inbox::{FirewallNews, Inbox};
use netlink::{Listener, News, Place};
use schedule::{Repairs, SourceSchedule, Turn};
use verify::Look;

/// Where netfilter tells nothing (iptables-legacy, no netlink): how often
/// portlocker's place is looked at.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);
/// With news: how often the generation id is asked, to catch what was missed.
const GENERATION_EVERY: Duration = Duration::from_secs(5);
/// A full look at least this often, whatever the news says.
const FULL_LOOK_EVERY: Duration = Duration::from_secs(60);
/// After news of a change to its place, a look waits until the changes
/// stop for this long (a manager's reload is a few commits in a row)…
const SETTLE: Duration = Duration::from_millis(20);
/// …but never longer than this after the first.
const SETTLE_AT_MOST: Duration = Duration::from_millis(200);
/// Pokes make at most one fetch this often.
const POKE_EVERY: Duration = Duration::from_secs(2);
/// A run that finds the lock held (a cron run) tries again this soon.
const LOCK_RETRY: Duration = Duration::from_millis(200);
/// A good run that changed nothing logs its summary line this often (cron's pace).
const SUMMARY_EVERY: Duration = Duration::from_secs(300);

/// The config as `watch` reads it, first and on SIGHUP.
pub type Reload<'a> = dyn Fn() -> Result<Config> + 'a;

/// Runs until SIGTERM or SIGINT; the closes stay in place. Exit 75 when
/// another watch already holds this state directory.
pub fn watch(config: Config, reload: &Reload) -> Result<Exit> {
    refuse_stdin(&config)?;
    state::check_trust(&config.state_dir).map_err(ConfigError)?;
    let presence = match presence::claim(
        &config.state_dir,
        config.fingerprint(),
        config.path.as_deref(),
    )? {
        Ok(presence) => presence,
        Err(other) => {
            log::error!(
                "another portlocker watch (pid {}) already watches {}; this one stops",
                other.pid,
                config.state_dir.display()
            );
            return Ok(Exit::Busy);
        }
    };
    let (inbox, woken) = Inbox::new();
    inbox::take_signals(inbox.clone()).map_err(|e| anyhow!("cannot take signals: {e}"))?;
    let mut watcher = Watcher::new(config, inbox, presence);
    watcher.start_news();
    watcher.start_poke();
    log::info!(
        "watch started: the source every {} s, {}",
        watcher.schedule.every().as_secs(),
        watcher.news_in_words()
    );
    watcher.run_loop(&woken, reload);
    log::info!("watch stopped; portlocker's rules stay as they are");
    Ok(Exit::Ok)
}

/// stdin can be read once: every fetch after the first would find it
/// empty, and an empty file names nothing.
fn refuse_stdin(config: &Config) -> Result<(), ConfigError> {
    match config.source {
        crate::intake::source::Source::Stdin => Err(ConfigError(anyhow!(
            "watch asks the source again and again: it needs an https:// URL or a file, not stdin"
        ))),
        _ => Ok(()),
    }
}

/// How changes to the firewall become known.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sight {
    /// netfilter's news, and the generation id.
    News,
    /// None comes: a look every `LOOK_EVERY`, and why.
    Looks(String),
}

struct Watcher {
    config: Config,
    /// Shared with the thread of a fetch made ahead of its run.
    fetcher: Arc<Fetcher>,
    /// A fetch is under way in a thread of its own: the loop goes on
    /// looking and repairing while a slow source keeps it.
    fetching: bool,
    inbox: Arc<Inbox>,
    presence: presence::Presence,
    sight: Sight,
    /// What the news thread counts as portlocker's place.
    place: Arc<std::sync::Mutex<Place>>,
    /// Bumped to stop the poke thread of an older config.
    poke_generation: Arc<AtomicU64>,
    schedule: SourceSchedule,
    repairs: Repairs,
    /// When the source is asked next.
    fetch_at: Instant,
    last_poke_fetch: Option<Instant>,
    /// When to look at the firewall next, and why.
    look_at: Instant,
    /// A look asked by news, settling: (first news, last news).
    settling: Option<(Instant, Instant)>,
    /// A repair put off by a fight, due then.
    put_off: Option<Instant>,
    /// News was lost: the next look at `look_at` is a full one.
    full_look_due: bool,
    /// The poke the running poke thread listens to, to restart it only when it changes.
    poke: Option<(String, Option<String>)>,
    generation_at: Instant,
    generation: Option<u32>,
    /// The last moment a run or look found portlocker's rules whole.
    whole_at: Option<DateTime<FixedOffset>>,
    last_full_look: Instant,
    /// The last change to its place by another process, and by whom.
    last_touch: Option<Instant>,
    toucher: Option<String>,
    summary_logged: Option<Instant>,
}

impl Watcher {
    fn new(config: Config, inbox: Arc<Inbox>, presence: presence::Presence) -> Watcher {
        let now = Instant::now();
        Watcher {
            fetcher: Arc::new(Fetcher::new(&config.fetch)),
            fetching: false,
            schedule: SourceSchedule::new(config.watch.every),
            place: Arc::new(std::sync::Mutex::new(place_of(&config))),
            config,
            inbox,
            presence,
            sight: Sight::Looks("not started".into()),
            poke_generation: Arc::new(AtomicU64::new(0)),
            repairs: Repairs::default(),
            fetch_at: now,
            last_poke_fetch: None,
            look_at: now + LOOK_EVERY,
            settling: None,
            put_off: None,
            full_look_due: false,
            poke: None,
            generation_at: now + GENERATION_EVERY,
            generation: None,
            whole_at: None,
            last_full_look: now,
            last_touch: None,
            toucher: None,
            summary_logged: None,
        }
    }

    fn run_loop(&mut self, woken: &Receiver<()>, reload: &Reload) {
        loop {
            if self.inbox.stopping() {
                return;
            }
            self.presence.beat(clock::now_utc());
            let now = Instant::now();
            let next = self.next_moment().saturating_duration_since(now);
            inbox::wait(woken, next);
            if self.inbox.stopping() {
                return;
            }
            if self.inbox.take_reload() {
                self.reload(reload);
            }
            self.read_mail();
            self.act();
        }
    }

    /// The earliest moment something is due.
    fn next_moment(&self) -> Instant {
        let mut next = match self.fetching {
            true => self.look_at,
            false => self.fetch_at.min(self.look_at),
        };
        if let Some((first, last)) = self.settling {
            next = next.min((last + SETTLE).min(first + SETTLE_AT_MOST));
        }
        if self.sight == Sight::News {
            next = next.min(self.generation_at);
        }
        if let Some(put_off) = self.put_off {
            next = next.min(put_off);
        }
        next
    }

    /// Takes in what the helpers said: signals, pokes, the firewall's news.
    fn read_mail(&mut self) {
        let now = Instant::now();
        if self.inbox.take_run_now() {
            self.fetch_at = now;
        }
        if self.inbox.take_poke() {
            let earliest = self.last_poke_fetch.map_or(now, |last| last + POKE_EVERY);
            self.fetch_at = self.fetch_at.min(earliest.max(now));
        }
        let news = self.inbox.take_firewall();
        self.take_news(news, now);
    }

    fn take_news(&mut self, news: FirewallNews, now: Instant) {
        if news.generation.is_some() {
            self.generation = news.generation;
        }
        if let Some(why) = news.ended {
            log::warn!(
                "netfilter's news stopped ({why}): portlocker's place is looked at every {} s instead",
                LOOK_EVERY.as_secs()
            );
            self.sight = Sight::Looks(why);
            self.look_at = now;
        }
        if news.lost {
            // A flood of commits: one look a second, however many are lost.
            log::info!("netfilter news was lost (ENOBUFS): looking at the firewall");
            self.look_at = self
                .look_at
                .min((self.last_full_look + LOOK_EVERY).max(now));
            self.full_look_due = true;
        }
        if let Some((first, last)) = news.touched {
            self.last_touch = Some(last);
            self.toucher = news.by.or(self.toucher.take());
            self.settling = Some(match self.settling {
                Some((earlier, _)) => (earlier, last),
                None => (first, last),
            });
        }
    }

    /// Does what is due: a fetch and run, or a look and maybe a repair.
    fn act(&mut self) {
        let now = Instant::now();
        if self.repairs.calm(now, self.last_touch) {
            log::warn!(
                "nobody has removed portlocker's rules for a while: they are put back at once again"
            );
        }
        if self.inbox.take_fetched() {
            self.fetching = false;
            // Made by a fetcher of an older config: fetch again.
            match self.fetcher.has_ahead() {
                true => self.fetch_and_run(),
                false => self.fetch_at = now,
            }
            return;
        }
        if now >= self.fetch_at && !self.fetching {
            self.fetch_ahead();
        }
        let settled = self
            .settling
            .is_some_and(|(first, last)| now >= last + SETTLE || now >= first + SETTLE_AT_MOST);
        if settled {
            self.settling = None;
            self.look_and_repair("a change by another program touched portlocker's rules");
            return;
        }
        if self.put_off.is_some_and(|at| now >= at) {
            self.put_off = None;
            self.look_and_repair("a repair put off while fighting");
            return;
        }
        if self.sight == Sight::News && now >= self.generation_at {
            self.generation_at = now + GENERATION_EVERY;
            if self.generation_changed() {
                self.look_and_repair("the generation id changed unseen");
                return;
            }
        }
        if now >= self.look_at {
            self.look_at = now + self.look_period();
            let full_look_due = std::mem::take(&mut self.full_look_due)
                || now.duration_since(self.last_full_look) >= FULL_LOOK_EVERY;
            if self.sight != Sight::News || full_look_due {
                self.look_and_repair("a regular look");
            }
        }
    }

    fn look_period(&self) -> Duration {
        match self.sight {
            Sight::News => FULL_LOOK_EVERY,
            Sight::Looks(_) => LOOK_EVERY,
        }
    }

    /// Whether nf_tables is at another generation than the news said.
    fn generation_changed(&mut self) -> bool {
        match netlink::generation() {
            Ok(now) => {
                let changed = self.generation.is_some_and(|known| known != now);
                self.generation = Some(now);
                changed
            }
            Err(_) => false,
        }
    }

    /// Fetches the control file in a thread of its own; its run follows
    /// when it ends (`act`). Where no thread can be started, the run
    /// fetches, as a cron run does.
    fn fetch_ahead(&mut self) {
        let validators = match state::State::peek(&self.config.state_dir) {
            state::Loaded::Kept(kept) => {
                crate::intake::validators_now(&self.config, &kept, clock::now_local())
            }
            _ => None,
        };
        let (fetcher, inbox) = (Arc::clone(&self.fetcher), Arc::clone(&self.inbox));
        let source = self.config.source.clone();
        let spawned = std::thread::Builder::new()
            .name("fetch".into())
            .spawn(move || {
                // Told even if the fetch panics: the loop would never fetch again.
                let _told = Told(inbox);
                fetcher.fetch_ahead(&source, validators.as_ref());
            });
        match spawned {
            Ok(_) => self.fetching = true,
            Err(error) => {
                log::debug!("no thread for the fetch ({error}): the run fetches");
                self.fetch_and_run();
            }
        }
    }

    /// An online run, then when the next is due.
    fn fetch_and_run(&mut self) {
        let now = Instant::now();
        let Some(exit) = self.run(false) else {
            self.fetch_at = now + LOCK_RETRY;
            return;
        };
        self.last_poke_fetch = Some(now);
        let failed = self.fetcher.failed();
        let pause = self
            .schedule
            .after(failed, self.fetcher.retry_after(), random());
        self.fetch_at = Instant::now() + pause;
        if exit == Exit::Ok {
            self.whole_at = Some(clock::now_local());
        }
        self.last_full_look = Instant::now();
    }

    /// Looks at the firewall; puts portlocker's rules right if they are not
    /// what the owner asked, unless fighting another program.
    fn look_and_repair(&mut self, why: &str) {
        let at = clock::now_local();
        self.last_full_look = Instant::now();
        match verify::look(&self.config, at) {
            Look::Whole => {
                self.whole_at = Some(at);
                return;
            }
            Look::Unread(reason) => log::debug!("{why}: the firewall could not be read ({reason})"),
            Look::Differs { changes, gone } => {
                let gone: Vec<String> = gone
                    .iter()
                    .map(|(f, what)| format!("{f}: {what}"))
                    .collect();
                log::debug!(
                    "{why}: a run would make {changes} changes ({})",
                    gone.join("; ")
                );
            }
        }
        let now = Instant::now();
        if let Some(until) = self.repairs.wait_until(now) {
            self.put_off = Some(until);
            return;
        }
        let Some(exit) = self.run(true) else {
            // A run of another holds the lock: try again soon, not at once.
            self.put_off = Some(now + LOCK_RETRY);
            return;
        };
        if exit == Exit::Ok {
            self.whole_at = Some(clock::now_local());
        }
        // A repair that failed counts too: one failing for good is tried
        // ever less often, as in a fight (the run tells its failure).
        let touched_lately = self
            .last_touch
            .is_some_and(|touch| now.duration_since(touch) < schedule::REPAIR_WINDOW);
        match self.repairs.made(Instant::now()) {
            Turn::Began if touched_lately => self.tell_fight(),
            Turn::Began => log::warn!(
                "portlocker's rules needed putting right {} times within {} s: looks now ask \
                 for a run at most every {} s",
                schedule::REPAIRS_IN_WINDOW + 1,
                schedule::REPAIR_WINDOW.as_secs(),
                schedule::FIRST_FIGHT_PAUSE.as_secs()
            ),
            Turn::Longer | Turn::Calm => {}
        }
    }

    /// One run under the run lock; None when a cron run holds it.
    fn run(&mut self, offline: bool) -> Option<Exit> {
        let lock = match state::lock(&self.config.state_dir) {
            Ok(Some(lock)) => lock,
            Ok(None) => return None,
            Err(error) => {
                log::error!("{error:#}");
                return None;
            }
        };
        let exit = self.run_locked(offline, &lock);
        drop(lock);
        Some(exit)
    }

    fn run_locked(&mut self, offline: bool, _lock: &RunLock) -> Exit {
        logging::reopen_if_moved();
        let now = Instant::now();
        let log_unchanged = self
            .summary_logged
            .is_none_or(|at| now.duration_since(at) >= SUMMARY_EVERY);
        let occasion = Occasion {
            offline,
            at: clock::now_local(),
            fetcher: &self.fetcher,
            seen_in_place: self.whole_at,
            log_unchanged,
            notes: Vec::new(),
            failing: None,
            // A repair from the kept file fetches nothing, but the network is up.
            network: true,
        };
        let exit = run::run_as(&self.config, SystemRunner::new(&self.config), &occasion);
        if log_unchanged {
            self.summary_logged = Some(now);
        }
        exit
    }

    /// Tells the owner, once per fight, who keeps removing the rules.
    fn tell_fight(&self) {
        let who = match &self.toucher {
            Some(who) => format!("{who} keeps removing portlocker's rules"),
            None => "another program keeps removing portlocker's rules".to_owned(),
        };
        let text = format!(
            "{who}: {} repairs within {} s, so portlocker now puts them back at most every {} s \
             (up to {} s) until it stops; in between, what they close may be reachable. Find the \
             program (a firewall manager reloading its rules?) and make it leave portlocker's \
             rules alone",
            schedule::REPAIRS_IN_WINDOW + 1,
            schedule::REPAIR_WINDOW.as_secs(),
            schedule::FIRST_FIGHT_PAUSE.as_secs(),
            schedule::MAX_BACKOFF.as_secs()
        );
        log::warn!("{text}");
        let host = match self.config.host_name.as_str() {
            "" => "this server",
            name => name,
        };
        let notice = Notice {
            event: Event::Contested,
            host: host.to_owned(),
            text: format!(
                "{host}: portlocker's rules keep being removed\n{text}\nat {}\n",
                crate::report::quiet::shown(clock::now_local())
            ),
        };
        notify::send(&self.config, &notice, false);
    }

    /// Reads the config again; a config that does not validate is refused
    /// and the old one kept.
    fn reload(&mut self, reload: &Reload) {
        let config = match reload().and_then(|config| Ok(refuse_stdin(&config).map(|()| config)?)) {
            Ok(config) => config,
            Err(error) => {
                log::error!(
                    "the config was not read again: {error:#}; watch goes on with the config it had"
                );
                return;
            }
        };
        if config.state_dir != self.config.state_dir {
            log::error!(
                "the config was not read again: state_dir changed ({} → {}); restart watch for that",
                self.config.state_dir.display(),
                config.state_dir.display()
            );
            return;
        }
        log::info!("the config was read again (SIGHUP)");
        self.presence
            .reconfigured(config.fingerprint(), clock::now_utc());
        self.fetcher = Arc::new(Fetcher::new(&config.fetch));
        self.schedule = SourceSchedule::new(config.watch.every);
        *self
            .place
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = place_of(&config);
        self.config = config;
        self.sight_for_config();
        self.start_poke();
        // A storm of SIGHUPs fetches no more often than pokes do.
        let now = Instant::now();
        let earliest = self.last_poke_fetch.map_or(now, |last| last + POKE_EVERY);
        self.fetch_at = self.fetch_at.min(earliest.max(now));
    }

    /// Starts the thread that reads netfilter's news, where it tells anything.
    fn start_news(&mut self) {
        let listener = Listener::subscribe(self.place.lock().expect("not poisoned").clone());
        match listener {
            Ok(listener) => {
                self.generation = netlink::generation().ok();
                let (inbox, place) = (self.inbox.clone(), self.place.clone());
                let spawned = std::thread::Builder::new()
                    .name("netfilter news".into())
                    .spawn(move || read_news(listener, &inbox, &place));
                self.sight = match spawned {
                    Ok(_) => Sight::News,
                    Err(error) => Sight::Looks(format!("no thread for netfilter's news: {error}")),
                };
            }
            Err(error) => {
                self.sight = Sight::Looks(format!("netfilter's news cannot be read here: {error}"));
            }
        }
        let subscribed = self.sight == Sight::News;
        self.sight_for_config();
        if let Sight::Looks(why) = &self.sight
            && subscribed
        {
            log::info!("{why}");
        }
        if let (Sight::Looks(why), false) = (&self.sight, subscribed) {
            log::warn!(
                "{why}: portlocker's place is looked at every {} s instead",
                LOOK_EVERY.as_secs()
            );
        }
    }

    /// iptables-legacy tells netfilter's news nothing: it is looked at instead.
    fn sight_for_config(&mut self) {
        let legacy = self.config.firewall.backend == BackendKind::Iptables
            && firewall::backend(&self.config).as_deref() == Some("legacy");
        if legacy {
            self.sight = Sight::Looks(
                "iptables-legacy tells netfilter's news nothing: its rules are looked at every second"
                    .into(),
            );
        } else if self.sight != Sight::News && self.generation.is_some() {
            // Back from legacy, with the news thread running.
            self.sight = Sight::News;
        }
    }

    /// Starts the poke thread the config asks for, ending the one before;
    /// the same poke keeps its thread (and its stream).
    fn start_poke(&mut self) {
        let poke = match poke::of(&self.config) {
            Ok(poke) => poke,
            Err(error) => {
                log::error!("the poke is off: {error:#}");
                None
            }
        };
        let wanted = poke.as_ref().map(|poke| {
            let place = format!("{} {:?}", poke.stream, poke.fetch.ca_file);
            (place, poke.token.clone())
        });
        if wanted.is_some() && wanted == self.poke {
            return;
        }
        let mine = self.poke_generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.poke = wanted;
        if let Some(poke) = poke {
            poke::start(poke, self.inbox.clone(), self.poke_generation.clone(), mine);
        }
    }

    fn news_in_words(&self) -> String {
        match &self.sight {
            Sight::News => "the firewall by netfilter's news".to_owned(),
            Sight::Looks(_) => format!("the firewall every {} s", LOOK_EVERY.as_secs()),
        }
    }
}

/// Tells the loop, when dropped, that a fetch made ahead has ended.
struct Told(Arc<Inbox>);

impl Drop for Told {
    fn drop(&mut self) {
        self.0.fetched();
    }
}

/// portlocker's place in nf_tables, as `config` puts it.
fn place_of(config: &Config) -> Place {
    match config.firewall.backend {
        BackendKind::Nftables => Place {
            tables: vec![
                (netlink::NFPROTO_INET, "portlocker".into()),
                (netlink::NFPROTO_INET, "portlocker-fwd".into()),
            ],
            chains: Vec::new(),
        },
        BackendKind::Iptables => {
            let mut tables = vec![(netlink::NFPROTO_IPV4, "filter".to_owned())];
            if config.firewall.ipv6 {
                tables.push((netlink::NFPROTO_IPV6, "filter".to_owned()));
            }
            // And where ports Docker publishes are filtered (`forward.rs`).
            Place {
                tables,
                chains: vec![
                    "INPUT".into(),
                    config.firewall.chain.to_string(),
                    "DOCKER-USER".into(),
                    forward::place_name(config),
                ],
            }
        }
    }
}

/// The news thread: each transaction by another process that touched
/// portlocker's place goes to the inbox; its own (and its children's) only
/// move the generation on.
fn read_news(mut listener: Listener, inbox: &Inbox, place: &std::sync::Mutex<Place>) {
    let own = std::process::id();
    loop {
        let news = listener.wait();
        if let Ok(current) = place.lock() {
            listener.set_place(current.clone());
        }
        match news {
            Ok(News::Lost) => inbox.firewall(|news| news.lost = true),
            Ok(News::Generation(generation)) => {
                let foreign = generation.pid != own && !started_lately(generation.pid);
                let now = Instant::now();
                inbox.firewall(|news| {
                    news.generation = Some(generation.id);
                    if foreign && generation.touched {
                        news.touches += 1;
                        let first = news.touched.map_or(now, |(first, _)| first);
                        news.touched = Some((first, now));
                        news.by = Some(committer(&generation));
                    }
                });
            }
            Err(error) => {
                inbox.firewall(|news| news.ended = Some(error.to_string()));
                return;
            }
        }
    }
}

/// The committing process as the owner can look for it: `nft (pid 4242)`.
fn committer(generation: &netlink::Generation) -> String {
    let name: String = generation
        .name
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect();
    match (name.as_str(), generation.pid) {
        ("", 0) => "the kernel".to_owned(),
        ("", pid) => format!("process {pid}"),
        (name, pid) => format!("{name} (pid {pid})"),
    }
}

/// A random number, for jitter: a randomly keyed hash, no extra crate.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
