//! An in-memory iptables for tests: it reads the argv portlocker gives
//! `iptables` and `ip6tables` (one filter table per binary), answers as
//! iptables does, and can be told to fail or to "SIGKILL" the run at its
//! N-th command. `fate` is an oracle of its own: what the table does to a
//! new connection, worked out here, never by portlocker's verdicts.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;

use chrono::{DateTime, NaiveDateTime, Utc};
use ipnet::IpNet;

use crate::config::{Family, Protocol};
use crate::firewall::model::split_listed;
use crate::sys::runner::{Command, Completion, Runner, Termination};

/// The panic payload of a simulated SIGKILL. Unwinding from the command
/// skips every write the run would have made after it, as a kill does.
#[derive(Debug)]
pub struct Killed;

/// Where a simulated kill lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillPoint {
    /// Before the command ran: it changed nothing.
    Before,
    /// After the command ran and changed the table, before portlocker saw
    /// its result (iptables carries on when its parent is killed).
    After,
}

const BUILT_IN: [&str; 3] = ["INPUT", "FORWARD", "OUTPUT"];
const TARGETS: [&str; 5] = ["ACCEPT", "DROP", "REJECT", "RETURN", "LOG"];
const NO_CHAIN: &str = "iptables: No chain/target/match by that name.";
const NO_RULE: &str = "iptables: Bad rule (does a matching rule exist in that chain?).";

/// One chain: a policy for a built-in one, and its rules in order, each as
/// the words `iptables -S` lists after `-A CHAIN`, quotes undone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Chain {
    policy: Option<&'static str>,
    rules: Vec<Vec<String>>,
}

/// A filter table as a fresh boot has it: the built-in chains, accepting.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Table {
    chains: BTreeMap<String, Chain>,
}

impl Default for Table {
    fn default() -> Table {
        let chains = BUILT_IN
            .iter()
            .map(|name| {
                let chain = Chain {
                    policy: Some("ACCEPT"),
                    rules: Vec::new(),
                };
                (name.to_string(), chain)
            })
            .collect();
        Table { chains }
    }
}

/// The in-memory iptables. Tables appear on first use, as booted.
#[derive(Debug, Default)]
pub struct FakeIptables {
    /// Per binary name (`iptables`, `ip6tables`), its filter table.
    tables: BTreeMap<String, Table>,
    /// Every command run through the `Runner`, as a shell would show it.
    pub calls: Vec<String>,
    /// Every `-A` fails with exit 4.
    pub fail_appends: bool,
    /// Every command of this binary fails, as ip6tables does in a kernel
    /// without IPv6.
    pub broken: Option<&'static str>,
    kill_at: Option<(usize, KillPoint)>,
    fail_at: Option<usize>,
    /// The command an armed failure was handed to.
    pub failed: Option<String>,
    /// The moment the oracle judges time matches at (xt_time, UTC).
    pub clock: Option<DateTime<Utc>>,
}

/// A new connection to probe the table with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub protocol: Protocol,
    pub port: u16,
    pub from: IpAddr,
}

/// What the table does to a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Dropped,
    Accepted,
}

/// The binary that manages `family`, as the fake names its tables.
pub fn binary_of(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "iptables",
        Family::Ipv6 => "ip6tables",
    }
}

impl FakeIptables {
    /// The `nth` command from now (1 = the next) panics with `Killed`.
    pub fn arm_kill(&mut self, nth: usize, point: KillPoint) {
        self.kill_at = Some((self.calls.len() + nth, point));
    }

    /// The `nth` command from now exits 4, as when another tool holds the
    /// xtables lock too long.
    pub fn arm_failure(&mut self, nth: usize) {
        self.fail_at = Some(self.calls.len() + nth);
        self.failed = None;
    }

    pub fn disarm(&mut self) {
        self.kill_at = None;
        self.fail_at = None;
    }

    /// A reboot: every table back to built-in chains, accepting, empty.
    pub fn flush(&mut self) {
        self.tables.clear();
    }

    /// Every rule of every table, as `iptables -S` lists it.
    pub fn rules(&self) -> Vec<String> {
        let mut rules = Vec::new();
        for table in self.tables.values() {
            for (name, chain) in &table.chains {
                rules.extend(chain.rules.iter().map(|rule| shown(name, rule)));
            }
        }
        rules
    }

    /// What `binary -S chain` prints, or None when there is no such chain.
    pub fn listing(&self, binary: &str, chain: &str) -> Option<String> {
        let table = self.tables.get(binary).cloned().unwrap_or_default();
        let mut out = String::new();
        list(&table, chain, &mut out).then_some(out)
    }

    /// Every table as `iptables -S` lists it, for a failure message.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (binary, table) in &self.tables {
            out.push_str(&format!("{binary} -S:\n"));
            for name in table.chains.keys() {
                list(table, name, &mut out);
            }
        }
        out
    }

    /// Changes the table as the owner or another tool would, outside any
    /// run: `line` is an iptables command line without the program, like
    /// `-I INPUT 1 -p tcp -m tcp --dport 8080 -j ACCEPT`. Not recorded.
    pub fn admin(&mut self, binary: &str, line: &str) -> Completion {
        let args = split_listed(line);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.execute(binary, &args)
    }

    /// Every source network the rules of `binary` name.
    pub fn sources(&self, binary: &str) -> Vec<IpNet> {
        let Some(table) = self.tables.get(binary) else {
            return Vec::new();
        };
        let words = table.chains.values().flat_map(|c| c.rules.iter());
        words
            .filter_map(|rule| {
                let at = rule.iter().position(|w| w == "-s")?;
                rule.get(at + 1)?.parse().ok()
            })
            .collect()
    }

    /// The oracle: what `binary`'s table does to the new connection
    /// `probe`, walking INPUT in order as the kernel does — into the
    /// chains it jumps to, back on RETURN, the policy at the end.
    pub fn fate(&self, binary: &str, probe: Probe) -> Fate {
        let table = self.tables.get(binary).cloned().unwrap_or_default();
        let policy = table.chains["INPUT"].policy;
        walk(&table, "INPUT", probe, self.clock, 0).unwrap_or(match policy {
            Some("DROP") => Fate::Dropped,
            _ => Fate::Accepted,
        })
    }

    fn execute(&mut self, binary: &str, args: &[&str]) -> Completion {
        let family = match binary {
            "ip6tables" => Family::Ipv6,
            _ => Family::Ipv4,
        };
        let table = self.tables.entry(binary.to_owned()).or_default();
        match interpret(table, family, args) {
            Ok(stdout) => Completion {
                termination: Termination::Code(0),
                stdout,
                stderr: String::new(),
            },
            Err((code, stderr)) => Completion {
                termination: Termination::Code(code),
                stdout: String::new(),
                stderr: format!("{stderr}\n"),
            },
        }
    }
}

impl Runner for FakeIptables {
    fn run(&mut self, command: &Command) -> io::Result<Completion> {
        let binary = command
            .program
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        if binary != "iptables" && binary != "ip6tables" {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        self.calls.push(command.to_string());
        let n = self.calls.len();
        let args: Vec<&str> = command.args.iter().map(String::as_str).collect();
        // portlocker never waits for the xtables lock without a bound.
        let Some(["-w", seconds]) = args.get(..2) else {
            return Ok(refusal(2, "the fake expects -w N first"));
        };
        if seconds.parse::<u32>().is_err() {
            return Ok(refusal(2, "-w needs a number of seconds"));
        }
        let mut args = &args[2..];
        // Only the filter table holds anything: the others list as a fresh
        // boot has them.
        if let ["-t", table, rest @ ..] = args {
            if *table != "filter" {
                return Ok(other_table(table, rest));
            }
            args = rest;
        }
        if let Some((at, point)) = self.kill_at
            && at == n
        {
            self.kill_at = None;
            if point == KillPoint::After {
                self.execute(&binary, args);
            }
            std::panic::panic_any(Killed);
        }
        if self.fail_at == Some(n) {
            self.fail_at = None;
            self.failed = Some(command.to_string());
            return Ok(refusal(
                4,
                "Another app is currently holding the xtables lock. Stopped waiting after 10s.",
            ));
        }
        if self.broken == Some(binary.as_str()) {
            return Ok(refusal(
                3,
                "ip6tables v1.8.9 (nf_tables): Could not fetch rule set generation id: Address family not supported by protocol",
            ));
        }
        if self.fail_appends && args.first() == Some(&"-A") {
            return Ok(refusal(4, "iptables: Bad rule."));
        }
        Ok(self.execute(&binary, args))
    }
}

/// What iptables answers of a table other than filter, empty: its
/// built-in chains list with their policies.
fn other_table(table: &str, args: &[&str]) -> Completion {
    let built_in: &[&str] = match table {
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "raw" => &["PREROUTING", "OUTPUT"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "security" => &["INPUT", "FORWARD", "OUTPUT"],
        _ => return refusal(3, &format!("can't initialize iptables table `{table}'")),
    };
    match args {
        ["-S", chain] if built_in.contains(chain) => Completion {
            termination: Termination::Code(0),
            stdout: format!("-P {chain} ACCEPT\n"),
            stderr: String::new(),
        },
        ["-S", _] => refusal(1, NO_CHAIN),
        _ => refusal(2, "the fake changes only the filter table"),
    }
}

fn refusal(code: i32, stderr: &str) -> Completion {
    Completion {
        termination: Termination::Code(code),
        stdout: String::new(),
        stderr: format!("{stderr}\n"),
    }
}

type Answer = Result<String, (i32, String)>;

/// Carries out one command (without `-w N`) on `table`: the listing on
/// success, or the exit code and message iptables would give.
fn interpret(table: &mut Table, family: Family, args: &[&str]) -> Answer {
    let fail = |code: i32, text: &str| Err((code, text.to_owned()));
    let (op, rest) = args
        .split_first()
        .ok_or((2, "no command given".to_owned()))?;
    let (chain, rest) = match rest.split_first() {
        Some((chain, rest)) => (Some(*chain), rest),
        None => (None, rest),
    };
    let exists = |table: &Table, name: &str| table.chains.contains_key(name);
    match (*op, chain) {
        ("-S", None) => {
            let mut out = String::new();
            let names: Vec<String> = table.chains.keys().cloned().collect();
            for name in &names {
                list(table, name, &mut out);
            }
            Ok(out)
        }
        ("-S", Some(name)) => {
            let mut out = String::new();
            match list(table, name, &mut out) {
                true => Ok(out),
                false => fail(1, NO_CHAIN),
            }
        }
        ("-N", Some(name)) => {
            if exists(table, name) {
                return fail(1, "iptables: Chain already exists.");
            }
            if name.starts_with('-') || TARGETS.contains(&name) || name.len() > 28 {
                return fail(2, &format!("Invalid chain name `{name}'"));
            }
            table.chains.insert(name.to_owned(), Chain::default());
            Ok(String::new())
        }
        ("-X", Some(name)) => {
            if BUILT_IN.contains(&name) {
                return fail(2, "iptables: Cannot delete built-in chain.");
            }
            let Some(chain) = table.chains.get(name) else {
                return fail(1, NO_CHAIN);
            };
            if !chain.rules.is_empty() {
                return fail(1, "iptables: Directory not empty.");
            }
            let referenced = table
                .chains
                .values()
                .flat_map(|c| &c.rules)
                .any(|rule| target(rule) == Some(name));
            if referenced {
                return fail(1, "iptables: Too many links.");
            }
            table.chains.remove(name);
            Ok(String::new())
        }
        ("-A" | "-I" | "-C" | "-D", Some(name)) => {
            if !exists(table, name) {
                return fail(1, NO_CHAIN);
            }
            let mut spec = rest;
            let mut position = 1;
            if *op == "-I"
                && let Some(number) = spec.first().and_then(|word| word.parse::<usize>().ok())
            {
                position = number;
                spec = &spec[1..];
            }
            let rule = canonical(family, spec).map_err(|why| (2, why))?;
            if let Some(jump) = target(&rule)
                && !TARGETS.contains(&jump)
                && !exists(table, jump)
            {
                return fail(2, &format!("Couldn't load target `{jump}'"));
            }
            let rules = &mut table.chains.get_mut(name).expect("checked above").rules;
            match *op {
                "-A" => rules.push(rule),
                "-I" if position == 0 || position > rules.len() + 1 => {
                    return fail(1, "iptables: Index of insertion too big.");
                }
                "-I" => rules.insert(position - 1, rule),
                "-C" if rules.contains(&rule) => {}
                "-D" if let Some(at) = rules.iter().position(|held| *held == rule) => {
                    rules.remove(at);
                }
                _ => return fail(1, NO_RULE),
            }
            Ok(String::new())
        }
        (op, _) => fail(2, &format!("the fake does not know `{op}` here")),
    }
}

/// Appends what `-S name` prints to `out`; false when there is no such chain.
fn list(table: &Table, name: &str, out: &mut String) -> bool {
    let Some(chain) = table.chains.get(name) else {
        return false;
    };
    match chain.policy {
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
fn shown(chain: &str, rule: &[String]) -> String {
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
/// match module named before `--dport`. Unknown options are refused.
fn canonical(family: Family, spec: &[&str]) -> Result<Vec<String>, String> {
    let mut source = None;
    let mut words: Vec<String> = Vec::new();
    let mut protocol = None;
    let mut i = 0;
    let value = |i: usize| {
        spec.get(i + 1)
            .map(|word| word.to_string())
            .ok_or_else(|| format!("option `{}' requires an argument", spec[i]))
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
                let valid = ports
                    .split(':')
                    .all(|port| port.parse::<u16>().is_ok_and(|p| p > 0));
                if !valid || ports.split(':').count() > 2 {
                    return Err(format!("invalid port/service `{ports}' specified"));
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
                words.extend(["--datestart".to_owned(), value(i)?]);
                // iptables lists the stop it fills in.
                if spec.get(i + 2) != Some(&"--datestop") {
                    words.extend(["--datestop", "2038-01-19T03:14:07"].map(String::from));
                }
                i += 2;
            }
            "--datestop" => {
                words.extend(["--datestop".to_owned(), value(i)?]);
                i += 2;
            }
            "-i" | "--in-interface" => {
                words.extend(["-i".to_owned(), value(i)?]);
                i += 2;
            }
            "-j" | "--jump" => {
                words.extend(["-j".to_owned(), value(i)?]);
                if i + 2 < spec.len() {
                    return Err(format!("unknown option `{}' after the target", spec[i + 2]));
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

fn target(rule: &[String]) -> Option<&str> {
    let at = rule.iter().position(|word| word == "-j")?;
    rule.get(at + 1).map(String::as_str)
}

/// The fate a chain decides for `probe`; None when it falls off the end
/// or returns.
fn walk(
    table: &Table,
    name: &str,
    probe: Probe,
    clock: Option<DateTime<Utc>>,
    depth: usize,
) -> Option<Fate> {
    assert!(depth < 16, "jumps loop through {name}");
    let chain = table
        .chains
        .get(name)
        .unwrap_or_else(|| panic!("a jump to {name}, which does not exist"));
    for rule in &chain.rules {
        if !matches(rule, probe, clock) {
            continue;
        }
        match target(rule) {
            Some("ACCEPT") => return Some(Fate::Accepted),
            Some("DROP" | "REJECT") => return Some(Fate::Dropped),
            Some("RETURN") => return None,
            Some("LOG") | None => {}
            Some(other) => {
                if let Some(fate) = walk(table, other, probe, clock, depth + 1) {
                    return Some(fate);
                }
            }
        }
    }
    None
}

/// Whether every match of `rule` holds for a new connection (a TCP SYN,
/// conntrack state NEW) arriving on eth0.
fn matches(rule: &[String], probe: Probe, clock: Option<DateTime<Utc>>) -> bool {
    let moment = |text: &str| {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
            .expect("times are stored as iptables lists them")
            .and_utc()
    };
    let now = || clock.expect("a time match needs the fake's clock");
    let mut i = 0;
    while i < rule.len() {
        let value = rule.get(i + 1).map_or("", String::as_str);
        let holds = match rule[i].as_str() {
            "-s" => {
                let net: IpNet = value.parse().expect("sources are stored canonical");
                net.contains(&probe.from)
            }
            "-p" => match value {
                "all" => true,
                "tcp" => probe.protocol == Protocol::Tcp,
                "udp" => probe.protocol == Protocol::Udp,
                other => panic!("the oracle does not know protocol {other}"),
            },
            "-m" => match value {
                "tcp" | "udp" | "comment" | "conntrack" | "time" => true,
                other => panic!("the oracle does not know match {other}"),
            },
            "--datestart" => now() >= moment(value),
            "--datestop" => now() <= moment(value),
            "--dport" => {
                let (first, last) = value.split_once(':').unwrap_or((value, value));
                let (first, last): (u16, u16) = (first.parse().unwrap(), last.parse().unwrap());
                (first..=last).contains(&probe.port)
            }
            "--tcp-flags" => {
                // A new connection's first packet carries SYN alone.
                let set = rule.get(i + 2).map_or("", String::as_str);
                let examined: Vec<&str> = value.split(',').collect();
                let wanted: Vec<&str> = set.split(',').filter(|f| !f.is_empty()).collect();
                i += 1;
                let seen: Vec<&str> = examined.into_iter().filter(|f| *f == "SYN").collect();
                seen == wanted
            }
            "--ctstate" => value.split(',').any(|state| state == "NEW"),
            "--comment" => true,
            "-i" => value == "eth0",
            "-j" => true,
            other => panic!("the oracle does not know {other}"),
        };
        if !holds {
            return false;
        }
        i += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(port: u16, from: &str) -> Probe {
        Probe {
            protocol: Protocol::Tcp,
            port,
            from: from.parse().unwrap(),
        }
    }

    fn ok(done: Completion) -> String {
        assert_eq!(done.termination, Termination::Code(0), "{}", done.stderr);
        done.stdout
    }

    fn code(done: &Completion) -> i32 {
        match done.termination {
            Termination::Code(code) => code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lists_as_iptables_does_and_answers_as_it_does() {
        let mut fake = FakeIptables::default();
        let missing = fake.admin("iptables", "-S PORTLOCKER");
        assert_eq!((code(&missing), missing.stderr.trim()), (1, NO_CHAIN));
        ok(fake.admin("iptables", "-N PORTLOCKER"));
        assert_eq!(code(&fake.admin("iptables", "-N PORTLOCKER")), 1);
        ok(fake.admin(
            "iptables",
            "-A PORTLOCKER -p tcp -m tcp --dport 22 --syn -m comment --comment portlocker:ssh -j DROP",
        ));
        ok(fake.admin(
            "iptables",
            "-I PORTLOCKER 1 -s 203.0.113.7 -p tcp -m tcp --dport 22 -m comment --comment portlocker:ssh -j RETURN",
        ));
        assert_eq!(
            fake.listing("iptables", "PORTLOCKER").unwrap(),
            "-N PORTLOCKER\n\
             -A PORTLOCKER -s 203.0.113.7/32 -p tcp -m tcp --dport 22 -m comment --comment \"portlocker:ssh\" -j RETURN\n\
             -A PORTLOCKER -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment \"portlocker:ssh\" -j DROP\n"
        );
        assert_eq!(
            fake.listing("iptables", "INPUT").unwrap(),
            "-P INPUT ACCEPT\n"
        );
        // -C and -D compare the rule as listed; -D takes the first copy only.
        let drop =
            "PORTLOCKER -p tcp -m tcp --dport 22 --syn -m comment --comment portlocker:ssh -j DROP";
        ok(fake.admin("iptables", &format!("-C {drop}")));
        ok(fake.admin("iptables", &format!("-A {drop}")));
        ok(fake.admin("iptables", &format!("-D {drop}")));
        ok(fake.admin("iptables", &format!("-C {drop}")));
        ok(fake.admin("iptables", &format!("-D {drop}")));
        assert_eq!(code(&fake.admin("iptables", &format!("-C {drop}"))), 1);
        assert_eq!(code(&fake.admin("iptables", &format!("-D {drop}"))), 1);
        // A chain still jumped to, or not empty, stays.
        ok(fake.admin(
            "iptables",
            "-I INPUT 1 -m comment --comment portlocker:jump.a -j PORTLOCKER",
        ));
        assert_eq!(code(&fake.admin("iptables", "-X PORTLOCKER")), 1);
        ok(fake.admin(
            "iptables",
            "-D INPUT -m comment --comment portlocker:jump.a -j PORTLOCKER",
        ));
        assert_eq!(code(&fake.admin("iptables", "-X PORTLOCKER")), 1);
        // The families are separate tables.
        assert_eq!(fake.listing("ip6tables", "PORTLOCKER"), None);
        assert_eq!(
            code(&fake.admin("ip6tables", "-A INPUT -s 203.0.113.7 -j DROP")),
            2
        );
        assert_eq!(code(&fake.admin("iptables", "-A INPUT -x -j DROP")), 2);
        fake.flush();
        assert_eq!(fake.listing("iptables", "PORTLOCKER"), None);
    }

    #[test]
    fn the_oracle_walks_input_into_the_chain_and_back() {
        let mut fake = FakeIptables::default();
        let everyone = "192.0.2.10";
        assert_eq!(fake.fate("iptables", probe(22, everyone)), Fate::Accepted);
        for line in [
            "-N PORTLOCKER",
            "-A PORTLOCKER -s 203.0.113.7/32 -p tcp -m tcp --dport 22 -j RETURN",
            "-A PORTLOCKER -p tcp -m tcp --dport 22 --syn -j DROP",
            "-A INPUT -m comment --comment portlocker:jump.a -j PORTLOCKER",
            "-A INPUT -s 198.51.100.0/24 -p tcp -m tcp --dport 22 -j DROP",
        ] {
            ok(fake.admin("iptables", line));
        }
        assert_eq!(fake.fate("iptables", probe(22, everyone)), Fate::Dropped);
        assert_eq!(fake.fate("iptables", probe(23, everyone)), Fate::Accepted);
        assert_eq!(
            fake.fate("iptables", probe(22, "203.0.113.7")),
            Fate::Accepted
        );
        // RETURN goes back to INPUT, where a later ban still applies.
        ok(fake.admin("iptables", "-I PORTLOCKER 1 -s 198.51.100.0/24 -j RETURN"));
        assert_eq!(
            fake.fate("iptables", probe(22, "198.51.100.9")),
            Fate::Dropped
        );
        let udp = Probe {
            protocol: Protocol::Udp,
            ..probe(22, everyone)
        };
        assert_eq!(fake.fate("iptables", udp), Fate::Accepted);
        assert_eq!(
            fake.fate("ip6tables", probe(22, "2001:db8::1")),
            Fate::Accepted
        );
        assert_eq!(fake.sources("iptables").len(), 3);
    }
}
