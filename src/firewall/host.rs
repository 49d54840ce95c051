//! Reads the host's input path (`ruleset.rs`) through each tool's reader:
//! which chains are hooked (`nft -j list chains`), iptables' tables (one
//! `iptables-save` where they are small, else chain by chain from the
//! hooks), legacy iptables only when the kernel lists legacy tables (listing
//! them would load them), and every other nftables table hooked on the way
//! in (whole where small, else chain by chain). Chain by chain, only what a
//! new connection to a managed port can reach is read: a jump no such
//! connection can take is left unread, and the walk would say so if it ever
//! got there. Runs only read-only commands, through the runner.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;

use ipnet::IpNet;
use std::path::{Path, PathBuf};

use crate::config::{BackendKind, Config, Family, PortSpec};
use crate::firewall::eval::{may_match, may_publish};
use crate::firewall::iptables::{self, nft_only, read as ipt};
use crate::firewall::model::Holdings;
use crate::firewall::nft::read::{self as nftr, Listing, Tabled};
use crate::firewall::ruleset::{
    Addresses, Base, Chain, ChainKind, Hook, Host, InputPath, Match, Policy, Step, Table, Test,
    Tool, Verdict, family_word,
};
use crate::firewall::run_command;
use crate::sys::runner::{Command, CommandError, Completion, Failure, Runner};

/// An nftables table is read whole (one `nft -j list table`) up to this
/// many chains, chain by chain beyond.
const TABLE_CHAINS: usize = 40;

/// iptables' tables, their built-in chains on the way in (and on forward),
/// and the priorities iptables registers them at.
const IPTABLES_HOOKS: [(&str, &str, Hook, i32, ChainKind); 9] = [
    (
        "raw",
        "PREROUTING",
        Hook::Prerouting,
        -300,
        ChainKind::Filter,
    ),
    (
        "mangle",
        "PREROUTING",
        Hook::Prerouting,
        -150,
        ChainKind::Route,
    ),
    ("mangle", "INPUT", Hook::Input, -150, ChainKind::Route),
    ("nat", "PREROUTING", Hook::Prerouting, -100, ChainKind::Nat),
    ("filter", "INPUT", Hook::Input, 0, ChainKind::Filter),
    ("security", "INPUT", Hook::Input, 50, ChainKind::Filter),
    ("mangle", "FORWARD", Hook::Forward, -150, ChainKind::Route),
    ("filter", "FORWARD", Hook::Forward, 0, ChainKind::Filter),
    ("security", "FORWARD", Hook::Forward, 50, ChainKind::Filter),
];

/// How many chains of an iptables table are read one by one before the
/// tables are read whole instead.
const CHAIN_READS: usize = 6;

/// Why a chain was not read.
const NOT_NEEDED: &str =
    "not read: no new connection to a managed port can take the rule that leads to it";

/// Reads the host's input path, in every family the config manages, for
/// new connections to the configured ports. Returns what failed too (each
/// also shows in the model as a chain or family that was not read). A
/// program in `hung` is not run again (see `run_command`).
pub fn read<R: Runner>(
    config: &Config,
    runner: R,
    hung: &mut Vec<PathBuf>,
) -> (Host, Vec<CommandError>) {
    let ports: Vec<PortSpec> = config.services.values().flatten().copied().collect();
    let mut reader = Reader {
        config,
        runner,
        hung,
        ports,
        errors: Vec::new(),
        tables: None,
        forward: false,
    };
    let chains = reader.hooked_chains();
    let mut host = Host::default();
    for family in config.families() {
        let path = match &chains {
            Ok(chains) => reader.family(family, chains.as_ref()),
            Err(why) => Err(why.clone()),
        };
        host.families.insert(family, path);
    }
    (host, reader.errors)
}

/// What was recorded of a host, for tests and fixtures: each tool's whole
/// listing, and the host's addresses.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub iptables_save: Option<String>,
    pub ip6tables_save: Option<String>,
    /// `nft -j list ruleset`.
    pub nft_ruleset: Option<String>,
    pub local: Vec<IpAddr>,
    /// The host's interfaces, loopback left out; None: not known.
    pub interfaces: Option<Vec<String>>,
    /// The networks they are on; None: not known.
    pub networks: Option<Vec<(String, IpNet)>>,
}

/// The host a recording shows, read as a run would read it whole.
pub fn from_recorded(recorded: &Recorded, families: &[Family]) -> Result<Host, String> {
    let listing = match &recorded.nft_ruleset {
        Some(text) => Some(nftr::listing(text)?),
        None => None,
    };
    let mut host = Host::default();
    for &family in families {
        let mut path = InputPath::new(family);
        path.local = Some(
            recorded
                .local
                .iter()
                .copied()
                .filter(|address| same_family(*address, family))
                .collect(),
        );
        path.interfaces = recorded.interfaces.clone();
        path.networks = recorded.networks.as_ref().map(|networks| {
            let of_family = |(_, net): &&(String, IpNet)| match net {
                IpNet::V4(_) => family == Family::Ipv4,
                IpNet::V6(_) => family == Family::Ipv6,
            };
            networks.iter().filter(of_family).cloned().collect()
        });
        path.forward_read = true;
        let save = match family {
            Family::Ipv4 => &recorded.iptables_save,
            Family::Ipv6 => &recorded.ip6tables_save,
        };
        let tool = Tool::Iptables {
            binary: PathBuf::from(match family {
                Family::Ipv4 => "/usr/sbin/iptables",
                Family::Ipv6 => "/usr/sbin/ip6tables",
            }),
            legacy: false,
        };
        let taken = match save {
            Some(text) => add_saved(&mut path, text, tool, listing.as_ref()),
            None => BTreeSet::new(),
        };
        if let Some(listing) = &listing {
            for ((word, name), tabled) in &listing.tables {
                if applies(word, family) && !(taken.contains(name) && is_iptables_table(word, name))
                {
                    add_native(&mut path, word, name, tabled.clone());
                }
            }
        }
        path.order();
        host.families.insert(family, Ok(path));
    }
    Ok(host)
}

struct Reader<'a, R: Runner> {
    config: &'a Config,
    runner: R,
    hung: &'a mut Vec<PathBuf>,
    ports: Vec<PortSpec>,
    errors: Vec<CommandError>,
    /// `nft -j list tables`, once needed.
    tables: Option<Listing>,
    /// Reading the forward hook's chains too, and every chain they reach.
    forward: bool,
}

impl<R: Runner> Reader<'_, R> {
    fn run(&mut self, command: Command) -> Result<Completion, CommandError> {
        run_command(&mut self.runner, self.hung, command)
    }

    fn nft(&mut self, args: &[&str]) -> Result<Completion, CommandError> {
        let command = Command {
            program: self.config.firewall.nft.clone(),
            args: args.iter().map(|arg| arg.to_string()).collect(),
            stdin: None,
        };
        self.run(command)
    }

    /// Every chain of every table, with its hook: None when nft is not
    /// installed, and the host is read through iptables alone. Err when nft
    /// is there but cannot tell: a table it alone would show may drop or
    /// accept anything, so nothing can be told.
    fn hooked_chains(&mut self) -> Result<Option<Listing>, String> {
        let listed = match self.nft(&["-j", "list", "chains"]) {
            Ok(done) => done.stdout,
            Err(CommandError {
                failure: Failure::Spawn(error),
                ..
            }) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                let why = format!("nft could not list the chains: {error}");
                self.errors.push(error);
                return Err(why);
            }
        };
        match nftr::listing(&listed) {
            Ok(listing) => Ok(Some(listing)),
            Err(why) => Err(format!("nft's list of chains cannot be read: {why}")),
        }
    }

    /// One family's input path; with the forward hook's chains when a
    /// managed port may be translated to another host (Docker publishing
    /// it): that is where such a connection is filtered.
    fn family(&mut self, family: Family, chains: Option<&Listing>) -> Result<InputPath, String> {
        let before = self.errors.len();
        let path = self.family_read(family, chains)?;
        if !may_publish(&path, &self.ports) {
            return Ok(path);
        }
        self.errors.truncate(before);
        self.forward = true;
        let path = self.family_read(family, chains);
        self.forward = false;
        path
    }

    /// One family's input path, as `forward` says.
    fn family_read(
        &mut self,
        family: Family,
        chains: Option<&Listing>,
    ) -> Result<InputPath, String> {
        let mut path = InputPath::new(family);
        path.local = crate::sys::net::local_addresses(family);
        path.interfaces = crate::sys::net::interfaces();
        path.networks = crate::sys::net::networks(family);
        let before = self.errors.len();
        let taken = self.iptables(family, chains, &mut path);
        if let Some(error) = self.errors[before..]
            .iter()
            .find(|error| error.needs_root())
        {
            return Err(error.to_string());
        }
        if chains.is_some() {
            self.unless_awake(&mut path, &taken);
        }
        self.legacy(family, &mut path);
        if let Some(chains) = chains {
            for ((word, name), tabled) in &chains.tables {
                let by_iptables = taken.contains(name) && is_iptables_table(word, name);
                if applies(word, family) && !by_iptables {
                    self.native(&mut path, word, name, tabled);
                }
            }
        }
        if chains.is_none() && taken.is_empty() && path.tables.is_empty() {
            return Err("neither nft nor iptables could list the firewall".to_owned());
        }
        if !self.forward {
            path.bases.retain(|base| base.hook != Hook::Forward);
        }
        path.forward_read = self.forward;
        path.order();
        Ok(path)
    }

    /// iptables' (nf_tables) tables of `family`: whole or chain by chain.
    /// Returns the names of the tables iptables read.
    fn iptables(
        &mut self,
        family: Family,
        chains: Option<&Listing>,
        path: &mut InputPath,
    ) -> BTreeSet<String> {
        let Some(binary) =
            iptables::flavour_binary(self.config, family, iptables::Backend::NfTables)
        else {
            return BTreeSet::new();
        };
        let word = family_word(family);
        let present: Vec<(&str, Option<&Tabled>)> = ["raw", "mangle", "nat", "filter", "security"]
            .into_iter()
            .filter_map(|name| match chains {
                Some(listing) => listing
                    .tables
                    .get(&(word.to_owned(), name.to_owned()))
                    .map(|t| (name, Some(t))),
                None => Some((name, None)),
            })
            .collect();
        if present.is_empty() {
            return BTreeSet::new();
        }
        let tool = Tool::Iptables {
            binary: binary.clone(),
            legacy: false,
        };
        // Chain by chain while few chains are reachable: iptables-save costs
        // as the whole ruleset does (400 ms for 20,000 rules, however few
        // chains hold them), a chain's listing as that chain does. Where the
        // way in fans out into many chains (ufw's), they are small ones, and
        // one listing of it all is cheaper than a process each.
        let few = self.iptables_by_chain(path, &binary, &present, tool.clone(), CHAIN_READS);
        if let Some(taken) = few {
            return taken;
        }
        match iptables::save_beside(&binary).map(|save| self.run(plain(&save, &[]))) {
            Some(Ok(done)) => return add_saved(path, &done.stdout, tool, chains),
            Some(Err(error)) => self.errors.push(error),
            None => {}
        }
        // No save tool that works: every chain, one by one, never nothing.
        self.iptables_by_chain(path, &binary, &present, tool, usize::MAX)
            .unwrap_or_default()
    }

    /// iptables' tables chain by chain, from their built-in chains on the way in.
    fn iptables_by_chain(
        &mut self,
        path: &mut InputPath,
        binary: &Path,
        present: &[(&str, Option<&Tabled>)],
        tool: Tool,
        budget: usize,
    ) -> Option<BTreeSet<String>> {
        let family = path.family;
        let mut taken = BTreeSet::new();
        let mut tables = Vec::new();
        for &(name, tabled) in present {
            let hooks: Vec<_> = IPTABLES_HOOKS
                .iter()
                .filter(|hook| hook.0 == name && self.hooks(hook.2))
                .collect();
            let is_chain = |chain: &str| tabled.is_none_or(|t| t.chains.contains_key(chain));
            let mut table = Table {
                name: name.to_owned(),
                family: family_word(path.family).to_owned(),
                tool: tool.clone(),
                chains: BTreeMap::new(),
            };
            let mut bases = Vec::new();
            for &&(_, chain, hook, priority, kind) in &hooks {
                if tabled.is_some_and(|t| !t.chains.contains_key(chain)) {
                    continue;
                }
                let listed = self.list_iptables(binary, family, name, chain, &is_chain);
                let policy = match listed {
                    Some((read, policy)) => {
                        table.chains.insert(chain.to_owned(), read);
                        policy.unwrap_or(Policy::Accept)
                    }
                    // Incompatible (nft's own rules in it): nft reads it.
                    None => continue,
                };
                let priority = tabled
                    .and_then(|t| t.chains.get(chain))
                    .and_then(|h| h.as_ref())
                    .map_or(priority, |h| h.priority);
                bases.push((chain, hook, priority, kind, policy));
            }
            if bases.is_empty() {
                continue;
            }
            let within = self.follow(
                path,
                &mut table,
                &|reader, chain| {
                    reader
                        .list_iptables(binary, family, name, chain, &is_chain)
                        .map(|(read, _)| read)
                },
                budget,
            );
            if !within {
                return None;
            }
            taken.insert(name.to_owned());
            tables.push((table, bases));
        }
        for (table, bases) in tables {
            push_table(path, table, bases);
        }
        Some(taken)
    }

    /// `iptables [-t TABLE] -S CHAIN`; None when iptables cannot show it
    /// (missing, or holding what only nft can list).
    fn list_iptables(
        &mut self,
        binary: &Path,
        family: Family,
        table: &str,
        chain: &str,
        is_chain: &dyn Fn(&str) -> bool,
    ) -> Option<(Chain, Option<Policy>)> {
        let mut args = vec!["-w".to_owned(), iptables::XTABLES_WAIT_SECS.to_string()];
        if table != "filter" {
            args.extend(["-t".to_owned(), table.to_owned()]);
        }
        args.extend(["-S".to_owned(), chain.to_owned()]);
        let command = Command {
            program: binary.to_owned(),
            args,
            stdin: None,
        };
        let error = match self.run(command.clone()) {
            Ok(done) => return Some(ipt::listed(&done.stdout, chain, is_chain)),
            Err(error) if error.chain_is_missing() => return None,
            Err(error) => error,
        };
        match nft_only::read(&mut self.runner, self.hung, &command, error) {
            Ok(read) => Some(piecemeal(read, family, table, chain, is_chain)),
            Err(error) => {
                let why = format!("chain {chain} could not be read: {error}");
                self.errors.push(error);
                Some((Chain::unread(why), None))
            }
        }
    }

    /// Reads, breadth first, the chains `table`'s read chains jump or go to
    /// where a new connection to a managed port may take the jump; leaves
    /// the others unread.
    fn follow(
        &mut self,
        path: &InputPath,
        table: &mut Table,
        read: &dyn Fn(&mut Self, &str) -> Option<Chain>,
        budget: usize,
    ) -> bool {
        let mut queue: VecDeque<String> = table.chains.keys().cloned().collect();
        // Chains read or to be read; a chain left unread so far is read
        // once any rule that may match leads to it.
        let mut taken: BTreeSet<String> = queue.iter().cloned().collect();
        while let Some(name) = queue.pop_front() {
            let mut wanted: Vec<(String, bool)> = Vec::new();
            if let Some(chain) = table.chains.get(&name) {
                for rule in &chain.rules {
                    let (Verdict::Jump(target) | Verdict::Goto(target)) = &rule.verdict else {
                        continue;
                    };
                    if !taken.contains(target) {
                        // Past a translation the port may be another:
                        // forwarding's chains are read whole.
                        let needed = self.forward || may_match(path, rule, &self.ports);
                        wanted.push((target.clone(), needed));
                    }
                }
            }
            // Bail out before reading, once the chains to read outgrow the budget.
            let more = wanted
                .iter()
                .filter(|(target, needed)| *needed && !taken.contains(target));
            let more: BTreeSet<&String> = more.map(|(target, _)| target).collect();
            if taken.len() + more.len() > budget {
                return false;
            }
            for (target, needed) in wanted {
                if taken.contains(&target) {
                    continue;
                }
                if needed {
                    let chain = read(self, &target)
                        .unwrap_or_else(|| Chain::unread(format!("chain {target} does not exist")));
                    table.chains.insert(target.clone(), chain);
                    taken.insert(target.clone());
                    queue.push_back(target);
                } else {
                    table
                        .chains
                        .entry(target)
                        .or_insert_with(|| Chain::unread(NOT_NEEDED.to_owned()));
                }
            }
        }
        true
    }

    /// Legacy iptables' tables, when the kernel lists any for `family`.
    fn legacy(&mut self, family: Family, path: &mut InputPath) {
        let loaded = legacy_loaded(family);
        let binary = iptables::flavour_binary(self.config, family, iptables::Backend::Legacy);
        let (true, Some(binary)) = (loaded, binary) else {
            return;
        };
        let Some(save) = iptables::save_beside(&binary) else {
            return;
        };
        match self.run(plain(&save, &[])) {
            Ok(done) => {
                add_saved(
                    path,
                    &done.stdout,
                    Tool::Iptables {
                        binary,
                        legacy: true,
                    },
                    None,
                );
            }
            Err(error) => {
                let why = format!("legacy iptables could not be read: {error}");
                self.errors.push(error);
                let table = Table {
                    name: "filter".into(),
                    family: family_word(family).into(),
                    tool: Tool::Iptables {
                        binary,
                        legacy: true,
                    },
                    chains: BTreeMap::from([("INPUT".to_owned(), Chain::unread(why))]),
                };
                push_table(
                    path,
                    table,
                    vec![("INPUT", Hook::Input, 0, ChainKind::Filter, Policy::Accept)],
                );
            }
        }
    }

    /// An nftables table with chains on the way in: whole, or chain by chain.
    fn native(&mut self, path: &mut InputPath, word: &str, name: &str, tabled: &Tabled) {
        if !tabled
            .chains
            .values()
            .flatten()
            .any(|hooked| hooked.hook.is_some_and(|hook| self.hooks(hook)))
        {
            return;
        }
        let read = match tabled.chains.len() <= TABLE_CHAINS {
            true => match self.nft_listing_unless_gone(&["-j", "list", "table", word, name]) {
                // Deleted since the list of chains (a manager's reload, a
                // wipe): the host as it is now has no such table. Not an
                // iptables table read through nft (its iptables missing):
                // that one nft must show, or nothing is known of it.
                Ok(None) if !is_iptables_table(word, name) => return,
                Ok(None) => Err(format!(
                    "nft does not show table {word} {name}, and its iptables cannot be run"
                )),
                Ok(Some(mut listing)) => Ok(listing
                    .tables
                    .remove(&(word.to_owned(), name.to_owned()))
                    .unwrap_or_default()),
                Err(why) => Err(why),
            },
            false => Ok(self.native_by_chain(path, word, name, tabled)),
        };
        let mut read = match read {
            Ok(read) => read,
            Err(why) => {
                let mut unread = tabled.clone();
                for chain in unread.chains.keys() {
                    unread
                        .rules
                        .insert(chain.clone(), Chain::unread(why.clone()));
                }
                unread
            }
        };
        // The hooks as listed with every chain (a table's listing shows them too).
        read.chains = tabled.chains.clone();
        if tabled.chains.len() > TABLE_CHAINS {
            read.flagged = self.flagged(word, name);
        }
        add_native(path, word, name, read);
    }

    /// Marks unread the iptables tables in `taken` that have flags: iptables
    /// lists their rules, but a dormant table's chains see no packet.
    fn unless_awake(&mut self, path: &mut InputPath, taken: &BTreeSet<String>) {
        let word = family_word(path.family);
        for name in taken {
            if !self.flagged(word, name) {
                continue;
            }
            let why = format!(
                "table {word} {name} has flags (dormant, perhaps: then its chains see nothing, \
                 whatever iptables lists); `nft add table {word} {name}` clears them"
            );
            let ours = |table: &&mut Table| {
                &table.name == name && matches!(table.tool, Tool::Iptables { legacy: false, .. })
            };
            for table in path.tables.iter_mut().filter(ours) {
                for chain in table.chains.values_mut() {
                    *chain = Chain::unread(why.clone());
                }
            }
        }
    }

    /// Whether a table has flags, from `nft -j list tables` (read once).
    fn flagged(&mut self, word: &str, name: &str) -> bool {
        if self.tables.is_none() {
            self.tables = Some(
                self.nft_listing(&["-j", "list", "tables"])
                    .unwrap_or_default(),
            );
        }
        let key = (word.to_owned(), name.to_owned());
        self.tables
            .as_ref()
            .and_then(|tables| tables.tables.get(&key))
            .is_some_and(|table| table.flagged)
    }

    /// `nft ARGS`, read as a listing; Err saying why not.
    /// `nft_listing`, but Ok(None) when what it lists no longer exists.
    fn nft_listing_unless_gone(&mut self, args: &[&str]) -> Result<Option<Listing>, String> {
        self.listing(args, true)
    }

    fn nft_listing(&mut self, args: &[&str]) -> Result<Listing, String> {
        self.listing(args, false)
            .map(|listing| listing.unwrap_or_default())
    }

    /// What `nft ARGS` lists; with `gone_is_none`, None where nft says it
    /// does not exist (an error otherwise, told in `errors`).
    fn listing(&mut self, args: &[&str], gone_is_none: bool) -> Result<Option<Listing>, String> {
        match self.nft(args) {
            Err(CommandError {
                failure: Failure::Exited { code: 1, stderr },
                ..
            }) if gone_is_none && stderr.starts_with("Error: No such file or directory") => {
                Ok(None)
            }
            Ok(done) => nftr::listing(&done.stdout)
                .map(Some)
                .map_err(|why| format!("`nft {}` printed {why}", args.join(" "))),
            Err(error) => {
                let why = error.to_string();
                self.errors.push(error);
                Err(why)
            }
        }
    }

    /// A large nftables table, chain by chain from its hooks, with the sets
    /// its read rules name.
    fn native_by_chain(
        &mut self,
        path: &InputPath,
        word: &str,
        name: &str,
        tabled: &Tabled,
    ) -> Tabled {
        let mut table = Table {
            name: name.to_owned(),
            family: word.to_owned(),
            tool: Tool::Nft,
            chains: BTreeMap::new(),
        };
        for (chain, hooked) in &tabled.chains {
            if hooked
                .as_ref()
                .and_then(|h| h.hook)
                .is_some_and(|hook| self.hooks(hook))
            {
                let read = self.nft_chain(word, name, chain);
                table.chains.insert(chain.clone(), read);
            }
        }
        self.follow(
            path,
            &mut table,
            &|reader, chain| Some(reader.nft_chain(word, name, chain)),
            usize::MAX,
        );
        let mut sets = BTreeMap::new();
        for set in named_sets(&table) {
            if let Ok(mut listing) = self.nft_listing(&["-j", "list", "set", word, name, &set]) {
                let key = (word.to_owned(), name.to_owned());
                if let Some(found) = listing
                    .tables
                    .remove(&key)
                    .and_then(|mut t| t.sets.remove(&set))
                {
                    sets.insert(set, found);
                }
            }
        }
        let mut read = Tabled {
            chains: tabled.chains.clone(),
            rules: table.chains,
            sets,
            flagged: false,
        };
        nftr::fill_sets(&mut read);
        read
    }

    /// Whether chains on `hook` are read.
    fn hooks(&self, hook: Hook) -> bool {
        self.forward || hook != Hook::Forward
    }

    fn nft_chain(&mut self, word: &str, table: &str, chain: &str) -> Chain {
        match self.nft_listing(&["-j", "list", "chain", word, table, chain]) {
            Ok(mut listing) => listing
                .tables
                .remove(&(word.to_owned(), table.to_owned()))
                .and_then(|mut t| t.rules.remove(chain))
                .unwrap_or_default(),
            Err(why) => Chain::unread(why),
        }
    }
}

/// The sets a table's read rules name whose contents are not yet known.
fn named_sets(table: &Table) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for chain in table.chains.values() {
        for rule in &chain.rules {
            for step in &rule.steps {
                match step {
                    Step::Test(Match {
                        test:
                            Test::Source(Addresses::Set { name, ranges: None })
                            | Test::Destination(Addresses::Set { name, ranges: None }),
                        ..
                    }) => {
                        names.insert(name.clone());
                    }
                    Step::Test(Match {
                        test: Test::Unknown(text),
                        ..
                    }) => {
                        if let Some(name) = nftr::port_set_named(text) {
                            names.insert(name.to_owned());
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    names
}

/// A command with no `-w` (the save tools wait on their own).
fn plain(program: &Path, args: &[&str]) -> Command {
    Command {
        program: program.to_owned(),
        args: args.iter().map(|arg| arg.to_string()).collect(),
        stdin: None,
    }
}

/// Whether the kernel lists legacy iptables tables of `family` in this
/// network namespace (listing them with iptables-legacy would create them).
/// Unit tests drive a fake host that has none, whatever this machine has.
fn legacy_loaded(family: Family) -> bool {
    let names = match family {
        Family::Ipv4 => "/proc/net/ip_tables_names",
        Family::Ipv6 => "/proc/net/ip6_tables_names",
    };
    !cfg!(test) && std::fs::read_to_string(names).is_ok_and(|text| !text.trim().is_empty())
}

/// A chain iptables read one rule at a time, each rule only nft can print
/// unknown.
fn piecemeal(
    read: nft_only::Piecemeal,
    family: Family,
    table: &str,
    chain: &str,
    is_chain: &dyn Fn(&str) -> bool,
) -> (Chain, Option<Policy>) {
    let rules = read
        .rules
        .iter()
        .enumerate()
        .map(|(index, rule)| match rule {
            Some(spec) => ipt::rule(chain, spec, is_chain),
            None => nft_only::unknown(&nft_only::described(index + 1, family, table, chain)),
        });
    let policy = read.policy.as_deref().and_then(ipt::policy_named);
    (Chain::of(rules.collect()), policy)
}

/// Whether an nft table of family `word` sees packets of `family`.
fn applies(word: &str, family: Family) -> bool {
    matches!(
        (word, family),
        ("ip", Family::Ipv4) | ("ip6", Family::Ipv6) | ("inet" | "netdev", _)
    )
}

fn is_iptables_table(word: &str, name: &str) -> bool {
    matches!(word, "ip" | "ip6") && matches!(name, "raw" | "mangle" | "nat" | "filter" | "security")
}

fn same_family(address: IpAddr, family: Family) -> bool {
    matches!(
        (address, family),
        (IpAddr::V4(_), Family::Ipv4) | (IpAddr::V6(_), Family::Ipv6)
    )
}

/// Adds the tables of `iptables-save` output; returns their names.
fn add_saved(
    path: &mut InputPath,
    text: &str,
    tool: Tool,
    chains: Option<&Listing>,
) -> BTreeSet<String> {
    let word = family_word(path.family);
    let mut taken = BTreeSet::new();
    for saved in ipt::saved(text) {
        let hooks: Vec<_> = IPTABLES_HOOKS
            .iter()
            .filter(|hook| hook.0 == saved.name)
            .collect();
        let mut bases = Vec::new();
        for &&(_, chain, hook, priority, kind) in &hooks {
            if !saved.chains.contains_key(chain) {
                continue;
            }
            let listed = chains
                .and_then(|listing| listing.tables.get(&(word.to_owned(), saved.name.clone())))
                .and_then(|t| t.chains.get(chain))
                .and_then(|h| h.as_ref());
            let priority = listed.map_or(priority, |h| h.priority);
            let policy = saved.policies.get(chain).copied().unwrap_or(Policy::Accept);
            bases.push((chain, hook, priority, kind, policy));
        }
        taken.insert(saved.name.clone());
        let table = Table {
            name: saved.name,
            family: word.to_owned(),
            tool: tool.clone(),
            chains: saved.chains,
        };
        push_table(path, table, bases);
    }
    taken
}

/// Adds an nftables table read into `tabled`. What a table with flags
/// does is not known (a dormant one's chains see nothing).
fn add_native(path: &mut InputPath, word: &str, name: &str, tabled: Tabled) {
    let mut chains = tabled.rules;
    if tabled.flagged {
        let why = format!(
            "table {word} {name} has flags (dormant, perhaps: then its chains see nothing), \
             and nft does not say which"
        );
        for chain in tabled.chains.keys() {
            chains.insert(chain.clone(), Chain::unread(why.clone()));
        }
    }
    let mut bases = Vec::new();
    for (chain, hooked) in &tabled.chains {
        chains.entry(chain.clone()).or_default();
        let Some(hooked) = hooked else { continue };
        let Some(hook) = hooked.hook else { continue };
        bases.push(Base {
            table: path.tables.len(),
            chain: chain.clone(),
            hook,
            priority: hooked.priority,
            kind: hooked.kind,
            policy: hooked.policy,
            device: hooked.device.clone(),
        });
    }
    if bases.is_empty() {
        return;
    }
    path.tables.push(Table {
        name: name.to_owned(),
        family: word.to_owned(),
        tool: Tool::Nft,
        chains,
    });
    path.bases.extend(bases);
}

fn push_table(
    path: &mut InputPath,
    table: Table,
    bases: Vec<(&str, Hook, i32, ChainKind, Policy)>,
) {
    let index = path.tables.len();
    path.bases.extend(
        bases
            .into_iter()
            .map(|(chain, hook, priority, kind, policy)| Base {
                table: index,
                chain: chain.to_owned(),
                hook,
                priority,
                kind,
                policy,
                device: None,
            }),
    );
    path.tables.push(table);
}

/// The host as it would be with portlocker's part replaced by what
/// `holdings` say (what `check` asks of the firewall as runs would leave
/// it). Families `holdings` could not read stay as read.
pub fn with_ours(config: &Config, host: &Host, holdings: &Holdings) -> Host {
    let mut after = host.clone();
    for (&family, path) in after.families.iter_mut() {
        let (Ok(path), Some(held)) = (path, holdings.family(family)) else {
            continue;
        };
        match config.firewall.backend {
            BackendKind::Iptables => iptables::place(config, path, held),
            BackendKind::Nftables => crate::firewall::nft::place(config, path, held),
        }
        path.order();
    }
    after
}

/// `host` as read, but with portlocker's part as `holdings` say where the
/// read no longer shows it (wiped between the commit and the read): the
/// run judges what it made, and the wipe is told by the next run as a
/// wipe. Where the read shows it, the read stands (it sees what the
/// holdings' words cannot, as a blind run's chain).
pub fn with_ours_if_gone(config: &Config, host: &Host, holdings: &Holdings) -> Host {
    let gone = host
        .families
        .values()
        .flatten()
        .any(|path| !holds_ours(config, path));
    match gone {
        true => with_ours(config, host, holdings),
        false => host.clone(),
    }
}

/// Whether `path` shows portlocker's place: its table (nftables), or its
/// chain (iptables; in INPUT itself, always).
fn holds_ours(config: &Config, path: &InputPath) -> bool {
    let chain = config.firewall.chain.as_str();
    path.tables
        .iter()
        .any(|table| match config.firewall.backend {
            BackendKind::Nftables => table.family == "inet" && table.name == "portlocker",
            BackendKind::Iptables => {
                table.name == "filter"
                    && matches!(table.tool, Tool::Iptables { .. })
                    && (config.firewall.chain.is_input() || table.chains.contains_key(chain))
            }
        })
}

/// A runner that answers a read-only command it has already run from
/// memory, until any other command runs: a run reads the same chains for
/// its plan and for its verdicts once.
pub struct Recall<R> {
    inner: R,
    seen: Vec<(Command, Completion)>,
}

impl<R: Runner> Recall<R> {
    pub fn new(inner: R) -> Recall<R> {
        Recall {
            inner,
            seen: Vec::new(),
        }
    }
}

impl<R: Runner> Runner for Recall<R> {
    fn run(&mut self, command: &Command) -> std::io::Result<Completion> {
        if !reads(command) {
            self.seen.clear();
            return self.inner.run(command);
        }
        if let Some((_, done)) = self.seen.iter().find(|(seen, _)| seen == command) {
            return Ok(done.clone());
        }
        let done = self.inner.run(command)?;
        self.seen.push((command.clone(), done.clone()));
        Ok(done)
    }
}

/// Whether a command only reads: a listing (`-S`, `nft list`, a save tool).
fn reads(command: &Command) -> bool {
    let name = command
        .program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let args: Vec<&str> = command.args.iter().map(String::as_str).collect();
    command.stdin.is_none()
        && (name.ends_with("-save")
            || args.contains(&"-S")
            || matches!(args[..], ["-j", "list", ..]))
}

/// The host as portlocker's part alone shows it, nothing else hooked: what
/// its own place lets in (and tests that hold only that part).
pub(crate) fn of_holdings(config: &Config, holdings: &Holdings) -> Host {
    let mut empty = Host::default();
    for family in config.families() {
        let read = match holdings.family(family) {
            Some(_) => Ok(InputPath::new(family)),
            None => Err("not read".to_owned()),
        };
        empty.families.insert(family, read);
    }
    with_ours(config, &empty, holdings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::eval::{Question, evaluate};
    use crate::firewall::fake::FakeIptables;
    use crate::firewall::model::PortState;

    fn config() -> Config {
        let text = "source = \"-\"\n[firewall]\nipv6 = false\nnft = \"/nonexistent/nft\"\n[services]\nssh = 22\n";
        Config::parse(text).unwrap()
    }

    /// A family whose tools are all missing is not read: unknown, never
    /// "nothing drops it".
    #[test]
    fn a_family_no_tool_can_list_is_not_read() {
        let text = "source = \"-\"\n[firewall]\nip6tables = \"/nonexistent/ip6tables\"\n\
                    nft = \"/nonexistent/nft\"\n[services]\nssh = 22\n";
        let config = Config::parse(text).unwrap();
        let mut fake = FakeIptables::default();
        fake.missing.insert("nft");
        fake.missing.insert("ip6tables");
        fake.admin("ip6tables", "-A INPUT -p tcp -m tcp --dport 22 -j DROP");
        let (host, _) = read(&config, &mut fake, &mut Vec::new());
        assert!(host.family(Family::Ipv4).is_some());
        assert!(
            host.family(Family::Ipv6).is_none(),
            "{:?}",
            host.families[&Family::Ipv6]
        );
    }

    #[test]
    fn a_chain_first_met_through_a_rule_that_cannot_match_is_read_when_another_can() {
        let config = config();
        let mut fake = FakeIptables::default();
        for line in [
            "-N NODEPORTS",
            // First a jump no connection to 22 can take, then one every one takes.
            "-A INPUT -p tcp -m tcp --dport 80 -j NODEPORTS",
            "-A INPUT -j NODEPORTS",
            "-A NODEPORTS -p tcp -m tcp --dport 22 -j DROP",
        ] {
            fake.admin("iptables", line);
        }
        let (host, errors) = read(&config, &mut fake, &mut Vec::new());
        assert!(errors.is_empty(), "{errors:?}");
        let path = host.family(Family::Ipv4).unwrap();
        let question = Question {
            family: Family::Ipv4,
            ports: PortSpec::parse("22").unwrap(),
            from: None,
        };
        let answer = evaluate(path, &question, crate::sys::clock::now_utc());
        assert_eq!(answer.state, PortState::Closed, "{}", answer.reason);
        // Nothing is translated away: forwarding is not read.
        assert!(!path.forward_read);
        assert!(
            fake.calls.iter().all(|call| !call.contains("FORWARD")),
            "{:?}",
            fake.calls
        );
    }
}
