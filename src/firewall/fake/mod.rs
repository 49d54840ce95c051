//! An in-memory firewall host for tests, at the `Runner` seam: `iptables`
//! and `ip6tables` (argv, one filter table per family),
//! `iptables-restore`/`ip6tables-restore --noflush` (input on stdin, all of
//! it or none) and `nft` (`-f -` scripts, all or none, `-e -j` echoes and
//! `-j list` listings), answering as iptables 1.8.9 and nft 1.0.6 do —
//! `real.rs` holds it to them in a network namespace. Faults on demand: a
//! command that fails, a commit that refuses one line portlocker wrote for
//! a service, a program missing or broken, a "SIGKILL" of the run at any
//! command or commit. `fate` is the oracle (`oracle.rs`): what the host
//! does to a new connection, never worked out by portlocker's verdicts.
//! Never runs a process.

mod nftables;
mod oracle;
mod real;
mod xtables;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
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
    /// After the command ran and changed the firewall, before portlocker
    /// saw its result (iptables, a restore tool and nft carry on when their
    /// parent is killed).
    After,
}

/// Which command a kill lands at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillAt {
    /// The n-th command of any kind (1 = the next).
    Command(usize),
    /// The n-th commit: a restore tool's transaction or an `nft -f` script.
    Commit(usize),
}

/// A new connection to probe the host with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub protocol: Protocol,
    pub port: u16,
    pub from: IpAddr,
}

/// What the host does to a new connection.
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

/// The programs the fake stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Iptables(Family),
    Restore(Family),
    Nft,
}

impl Tool {
    fn of(name: &str) -> Option<Tool> {
        Some(match name {
            "iptables" => Tool::Iptables(Family::Ipv4),
            "ip6tables" => Tool::Iptables(Family::Ipv6),
            "iptables-restore" => Tool::Restore(Family::Ipv4),
            "ip6tables-restore" => Tool::Restore(Family::Ipv6),
            "nft" => Tool::Nft,
            _ => return None,
        })
    }

    /// Whether `args` hand the tool a transaction to commit.
    fn commits(self, args: &[&str]) -> bool {
        match self {
            Tool::Restore(_) => true,
            Tool::Nft => args.contains(&"-f"),
            Tool::Iptables(_) => false,
        }
    }

    /// Whether `args` may change the firewall.
    fn writes(self, args: &[&str]) -> bool {
        match self {
            // After `-w N`, and `-t TABLE` when given.
            Tool::Iptables(_) => match args.get(2) {
                Some(&"-t") => changes(args.get(4)),
                op => changes(op),
            },
            _ => self.commits(args),
        }
    }
}

/// How many times each way of changing the firewall was taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Restore transactions committed.
    pub restores: usize,
    /// `nft -f` scripts committed.
    pub nft_commits: usize,
    /// iptables commands that changed a table, one rule or chain each.
    pub argv_writes: usize,
    /// Commits refused by an armed refusal.
    pub refusals: usize,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        self.restores += other.restores;
        self.nft_commits += other.nft_commits;
        self.argv_writes += other.argv_writes;
        self.refusals += other.refusals;
    }
}

/// The line a commit was refused for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedLine {
    /// The family the line is of.
    pub family: Family,
    /// The service it was written for.
    pub service: String,
    /// The line, as the tool read it.
    pub line: String,
}

/// The in-memory host. Tables appear on first use, as booted.
#[derive(Debug, Default)]
pub struct FakeFirewall {
    /// Per family, its iptables filter table.
    tables: BTreeMap<Family, xtables::Table>,
    ruleset: nftables::Ruleset,
    /// Every command run through the `Runner`, as a shell would show it.
    pub calls: Vec<String>,
    /// Those of them that could change the firewall.
    pub wrote: Vec<String>,
    /// Every `-A` fails with exit 4.
    pub fail_appends: bool,
    /// Every command of this program fails, as ip6tables and its restore
    /// tool do in a kernel without IPv6.
    pub broken: Option<&'static str>,
    /// Programs that cannot be started (not installed): a spawn error.
    pub missing: BTreeSet<&'static str>,
    kill_at: Option<(KillAt, KillPoint)>,
    fail_at: Option<usize>,
    /// The command an armed failure was handed to.
    pub failed: Option<String>,
    /// Armed: the next commits refuse one line written for a service, the
    /// `pick`-th of those that carry a value from the control file.
    refusing: Option<u64>,
    /// That line, once an armed refusal found one.
    refusing_line: Option<String>,
    /// Each refusal of it, with the family of the commit refused.
    pub refused: Vec<RefusedLine>,
    /// The moment the oracle judges time matches at (UTC).
    pub clock: Option<DateTime<Utc>>,
    pub stats: Stats,
    commits: usize,
}

/// The name the unit tests of the iptables backend know it by.
pub type FakeIptables = FakeFirewall;

impl FakeFirewall {
    /// The run is killed at `at`, before or after that command did its work.
    pub fn arm_kill(&mut self, at: KillAt, point: KillPoint) {
        let at = match at {
            KillAt::Command(nth) => KillAt::Command(self.calls.len() + nth),
            KillAt::Commit(nth) => KillAt::Commit(self.commits + nth),
        };
        self.kill_at = Some((at, point));
    }

    /// The `nth` command from now fails, as when another tool holds the
    /// xtables lock too long (or nft's netlink socket is busy).
    pub fn arm_failure(&mut self, nth: usize) {
        self.fail_at = Some(self.calls.len() + nth);
        self.failed = None;
    }

    /// Every commit from now refuses one line portlocker writes for a
    /// service with a source or a deadline, for the first time (as a
    /// restore tool refuses a value it cannot write; one the firewall holds
    /// it took before): the `pick`-th such line of the first commit that
    /// has one, and that same line in every commit after it.
    pub fn arm_refusal(&mut self, pick: u64) {
        self.refusing = Some(pick);
        self.refusing_line = None;
        self.refused.clear();
    }

    pub fn disarm(&mut self) {
        self.kill_at = None;
        self.fail_at = None;
        self.refusing = None;
    }

    /// A reboot: every table gone, iptables' built-in chains accepting.
    pub fn flush(&mut self) {
        self.tables.clear();
        self.ruleset = nftables::Ruleset::default();
    }

    fn table(&self, family: Family) -> xtables::Table {
        self.tables.get(&family).cloned().unwrap_or_default()
    }

    /// Every rule of every table: iptables' as `iptables -S` lists them,
    /// nftables' one per line with its comment.
    pub fn rules(&self) -> Vec<String> {
        let mut rules = Vec::new();
        for table in self.tables.values() {
            for (name, chain) in &table.chains {
                rules.extend(chain.rules.iter().map(|rule| xtables::shown(name, rule)));
            }
        }
        rules.extend(self.ruleset.rules());
        rules
    }

    /// What `binary -S chain` prints, or None when there is no such chain.
    pub fn listing(&self, binary: &str, chain: &str) -> Option<String> {
        let family = family_of_binary(binary);
        let mut out = String::new();
        xtables::list(&self.table(family), chain, &mut out).then_some(out)
    }

    /// What `nft -j list table FAMILY NAME` prints, or None without it.
    pub fn nft_table(&self, family: &str, name: &str) -> Option<String> {
        self.ruleset.list_table(family, name)
    }

    /// Every table, for a failure message.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (family, table) in &self.tables {
            out.push_str(&format!("{} -S:\n", binary_of(*family)));
            for name in xtables::ordered(table) {
                xtables::list(table, &name, &mut out);
            }
        }
        if !self.ruleset.tables.is_empty() {
            out.push_str("nft list ruleset:\n");
            for rule in self.ruleset.rules() {
                out.push_str(&rule);
                out.push('\n');
            }
            if self.ruleset.rules().is_empty() {
                out.push_str(&self.ruleset.list_ruleset());
                out.push('\n');
            }
        }
        out
    }

    /// Changes the iptables table as the owner or another tool would,
    /// outside any run: `line` is an iptables command line without the
    /// program, like `-I INPUT 1 -p tcp -m tcp --dport 8080 -j ACCEPT`.
    /// Not recorded.
    pub fn admin(&mut self, binary: &str, line: &str) -> Completion {
        let args = split_listed(line);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let family = family_of_binary(binary);
        let table = self.tables.entry(family).or_default();
        answer(xtables::interpret(table, family, &args).map_err(|r| r.by_argv(binary)))
    }

    /// Changes the nftables ruleset as another tool would, outside any run,
    /// with an `nft -f` script. Not recorded.
    pub fn admin_nft(&mut self, script: &str) -> Result<(), String> {
        nftables::apply(&mut self.ruleset, script)
            .map(|_| ())
            .map_err(|refusal| refusal.render(script))
    }

    /// Every source network the rules of `family` name, in either tool.
    pub fn sources(&self, family: Family) -> Vec<IpNet> {
        let table = self.table(family);
        let words = table.chains.values().flat_map(|c| c.rules.iter());
        let mut nets: Vec<IpNet> = words
            .filter_map(|rule| {
                let at = rule.iter().position(|w| w == "-s")?;
                rule.get(at + 1)?.parse().ok()
            })
            .collect();
        nets.extend(self.ruleset.sources(family));
        nets
    }

    /// The oracle: what the host does to the new connection `probe` of
    /// `family` (see `oracle.rs`).
    pub fn fate(&self, family: Family, probe: Probe) -> Fate {
        oracle::fate(
            &self.table(family),
            &self.ruleset,
            family,
            probe,
            self.clock,
        )
    }

    fn execute(
        &mut self,
        tool: Tool,
        program: &str,
        command: &Command,
        args: &[&str],
    ) -> Completion {
        match tool {
            Tool::Iptables(family) => self.iptables(family, program, args),
            Tool::Restore(family) => self.restore(family, program, command, args),
            Tool::Nft => self.nft(command, args),
        }
    }

    fn iptables(&mut self, family: Family, program: &str, args: &[&str]) -> Completion {
        // portlocker never waits for the xtables lock without a bound.
        let Some(["-w", seconds]) = args.get(..2) else {
            return refusal(2, "the fake expects -w N first");
        };
        if seconds.parse::<u32>().is_err() {
            return refusal(2, "-w needs a number of seconds");
        }
        let mut args = &args[2..];
        // Only the filter table holds anything: the others list as a fresh
        // boot has them.
        if let ["-t", table, rest @ ..] = args {
            if *table != "filter" {
                return other_table(table, rest);
            }
            args = rest;
        }
        if self.fail_appends && args.first() == Some(&"-A") {
            return refusal(4, "iptables: Bad rule.");
        }
        let table = self.tables.entry(family).or_default();
        let done = xtables::interpret(table, family, args).map_err(|r| r.by_argv(program));
        if done.is_ok() && changes(args.first()) {
            self.stats.argv_writes += 1;
        }
        answer(done)
    }

    fn restore(
        &mut self,
        family: Family,
        tool: &str,
        command: &Command,
        args: &[&str],
    ) -> Completion {
        assert!(
            args.contains(&"--noflush"),
            "{tool} without --noflush would flush every chain of the table: {command}"
        );
        let input = command.stdin.as_deref().unwrap_or("");
        let held = self.table(family);
        if let Some((line, number)) = self.refusal_in(input, |line| {
            restore_line_of_service(line)
                .filter(|_| !xtables::holds(&held, family, line))
                .map(|service| (family, service))
        }) {
            let value = refused_value(&line);
            let why = match line.contains("--date") {
                true => format!(
                    "Invalid date \"{value}\" specified. Should be YYYY[-MM[-DD[Thh[:mm[:ss]]]]]"
                ),
                false => format!("host/network `{value}' not found"),
            };
            return refusal(2, &xtables::parse_error(tool, &why, number));
        }
        let table = self.tables.entry(family).or_default();
        let done = xtables::restore(table, family, tool, input);
        if done.is_ok() {
            self.stats.restores += 1;
        }
        answer(done.map(|()| String::new()))
    }

    fn nft(&mut self, command: &Command, args: &[&str]) -> Completion {
        match args {
            ["-j", "list", "table", family, name] => match self.ruleset.list_table(family, name) {
                Some(listing) => done(0, &format!("{listing}\n"), ""),
                None => {
                    let shown = format!("list table {family} {name}");
                    let carets = format!(
                        "{}{}",
                        " ".repeat(shown.len() - name.len()),
                        "^".repeat(name.len())
                    );
                    done(
                        1,
                        "",
                        &format!("Error: No such file or directory\n{shown}\n{carets}\n"),
                    )
                }
            },
            ["-j", "list", "ruleset"] => done(0, &format!("{}\n", self.ruleset.list_ruleset()), ""),
            ["-j", "list", "chains"] => {
                let listed = self.ruleset.list_chains(&self.xtables_objects());
                done(0, &format!("{listed}\n"), "")
            }
            ["-j", "list", "tables"] => {
                let listed = self.ruleset.list_tables(&self.xtables_objects());
                done(0, &format!("{listed}\n"), "")
            }
            ["-f", "-"] | ["-e", "-j", "-f", "-"] => {
                let script = command.stdin.as_deref().unwrap_or("");
                let held = self.ruleset.clone();
                let new_line = |line: &str| {
                    nft_line_of_service(line).filter(|_| !nftables::holds(&held, line))
                };
                if let Some((_, number)) = self.refusal_in(script, new_line) {
                    let refused = nftables::Refusal::of_line(
                        script,
                        number,
                        "Could not process rule: Invalid argument",
                    );
                    return done(1, "", &refused.render(script));
                }
                match nftables::apply(&mut self.ruleset, script) {
                    Ok(echo) => {
                        self.stats.nft_commits += 1;
                        let printed = match args[0] {
                            "-e" => nftables::echoed(&echo),
                            _ => String::new(),
                        };
                        done(0, &printed, "")
                    }
                    Err(refusal) => done(1, "", &refusal.render(script)),
                }
            }
            _ => panic!("the fake nft does not know `{command}`: teach it what real nft does"),
        }
    }

    /// iptables-nft's filter tables as nft lists them (`list tables` and
    /// `list chains` show them with every other): each table, then its
    /// chains, the built-in ones hooked at priority 0.
    fn xtables_objects(&self) -> Vec<String> {
        let mut objects = Vec::new();
        let mut handle = 1000;
        for (family, table) in &self.tables {
            if table.chains.is_empty() {
                continue;
            }
            let word = crate::firewall::ruleset::family_word(*family);
            handle += 1;
            objects.push(format!(
                "{{\"table\": {{\"family\": \"{word}\", \"name\": \"filter\", \"handle\": {handle}}}}}"
            ));
            for (name, chain) in &table.chains {
                handle += 1;
                let base = match (&chain.policy, name.as_str()) {
                    (Some(policy), "INPUT" | "FORWARD" | "OUTPUT") => format!(
                        ", \"type\": \"filter\", \"hook\": \"{}\", \"prio\": 0, \"policy\": \"{}\"",
                        name.to_lowercase(),
                        policy.to_lowercase()
                    ),
                    _ => String::new(),
                };
                objects.push(format!(
                    "{{\"chain\": {{\"family\": \"{word}\", \"table\": \"filter\", \"name\": \"{name}\", \"handle\": {handle}{base}}}}}"
                ));
            }
        }
        objects
    }

    /// The line of `input` an armed refusal refuses, with its number:
    /// the line refused before, or else the `pick`-th line `of_service`
    /// says is written for a service with a value from the control file.
    fn refusal_in(
        &mut self,
        input: &str,
        of_service: impl Fn(&str) -> Option<(Family, String)>,
    ) -> Option<(String, usize)> {
        let pick = self.refusing?;
        let lines: Vec<(usize, &str)> =
            input.lines().enumerate().map(|(i, l)| (i + 1, l)).collect();
        let found = match &self.refusing_line {
            Some(refused) => lines
                .iter()
                .find(|(_, line)| line.trim() == refused && of_service(line).is_some())
                .copied(),
            None => {
                let candidates: Vec<(usize, &str)> = lines
                    .iter()
                    .filter(|(_, line)| carries_a_value(line) && of_service(line).is_some())
                    .copied()
                    .collect();
                let chosen = candidates
                    .get((pick % candidates.len().max(1) as u64) as usize)
                    .copied();
                self.refusing_line = chosen.map(|(_, line)| line.trim().to_owned());
                chosen
            }
        };
        let (number, line) = found?;
        let (family, service) = of_service(line).expect("a line for a service");
        self.refused.push(RefusedLine {
            family,
            service,
            line: line.trim().to_owned(),
        });
        self.stats.refusals += 1;
        Some((line.trim().to_owned(), number))
    }
}

impl Runner for FakeFirewall {
    fn run(&mut self, command: &Command) -> io::Result<Completion> {
        let program = command
            .program
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(tool) = Tool::of(&program).filter(|_| !self.missing.contains(program.as_str()))
        else {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        };
        self.calls.push(command.to_string());
        let n = self.calls.len();
        let args: Vec<&str> = command.args.iter().map(String::as_str).collect();
        let commit = tool.commits(&args);
        if commit {
            self.commits += 1;
        }
        if tool.writes(&args) {
            self.wrote.push(command.to_string());
        }
        if let Some((at, point)) = self.kill_at
            && (at == KillAt::Command(n) || (commit && at == KillAt::Commit(self.commits)))
        {
            self.kill_at = None;
            if point == KillPoint::After {
                self.execute(tool, &program, command, &args);
            }
            std::panic::panic_any(Killed);
        }
        if self.fail_at == Some(n) {
            self.fail_at = None;
            self.failed = Some(command.to_string());
            return Ok(match tool {
                Tool::Nft => refusal(1, "Error: Could not process rule: Device or resource busy"),
                _ => refusal(
                    4,
                    "Another app is currently holding the xtables lock. Stopped waiting after 10s.",
                ),
            });
        }
        if self.broken == Some(program.as_str()) {
            return Ok(refusal(
                3,
                &format!(
                    "{program} v1.8.9 (nf_tables): Could not fetch rule set generation id: Address family not supported by protocol"
                ),
            ));
        }
        Ok(self.execute(tool, &program, command, &args))
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
        ["-S", chain] if built_in.contains(chain) => done(0, &format!("-P {chain} ACCEPT\n"), ""),
        ["-S", _] => refusal(1, xtables::NO_CHAIN),
        _ => refusal(2, "the fake changes only the filter table"),
    }
}

/// Whether an iptables command with operation `op` may change a table.
fn changes(op: Option<&&str>) -> bool {
    !matches!(op, Some(&"-S" | &"-C") | None)
}

fn family_of_binary(binary: &str) -> Family {
    match binary {
        "ip6tables" => Family::Ipv6,
        _ => Family::Ipv4,
    }
}

fn done(code: i32, stdout: &str, stderr: &str) -> Completion {
    Completion {
        termination: Termination::Code(code),
        stdout: stdout.to_owned(),
        stderr: stderr.to_owned(),
    }
}

fn refusal(code: i32, stderr: &str) -> Completion {
    done(code, "", &format!("{stderr}\n"))
}

fn answer(result: Result<String, (i32, String)>) -> Completion {
    match result {
        Ok(stdout) => done(0, &stdout, ""),
        Err((code, stderr)) => refusal(code, &stderr),
    }
}

/// The service tag (`portlocker:NAME`) on a line, but not a jump's.
fn tagged_service(line: &str) -> Option<String> {
    let at = line.find("portlocker:")? + "portlocker:".len();
    let name: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    (!name.is_empty() && !line[at..].starts_with("jump.")).then_some(name)
}

/// Whether a line carries a value from the control file: a source or a
/// deadline.
fn carries_a_value(line: &str) -> bool {
    [" -s ", "--datestart", "--datestop", " saddr ", "meta time"]
        .iter()
        .any(|word| line.contains(word))
}

/// The service a restore line adds a rule for.
fn restore_line_of_service(line: &str) -> Option<String> {
    let line = line.trim();
    (line.starts_with("-A ") || line.starts_with("-I ")).then(|| tagged_service(line))?
}

/// The service an nft script line adds a rule for, and its family.
fn nft_line_of_service(line: &str) -> Option<(Family, String)> {
    let service = tagged_service(line)?;
    let family = if line.contains("ipv6") || line.contains("ip6 saddr") {
        Family::Ipv6
    } else {
        Family::Ipv4
    };
    Some((family, service))
}

/// The value a refusal names: the deadline or the source of the line.
fn refused_value(line: &str) -> String {
    let words = split_listed(line);
    words
        .windows(2)
        .find(|pair| matches!(pair[0].as_str(), "--datestart" | "--datestop" | "-s"))
        .map(|pair| pair[1].clone())
        .unwrap_or_default()
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
        assert_eq!(
            (code(&missing), missing.stderr.trim()),
            (
                1,
                "iptables v1.8.9 (nf_tables): chain `PORTLOCKER' in table `filter' is incompatible, use 'nft' tool."
            )
        );
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
        // (iptables-nft: the kernel says the chain is busy.)
        ok(fake.admin(
            "iptables",
            "-I INPUT 1 -m comment --comment portlocker:jump.a -j PORTLOCKER",
        ));
        assert_eq!(code(&fake.admin("iptables", "-X PORTLOCKER")), 4);
        ok(fake.admin(
            "iptables",
            "-D INPUT -m comment --comment portlocker:jump.a -j PORTLOCKER",
        ));
        assert_eq!(code(&fake.admin("iptables", "-X PORTLOCKER")), 4);
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
        assert_eq!(fake.fate(Family::Ipv4, probe(22, everyone)), Fate::Accepted);
        for line in [
            "-N PORTLOCKER",
            "-A PORTLOCKER -s 203.0.113.7/32 -p tcp -m tcp --dport 22 -j RETURN",
            "-A PORTLOCKER -p tcp -m tcp --dport 22 --syn -j DROP",
            "-A INPUT -m comment --comment portlocker:jump.a -j PORTLOCKER",
            "-A INPUT -s 198.51.100.0/24 -p tcp -m tcp --dport 22 -j DROP",
        ] {
            ok(fake.admin("iptables", line));
        }
        assert_eq!(fake.fate(Family::Ipv4, probe(22, everyone)), Fate::Dropped);
        assert_eq!(fake.fate(Family::Ipv4, probe(23, everyone)), Fate::Accepted);
        assert_eq!(
            fake.fate(Family::Ipv4, probe(22, "203.0.113.7")),
            Fate::Accepted
        );
        // RETURN goes back to INPUT, where a later ban still applies.
        ok(fake.admin("iptables", "-I PORTLOCKER 1 -s 198.51.100.0/24 -j RETURN"));
        assert_eq!(
            fake.fate(Family::Ipv4, probe(22, "198.51.100.9")),
            Fate::Dropped
        );
        let udp = Probe {
            protocol: Protocol::Udp,
            ..probe(22, everyone)
        };
        assert_eq!(fake.fate(Family::Ipv4, udp), Fate::Accepted);
        assert_eq!(
            fake.fate(Family::Ipv6, probe(22, "2001:db8::1")),
            Fate::Accepted
        );
        assert_eq!(fake.sources(Family::Ipv4).len(), 3);
    }

    fn command(program: &str, args: &[&str], stdin: Option<&str>) -> Command {
        Command {
            program: format!("/sbin/{program}").into(),
            args: args.iter().map(|arg| arg.to_string()).collect(),
            stdin: stdin.map(str::to_owned),
        }
    }

    fn restore(fake: &mut FakeFirewall, input: &str) -> Completion {
        fake.run(&command(
            "iptables-restore",
            &["--noflush", "-w", "10"],
            Some(input),
        ))
        .unwrap()
    }

    fn nft(fake: &mut FakeFirewall, args: &[&str], script: Option<&str>) -> Completion {
        fake.run(&command("nft", args, script)).unwrap()
    }

    const TRANSACTION: &str = "*filter\n\
        :PORTLOCKER - [0:0]\n\
        -A PORTLOCKER -s 203.0.113.7 -p tcp -m tcp --dport 22 -m comment --comment portlocker:ssh -j RETURN\n\
        -A PORTLOCKER -p tcp -m tcp --dport 22 --syn -m comment --comment portlocker:ssh -j DROP\n\
        -I INPUT 1 -m comment --comment portlocker:jump.a -j PORTLOCKER\n\
        COMMIT\n";

    #[test]
    fn a_restore_input_is_taken_whole_or_not_at_all() {
        let mut fake = FakeFirewall::default();
        ok(restore(&mut fake, TRANSACTION));
        assert_eq!(fake.stats.restores, 1);
        let chain = fake.listing("iptables", "PORTLOCKER").unwrap();
        assert_eq!(chain.lines().count(), 3, "{chain}");
        assert_eq!(
            fake.fate(Family::Ipv4, probe(22, "192.0.2.10")),
            Fate::Dropped
        );
        assert_eq!(
            fake.fate(Family::Ipv4, probe(22, "203.0.113.7")),
            Fate::Accepted
        );
        let before = fake.dump();

        // Declaring the chain empties it; a line that cannot be made
        // refuses the whole input, naming its line, and changes nothing.
        let refused = restore(
            &mut fake,
            "*filter\n:PORTLOCKER - [0:0]\n-A PORTLOCKER -p tcp -m tcp --dport 80 -j DROP\n\
             -D INPUT -m comment --comment portlocker:jump.b -j PORTLOCKER\nCOMMIT\n",
        );
        assert_eq!(
            (code(&refused), refused.stderr.as_str()),
            (
                1,
                "iptables-restore: line 4 failed: Bad rule (does a matching rule exist in that chain?).\n"
            )
        );
        let unreadable = restore(
            &mut fake,
            "*filter\n:PORTLOCKER - [0:0]\n-A PORTLOCKER -p tcp -m tcp --dport 80 -m time \
             --datestart 2026-12-08T00:00:60 -j DROP\nCOMMIT\n",
        );
        assert_eq!(code(&unreadable), 2);
        assert!(
            unreadable.stderr.starts_with(
                "iptables-restore v1.8.9 (nf_tables): Invalid date \"2026-12-08T00:00:60\" specified."
            ) && unreadable.stderr.contains("\nError occurred at line: 3\n"),
            "{}",
            unreadable.stderr
        );
        let unfinished = restore(&mut fake, "*filter\n:PORTLOCKER - [0:0]\n");
        assert_eq!(
            (code(&unfinished), unfinished.stderr.as_str()),
            (1, "iptables-restore: COMMIT expected at line 3\n")
        );
        assert_eq!(fake.dump(), before);

        // Emptied, unhooked and deleted in one transaction.
        ok(restore(
            &mut fake,
            "*filter\n:PORTLOCKER - [0:0]\n-D INPUT -m comment --comment portlocker:jump.a -j PORTLOCKER\n\
             -X PORTLOCKER\nCOMMIT\n",
        ));
        assert_eq!(fake.listing("iptables", "PORTLOCKER"), None);
        assert_eq!(fake.stats.restores, 2);
    }

    /// The script portlocker writes for every kind of rule (see the nft
    /// backend's tests), and what real nft 1.0.6 echoed and listed of it.
    const EVERY_KIND: &str = include_str!("../../../tests/fixtures/nft-every-kind.nft");
    const EVERY_KIND_LISTED: &str = include_str!("../../../tests/fixtures/nft-every-kind.json");
    const EVERY_KIND_ECHOED: &str =
        include_str!("../../../tests/fixtures/nft-every-kind-echo.json");

    #[test]
    fn an_nft_script_lists_and_echoes_as_real_nft_printed_it() {
        let mut fake = FakeFirewall::default();
        let listing = ["-j", "list", "table", "inet", "portlocker"];
        let missing = nft(&mut fake, &listing, None);
        assert_eq!(
            (code(&missing), missing.stderr.as_str()),
            (
                1,
                "Error: No such file or directory\nlist table inet portlocker\n                ^^^^^^^^^^\n"
            )
        );
        let echo = nft(&mut fake, &["-e", "-j", "-f", "-"], Some(EVERY_KIND));
        assert_eq!(echo.stdout.trim(), EVERY_KIND_ECHOED.trim());
        let listed = nft(&mut fake, &listing, None);
        assert_eq!(listed.stdout.trim(), EVERY_KIND_LISTED.trim());
        assert_eq!(fake.stats.nft_commits, 1);

        // A script that cannot be carried out changes nothing.
        let broken = format!("{EVERY_KIND}add rule inet portlocker nope tcp dport 1 drop\n");
        let refused = nft(&mut fake, &["-f", "-"], Some(&broken));
        assert_eq!(
            (code(&refused), refused.stderr.as_str()),
            (
                1,
                "/dev/stdin:15:26-29: Error: Could not process rule: No such file or directory\n\
                 add rule inet portlocker nope tcp dport 1 drop\n                         ^^^^\n"
            )
        );
        let again = nft(&mut fake, &listing, None);
        assert_eq!(again.stdout, listed.stdout);
    }

    #[test]
    fn the_oracle_walks_every_base_chain_on_input_in_priority_order() {
        let mut fake = FakeFirewall::default();
        fake.admin_nft(EVERY_KIND).unwrap();
        fake.clock = Some("2026-12-01T12:00:00Z".parse().unwrap());
        let ssh = |from| fake.fate(Family::Ipv4, probe(22, from));
        assert_eq!(ssh("192.0.2.10"), Fate::Accepted, "before its deadline");
        fake.clock = Some("2026-12-01T18:00:00Z".parse().unwrap());
        let ssh = |from| fake.fate(Family::Ipv4, probe(22, from));
        assert_eq!(ssh("192.0.2.10"), Fate::Dropped);
        assert_eq!(ssh("198.51.100.9"), Fate::Accepted);
        assert_eq!(ssh("127.0.0.2"), Fate::Dropped, "its own deadline passed");
        // An accept ends its own base chain only; a drop anywhere is final.
        fake.admin_nft(
            "table inet early {\n  chain input {\n    type filter hook input priority -100; policy accept;\n    \
             tcp dport 22 accept\n  }\n}\n",
        )
        .unwrap();
        assert_eq!(
            fake.fate(Family::Ipv4, probe(22, "192.0.2.10")),
            Fate::Dropped
        );
        fake.admin_nft(
            "table ip late {\n  chain input {\n    type filter hook input priority 10; policy drop;\n    \
             tcp dport 23 accept\n  }\n}\n",
        )
        .unwrap();
        assert_eq!(
            fake.fate(Family::Ipv4, probe(23, "192.0.2.10")),
            Fate::Accepted
        );
        assert_eq!(
            fake.fate(Family::Ipv4, probe(24, "192.0.2.10")),
            Fate::Dropped
        );
        assert_eq!(
            fake.fate(Family::Ipv6, probe(24, "2001:db8::1")),
            Fate::Accepted
        );
        // iptables' INPUT hooks at 0, between them.
        ok(fake.admin("iptables", "-A INPUT -p tcp -m tcp --dport 23 -j DROP"));
        assert_eq!(
            fake.fate(Family::Ipv4, probe(23, "192.0.2.10")),
            Fate::Dropped
        );
        assert_eq!(
            fake.sources(Family::Ipv4),
            ["127.0.0.2/32", "198.51.100.0/24"].map(|n| n.parse::<IpNet>().unwrap())
        );
    }

    #[test]
    fn an_armed_refusal_refuses_one_valued_line_of_a_service_every_time() {
        let mut fake = FakeFirewall::default();
        fake.arm_refusal(1);
        let refused = restore(&mut fake, TRANSACTION);
        assert_eq!(code(&refused), 2);
        assert!(
            refused.stderr.starts_with(
                "iptables-restore v1.8.9 (nf_tables): host/network `203.0.113.7' not found\nError occurred at line: 3\n"
            ),
            "{}",
            refused.stderr
        );
        let line = fake.refused[0].clone();
        assert_eq!((line.family, line.service.as_str()), (Family::Ipv4, "ssh"));
        assert_eq!(fake.listing("iptables", "PORTLOCKER"), None);
        // Without that line, the transaction goes through.
        let without: String = TRANSACTION
            .lines()
            .filter(|l| !l.contains("203.0.113.7"))
            .map(|l| format!("{l}\n"))
            .collect();
        ok(restore(&mut fake, &without));
        assert_eq!(fake.stats.refusals, 1);
        // A line the table holds was taken before: written again, it is not refused.
        fake.disarm();
        ok(restore(&mut fake, TRANSACTION));
        fake.arm_refusal(1);
        ok(restore(&mut fake, TRANSACTION));
        assert_eq!(fake.stats.refusals, 1);

        // One line per arming: armed again, nft refuses one of its own.
        fake.arm_refusal(1);
        let refused = nft(&mut fake, &["-e", "-j", "-f", "-"], Some(EVERY_KIND));
        assert_eq!(code(&refused), 1);
        // Lines 6, 7, 8 and 10 carry a value: the second of them.
        assert!(
            refused.stderr.starts_with("/dev/stdin:7:5-"),
            "{}",
            refused.stderr
        );
        assert_eq!(fake.nft_table("inet", "portlocker"), None);
        fake.disarm();
        ok(nft(&mut fake, &["-f", "-"], Some(EVERY_KIND)));
    }

    #[test]
    fn a_kill_at_a_commit_lands_before_or_after_it() {
        for (point, committed) in [(KillPoint::Before, false), (KillPoint::After, true)] {
            let mut fake = FakeFirewall::default();
            ok(fake.admin("iptables", "-N OTHER"));
            fake.arm_kill(KillAt::Commit(1), point);
            let killed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                restore(&mut fake, TRANSACTION)
            }));
            assert!(killed.unwrap_err().is::<Killed>());
            assert_eq!(fake.listing("iptables", "PORTLOCKER").is_some(), committed);
        }
    }
}
