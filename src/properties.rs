//! The fail-closed guarantee as a stateful property. Seeded random
//! sequences of what happens to a server — new control files, refused
//! ones, a dead source, config edits, reboots, offline boot runs, runs
//! killed at any command or commit, failing commands, a commit refused for
//! one line written for a service, a family's program missing or broken,
//! a damaged state file, rules of other tools, time passing — drive the
//! real run (`app::run_locked`) in-process against the in-memory host
//! (`firewall::fake`), on both backends as production takes them:
//! iptables through `iptables-restore --noflush` transactions (and, as one
//! sampled variant, rule by rule where the restore tools are missing), and
//! nftables through `nft -e -j -f -`.
//! After every completed run:
//! (a) every service whose last accepted word was `close` is closed to
//! everyone in every family, by the fake's own oracle; (b) with `default =
//! "close"`, so is every service no accepted file opened or whose open
//! ended; opens are open as asked (to all, or to their sources only);
//! (c) portlocker's verdicts over the firewall it reads, and the metrics
//! the run wrote, equal the oracle (`unknown` only where it cannot know);
//! (d) the exit code is the one below. Also: a kill leaves a whole state
//! file, `ipv6 = false` never runs ip6tables, the same run again at the
//! same moment only reads, and no rule stays for a service the config
//! lost. (a) and (b) are checked when no command failed; after a refused
//! commit, for the other family, and in the refused family every close
//! holds and what the refused line would have let in is not let in; with
//! one family's program missing or broken, for the other family — those
//! that main before branch grammar fails, under
//! `REFUSALS_AND_MISSING_TOOLS_FAIL_CLOSED`.
//!
//! What the model counts as accepted: every firewall command of a run
//! comes after the run saved the wanted state it took in, so a kill (which
//! lands at a command) never loses a file the run read. The model takes a
//! file in at every run that reads it, killed or not, exactly when today's
//! config makes it valid; a killed run loses only the starts of its new
//! `for` counts, saved at the end. A count starts once its open is in the
//! firewall. A damaged state file loses everything the owner said before
//! it. Removing a service from the config forgets what was said about it
//! at the next run.
//!
//! The exit code of a completed run is 0 exactly when: the state file was
//! whole; online, the source held a file valid under today's config;
//! offline, there was a last good file or `default = "close"`; no command
//! of the configured backend failed, none was refused, and no program of
//! a managed family was missing or broken; and no service that must be
//! closed is accepted by another tool's rule ahead of portlocker's (with
//! `chain = "INPUT"`).
//!
//! `PORTLOCKER_PROPERTY_CASES=N` runs N sequences (256 by default, which
//! must drive every way of committing, refusing and missing a family at
//! least `COVERAGE` times); `PORTLOCKER_PROPERTY_SEED=S` replays the one a
//! failure names. Run with `--nocapture` to see what a run drove.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};

use chrono::{DateTime, FixedOffset, TimeDelta};
use ipnet::IpNet;

use crate::config::{Config, Family, Protocol, ServiceName};
use crate::exit::Exit;
use crate::firewall;
use crate::firewall::fake::{
    FakeFirewall, Fate, KillAt, KillPoint, Killed, Probe, RefusedLine, Stats, binary_of,
};
use crate::firewall::model::PortState;
use crate::intake::state::{Loaded, State};
use crate::run;

/// What branch grammar fixes (issue 15): a refused commit is made again
/// with every close it can and without what was refused; a family whose
/// program is missing no longer stops the other's work. Main before
/// grammar fails the assertions this guards (seeds 0x7b7e1f9a9a59cc77,
/// 0x7cf3ee3065e4e643, 0xa041d4ee3b9bfddd, 0x1490743d734e4c3,
/// 0x98799734112f5cd3); grammar is merged here, so they hold.
const REFUSALS_AND_MISSING_TOOLS_FAIL_CLOSED: bool = true;

/// Steps per sequence.
const STEPS: usize = 30;
/// Sequences in a plain `cargo test`.
const CASES: u64 = 256;
/// The least a plain `cargo test` must drive of each way of committing,
/// refusing and missing a family, so the test cannot silently stop
/// driving one.
const COVERAGE: Coverage = Coverage {
    stats: Stats {
        restores: 500,
        nft_commits: 180,
        argv_writes: 500,
        refusals: 35,
    },
    missing_family_runs: 120,
    nftables_cases: 50,
    rule_by_rule_cases: 15,
};

/// Ports as protocol, first and last.
type Ports = &'static [(Protocol, u16, u16)];

/// The services a config may have: name, TOML value, ports. No two share a port.
const POOL: &[(&str, &str, Ports)] = &[
    ("ssh", "22", &[(Protocol::Tcp, 22, 22)]),
    ("vpn", "\"1194/udp\"", &[(Protocol::Udp, 1194, 1194)]),
    (
        "web",
        "[80, \"443/tcp\"]",
        &[(Protocol::Tcp, 80, 80), (Protocol::Tcp, 443, 443)],
    ),
    (
        "mosh",
        "\"60000-61000/udp\"",
        &[(Protocol::Udp, 60000, 61000)],
    ),
    (
        "dns",
        "[53, \"53/udp\"]",
        &[(Protocol::Tcp, 53, 53), (Protocol::Udp, 53, 53)],
    ),
];

/// `from` sources, none inside another, none holding `GENERIC_*`.
const V4_SOURCES: &[&str] = &["203.0.113.7", "198.51.100.0/24", "203.0.113.64/26"];
const V6_SOURCES: &[&str] = &["2001:db8:1::/48", "2001:db8:2::7"];
/// An address on the internet that no control file names.
const GENERIC_V4: &str = "192.0.2.10";
const GENERIC_V6: &str = "2001:db8:ffff::10";

/// Lines no control file may hold.
const BAD_LINES: &[&str] = &[
    "opne ssh",
    "open",
    "close ssh for 1h",
    "open ssh for 0h",
    "open ssh from example.com",
    "open ssh from 0.0.0.0/0",
    "open nosuch",
    "open ssh until tomorrow",
];

/// Refused only where `ipv6 = false`.
const V6_LINE: &str = "open ssh from 2001:db8:1::/48";

// ---- a small seeded generator ---------------------------------------------

/// SplitMix64: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

// ---- what happens to the server --------------------------------------------

#[derive(Debug, Clone)]
struct Setup {
    backend: Backend,
    /// With iptables: nft is installed too (a run looks into it for
    /// leftovers).
    nft_installed: bool,
    default_close: bool,
    chain_is_input: bool,
    ipv6: bool,
    keep_established: bool,
    max_open_hours: Option<i64>,
    services: Vec<&'static str>,
}

/// The firewall the config names, as the host has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// iptables, with its restore tools installed (`restore`) or not (rule by rule).
    Iptables {
        restore: bool,
    },
    Nftables,
}

/// One control file line to write.
#[derive(Debug, Clone)]
struct LineSpec {
    open: bool,
    service: &'static str,
    source: Option<&'static str>,
    ends: Option<EndsSpec>,
    on: On,
}

#[derive(Debug, Clone, Copy)]
enum EndsSpec {
    ForMinutes(i64),
    /// `until` this many minutes after the file is written (may be past).
    UntilIn(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    /// No `on`.
    Here,
    /// `on test-*`, which matches this host.
    Matching,
    /// `on db-*,backup`: for other hosts.
    Elsewhere,
}

#[derive(Debug, Clone)]
enum Bad {
    /// Valid lines with one bad line among them.
    Line {
        lines: Vec<LineSpec>,
        bad: &'static str,
        at: usize,
    },
    /// A login page where the file should be.
    Html,
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Empty,
    /// Cut before the last run is recorded.
    Cut(u64),
    /// Cut inside the checksum line.
    InCheck(u64),
    /// One byte of the body changed.
    Flip(u64, u8),
}

#[derive(Debug, Clone, Copy)]
struct Run {
    offline: bool,
    /// Minutes the clock moves first.
    advance: i64,
    kill: Option<(KillAt, KillPoint)>,
    /// The N-th command fails.
    fail: Option<usize>,
    /// The restore tool or nft refuses one line of a transaction written
    /// for a service with a source or a deadline: the N-th such line.
    refuse: Option<u64>,
    /// A program of one family is missing or broken for this run.
    missing: Option<(Family, Missing)>,
}

impl Run {
    fn plain(offline: bool, advance: i64) -> Run {
        Run {
            offline,
            advance,
            kill: None,
            fail: None,
            refuse: None,
            missing: None,
        }
    }
}

/// What is wrong with a family's programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// `ip6tables` (or `iptables`) is not installed.
    Program,
    /// Its restore tool is not installed: the family is changed rule by rule.
    Restore,
    /// It fails every command, as in a kernel without that family.
    BrokenProgram,
    /// Its restore tool fails every transaction.
    BrokenRestore,
}

impl Missing {
    /// The program at fault, for `family`.
    fn program(self, family: Family) -> String {
        let binary = binary_of(family);
        match self {
            Missing::Program | Missing::BrokenProgram => binary.to_owned(),
            Missing::Restore | Missing::BrokenRestore => format!("{binary}-restore"),
        }
    }
}

/// Where another tool puts its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// iptables: at the top of INPUT.
    Top,
    /// nftables: in a table of its own, in a base chain before portlocker's.
    Early,
    /// nftables: at the top of portlocker's own chain (drift).
    Inside,
}

#[derive(Debug, Clone)]
enum Event {
    Write(Vec<LineSpec>),
    Empty,
    /// The source file is gone: the fetch fails.
    Missing,
    Bad(Bad),
    AddService(&'static str),
    RemoveService(&'static str),
    /// The config's `keep_established` turned over: every DROP changes form.
    ToggleKeepEstablished,
    /// The owner deletes `state.toml`, as the README says, to forget the last good file.
    ForgetState,
    /// A reboot: the firewall is empty again.
    Flush,
    /// Another tool adds a rule of its own: for an unrelated port, or
    /// accepting the first port of a service.
    OtherTool(Option<&'static str>, Place),
    Damage(Damage),
    Wait(i64),
    Run(Run),
}

impl LineSpec {
    /// The line as the owner writes it, `until` as of `now`.
    fn text(&self, now: DateTime<FixedOffset>) -> String {
        let mut text = format!(
            "{} {}",
            if self.open { "open" } else { "close" },
            self.service
        );
        if let Some(source) = self.source {
            text.push_str(&format!(" from {source}"));
        }
        match self.ends {
            Some(EndsSpec::ForMinutes(minutes)) => {
                text.push_str(&format!(" for {}", duration_text(minutes)))
            }
            Some(EndsSpec::UntilIn(minutes)) => {
                let deadline = now + TimeDelta::minutes(minutes);
                text.push_str(&format!(" until {}", deadline.to_rfc3339()));
            }
            None => {}
        }
        match self.on {
            On::Here => {}
            On::Matching => text.push_str(" on test-*"),
            On::Elsewhere => text.push_str(" on db-*,backup"),
        }
        text
    }

    /// The line as the model reads it, and whether it is for this host.
    fn said(&self, now: DateTime<FixedOffset>) -> (Said, bool) {
        let said = Said {
            open: self.open,
            service: self.service,
            source: self.source.map(net),
            ends: self.ends.map(|ends| match ends {
                EndsSpec::ForMinutes(minutes) => Ends::For(minutes),
                EndsSpec::UntilIn(minutes) => Ends::Until(now + TimeDelta::minutes(minutes)),
            }),
        };
        (said, self.on != On::Elsewhere)
    }
}

fn duration_text(minutes: i64) -> String {
    if minutes % 60 == 0 {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}

fn net(text: &str) -> IpNet {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .expect("a source of the test")
        .trunc()
}

/// The events as a failure report lists them: relative times, as generated.
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines = |lines: &[LineSpec]| {
            let shown: Vec<String> = lines
                .iter()
                .map(|line| {
                    let mut line = line.clone();
                    let until = match line.ends {
                        Some(EndsSpec::UntilIn(minutes)) => {
                            line.ends = None;
                            format!(" until now{minutes:+}m")
                        }
                        _ => String::new(),
                    };
                    let mut text = line.text(DateTime::UNIX_EPOCH.fixed_offset());
                    match text.find(" on ") {
                        Some(at) => text.insert_str(at, &until),
                        None => text.push_str(&until),
                    }
                    text
                })
                .collect();
            format!("{shown:?}")
        };
        match self {
            Event::Write(spec) => write!(f, "write {}", lines(spec)),
            Event::Empty => write!(f, "write an empty file"),
            Event::Missing => write!(f, "remove the source file"),
            Event::Bad(Bad::Html) => write!(f, "write an HTML page"),
            Event::Bad(Bad::Line {
                lines: spec,
                bad,
                at,
            }) => {
                write!(f, "write {} with {bad:?} at line {}", lines(spec), at + 1)
            }
            Event::AddService(name) => write!(f, "config: add {name}"),
            Event::RemoveService(name) => write!(f, "config: remove {name}"),
            Event::ToggleKeepEstablished => write!(f, "config: turn keep_established over"),
            Event::ForgetState => write!(f, "the owner deletes state.toml"),
            Event::Flush => write!(f, "reboot: flush the firewall"),
            Event::OtherTool(service, place) => {
                let what = match service {
                    None => "adds a rule for port 8080".to_owned(),
                    Some(name) => format!("accepts the first port of {name}"),
                };
                let place = match place {
                    Place::Top => "at the top of INPUT",
                    Place::Early => "in a table of its own, hooked before portlocker's",
                    Place::Inside => "at the top of portlocker's own nftables chain",
                };
                write!(f, "another tool {what} {place}")
            }
            Event::Damage(damage) => write!(f, "damage the state file: {damage:?}"),
            Event::Wait(minutes) => write!(f, "wait {minutes}m"),
            Event::Run(run) => {
                write!(f, "run")?;
                if run.offline {
                    write!(f, " --offline")?;
                }
                write!(f, " after {}m", run.advance)?;
                match run.kill {
                    Some((KillAt::Command(nth), point)) => {
                        write!(f, ", killed at command {nth} ({point:?} it)")?
                    }
                    Some((KillAt::Commit(nth), point)) => {
                        write!(f, ", killed at commit {nth} ({point:?} it)")?
                    }
                    None => {}
                }
                if let Some(nth) = run.fail {
                    write!(f, ", command {nth} fails")?;
                }
                if let Some(pick) = run.refuse {
                    write!(f, ", a commit refuses a line of a service (pick {pick})")?;
                }
                if let Some((family, missing)) = run.missing {
                    write!(f, ", {} is {missing:?}", missing.program(family))?;
                }
                Ok(())
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    seed: u64,
    setup: Setup,
    events: Vec<Event>,
}

impl Case {
    fn generate(seed: u64) -> Case {
        let mut rng = Rng(seed);
        let names: Vec<&'static str> = POOL.iter().map(|(name, _, _)| *name).collect();
        let mut services: Vec<&'static str> =
            names.iter().copied().filter(|_| rng.chance(50)).collect();
        if services.is_empty() {
            services.push(rng.pick(&names));
        }
        let setup = Setup::generate(&mut rng, services.clone());
        let iptables = setup.backend != Backend::Nftables;
        let mut configured: Vec<&'static str> = services;
        let mut events = Vec::new();
        let mut boot = false;
        while events.len() < STEPS {
            let small = small_advance;
            let kill = |rng: &mut Rng| {
                let point = match rng.chance(50) {
                    true => KillPoint::Before,
                    false => KillPoint::After,
                };
                let at = match rng.chance(50) {
                    true => KillAt::Command(1 + rng.below(10) as usize),
                    false => KillAt::Commit(1 + rng.below(2) as usize),
                };
                Some((at, point))
            };
            if std::mem::take(&mut boot) {
                // The boot unit: an offline run right after the reboot.
                events.push(Event::Run(Run {
                    kill: if rng.chance(20) { kill(&mut rng) } else { None },
                    ..Run::plain(true, 1)
                }));
                continue;
            }
            let event = match rng.below(120) {
                0..=29 => Event::Run(Run::plain(false, small(&mut rng))),
                30..=34 => Event::Run(Run::plain(true, small(&mut rng))),
                35..=45 => Event::Run(Run {
                    offline: rng.chance(20),
                    kill: kill(&mut rng),
                    ..Run::plain(false, small(&mut rng))
                }),
                46..=49 => Event::Run(Run {
                    fail: Some(1 + rng.below(12) as usize),
                    ..Run::plain(false, small(&mut rng))
                }),
                50..=67 => Event::Write(lines(&mut rng, &setup, &configured, &names)),
                68..=70 => Event::Empty,
                71..=73 => Event::Missing,
                74..=77 => Event::Bad(match rng.chance(25) {
                    true => Bad::Html,
                    false => {
                        let lines = lines(&mut rng, &setup, &configured, &names);
                        let mut bad: Vec<&'static str> = BAD_LINES.to_vec();
                        if !setup.ipv6 {
                            bad.push(V6_LINE);
                        }
                        Bad::Line {
                            at: rng.below(lines.len() as u64 + 1) as usize,
                            bad: rng.pick(&bad),
                            lines,
                        }
                    }
                }),
                78..=80 => {
                    let name = rng.pick(&names);
                    if !configured.contains(&name) {
                        configured.push(name);
                    }
                    Event::AddService(name)
                }
                81..=83 => {
                    let name = rng.pick(&configured);
                    if configured.len() > 1 {
                        configured.retain(|other| *other != name);
                    }
                    Event::RemoveService(name)
                }
                84..=87 => {
                    boot = rng.chance(60);
                    Event::Flush
                }
                88..=90 => Event::Damage(match rng.below(4) {
                    0 => Damage::Empty,
                    1 => Damage::Cut(rng.next()),
                    2 => Damage::InCheck(rng.next()),
                    _ => Damage::Flip(rng.next(), rng.next() as u8),
                }),
                91..=95 => Event::Wait(30 + rng.below(180) as i64),
                96..=102 => {
                    let service = (rng.below(7) >= 2).then(|| rng.pick(&configured));
                    let place = match (iptables, rng.chance(50)) {
                        (true, _) => Place::Top,
                        (false, true) => Place::Early,
                        (false, false) => Place::Inside,
                    };
                    Event::OtherTool(service, place)
                }
                103..=104 => Event::ToggleKeepEstablished,
                105 => Event::ForgetState,
                106..=113 => faulty_run(&mut rng, &setup, true),
                _ => faulty_run(&mut rng, &setup, !iptables),
            };
            events.push(event);
        }
        Case {
            seed,
            setup,
            events,
        }
    }

    /// Plays the case from a fresh machine; the first broken invariant.
    fn check(&self) -> Result<(), String> {
        self.play().0
    }

    /// Plays the case; the first broken invariant, and what it drove.
    fn play(&self) -> (Result<(), String>, Coverage) {
        let mut world = World::new(&self.setup);
        let mut outcome = Ok(());
        for (index, event) in self.events.iter().enumerate() {
            if let Err(problem) = world.step(event) {
                outcome = Err(format!(
                    "step {} ({event}): {problem}\nthe model: {:?}\nthe firewall:\n{}",
                    index + 1,
                    world.memory,
                    world.fake.dump()
                ));
                break;
            }
        }
        let coverage = Coverage {
            stats: world.fake.stats,
            missing_family_runs: world.missing_family_runs,
            nftables_cases: usize::from(self.setup.backend == Backend::Nftables),
            rule_by_rule_cases: usize::from(
                self.setup.backend == Backend::Iptables { restore: false },
            ),
        };
        (outcome, coverage)
    }
}

/// What sequences drove: how the firewall was changed, how often a commit
/// was refused or a family's program missing or broken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Coverage {
    stats: Stats,
    /// Runs with a managed family's program or restore tool missing or broken.
    missing_family_runs: usize,
    nftables_cases: usize,
    /// Cases on iptables without restore tools.
    rule_by_rule_cases: usize,
}

impl std::ops::AddAssign for Coverage {
    fn add_assign(&mut self, other: Coverage) {
        self.stats += other.stats;
        self.missing_family_runs += other.missing_family_runs;
        self.nftables_cases += other.nftables_cases;
        self.rule_by_rule_cases += other.rule_by_rule_cases;
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} restore transactions, {} nft commits, {} rule-by-rule changes, {} refused commits, \
             {} runs with a family's program missing or broken; {} cases on nftables, {} on iptables \
             rule by rule",
            self.stats.restores,
            self.stats.nft_commits,
            self.stats.argv_writes,
            self.stats.refusals,
            self.missing_family_runs,
            self.nftables_cases,
            self.rule_by_rule_cases
        )
    }
}

impl Coverage {
    /// Whether every count reaches `least`'s.
    fn reaches(&self, least: &Coverage) -> bool {
        let (s, l) = (self.stats, least.stats);
        s.restores >= l.restores
            && s.nft_commits >= l.nft_commits
            && s.argv_writes >= l.argv_writes
            && s.refusals >= l.refusals
            && self.missing_family_runs >= least.missing_family_runs
            && self.nftables_cases >= least.nftables_cases
            && self.rule_by_rule_cases >= least.rule_by_rule_cases
    }
}

impl Setup {
    fn generate(rng: &mut Rng, services: Vec<&'static str>) -> Setup {
        let backend = match rng.below(100) {
            0..=44 => Backend::Nftables,
            45..=54 => Backend::Iptables { restore: false },
            _ => Backend::Iptables { restore: true },
        };
        let iptables = backend != Backend::Nftables;
        Setup {
            backend,
            nft_installed: !iptables || rng.chance(50),
            default_close: rng.chance(50),
            // nftables has no INPUT to put its rules in.
            chain_is_input: iptables && rng.chance(35),
            ipv6: rng.chance(70),
            keep_established: rng.chance(70),
            max_open_hours: rng.chance(20).then_some(3),
            services,
        }
    }
}

fn small_advance(rng: &mut Rng) -> i64 {
    match rng.below(5) {
        0 => 0,
        _ => 1 + rng.below(20) as i64,
    }
}

/// A run in which a commit refuses a line (`refusing`), or else a program
/// of one family is missing or broken (mostly IPv6's).
fn faulty_run(rng: &mut Rng, setup: &Setup, refusing: bool) -> Event {
    if refusing {
        return Event::Run(Run {
            offline: rng.chance(20),
            refuse: Some(rng.next()),
            ..Run::plain(false, small_advance(rng))
        });
    }
    let family = match setup.ipv6 && rng.chance(75) {
        true => Family::Ipv6,
        false => Family::Ipv4,
    };
    let kinds: &[Missing] = match setup.backend {
        Backend::Iptables { restore: true } => &[
            Missing::Program,
            Missing::Restore,
            Missing::BrokenProgram,
            Missing::BrokenRestore,
        ],
        _ => &[Missing::Program, Missing::BrokenProgram],
    };
    Event::Run(Run {
        missing: Some((family, rng.pick(kinds))),
        ..Run::plain(false, small_advance(rng))
    })
}

/// 1 to 4 lines, nearly always for configured services.
fn lines(
    rng: &mut Rng,
    setup: &Setup,
    configured: &[&'static str],
    names: &[&'static str],
) -> Vec<LineSpec> {
    let count = 1 + rng.below(4);
    (0..count)
        .map(|_| {
            let service = match rng.chance(95) {
                true => rng.pick(configured),
                false => rng.pick(names),
            };
            let open = rng.chance(60);
            let source = (open && rng.chance(35)).then(|| match setup.ipv6 && rng.chance(40) {
                true => rng.pick(V6_SOURCES),
                false => rng.pick(V4_SOURCES),
            });
            let ends = match (open, rng.below(4)) {
                (false, _) => None,
                (true, 0) => Some(EndsSpec::ForMinutes(rng.pick(&[30, 60, 90, 120]))),
                (true, 1) => Some(EndsSpec::UntilIn(rng.below(240) as i64 - 60)),
                _ => None,
            };
            let on = match rng.below(100) {
                0..=84 => On::Here,
                85..=92 => On::Matching,
                _ => On::Elsewhere,
            };
            LineSpec {
                open,
                service,
                source,
                ends,
                on,
            }
        })
        .collect()
}

// ---- the model: what the owner said ------------------------------------------

/// One line as the owner said it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Said {
    open: bool,
    service: &'static str,
    source: Option<IpNet>,
    ends: Option<Ends>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ends {
    For(i64),
    Until(DateTime<FixedOffset>),
}

/// What the source holds.
#[derive(Debug, Clone)]
enum Written {
    /// Lines, each with whether it is for this host.
    Lines(Vec<(Said, bool)>),
    /// A file no run may accept.
    Refused,
}

/// What portlocker should remember: per service, the lines in force from
/// the last accepted file that named it; when each open was first applied.
#[derive(Debug, Clone, Default)]
struct Memory {
    wanted: BTreeMap<&'static str, Vec<Said>>,
    starts: BTreeMap<Said, DateTime<FixedOffset>>,
    has_last_good: bool,
    /// The last run that fetched could not use what it fetched: a run
    /// that does not fetch fails on it too.
    fetch_failed: bool,
    /// The services of the configs runs of this state ran with (kept
    /// before their firewall work): a tagged rule of another service is
    /// taken for another config's, and left alone.
    configured: BTreeSet<&'static str>,
    /// `configured` as the last run found it.
    configured_before: BTreeSet<&'static str>,
    /// Services a file named that a run took in while a commit was
    /// refused: what such a file opens may stay closed until a file that
    /// names them is taken in whole (`REFUSALS_AND_MISSING_TOOLS_FAIL_CLOSED`).
    doubted: BTreeSet<&'static str>,
}

/// What a service must be now, by the model.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Must {
    Closed(&'static str),
    Open,
    OpenTo(Vec<IpNet>),
    /// Whatever the firewall has (`default = "keep"`, never named).
    Free,
}

/// Per service, the lines a file puts in force: `from` lines add up, any
/// other line replaces what came before.
fn in_force(lines: &[(Said, bool)]) -> BTreeMap<&'static str, Vec<Said>> {
    let mut named: BTreeMap<&'static str, Vec<Said>> = BTreeMap::new();
    for (said, _) in lines.iter().filter(|(_, here)| *here) {
        let list = named.entry(said.service).or_default();
        let adds_up = said.source.is_some() && list.iter().all(|l| l.source.is_some());
        if !adds_up {
            list.clear();
        }
        list.push(said.clone());
    }
    named
}

/// What went wrong in a completed run.
#[derive(Debug, Clone, Default)]
struct Faults {
    /// A command of the configured backend failed.
    failed: Option<String>,
    /// The line commits were refused for, once per family refused.
    refused: Vec<RefusedLine>,
    /// A managed family whose program was missing, or broken and run.
    missing: Option<(Family, Missing)>,
    /// Families whose last read in the run was the command that failed.
    unread: BTreeSet<Family>,
    /// A command of the other backend, or nft's list of every chain,
    /// failed: a look for leftovers (a notice) or the read of the host's
    /// whole way in (which fails the run: nothing read is nothing told).
    /// Either exit is right; what status says is checked all the same.
    incidental: Option<String>,
}

/// How much of (a) and (b) is checked in a family after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every service as the model says.
    Full,
    /// Fail closed: every close holds, and a refused service is closed.
    ClosesOnly,
    Unchecked,
}

impl Faults {
    fn none(&self) -> bool {
        self.failed.is_none() && self.refused.is_empty() && self.missing.is_none()
    }

    /// Whether the run must fail for them.
    fn fail_the_run(&self) -> bool {
        !self.none()
    }

    /// Whether the run could not read `family` in the end: its last read
    /// failed (with nftables, one listing reads both), its program is
    /// missing or broken — and today, a program missing in the other
    /// family (see `REFUSALS_AND_MISSING_TOOLS_FAIL_CLOSED`).
    fn unread(&self, family: Family) -> bool {
        let missing = match self.missing {
            Some((missing, Missing::Program)) => {
                missing == family || !REFUSALS_AND_MISSING_TOOLS_FAIL_CLOSED
            }
            Some((missing, Missing::BrokenProgram)) => missing == family,
            _ => false,
        };
        self.unread.contains(&family) || missing
    }

    /// What of (a) and (b) must hold in `family`. After a refused commit:
    /// every close in the refused family, all of it in the other; with a
    /// program missing or broken, all of it in the other family. Where
    /// today's main fails that, only under the constant.
    fn scope(&self, family: Family, backend: Backend) -> Scope {
        let gated = |scope: Scope| match REFUSALS_AND_MISSING_TOOLS_FAIL_CLOSED {
            true => scope,
            false => Scope::Unchecked,
        };
        if self.failed.is_some() {
            return Scope::Unchecked;
        }
        if !self.refused.is_empty() {
            let refused = self.refused.iter().any(|line| line.family == family);
            return match (refused, backend) {
                (true, _) => gated(Scope::ClosesOnly),
                // nftables commits both families in one transaction.
                (false, Backend::Nftables) => gated(Scope::Full),
                (false, Backend::Iptables { .. }) => Scope::Full,
            };
        }
        match self.missing {
            Some((missing, _)) if missing == family => Scope::Unchecked,
            // A missing program stops every family's work today; a broken
            // one does not.
            Some((_, Missing::Program)) => gated(Scope::Full),
            Some(_) => Scope::Full,
            None => Scope::Full,
        }
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut said = Vec::new();
        if let Some(call) = &self.failed {
            said.push(format!("`{call}` failed"));
        }
        if let Some(refused) = self.refused.first() {
            let families: Vec<String> = self.refused.iter().map(|l| l.family.to_string()).collect();
            said.push(format!(
                "a commit was refused ({}) for {}'s line `{}`",
                families.join(", "),
                refused.service,
                refused.line
            ));
        }
        if let Some((family, what)) = self.missing {
            said.push(format!("{} was {what:?}", what.program(family)));
        }
        f.write_str(&said.join(", and "))
    }
}

/// Whether a rule the fake lists is another tool's in portlocker's table.
fn drift(rule: &str) -> bool {
    rule.starts_with("inet portlocker ") && !rule.contains("portlocker:")
}

// ---- one machine -------------------------------------------------------------

struct World {
    dir: tempfile::TempDir,
    setup: Setup,
    services: BTreeSet<&'static str>,
    config: Config,
    fake: FakeFirewall,
    now: DateTime<FixedOffset>,
    source: Option<Written>,
    memory: Memory,
    /// The state file was damaged since the last run loaded it.
    damaged: bool,
    /// Services whose first port another tool accepts ahead of portlocker.
    opened_by_others: BTreeSet<&'static str>,
    /// Some(offline) when the last step was a completed run whose firewall
    /// work succeeded: the same run again at the same moment changes nothing.
    settled: Option<bool>,
    missing_family_runs: usize,
}

impl World {
    fn new(setup: &Setup) -> World {
        // tmpfs where there is one: every state write is fsynced.
        let base = match Path::new("/dev/shm").is_dir() {
            true => PathBuf::from("/dev/shm"),
            false => std::env::temp_dir(),
        };
        let dir = tempfile::Builder::new()
            .prefix("portlocker-props.")
            .tempdir_in(base)
            .unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        let services: BTreeSet<&'static str> = setup.services.iter().copied().collect();
        let config = config(dir.path(), setup, &services);
        let mut world = World {
            dir,
            setup: setup.clone(),
            services,
            config,
            fake: FakeFirewall::default(),
            now: DateTime::parse_from_rfc3339("2026-11-25T10:00:00+01:00").unwrap(),
            source: None,
            memory: Memory::default(),
            damaged: false,
            opened_by_others: BTreeSet::new(),
            settled: None,
            missing_family_runs: 0,
        };
        for program in world.installed() {
            world.install(&program);
        }
        // A program that is not installed does not answer either.
        if !world.setup.nft_installed {
            world.fake.missing.insert("nft");
        }
        world
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The programs the host has: portlocker's checks want them to exist,
    /// and the fake stands in for them.
    fn installed(&self) -> Vec<String> {
        let mut programs: Vec<String> = vec!["iptables".into(), "ip6tables".into()];
        if self.setup.backend == (Backend::Iptables { restore: true }) {
            programs.extend(["iptables-restore".into(), "ip6tables-restore".into()]);
        }
        if self.setup.nft_installed {
            programs.push("nft".into());
        }
        programs
    }

    fn install(&self, program: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path("bin").join(program);
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn step(&mut self, event: &Event) -> Result<(), String> {
        if !matches!(event, Event::Run(_)) {
            self.settled = None;
        }
        match event {
            Event::Write(spec) => {
                let text: String = spec.iter().map(|l| l.text(self.now) + "\n").collect();
                let said = spec.iter().map(|l| l.said(self.now)).collect();
                self.write_source(&text, Written::Lines(said));
            }
            Event::Empty => self.write_source("", Written::Lines(Vec::new())),
            Event::Missing => {
                let _ = std::fs::remove_file(self.path("control.txt"));
                self.source = None;
            }
            Event::Bad(Bad::Html) => self.write_source(
                "<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>\n",
                Written::Refused,
            ),
            Event::Bad(Bad::Line { lines, bad, at }) => {
                let mut text: Vec<String> = lines.iter().map(|l| l.text(self.now)).collect();
                text.insert(*at, bad.to_string());
                self.write_source(&(text.join("\n") + "\n"), Written::Refused);
            }
            Event::AddService(name) => {
                self.services.insert(name);
                self.config = config(self.dir.path(), &self.setup, &self.services);
            }
            Event::RemoveService(name) => {
                if self.services.len() > 1 {
                    self.services.remove(name);
                    self.config = config(self.dir.path(), &self.setup, &self.services);
                }
            }
            Event::ToggleKeepEstablished => {
                self.setup.keep_established = !self.setup.keep_established;
                self.config = config(self.dir.path(), &self.setup, &self.services);
            }
            Event::ForgetState => {
                let _ = std::fs::remove_file(self.config.state_dir.join("state.toml"));
                self.memory = Memory::default();
                self.damaged = false;
            }
            Event::Flush => {
                self.fake.flush();
                self.opened_by_others.clear();
            }
            Event::OtherTool(service, place) => self.other_tool(*service, *place),
            Event::Damage(damage) => self.damage(*damage),
            Event::Wait(minutes) => self.now += TimeDelta::minutes(*minutes),
            Event::Run(run) => return self.run(run),
        }
        Ok(())
    }

    /// Another tool's rule accepting `service`'s first port (or 8080).
    fn other_tool(&mut self, service: Option<&'static str>, place: Place) {
        let (protocol, port) = match service {
            None => (Protocol::Tcp, 8080),
            Some(name) => (ports_of(name)[0].0, ports_of(name)[0].1),
        };
        let protocol = protocol.as_str();
        let inside = place == Place::Inside
            && self
                .fake
                .nft_table("inet", "portlocker")
                .is_some_and(|listing| listing.contains("\"name\": \"input\""));
        match place {
            Place::Top => {
                let rule =
                    format!("-I INPUT 1 -p {protocol} -m {protocol} --dport {port} -j ACCEPT");
                for binary in ["iptables", "ip6tables"] {
                    self.fake.admin(binary, &rule);
                }
            }
            _ if inside => {
                let script =
                    format!("insert rule inet portlocker input {protocol} dport {port} accept\n");
                self.fake.admin_nft(&script).expect("the chain is there");
            }
            _ => {
                let script = format!(
                    "table inet othertool {{\n  chain input {{\n    type filter hook input priority -100; \
                     policy accept;\n    {protocol} dport {port} accept\n  }}\n}}\n"
                );
                self.fake.admin_nft(&script).expect("a table of its own");
            }
        }
        // Ahead of portlocker's rules in iptables' INPUT, or in its own table
        // until a run removes it. (An accept in a table of its own ends
        // only that table's chain.)
        if let Some(name) = service.filter(|_| place == Place::Top || inside) {
            self.opened_by_others.insert(name);
        }
    }

    fn write_source(&mut self, text: &str, written: Written) {
        std::fs::write(self.path("control.txt"), text).unwrap();
        self.source = Some(written);
    }

    /// Damages the state file so that no run can take it for a whole one.
    fn damage(&mut self, damage: Damage) {
        self.damaged = true;
        let path = self.config.state_dir.join("state.toml");
        // A file portlocker wrote; otherwise (none yet, or damaged already) garbage.
        let whole = std::fs::read(&path).ok().and_then(|bytes| {
            let text = String::from_utf8(bytes.clone()).ok()?;
            let body_end = text.rfind("\n# check ")? + 1;
            Some((bytes, text, body_end))
        });
        let Some((mut bytes, text, body_end)) = whole else {
            std::fs::create_dir_all(&self.config.state_dir).unwrap();
            std::fs::write(&path, "portlocker was here\n").unwrap();
            return;
        };
        match damage {
            Damage::Empty => bytes.clear(),
            Damage::Cut(random) => {
                // Before the last run is recorded, so it cannot pass for
                // a whole file from before checksums.
                let limit = text.find("last_run").unwrap_or(body_end).min(body_end);
                bytes.truncate((random % (limit as u64 + 1)) as usize);
            }
            Damage::InCheck(random) => {
                let keep = "# check ".len() + 1 + (random % 15) as usize;
                bytes.truncate(body_end + keep);
            }
            Damage::Flip(random, byte) => {
                // Not the newline before the checksum line: that stays the last line.
                let at = (random % (body_end as u64 - 1)) as usize;
                bytes[at] = if bytes[at] == byte {
                    byte.wrapping_add(1)
                } else {
                    byte
                };
            }
        }
        std::fs::write(&path, bytes).unwrap();
    }

    /// What the run takes in, by the model; why it must fail, if it must.
    /// Also the services the file taken in names, if one was.
    fn intake(&mut self, offline: bool) -> (Vec<String>, BTreeSet<&'static str>) {
        let mut problems = Vec::new();
        let mut taken = BTreeSet::new();
        let lost = std::mem::take(&mut self.damaged);
        if lost {
            self.memory = Memory::default();
            problems.push("the state file was damaged".to_owned());
        }
        let nothing_kept = !self.memory.has_last_good && self.memory.wanted.is_empty();
        self.memory.configured_before = std::mem::take(&mut self.memory.configured);
        self.memory.configured = self.services.iter().copied().collect();
        let services = &self.services;
        self.memory
            .wanted
            .retain(|service, _| services.contains(service));
        if offline {
            if nothing_kept && !self.setup.default_close {
                problems.push("offline, with no last good file".to_owned());
            }
            if self.memory.fetch_failed {
                problems.push("the last fetch failed".to_owned());
            }
        } else {
            let before = problems.len();
            match &self.source {
                None => problems.push("the source is missing".to_owned()),
                Some(Written::Refused) => problems.push("the file is invalid".to_owned()),
                Some(Written::Lines(lines)) => {
                    let unknown = lines
                        .iter()
                        .find(|(said, here)| *here && !services.contains(said.service));
                    match unknown {
                        Some((said, _)) => problems.push(format!(
                            "the file names {}, which the config does not have",
                            said.service
                        )),
                        None => {
                            let named = in_force(lines);
                            taken.extend(named.keys().copied());
                            self.memory.wanted.extend(named);
                            self.memory.has_last_good = true;
                        }
                    }
                }
            }
            self.memory.fetch_failed = problems.len() > before;
        }
        let wanted = &self.memory.wanted;
        self.memory
            .starts
            .retain(|said, _| wanted.values().flatten().any(|line| line == said));
        if lost {
            // When a count began was lost with the state: it is taken as
            // ended, never begun again (fail closed).
            for said in self.memory.wanted.values().flatten() {
                let own = match said.ends {
                    Some(Ends::For(minutes)) => Some(TimeDelta::minutes(minutes)),
                    _ => None,
                };
                let cap = self.setup.max_open_hours.map(TimeDelta::hours);
                let span = match (own, cap) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if let Some(span) = span.filter(|_| said.open) {
                    self.memory
                        .starts
                        .entry(said.clone())
                        .or_insert(self.now - span);
                }
            }
        }
        (problems, taken)
    }

    /// The opens of `services` that had no start count from now.
    fn start_opens(&mut self, services: &[&'static str]) {
        for said in self.memory.wanted.values().flatten() {
            if said.open && services.contains(&said.service) {
                self.memory.starts.entry(said.clone()).or_insert(self.now);
            }
        }
    }

    fn active(&self, said: &Said) -> bool {
        let start = self.memory.starts.get(said).copied().unwrap_or(self.now);
        let mut end = match said.ends {
            Some(Ends::For(minutes)) => Some(start + TimeDelta::minutes(minutes)),
            Some(Ends::Until(deadline)) => Some(deadline),
            None => None,
        };
        if let Some(hours) = self.setup.max_open_hours {
            let cap = start + TimeDelta::hours(hours);
            end = Some(end.map_or(cap, |end| end.min(cap)));
        }
        end.is_none_or(|end| self.now < end)
    }

    fn must(&self, service: &'static str) -> Must {
        let Some(lines) = self.memory.wanted.get(service) else {
            return match self.setup.default_close {
                true => Must::Closed("default = \"close\" and no file named it"),
                false => Must::Free,
            };
        };
        let mut open = false;
        let mut sources = Vec::new();
        for said in lines {
            if !said.open {
                return Must::Closed("the owner closed it");
            }
            if !self.active(said) {
                continue;
            }
            match said.source {
                None => open = true,
                Some(source) => sources.push(source),
            }
        }
        match (open, sources.is_empty()) {
            (true, _) => Must::Open,
            (false, false) => Must::OpenTo(sources),
            (false, true) => Must::Closed("its open ended"),
        }
    }

    fn run(&mut self, run: &Run) -> Result<(), String> {
        self.now += TimeDelta::minutes(run.advance);
        let settled = self.settled.take() == Some(run.offline)
            && run.advance == 0
            && run.kill.is_none()
            && run.fail.is_none()
            && run.refuse.is_none()
            && run.missing.is_none();
        let had_last_good = self.memory.has_last_good;
        let (problems, taken) = self.intake(run.offline);
        self.fake.calls.clear();
        self.fake.wrote.clear();
        self.fake.failed = None;
        self.fake.refused.clear();
        // The oracle judges the kernel's time matches at the run's moment.
        self.fake.clock = Some(self.now.to_utc());
        if let Some((at, point)) = run.kill {
            self.fake.arm_kill(at, point);
        }
        if let Some(nth) = run.fail {
            self.fake.arm_failure(nth);
        }
        if let Some(pick) = run.refuse {
            self.fake.arm_refusal(pick);
        }
        // Only a family the config manages can miss a program.
        let missing = run
            .missing
            .filter(|(family, _)| self.config.families().contains(family));
        if let Some((family, what)) = missing {
            self.break_program(family, what, true);
            self.missing_family_runs += 1;
        }
        let (config, fake, now) = (&self.config, &mut self.fake, self.now);
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            run::run_locked(config, run.offline, &mut *fake, now)
        }));
        self.fake.disarm();
        if let Some((family, what)) = missing {
            self.break_program(family, what, false);
        }
        let exit = match outcome {
            Ok(exit) => exit,
            Err(payload) if payload.is::<Killed>() => {
                // Every count's start is saved before the first firewall
                // command, where every kill lands: a killed run has begun them.
                let all: Vec<&'static str> = self.services.iter().copied().collect();
                self.start_opens(&all);
                // Every write is atomic: a kill leaves a whole state file.
                return match State::peek(&self.config.state_dir) {
                    Loaded::Damaged(reason) => Err(format!("the kill left {reason}")),
                    _ => Ok(()),
                };
            }
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                return Err(format!("the run panicked: {message}"));
            }
        };
        let faults = self.faults(missing, run.fail);
        let blocked = self.blocked();
        self.start_counts(&faults, &blocked);
        let calls = std::mem::take(&mut self.fake.calls);
        self.memory
            .doubted
            .retain(|service| !taken.contains(service));
        let checked = self.check_run(exit, &problems, &faults, &blocked, &calls, settled);
        if !faults.refused.is_empty() && REFUSALS_AND_MISSING_TOOLS_FAIL_CLOSED {
            // A file with a line the firewall would not take is not kept as
            // the last good one, and what it opens may stay closed after.
            self.memory.has_last_good = had_last_good;
            self.memory.doubted.extend(&taken);
        }
        self.settled = faults.none().then_some(run.offline);
        if self.setup.backend == Backend::Nftables && !self.fake.rules().iter().any(|r| drift(r)) {
            // What another tool put into portlocker's table is gone.
            self.opened_by_others.clear();
        }
        match (checked, run.kill) {
            (Err(problem), Some((at, _))) => Err(format!(
                "(the run ended before {at:?}, so it was not killed) {problem}"
            )),
            (checked, _) => checked,
        }
    }

    /// Takes `family`'s program away as `what` says (`broken`), or puts it back.
    fn break_program(&mut self, family: Family, what: Missing, broken: bool) {
        let program = what.program(family);
        let path = self.path("bin").join(&program);
        let name: &'static str = match program.as_str() {
            "iptables" => "iptables",
            "ip6tables" => "ip6tables",
            "iptables-restore" => "iptables-restore",
            _ => "ip6tables-restore",
        };
        match (what, broken) {
            (Missing::Program | Missing::Restore, true) => {
                let _ = std::fs::remove_file(&path);
                self.fake.missing.insert(name);
            }
            (Missing::Program | Missing::Restore, false) => {
                if self.installed().contains(&program) {
                    self.install(&program);
                }
                self.fake.missing.remove(name);
            }
            (_, true) => self.fake.broken = Some(name),
            (_, false) => self.fake.broken = None,
        }
    }

    /// What went wrong in the run that just completed, as the fake saw it.
    fn faults(&self, missing: Option<(Family, Missing)>, fail: Option<usize>) -> Faults {
        // A command of the backend the config does not name (a look for
        // leftovers), or nft's list of other tables' chains (for the page's
        // notices), failing only costs a notice.
        let other_backend = |call: &&String| match self.setup.backend {
            Backend::Nftables => !call.contains("/nft "),
            Backend::Iptables { .. } => call.contains("/nft "),
        };
        let incidental = |call: &&String| other_backend(call) || call.contains(" list chains");
        let failed = self
            .fake
            .failed
            .as_ref()
            .filter(|call| !incidental(call))
            .cloned();
        let ran = |program: &str| {
            self.fake
                .calls
                .iter()
                .any(|call| call.contains(&format!("/{program} ")))
        };
        let missing = missing.filter(|(family, what)| match what {
            Missing::Program => true,
            Missing::Restore => false,
            Missing::BrokenProgram | Missing::BrokenRestore => ran(&what.program(*family)),
        });
        // A read that fails is read again after the changes, if any were made.
        let reads = |call: &String, family: Family| match self.setup.backend {
            Backend::Nftables => call.contains(" list table "),
            Backend::Iptables { .. } => {
                call.contains(" -S ") && call.contains(&format!("/{} ", binary_of(family)))
            }
        };
        // portlocker's view of its place is the last read of it after its
        // last write (nft's echo of a commit is one): the count of an open
        // it shows starts, whatever read failed after.
        let writes = |call: &String| {
            call.contains(" -f -")
                || call.contains("-restore ")
                || [" -A ", " -I ", " -D ", " -N ", " -X ", " -F "]
                    .iter()
                    .any(|change| call.contains(change))
        };
        let echoes = |call: &String| call.contains(" -e -j -f -");
        let calls = &self.fake.calls;
        let unread = match (&failed, fail) {
            (Some(call), Some(nth)) => {
                let failed_at = nth - 1;
                let since = calls[..failed_at].iter().rposition(writes).unwrap_or(0);
                let known = |family: Family| {
                    (since..calls.len())
                        .filter(|&at| at != failed_at)
                        .any(|at| reads(&calls[at], family) || echoes(&calls[at]))
                };
                self.config
                    .families()
                    .into_iter()
                    .filter(|&family| reads(call, family) && !known(family))
                    .collect()
            }
            _ => BTreeSet::new(),
        };
        Faults {
            failed,
            refused: self.fake.refused.clone(),
            missing,
            unread,
            incidental: self.fake.failed.as_ref().filter(incidental).cloned(),
        }
    }

    /// A count starts once its open is in the firewall: for every open when
    /// the firewall work succeeded, else for the services that let
    /// something through in a family the run could read.
    fn start_counts(&mut self, faults: &Faults, blocked: &[&'static str]) {
        let succeeded = !faults.fail_the_run() && blocked.is_empty();
        let unread: Vec<Family> = self
            .config
            .families()
            .into_iter()
            .filter(|&family| faults.unread(family))
            .collect();
        let started: Vec<&'static str> = self
            .services
            .iter()
            .copied()
            .filter(|&service| {
                succeeded
                    || self
                        .config
                        .families()
                        .into_iter()
                        .filter(|family| !unread.contains(family))
                        .any(|family| self.oracle(service, family) != PortState::Closed)
            })
            .collect();
        self.start_opens(&started);
    }

    /// Services another tool accepts ahead of portlocker's rules that must
    /// be closed: they cannot be, and the run must say so. (portlocker's own
    /// chain is jumped to from the top of INPUT, ahead of such a rule; in
    /// nftables, portlocker removes what another tool put in its table.)
    fn blocked(&self) -> Vec<&'static str> {
        self.services
            .iter()
            .copied()
            .filter(|service| self.setup.chain_is_input && self.opened_by_others.contains(service))
            .filter(|service| matches!(self.must(service), Must::Closed(_) | Must::OpenTo(_)))
            .collect()
    }

    /// Every invariant after a completed run.
    fn check_run(
        &mut self,
        exit: Exit,
        problems: &[String],
        faults: &Faults,
        blocked: &[&'static str],
        calls: &[String],
        settled: bool,
    ) -> Result<(), String> {
        // (d) The exit code.
        let expected = match problems.is_empty() && !faults.fail_the_run() && blocked.is_empty() {
            true => Exit::Ok,
            false => Exit::Failed,
        };
        let said = match State::peek(&self.config.state_dir) {
            Loaded::Kept(state) => state.last_run.and_then(|run| run.failure),
            _ => None,
        };
        // A host read that failed fails the run, and says which command.
        let told = |call: &String| {
            said.as_deref()
                .is_some_and(|said| said.contains(call.as_str()))
        };
        let incidental = expected == Exit::Ok
            && exit == Exit::Failed
            && faults.incidental.as_ref().is_some_and(told);
        if exit != expected && !incidental {
            return Err(format!(
                "exit {exit:?}, expected {expected:?} ({}); the run said: {}",
                match (problems.is_empty(), faults.fail_the_run(), blocked.first()) {
                    (true, false, None) => "a good file and no failed command".to_owned(),
                    (_, true, _) => format!("{faults}"),
                    (true, false, Some(service)) => {
                        format!("another tool accepts {service}, which must be closed")
                    }
                    _ => problems.join("; "),
                },
                said.as_deref().unwrap_or("nothing")
            ));
        }

        // (a), (b): what must be closed is closed to everyone, in every
        // family; and what is open is open as asked.
        for family in self.config.families() {
            let scope = faults.scope(family, self.setup.backend);
            if scope == Scope::Unchecked {
                continue;
            }
            for &service in &self.services {
                if blocked.contains(&service) {
                    continue;
                }
                let must = self.must(service);
                let doubted = self.memory.doubted.contains(service)
                    && matches!(must, Must::Open | Must::OpenTo(_));
                match scope {
                    // Not more open than asked.
                    Scope::Full if doubted => self.check_no_wider(service, &must, family)?,
                    Scope::Full => self.check_must(service, &must, family)?,
                    _ if matches!(must, Must::Closed(_)) => {
                        self.check_must(service, &must, family)?
                    }
                    _ => {}
                }
            }
            // Fail closed: what could not be written is closed, not opened.
            if scope == Scope::ClosesOnly {
                // (Not where another tool's rule accepts the port ahead of
                // portlocker's: no close of portlocker's can hold there.)
                let refused = faults.refused.iter().filter(|line| {
                    line.family == family
                        && !(self.setup.chain_is_input
                            && self.opened_by_others.iter().any(|s| *s == line.service))
                });
                for line in refused {
                    self.check_refused(line)?;
                }
            }
        }

        // (c) What portlocker reports is what the firewall does.
        self.check_report(exit)?;

        // Root writes only what it means to: no ip6tables without IPv6.
        if !self.setup.ipv6
            && let Some(call) = calls
                .iter()
                .find(|call| call.contains("/ip6tables ") || call.contains("/ip6tables-restore "))
        {
            return Err(format!("ipv6 = false, yet the run ran `{call}`"));
        }
        // The same run again at the same moment only reads.
        if settled && let Some(call) = self.fake.wrote.first() {
            return Err(format!(
                "the run before left nothing to do, yet this one ran `{call}`"
            ));
        }
        // Nothing is left tagged for a service the config no longer has —
        // once the run read the firewall: with a file refused and nothing
        // to enforce, it does not.
        let idle = !problems.is_empty() && self.services.iter().all(|s| self.must(s) == Must::Free);
        if faults.none() && !idle {
            let jumps = ["\"portlocker:jump.a\"", "\"portlocker:jump.b\""];
            // A service this state never knew is another config's: left.
            let known = &self.memory.configured_before;
            let stale = self.fake.rules().into_iter().find(|rule| {
                rule.split_whitespace()
                    .filter(|word| word.starts_with("\"portlocker:") && !jumps.contains(word))
                    .any(|word| {
                        let name = &word["\"portlocker:".len()..word.len() - 1];
                        !self.services.contains(name) && known.contains(name)
                    })
            });
            if let Some(rule) = stale {
                return Err(format!(
                    "a rule of a service no longer configured stays: {rule}"
                ));
            }
        }
        Ok(())
    }

    /// What the refused `line` would have let in (its source, or with a
    /// deadline everyone) to its ports is dropped: a refused source is not
    /// let in, an open whose end could not be written is closed.
    fn check_refused(&self, line: &RefusedLine) -> Result<(), String> {
        let words: Vec<&str> = line.line.split_whitespace().collect();
        let after = |names: &[&str]| {
            words
                .windows(2)
                .find(|pair| names.contains(&pair[0]))
                .map(|pair| pair[1])
        };
        let source = after(&["-s", "saddr"]).map(net);
        let ports = after(&["--dport", "dport"]).expect("a rule for a port");
        let (first, last) = ports.split_once([':', '-']).unwrap_or((ports, ports));
        let protocol = match words.contains(&"udp") {
            true => Protocol::Udp,
            false => Protocol::Tcp,
        };
        let from = match source {
            Some(net) => net.network(),
            None => match line.family {
                Family::Ipv4 => GENERIC_V4.parse().unwrap(),
                Family::Ipv6 => GENERIC_V6.parse().unwrap(),
            },
        };
        for port in [first, last] {
            let probe = Probe {
                protocol,
                port: port.parse().expect("a port"),
                from,
            };
            if self.fake.fate(line.family, probe) == Fate::Accepted {
                return Err(format!(
                    "{} on {}: the line `{}` was refused, yet port {port} lets {from} in",
                    line.service, line.family, line.line
                ));
            }
        }
        Ok(())
    }

    /// A service asked open (to all, or to `must`'s sources) is open no
    /// wider than asked: a doubted open may be closed.
    fn check_no_wider(
        &self,
        service: &'static str,
        must: &Must,
        family: Family,
    ) -> Result<(), String> {
        let Must::OpenTo(sources) = must else {
            return Ok(());
        };
        let ours = sources.iter().any(|net| family_of(net) == family);
        match self.oracle(service, family) {
            PortState::Closed => Ok(()),
            PortState::OpenToSources if ours => Ok(()),
            state => Err(format!(
                "{service} on {family} should be open to {sources:?} at most, but the firewall has it {}",
                state.as_str()
            )),
        }
    }

    fn check_must(&self, service: &'static str, must: &Must, family: Family) -> Result<(), String> {
        let state = self.oracle(service, family);
        let fail = |what: String| {
            Err(format!(
                "{service} on {family} should be {what}, but the firewall has it {}",
                state.as_str()
            ))
        };
        match must {
            Must::Free => Ok(()),
            Must::Closed(why) if state != PortState::Closed => fail(format!("closed ({why})")),
            Must::Closed(_) => Ok(()),
            Must::Open if state != PortState::Open => fail("open".to_owned()),
            Must::Open => Ok(()),
            Must::OpenTo(sources) => {
                let ours: Vec<&IpNet> = sources
                    .iter()
                    .filter(|net| family_of(net) == family)
                    .collect();
                if ours.is_empty() {
                    return match state {
                        PortState::Closed => Ok(()),
                        _ => fail("closed (its sources are of the other family)".to_owned()),
                    };
                }
                if state != PortState::OpenToSources {
                    return fail(format!("open to {ours:?} only"));
                }
                for net in ours {
                    for probe in probes(service, net.network()) {
                        if self.fake.fate(family, probe) == Fate::Dropped {
                            return fail(format!("open to {net}, port {}", probe.port));
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// The oracle's state of a service in a family: from a generic address
    /// and from every source the test or the table names.
    fn oracle(&self, service: &'static str, family: Family) -> PortState {
        let generic: IpAddr = match family {
            Family::Ipv4 => GENERIC_V4.parse().unwrap(),
            Family::Ipv6 => GENERIC_V6.parse().unwrap(),
        };
        let mut others: Vec<IpAddr> = V4_SOURCES
            .iter()
            .chain(V6_SOURCES)
            .map(|text| net(text).network())
            .chain(self.fake.sources(family).iter().map(IpNet::network))
            .filter(|address| address.is_ipv4() == generic.is_ipv4())
            .collect();
        others.sort();
        others.dedup();
        let states: Vec<PortState> = probes(service, generic)
            .into_iter()
            .map(|probe| {
                let fate = |from| self.fake.fate(family, Probe { from, ..probe });
                if fate(generic) == Fate::Accepted {
                    PortState::Open
                } else if others.iter().any(|&from| fate(from) == Fate::Accepted) {
                    PortState::OpenToSources
                } else {
                    PortState::Closed
                }
            })
            .collect();
        let all = |wanted: PortState| states.iter().all(|&state| state == wanted);
        if all(PortState::Closed) {
            PortState::Closed
        } else if all(PortState::Open) {
            PortState::Open
        } else if states
            .iter()
            .all(|s| matches!(s, PortState::Closed | PortState::OpenToSources))
        {
            PortState::OpenToSources
        } else {
            PortState::Partial
        }
    }

    /// portlocker's verdicts over the firewall as status reads it (the
    /// host's whole way in, through the evaluator), and the metrics the run
    /// wrote, against the oracle.
    fn check_report(&mut self, exit: Exit) -> Result<(), String> {
        let (host, errors) = firewall::backend_for(&self.config, &mut self.fake).read_host();
        self.fake.calls.clear();
        if let Some(error) = errors.first() {
            return Err(format!("the firewall could not be read: {error}"));
        }
        let text = std::fs::read_to_string(self.path("metrics.prom"))
            .map_err(|error| format!("no metrics: {error}"))?;
        let mut closed = BTreeMap::new();
        let mut success = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("portlocker_service_closed{service=\"") {
                let (service, rest) = rest.split_once("\",family=\"").unwrap();
                let (family, value) = rest.split_once("\"} ").unwrap();
                closed.insert((service.to_owned(), family.to_owned()), value.to_owned());
            } else if let Some(value) = line.strip_prefix("portlocker_last_run_success ") {
                success = Some(value.to_owned());
            }
        }
        let want_success = if exit == Exit::Ok { "1" } else { "0" };
        if success.as_deref() != Some(want_success) {
            return Err(format!(
                "exit {exit:?}, but the metrics say last_run_success {success:?}"
            ));
        }
        let rules = self.fake.rules();
        // A rule of another tool in portlocker's nftables table is opaque
        // to portlocker: whatever it decides is unknown.
        let opaque = rules.iter().any(|rule| drift(rule));
        for &service in &self.services {
            let name = ServiceName::new(service).unwrap();
            for family in self.config.families() {
                let truth = self.oracle(service, family);
                let seen = crate::firewall::truth::service_state(
                    &self.config,
                    &host,
                    family,
                    &name,
                    self.now.to_utc(),
                )
                .state;
                let key = (service.to_owned(), family.to_string().to_lowercase());
                let reported = closed.remove(&key);
                // Unknown is honest where another tool's rule covers part of
                // a range, or is one portlocker cannot read.
                let partly_covered = seen == PortState::Unknown
                    && (opaque
                        || self.opened_by_others.contains(service) && truth != PortState::Closed);
                if seen != truth && !partly_covered {
                    return Err(format!(
                        "status says {service} is {} on {family}, but the firewall has it {}",
                        seen.as_str(),
                        truth.as_str()
                    ));
                }
                let honest = match reported.as_deref() {
                    Some("1") => truth == PortState::Closed,
                    Some("0") => truth != PortState::Closed,
                    // Unknown: honest, when the run could not read the firewall.
                    None => exit == Exit::Failed || seen == PortState::Unknown,
                    Some(_) => false,
                };
                if !honest {
                    return Err(format!(
                        "the metrics say {service} on {family} closed = {reported:?}, \
                         but the firewall has it {}",
                        truth.as_str()
                    ));
                }
            }
        }
        if let Some(((service, family), _)) = closed.into_iter().next() {
            return Err(format!(
                "the metrics report {service} on {family}, which is not configured"
            ));
        }
        Ok(())
    }
}

fn family_of(net: &IpNet) -> Family {
    match net {
        IpNet::V4(_) => Family::Ipv4,
        IpNet::V6(_) => Family::Ipv6,
    }
}

fn ports_of(service: &str) -> Ports {
    let (_, _, specs) = POOL.iter().find(|(name, _, _)| *name == service).unwrap();
    specs
}

/// New connections to every port spec of `service`: its first and last port.
fn probes(service: &'static str, from: IpAddr) -> Vec<Probe> {
    let mut probes = Vec::new();
    for &(protocol, first, last) in ports_of(service) {
        for port in [first, last] {
            let probe = Probe {
                protocol,
                port,
                from,
            };
            if !probes.contains(&probe) {
                probes.push(probe);
            }
        }
    }
    probes
}

fn config(dir: &Path, setup: &Setup, services: &BTreeSet<&'static str>) -> Config {
    let path = |name: &str| dir.join(name).display().to_string();
    let mut text = format!(
        "source = {:?}\nlog_file = {:?}\nstatus_file = {:?}\nmetrics_file = {:?}\n\
         state_dir = {:?}\nhost_name = \"test-host\"\n[firewall]\niptables = {:?}\n\
         ip6tables = {:?}\nnft = {:?}\nipv6 = {}\nchain = {:?}\nkeep_established = {}\ndefault = {:?}\n",
        path("control.txt"),
        path("log"),
        path("status.html"),
        path("metrics.prom"),
        path("state"),
        path("bin/iptables"),
        path("bin/ip6tables"),
        path("bin/nft"),
        setup.ipv6,
        if setup.chain_is_input {
            "INPUT"
        } else {
            "PORTLOCKER"
        },
        setup.keep_established,
        if setup.default_close { "close" } else { "keep" },
    );
    if let Some(hours) = setup.max_open_hours {
        text.push_str(&format!("max_open = \"{hours}h\"\n"));
    }
    if setup.backend == Backend::Nftables {
        text.push_str("backend = \"nftables\"\n");
    }
    text.push_str("[services]\n");
    for (name, value, _) in POOL.iter().filter(|(name, _, _)| services.contains(name)) {
        text.push_str(&format!("{name} = {value}\n"));
    }
    Config::parse(&text).unwrap_or_else(|error| panic!("{error:#}\n{text}"))
}

// ---- the test ------------------------------------------------------------------

/// A simulated kill is not worth a message; every other panic still gets one.
fn quiet_kills() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<Killed>() {
                default(info);
            }
        }));
    });
}

/// The shortest sequence found that still fails: chunks of events, then
/// single events, then initial services taken away while it fails.
fn shrink(case: &Case) -> (Case, String) {
    let mut best = case.clone();
    let mut failure = best.check().expect_err("the case fails");
    let mut chunk = best.events.len().div_ceil(2);
    while chunk > 0 {
        let mut at = 0;
        while at < best.events.len() {
            let mut candidate = best.clone();
            let end = (at + chunk).min(candidate.events.len());
            candidate.events.drain(at..end);
            match candidate.check() {
                Err(problem) => (best, failure) = (candidate, problem),
                Ok(()) => at += chunk,
            }
        }
        chunk /= 2;
    }
    for service in case.setup.services.clone() {
        if best.setup.services.len() < 2 {
            break;
        }
        let mut candidate = best.clone();
        candidate.setup.services.retain(|s| *s != service);
        if let Err(problem) = candidate.check() {
            (best, failure) = (candidate, problem);
        }
    }
    (best, failure)
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number")))
}

/// Seeds beyond the usual cases that once failed, run every time: a
/// service taken out of the config after a killed run (its drift was left
/// as another config's), an offline run after a failed fetch (it cleared
/// the failure), a state deleted by the owner (another config's closes are
/// left alone).
const REGRESSIONS: [u64; 6] = [
    0xc1fa_fbc8_777d_66dd,
    0xff13_58ae_b7a0_c20b,
    0xc31a_4ab2_d497_519c,
    // A count started a run late when the host could not be read back.
    0xb204_7f40_f692_1b84,
    // …and must not start where a refused commit left the open out…
    0x36ac_7b0a_1960_a097,
    // …and does start where the commit's echo shows it, whatever failed after.
    0x85b6_0a4d_8736_2d7e,
];

#[test]
fn no_sequence_of_events_opens_what_the_owner_closed_or_misreports_it() {
    quiet_kills();
    let seeds: Vec<u64> = match env_number("PORTLOCKER_PROPERTY_SEED") {
        Some(seed) => vec![seed],
        None => {
            let cases = env_number("PORTLOCKER_PROPERTY_CASES").unwrap_or(CASES);
            let mut rng = Rng(0x706f_7274_6c6f_636b);
            let drawn = (0..cases).map(|_| rng.next());
            drawn.chain(REGRESSIONS).collect()
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let stop = AtomicBool::new(false);
    let first_failure: Mutex<Option<Case>> = Mutex::new(None);
    let driven: Mutex<Coverage> = Mutex::new(Coverage::default());
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (seeds, stop, first_failure, driven) = (&seeds, &stop, &first_failure, &driven);
            scope.spawn(move || {
                for &seed in seeds.iter().skip(thread).step_by(threads) {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let case = Case::generate(seed);
                    let (outcome, coverage) = case.play();
                    *driven.lock().unwrap() += coverage;
                    if outcome.is_err() {
                        stop.store(true, Ordering::Relaxed);
                        first_failure.lock().unwrap().get_or_insert(case);
                        return;
                    }
                }
            });
        }
    });
    let driven = driven.into_inner().unwrap();
    // Seen with --nocapture.
    println!("{} sequences drove {driven}", seeds.len());
    let Some(case) = first_failure.into_inner().unwrap() else {
        // A plain run must keep driving every path it is meant to.
        let plain = seeds.len() as u64 >= CASES && env_number("PORTLOCKER_PROPERTY_SEED").is_none();
        assert!(
            !plain || driven.reaches(&COVERAGE),
            "{} sequences drove {driven}; at least {COVERAGE} were expected",
            seeds.len()
        );
        return;
    };
    let (shrunk, failure) = shrink(&case);
    let steps: Vec<String> = shrunk
        .events
        .iter()
        .enumerate()
        .map(|(i, event)| format!("  {:>2}. {event}", i + 1))
        .collect();
    panic!(
        "the property fails for seed {seed:#x} (replay: PORTLOCKER_PROPERTY_SEED={seed:#x} \
         cargo test --lib properties).\nShrunk to {} of {} steps, with {:?}:\n{}\n{failure}",
        shrunk.events.len(),
        case.events.len(),
        shrunk.setup,
        steps.join("\n"),
        seed = case.seed,
    );
}
