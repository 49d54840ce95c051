//! The nftables backend: portlocker's own table, `inet portlocker`, with
//! one base chain `input` on the input hook before the usual filter chains
//! (priority -10, policy accept), holding both families' rules. Never reads
//! or touches another table (beyond noticing, for the page, which others
//! hook input with a policy of drop).
//!
//! An adapter to the model the planner and the verdicts work on: the table
//! is read (`nft -j list table inet portlocker`) into the same holdings the
//! iptables backend reads — INPUT accepting with one jump to portlocker's
//! chain while the base chain is there (a base chain is always reached),
//! and each rule of it as the words `Rule::listed_spec` gives for the rule
//! it is — and the planned steps are recorded on a copy, from which the
//! whole table is written anew in one `nft -e -j -f -` transaction, whose
//! echo of what the kernel committed is read as a listing is. A rule that
//! is not one portlocker makes (untagged, added by hand, changed) is read as
//! a rule of an unknown service, which the planner removes: in its own
//! table, anything not portlocker's is drift.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::NaiveDateTime;
use ipnet::IpNet;

use crate::config::{Config, Family, PortSpec, Protocol, ServiceName};
use crate::firewall::eval::Cited;
use crate::firewall::forward::{Forwarded, Mirror};
use crate::firewall::model::{
    ChainRules, Change, FamilyHoldings, Holdings, JumpTag, KernelTime, Listed, Rule, appended_by,
    rule_of,
};
use crate::firewall::plan::Step;
use crate::firewall::ruleset::{self, Chain, ChainKind, Hook, InputPath, Policy, Table, Tool};
use crate::firewall::{
    Applied, FirewallBackend, Reset, Tidied, program_problem, refusal_named, run_command,
};
use crate::sys::runner::{Command, CommandError, Completion, Failure, Runner};

pub(crate) mod forward;
mod json;
pub(crate) mod read;
use json::{Expr, Object, Operand, text};

/// portlocker's table, as nft names it.
pub const TABLE: &str = "inet portlocker";

/// Its one base chain.
const CHAIN: &str = "input";

/// The base chain's declaration: before the filter chains (priority 0) of
/// other tables, accepting what its rules leave alone.
const BASE: &str = "type filter hook input priority -10; policy accept;";

/// The priority of `BASE`.
const PRIORITY: i64 = -10;

/// The chain of closes made while the table cannot be read, and its
/// declaration: on the input hook just before `input`.
const BLIND: &str = "blind";
const BLIND_BASE: &str = "type filter hook input priority -11; policy accept;";

/// The tag of a rule portlocker did not make, as it is read.
const UNKNOWN_TAG: &str = "portlocker:?";

/// `nft -f -`: takes a script, and applies all of it or none.
const WRITE: [&str; 2] = ["-f", "-"];

/// The same, printing back what the kernel committed, as JSON.
const WRITE_ECHOED: [&str; 4] = ["-e", "-j", "-f", "-"];

/// nftables, through a `Runner`.
pub struct Nft<'a, R: Runner> {
    runner: R,
    config: &'a Config,
    /// Programs that hung this run.
    hung: Vec<PathBuf>,
    /// Found while observing, for the page.
    notices: Vec<String>,
    /// Whether a refused transaction was handed back for a smaller plan.
    shrunk: bool,
}

impl<'a, R: Runner> Nft<'a, R> {
    pub fn new(config: &'a Config, runner: R) -> Self {
        Nft {
            runner,
            config,
            hung: Vec::new(),
            notices: Vec::new(),
            shrunk: false,
        }
    }

    fn command(&self, args: &[&str], stdin: Option<String>) -> Command {
        Command {
            program: self.config.firewall.nft.clone(),
            args: args.iter().map(|arg| arg.to_string()).collect(),
            stdin,
        }
    }

    fn run(&mut self, command: Command) -> Result<Completion, CommandError> {
        run_command(&mut self.runner, &mut self.hung, command)
    }

    /// Reads portlocker's table; a table that does not exist is an empty listing.
    fn list(&mut self) -> Result<Listing, CommandError> {
        let command = self.command(&["-j", "list", "table", "inet", "portlocker"], None);
        match self.run(command.clone()) {
            Ok(done) => Listing::parse(&done.stdout, self.config).map_err(|why| CommandError {
                command,
                failure: Failure::Unreadable(why),
            }),
            Err(CommandError {
                failure: Failure::Exited { code: 1, stderr },
                ..
            }) if stderr.contains("No such file or directory") => Ok(Listing::default()),
            Err(error) => Err(error),
        }
    }

    /// Notes what the page should tell of other tables: Docker's chain, and
    /// base chains on the input hook that drop what they do not accept.
    fn look_around(&mut self, holdings: &mut Holdings) {
        let command = self.command(&["-j", "list", "chains"], None);
        let listing = match self.run(command) {
            Ok(done) => done.stdout,
            Err(error) => {
                log::warn!("could not look at the other tables' chains: {error}");
                return;
            }
        };
        let objects = match json::objects(&listing) {
            Ok(objects) => objects,
            Err(why) => {
                log::warn!("could not read the other tables' chains: {why}");
                return;
            }
        };
        for object in &objects {
            let Object::Chain(chain) = object else {
                continue;
            };
            let (family, table, name) =
                (text(&chain.family), text(&chain.table), text(&chain.name));
            if (family, table) == ("inet", "portlocker") {
                continue;
            }
            if name == "DOCKER-USER"
                && family == "ip"
                && let Some(Some(held)) = holdings.families.get_mut(&Family::Ipv4)
            {
                held.docker_user = true;
            }
            if text(&chain.hook) == "input" && text(&chain.policy) == "drop" {
                let notice = format!(
                    "nftables: chain {name} of table {family} {table} drops what it does not accept \
                     (policy drop), and a drop there is final: a port portlocker opens stays closed \
                     unless that table accepts it"
                );
                // A run that reads the table again after its changes looks again.
                if !self.notices.contains(&notice) {
                    self.notices.push(notice);
                }
            }
        }
    }

    /// Feeds `script` to nft with `args` (`WRITE` or `WRITE_ECHOED`); nft
    /// applies all of it or none. Returns what nft printed. `said` goes to
    /// the log once it is done, with how many `changes` it made.
    fn commit(
        &mut self,
        args: &[&str],
        script: &Script,
        said: &[String],
        changes: usize,
    ) -> Result<String, CommandError> {
        let command = self.command(args, Some(script.text.clone()));
        let shown = command.to_string();
        match self.run(command) {
            Ok(done) => {
                for line in said {
                    log::info!("{line}");
                }
                log::info!("{changes} changes in one transaction: {shown}");
                Ok(done.stdout)
            }
            Err(error) => Err(refusal_named(error, refused_line, |line| {
                script.about(line)
            })),
        }
    }
}

impl<R: Runner> Nft<'_, R> {
    /// Deletes portlocker's table, whether or not it can be read.
    fn reset_table(&mut self) -> Reset {
        let listing = match self.list() {
            Ok(listing) => listing,
            // Deleting the table needs no listing: what it held is unknown,
            // not what decides whether it goes.
            Err(error) if error.needs_root() => {
                return Reset {
                    errors: vec![error],
                    ..Reset::default()
                };
            }
            Err(error) => {
                log::warn!("{error}; deleting table {TABLE} unread");
                let said = vec![format!("delete table {TABLE} (not readable)")];
                return match self.commit(&WRITE, &Script::deleting(), &said, 1) {
                    Ok(_) => Reset {
                        changes: 1,
                        said,
                        errors: Vec::new(),
                    },
                    Err(error) => Reset {
                        errors: vec![error],
                        ..Reset::default()
                    },
                };
            }
        };
        if !listing.table {
            return Reset::default();
        }
        let mut said: Vec<String> = self
            .config
            .families()
            .into_iter()
            .flat_map(|family| {
                let held = listing.family(self.config, family);
                let tags: Vec<String> = held
                    .tagged(self.config)
                    .filter_map(|rule| rule.tag().map(str::to_owned))
                    .collect();
                tags.into_iter()
                    .map(move |tag| format!("{family}: remove rule {tag}"))
            })
            .collect();
        said.push(format!("delete table {TABLE}"));
        let script = Script::deleting();
        // Not echoed: nft echoes no delete.
        match self.commit(&WRITE, &script, &said, said.len()) {
            Ok(_) => Reset {
                changes: said.len(),
                said,
                errors: Vec::new(),
            },
            Err(error) => Reset {
                errors: vec![error],
                ..Reset::default()
            },
        }
    }
}

impl<R: Runner> FirewallBackend for Nft<'_, R> {
    fn broken(&self) -> Vec<(PathBuf, String)> {
        let nft = &self.config.firewall.nft;
        program_problem(nft, "nftables", "firewall.nft", "")
            .map(|problem| (nft.clone(), problem))
            .into_iter()
            .collect()
    }

    /// One program for both families: both, or neither.
    fn unusable(&self) -> BTreeMap<Family, String> {
        let Some((_, problem)) = self.broken().into_iter().next() else {
            return BTreeMap::new();
        };
        let families = self.config.families().into_iter();
        families.map(|family| (family, problem.clone())).collect()
    }

    /// One listing for both families: each is read, or neither.
    fn observe(&mut self, docker: bool) -> (Holdings, Vec<CommandError>) {
        let mut holdings = Holdings::unknown(self.config);
        match self.list() {
            Ok(listing) => {
                for (&family, held) in holdings.families.iter_mut() {
                    *held = Some(listing.family(self.config, family));
                }
            }
            Err(error) => return (holdings, vec![error]),
        }
        if docker {
            self.look_around(&mut holdings);
        }
        (holdings, Vec::new())
    }

    /// Records the steps on a copy of what was read and writes the whole
    /// table from it, in one transaction, which nft echoes back: what the
    /// table then holds is read from that echo where it shows the whole
    /// table written (`confirmed`). Where the table could not be read, only
    /// closes are made (see `blind_script`), and nothing is learnt.
    fn read_host(&mut self) -> (crate::firewall::ruleset::Host, Vec<CommandError>) {
        crate::firewall::host::read(self.config, &mut self.runner, &mut self.hung)
    }

    fn apply(&mut self, steps: &[Step], holdings: &mut Holdings) -> Applied {
        let mut applied = Applied::default();
        let prepared = match prepare(self.config, steps, holdings) {
            Ok(None) => return applied,
            Ok(Some(prepared)) => prepared,
            Err(error) => {
                applied.errors.push(CommandError {
                    command: self.command(&WRITE_ECHOED, None),
                    failure: Failure::Unreadable(error),
                });
                return applied;
            }
        };
        if prepared.after.is_none() {
            // The log's: the run fails on the listing, and that failure is
            // what is told (once per series), not this every run.
            log::info!(
                "table {TABLE} could not be read: only closes are made, in a chain of their own \
                 ({BLIND}) before the others; opens and sources wait for a run that can read it"
            );
        }
        let said = describe(&prepared.made);
        let args = match prepared.after {
            Some(_) => &WRITE_ECHOED[..],
            None => &WRITE[..],
        };
        match self.commit(args, &prepared.script, &said, prepared.made.len()) {
            Ok(echo) => {
                if let Some(after) = prepared.after {
                    applied.confirmed = confirmed(self.config, &echo, &prepared.script, holdings);
                    *holdings = normalized(self.config, after);
                }
                applied.made.extend(prepared.made.into_iter().cloned());
            }
            Err(error) => {
                // The rules it was refused at (nft names every line it
                // could not parse), for a plan without them (`firewall::commit`).
                if let Failure::Refused(refusal) = &error.failure {
                    let lines = refused_lines(&refusal.stderr);
                    let rules = lines
                        .iter()
                        .filter_map(|&line| prepared.script.rule_at(line));
                    applied.refused.extend(rules.cloned());
                }
                // Refused past any rule (its size, say: netlink's "Message
                // too long"): a plan of closes only may get through.
                let took_nothing =
                    matches!(error.failure, Failure::Refused(_) | Failure::Exited { .. });
                if applied.refused.is_empty() && took_nothing && !self.shrunk {
                    self.shrunk = true;
                    applied.shrink = self.config.families();
                }
                applied.errors.push(error);
            }
        }
        applied
    }

    fn dry_run(&mut self, steps: &[Step], holdings: &Holdings) -> Vec<String> {
        let mut lines = Vec::new();
        let prepared = match prepare(self.config, steps, holdings) {
            Ok(None) => return lines,
            Ok(Some(prepared)) => prepared,
            Err(error) => return vec![format!("# no transaction: {error}")],
        };
        if prepared.after.is_none() {
            lines.push(
                "# so only the closes below are made, in a chain of their own before the others; opens and sources \
                 wait for a run that can read the table"
                    .to_owned(),
            );
        }
        lines.extend(
            describe(&prepared.made)
                .into_iter()
                .map(|line| format!("# {line}")),
        );
        lines.push(format!(
            "# all of it in one transaction, as `{} -f -` reads it:",
            self.config.firewall.nft.display()
        ));
        lines.extend(
            prepared
                .script
                .text
                .lines()
                .map(|line| format!("#   {line}")),
        );
        lines
    }

    fn forward(&mut self, mirror: &Mirror, dry: bool) -> Forwarded {
        Nft::forward(self, mirror, dry)
    }

    /// Deletes portlocker's table, then the mirror's.
    fn reset(&mut self) -> Reset {
        let mut reset = self.reset_table();
        if reset.errors.iter().any(CommandError::needs_root) {
            return reset;
        }
        let forwarded = Nft::forward(self, &Mirror::nothing(self.config), false);
        reset.said.extend(forwarded.said);
        reset.changes += forwarded.changes;
        reset.errors.extend(forwarded.errors);
        reset
    }

    fn tidy(&mut self) -> Tidied {
        let notices = std::mem::take(&mut self.notices);
        for notice in &notices {
            log::info!("{notice}");
        }
        Tidied {
            changes: 0,
            notices,
        }
    }
}

/// A transaction ready to commit.
struct Prepared<'s> {
    script: Script,
    /// The changes it makes.
    made: Vec<&'s Change>,
    /// What the table holds once it is committed; None when it could not be
    /// read, so is not known after either.
    after: Option<Holdings>,
}

/// The transaction that makes `steps` on `holdings`; None when it would
/// change nothing. Err when the planner left a rule portlocker does not make.
fn prepare<'s>(
    config: &Config,
    steps: &'s [Step],
    holdings: &Holdings,
) -> Result<Option<Prepared<'s>>, String> {
    let changes: Vec<&Change> = steps.iter().map(|step| &step.change).collect();
    if !holdings.families.values().all(Option::is_some) {
        let (script, made) = blind_script(&changes);
        return Ok((!made.is_empty()).then_some(Prepared {
            script,
            made,
            after: None,
        }));
    }
    if changes.is_empty() {
        return Ok(None);
    }
    let mut after = holdings.clone();
    for change in &changes {
        after.record(config, change);
    }
    Ok(Some(Prepared {
        script: script(config, &after, &changes)?,
        made: changes,
        after: Some(after),
    }))
}

/// What `changes` do, as the owner reads it, once each: the table and its
/// base chain are one for both families, and where the model has a jump
/// from INPUT, nftables has the base chain's hook.
fn describe(changes: &[&Change]) -> Vec<String> {
    let creates = changes
        .iter()
        .any(|change| matches!(change, Change::NewChain { .. }));
    let mut said: Vec<String> = Vec::new();
    for change in changes {
        let line = match change {
            Change::NewChain { .. } => Some(format!(
                "create table {TABLE}, its chain {CHAIN} on the input hook before the filter chains"
            )),
            Change::InsertJump { .. } if !creates => Some(format!(
                "put chain {CHAIN} of table {TABLE} back on the input hook (priority {PRIORITY}, \
                 policy accept)"
            )),
            Change::InsertJump { .. } | Change::DeleteJump { .. } => None,
            Change::DeleteChain { .. } => Some(format!("delete table {TABLE}")),
            other => Some(other.to_string()),
        };
        if let Some(line) = line
            && !said.contains(&line)
        {
            said.push(line);
        }
    }
    said
}

/// The holdings a fresh read of the table written from `after` gives.
fn normalized(config: &Config, after: Holdings) -> Holdings {
    let families = after
        .families
        .into_iter()
        .map(|(family, held)| {
            let held = held.map(|held| {
                let mut fresh = FamilyHoldings {
                    docker_user: held.docker_user,
                    ..FamilyHoldings::bare()
                };
                if let Some(chain) = held.chain {
                    fresh.chain = Some(chain);
                    fresh.input.rules = vec![jump(config)];
                }
                fresh
            });
            (family, held)
        })
        .collect();
    Holdings { families }
}

/// What nft's echo of committing `script` says the table holds, as
/// `observe` reads it (with Docker's chain as `observed` saw it: the echo
/// tells only of the table). None when the echo does not show the whole
/// table the script wrote, or it wrote none (nft echoes no delete): the
/// table must then be read again, and is never taken to be what the
/// changes should have made.
fn confirmed(
    config: &Config,
    echo: &str,
    script: &Script,
    observed: &Holdings,
) -> Option<Holdings> {
    let written = script.rules?;
    let shown = match Listing::echoed(echo, config) {
        Ok(shown) if shown.table && shown.base.is_some() && shown.rules.len() == written => shown,
        Ok(shown) => {
            log::info!(
                "nft's echo of the transaction shows {} of the {written} rules it wrote{}; the \
                 table is read again",
                shown.rules.len(),
                match (shown.table, &shown.base) {
                    (true, Some(_)) => "",
                    _ => ", and not the table and its chain",
                }
            );
            return None;
        }
        Err(why) => {
            log::info!(
                "nft's echo of the transaction cannot be read ({why}); the table is read again"
            );
            return None;
        }
    };
    let mut holdings = Holdings::unknown(config);
    for (&family, held) in holdings.families.iter_mut() {
        let mut read = shown.family(config, family);
        read.docker_user = observed.family(family).is_some_and(|seen| seen.docker_user);
        *held = Some(read);
    }
    Some(holdings)
}

/// The jump the model has from INPUT to portlocker's chain while the base
/// chain is on the input hook.
fn jump(config: &Config) -> Listed {
    Listed::new(JumpTag::A.spec(&config.firewall.chain))
}

/// An `nft -f` input, with what each line is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub text: String,
    about: Vec<String>,
    /// The rule of portlocker's each line writes, by line number - 1.
    written: BTreeMap<usize, Rule>,
    /// How many rules the table it writes whole holds; None when it writes
    /// no table whole.
    rules: Option<usize>,
}

impl Script {
    fn new(lines: Vec<(String, String)>) -> Script {
        Script {
            text: lines.iter().map(|(line, _)| format!("{line}\n")).collect(),
            about: lines.into_iter().map(|(_, about)| about).collect(),
            written: BTreeMap::new(),
            rules: None,
        }
    }

    /// What line `line` (1-based) is about.
    pub fn about(&self, line: usize) -> String {
        line.checked_sub(1)
            .and_then(|index| self.about.get(index))
            .cloned()
            .unwrap_or_else(|| format!("line {line}"))
    }

    /// The rule of portlocker's that line `line` (1-based) writes, if it writes one.
    pub fn rule_at(&self, line: usize) -> Option<&Rule> {
        self.written.get(&line.checked_sub(1)?)
    }

    /// The first two lines of every script: the table made if it is missing
    /// (so deleting it cannot fail), then deleted.
    fn head() -> Vec<(String, String)> {
        vec![
            (format!("table {TABLE}"), format!("table {TABLE}")),
            (
                format!("delete table {TABLE}"),
                format!("table {TABLE} as it was"),
            ),
        ]
    }

    /// Deletes portlocker's table, whether it exists or not.
    fn deleting() -> Script {
        Script::new(Script::head())
    }
}

/// The script that replaces the whole table with what `after` holds: every
/// family's rules in portlocker's chain, in order, each with its family
/// (`meta nfproto`) so the families' rules stay apart. No table when no
/// family has the chain. Err when a rule is not one portlocker makes — the
/// planner removes every such rule, so that is a bug, and nothing is written.
pub fn script(config: &Config, after: &Holdings, changes: &[&Change]) -> Result<Script, String> {
    let mut lines = Script::head();
    let held: Vec<(Family, &ChainRules)> = after
        .families
        .iter()
        .filter_map(|(&family, held)| Some((family, held.as_ref()?.chain.as_ref()?)))
        .collect();
    if held.is_empty() {
        return Ok(Script::new(lines));
    }
    let mut written = BTreeMap::new();
    let appended = appended_by(changes);
    lines.push((format!("table {TABLE} {{"), format!("table {TABLE}")));
    lines.push((format!("  chain {CHAIN} {{"), format!("chain {CHAIN}")));
    lines.push((
        format!("    {BASE}"),
        format!("chain {CHAIN} on the input hook, before the filter chains"),
    ));
    for &(family, chain) in &held {
        for listed in &chain.rules {
            let Some(rule) = rule_of(config, family, &listed.spec) else {
                return Err(format!(
                    "{family}: `{}` is not a rule portlocker makes",
                    listed.shown(config.firewall.chain.as_str())
                ));
            };
            let about = match appended.get(&(family, listed.spec.clone())) {
                Some(change) => change.to_string(),
                None => format!("{family}: a rule of portlocker's kept: {}", rule.tag()),
            };
            written.insert(lines.len(), rule.clone());
            lines.push((format!("    {}", nft_rule(&rule)), about));
        }
    }
    lines.push(("  }".into(), format!("chain {CHAIN}")));
    lines.push(("}".into(), format!("table {TABLE}")));
    Ok(Script {
        rules: Some(held.iter().map(|(_, chain)| chain.rules.len()).sum()),
        written,
        ..Script::new(lines)
    })
}

/// Without a listing: the closes of `changes` only, in a base chain of
/// their own, `blind`, hooked just before `input` (a drop there is final,
/// whatever `input` holds that cannot be seen), the table made if missing.
/// The chain is emptied and filled anew, so runs that cannot read the
/// table do not pile up copies; `input` is never touched, and no source is
/// let in: a close made blind is made for everyone, and the next run that
/// reads the table sorts it out (to it, `blind` is drift). Returns the
/// changes made.
fn blind_script<'c>(changes: &[&'c Change]) -> (Script, Vec<&'c Change>) {
    let mut lines = vec![
        (format!("add table {TABLE}"), format!("table {TABLE}")),
        (
            format!("add chain {TABLE} {BLIND} {{ {BLIND_BASE} }}"),
            format!("chain {BLIND}"),
        ),
        (
            format!("flush chain {TABLE} {BLIND}"),
            format!("chain {BLIND} as it was"),
        ),
    ];
    let mut made = Vec::new();
    let mut written = BTreeMap::new();
    for &change in changes {
        if let Change::Append(rule) = change
            && rule.source.is_none()
        {
            written.insert(lines.len(), rule.clone());
            lines.push((
                format!("add rule {TABLE} {BLIND} {}", nft_rule(rule)),
                change.to_string(),
            ));
            made.push(change);
        }
    }
    let script = Script {
        written,
        ..Script::new(lines)
    };
    (script, made)
}

/// A rule in nft's syntax: its family, source, port, new connections only
/// (`keep_established`), deadline (UTC: the runner sets TZ=UTC0), verdict
/// and tag.
pub fn nft_rule(rule: &Rule) -> String {
    nft_rule_on(rule, |protocol, ports| format!("{protocol} dport {ports}"))
}

/// `nft_rule`, its ports matched by `on(protocol, ports)`.
fn nft_rule_on(rule: &Rule, on: impl FnOnce(&str, &str) -> String) -> String {
    let mut words = vec!["meta nfproto".to_owned()];
    words.push(
        match rule.family {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
        .to_owned(),
    );
    if let Some(source) = rule.source {
        let address = match source {
            IpNet::V4(_) => "ip",
            IpNet::V6(_) => "ip6",
        };
        words.push(format!("{address} saddr {source}"));
    }
    let protocol = rule.ports.protocol.as_str();
    let ports = match rule.ports.first == rule.ports.last {
        true => rule.ports.first.to_string(),
        false => format!("{}-{}", rule.ports.first, rule.ports.last),
    };
    words.push(on(protocol, &ports));
    if rule.keep_established && rule.source.is_none() {
        words.push(
            match rule.ports.protocol {
                Protocol::Tcp => "tcp flags & (fin|syn|rst|ack) == syn",
                // Untracked too: a notrack rule of another table (raw
                // priority) would otherwise carry new flows past the drop.
                Protocol::Udp => "ct state new,untracked",
            }
            .to_owned(),
        );
    }
    if let Some(deadline) = rule.deadline {
        let operator = match rule.source {
            Some(_) => "<",
            None => ">=",
        };
        words.push(format!("meta time {operator} \"{}\"", nft_time(deadline)));
    }
    words.push(
        match rule.source {
            Some(_) => "return",
            None => "drop",
        }
        .to_owned(),
    );
    words.push(format!("comment \"{}\"", rule.tag()));
    words.join(" ")
}

/// A moment as nft reads and prints it (in UTC, as the runner has it).
fn nft_time(moment: KernelTime) -> String {
    moment.moment().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Puts what `held` says portlocker's table holds for `path`'s family in
/// place of what was read of it: as the next transaction writes it, its
/// base chain on the input hook, accepting what its rules leave alone.
pub fn place(config: &Config, path: &mut InputPath, held: &FamilyHoldings) {
    if let Some(index) = path
        .tables
        .iter()
        .position(|table| table.family == "inet" && table.name == "portlocker")
    {
        path.tables.remove(index);
        path.bases.retain(|base| base.table != index);
        for base in &mut path.bases {
            if base.table > index {
                base.table -= 1;
            }
        }
    }
    let Some(chain) = &held.chain else { return };
    // As `Listing::family` reads the base chain: hooked with a jump, or
    // dropping; not hooked; or on another hook (what it does there unknown).
    let policy = match held.input.policy.as_deref() {
        Some("DROP") => Policy::Drop,
        None => Policy::Accept,
        _ if held.input.rules.is_empty() => return,
        _ => Policy::Accept,
    };
    let elsewhere = held.input.policy.is_none();
    let family = path.family;
    let rules = chain
        .rules
        .iter()
        .map(|listed| {
            let mut rule = super::iptables::read::rule(CHAIN, &listed.spec, &|_| false);
            if let Some(ours) = rule_of(config, family, &listed.spec) {
                rule.text = nft_rule(&ours);
            }
            rule
        })
        .collect();
    let chain = match elsewhere {
        true => Chain::unread(format!("chain {CHAIN} of table {TABLE} is on another hook")),
        false => Chain::of(rules),
    };
    path.bases.push(ruleset::Base {
        table: path.tables.len(),
        chain: CHAIN.into(),
        hook: Hook::Input,
        priority: PRIORITY as i32,
        kind: ChainKind::Filter,
        policy,
        device: None,
    });
    path.tables.push(Table {
        name: "portlocker".into(),
        family: "inet".into(),
        tool: Tool::Nft,
        chains: [(CHAIN.to_owned(), chain)].into(),
    });
}

/// The command that deletes the nft rule `cited`, by its handle. None for
/// a rule about no port in particular (a default deny), or one without a
/// handle.
pub fn remedy(config: &Config, cited: &Cited) -> Option<Command> {
    let (Tool::Nft, Some(rule)) = (&cited.tool, &cited.rule) else {
        return None;
    };
    let handle = rule.handle.filter(|_| rule.names_ports)?;
    Some(Command {
        program: config.firewall.nft.clone(),
        args: [
            "delete",
            "rule",
            &cited.table_family,
            &cited.table,
            &cited.chain,
            "handle",
            &handle.to_string(),
        ]
        .map(String::from)
        .to_vec(),
        stdin: None,
    })
}

/// What `nft -j list table inet portlocker` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The table exists.
    pub table: bool,
    /// Its chain `input`, if it exists.
    pub base: Option<Base>,
    /// The rules of chain `input` in order, each with its family (None: it
    /// names none, so it applies to both) as the words it is read as.
    pub rules: Vec<(Option<Family>, Vec<String>)>,
    /// Whatever else the table holds (other chains, sets…), in words.
    pub others: Vec<String>,
    /// The table has flags portlocker never sets: `dormant`, under which
    /// none of its chains sees a packet.
    pub flagged: bool,
}

/// How chain `input` is declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// A base chain on the input hook, accepting what its rules leave alone:
    /// every new connection reaches it.
    Hooked,
    /// On the input hook, dropping what its rules leave alone.
    Dropping,
    /// Not a base chain: nothing reaches it.
    Unhooked,
    /// A base chain on another hook (prerouting, say), where its rules may
    /// drop what reaches input or not: what they do there is not evaluated.
    Elsewhere,
}

impl Listing {
    /// Reads nft's JSON; Err when it is not a listing.
    pub fn parse(text: &str, config: &Config) -> Result<Listing, String> {
        let mut listing = Listing::default();
        for object in json::objects(text)? {
            listing.take(object, config);
        }
        Ok(listing)
    }

    /// What nft's echo of a committed transaction (`nft -e -j -f`) says the
    /// table holds: the objects it added, each `{"add": …}`, read as a
    /// listing. Each table added begins it afresh: a script's first line
    /// adds the table only where it was missing, and the delete after it is
    /// not echoed. Err when it is not such an echo.
    pub fn echoed(text: &str, config: &Config) -> Result<Listing, String> {
        let mut listing = Listing::default();
        for object in json::objects(text)? {
            let added = match object {
                Object::Add(added) => *added,
                Object::Other(kind, _) if &*kind == "metainfo" => continue,
                other => return Err(format!("`{}` echoed, not an add", other.kind())),
            };
            if let Object::Table(table) = &added
                && ours(&table.family, &table.table, &table.name)
            {
                listing = Listing::default();
            }
            listing.take(added, config);
        }
        Ok(listing)
    }

    /// Takes in one object of a listing.
    fn take(&mut self, object: Object<'_>, config: &Config) {
        match object {
            Object::Table(table) if ours(&table.family, &table.table, &table.name) => {
                self.table = true;
                self.flagged |= table.flags.is_some();
            }
            Object::Chain(chain) if ours(&chain.family, &chain.table, &chain.name) => {
                match chain.name.as_deref().unwrap_or("?") {
                    CHAIN => self.base = Some(Base::of(&chain)),
                    name => self.others.push(format!("chain {name}")),
                }
            }
            // Rules of other chains go with their chain.
            Object::Rule(rule)
                if ours(&rule.family, &rule.table, &None) && text(&rule.chain) == CHAIN =>
            {
                self.rules.push(words_of(&rule, config));
            }
            Object::Other(kind, named)
                if &*kind != "metainfo" && ours(&named.family, &named.table, &named.name) =>
            {
                let name = named.name.as_deref().unwrap_or("?");
                self.others.push(format!("{} {name}", &*kind));
            }
            // Not asked for, so never there; or a rule of another chain.
            _ => {}
        }
    }

    /// What `family` holds, in the model's terms.
    pub fn family(&self, config: &Config, family: Family) -> FamilyHoldings {
        let mut held = FamilyHoldings::bare();
        if !self.table {
            return held;
        }
        if self.flagged {
            // Its rules decide nothing (a dormant table sees no packet): a
            // chain of drift alone, which the next transaction replaces
            // with a table of no flags.
            held.chain = Some(ChainRules {
                policy: None,
                rules: vec![unknown("table flags")],
            });
            return held;
        }
        let mut rules: Vec<Listed> = self
            .rules
            .iter()
            .filter(|(of, _)| of.is_none_or(|of| of == family))
            .map(|(_, words)| Listed::new(words.clone()))
            .collect();
        // Something else in the table: to go, as a rule that decides nothing.
        rules.extend(self.others.iter().map(|other| unknown(other)));
        // Rules of a family the config no longer manages (`ipv6 = false`)
        // are drift too, seen with the families it does manage.
        let unmanaged = self
            .rules
            .iter()
            .filter_map(|(of, _)| *of)
            .filter(|of| !config.families().contains(of));
        rules.extend(unmanaged.map(|of| unknown(&format!("rule of {of}, not managed"))));
        if self.base.is_none() && rules.is_empty() {
            return held;
        }
        match self.base {
            Some(Base::Hooked) => held.input.rules.push(jump(config)),
            Some(Base::Dropping) => held.input.policy = Some("DROP".into()),
            // No policy INPUT could tell: every port is unknown, not open.
            Some(Base::Elsewhere) => held.input.policy = None,
            Some(Base::Unhooked) | None => {}
        }
        held.chain = Some(ChainRules {
            policy: None,
            rules,
        });
        held
    }
}

/// Something in the table that is not portlocker's, as a rule of the
/// model that decides nothing and is to go.
fn unknown(what: &str) -> Listed {
    Listed::new(
        ["-m", "nft", "--comment", &format!("{UNKNOWN_TAG} {what}")]
            .map(String::from)
            .to_vec(),
    )
}

impl Base {
    fn of(chain: &json::Chain) -> Base {
        if chain.hook.is_none() {
            return Base::Unhooked;
        }
        if text(&chain.kind) != "filter" || text(&chain.hook) != "input" {
            return Base::Elsewhere;
        }
        match text(&chain.policy) {
            "drop" => Base::Dropping,
            _ => Base::Hooked,
        }
    }
}

/// Whether an object is of portlocker's table: of family inet, and of table
/// portlocker (the table itself: named so).
fn ours(family: &Option<json::Str>, table: &Option<json::Str>, name: &Option<json::Str>) -> bool {
    text(family) == "inet" && table.as_ref().or(name.as_ref()).map(|t| &**t) == Some("portlocker")
}

/// What one rule of an nft listing matches, as far as portlocker's rules go.
#[derive(Debug, Default)]
struct Matches {
    nfproto: Option<Family>,
    source: Option<IpNet>,
    protocol: Option<Protocol>,
    ports: Option<(u16, u16)>,
    syn: bool,
    new: bool,
    /// `<` or `>=`, and the moment.
    time: Option<(String, KernelTime)>,
    verdict: Option<String>,
    /// What the mirror's rules match instead of a port (`nft/forward.rs`):
    /// `ct status dnat`, `ct direction original`, and the ports of
    /// `ct original proto-dst`.
    dnat: bool,
    original_direction: bool,
    original_ports: Option<(u16, u16)>,
}

/// A listed nft rule as the words the model reads it as: those of the
/// rule portlocker makes that it is, or else the words of a rule of an
/// unknown service, which the planner removes and the verdicts cannot
/// count on. Its family: None when it names none.
fn words_of(listed: &json::Rule, config: &Config) -> (Option<Family>, Vec<String>) {
    let mut found = Matches::default();
    let known = listed
        .expr
        .iter()
        .all(|expression| found.take(expression).is_some());
    let family = found.family();
    if known
        && let Some(family) = family
        && let Some(rule) = found.rule(config, family, listed.comment.as_deref())
    {
        return (Some(family), rule.listed_spec());
    }
    let handle = listed.handle.unwrap_or(0);
    let mut words = ["-m", "nft", "--comment"].map(String::from).to_vec();
    words.push(format!("{UNKNOWN_TAG} rule {handle}"));
    if let Some(verdict) = listed.expr.last().and_then(verdict_word) {
        words.extend(["-j".to_owned(), verdict]);
    }
    (family, words)
}

/// A rule's last expression as the target the verdicts read after `-j`,
/// when it is a verdict: `ACCEPT`, `DROP`, `RETURN`, or for a jump the
/// chain's name (which may decide either way).
fn verdict_word(expression: &Expr) -> Option<String> {
    let Expr::Verdict { kind, target } = expression else {
        return None;
    };
    Some(match &**kind {
        "accept" | "drop" | "reject" | "return" => kind.to_uppercase(),
        "jump" | "goto" => format!("nft:{}", target.text()?),
        "queue" => "NFQUEUE".to_owned(),
        _ => return None,
    })
}

fn family_of(net: &IpNet) -> Family {
    match net {
        IpNet::V4(_) => Family::Ipv4,
        IpNet::V6(_) => Family::Ipv6,
    }
}

impl Matches {
    /// The family the rule names (by `meta nfproto`, or its source's
    /// address); None when it names none, or two.
    fn family(&self) -> Option<Family> {
        match (self.nfproto, self.source) {
            (Some(named), Some(source)) if family_of(&source) != named => None,
            (Some(named), _) => Some(named),
            (None, Some(source)) => Some(family_of(&source)),
            (None, None) => None,
        }
    }

    /// Takes in one expression; None when it is not one of portlocker's kinds.
    fn take(&mut self, expression: &Expr) -> Option<()> {
        if self.verdict.is_some() {
            // Nothing follows a verdict in portlocker's rules.
            return None;
        }
        let matched = match expression {
            Expr::Verdict { kind, .. } if matches!(&**kind, "drop" | "return" | "accept") => {
                self.verdict = Some(kind.to_string());
                return Some(());
            }
            Expr::Match(matched) => matched,
            _ => return None,
        };
        let (operator, right) = (matched.op.text()?, &matched.right);
        match &matched.left {
            Operand::Meta(key) => self.take_meta(key, operator, right),
            Operand::Payload {
                protocol: protocol_name,
                field,
            } if operator == "==" => match (&**protocol_name, &**field) {
                ("ip" | "ip6", "saddr") => self.take_source(protocol_name, right),
                ("tcp" | "udp", "dport") => self.take_ports(protocol_name, right),
                _ => None,
            },
            Operand::And(and) => self.take_syn(and, operator, right),
            Operand::Ct(key) if &**key == "state" => self.take_new(operator, right),
            // nft lists `ct status dnat` as a bit test (`in`).
            Operand::Ct(key) if matches!(operator, "==" | "in") => {
                let flag = match (&**key, right.text()?) {
                    ("status", "dnat") => &mut self.dnat,
                    ("direction", "original") => &mut self.original_direction,
                    _ => return None,
                };
                (!*flag).then(|| *flag = true)
            }
            Operand::CtOriginal(key) if &**key == "proto-dst" && operator == "==" => {
                let ports = port_span(right)?;
                set(&mut self.original_ports, ports)
            }
            _ => None,
        }
    }

    /// `meta nfproto`, `meta l4proto`, or the `meta time` of a deadline.
    fn take_meta(&mut self, key: &str, operator: &str, right: &Operand) -> Option<()> {
        match (key, operator) {
            ("nfproto", "==") => set(
                &mut self.nfproto,
                match right.text()? {
                    "ipv4" => Family::Ipv4,
                    "ipv6" => Family::Ipv6,
                    _ => return None,
                },
            ),
            ("l4proto", "==") => self.protocol(protocol(right.text()?)?),
            ("time", "<" | ">=") => {
                let moment = NaiveDateTime::parse_from_str(right.text()?, "%Y-%m-%d %H:%M:%S")
                    .ok()?
                    .and_utc();
                let moment = KernelTime::new(moment).ok()?;
                set(&mut self.time, (operator.to_owned(), moment))
            }
            _ => None,
        }
    }

    /// `ip saddr` or `ip6 saddr`, of an address of that family.
    fn take_source(&mut self, protocol_name: &str, right: &Operand) -> Option<()> {
        let net = address(right)?;
        let expected = match protocol_name {
            "ip" => Family::Ipv4,
            _ => Family::Ipv6,
        };
        (family_of(&net) == expected).then_some(())?;
        set(&mut self.source, net)
    }

    /// `tcp dport` or `udp dport`: one port or a range.
    fn take_ports(&mut self, protocol_name: &str, right: &Operand) -> Option<()> {
        self.protocol(protocol(protocol_name)?)?;
        let ports = port_span(right)?;
        set(&mut self.ports, ports)
    }

    /// tcp flags & (fin|syn|rst|ack) == syn
    fn take_syn(&mut self, and: &[Operand], operator: &str, right: &Operand) -> Option<()> {
        let [
            Operand::Payload {
                protocol: flags_of,
                field,
            },
            Operand::List(mask),
        ] = and
        else {
            return None;
        };
        let mask: Option<Vec<&str>> = mask.iter().map(Operand::text).collect();
        let syn = (&**flags_of, &**field) == ("tcp", "flags")
            && mask? == ["fin", "syn", "rst", "ack"]
            && operator == "=="
            && right.text()? == "syn";
        // It implies TCP: nft lists no `meta l4proto tcp` beside it.
        self.protocol(Protocol::Tcp)?;
        (syn && !self.syn).then(|| self.syn = true)
    }

    /// ct state new,untracked: `new` alone lets untracked packets past, so
    /// it is not a rule portlocker makes.
    fn take_new(&mut self, operator: &str, right: &Operand) -> Option<()> {
        let states: Option<Vec<&str>> = match right {
            Operand::List(states) => states.iter().map(Operand::text).collect(),
            _ => None,
        };
        let new = operator == "in" && states? == ["new", "untracked"];
        (new && !self.new).then(|| self.new = true)
    }

    fn protocol(&mut self, protocol: Protocol) -> Option<()> {
        match self.protocol {
            Some(known) if known != protocol => None,
            _ => {
                self.protocol = Some(protocol);
                Some(())
            }
        }
    }

    /// The rule portlocker makes that these matches are, if they are one.
    fn rule(&self, config: &Config, family: Family, comment: Option<&str>) -> Option<Rule> {
        let mirrored = self.dnat || self.original_direction || self.original_ports.is_some();
        match mirrored {
            true => None,
            false => self.rule_on(config, family, comment, self.ports?),
        }
    }

    /// The rule of portlocker's that these matches mirror onto the forward
    /// path (`forward::nft_rule`), if they are one.
    fn mirrored(&self, config: &Config, family: Family, comment: Option<&str>) -> Option<Rule> {
        match self.dnat && self.original_direction && self.ports.is_none() {
            true => self.rule_on(config, family, comment, self.original_ports?),
            false => None,
        }
    }

    /// The rule these matches are, for a rule on ports `first..=last`.
    fn rule_on(
        &self,
        config: &Config,
        family: Family,
        comment: Option<&str>,
        (first, last): (u16, u16),
    ) -> Option<Rule> {
        let service = ServiceName::new(comment?.strip_prefix("portlocker:")?).ok()?;
        let protocol = self.protocol?;
        let ports = PortSpec::parse(&format!("{first}-{last}/{}", protocol.as_str())).ok()?;
        let keep_established = match (protocol, self.syn, self.new) {
            (_, false, false) => false,
            (Protocol::Tcp, true, false) | (Protocol::Udp, false, true) => true,
            _ => return None,
        };
        let wanted_time = match self.source {
            Some(_) => "<",
            None => ">=",
        };
        let deadline = match &self.time {
            Some((operator, moment)) if operator == wanted_time => Some(*moment),
            Some(_) => return None,
            None => None,
        };
        let verdict = match self.source {
            Some(_) => "return",
            None => "drop",
        };
        if self.verdict.as_deref() != Some(verdict) || (self.source.is_some() && keep_established) {
            return None;
        }
        Some(Rule {
            family,
            chain: config.firewall.chain.clone(),
            service,
            ports,
            // A source rule lets its source in however the DROPs are made.
            keep_established: match self.source {
                Some(_) => config.firewall.keep_established,
                None => keep_established,
            },
            source: self.source,
            deadline,
        })
    }
}

/// `tcp` or `udp`.
fn protocol(name: &str) -> Option<Protocol> {
    match name {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        _ => None,
    }
}

/// One port or a range, as nft lists it: `22`, `{"range": [8000, 8010]}`.
fn port_span(value: &Operand) -> Option<(u16, u16)> {
    let port = |operand: &Operand| match operand {
        Operand::Number(port) => u16::try_from(*port).ok(),
        _ => None,
    };
    match value {
        Operand::Range(bounds) => match &bounds[..] {
            [first, last] => Some((port(first)?, port(last)?)),
            _ => None,
        },
        single => Some((port(single)?, port(single)?)),
    }
}

/// An address or network as nft lists it: `192.0.2.1`, or
/// `{"prefix": {"addr": "198.51.100.0", "len": 24}}`.
fn address(value: &Operand) -> Option<IpNet> {
    let (address, length) = match value {
        Operand::Text(text) => return text.parse::<std::net::IpAddr>().ok().map(IpNet::from),
        Operand::Prefix { addr, len } => (addr, len),
        _ => return None,
    };
    let address: std::net::IpAddr = address.parse().ok()?;
    let net = IpNet::new(address, u8::try_from(*length).ok()?).ok()?;
    (net.trunc() == net).then_some(net)
}

/// Sets `slot` once; None when it was set already.
fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

/// The line number in an nft refusal: `/dev/stdin:6:42-45: Error: …`.
fn refused_line(stderr: &str) -> Option<usize> {
    refused_lines(stderr).into_iter().next()
}

/// Every line an nft refusal names, in order.
fn refused_lines(stderr: &str) -> Vec<usize> {
    let named = stderr.lines().filter_map(|line| {
        let (place, _) = line.split_once(": Error:")?;
        let parts: Vec<&str> = place.rsplitn(3, ':').collect();
        parts.get(1)?.parse().ok()
    });
    named.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Exit;
    use crate::firewall::plan::{SourcesSeen, plan};
    use chrono::{DateTime, Utc};
    use std::collections::BTreeMap;

    fn config() -> Config {
        Config::parse(
            "source = \"-\"\n[firewall]\nbackend = \"nftables\"\n\
             [services]\nssh = 22\nmosh = \"60000-61000/udp\"\nvpn = \"1194/udp\"\n",
        )
        .unwrap()
    }

    fn moment(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn rule(config: &Config, family: Family, service: &str) -> Rule {
        crate::firewall::model::rules_of(config, family)
            .find(|rule| rule.service.as_str() == service)
            .unwrap()
    }

    /// A table of every kind of rule: sources with and without deadlines,
    /// DROPs with and without, TCP and UDP, a port range, both families.
    fn every_kind(config: &Config) -> Vec<Change> {
        let v4 = |service| rule(config, Family::Ipv4, service);
        let v6 = |service| rule(config, Family::Ipv6, service);
        let deadline = Some(KernelTime::new(moment("2026-12-01T18:00:00Z")).unwrap());
        let net = |text: &str| text.parse::<IpNet>().unwrap();
        vec![
            Change::NewChain {
                family: Family::Ipv4,
                chain: config.firewall.chain.clone(),
            },
            Change::InsertJump {
                family: Family::Ipv4,
                chain: config.firewall.chain.clone(),
                tag: JumpTag::A,
            },
            Change::Append(v4("ssh").until(deadline)),
            Change::Append(v4("ssh").letting(net("198.51.100.0/24"))),
            Change::Append(v4("ssh").letting(net("127.0.0.2/32")).until(deadline)),
            Change::Append(v4("mosh")),
            Change::NewChain {
                family: Family::Ipv6,
                chain: config.firewall.chain.clone(),
            },
            Change::InsertJump {
                family: Family::Ipv6,
                chain: config.firewall.chain.clone(),
                tag: JumpTag::A,
            },
            Change::Append(v6("ssh").letting(net("2001:db8::/48"))),
            Change::Append(v6("ssh")),
            Change::Append(Rule {
                keep_established: false,
                ..v6("vpn")
            }),
        ]
    }

    fn bare(config: &Config) -> Holdings {
        let mut holdings = Holdings::unknown(config);
        for held in holdings.families.values_mut() {
            *held = Some(FamilyHoldings::bare());
        }
        holdings
    }

    fn record(config: &Config, holdings: &Holdings, changes: &[Change]) -> Holdings {
        let mut after = holdings.clone();
        for change in changes {
            after.record(config, change);
        }
        after
    }

    fn wants(config: &Config, text: &str) -> BTreeMap<ServiceName, crate::intake::intent::Want> {
        crate::intake::intent::wants_of(config, text)
    }

    fn plan_of(
        config: &Config,
        wants: &BTreeMap<ServiceName, crate::intake::intent::Want>,
        holdings: &Holdings,
    ) -> Vec<Change> {
        plan(config, wants, holdings, &SourcesSeen::new())
            .into_iter()
            .map(|step| step.change)
            .collect()
    }

    /// The listing of a table that `nft -f` made from `every_kind`'s script,
    /// as nft 1.0.6 printed it.
    const EVERY_KIND: &str = include_str!("../../../tests/fixtures/nft-every-kind.json");

    /// What nft 1.0.6 printed on committing that script with `-e -j` where
    /// the table did not exist: the table added by the first line, and again
    /// after the delete (not echoed), with its chain and rules.
    const EVERY_KIND_ECHO: &str = include_str!("../../../tests/fixtures/nft-every-kind-echo.json");

    /// That table after hand edits: an untagged accept first, an untagged
    /// rule with a counter, a tagged rule with a log, a rule of a service
    /// the config lacks, another chain and a set.
    const DRIFT: &str = include_str!("../../../tests/fixtures/nft-drift.json");

    fn listed(config: &Config, json: &str) -> Holdings {
        let listing = Listing::parse(json, config).unwrap();
        let mut holdings = Holdings::unknown(config);
        for (&family, held) in holdings.families.iter_mut() {
            *held = Some(listing.family(config, family));
        }
        holdings
    }

    #[test]
    fn the_script_for_every_kind_of_rule() {
        let config = config();
        let changes = every_kind(&config);
        let refs: Vec<&Change> = changes.iter().collect();
        let after = record(&config, &bare(&config), &changes);
        let script = script(&config, &after, &refs).unwrap();
        assert_eq!(
            script.text,
            "table inet portlocker\n\
             delete table inet portlocker\n\
             table inet portlocker {\n  chain input {\n    type filter hook input priority -10; policy accept;\n    \
             meta nfproto ipv4 ip saddr 127.0.0.2/32 tcp dport 22 meta time < \"2026-12-01 18:00:00\" return comment \"portlocker:ssh\"\n    \
             meta nfproto ipv4 ip saddr 198.51.100.0/24 tcp dport 22 return comment \"portlocker:ssh\"\n    \
             meta nfproto ipv4 tcp dport 22 tcp flags & (fin|syn|rst|ack) == syn meta time >= \"2026-12-01 18:00:00\" drop comment \"portlocker:ssh\"\n    \
             meta nfproto ipv4 udp dport 60000-61000 ct state new,untracked drop comment \"portlocker:mosh\"\n    \
             meta nfproto ipv6 ip6 saddr 2001:db8::/48 tcp dport 22 return comment \"portlocker:ssh\"\n    \
             meta nfproto ipv6 tcp dport 22 tcp flags & (fin|syn|rst|ack) == syn drop comment \"portlocker:ssh\"\n    \
             meta nfproto ipv6 udp dport 1194 drop comment \"portlocker:vpn\"\n  }\n}\n"
        );
        assert_eq!(script.about(2), "table inet portlocker as it was");
        assert_eq!(
            script.about(6),
            "IPv4: open ssh 22/tcp to 127.0.0.2/32 until 2026-12-01 18:00 +00:00"
        );
        assert_eq!(script.about(9), "IPv4: close mosh 60000-61000/udp");
    }

    #[test]
    fn a_real_listing_of_that_script_reads_as_the_same_holdings() {
        let config = config();
        let changes = every_kind(&config);
        let written = normalized(&config, record(&config, &bare(&config), &changes));
        assert_eq!(listed(&config, EVERY_KIND), written);
        // And each rule's words lead back to the rule.
        for change in &changes {
            if let Change::Append(rule) = change {
                assert_eq!(
                    rule_of(&config, rule.family, &rule.listed_spec()).as_ref(),
                    Some(rule)
                );
            }
        }
    }

    #[test]
    fn what_a_plan_writes_reads_back_with_nothing_left_to_do() {
        let config = config();
        let texts = [
            "close ssh\nclose mosh\nclose vpn\n",
            "open ssh from 203.0.113.7\nopen ssh from 2001:db8::1\nclose mosh\n",
            "open ssh until 2026-12-01T18:00:00Z\nopen vpn from 127.0.0.2 until 2026-12-01T18:00:00Z\n",
            "open ssh\nopen mosh\nopen vpn\n",
        ];
        for start in [
            bare(&config),
            listed(&config, EVERY_KIND),
            listed(&config, DRIFT),
        ] {
            for text in texts {
                let wants = wants(&config, text);
                let changes = plan_of(&config, &wants, &start);
                let after = record(&config, &start, &changes);
                let refs: Vec<&Change> = changes.iter().collect();
                script(&config, &after, &refs).unwrap_or_else(|error| panic!("{text}: {error}"));
                let again = normalized(&config, after);
                assert_eq!(plan_of(&config, &wants, &again), [], "{text}");
            }
        }
    }

    #[test]
    fn anything_in_the_table_not_portlockers_is_drift_and_goes() {
        use crate::firewall::model::PortState;
        use crate::firewall::truth::held_state as service_state;
        let config = config();
        // After the deadline of the ssh DROP in the table.
        let now = moment("2026-12-02T12:00:00Z");
        let holdings = listed(&config, DRIFT);
        let v4 = holdings.family(Family::Ipv4).unwrap();
        let words: Vec<String> = v4
            .chain
            .as_ref()
            .unwrap()
            .rules
            .iter()
            .map(|rule| rule.shown("PORTLOCKER"))
            .collect();
        for unknown in [
            "-A PORTLOCKER -m nft --comment \"portlocker:? rule 10\" -j ACCEPT",
            "-A PORTLOCKER -m nft --comment \"portlocker:? rule 9\" -j DROP",
            "-A PORTLOCKER -m nft --comment \"portlocker:? rule 11\" -j DROP",
            "-A PORTLOCKER -p tcp -m tcp --dport 80 -m comment --comment portlocker:web -j DROP",
            "-A PORTLOCKER -m nft --comment \"portlocker:? set blocked\"",
            "-A PORTLOCKER -m nft --comment \"portlocker:? chain foo\"",
        ] {
            assert!(
                words.iter().any(|word| word == unknown),
                "{unknown} not in {words:#?}"
            );
        }
        // The untagged rule without a family is in both.
        let v6 = holdings.family(Family::Ipv6).unwrap();
        assert!(
            v6.tagged(&config)
                .any(|rule| rule.tag() == Some("portlocker:? rule 9"))
        );
        // An accept of unknown reach first: ssh cannot be said to be closed.
        let ssh = ServiceName::new("ssh").unwrap();
        assert_eq!(
            service_state(&config, v4, Family::Ipv4, &ssh, now),
            PortState::Unknown
        );

        let wants = wants(&config, "close ssh\n");
        let changes = plan_of(&config, &wants, &holdings);
        let after = record(&config, &holdings, &changes);
        let refs: Vec<&Change> = changes.iter().collect();
        let text = script(&config, &after, &refs).unwrap().text;
        for gone in ["10.0.0.0/8", "counter", "log", "dport 80", "blocked", "foo"] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
        let after = normalized(&config, after);
        for family in [Family::Ipv4, Family::Ipv6] {
            let held = after.family(family).unwrap();
            assert_eq!(
                service_state(&config, held, family, &ssh, now),
                PortState::Closed
            );
        }
        assert_eq!(plan_of(&config, &wants, &after), []);
    }

    /// A dormant table's chains see no packet: whatever its rules say, it
    /// closes nothing, and the next transaction writes a table of no flags.
    /// (nft 1.0.6 lists the flag as `"flags": "portlocker"`.)
    #[test]
    fn a_dormant_table_closes_nothing_and_is_written_anew() {
        use crate::firewall::model::PortState;
        use crate::firewall::truth::held_state as service_state;
        let config = config();
        let now = moment("2026-12-01T12:00:00Z");
        let ssh = ServiceName::new("ssh").unwrap();
        let wants = wants(&config, "close ssh\n");
        let json = EVERY_KIND.replacen(
            "\"name\": \"portlocker\", \"handle\"",
            "\"name\": \"portlocker\", \"flags\": \"portlocker\", \"handle\"",
            1,
        );
        assert_ne!(json, EVERY_KIND);
        let dormant = listed(&config, &json);
        for family in [Family::Ipv4, Family::Ipv6] {
            let held = dormant.family(family).unwrap();
            assert!(
                held.tagged(&config)
                    .all(|rule| rule.tag() == Some("portlocker:? table flags"))
            );
            assert_eq!(
                service_state(&config, held, family, &ssh, now),
                PortState::Open
            );
        }
        let changes = plan_of(&config, &wants, &dormant);
        assert!(!changes.is_empty());
        let after = record(&config, &dormant, &changes);
        let refs: Vec<&Change> = changes.iter().collect();
        let text = script(&config, &after, &refs).unwrap().text;
        assert!(
            text.starts_with("table inet portlocker\ndelete table inet portlocker\n"),
            "{text}"
        );
        assert!(
            !text
                .lines()
                .any(|line| line.trim_start().starts_with("flags")),
            "{text}"
        );
    }

    /// With `ipv6 = false`, the table's IPv6 rules are no longer the
    /// config's: drift, gone with the next transaction.
    #[test]
    fn rules_of_a_family_no_longer_managed_go() {
        let config = config();
        let mut v4_only = config.clone();
        v4_only.firewall.ipv6 = false;
        let mut fake = FakeNft::default();
        run_once(&config, &mut fake, "close ssh\n");
        assert!(fake.table.as_deref().unwrap().contains("ipv6"));
        let (_, applied) = run_once(&v4_only, &mut fake, "close ssh\n");
        assert!(!applied.made.is_empty(), "the IPv6 rules would stay");
        let table = fake.table.as_deref().unwrap();
        assert!(!table.contains("ipv6"), "{table}");
        assert!(table.contains("portlocker:ssh"), "{table}");
        let (_, again) = run_once(&v4_only, &mut fake, "close ssh\n");
        assert!(again.made.is_empty(), "it converges");
    }

    /// Chain `input` moved to another hook still drops there: what it
    /// does is not evaluated, so no port is said open — and it is put back.
    #[test]
    fn a_chain_on_another_hook_leaves_every_port_unknown_until_put_back() {
        use crate::firewall::model::PortState;
        use crate::firewall::truth::held_state as service_state;
        let config = config();
        let json = EVERY_KIND.replace("\"hook\": \"input\"", "\"hook\": \"prerouting\"");
        assert_ne!(json, EVERY_KIND);
        let holdings = listed(&config, &json);
        let now = moment("2026-12-01T12:00:00Z");
        for service in config.services.keys() {
            let held = holdings.family(Family::Ipv4).unwrap();
            assert_eq!(
                service_state(&config, held, Family::Ipv4, service, now),
                PortState::Unknown,
                "{service}"
            );
        }
        let wants = wants(&config, "close ssh\n");
        let changes = plan_of(&config, &wants, &holdings);
        let after = normalized(&config, record(&config, &holdings, &changes));
        let ssh = ServiceName::new("ssh").unwrap();
        let held = after.family(Family::Ipv4).unwrap();
        assert_eq!(
            service_state(&config, held, Family::Ipv4, &ssh, now),
            PortState::Closed
        );
    }

    #[test]
    fn a_base_chain_that_drops_by_default_is_read_so_and_put_back() {
        use crate::firewall::model::PortState;
        use crate::firewall::truth::held_state as service_state;
        let config = config();
        let json = EVERY_KIND.replace("\"policy\": \"accept\"", "\"policy\": \"drop\"");
        assert_ne!(json, EVERY_KIND);
        let holdings = listed(&config, &json);
        let held = holdings.family(Family::Ipv6).unwrap();
        // Everything is dropped, ssh from its source included.
        let mosh = ServiceName::new("mosh").unwrap();
        assert_eq!(
            service_state(
                &config,
                held,
                Family::Ipv6,
                &mosh,
                moment("2026-11-25T12:00:00Z")
            ),
            PortState::Closed
        );
        let wants = wants(&config, "open mosh\n");
        let changes = plan_of(&config, &wants, &holdings);
        assert!(
            changes
                .iter()
                .any(|change| matches!(change, Change::InsertJump { .. })),
            "{changes:?}"
        );
        let refs: Vec<&Change> = changes.iter().collect();
        assert!(
            describe(&refs)
                .iter()
                .any(|line| line.contains("back on the input hook"))
        );
        let after = record(&config, &holdings, &changes);
        let text = script(&config, &after, &refs).unwrap().text;
        assert!(text.contains("policy accept;"), "{text}");
    }

    #[test]
    fn a_rule_in_a_form_portlocker_does_not_write_is_drift() {
        let config = config();
        let unknown = |listing: &Listing| {
            listing
                .rules
                .iter()
                .filter(|(_, words)| words.iter().any(|word| word.starts_with(UNKNOWN_TAG)))
                .count()
        };
        let whole = Listing::parse(EVERY_KIND, &config).unwrap();
        assert_eq!(unknown(&whole), 0);
        for (form, instead) in [
            // A range of three bounds once read as the first two.
            (
                "\"range\": [60000, 61000]",
                "\"range\": [60000, 61000, 62000]",
            ),
            ("\"right\": 1194}", "\"right\": {\"set\": [1194]}}"),
            ("\"right\": 1194}", "\"right\": 1194.0}"),
            (
                "[\"fin\", \"syn\", \"rst\", \"ack\"]",
                "[\"fin\", \"syn\", \"rst\", \"ack\", 1]",
            ),
            ("{\"drop\": null}", "{\"drop\": null, \"log\": null}"),
            ("{\"drop\": null}", "\"drop\""),
            ("\"op\": \"==\"", "\"op\": [\"==\"]"),
        ] {
            assert!(EVERY_KIND.contains(form), "{form}");
            let json = EVERY_KIND.replacen(form, instead, 1);
            let listing = Listing::parse(&json, &config).unwrap();
            assert_eq!(listing.rules.len(), whole.rules.len(), "{instead}");
            assert_eq!(unknown(&listing), 1, "{instead}: {listing:#?}");
        }
    }

    #[test]
    fn listings_that_are_not_a_listing_are_refused() {
        let config = config();
        assert!(Listing::parse("", &config).is_err());
        assert!(Listing::parse("{\"rules\": []}", &config).is_err());
        let empty = Listing::parse("{\"nftables\": [{\"metainfo\": {}}]}", &config).unwrap();
        assert_eq!(empty, Listing::default());
    }

    #[test]
    fn refusals_name_their_line() {
        assert_eq!(
            refused_line("/dev/stdin:6:42-45: Error: syntax error, unexpected drop\n    x\n"),
            Some(6)
        );
        assert_eq!(
            refused_line(
                "/dev/stdin:9:30-35: Error: Could not process rule: No such file or directory"
            ),
            Some(9)
        );
        assert_eq!(refused_line("Error: No such file or directory"), None);
        assert_eq!(
            refused_lines(
                "/dev/stdin:6:1-4: Error: syntax error\n    x\n/dev/stdin:9:2-3: Error: syntax error\n"
            ),
            [6, 9]
        );
    }

    /// nft as the unit tests need it: a table to list, scripts to take, and
    /// what `-e -j -f -` echoes.
    #[derive(Default)]
    struct FakeNft {
        /// What `list table` prints; None: there is no table.
        table: Option<String>,
        /// What `list chains` prints; None: no chain of another table.
        chains: Option<String>,
        /// What `-f -` says on refusing; None: it takes every script.
        refusal: Option<String>,
        /// Refuses a script with a line holding this, naming that line.
        refuse_holding: Option<String>,
        /// Refuses a script of more lines than this, as netlink refuses a
        /// batch too big for its buffer: naming no line.
        refuse_longer_than: Option<usize>,
        echo: Echo,
        calls: Vec<String>,
        scripts: Vec<String>,
    }

    /// What `nft -e -j -f -` does with a script it takes. (`nft -f -` only
    /// takes it.)
    #[derive(Default)]
    enum Echo {
        /// Makes the table as real nft does, and echoes it as nft 1.0.6 does.
        #[default]
        Faithful,
        /// Makes the table, but prints this instead of its echo.
        Prints(String),
        /// Makes nothing, prints this, and says it succeeded: a lying nft.
        Lies(String),
    }

    impl Runner for FakeNft {
        fn run(&mut self, command: &Command) -> std::io::Result<Completion> {
            use crate::sys::runner::Termination;
            self.calls.push(command.to_string());
            let done = |code, stdout: &str, stderr: &str| Completion {
                termination: Termination::Code(code),
                stdout: stdout.to_owned(),
                stderr: stderr.to_owned(),
            };
            let script = command.stdin.clone().unwrap_or_default();
            Ok(
                match command.args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                    ["-j", "list", "table", "inet", "portlocker"] => match &self.table {
                        Some(table) => done(0, table, ""),
                        None => done(
                            1,
                            "",
                            "Error: No such file or directory\nlist table inet portlocker\n",
                        ),
                    },
                    ["-j", "list", "chains"] => done(0, &self.all_chains(), ""),
                    // No Docker here: the mirror's table is never made.
                    ["-j", "list", "table", "inet", "portlocker-fwd"] => done(
                        1,
                        "",
                        "Error: No such file or directory\nlist table inet portlocker-fwd\n",
                    ),
                    ["-f", "-"] | ["-e", "-j", "-f", "-"] if self.refusal.is_some() => {
                        done(1, "", self.refusal.as_deref().unwrap())
                    }
                    ["-f", "-"] | ["-e", "-j", "-f", "-"]
                        if self
                            .refuse_longer_than
                            .is_some_and(|most| script.lines().count() > most) =>
                    {
                        done(
                            1,
                            "",
                            "netlink: Error: Could not process rule: Message too long\n",
                        )
                    }
                    ["-f", "-"] | ["-e", "-j", "-f", "-"]
                        if let Some(line) = self.refused_line(&script) =>
                    {
                        let said = format!("/dev/stdin:{line}:5-9: Error: refused (fake)\n");
                        done(1, "", &said)
                    }
                    ["-f", "-"] => {
                        self.scripts.push(script);
                        done(0, "", "")
                    }
                    ["-e", "-j", "-f", "-"] => {
                        self.scripts.push(script.clone());
                        let (table, echo) = committed(self.table.is_some(), &script);
                        match &self.echo {
                            Echo::Faithful => {
                                self.table = table;
                                done(0, &echo, "")
                            }
                            Echo::Prints(text) => {
                                self.table = table;
                                done(0, text, "")
                            }
                            Echo::Lies(text) => done(0, text, ""),
                        }
                    }
                    _ => done(2, "", "the fake does not know that"),
                },
            )
        }
    }

    impl FakeNft {
        /// The first line of `script` holding `refuse_holding`, 1-based.
        fn refused_line(&self, script: &str) -> Option<usize> {
            let text = self.refuse_holding.as_deref()?;
            script
                .lines()
                .position(|line| line.contains(text))
                .map(|at| at + 1)
        }

        /// What `list chains` prints: the chains of portlocker's table, as
        /// real nft lists them with every other, then `chains`.
        fn all_chains(&self) -> String {
            use serde_json::Value;
            let objects = |text: &Option<String>| -> Vec<Value> {
                text.as_deref()
                    .and_then(|text| serde_json::from_str::<Value>(text).ok())
                    .and_then(|value| value.get("nftables")?.as_array().cloned())
                    .unwrap_or_default()
            };
            let mut all: Vec<Value> = objects(&self.table)
                .into_iter()
                .filter(|object| object.get("chain").is_some())
                .collect();
            all.extend(objects(&self.chains));
            serde_json::json!({ "nftables": all }).to_string()
        }
    }

    /// What real nft makes of a script of portlocker's (`script`'s output)
    /// when the table exists or not: the table's listing after it (None: no
    /// table), and the echo, both as nft 1.0.6 prints them.
    fn committed(exists: bool, script: &str) -> (Option<String>, String) {
        use serde_json::{Value, json};
        let mut exists = exists;
        let mut table: Vec<Value> = Vec::new();
        let mut echo: Vec<Value> = Vec::new();
        let mut handles = 0..;
        for line in script.lines().map(str::trim) {
            let object = match line {
                "table inet portlocker" | "table inet portlocker {" if exists => continue,
                "table inet portlocker" | "table inet portlocker {" => {
                    exists = true;
                    table.clear();
                    json!({"table": {"family": "inet", "name": "portlocker", "handle": handles.next()}})
                }
                "delete table inet portlocker" => {
                    exists = false;
                    table.clear();
                    continue;
                }
                "chain input {" | "}" => continue,
                BASE => json!({"chain": {
                    "family": "inet", "table": "portlocker", "name": "input",
                    "handle": handles.next(), "type": "filter", "hook": "input",
                    "prio": PRIORITY, "policy": "accept"
                }}),
                rule => json_rule(rule, handles.next().unwrap()),
            };
            table.push(object.clone());
            echo.push(json!({ "add": object }));
        }
        let metainfo = json!({"metainfo": {"version": "1.0.6", "json_schema_version": 1}});
        let listing = exists.then(|| {
            json!({"nftables": std::iter::once(metainfo).chain(table).collect::<Vec<_>>()})
                .to_string()
        });
        // Real nft prints nothing when it has nothing to echo.
        let echo = match echo.is_empty() {
            true => String::new(),
            false => json!({ "nftables": echo }).to_string(),
        };
        (listing, echo)
    }

    /// One rule line of portlocker's script as nft 1.0.6 lists it: `meta
    /// nfproto` goes where a source match implies it, and a source of one
    /// address loses its /32 or /128.
    fn json_rule(line: &str, handle: u64) -> serde_json::Value {
        use serde_json::{Value, json};
        let mut words: Vec<String> = Vec::new();
        let mut quoted = false;
        for (index, part) in line.split('"').enumerate() {
            match quoted {
                true => words.push(part.to_owned()),
                false => words.extend(part.split_whitespace().map(str::to_owned)),
            }
            quoted = index % 2 == 0;
        }
        let matched = |left: Value, op: &str, right: Value| json!({"match": {"op": op, "left": left, "right": right}});
        let payload = |protocol: &str, field: &str| json!({"payload": {"protocol": protocol, "field": field}});
        let (mut expr, mut nfproto, mut source, mut comment) = (Vec::new(), None, false, None);
        let mut at = 0;
        while at < words.len() {
            let word = |offset: usize| words[at + offset].as_str();
            at += match (word(0), words.get(at + 1).map(String::as_str)) {
                ("meta", Some("nfproto")) => {
                    nfproto = Some(matched(
                        json!({"meta": {"key": "nfproto"}}),
                        "==",
                        json!(word(2)),
                    ));
                    3
                }
                ("meta", Some("time")) => {
                    expr.push(matched(
                        json!({"meta": {"key": "time"}}),
                        word(2),
                        json!(word(3)),
                    ));
                    4
                }
                (protocol @ ("ip" | "ip6"), Some("saddr")) => {
                    let net: IpNet = word(2).parse().unwrap();
                    let right = match net.prefix_len() == net.max_prefix_len() {
                        true => json!(net.addr().to_string()),
                        false => {
                            json!({"prefix": {"addr": net.addr().to_string(), "len": net.prefix_len()}})
                        }
                    };
                    expr.push(matched(payload(protocol, "saddr"), "==", right));
                    source = true;
                    3
                }
                (protocol @ ("tcp" | "udp"), Some("dport")) => {
                    let port = |text: &str| text.parse::<u16>().unwrap();
                    let right = match word(2).split_once('-') {
                        Some((first, last)) => json!({"range": [port(first), port(last)]}),
                        None => json!(port(word(2))),
                    };
                    expr.push(matched(payload(protocol, "dport"), "==", right));
                    3
                }
                ("tcp", Some("flags")) => {
                    assert_eq!(
                        words[at + 2..at + 6],
                        ["&", "(fin|syn|rst|ack)", "==", "syn"]
                    );
                    let flags =
                        json!({"&": [payload("tcp", "flags"), ["fin", "syn", "rst", "ack"]]});
                    expr.push(matched(flags, "==", json!("syn")));
                    6
                }
                ("ct", Some("state")) => {
                    assert_eq!(word(2), "new,untracked");
                    let states = json!(["new", "untracked"]);
                    expr.push(matched(json!({"ct": {"key": "state"}}), "in", states));
                    3
                }
                (verdict @ ("drop" | "return" | "accept"), _) => {
                    expr.push(json!({ verdict: null }));
                    1
                }
                ("comment", Some(text)) => {
                    comment = Some(text.to_owned());
                    2
                }
                (other, _) => panic!("the fake nft does not know `{other}` in {line}"),
            };
        }
        if let (Some(nfproto), false) = (nfproto, source) {
            expr.insert(0, nfproto);
        }
        let mut rule = json!({
            "family": "inet", "table": "portlocker", "chain": "input", "handle": handle, "expr": expr
        });
        if let Some(comment) = comment {
            rule["comment"] = json!(comment);
        }
        json!({ "rule": rule })
    }

    #[test]
    fn the_fake_nft_makes_and_echoes_what_real_nft_does() {
        let config = config();
        let changes = every_kind(&config);
        let refs: Vec<&Change> = changes.iter().collect();
        let after = record(&config, &bare(&config), &changes);
        let text = script(&config, &after, &refs).unwrap().text;
        let (table, echo) = committed(false, &text);
        let real = Listing::parse(EVERY_KIND, &config).unwrap();
        assert_eq!(Listing::parse(&table.unwrap(), &config).unwrap(), real);
        assert_eq!(Listing::echoed(&echo, &config).unwrap(), real);
        assert_eq!(
            Listing::echoed(EVERY_KIND_ECHO, &config).unwrap(),
            real,
            "real nft's echo"
        );
        // Where the table exists, the script's first line adds nothing.
        let (_, again) = committed(true, &text);
        assert_eq!(again.matches("{\"table\":{").count(), 1);
        assert_eq!(Listing::echoed(&again, &config).unwrap(), real);
    }

    fn run_once(config: &Config, fake: &mut FakeNft, text: &str) -> (Holdings, Applied) {
        let mut nft = Nft::new(config, fake);
        let (mut holdings, errors) = nft.observe(false);
        let steps = plan(config, &wants(config, text), &holdings, &SourcesSeen::new());
        let mut applied = nft.apply(&steps, &mut holdings);
        applied.errors.splice(0..0, errors);
        (holdings, applied)
    }

    #[test]
    fn a_run_writes_one_script_and_a_run_with_nothing_to_do_writes_none() {
        let config = config();
        let mut fake = FakeNft::default();
        let (holdings, applied) = run_once(&config, &mut fake, "close ssh\n");
        assert!(applied.errors.is_empty(), "{:?}", applied.errors);
        assert_eq!(fake.scripts.len(), 1);
        assert!(
            fake.calls[1].ends_with("nft -e -j -f -"),
            "{:?}",
            fake.calls
        );
        assert!(fake.scripts[0].contains("meta nfproto ipv6 tcp dport 22"));

        // The table as nft would list it again: nothing to write.
        let mut again = Nft::new(&config, &mut fake);
        let steps = plan(
            &config,
            &wants(&config, "close ssh\n"),
            &holdings,
            &SourcesSeen::new(),
        );
        assert_eq!(steps, []);
        let mut same = holdings.clone();
        assert!(again.apply(&steps, &mut same).made.is_empty());
        assert_eq!(fake.scripts.len(), 1);
    }

    /// `nft -j list chains` where Docker is and another table drops by default.
    const OTHERS: &str = "{\"nftables\": [\
        {\"chain\": {\"family\": \"ip\", \"table\": \"filter\", \"name\": \"DOCKER-USER\", \"handle\": 1}}, \
        {\"chain\": {\"family\": \"inet\", \"table\": \"filter\", \"name\": \"input\", \"handle\": 2, \
          \"type\": \"filter\", \"hook\": \"input\", \"prio\": 0, \"policy\": \"drop\"}}]}";

    fn nft_processes(fake: &FakeNft) -> Vec<&str> {
        fake.calls
            .iter()
            .map(|call| call.strip_prefix("/usr/sbin/nft ").unwrap())
            .collect()
    }

    #[test]
    fn a_committed_change_is_read_from_the_echo_with_no_second_listing() {
        let config = config();
        for start in [None, Some(EVERY_KIND.to_owned())] {
            let mut fake = FakeNft {
                table: start.clone(),
                chains: Some(OTHERS.to_owned()),
                ..FakeNft::default()
            };
            let mut nft = Nft::new(&config, &mut fake);
            let (mut holdings, errors) = nft.observe(true);
            let wants = wants(&config, "close ssh\nopen mosh from 192.0.2.1\nopen vpn\n");
            let steps = plan(&config, &wants, &holdings, &SourcesSeen::new());
            let applied = nft.apply(&steps, &mut holdings);
            assert!(errors.is_empty() && applied.errors.is_empty());
            assert!(!applied.made.is_empty());
            let confirmed = applied.confirmed.expect("read from the echo");
            assert_eq!(
                nft_processes(&fake),
                [
                    "-j list table inet portlocker",
                    "-j list chains",
                    "-e -j -f -"
                ],
                "{start:?}"
            );
            // What the table holds now, as a listing reads it; Docker's
            // chain as the run saw it.
            let (listed, _) = Nft::new(&config, &mut fake).observe(true);
            assert_eq!(confirmed, listed);
            assert!(confirmed.family(Family::Ipv4).unwrap().docker_user);
            assert_eq!(plan_of(&config, &wants, &confirmed), []);
        }
    }

    #[test]
    fn an_echo_that_does_not_show_the_table_written_is_not_trusted() {
        use serde_json::Value;
        let config = config();
        let text = "close ssh\nclose mosh\n";
        // The faithful echo of that run, but for its last rule.
        let truncated = {
            let start = bare(&config);
            let steps = plan(&config, &wants(&config, text), &start, &SourcesSeen::new());
            let prepared = prepare(&config, &steps, &start).unwrap().unwrap();
            let (_, echo) = committed(false, &prepared.script.text);
            let mut echo: Value = serde_json::from_str(&echo).unwrap();
            echo["nftables"].as_array_mut().unwrap().pop();
            echo.to_string()
        };
        for echo in [
            Echo::Prints(String::new()),
            Echo::Prints("not json".into()),
            Echo::Prints("{\"nftables\": []}".into()),
            Echo::Prints(truncated),
            // Another table's echo, and a listing, not an echo.
            Echo::Prints(EVERY_KIND_ECHO.into()),
            Echo::Prints(EVERY_KIND.into()),
            Echo::Lies(String::new()),
            Echo::Lies(EVERY_KIND_ECHO.into()),
        ] {
            let lies = matches!(echo, Echo::Lies(_));
            let mut fake = FakeNft {
                echo,
                ..FakeNft::default()
            };
            let (_, applied) = run_once(&config, &mut fake, text);
            assert!(applied.errors.is_empty() && !applied.made.is_empty());
            assert_eq!(applied.confirmed, None, "{:?}", fake.scripts);
            if lies {
                // Read again, the table is not there: nothing was closed.
                let (again, _) = Nft::new(&config, &mut fake).observe(false);
                assert_eq!(again, bare(&config));
            }
        }
    }

    #[test]
    fn a_run_that_changes_nothing_starts_no_writing_process() {
        let config = config();
        let mut fake = FakeNft::default();
        let text = "close ssh\nopen mosh from 192.0.2.1\n";
        run_once(&config, &mut fake, text);
        assert_eq!(fake.scripts.len(), 1);
        fake.calls.clear();
        let (_, applied) = run_once(&config, &mut fake, text);
        assert!(applied.made.is_empty() && applied.errors.is_empty());
        assert_eq!(nft_processes(&fake), ["-j list table inet portlocker"]);
    }

    #[test]
    fn a_run_that_reads_the_table_again_tells_each_notice_once() {
        let config = config();
        let mut fake = FakeNft {
            chains: Some(OTHERS.to_owned()),
            echo: Echo::Prints(String::new()),
            ..FakeNft::default()
        };
        let mut nft = Nft::new(&config, &mut fake);
        let (mut holdings, _) = nft.observe(true);
        let steps = plan(
            &config,
            &wants(&config, "close ssh\n"),
            &holdings,
            &SourcesSeen::new(),
        );
        assert_eq!(nft.apply(&steps, &mut holdings).confirmed, None);
        // As the run does when the echo does not tell.
        nft.observe(true);
        let notices = nft.tidy().notices;
        assert_eq!(notices.len(), 1, "{notices:#?}");
        assert!(notices[0].contains("chain input of table inet filter drops"));
    }

    /// A whole run, in process, with `fake` as nft: its exit, page and metrics.
    fn whole_run(fake: &mut FakeNft, control: &str) -> (Exit, String, String) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        // The backend wants nft to be there; the fake answers in its place.
        std::fs::write(path("nft"), "").unwrap();
        std::fs::set_permissions(path("nft"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(path("control.txt"), control).unwrap();
        let config = Config::parse(&format!(
            "source = {:?}\nlog_file = {:?}\nstatus_file = {:?}\nmetrics_file = {:?}\n\
             state_dir = {:?}\n[firewall]\nbackend = \"nftables\"\nnft = {:?}\n\
             iptables = {:?}\nip6tables = {:?}\n\
             [services]\nssh = 22\nmosh = \"60000-61000/udp\"\n",
            path("control.txt"),
            path("log"),
            path("status.html"),
            path("metrics.prom"),
            path("state"),
            path("nft"),
            // Not there: no iptables of the host's to look into for leftovers.
            path("iptables"),
            path("ip6tables"),
        ))
        .unwrap();
        let now = DateTime::parse_from_rfc3339("2026-11-25T10:00:00+01:00").unwrap();
        fake.calls.clear();
        let exit = crate::run::run_locked(&config, false, &mut *fake, now);
        let read = |name: &str| std::fs::read_to_string(path(name)).unwrap();
        (exit, read("status.html"), read("metrics.prom"))
    }

    #[test]
    fn a_change_nft_says_it_made_but_did_not_is_caught_by_reading_back() {
        let closed = "portlocker_service_closed{service=\"ssh\",family=\"ipv4\"} 1";
        // As it should be: one listing, one transaction, the echo read.
        let mut fake = FakeNft::default();
        let (exit, page, metrics) = whole_run(&mut fake, "close ssh\n");
        assert_eq!(exit, Exit::Ok, "{page}");
        assert!(page.contains("IPv4 closed"), "{page}");
        assert!(metrics.contains(closed), "{metrics}");
        let processes: Vec<&str> = fake
            .calls
            .iter()
            .map(|call| call.rsplit_once("/nft ").unwrap().1)
            .collect();
        // Then the host, read again for the verdicts: every chain with its
        // hook, and the one table hooked on the way in, portlocker's.
        assert_eq!(
            processes,
            [
                "-j list table inet portlocker",
                "-j list chains",
                "-e -j -f -",
                "-j list chains",
                "-j list table inet portlocker",
            ]
        );
        for lie in ["", "{\"nftables\": []}"] {
            let mut fake = FakeNft {
                echo: Echo::Lies(lie.into()),
                ..FakeNft::default()
            };
            let (exit, page, metrics) = whole_run(&mut fake, "close ssh\n");
            assert_eq!(exit, Exit::Failed, "{page}");
            // The run fails, and the page says ssh is not as asked.
            assert!(
                page.contains("Not as asked: ssh open over IPv4 (asked: closed)"),
                "{page}"
            );
            assert!(!page.contains("IPv4 closed"), "{page}");
            assert!(
                metrics.contains("portlocker_service_closed{service=\"ssh\",family=\"ipv4\"} 0"),
                "{metrics}"
            );
            // The table was listed again after the transaction.
            let listings = fake
                .calls
                .iter()
                .filter(|call| call.ends_with("-j list table inet portlocker"));
            assert_eq!(listings.count(), 2, "{:?}", fake.calls);
        }
    }

    #[test]
    fn a_missing_table_is_an_empty_firewall_and_reset_leaves_it_alone() {
        let config = config();
        let mut fake = FakeNft::default();
        let mut nft = Nft::new(&config, &mut fake);
        let (holdings, errors) = nft.observe(false);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(holdings, bare(&config));
        let reset = nft.reset();
        assert_eq!((reset.changes, reset.errors.len()), (0, 0));
        assert!(fake.scripts.is_empty());

        fake.table = Some(EVERY_KIND.to_owned());
        let reset = Nft::new(&config, &mut fake).reset();
        assert!(reset.errors.is_empty());
        assert_eq!(reset.said.last().unwrap(), "delete table inet portlocker");
        assert!(
            reset
                .said
                .contains(&"IPv6: remove rule portlocker:vpn".to_owned())
        );
        assert_eq!(
            fake.scripts,
            ["table inet portlocker\ndelete table inet portlocker\n"]
        );
    }

    #[test]
    fn a_refused_script_names_the_change_of_its_line_and_changes_nothing() {
        let config = config();
        let mut fake = FakeNft {
            refusal: Some(
                "/dev/stdin:6:1-4: Error: Could not process rule: No such file or directory\n"
                    .into(),
            ),
            ..FakeNft::default()
        };
        let (holdings, applied) = run_once(&config, &mut fake, "close ssh\n");
        assert!(applied.made.is_empty());
        assert_eq!(holdings, bare(&config));
        let error = applied.errors[0].to_string();
        assert!(
            error.contains(
                "refused line 6 of its input (IPv4: close ssh 22/tcp), so it changed nothing"
            ),
            "{error}"
        );
        // The same rule in the other family is named as its own.
        let mut fake = FakeNft {
            refusal: Some("/dev/stdin:7:1-4: Error: Could not process rule\n".into()),
            ..FakeNft::default()
        };
        let (_, applied) = run_once(&config, &mut fake, "close ssh\n");
        let error = applied.errors[0].to_string();
        assert!(
            error.contains("line 7 of its input (IPv6: close ssh 22/tcp)"),
            "{error}"
        );
    }

    #[test]
    fn a_table_that_cannot_be_read_gets_its_closes_first_and_nothing_removed() {
        let config = config();
        let mut fake = FakeNft {
            table: Some("not json".into()),
            ..FakeNft::default()
        };
        let text = "close ssh\nopen vpn\nopen mosh from 192.0.2.1\n";
        let (holdings, applied) = run_once(&config, &mut fake, text);
        let error = applied.errors[0].to_string();
        assert!(
            error.contains("printed what portlocker cannot read: not JSON"),
            "{error}"
        );
        assert_eq!(holdings, Holdings::unknown(&config));
        let script = &fake.scripts[0];
        assert!(script.starts_with(
            "add table inet portlocker\n\
             add chain inet portlocker blind { type filter hook input priority -11; policy accept; }\n\
             flush chain inet portlocker blind\n"
        ));
        let adds: Vec<&str> = script.lines().skip(3).collect();
        assert!(
            adds.iter()
                .all(|line| line.starts_with("add rule inet portlocker blind ")
                    && line.contains(" drop comment "))
        );
        // ssh and mosh closed in both families; no source let in, vpn not opened.
        assert_eq!(adds.len(), 4, "{script}");
        assert!(!script.contains("192.0.2.1") && !script.contains("portlocker:vpn"));
        assert!(
            !script.contains("portlocker input"),
            "the chain that cannot be seen is touched: {script}"
        );

        // Every run that cannot read the table writes the same, no more.
        run_once(&config, &mut fake, text);
        assert_eq!(fake.scripts[1], fake.scripts[0]);
    }

    /// `reset` is the way out: a table nft lists as garbage still goes.
    #[test]
    fn reset_deletes_a_table_that_cannot_be_read() {
        let config = config();
        let mut fake = FakeNft {
            table: Some("not json".into()),
            ..FakeNft::default()
        };
        let reset = Nft::new(&config, &mut fake).reset();
        assert!(reset.errors.is_empty(), "{:?}", reset.errors);
        assert_eq!(reset.changes, 1);
        assert_eq!(
            fake.scripts,
            ["table inet portlocker\ndelete table inet portlocker\n"]
        );
    }

    #[test]
    fn the_dry_run_shows_each_change_then_the_script() {
        let config = config();
        let mut fake = FakeNft::default();
        let mut nft = Nft::new(&config, &mut fake);
        let (holdings, _) = nft.observe(false);
        let steps = plan(
            &config,
            &wants(&config, "close ssh\n"),
            &holdings,
            &SourcesSeen::new(),
        );
        let lines = nft.dry_run(&steps, &holdings);
        assert_eq!(
            lines[..4],
            [
                "# create table inet portlocker, its chain input on the input hook before the filter chains",
                "# IPv4: close ssh 22/tcp",
                "# IPv6: close ssh 22/tcp",
                "# all of it in one transaction, as `/usr/sbin/nft -f -` reads it:",
            ]
        );
        assert_eq!(lines[4], "#   table inet portlocker");
        assert!(lines.iter().all(|line| line.starts_with('#')));
        assert!(fake.scripts.is_empty());
    }

    /// A commit refused at a rule of an open is made again without it: the
    /// service stays closed to that source, and every close goes in. Where
    /// the table cannot be read, a refused close in the blind chain holds
    /// back no other.
    #[test]
    fn a_refused_rule_is_left_out_and_everything_else_committed() {
        use crate::firewall::plan::plan_within;
        let config = config();
        let mut fake = FakeNft {
            refuse_holding: Some("127.0.0.2".into()),
            ..FakeNft::default()
        };
        let wants = wants(&config, "open ssh from 127.0.0.2\nclose mosh\n");
        let mut nft = Nft::new(&config, &mut fake);
        let (mut holdings, _) = nft.observe(false);
        let (applied, unwritable) =
            crate::firewall::commit(&mut nft, &mut holdings, |refused, held| {
                plan_within(&config, &wants, held, &SourcesSeen::new(), refused)
            });
        assert_eq!(applied.errors.len(), 1, "{:?}", applied.errors);
        assert!(
            applied.errors[0]
                .to_string()
                .contains("(IPv4: open ssh 22/tcp to 127.0.0.2/32)"),
            "{}",
            applied.errors[0]
        );
        assert_eq!(
            unwritable.said,
            ["IPv4: ssh stays closed to 127.0.0.2/32: the firewall refused its rule"]
        );
        assert_eq!(fake.scripts.len(), 1, "only the one it took is kept");
        let table = fake.table.clone().unwrap();
        assert!(!table.contains("127.0.0.2"), "{table}");
        for close in ["portlocker:mosh", "portlocker:ssh"] {
            assert_eq!(
                table.matches(close).count(),
                2,
                "{close} in both families: {table}"
            );
        }

        // Blind: the refused close is left out of the blind chain, the rest go in.
        let mut fake = FakeNft {
            table: Some("not json".into()),
            refuse_holding: Some("portlocker:mosh".into()),
            ..FakeNft::default()
        };
        let wants = super::tests::wants(&config, "close ssh\nclose mosh\nclose vpn\n");
        let mut nft = Nft::new(&config, &mut fake);
        let (mut holdings, _) = nft.observe(false);
        let (applied, unwritable) =
            crate::firewall::commit(&mut nft, &mut holdings, |refused, held| {
                plan_within(&config, &wants, held, &SourcesSeen::new(), refused)
            });
        assert!(!applied.made.is_empty());
        assert_eq!(unwritable.said.len(), 2, "{:?}", unwritable.said);
        let script = fake.scripts.last().unwrap();
        assert!(!script.contains("portlocker:mosh"), "{script}");
        assert_eq!(script.matches("portlocker:ssh").count(), 2, "{script}");
        assert_eq!(script.matches("portlocker:vpn").count(), 2, "{script}");
    }

    /// A transaction refused for its size, at no line: made again with
    /// closes only, which gets through; the sources are closed, and said.
    #[test]
    fn a_transaction_too_big_is_made_again_with_closes_only() {
        use crate::firewall::plan::plan_within;
        let config = config();
        let mut fake = FakeNft {
            refuse_longer_than: Some(40),
            ..FakeNft::default()
        };
        let sources: String = (1..=60)
            .map(|n| format!("open ssh from 198.51.100.{n}\n"))
            .collect();
        let wants = wants(&config, &format!("{sources}close mosh\n"));
        let mut nft = Nft::new(&config, &mut fake);
        let (mut holdings, _) = nft.observe(false);
        let (applied, unwritable) =
            crate::firewall::commit(&mut nft, &mut holdings, |refused, held| {
                plan_within(&config, &wants, held, &SourcesSeen::new(), refused)
            });
        assert!(applied.errors[0].to_string().contains("Message too long"));
        assert_eq!(
            unwritable.said,
            [
                "IPv4: every open from a source or with an end is closed: the firewall refused the whole commit",
                "IPv6: every open from a source or with an end is closed: the firewall refused the whole commit",
            ]
        );
        let table = fake.table.clone().unwrap();
        assert!(!table.contains("198.51.100."), "{table}");
        assert_eq!(table.matches("portlocker:ssh").count(), 2, "{table}");
        assert_eq!(table.matches("portlocker:mosh").count(), 2, "{table}");
    }
}
