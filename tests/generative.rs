//! Control files drawn from the whole grammar — every line shape, every
//! form of time (RFC 3339 with any offset, fractions and leap seconds; a
//! bare date and time in the host's zone, its DST gaps and folds; `for`),
//! sources of both families, edge values weighted — are validated, planned
//! and committed by the real binary through real iptables-restore and real
//! nft in a private network namespace. Every file the grammar accepts must
//! commit on both backends, and the ports it closes must refuse real
//! connections while those it opens let them in; a file it refuses must
//! leave the firewall as it was. Each case is a few files in a row on a
//! fresh firewall, ending with a run that changes nothing and a reboot
//! (`--offline` on an emptied firewall).
//!
//! PORTLOCKER_GENERATIVE_CASES sets how many cases run per backend (CI:
//! the default, a few hundred files in all; set it higher for a long run).

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use ipnet::IpNet;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

use common::TestEnv;
use common::backend::{Backend, IP6T, IPT, NFT};
use common::probe::{self, Probe, Proto};

/// Cases per backend when PORTLOCKER_GENERATIVE_CASES is not set.
const CI_CASES: u32 = 70;

/// The services of the generated config: one port, several, both
/// protocols, a range, the first and last ports, and a name as long as
/// a service name may be (its tag is the longest comment portlocker writes).
const SERVICES: &[(&str, &[(Proto, u16)])] = &[
    ("ssh", &[(Proto::Tcp, 22)]),
    ("web", &[(Proto::Tcp, 80), (Proto::Tcp, 443)]),
    ("dns", &[(Proto::Udp, 53), (Proto::Tcp, 53)]),
    ("mosh", &[(Proto::Udp, 60000), (Proto::Udp, 60010)]),
    ("edge", &[(Proto::Tcp, 1), (Proto::Udp, 65535)]),
    ("a23456789-123456789-123456789-12", &[(Proto::Tcp, 8080)]),
];

const SERVICES_TOML: &str = "ssh = 22\nweb = [80, \"443/tcp\"]\ndns = [\"53/udp\", \"53/tcp\"]\n\
     mosh = \"60000-60010/udp\"\nedge = [1, \"65535/udp\"]\na23456789-123456789-123456789-12 = 8080\n";

/// The `[firewall]` lines of each config a case may run under (nftables
/// takes no `chain`: it keeps a table of its own).
const VARIANTS: &[&str] = &[
    "",
    "keep_established = false\ndefault = \"close\"\nchain = \"INPUT\"",
    "default = \"close\"\nchain = \"P-2345678901234567890123456\"",
];

/// Where connections come from: each family's loopback and one more local address.
const FROM: &[&str] = &["127.0.0.1", "127.0.0.2", "::1", "2001:db8::7"];

/// Zones a case may run in (TZ of the binary), when this host has them.
const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Asia/Kathmandu",
];

/// Bare local times that each zone skips (a DST gap: refused) or repeats
/// (a fold: the earlier moment), in the future of 2026.
const ZONE_TIMES: &[(&str, &str, bool)] = &[
    ("Europe/Berlin", "2027-03-28 02:30", true),
    ("Europe/Berlin", "2027-10-31 02:30", false),
    ("America/New_York", "2027-03-14 02:30", true),
    ("America/New_York", "2027-11-07 01:30", false),
    ("Australia/Lord_Howe", "2027-10-03 02:15", true),
    ("Australia/Lord_Howe", "2027-04-04 01:45", false),
    ("Pacific/Chatham", "2027-09-26 03:00", true),
    ("Pacific/Chatham", "2027-04-04 03:00", false),
];

/// Deadlines in RFC 3339, which parse in any zone.
const RFC3339: &[&str] = &[
    "2030-06-30T23:59:60Z",
    "2037-12-31T23:59:60Z",
    "2030-01-01t00:00:00z",
    "2030-01-01T00:00:00.5Z",
    "2030-01-01T00:00:00.999999999+14:00",
    "2030-01-01T00:00:00-12:00",
    "2030-01-01T05:45:00+05:45",
    "2030-01-01T00:00:00-00:00",
    "2038-01-19T03:14:07Z",
    "2038-01-19T03:14:08Z",
    "2038-01-19T03:14:06.5Z",
    "2038-01-19T03:14:07+00:01",
    "2099-12-31T23:59:59Z",
    "9999-12-31T23:59:60+14:00",
    "9999-12-31T23:59:59-23:59",
    "2020-01-01T00:00:00Z",
    "2016-12-31T23:59:60Z",
    "1970-01-01T00:00:00Z",
    "1970-01-01T00:00:01Z",
    "1969-12-31T23:59:59.999Z",
    "0001-01-01T00:00:00Z",
];

/// Bare dates and times in the case's zone, away from any clock change.
const LOCAL: &[&str] = &[
    "2030-06-01 12:00",
    "2037-12-31 23:59",
    "2038-01-19 03:14",
    "9999-12-31 23:59",
    "2001-01-01 00:00",
    "1970-01-01 00:00",
    "1900-01-01 00:00",
];

const DURATIONS: &[&str] = &["2h", "1m", "90m", "1D", "3650d", "7d", "2H"];

/// Sources the grammar takes, each with the network it stands for.
const SOURCES: &[(&str, &str)] = &[
    ("127.0.0.2", "127.0.0.2/32"),
    ("2001:db8::7", "2001:db8::7/128"),
    ("127.0.0.0/8", "127.0.0.0/8"),
    ("::1", "::1/128"),
    ("127.0.0.2/31", "127.0.0.2/31"),
    ("0.0.0.0", "0.0.0.0/32"),
    ("0.0.0.0/1", "0.0.0.0/1"),
    ("128.0.0.0/1", "128.0.0.0/1"),
    ("255.255.255.255", "255.255.255.255/32"),
    ("203.0.113.7", "203.0.113.7/32"),
    ("127.255.255.255/32", "127.255.255.255/32"),
    ("2001:DB8:0:0::7", "2001:db8::7/128"),
    ("2001:db8::/32", "2001:db8::/32"),
    ("::/1", "::/1"),
    ("8000::/1", "8000::/1"),
    ("::ffff:127.0.0.2", "::ffff:127.0.0.2/128"),
    ("::127.0.0.2", "::7f00:2/128"),
    ("fe80::1", "fe80::1/128"),
    ("ff02::1", "ff02::1/128"),
    ("::", "::/128"),
    (
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
    ),
];

/// Words the grammar refuses where a time or a source goes.
const BAD_TIMES: &[&str] = &[
    "2030-02-30T00:00:00Z",
    "2030-01-01T24:00:00Z",
    "2030-01-01T00:00Z",
    "2030-01-01 24:00",
    "2030-1-01 12:00",
];
const BAD_SOURCES: &[&str] = &[
    "0.0.0.0/0",
    "::/0",
    "127.0.0.1/8",
    "1.2.3.4/33",
    "example.com",
    "2001:db8::1/64",
    "fe80::1%lo",
];

/// Whole lines the grammar refuses.
const BAD_LINES: &[&str] = &[
    "open ssh please",
    "close nosuch",
    "open ssh for 0h",
    "open ssh for 3651d",
    "close ssh for 1h",
    "open ssh on web-[12",
    "open ssh from 203.0.113.7 from 203.0.113.8",
    "open ssh for 2h until 2030-01-01T00:00:00Z",
    "opne ssh",
    "open ssh\u{7}",
];

/// Lines for other hosts: checked for form, otherwise ignored.
const OTHER_HOSTS: &[&str] = &[
    "close ssh on db-*",
    "open nosuch from 203.0.113.7 for 2h on db-*",
    "OPEN web on db-1,db-2",
    "open ssh until 2030-06-30T23:59:60Z on [!w]*",
];

/// When an open ends, as the test knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ends {
    /// Not within the case (or never).
    Later,
    /// Before now: the open has ended.
    Over,
    /// The grammar refuses it.
    Refused,
}

/// A clause that ends an open: its words and when it ends.
#[derive(Debug, Clone)]
struct Clause {
    words: String,
    ends: Ends,
}

/// Everything a clause may be for a case in `zone`, at `now`; the
/// simplest first (where shrinking leads).
fn clauses(zone: &str, now: DateTime<Utc>) -> Vec<Clause> {
    let mut all = vec![Clause {
        words: "for 2h".into(),
        ends: Ends::Later,
    }];
    // Never within two days of now, where a zone's offset could tip it.
    let margin = TimeDelta::days(2);
    let until = |text: &str, over: bool| Clause {
        words: format!("until {text}"),
        ends: if over { Ends::Over } else { Ends::Later },
    };
    for text in RFC3339 {
        let moment = DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|error| panic!("{text}: {error}"))
            .to_utc();
        if (moment - now).abs() > margin {
            all.push(until(text, moment < now));
        }
    }
    for text in LOCAL {
        let date = NaiveDate::parse_from_str(&text[..10], "%Y-%m-%d").unwrap();
        let today = now.date_naive();
        if (date - today).abs() > margin {
            all.push(until(text, date < today));
        }
    }
    for (of, text, gap) in ZONE_TIMES {
        if *of == zone {
            let ends = if *gap { Ends::Refused } else { Ends::Later };
            all.push(Clause {
                words: format!("until {text}"),
                ends,
            });
        }
    }
    all.extend(DURATIONS.iter().map(|text| Clause {
        words: format!("for {text}"),
        ends: Ends::Later,
    }));
    all.extend(BAD_TIMES.iter().map(|text| Clause {
        words: format!("until {text}"),
        ends: Ends::Refused,
    }));
    all
}

/// What a line of a generated file asks of a service.
#[derive(Debug, Clone)]
enum Ask {
    Close,
    /// Open to everyone, ending (an index into the clauses) or not.
    Open(Option<Index>),
    /// Open to these sources (indices into the sources, past the good
    /// ones: a refused one), each ending or not.
    From(Vec<(Index, Option<Index>)>),
}

/// How a line is written: the case of its words, the blanks between them,
/// the order of its clauses, and what follows.
#[derive(Debug, Clone)]
struct Style {
    upper: u8,
    blank: Index,
    clause_first: bool,
    on_this_host: bool,
    comment: bool,
}

#[derive(Debug, Clone)]
enum Line {
    Asks(Index, Ask, Style),
    OtherHost(Index),
    Comment,
    Bad(Index),
}

#[derive(Debug, Clone)]
struct File {
    lines: Vec<Line>,
    crlf: bool,
    bom: bool,
}

#[derive(Debug, Clone)]
struct Case {
    variant: Index,
    zone: Index,
    files: Vec<File>,
}

fn style() -> impl Strategy<Value = Style> {
    (
        0u8..4,
        any::<Index>(),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(upper, blank, clause_first, on_this_host, comment)| Style {
                upper,
                blank,
                clause_first,
                on_this_host,
                comment,
            },
        )
}

fn ends() -> impl Strategy<Value = Option<Index>> {
    prop::option::weighted(0.6, any::<Index>())
}

fn ask() -> impl Strategy<Value = Ask> {
    prop_oneof![
        3 => Just(Ask::Close),
        3 => ends().prop_map(Ask::Open),
        4 => prop::collection::vec((any::<Index>(), ends()), 1..4).prop_map(Ask::From),
    ]
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        20 => (any::<Index>(), ask(), style()).prop_map(|(service, ask, style)| Line::Asks(service, ask, style)),
        2 => any::<Index>().prop_map(Line::OtherHost),
        1 => Just(Line::Comment),
        1 => any::<Index>().prop_map(Line::Bad),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let file = (
        prop::collection::vec(line(), 0..7),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(lines, crlf, bom)| File { lines, crlf, bom });
    (
        any::<Index>(),
        any::<Index>(),
        prop::collection::vec(file, 1..4),
    )
        .prop_map(|(variant, zone, files)| Case {
            variant,
            zone,
            files,
        })
}

/// A service's wanted state as the test reads a file: per source network,
/// or for everyone, whether an open is in force.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wanted {
    Closed,
    Open,
    OpenTo(Vec<IpNet>),
}

/// A file written out, and what the test expects of it: None when the
/// grammar refuses it, else each service it names and what that asks.
struct Written {
    text: String,
    asks: Option<BTreeMap<&'static str, Wanted>>,
}

/// The words of `word` in the style's case.
fn cased(word: &str, upper: u8) -> String {
    match upper {
        1 => word.to_uppercase(),
        2 => {
            let mut chars = word.chars();
            chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect())
                .unwrap_or_default()
        }
        _ => word.to_owned(),
    }
}

/// Writes out one file for a case in `zone`; the first group of lines
/// about a service is the one kept (the test's reading of "named again").
fn write(file: &File, clauses: &[Clause]) -> Written {
    let mut text = String::new();
    let mut asks: BTreeMap<&'static str, Wanted> = BTreeMap::new();
    let mut refused = false;
    let newline = if file.crlf { "\r\n" } else { "\n" };
    if file.bom {
        text.push('\u{feff}');
    }
    for line in &file.lines {
        let written: Vec<String> = match line {
            Line::Comment => vec!["# a comment, then a blank line".into(), String::new()],
            Line::OtherHost(index) => vec![index.get(OTHER_HOSTS).to_string()],
            Line::Bad(index) => {
                refused = true;
                vec![index.get(BAD_LINES).to_string()]
            }
            Line::Asks(service, ask, style) => {
                let (name, _) = service.get(SERVICES);
                if asks.contains_key(name) {
                    continue;
                }
                let (lines, wanted, bad) = ask_lines(name, ask, style, clauses);
                refused |= bad;
                asks.insert(name, wanted);
                lines
            }
        };
        for each in written {
            text.push_str(&each);
            text.push_str(newline);
        }
    }
    Written {
        text,
        asks: (!refused).then_some(asks),
    }
}

/// The lines of one ask, what it wants, and whether the grammar refuses them.
fn ask_lines(
    name: &str,
    ask: &Ask,
    style: &Style,
    clauses: &[Clause],
) -> (Vec<String>, Wanted, bool) {
    let blanks = [" ", "\t", "  ", " \t ", "\u{a0}"];
    let blank = *style.blank.get(&blanks);
    let word = |text: &str| cased(text, style.upper);
    let service = match style.upper {
        1 => name.to_uppercase(),
        _ => name.to_owned(),
    };
    let tail = |mut line: String| {
        if style.on_this_host {
            line.push_str(&format!("{blank}{} web-*,db-1", word("on")));
        }
        if style.comment {
            line.push_str(" # why");
        }
        line
    };
    let clause = |index: &Index| {
        let clause = index.get(clauses);
        let (keyword, rest) = clause.words.split_once(' ').unwrap();
        (format!("{}{blank}{rest}", word(keyword)), clause.ends)
    };
    match ask {
        Ask::Close => {
            let line = tail(format!("{}{blank}{service}", word("close")));
            (vec![line], Wanted::Closed, false)
        }
        Ask::Open(ends) => {
            let mut line = format!("{}{blank}{service}", word("open"));
            let mut wanted = Wanted::Open;
            let mut bad = false;
            if let Some(index) = ends {
                let (words, ends) = clause(index);
                line.push_str(&format!("{blank}{words}"));
                bad = ends == Ends::Refused;
                if ends == Ends::Over {
                    wanted = Wanted::Closed;
                }
            }
            (vec![tail(line)], wanted, bad)
        }
        Ask::From(sources) => {
            let mut lines = Vec::new();
            let mut nets = Vec::new();
            let mut bad = false;
            let mut used = Vec::new();
            for (source, ends) in sources {
                // One in ten or so refused.
                let good = SOURCES.len() * 8;
                let index = source.index(good + BAD_SOURCES.len());
                let (written, net) = match index.checked_sub(good) {
                    None => {
                        let (written, net) = SOURCES[index % SOURCES.len()];
                        (written, Some(net.parse::<IpNet>().unwrap()))
                    }
                    Some(bad) => (BAD_SOURCES[bad], None),
                };
                // A source twice is one source with the later end: not drawn.
                if used.contains(&written) || net.is_some_and(|net| nets.contains(&net)) {
                    continue;
                }
                used.push(written);
                let from = format!("{}{blank}{written}", word("from"));
                let (until, ends) = match ends {
                    Some(index) => {
                        let (words, ends) = clause(index);
                        (format!("{blank}{words}"), ends)
                    }
                    None => (String::new(), Ends::Later),
                };
                bad |= net.is_none() || ends == Ends::Refused;
                let clauses = match style.clause_first && !until.is_empty() {
                    true => format!("{}{blank}{from}", until.trim_start_matches(blank)),
                    false => format!("{from}{until}"),
                };
                lines.push(tail(format!(
                    "{}{blank}{service}{blank}{clauses}",
                    word("open")
                )));
                if let (Some(net), Ends::Later) = (net, ends) {
                    nets.push(net);
                }
            }
            let wanted = match nets.is_empty() {
                true => Wanted::Closed,
                false => Wanted::OpenTo(nets),
            };
            (lines, wanted, bad)
        }
    }
}

/// Whether a new connection from `from` to a port of a service that wants
/// `wanted` should get through.
fn lets_in(wanted: Option<&Wanted>, closed_by_default: bool, from: IpAddr) -> bool {
    match wanted {
        None => !closed_by_default,
        Some(Wanted::Closed) => false,
        Some(Wanted::Open) => true,
        Some(Wanted::OpenTo(nets)) => nets.iter().any(|net| net.contains(&from)),
    }
}

/// Every probe of every service's ports, with whether it should get through.
fn expected(state: &BTreeMap<&'static str, Wanted>, closed_by_default: bool) -> Vec<(Probe, bool)> {
    let mut probes = Vec::new();
    for (name, ports) in SERVICES {
        for &(proto, port) in *ports {
            for from in FROM {
                // To the address it comes from: an echo answers from the
                // address it was reached at only then.
                let from: IpAddr = from.parse().unwrap();
                let through = lets_in(state.get(name), closed_by_default, from);
                probes.push((
                    Probe {
                        proto,
                        from,
                        to: from,
                        port,
                    },
                    through,
                ));
            }
        }
    }
    probes
}

/// Empties the namespace's firewall, as a reboot does, and puts back
/// another table's notrack rules for the UDP ports of dns (raw priority):
/// new flows to them are untracked, which a close must drop too.
fn wipe() {
    for binary in [IPT, IP6T] {
        common::netns::iptables(binary, &["-w", "5", "-F"]);
        common::netns::iptables(binary, &["-w", "5", "-X"]);
    }
    let status = Command::new(NFT)
        .args(["flush", "ruleset"])
        .status()
        .unwrap();
    assert!(status.success(), "nft flush ruleset");
    common::backend::nft_script(
        "table inet others {\n\
           chain pre { type filter hook prerouting priority raw; udp dport 53 notrack; }\n\
           chain out { type filter hook output priority raw; udp dport 53 notrack; }\n\
         }\n",
    );
}

/// Everything both backends hold, for a refused file to leave alone.
fn snapshot() -> String {
    let nft = Command::new(NFT)
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    format!(
        "{}{}{}",
        common::netns::rules(IPT),
        common::netns::rules(IP6T),
        String::from_utf8_lossy(&nft.stdout)
    )
}

/// A fresh environment for one case: its config, in `zone`.
fn environment(backend: Backend, variant: &str) -> TestEnv {
    let env = backend.env();
    let variant = match backend {
        Backend::Iptables => variant,
        Backend::Nftables => variant.split("\nchain").next().unwrap_or_default(),
    };
    let text = format!(
        "source = {source:?}\nlog_file = {log:?}\nstatus_file = {status:?}\nstate_dir = {state:?}\n\
         host_name = \"web-1\"\n[firewall]\n{backend}iptables = {IPT:?}\nip6tables = {IP6T:?}\n\
         {variant}\n[services]\n{SERVICES_TOML}",
        source = env.path("control.txt"),
        log = env.path("portlocker.log"),
        status = env.path("status.html"),
        state = env.path("state"),
        backend = env.backend,
    );
    env.write_config(&text);
    env
}

/// Runs the binary in `zone` with `args`.
fn run(env: &TestEnv, zone: &str, args: &[&str]) -> common::Run {
    let output = env
        .command()
        .args(args)
        .env("TZ", zone)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    common::Run::from(output)
}

/// Plays one case on a fresh firewall; Err says what went wrong, and where.
fn play(backend: Backend, case: &Case, zones: &[&str]) -> Result<(), TestCaseError> {
    wipe();
    let variant = case.variant.index(VARIANTS.len());
    let zone = *case.zone.get(zones);
    let env = environment(backend, VARIANTS[variant]);
    let closed_by_default = VARIANTS[variant].contains("default = \"close\"");
    let clauses = clauses(zone, Utc::now());
    let mut state: BTreeMap<&'static str, Wanted> = BTreeMap::new();
    let mut last_accepted = None;
    // The run before refused its file: a refusal alike is not printed again.
    let mut refused_last = false;
    for (at, file) in case.files.iter().enumerate() {
        let written = write(file, &clauses);
        let context = format!(
            "{backend:?}, {zone}, variant {variant}, file {at}:\n{}",
            written.text
        );
        std::fs::write(env.path("control.txt"), &written.text).unwrap();
        let counter = match written.asks {
            Some(_) => &ACCEPTED,
            None => &REFUSED,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let before = written.asks.is_none().then(snapshot);
        let logged = env.log().len();
        let refused_before = std::mem::replace(&mut refused_last, written.asks.is_none());
        let done = run(&env, zone, &[]);
        match &written.asks {
            Some(asks) => {
                prop_assert_eq!(done.code, Some(0), "{}\n{:#?}", context, done);
                state.extend(asks.iter().map(|(name, wanted)| (*name, wanted.clone())));
                last_accepted = Some(written.text.clone());
            }
            None => {
                prop_assert_eq!(done.code, Some(1), "{}\n{:#?}", context, done);
                // Logged every run; printed unless the run before printed
                // the same refusal (the quiet rules).
                let log = env.log();
                let told = log.get(logged..).unwrap_or_default();
                prop_assert!(told.contains("line "), "{}\n{:#?}\n{}", context, done, told);
                if !refused_before {
                    prop_assert!(done.stderr.contains("line "), "{}\n{:#?}", context, done);
                }
                // With default = "close", the first run closes all the same.
                if at > 0 || !closed_by_default {
                    let after = Some(snapshot());
                    prop_assert_eq!(
                        after,
                        before,
                        "{}: a refused file changed the firewall",
                        context
                    );
                }
            }
        }
        if at == 0 {
            let check = run(&env, zone, &["check", "--fetch"]);
            let agrees = (check.code == Some(0)) == written.asks.is_some();
            prop_assert!(agrees, "{}\ncheck says otherwise: {:#?}", context, check);
        }
        let wrong = probe::mismatches(&expected(&state, closed_by_default));
        prop_assert!(
            wrong.is_empty(),
            "{}\n{:#?}\n{}",
            context,
            wrong,
            snapshot()
        );
    }
    let Some(text) = last_accepted else {
        return Ok(());
    };
    std::fs::write(env.path("control.txt"), text).unwrap();
    let again = run(&env, zone, &[]);
    let last = env.log().lines().last().unwrap_or_default().to_owned();
    prop_assert!(
        again.code == Some(0) && last.contains("no change"),
        "{:?}, {}: the same file again changed something: {}\n{}",
        backend,
        zone,
        last,
        snapshot()
    );
    wipe();
    let offline = run(&env, zone, &["--offline"]);
    prop_assert_eq!(
        offline.code,
        Some(0),
        "{:?} --offline: {:#?}",
        backend,
        offline
    );
    let wrong = probe::mismatches(&expected(&state, closed_by_default));
    prop_assert!(
        wrong.is_empty(),
        "{:?}, {}, after a reboot: {:#?}",
        backend,
        zone,
        wrong
    );
    Ok(())
}

/// The namespace's traffic: a second local address for each family, and
/// a listener or an echo on every port of every service.
fn serve() {
    let status = Command::new("/sbin/ip")
        .args(["-6", "addr", "add", "2001:db8::7/128", "dev", "lo", "nodad"])
        .status()
        .unwrap();
    assert!(status.success(), "ip -6 addr add");
    probe::serve(Proto::Tcp, probe::CONTROL_PORT);
    let addresses: Vec<IpAddr> = FROM.iter().map(|from| from.parse().unwrap()).collect();
    probe::echo_on(probe::CONTROL_PORT, &addresses);
    for (_, ports) in SERVICES {
        for &(proto, port) in *ports {
            match proto {
                Proto::Tcp => probe::serve(proto, port),
                Proto::Udp => probe::echo_on(port, &addresses),
            }
        }
    }
}

fn generated_files_commit_and_close_what_they_close(backend: Backend) {
    serve();
    let zones: Vec<&str> = ZONES
        .iter()
        .copied()
        .filter(|zone| Path::new("/usr/share/zoneinfo").join(zone).exists())
        .collect();
    let cases = std::env::var("PORTLOCKER_GENERATIVE_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(CI_CASES);
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 50,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(error) = runner.run(&case(), |case| play(backend, &case, &zones)) {
        panic!("{error}");
    }
    // Told past the test's capture, so a long run shows what it did.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{backend:?}: {cases} cases, {} files committed, {} refused as they should be, in {}",
        ACCEPTED.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed),
        zones.join(", ")
    );
}

/// Files played so far in this process, accepted and refused.
static ACCEPTED: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn generated_files_on_iptables() {
    let test = "generated_files_on_iptables";
    if common::backend::enter(test, Backend::Iptables) {
        generated_files_commit_and_close_what_they_close(Backend::Iptables);
    }
}

#[test]
fn generated_files_on_nftables() {
    let test = "generated_files_on_nftables";
    if common::backend::enter(test, Backend::Nftables) {
        generated_files_commit_and_close_what_they_close(Backend::Nftables);
    }
}
