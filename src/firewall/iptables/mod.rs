//! The iptables backend: portlocker's chain in iptables and ip6tables,
//! jumped to from INPUT — changes as argv vectors and as one restore
//! transaction per family, and reading portlocker's part back — and
//! `backend_for`, which picks the backend the config names (this one, or
//! nftables in `nft.rs`) behind the trait of `backend.rs`. Every process
//! runs through the `Runner` seam (`runner.rs`); no shell is ever involved.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

mod flavours;
pub(crate) mod forward;
pub(crate) mod nft_only;
pub(crate) mod read;

use crate::config::{ChainName, Config, Family, ServiceName};
use crate::firewall::eval::Cited;
use crate::firewall::forward::{Forwarded, Mirror};
use crate::firewall::model::{
    self, ChainRules, Change, FamilyHoldings, Holdings, Listed, Rule, appended_by, rule_of,
};
use crate::firewall::plan::{self, Step};
use crate::firewall::ruleset::{
    Base, Chain, ChainKind, Hook, InputPath, Policy, Table, Tool, family_word,
};
use crate::firewall::run_command;
pub use crate::firewall::{
    Applied, FirewallBackend, Reset, Tidied, program_problem, refusal_named,
};
pub use crate::sys::runner::{Command, CommandError, Completion, Failure, Runner};

/// Seconds every iptables call waits for the xtables lock before giving up,
/// so a run never hangs behind another firewall tool.
pub const XTABLES_WAIT_SECS: u32 = 10;

impl Command {
    /// An iptables command for `family` that waits a bounded time for the xtables lock.
    pub fn iptables(config: &Config, family: Family, args: Vec<String>) -> Command {
        let mut all = vec!["-w".to_owned(), XTABLES_WAIT_SECS.to_string()];
        all.extend(args);
        Command {
            program: config.binary(family).to_owned(),
            args: all,
            stdin: None,
        }
    }
}

/// The most changes a refused transaction is made again one by one; past
/// that, a plan of closes only is committed first.
const BY_RULE_AT_MOST: usize = 64;

/// How many copies of one rule a blind removal takes away before it gives up.
const MAX_DUPLICATES: usize = 64;

/// The arguments that make `change`.
pub fn args(change: &Change) -> Vec<String> {
    match change {
        Change::NewChain { chain, .. } => vec!["-N".into(), chain.to_string()],
        Change::InsertJump { chain, tag, .. } => {
            let mut args = vec!["-I".to_owned(), "INPUT".to_owned(), "1".to_owned()];
            args.extend(tag.spec(chain));
            args
        }
        Change::DeleteJump { spec, .. } => listed_args("-D", "INPUT", spec),
        Change::DeleteChain { chain, .. } => vec!["-X".into(), chain.to_string()],
        // A source rule must come before the DROP of its port: first in
        // portlocker's chain. In INPUT it is appended (bans above it apply
        // to it), and the plan appends the DROP again after it.
        Change::Append(rule) if rule.source.is_some() && !rule.chain.is_input() => {
            let mut args = vec!["-I".to_owned(), rule.chain.to_string(), "1".to_owned()];
            args.extend(rule.spec());
            args
        }
        Change::Append(rule) => rule_args("-A", rule),
        Change::Delete(rule) => rule_args("-D", rule),
        Change::DeleteListed { chain, spec, .. } => listed_args("-D", chain.as_str(), spec),
    }
}

/// The read-only arguments whose success means the thing `change` is
/// about is present.
pub fn check_args(change: &Change) -> Vec<String> {
    match change {
        Change::NewChain { chain, .. } | Change::DeleteChain { chain, .. } => {
            vec!["-S".into(), chain.to_string()]
        }
        Change::InsertJump { chain, tag, .. } => listed_args("-C", "INPUT", &tag.spec(chain)),
        Change::DeleteJump { spec, .. } => listed_args("-C", "INPUT", spec),
        Change::Append(rule) | Change::Delete(rule) => rule_args("-C", rule),
        Change::DeleteListed { chain, spec, .. } => listed_args("-C", chain.as_str(), spec),
    }
}

fn rule_args(operation: &str, rule: &Rule) -> Vec<String> {
    listed_args(operation, rule.chain.as_str(), &rule.spec())
}

fn listed_args(operation: &str, chain: &str, spec: &[String]) -> Vec<String> {
    let mut args = vec![operation.to_owned(), chain.to_owned()];
    args.extend_from_slice(spec);
    args
}

/// One family's changes as one `iptables-restore --noflush` input: the
/// kernel takes all of it or none, so no moment shows half a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub family: Family,
    /// The input, as iptables-restore reads it.
    pub text: String,
    /// What each line is about, by line number - 1, to name what a
    /// refusal came from: in words, and the rule of portlocker's it writes.
    lines: Vec<(String, Option<Rule>)>,
    /// What the family holds once it is committed.
    pub after: FamilyHoldings,
}

impl Transaction {
    /// What line `line` (1-based) of the input is about.
    pub fn about(&self, line: usize) -> String {
        line.checked_sub(1)
            .and_then(|index| self.lines.get(index))
            .map(|(about, _)| about.clone())
            .unwrap_or_else(|| format!("line {line}"))
    }

    /// The rule of portlocker's that line `line` (1-based) writes, if it writes one.
    pub fn rule_at(&self, line: usize) -> Option<&Rule> {
        let index = line.checked_sub(1)?;
        self.lines.get(index)?.1.as_ref()
    }
}

/// A restore input being written: each line, what it is about, and the
/// rule of portlocker's it writes.
#[derive(Default)]
struct Lines(Vec<(String, String, Option<Rule>)>);

impl Lines {
    fn push(&mut self, line: String, about: String) {
        self.0.push((line, about, None));
    }

    fn push_rule(&mut self, line: String, about: String, rule: Option<Rule>) {
        self.0.push((line, about, rule));
    }

    /// The changes' lines, as `args` makes them.
    fn changes<'c>(&mut self, changes: impl Iterator<Item = &'c &'c Change>) {
        for change in changes {
            let rule = match change {
                Change::Append(rule) => Some(rule.clone()),
                _ => None,
            };
            self.push_rule(restore_line(&args(change)), change.to_string(), rule);
        }
    }
}

/// The transaction that makes `changes` to a family holding `held`.
/// portlocker's own chain is declared, which empties it, and written whole
/// — its rules in order, the owner's untagged ones re-emitted unchanged —
/// and misplaced jumps are deleted before the jump is inserted first in
/// INPUT, in the same commit. With `chain = "INPUT"`, INPUT is never
/// declared: the changes are its additions and deletions.
pub fn transaction(
    config: &Config,
    family: Family,
    held: &FamilyHoldings,
    changes: &[&Change],
) -> Transaction {
    let mut after = held.clone();
    for change in changes {
        after.record(config, change);
    }
    let mut lines = Lines::default();
    lines.push("*filter".into(), "the table".into());
    let chain = &config.firewall.chain;
    let appended = appended_by(changes);
    if chain.is_input() {
        lines.changes(changes.iter());
    } else {
        if let Some(rules) = &after.chain {
            lines.push(
                format!(":{chain} - [0:0]"),
                format!("{family}: chain {chain}"),
            );
            for rule in &rules.rules {
                let about = match (rule.tag(), appended.get(&(family, rule.spec.clone()))) {
                    (_, Some(change)) => change.to_string(),
                    (Some(tag), None) => format!("{family}: a rule of portlocker's kept: {tag}"),
                    (None, None) => format!("{family}: your rule `{}`", rule.shown(chain.as_str())),
                };
                let line = restore_line(&listed_args("-A", chain.as_str(), &rule.spec));
                lines.push_rule(line, about, rule_of(config, family, &rule.spec));
            }
        }
        let deleted = held.chain.is_some() && after.chain.is_none();
        if deleted {
            // Declared to be emptied, then deleted once no jump refers to it.
            lines.push(
                format!(":{chain} - [0:0]"),
                format!("{family}: chain {chain}"),
            );
        }
        // By spec, -D removes the first match: delete the old jumps first.
        let deletes = changes
            .iter()
            .filter(|change| matches!(change, Change::DeleteJump { .. }));
        let inserts = changes
            .iter()
            .filter(|change| matches!(change, Change::InsertJump { .. }));
        lines.changes(deletes.chain(inserts));
        if deleted {
            lines.push(
                format!("-X {chain}"),
                format!("{family}: delete chain {chain}"),
            );
        }
    }
    lines.push("COMMIT".into(), "the commit".into());
    let text = lines
        .0
        .iter()
        .map(|(line, ..)| format!("{line}\n"))
        .collect();
    Transaction {
        family,
        text,
        lines: lines
            .0
            .into_iter()
            .map(|(_, about, rule)| (about, rule))
            .collect(),
        after,
    }
}

/// The transaction for `family`'s `steps`, when there can be one: the
/// family was read (a blind plan must check each change first) and its
/// restore tool is there.
fn family_transaction(
    config: &Config,
    family: Family,
    steps: &[&Step],
    holdings: &Holdings,
) -> Option<Transaction> {
    let held = holdings.family(family)?;
    if steps.is_empty()
        || !steps.iter().all(|step| step.checked)
        || restore_problem(config, family).is_some()
    {
        return None;
    }
    let changes: Vec<&Change> = steps.iter().map(|step| &step.change).collect();
    Some(transaction(config, family, held, &changes))
}

/// Every transaction `steps` make, per family, as a run would feed them.
pub fn transactions(config: &Config, steps: &[Step], holdings: &Holdings) -> Vec<Transaction> {
    config
        .families()
        .into_iter()
        .filter_map(|family| {
            let mine: Vec<&Step> = steps
                .iter()
                .filter(|step| step.change.family() == family)
                .collect();
            family_transaction(config, family, &mine, holdings)
        })
        .collect()
}

/// One line of restore input: words quoted the way iptables-save does.
fn restore_line(words: &[String]) -> String {
    words
        .iter()
        .map(|word| {
            if !word.is_empty()
                && !word
                    .chars()
                    .any(|c| c.is_whitespace() || c == '"' || c == '\'')
            {
                word.clone()
            } else {
                format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The line number in an iptables-restore refusal: `line 4 failed`, or
/// `Error occurred at line: 3`.
fn refused_line(stderr: &str) -> Option<usize> {
    stderr.match_indices("line").find_map(|(at, word)| {
        let rest = stderr[at + word.len()..].trim_start_matches([':', ' ']);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// The firewall as portlocker sees it, through a `Runner`.
pub struct Firewall<'a, R: Runner> {
    pub runner: R,
    config: &'a Config,
    /// Programs that hung this run: each further call would only wait out
    /// its own time limit, so none is made.
    hung: Vec<PathBuf>,
    /// The families whose iptables cannot run, with why: left out of the
    /// work, which goes on for the others.
    unusable: BTreeMap<Family, String>,
    /// Whether this run said it has no restore tool.
    warned_no_restore: bool,
    /// Families whose refused transaction was handed back for a smaller plan.
    shrunk: BTreeSet<Family>,
}

impl<'a, R: Runner> Firewall<'a, R> {
    pub fn new(config: &'a Config, runner: R) -> Self {
        let unusable = config
            .families()
            .into_iter()
            .filter_map(|family| Some((family, binary_problem(config, family)?)))
            .collect();
        Firewall {
            runner,
            config,
            hung: Vec::new(),
            unusable,
            warned_no_restore: false,
            shrunk: BTreeSet::new(),
        }
    }

    /// Runs `command`; Ok only when it exits 0. The iptables of an unusable
    /// family is never run: it is missing, or another account could change it.
    fn run(&mut self, command: Command) -> Result<Completion, CommandError> {
        let problem = self
            .unusable
            .iter()
            .find(|(family, _)| self.config.binary(**family) == command.program);
        if let Some((_, problem)) = problem {
            let failure = Failure::Spawn(std::io::Error::other(problem.clone()));
            return Err(CommandError { command, failure });
        }
        run_command(&mut self.runner, &mut self.hung, command)
    }

    /// A read-only check: exit 0 is present, exit 1 is absent, anything else an error.
    fn check(&mut self, family: Family, args: Vec<String>) -> Result<bool, CommandError> {
        match self.run(Command::iptables(self.config, family, args)) {
            Ok(_) => Ok(true),
            Err(CommandError {
                failure: Failure::Exited { code: 1, .. },
                ..
            }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Lists one chain; None when it does not exist.
    fn list(&mut self, family: Family, chain: &str) -> Result<Option<ChainRules>, CommandError> {
        let command = Command::iptables(self.config, family, vec!["-S".into(), chain.into()]);
        match self.run(command.clone()) {
            Ok(done) => Ok(Some(ChainRules::from_listing(&done.stdout, chain))),
            Err(error) if error.chain_is_missing() => Ok(None),
            // A rule above the jump only nft can print must not keep the
            // jump from going back on top. Not in portlocker's own place:
            // its rules below such a rule could not be deleted.
            Err(error) if chain == "INPUT" && !self.config.firewall.chain.is_input() => {
                let read = nft_only::read(&mut self.runner, &mut self.hung, &command, error)?;
                Ok(Some(held_of(read, family)))
            }
            Err(error) => Err(error),
        }
    }

    /// Reads what portlocker's part of the firewall holds: INPUT and
    /// portlocker's chain, one `iptables -S CHAIN` each per family — never
    /// the whole table, which on a host with Docker or Kubernetes holds
    /// thousands of rules of others. With `docker`, also whether Docker's
    /// chain exists (for the page's notice). A family that could not be
    /// read is `None`, with its error.
    pub fn observe(&mut self, docker: bool) -> (Holdings, Vec<CommandError>) {
        let mut errors = Vec::new();
        let mut holdings = Holdings::unknown(self.config);
        // A family whose iptables cannot run is not part of this run's work.
        holdings
            .families
            .retain(|family, _| !self.unusable.contains_key(family));
        let chain = self.config.firewall.chain.clone();
        for (&family, held) in holdings.families.iter_mut() {
            match self.observe_family(family, &chain, docker) {
                Ok(observed) => *held = Some(observed),
                Err(error) => errors.push(error),
            }
        }
        (holdings, errors)
    }

    fn observe_family(
        &mut self,
        family: Family,
        chain: &ChainName,
        docker: bool,
    ) -> Result<FamilyHoldings, CommandError> {
        let Some(input) = self.list(family, "INPUT")? else {
            return Err(CommandError {
                command: Command::iptables(self.config, family, vec!["-S".into(), "INPUT".into()]),
                failure: Failure::Exited {
                    code: 1,
                    stderr: "no INPUT chain".into(),
                },
            });
        };
        let chain = match chain.is_input() {
            true => None,
            false => self.list(family, chain.as_str())?,
        };
        let docker_user = docker
            && family == Family::Ipv4
            && self.check(family, vec!["-S".into(), "DOCKER-USER".into()])?;
        Ok(FamilyHoldings {
            input,
            chain,
            docker_user,
        })
    }

    /// Reads what portlocker may have left in a backend it no longer uses,
    /// as cheaply as that can be told: portlocker's chain first, and INPUT
    /// only when the chain exists (a jump cannot outlive its chain); with
    /// `chain = "INPUT"`, INPUT alone. Only `families` are read, and a
    /// family where nothing of portlocker's can be is left out.
    pub fn observe_leftovers(&mut self, families: &[Family]) -> (Holdings, Vec<CommandError>) {
        let mut holdings = Holdings {
            families: BTreeMap::new(),
        };
        let mut errors = Vec::new();
        for &family in families {
            match self.leftovers_of(family) {
                Ok(Some(held)) => {
                    holdings.families.insert(family, Some(held));
                }
                Ok(None) => {}
                Err(error) => {
                    holdings.families.insert(family, None);
                    errors.push(error);
                }
            }
        }
        (holdings, errors)
    }

    fn leftovers_of(&mut self, family: Family) -> Result<Option<FamilyHoldings>, CommandError> {
        let chain = self.config.firewall.chain.clone();
        let Some(ours) = self.list(family, chain.as_str())? else {
            return Ok(None);
        };
        let (input, chain) = match chain.is_input() {
            true => (ours, None),
            false => (self.list(family, "INPUT")?.unwrap_or_default(), Some(ours)),
        };
        Ok(Some(FamilyHoldings {
            input,
            chain,
            docker_user: false,
        }))
    }

    /// Carries out the plan: per family, one `iptables-restore --noflush`
    /// transaction — all of it or none — when the family was read and its
    /// restore tool is there; otherwise rule by rule, where a failed step
    /// does not stop the others. Every change made is recorded in
    /// `holdings` and logged.
    pub fn apply(&mut self, steps: &[Step], holdings: &mut Holdings) -> Applied {
        let mut applied = Applied::default();
        for family in self.config.families() {
            if self.unusable.contains_key(&family) {
                continue;
            }
            let mine: Vec<&Step> = steps
                .iter()
                .filter(|step| step.change.family() == family)
                .collect();
            if mine.is_empty() {
                continue;
            }
            // A restore tool that hung this run is not waited for again.
            let restore = self.config.restore_binary(family);
            let transaction = match self.hung.iter().any(|hung| hung == restore) {
                true => None,
                false => family_transaction(self.config, family, &mine, holdings),
            };
            match transaction {
                Some(transaction) => {
                    let changes: Vec<&Change> = mine.iter().map(|step| &step.change).collect();
                    match self.commit(&transaction, &changes) {
                        Ok(()) => {
                            holdings.families.insert(family, Some(transaction.after));
                            applied.made.extend(changes.into_iter().cloned());
                        }
                        Err(error) => {
                            self.after_refusal(error, &transaction, &mine, holdings, &mut applied)
                        }
                    }
                }
                None => {
                    if holdings.family(family).is_some() {
                        self.warn_no_restore(family);
                    }
                    self.apply_one_by_one(&mine, holdings, &mut applied);
                }
            }
        }
        applied
    }

    /// Feeds one transaction to the family's restore tool.
    fn commit(
        &mut self,
        transaction: &Transaction,
        changes: &[&Change],
    ) -> Result<(), CommandError> {
        let family = transaction.family;
        let command = Command {
            program: self.config.restore_binary(family).to_owned(),
            args: ["--noflush", "-w", &XTABLES_WAIT_SECS.to_string()]
                .map(String::from)
                .to_vec(),
            stdin: Some(transaction.text.clone()),
        };
        let shown = command.to_string();
        match self.run(command) {
            Ok(_) => {
                for change in changes {
                    let each = Command::iptables(self.config, family, args(change));
                    log::info!("{change}: {each}");
                }
                log::info!(
                    "{family}: {} changes in one transaction: {shown}",
                    changes.len()
                );
                Ok(())
            }
            Err(error) => Err(refusal_named(error, refused_line, |line| {
                transaction.about(line)
            })),
        }
    }

    /// After `transaction` failed. A rule of an open it was refused at is
    /// handed back (`Applied::refused`), for a plan that closes instead;
    /// past anything else it was refused at — a close, the chain, a jump,
    /// a rule of the owner's it could not take back — the changes go rule
    /// by rule, so one line the restore tool cannot take never holds back
    /// every close. A restore tool not seen to finish (killed, timed out)
    /// may have committed: nothing more is tried.
    fn after_refusal(
        &mut self,
        error: CommandError,
        transaction: &Transaction,
        steps: &[&Step],
        holdings: &mut Holdings,
        applied: &mut Applied,
    ) {
        let refused = match &error.failure {
            Failure::Refused(refusal) => transaction.rule_at(refusal.line).cloned(),
            _ => None,
        };
        let took_nothing = matches!(
            error.failure,
            Failure::Refused(_) | Failure::Exited { .. } | Failure::Spawn(_)
        );
        if matches!(error.failure, Failure::TimedOut { .. }) {
            // Killed, it may or may not have committed: the family is read
            // again, and the next commit goes rule by rule.
            let family = transaction.family;
            let chain = self.config.firewall.chain.clone();
            let fresh = self.observe_family(family, &chain, false).ok();
            holdings.families.insert(family, fresh);
            applied.retry = true;
        }
        applied.errors.push(error);
        match refused {
            Some(rule) if rule.source.is_some() || rule.deadline.is_some() => {
                applied.refused.push(rule);
            }
            // Thousands of changes one by one would outlast the run: a
            // plan of closes only is tried first (its size may be why).
            _ if took_nothing
                && steps.len() > BY_RULE_AT_MOST
                && self.shrunk.insert(transaction.family) =>
            {
                applied.shrink.push(transaction.family);
            }
            _ if took_nothing => {
                log::warn!(
                    "{}: the transaction was refused, so the firewall is changed rule by rule",
                    transaction.family
                );
                self.apply_one_by_one(steps, holdings, applied);
            }
            _ => {}
        }
    }

    /// Says once per run that `family` is changed rule by rule, and why.
    fn warn_no_restore(&mut self, family: Family) {
        if self.warned_no_restore {
            return;
        }
        self.warned_no_restore = true;
        let program = self.config.restore_binary(family);
        match restore_problem(self.config, family) {
            Some(_) if !program.exists() => log::warn!(
                "{family}: {} not found: changing the firewall rule by rule, which a crash can \
                 leave half done (install the iptables package, or set {})",
                program.display(),
                restore_key(family)
            ),
            Some(problem) => log::warn!(
                "{family}: {problem}; so it is not run, and the firewall is changed rule by rule, \
                 which a crash can leave half done"
            ),
            None => {}
        }
    }

    /// The rule-by-rule way: one command per change. An unchecked step is
    /// checked first, so a plan made blind never duplicates a rule.
    ///
    /// A service whose rule could not be added keeps every DROP it had: the
    /// plan adds before it removes, and an open whose time match failed, or
    /// a close replaced, must never be left with no DROP at all.
    fn apply_one_by_one(
        &mut self,
        steps: &[&Step],
        holdings: &mut Holdings,
        applied: &mut Applied,
    ) {
        let mut not_added: Vec<(Family, ServiceName)> = Vec::new();
        for step in steps {
            if let Change::Delete(rule) = &step.change
                && rule.source.is_none()
                && not_added.contains(&(rule.family, rule.service.clone()))
            {
                log::warn!(
                    "{}: kept, as its replacement could not be added",
                    step.change
                );
                continue;
            }
            let made = match step.checked {
                true => self.make(&step.change),
                false => self.make_if_needed(&step.change),
            };
            match made {
                Ok(commands) => {
                    for _ in 0..commands {
                        holdings.record(self.config, &step.change);
                        applied.made.push(step.change.clone());
                    }
                }
                Err(error) => {
                    if let Change::Append(rule) = &step.change {
                        not_added.push((rule.family, rule.service.clone()));
                        // Refused, an open's rule: for a plan that closes instead.
                        let refused = matches!(error.failure, Failure::Exited { .. });
                        if refused && (rule.source.is_some() || rule.deadline.is_some()) {
                            applied.refused.push(rule.clone());
                        }
                    }
                    applied.errors.push(error);
                }
            }
        }
    }

    /// Checks before each command, as a plan made blind requires: `-A`
    /// when absent; a removal while present.
    fn make_if_needed(&mut self, change: &Change) -> Result<usize, CommandError> {
        let family = change.family();
        let mut commands = 0;
        while commands < MAX_DUPLICATES {
            let present = self.check(family, check_args(change))?;
            if present != change.removes() {
                break;
            }
            commands += self.make(change)?;
        }
        Ok(commands)
    }

    /// Makes one change with one command.
    fn make(&mut self, change: &Change) -> Result<usize, CommandError> {
        let command = Command::iptables(self.config, change.family(), args(change));
        let shown = command.to_string();
        self.run(command)?;
        log::info!("{change}: {shown}");
        Ok(1)
    }
}

/// iptables and ip6tables: portlocker's chain in each, jumped to from INPUT.
impl<R: Runner> FirewallBackend for Firewall<'_, R> {
    fn broken(&self) -> Vec<(PathBuf, String)> {
        self.unusable
            .iter()
            .map(|(&family, problem)| (self.config.binary(family).to_owned(), problem.clone()))
            .collect()
    }

    fn unusable(&self) -> BTreeMap<Family, String> {
        self.unusable.clone()
    }

    /// Each family goes on without the other: only when no family's
    /// iptables can run is there nothing to do.
    fn preflight(&self) -> Result<(), String> {
        if self.unusable.len() < self.config.families().len() {
            return Ok(());
        }
        let problems: Vec<&str> = self.unusable.values().map(String::as_str).collect();
        Err(problems.join("; "))
    }

    fn observe(&mut self, docker: bool) -> (Holdings, Vec<CommandError>) {
        Firewall::observe(self, docker)
    }

    fn read_host(&mut self) -> (crate::firewall::ruleset::Host, Vec<CommandError>) {
        crate::firewall::host::read(self.config, &mut self.runner, &mut self.hung)
    }

    fn apply(&mut self, steps: &[Step], holdings: &mut Holdings) -> Applied {
        Firewall::apply(self, steps, holdings)
    }

    fn dry_run(&mut self, steps: &[Step], holdings: &Holdings) -> Vec<String> {
        let config = self.config;
        let mut lines = Vec::new();
        if steps.iter().any(|step| !step.checked) {
            lines.push("# so each change below runs only if its check says it is needed".into());
        }
        for step in steps {
            lines.push(format!("# {}", step.change));
            lines.push(shell_line(config, step));
        }
        for transaction in transactions(config, steps, holdings) {
            let restore = config.restore_binary(transaction.family).display();
            lines.push(format!(
                "# {}: all of it in one transaction, as `{restore} --noflush` reads it:",
                transaction.family
            ));
            lines.extend(transaction.text.lines().map(|line| format!("#   {line}")));
        }
        // What a run would also remove from the other backend, once this one was read.
        let read = holdings.families.values().all(Option::is_some);
        if let Some(other) = flavours::Other::find(config).filter(|_| read) {
            let found = other.look(&mut Firewall::new(&other.config, &mut self.runner));
            for step in &found.steps {
                let family = BTreeSet::from([step.change.family()]);
                lines.push(format!(
                    "# {}, left in {}",
                    step.change,
                    other.describe(&family)
                ));
                lines.push(shell_line(&other.config, step));
            }
        }
        lines
    }

    fn forward(&mut self, mirror: &Mirror, dry: bool) -> Forwarded {
        Firewall::forward(self, mirror, dry)
    }

    fn reset(&mut self) -> Reset {
        let (mut holdings, mut errors) = Firewall::observe(self, false);
        if errors.iter().any(CommandError::needs_root) {
            return Reset {
                errors,
                ..Reset::default()
            };
        }
        let (steps, kept) = plan::reset(self.config, &holdings);
        let applied = Firewall::apply(self, &steps, &mut holdings);
        errors.extend(applied.errors);
        let forwarded = Firewall::forward(self, &Mirror::nothing(self.config), false);
        errors.extend(forwarded.errors);
        let swept = flavours::sweep(self.config, &mut self.runner);
        let mut said: Vec<String> = applied.made.iter().map(ToString::to_string).collect();
        said.extend(forwarded.said);
        said.extend(swept.tell_reset());
        errors.extend(swept.failed);
        for (family, rules) in &kept {
            log::warn!(
                "{family}: chain {} holds rules that are not portlocker's, so it stays, and so does its jump: {}",
                self.config.firewall.chain,
                rules.join(" | ")
            );
        }
        Reset {
            said,
            changes: applied.made.len() + forwarded.changes + swept.removed.len(),
            errors,
        }
    }

    fn tidy(&mut self) -> Tidied {
        let swept = flavours::sweep(self.config, &mut self.runner);
        Tidied {
            changes: swept.removed.len(),
            notices: swept.tell_run(),
        }
    }
}

/// A step as one line of shell: the bare command when the firewall was read,
/// otherwise the command guarded by its check, exactly as a run decides.
fn shell_line(config: &Config, step: &Step) -> String {
    let family = step.change.family();
    let make = Command::iptables(config, family, args(&step.change));
    if step.checked {
        return make.to_string();
    }
    let check = Command::iptables(config, family, check_args(&step.change));
    match step.change {
        Change::NewChain { .. } => format!("{check} >/dev/null 2>&1 || {make}"),
        Change::DeleteChain { .. } => format!("if {check} >/dev/null 2>&1; then {make}; fi"),
        _ if step.change.removes() => format!("while {check} 2>/dev/null; do {make}; done"),
        _ => format!("{check} 2>/dev/null || {make}"),
    }
}

/// The two kernel subsystems iptables can drive. They keep separate tables
/// and the kernel applies both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Backend {
    NfTables,
    Legacy,
}

impl Backend {
    /// Which backend the binary at `path` is, read from where its links
    /// lead (`/sbin/iptables` → `iptables-nft` → `xtables-nft-multi`), so
    /// telling costs no process. None when the name does not say.
    pub fn of(path: &Path) -> Option<Backend> {
        let target = std::fs::canonicalize(path).ok()?;
        let name = target.file_name()?.to_string_lossy().into_owned();
        if name.contains("nft") {
            Some(Backend::NfTables)
        } else if name.contains("legacy") {
            Some(Backend::Legacy)
        } else {
            None
        }
    }

    pub fn other(self) -> Backend {
        match self {
            Backend::NfTables => Backend::Legacy,
            Backend::Legacy => Backend::NfTables,
        }
    }

    /// The name of its iptables binary for `family`, as Debian installs it.
    pub fn binary_name(self, family: Family) -> &'static str {
        match (self, family) {
            (Backend::NfTables, Family::Ipv4) => "iptables-nft",
            (Backend::NfTables, Family::Ipv6) => "ip6tables-nft",
            (Backend::Legacy, Family::Ipv4) => "iptables-legacy",
            (Backend::Legacy, Family::Ipv6) => "ip6tables-legacy",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::NfTables => "nf_tables",
            Backend::Legacy => "legacy",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the iptables program of `family` cannot be run, if it cannot:
/// missing, not a regular file, or with no execute permission. Names the
/// config key and the package that fix it.
pub fn binary_problem(config: &Config, family: Family) -> Option<String> {
    let (key, hint) = match family {
        Family::Ipv4 => ("firewall.iptables", ""),
        Family::Ipv6 => ("firewall.ip6tables", ", or firewall.ipv6 = false"),
    };
    program_problem(config.binary(family), "iptables", key, hint)
}

/// The config key that names `family`'s restore tool.
fn restore_key(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "firewall.iptables_restore",
        Family::Ipv6 => "firewall.ip6tables_restore",
    }
}

/// Why the restore tool of `family` cannot be run, if it cannot: its
/// changes then go rule by rule.
pub fn restore_problem(config: &Config, family: Family) -> Option<String> {
    let program = config.restore_binary(family);
    program_problem(program, "iptables", restore_key(family), "")
}

/// The iptables binary of `backend` for `family`: the configured one when
/// it is of that backend (or its backend cannot be told: a wrapper),
/// otherwise its sibling, found as the sweep of leftovers finds it.
pub fn flavour_binary(config: &Config, family: Family, backend: Backend) -> Option<PathBuf> {
    let configured = config.binary(family);
    match Backend::of(configured) {
        Some(found) if found != backend => {
            flavours::sibling(configured, backend, family, &flavours::Places::system())
        }
        // A wrapper says nothing of its backend: it stands for nf_tables,
        // and the kernel's list of tables for legacy.
        None if backend == Backend::Legacy => None,
        _ => configured.is_file().then(|| configured.to_owned()),
    }
}

/// The save tool beside an iptables binary (`iptables-nft` →
/// `iptables-nft-save`), when it is there and of the same backend.
pub fn save_beside(binary: &Path) -> Option<PathBuf> {
    let name = binary.file_name()?.to_string_lossy().into_owned();
    let save = binary.with_file_name(format!("{name}-save"));
    let same = Backend::of(&save) == Backend::of(binary);
    (save.is_file() && same).then_some(save)
}

/// INPUT as read one rule at a time, each rule only nft can print
/// standing as `Listed::nft_only`.
fn held_of(read: nft_only::Piecemeal, family: Family) -> ChainRules {
    let rules = read
        .rules
        .into_iter()
        .enumerate()
        .map(|(index, rule)| match rule {
            Some(spec) => Listed::new(spec),
            None => Listed::nft_only(nft_only::described(index + 1, family, "filter", "INPUT")),
        });
    ChainRules {
        policy: read.policy,
        rules: rules.collect(),
    }
}

/// Puts what `held` says portlocker's part holds (INPUT and portlocker's
/// chain, as listed) into `path` in place of what was read there.
pub fn place(config: &Config, path: &mut InputPath, held: &FamilyHoldings) {
    let legacy = Backend::of(config.binary(path.family)) == Some(Backend::Legacy);
    let index = path.tables.iter().position(|table| {
        table.name == "filter"
            && matches!(table.tool, Tool::Iptables { legacy: l, .. } if l == legacy)
    });
    let index = index.unwrap_or_else(|| {
        path.tables.push(Table {
            name: "filter".into(),
            family: family_word(path.family).into(),
            tool: Tool::Iptables {
                binary: config.binary(path.family).to_owned(),
                legacy,
            },
            chains: BTreeMap::new(),
        });
        path.tables.len() - 1
    });
    let ours = config.firewall.chain.as_str().to_owned();
    let table = &mut path.tables[index];
    let known: BTreeSet<String> = table.chains.keys().cloned().chain([ours.clone()]).collect();
    let is_chain = |name: &str| known.contains(name);
    let rules = |chain: &str, listed: &[Listed]| {
        Chain::of(
            listed
                .iter()
                .map(|rule| match rule.nft_only_said() {
                    Some(said) => nft_only::unknown(said),
                    None => read::rule(chain, &rule.spec, &is_chain),
                })
                .collect(),
        )
    };
    table
        .chains
        .insert("INPUT".into(), rules("INPUT", &held.input.rules));
    if !config.firewall.chain.is_input() {
        match &held.chain {
            Some(chain) => {
                table
                    .chains
                    .insert(ours.clone(), rules(&ours, &chain.rules));
            }
            None => {
                table.chains.remove(&ours);
            }
        }
    }
    let policy = match held.input.policy.as_deref() {
        Some("DROP") => Policy::Drop,
        _ => Policy::Accept,
    };
    path.bases
        .retain(|base| !(base.table == index && base.chain == "INPUT"));
    path.bases.push(Base {
        table: index,
        chain: "INPUT".into(),
        hook: Hook::Input,
        priority: 0,
        kind: ChainKind::Filter,
        policy,
        device: None,
    });
}

/// The command that deletes the rule `cited` from its chain, as iptables
/// lists it. None for a rule about no port in particular (`-A INPUT -j
/// DROP`, a default deny): deleting that would open, or close, every port
/// it decides.
pub fn remedy(cited: &Cited) -> Option<Command> {
    let (Tool::Iptables { binary, .. }, Some(rule)) = (&cited.tool, &cited.rule) else {
        return None;
    };
    if !rule.names_ports {
        return None;
    }
    let prefix = format!("-A {} ", cited.chain);
    let spec = model::split_listed(rule.text.strip_prefix(&prefix)?);
    let mut args = vec!["-w".to_owned(), XTABLES_WAIT_SECS.to_string()];
    if cited.table != "filter" {
        args.extend(["-t".to_owned(), cited.table.clone()]);
    }
    args.extend(listed_args("-D", &cited.chain, &spec));
    Some(Command {
        program: binary.clone(),
        args,
        stdin: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::runner::Termination;

    /// The moment verdicts are read at in tests.
    fn test_now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .to_utc()
    }
    use crate::config::{PortSpec, ServiceName};
    use crate::firewall::fake::FakeIptables;
    use crate::firewall::model::PortState;
    use crate::firewall::plan::plan;
    use crate::firewall::truth::held_state as service_state;

    fn config() -> Config {
        Config::parse(
            "source = \"-\"\n[firewall]\niptables_restore = \"/nonexistent/iptables-restore\"\n\
             ip6tables_restore = \"/nonexistent/ip6tables-restore\"\n\
             [services]\nssh = 22\nmosh = \"60000-61000/udp\"\n",
        )
        .unwrap()
    }

    fn run_once(config: &Config, fake: &mut FakeIptables, text: &str) -> (Holdings, Vec<String>) {
        let wants = crate::intake::intent::wants_of(config, text);
        let mut firewall = Firewall::new(config, fake);
        let (mut holdings, errors) = firewall.observe(false);
        assert!(errors.is_empty(), "{errors:?}");
        let steps = plan(config, &wants, &holdings, &Default::default());
        let applied = firewall.apply(&steps, &mut holdings);
        (
            holdings,
            applied.errors.iter().map(ToString::to_string).collect(),
        )
    }

    #[test]
    fn rule_argv_with_and_without_keeping_sessions() {
        let ssh = Rule {
            family: Family::Ipv4,
            chain: ChainName::new("PORTLOCKER").unwrap(),
            service: ServiceName::new("ssh").unwrap(),
            ports: PortSpec::parse("22").unwrap(),
            keep_established: true,
            source: None,
            deadline: None,
        };
        assert_eq!(
            ssh.spec().join(" "),
            "-p tcp -m tcp --dport 22 --syn -m comment --comment portlocker:ssh -j DROP"
        );
        let mosh = Rule {
            service: ServiceName::new("mosh").unwrap(),
            ports: PortSpec::parse("60000-61000/udp").unwrap(),
            ..ssh.clone()
        };
        assert_eq!(
            mosh.spec().join(" "),
            "-p udp -m udp --dport 60000:61000 -m conntrack --ctstate NEW,UNTRACKED -m comment --comment portlocker:mosh -j DROP"
        );
        let plain = Rule {
            keep_established: false,
            ..ssh
        };
        let letting = plain.letting("203.0.113.7/32".parse().unwrap());
        // In portlocker's chain a source returns to INPUT, where bans still apply.
        assert_eq!(
            args(&Change::Append(letting.clone())).join(" "),
            "-I PORTLOCKER 1 -s 203.0.113.7/32 -p tcp -m tcp --dport 22 -m comment --comment portlocker:ssh -j RETURN"
        );
        assert_eq!(
            args(&Change::Delete(letting.clone())).join(" "),
            "-D PORTLOCKER -s 203.0.113.7/32 -p tcp -m tcp --dport 22 -m comment --comment portlocker:ssh -j RETURN"
        );
        let in_input = Rule {
            chain: ChainName::new("INPUT").unwrap(),
            ..letting
        };
        assert_eq!(
            args(&Change::Append(in_input)).join(" "),
            "-A INPUT -s 203.0.113.7/32 -p tcp -m tcp --dport 22 -m comment --comment portlocker:ssh -j ACCEPT"
        );
        assert_eq!(
            args(&Change::Append(plain)).join(" "),
            "-A PORTLOCKER -p tcp -m tcp --dport 22 -m comment --comment portlocker:ssh -j DROP"
        );
    }

    #[test]
    fn close_then_rerun_is_idempotent_and_open_removes_duplicates() {
        let config = config();
        let mut fake = FakeIptables::default();
        let (holdings, errors) = run_once(&config, &mut fake, "close ssh\nclose mosh\n");
        assert!(errors.is_empty(), "{errors:?}");
        let ssh = ServiceName::new("ssh").unwrap();
        let state = |holdings: &Holdings, family| {
            service_state(
                &config,
                holdings.family(family).unwrap(),
                family,
                &ssh,
                test_now(),
            )
        };
        assert_eq!(state(&holdings, Family::Ipv6), PortState::Closed);
        // Two jumps and four rules.
        assert_eq!(fake.rules().len(), 6, "{:?}", fake.rules());

        fake.calls.clear();
        let (again, _) = run_once(&config, &mut fake, "close ssh\nclose mosh\n");
        assert_eq!(again, holdings);
        assert!(
            fake.calls.iter().all(|call| call.contains(" -S ")),
            "{:?}",
            fake.calls
        );
        assert_eq!(
            fake.calls.len(),
            4,
            "INPUT and the chain, per family: {:?}",
            fake.calls
        );

        // A duplicate someone added by hand goes too.
        let listing = fake.listing("iptables", "PORTLOCKER").unwrap();
        let duplicate = listing.lines().find(|r| r.contains("--dport 22")).unwrap();
        let added = fake.admin("iptables", duplicate);
        assert_eq!(added.termination, Termination::Code(0), "{}", added.stderr);
        let (holdings, _) = run_once(&config, &mut fake, "open ssh\n");
        assert_eq!(state(&holdings, Family::Ipv4), PortState::Open);
        let rules = fake.rules();
        assert!(
            rules.iter().all(|r| !r.contains("portlocker:ssh")),
            "{rules:?}"
        );
        assert!(rules.iter().any(|r| r.contains("portlocker:mosh")));
    }

    #[test]
    fn a_failed_rule_does_not_stop_the_others_and_is_reported() {
        let config = config();
        let mut fake = FakeIptables::default();
        fake.fail_appends = true;
        let (holdings, errors) = run_once(&config, &mut fake, "close ssh\nclose mosh\n");
        assert_eq!(errors.len(), 4, "{errors:?}");
        let ssh_append = "-A PORTLOCKER -p tcp -m tcp --dport 22 --syn -m comment --comment portlocker:ssh -j DROP` exited with 4: iptables: Bad rule.";
        assert!(errors.iter().any(|e| e.ends_with(ssh_append)), "{errors:?}");
        let appends = fake.calls.iter().filter(|c| c.contains(" -A ")).count();
        assert_eq!(appends, 4);
        let ssh = ServiceName::new("ssh").unwrap();
        let held = holdings.family(Family::Ipv4).unwrap();
        assert_eq!(
            service_state(&config, held, Family::Ipv4, &ssh, test_now()),
            PortState::Open
        );
    }

    #[test]
    fn a_transaction_rewrites_the_chain_whole_and_moves_the_jump_in_one_commit() {
        use crate::firewall::model::{ChainRules, JumpTag, split_listed};
        let config = config();
        let chain = &config.firewall.chain;
        let mut held = FamilyHoldings::bare();
        held.input.rules = vec![
            Listed::new(split_listed("-s 192.0.2.1/32 -j ACCEPT")),
            Listed::new(JumpTag::A.spec(chain)),
        ];
        let ssh = crate::firewall::model::rules_of(&config, Family::Ipv4)
            .find(|rule| rule.service.as_str() == "ssh")
            .unwrap();
        held.chain = Some(ChainRules {
            policy: None,
            rules: vec![Listed::new(split_listed(
                "-s 198.51.100.0/24 -m comment --comment \"the owner's \\\"own\\\"\" -j ACCEPT",
            ))],
        });
        let changes = [
            Change::InsertJump {
                family: Family::Ipv4,
                chain: chain.clone(),
                tag: JumpTag::B,
            },
            Change::DeleteJump {
                family: Family::Ipv4,
                chain: chain.clone(),
                spec: JumpTag::A.spec(chain),
            },
            Change::Append(ssh),
        ];
        let refs: Vec<&Change> = changes.iter().collect();
        let transaction = transaction(&config, Family::Ipv4, &held, &refs);
        assert_eq!(
            transaction.text,
            "*filter\n\
             :PORTLOCKER - [0:0]\n\
             -A PORTLOCKER -s 198.51.100.0/24 -m comment --comment \"the owner's \\\"own\\\"\" -j ACCEPT\n\
             -A PORTLOCKER -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment portlocker:ssh -j DROP\n\
             -D INPUT -m comment --comment portlocker:jump.a -j PORTLOCKER\n\
             -I INPUT 1 -m comment --comment portlocker:jump.b -j PORTLOCKER\n\
             COMMIT\n"
        );
        assert_eq!(transaction.about(4), "IPv4: close ssh 22/tcp");
        assert!(
            transaction.about(3).contains("your rule"),
            "{}",
            transaction.about(3)
        );
        assert_eq!(transaction.after.jumps(&config).len(), 1);
        assert_eq!(transaction.after.jumps(&config)[0].index, 0);
    }

    #[test]
    fn with_chain_input_a_transaction_holds_only_the_additions_and_deletions() {
        let config = Config::parse(
            "source = \"-\"\n[firewall]\nchain = \"INPUT\"\n[services]\nssh = 22\nweb = 80\n",
        )
        .unwrap();
        let rule = |name: &str| {
            crate::firewall::model::rules_of(&config, Family::Ipv4)
                .find(|rule| rule.service.as_str() == name)
                .unwrap()
        };
        let mut held = FamilyHoldings::bare();
        held.record(&config, &Change::Append(rule("web")));
        let changes = [Change::Append(rule("ssh")), Change::Delete(rule("web"))];
        let refs: Vec<&Change> = changes.iter().collect();
        let text = transaction(&config, Family::Ipv4, &held, &refs).text;
        assert_eq!(
            text,
            "*filter\n\
             -A INPUT -p tcp -m tcp --dport 22 --syn -m comment --comment portlocker:ssh -j DROP\n\
             -D INPUT -p tcp -m tcp --dport 80 --syn -m comment --comment portlocker:web -j DROP\n\
             COMMIT\n"
        );
    }

    #[test]
    fn refusals_name_their_line() {
        assert_eq!(
            refused_line("iptables-restore: line 4 failed: Bad rule."),
            Some(4)
        );
        assert_eq!(
            refused_line("Couldn't load match `time'\n\nError occurred at line: 3\nTry …"),
            Some(3)
        );
        assert_eq!(
            refused_line("iptables-restore: unable to initialize table"),
            None
        );
    }

    #[test]
    fn a_reset_transaction_empties_the_chain_unhooks_it_and_deletes_it() {
        use crate::firewall::model::JumpTag;
        let config = config();
        let mut held = FamilyHoldings::bare();
        for change in [
            Change::NewChain {
                family: Family::Ipv4,
                chain: config.firewall.chain.clone(),
            },
            Change::InsertJump {
                family: Family::Ipv4,
                chain: config.firewall.chain.clone(),
                tag: JumpTag::A,
            },
        ] {
            held.record(&config, &change);
        }
        let holdings = Holdings {
            families: [(Family::Ipv4, Some(held.clone()))].into(),
        };
        let (steps, _) = crate::firewall::plan::reset(&config, &holdings);
        let changes: Vec<&Change> = steps.iter().map(|step| &step.change).collect();
        let transaction = transaction(&config, Family::Ipv4, &held, &changes);
        assert_eq!(
            transaction.text,
            "*filter\n:PORTLOCKER - [0:0]\n\
             -D INPUT -m comment --comment portlocker:jump.a -j PORTLOCKER\n\
             -X PORTLOCKER\nCOMMIT\n"
        );
        assert_eq!(transaction.after, FamilyHoldings::bare());
    }
}
