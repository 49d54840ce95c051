//! The fake's iptables: one filter table per family, changed by argv
//! (`iptables -w 10 -A …`) or by `iptables-restore --noflush` input, all of
//! it or none, answering in the words and exit codes of iptables 1.8.9
//! (nf_tables) — `tests` in `real.rs` hold it to the real tool. Never runs
//! a process.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use ipnet::IpNet;

use crate::config::Family;
use crate::firewall::model::split_listed;

pub(super) const BUILT_IN: [&str; 3] = ["INPUT", "FORWARD", "OUTPUT"];
const TARGETS: [&str; 5] = ["ACCEPT", "DROP", "REJECT", "RETURN", "LOG"];
/// What every message of the real tools names as their version.
const VERSION: &str = "v1.8.9 (nf_tables)";

/// One chain: a policy for a built-in one, and its rules in order, each as
/// the words `iptables -S` lists after `-A CHAIN`, quotes undone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Chain {
    pub policy: Option<String>,
    pub rules: Vec<Vec<String>>,
}

/// A filter table as a fresh boot has it: the built-in chains, accepting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Table {
    pub chains: BTreeMap<String, Chain>,
}

impl Default for Table {
    fn default() -> Table {
        let chains = BUILT_IN
            .iter()
            .map(|name| {
                let chain = Chain {
                    policy: Some("ACCEPT".to_owned()),
                    rules: Vec::new(),
                };
                (name.to_string(), chain)
            })
            .collect();
        Table { chains }
    }
}

/// Why a command or a line was refused, before the tool words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refused {
    /// Found on applying (`iptables: Bad rule …`): exit 1.
    Applying(String),
    /// Found on reading the arguments (`Invalid date …`): exit 2.
    Parsing(String),
    /// The kernel refused to delete a chain in use: exit 4.
    Busy(String),
    /// `-S` of a chain that does not exist: exit 1, in iptables-nft's words.
    Incompatible(String),
}

impl Refused {
    /// As `program` (`iptables`, `ip6tables`) says it, with its exit code.
    pub fn by_argv(&self, program: &str) -> (i32, String) {
        match self {
            Refused::Applying(why) => (1, format!("{program}: {why}")),
            Refused::Parsing(why) => (
                2,
                format!(
                    "{program} {VERSION}: {why}\nTry `{program} -h' or '{program} --help' for more information."
                ),
            ),
            Refused::Busy(chain) => (
                4,
                format!(
                    "{program} {VERSION}:  CHAIN_DEL failed (Device or resource busy): chain {chain}"
                ),
            ),
            Refused::Incompatible(chain) => (
                1,
                format!(
                    "{program} {VERSION}: chain `{chain}' in table `filter' is incompatible, use 'nft' tool."
                ),
            ),
        }
    }

    /// As the restore tool `tool` says it of line `line` of its input.
    pub fn by_restore(&self, tool: &str, line: usize) -> (i32, String) {
        match self {
            Refused::Applying(why) | Refused::Incompatible(why) => {
                (1, format!("{tool}: line {line} failed: {why}"))
            }
            Refused::Parsing(why) => (2, parse_error(tool, why, line)),
            Refused::Busy(chain) => (
                4,
                format!(
                    "{tool} {VERSION}: \nline {line}: CHAIN_DEL failed (Device or resource busy): chain {chain}"
                ),
            ),
        }
    }
}

/// How a restore tool words what it could not read on line `line`.
pub(super) fn parse_error(tool: &str, why: &str, line: usize) -> String {
    format!(
        "{tool} {VERSION}: {why}\nError occurred at line: {line}\nTry `{tool} -h' or '{tool} --help' for more information."
    )
}

pub(super) const NO_CHAIN: &str = "No chain/target/match by that name.";
const NO_RULE: &str = "Bad rule (does a matching rule exist in that chain?).";

/// Carries out one command (without `-w N`) on `table`: the listing it
/// prints, or why it was refused.
pub(super) fn interpret(
    table: &mut Table,
    family: Family,
    args: &[&str],
) -> Result<String, Refused> {
    interpret_in(table, family, args, true)
}

/// `interpret`; a jump to a chain that does not exist is refused at once
/// when `resolve_jumps`, as iptables does (iptables-restore finds it on
/// committing).
fn interpret_in(
    table: &mut Table,
    family: Family,
    args: &[&str],
    resolve_jumps: bool,
) -> Result<String, Refused> {
    let applying = |why: &str| Err(Refused::Applying(why.to_owned()));
    let (op, rest) = args
        .split_first()
        .ok_or(Refused::Parsing("no command specified".to_owned()))?;
    let (chain, rest) = match rest.split_first() {
        Some((chain, rest)) => (Some(*chain), rest),
        None => (None, rest),
    };
    let exists = |table: &Table, name: &str| table.chains.contains_key(name);
    match (*op, chain) {
        ("-S", None) => Ok(list_all(table)),
        ("-S", Some(name)) => {
            let mut out = String::new();
            match list(table, name, &mut out) {
                true => Ok(out),
                false => Err(Refused::Incompatible(name.to_owned())),
            }
        }
        ("-N", Some(name)) => {
            if exists(table, name) {
                return applying("Chain already exists.");
            }
            if name.starts_with('-') || TARGETS.contains(&name) || name.len() > 28 {
                return Err(Refused::Parsing(format!("Invalid chain name `{name}'")));
            }
            table.chains.insert(name.to_owned(), Chain::default());
            Ok(String::new())
        }
        ("-F", Some(name)) => match table.chains.get_mut(name) {
            Some(chain) => {
                chain.rules.clear();
                Ok(String::new())
            }
            None => applying(NO_CHAIN),
        },
        ("-X", Some(name)) => {
            if BUILT_IN.contains(&name) {
                return applying("Can't delete built-in chain.");
            }
            let Some(chain) = table.chains.get(name) else {
                return applying(NO_CHAIN);
            };
            let referenced = table
                .chains
                .values()
                .flat_map(|c| &c.rules)
                .any(|rule| target(rule) == Some(name));
            if !chain.rules.is_empty() || referenced {
                return Err(Refused::Busy(name.to_owned()));
            }
            table.chains.remove(name);
            Ok(String::new())
        }
        ("-P", Some(name)) => {
            let policy = rest.first().copied().unwrap_or("");
            match table.chains.get_mut(name) {
                Some(chain) if chain.policy.is_some() && ["ACCEPT", "DROP"].contains(&policy) => {
                    chain.policy = Some(policy.to_owned());
                    Ok(String::new())
                }
                _ => applying(NO_CHAIN),
            }
        }
        ("-A" | "-I" | "-C" | "-D", Some(name)) => {
            let mut spec = rest;
            let mut position = 1;
            let numbered = spec.first().and_then(|word| word.parse::<usize>().ok());
            if matches!(*op, "-I" | "-D")
                && let Some(number) = numbered
            {
                position = number;
                spec = &spec[1..];
            }
            // The arguments are read before the table is looked at.
            let rule = canonical(family, spec).map_err(Refused::Parsing)?;
            if let Some(jump) = target(&rule)
                && resolve_jumps
                && !TARGETS.contains(&jump)
                && !exists(table, jump)
            {
                return Err(Refused::Parsing(format!("Chain '{jump}' does not exist")));
            }
            let Some(chain) = table.chains.get_mut(name) else {
                return applying(NO_CHAIN);
            };
            let rules = &mut chain.rules;
            match *op {
                "-A" => rules.push(rule),
                "-I" if position == 0 || position > rules.len() + 1 => {
                    return applying("Index of insertion too big.");
                }
                "-I" => rules.insert(position - 1, rule),
                "-D" if numbered.is_some() && spec.is_empty() => {
                    if position == 0 || position > rules.len() {
                        return applying("Index of deletion too big.");
                    }
                    rules.remove(position - 1);
                }
                "-C" if rules.contains(&rule) => {}
                "-D" if let Some(at) = rules.iter().position(|held| *held == rule) => {
                    rules.remove(at);
                }
                _ => return applying(NO_RULE),
            }
            Ok(String::new())
        }
        (op, _) => Err(Refused::Parsing(format!("unknown option \"{op}\""))),
    }
}

/// Feeds `input` to `tool` (`iptables-restore`, `ip6tables-restore`) with
/// `--noflush`: every table it names is changed as its lines say, all of it
/// or none. A chain declared (`:NAME - [0:0]`) is made, or emptied if it
/// exists; a built-in chain's declaration sets its policy unless `-`.
pub(super) fn restore(
    table: &mut Table,
    family: Family,
    tool: &str,
    input: &str,
) -> Result<(), (i32, String)> {
    let mut work = table.clone();
    let mut open: Option<usize> = None;
    let lines: Vec<&str> = input.lines().collect();
    for (index, raw) in lines.iter().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if name != "filter" {
                return Err((
                    1,
                    format!("{tool}: the fake knows only the filter table, not `{name}'"),
                ));
            }
            open = Some(number);
            continue;
        }
        if open.is_none() {
            return Err((1, format!("{tool}: line {number} failed")));
        }
        if line == "COMMIT" {
            // iptables-nft resolves jumps on committing.
            for rule in work.chains.values().flat_map(|chain| &chain.rules) {
                if let Some(jump) = target(rule)
                    && !TARGETS.contains(&jump)
                    && !work.chains.contains_key(jump)
                {
                    let why = format!("Chain '{jump}' does not exist");
                    return Err((2, parse_error(tool, &why, number)));
                }
            }
            open = None;
            continue;
        }
        if let Some(declaration) = line.strip_prefix(':') {
            declare(&mut work, declaration).map_err(|why| (2, parse_error(tool, &why, number)))?;
            continue;
        }
        let words = split_listed(line);
        let args: Vec<&str> = words.iter().map(String::as_str).collect();
        if args.first() == Some(&"-S") {
            return Err((
                2,
                parse_error(tool, "Illegal option `-S' with this command", number),
            ));
        }
        interpret_in(&mut work, family, &args, false)
            .map_err(|refused| refused.by_restore(tool, number))?;
    }
    if open.is_some() {
        return Err((
            1,
            format!("{tool}: COMMIT expected at line {}", lines.len() + 1),
        ));
    }
    *table = work;
    Ok(())
}

/// `NAME POLICY [packets:bytes]`.
fn declare(table: &mut Table, declaration: &str) -> Result<(), String> {
    let mut words = declaration.split_whitespace();
    let (Some(name), Some(policy)) = (words.next(), words.next()) else {
        return Err(format!("Bad chain declaration `{declaration}'"));
    };
    match table.chains.get_mut(name) {
        Some(chain) if chain.policy.is_some() => {
            if policy != "-" {
                chain.policy = Some(policy.to_owned());
            }
        }
        Some(chain) => chain.rules.clear(),
        None => {
            table.chains.insert(name.to_owned(), Chain::default());
        }
    }
    Ok(())
}

/// Whether `table` holds the rule a restore line (`-A CHAIN …`, `-I CHAIN
/// N …`) adds: a line written again, not for the first time.
pub(super) fn holds(table: &Table, family: Family, line: &str) -> bool {
    let words = split_listed(line);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let (chain, spec) = match &words[..] {
        ["-I", chain, position, spec @ ..] if position.parse::<usize>().is_ok() => (*chain, spec),
        ["-A" | "-I", chain, spec @ ..] => (*chain, spec),
        _ => return false,
    };
    let Ok(rule) = canonical(family, spec) else {
        return false;
    };
    table
        .chains
        .get(chain)
        .is_some_and(|chain| chain.rules.contains(&rule))
}

/// The chains as `-S` lists them: the built-in ones first, then the others
/// by name.
pub(super) fn ordered(table: &Table) -> Vec<String> {
    let mut names: Vec<String> = BUILT_IN
        .iter()
        .filter(|name| table.chains.contains_key(**name))
        .map(|name| name.to_string())
        .collect();
    names.extend(
        table
            .chains
            .keys()
            .filter(|name| !BUILT_IN.contains(&name.as_str()))
            .cloned(),
    );
    names
}

/// What `-S` prints: every chain declared, then every chain's rules.
pub(super) fn list_all(table: &Table) -> String {
    let mut declared = String::new();
    let mut rules = String::new();
    for name in ordered(table) {
        let mut listed = String::new();
        list(table, &name, &mut listed);
        let mut lines = listed.lines();
        declared.extend(lines.next().map(|line| format!("{line}\n")));
        rules.extend(lines.map(|line| format!("{line}\n")));
    }
    declared + &rules
}

/// Appends what `-S name` prints to `out`; false when there is no such chain.
pub(super) fn list(table: &Table, name: &str, out: &mut String) -> bool {
    let Some(chain) = table.chains.get(name) else {
        return false;
    };
    match &chain.policy {
        Some(policy) => out.push_str(&format!("-P {name} {policy}\n")),
        None => out.push_str(&format!("-N {name}\n")),
    }
    for rule in &chain.rules {
        out.push_str(&shown(name, rule));
        out.push('\n');
    }
    true
}

/// A rule as `iptables -S` prints it: a comment always in double quotes.
pub(super) fn shown(chain: &str, rule: &[String]) -> String {
    let mut line = format!("-A {chain}");
    for (i, word) in rule.iter().enumerate() {
        line.push(' ');
        if i > 0 && rule[i - 1] == "--comment" {
            line.push_str(&format!("\"{}\"", word.replace('"', "\\\"")));
        } else {
            line.push_str(word);
        }
    }
    line
}

/// A rule's words in the form iptables lists them back: the source first,
/// masked and with its prefix length; `--syn` spelled out; the protocol's
/// match module named before `--dport`; times normalised as xt_time does.
/// Unknown options are refused.
fn canonical(family: Family, spec: &[&str]) -> Result<Vec<String>, String> {
    let mut source = None;
    let mut words: Vec<String> = Vec::new();
    let mut protocol = None;
    let mut i = 0;
    let value = |i: usize| {
        spec.get(i + 1)
            .map(|word| word.to_string())
            .ok_or_else(|| format!("option \"{}\" requires an argument", spec[i]))
    };
    while i < spec.len() {
        match spec[i] {
            "-s" | "--source" => {
                let text = value(i)?;
                let net = text
                    .parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("host/network `{text}' not found"))?;
                let fits = matches!(
                    (net, family),
                    (IpNet::V4(_), Family::Ipv4) | (IpNet::V6(_), Family::Ipv6)
                );
                if !fits {
                    return Err(format!("host/network `{text}' not found"));
                }
                source = Some(net.trunc().to_string());
                i += 2;
            }
            "-p" | "--protocol" => {
                let name = value(i)?;
                protocol = Some(name.clone());
                words.extend(["-p".to_owned(), name]);
                i += 2;
            }
            "-m" | "--match" => {
                words.extend(["-m".to_owned(), value(i)?]);
                i += 2;
            }
            "--dport" | "--destination-port" => {
                let ports = value(i)?;
                let bad = ports
                    .split(':')
                    .find(|port| port.parse::<u16>().is_err())
                    .map(str::to_owned);
                if let Some(port) =
                    bad.or_else(|| (ports.split(':').count() > 2).then(|| ports.clone()))
                {
                    return Err(format!("invalid port/service `{port}' specified"));
                }
                let module = protocol.clone().ok_or("--dport needs -p tcp or udp")?;
                let loaded = words
                    .windows(2)
                    .any(|pair| pair[0] == "-m" && pair[1] == module);
                if !loaded {
                    words.extend(["-m".to_owned(), module]);
                }
                words.extend(["--dport".to_owned(), ports]);
                i += 2;
            }
            "--syn" => {
                words.extend(["--tcp-flags", "FIN,SYN,RST,ACK", "SYN"].map(String::from));
                i += 1;
            }
            "--tcp-flags" => {
                let (mask, set) = (value(i)?, value(i + 1)?);
                words.extend(["--tcp-flags".to_owned(), mask, set]);
                i += 3;
            }
            "--ctstate" | "--state" => {
                words.extend(["--ctstate".to_owned(), value(i)?]);
                i += 2;
            }
            "--comment" => {
                words.extend(["--comment".to_owned(), value(i)?]);
                i += 2;
            }
            "--datestart" => {
                words.extend(["--datestart".to_owned(), xt_time(&value(i)?)?]);
                // iptables lists the stop it fills in.
                if spec.get(i + 2) != Some(&"--datestop") {
                    words.extend(["--datestop", "2038-01-19T03:14:07"].map(String::from));
                }
                i += 2;
            }
            "--datestop" => {
                words.extend(["--datestop".to_owned(), xt_time(&value(i)?)?]);
                i += 2;
            }
            "-i" | "--in-interface" => {
                words.extend(["-i".to_owned(), value(i)?]);
                i += 2;
            }
            "-j" | "--jump" => {
                words.extend(["-j".to_owned(), value(i)?]);
                if i + 2 < spec.len() {
                    return Err(format!("unknown option \"{}\"", spec[i + 2]));
                }
                i += 2;
            }
            other => return Err(format!("unknown option \"{other}\"")),
        }
    }
    let mut rule = Vec::new();
    if let Some(source) = source {
        rule.extend(["-s".to_owned(), source]);
    }
    rule.extend(words);
    Ok(rule)
}

/// A time as xt_time reads it (`YYYY-MM-DDThh:mm:ss`, 1970 to 2038, a day
/// past its month's end carried into the next) and lists it back.
fn xt_time(text: &str) -> Result<String, String> {
    let invalid =
        || format!("Invalid date \"{text}\" specified. Should be YYYY[-MM[-DD[Thh[:mm[:ss]]]]]");
    let (date, clock) = text.split_once('T').ok_or_else(invalid)?;
    let numbers = |part: &str, sep: char| -> Option<Vec<u32>> {
        part.split(sep).map(|n| n.parse::<u32>().ok()).collect()
    };
    let (Some(date), Some(clock)) = (numbers(date, '-'), numbers(clock, ':')) else {
        return Err(invalid());
    };
    let (&[year, month, day], &[hour, minute, second]) = (&date[..], &clock[..]) else {
        return Err(invalid());
    };
    let fits = (1970..=2038).contains(&year)
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour <= 23
        && minute <= 59
        && second <= 59;
    if !fits {
        return Err(invalid());
    }
    let first = NaiveDate::from_ymd_opt(year as i32, month, 1).ok_or_else(invalid)?;
    let moment: NaiveDateTime = (first + TimeDelta::days(i64::from(day) - 1))
        .and_hms_opt(hour, minute, second)
        .ok_or_else(invalid)?;
    Ok(moment.format("%Y-%m-%dT%H:%M:%S").to_string())
}

pub(super) fn target(rule: &[String]) -> Option<&str> {
    let at = rule.iter().position(|word| word == "-j")?;
    rule.get(at + 1).map(String::as_str)
}
