//! What portlocker holds in the firewall and the changes it makes, as plain
//! data shared by the planner, the verdicts and the iptables layer. Pure:
//! never runs a command.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use ipnet::IpNet;

use crate::config::{ChainName, Config, Family, PortSpec, Protocol, ServiceName};

/// The comment that marks a rule in portlocker's chain as portlocker's.
const TAG_PREFIX: &str = "portlocker:";

/// A rule for one port spec of one service, in one family: a DROP, or with
/// a source, a rule that lets that source past the DROP that follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub family: Family,
    pub chain: ChainName,
    pub service: ServiceName,
    pub ports: PortSpec,
    pub keep_established: bool,
    /// Let this network (of the rule's family) past the DROP.
    pub source: Option<IpNet>,
    /// When the open this rule serves ends, enforced by the kernel
    /// (`-m time`, UTC): a DROP drops only from then on, a source rule lets
    /// through only until then. None: always.
    pub deadline: Option<KernelTime>,
}

/// The last moment xt_time can name (its times are 32-bit): a deadline
/// later than this needs no time match.
pub const LAST_KERNEL_TIME: &str = "2038-01-19T03:14:07";

/// A moment every backend can write and lists back as written: UTC, a
/// whole second (xt_time refuses a leap second's `:60`, nft rounds it up),
/// after the epoch (xt_time lists a start at 0 as no start) and no later
/// than `LAST_KERNEL_TIME`. Rules carry deadlines only as these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelTime(DateTime<Utc>);

/// Why a moment is no `KernelTime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unnameable {
    /// At or before the epoch: the moment has passed for any real clock.
    Past,
    /// After `LAST_KERNEL_TIME`: the kernel cannot say when it comes.
    Beyond,
    /// Not a whole second (a fraction, or a leap second).
    Fraction,
}

impl KernelTime {
    /// `moment` as the kernel names it, or why it cannot.
    pub fn new(moment: DateTime<Utc>) -> Result<KernelTime, Unnameable> {
        if moment.timestamp_subsec_nanos() != 0 {
            return Err(Unnameable::Fraction);
        }
        let seconds = moment.timestamp();
        if seconds <= 0 {
            Err(Unnameable::Past)
        } else if seconds > i64::from(i32::MAX) {
            Err(Unnameable::Beyond)
        } else {
            Ok(KernelTime(moment))
        }
    }

    /// A moment as xt_time lists it (`2026-12-01T18:00:00`); None when it
    /// is not one portlocker writes.
    pub fn from_listed(text: &str) -> Option<KernelTime> {
        let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").ok()?;
        KernelTime::new(naive.and_utc()).ok()
    }

    pub fn moment(self) -> DateTime<Utc> {
        self.0
    }
}

/// A moment as xt_time takes and lists it: UTC, to the second.
pub fn kernel_time(moment: KernelTime) -> String {
    moment.0.format("%Y-%m-%dT%H:%M:%S").to_string()
}

impl Rule {
    /// The comment that marks the rule as portlocker's.
    pub fn tag(&self) -> String {
        format!("{TAG_PREFIX}{}", self.service)
    }

    /// The same rule, letting `source` through rather than dropping everyone.
    pub fn letting(&self, source: IpNet) -> Rule {
        Rule {
            source: Some(source),
            ..self.clone()
        }
    }

    /// The same rule, with the kernel enforcing `deadline`.
    pub fn until(&self, deadline: Option<KernelTime>) -> Rule {
        Rule {
            deadline,
            ..self.clone()
        }
    }

    /// The time match for the deadline, as given and as listed.
    pub fn time_match(&self) -> Vec<String> {
        let Some(deadline) = self.deadline else {
            return Vec::new();
        };
        let moment = kernel_time(deadline);
        match self.source {
            Some(_) => vec!["-m".into(), "time".into(), "--datestop".into(), moment],
            // iptables lists the stop it fills in.
            None => [
                "-m",
                "time",
                "--datestart",
                &moment,
                "--datestop",
                LAST_KERNEL_TIME,
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    /// What a source rule does. In portlocker's own chain it returns to
    /// INPUT, so a ban further down INPUT (fail2ban) still applies; rules
    /// placed straight into INPUT can only accept.
    fn source_target(&self) -> &'static str {
        if self.chain.is_input() {
            "ACCEPT"
        } else {
            "RETURN"
        }
    }

    /// The rule's match and target, as given to `-C`, `-A` and `-D` after
    /// the chain, in the order `iptables -S` lists them.
    pub fn spec(&self) -> Vec<String> {
        let protocol = self.ports.protocol.as_str();
        let mut spec = Vec::new();
        if let Some(source) = self.source {
            spec.extend(["-s".to_owned(), source.to_string()]);
        }
        spec.extend(["-p", protocol, "-m", protocol, "--dport"].map(String::from));
        spec.push(self.ports.dport());
        if self.source.is_some() {
            spec.extend(self.time_match());
            spec.extend(["-m", "comment", "--comment"].map(String::from));
            spec.push(self.tag());
            spec.extend(["-j".to_owned(), self.source_target().to_owned()]);
            return spec;
        }
        if self.keep_established {
            // --syn matches only a new TCP connection, whether or not conntrack
            // saw the session start; UDP has no such flag, so ask conntrack.
            match self.ports.protocol {
                Protocol::Tcp => spec.push("--syn".into()),
                // UNTRACKED too: a NOTRACK rule in the raw table would
                // otherwise carry new flows past a drop for NEW alone.
                Protocol::Udp => {
                    spec.extend(["-m", "conntrack", "--ctstate", "NEW,UNTRACKED"].map(String::from))
                }
            }
        }
        spec.extend(self.time_match());
        spec.extend(["-m", "comment", "--comment"].map(String::from));
        spec.push(self.tag());
        spec.extend(["-j", "DROP"].map(String::from));
        spec
    }

    /// The spec as `iptables -S` lists it back, to find the rule in a listing.
    pub fn listed_spec(&self) -> Vec<String> {
        self.spec()
            .into_iter()
            .flat_map(|arg| match arg.as_str() {
                "--syn" => ["--tcp-flags", "FIN,SYN,RST,ACK", "SYN"]
                    .map(String::from)
                    .to_vec(),
                _ => vec![arg],
            })
            .collect()
    }
}

/// Which of two comments marks a jump to portlocker's chain. A jump that
/// must move to the top of INPUT is inserted with the other one first, so
/// the old jump can be deleted by its own spec afterwards — `-D` removes the
/// first rule that matches, which must never be the new one — and INPUT is
/// never without a jump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum JumpTag {
    A,
    B,
}

impl JumpTag {
    pub fn comment(self) -> &'static str {
        match self {
            JumpTag::A => "portlocker:jump.a",
            JumpTag::B => "portlocker:jump.b",
        }
    }

    /// The jump's spec in INPUT, as given and as listed.
    pub fn spec(self, chain: &ChainName) -> Vec<String> {
        [
            "-m",
            "comment",
            "--comment",
            self.comment(),
            "-j",
            chain.as_str(),
        ]
        .map(String::from)
        .to_vec()
    }
}

/// One change to the firewall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    NewChain {
        family: Family,
        chain: ChainName,
    },
    /// A jump from the top of INPUT to the chain.
    InsertJump {
        family: Family,
        chain: ChainName,
        tag: JumpTag,
    },
    /// Removes the first jump in INPUT listed as `spec`.
    DeleteJump {
        family: Family,
        chain: ChainName,
        spec: Vec<String>,
    },
    /// Deletes the (empty, unreferenced) chain.
    DeleteChain {
        family: Family,
        chain: ChainName,
    },
    Append(Rule),
    /// Removes one copy of the rule.
    Delete(Rule),
    /// Removes one copy of a tagged rule as listed, which the config no longer produces.
    DeleteListed {
        family: Family,
        chain: ChainName,
        spec: Vec<String>,
    },
}

impl Change {
    pub fn family(&self) -> Family {
        match self {
            Change::NewChain { family, .. }
            | Change::InsertJump { family, .. }
            | Change::DeleteJump { family, .. }
            | Change::DeleteChain { family, .. }
            | Change::DeleteListed { family, .. } => *family,
            Change::Append(rule) | Change::Delete(rule) => rule.family,
        }
    }

    /// Whether the change takes something away (and so may need repeating
    /// while copies remain).
    pub fn removes(&self) -> bool {
        !matches!(
            self,
            Change::NewChain { .. } | Change::InsertJump { .. } | Change::Append(_)
        )
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::NewChain { family, chain } => write!(f, "{family}: create chain {chain}"),
            Change::InsertJump { family, chain, .. } => {
                write!(f, "{family}: jump from INPUT to {chain}")
            }
            Change::DeleteJump { family, chain, .. } => {
                write!(f, "{family}: remove jump from INPUT to {chain}")
            }
            Change::DeleteChain { family, chain } => write!(f, "{family}: delete chain {chain}"),
            // What the change does to the port, a timed rule's deadline included.
            Change::Append(rule) => {
                let (family, service, ports) = (rule.family, &rule.service, rule.ports);
                match (rule.source, rule.deadline) {
                    // The kernel stops letting it through at the deadline.
                    (Some(source), None) => {
                        write!(f, "{family}: open {service} {ports} to {source}")
                    }
                    (Some(source), Some(end)) => write!(
                        f,
                        "{family}: open {service} {ports} to {source} until {}",
                        local(end)
                    ),
                    (None, None) => write!(f, "{family}: close {service} {ports}"),
                    (None, Some(end)) => write!(
                        f,
                        "{family}: keep {service} {ports} open until {}, then close it",
                        local(end)
                    ),
                }
            }
            Change::Delete(rule) => {
                let (family, service, ports) = (rule.family, &rule.service, rule.ports);
                match (rule.source, rule.deadline) {
                    (Some(source), _) => {
                        write!(f, "{family}: stop opening {service} {ports} to {source}")
                    }
                    (None, None) => write!(f, "{family}: open {service} {ports}"),
                    (None, Some(end)) => write!(
                        f,
                        "{family}: drop the close of {service} {ports} due at {}",
                        local(end)
                    ),
                }
            }
            Change::DeleteListed { family, spec, .. } => {
                write!(f, "{family}: remove rule {}", tag_of(spec).unwrap_or("?"))
            }
        }
    }
}

/// A deadline as the log shows it: in the server's time zone, with the
/// UTC offset in force on its date.
fn local(moment: KernelTime) -> String {
    moment
        .moment()
        .with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M %:z")
        .to_string()
}

/// The changes of `changes` that append a rule, by its family and the
/// rule as listed (the same in both families).
pub fn appended_by<'a>(changes: &[&'a Change]) -> HashMap<(Family, Vec<String>), &'a Change> {
    let appends = changes.iter().filter_map(|&change| match change {
        Change::Append(rule) => Some(((rule.family, rule.listed_spec()), change)),
        _ => None,
    });
    appends.collect()
}

/// The `portlocker:NAME` tag of a listed rule, if it has one.
pub fn tag_of(spec: &[String]) -> Option<&str> {
    spec.windows(2)
        .find(|pair| pair[0] == "--comment" && pair[1].starts_with(TAG_PREFIX))
        .map(|pair| pair[1].as_str())
}

/// How the tags of portlocker's jumps begin (`JumpTag::comment`).
const JUMP_TAG_PREFIX: &str = "portlocker:jump.";

/// The target `Listed::nft_only` gives a rule iptables cannot print: no
/// chain can be named so (iptables refuses names starting with `!`).
const NFT_ONLY: &str = "!nft-only";

/// One rule of a chain as `iptables -S CHAIN` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The words after `-A CHAIN`, quotes undone, a source address in
    /// canonical form (so `::1.2.3.4` and `::102:304` compare equal).
    pub spec: Vec<String>,
}

impl Listed {
    pub fn new(spec: Vec<String>) -> Listed {
        let mut spec = spec;
        for index in 1..spec.len() {
            if spec[index - 1] == "-s"
                && let Ok(net) = spec[index].parse::<IpNet>()
            {
                spec[index] = net.to_string();
            }
        }
        Listed { spec }
    }

    /// A rule iptables-nft cannot print (only nft can), as `described`:
    /// it decides nothing portlocker can tell, and stops `iptables -D` by
    /// spec from reaching any rule below it.
    pub fn nft_only(described: String) -> Listed {
        let words = ["-m", "comment", "--comment", &described, "-j", NFT_ONLY];
        Listed::new(words.map(String::from).to_vec())
    }

    /// What `nft_only` said of it, if it stands for a rule only nft can print.
    pub fn nft_only_said(&self) -> Option<&str> {
        if self.target() != Some(NFT_ONLY) {
            return None;
        }
        let comment = self.spec.windows(2).find(|pair| pair[0] == "--comment");
        comment.map(|pair| pair[1].as_str())
    }

    /// The chain this rule jumps to, if it jumps.
    pub fn target(&self) -> Option<&str> {
        self.spec
            .windows(2)
            .find(|pair| pair[0] == "-j" || pair[0] == "-g")
            .map(|pair| pair[1].as_str())
    }

    pub fn tag(&self) -> Option<&str> {
        tag_of(&self.spec)
    }

    /// The service a tagged rule is of: its tag's name when that is a
    /// service's, not a jump's (`jump.a`) nor what the nftables backend
    /// names an untagged rule in its table (`? rule 4`).
    pub fn service(&self) -> Option<&str> {
        let name = self.tag()?.strip_prefix(TAG_PREFIX)?;
        ServiceName::new(name).is_ok().then_some(name)
    }

    /// Whether it is a jump of portlocker's to its chain.
    pub fn is_our_jump(&self) -> bool {
        self.tag()
            .is_some_and(|tag| tag.starts_with(JUMP_TAG_PREFIX))
    }

    /// Whether the rule matches some destination ports only (`--dport`,
    /// `--dports`), rather than whatever reaches it.
    pub fn names_ports(&self) -> bool {
        self.spec.iter().any(|word| {
            matches!(
                word.as_str(),
                "--dport" | "--dports" | "--destination-port" | "--destination-ports"
            )
        })
    }

    /// The rule as `iptables -S` prints it, for messages.
    pub fn shown(&self, chain: &str) -> String {
        let mut line = format!("-A {chain}");
        for word in &self.spec {
            line.push(' ');
            if word.is_empty() || word.chars().any(|c| c.is_whitespace() || c == '"') {
                line.push_str(&format!("\"{}\"", word.replace('"', "\\\"")));
            } else {
                line.push_str(word);
            }
        }
        line
    }
}

/// A chain's rules in order, and its policy if it is a built-in chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainRules {
    /// `ACCEPT` or `DROP` for INPUT; None for a user chain.
    pub policy: Option<String>,
    pub rules: Vec<Listed>,
}

impl ChainRules {
    /// Reads the `-A NAME …` and `-P NAME …` lines of `iptables -S NAME`;
    /// `#` lines (iptables-nft's warnings) and other chains are skipped.
    pub fn from_listing(listing: &str, name: &str) -> ChainRules {
        let rule_prefix = format!("-A {name} ");
        let policy_prefix = format!("-P {name} ");
        let mut chain = ChainRules::default();
        for line in listing.lines() {
            if let Some(rest) = line.strip_prefix(&rule_prefix) {
                chain.rules.push(Listed::new(split_listed(rest)));
            } else if let Some(policy) = line.strip_prefix(&policy_prefix) {
                chain.policy = Some(policy.trim().to_owned());
            }
        }
        chain
    }

    fn remove_first(&mut self, spec: &[String]) {
        if let Some(index) = self.rules.iter().position(|rule| rule.spec == spec) {
            self.rules.remove(index);
        }
    }
}

/// Splits a listed rule into words the way iptables-save quotes them:
/// `"…"` groups words and `\"` inside it is a quote.
pub fn split_listed(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            '\\' if quoted => word.get_or_insert_with(String::new).extend(chars.next()),
            c if c.is_whitespace() && !quoted => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// What one family holds: INPUT and portlocker's chain, as listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyHoldings {
    pub input: ChainRules,
    /// portlocker's chain; None when it does not exist. Unused when the
    /// configured chain is INPUT itself.
    pub chain: Option<ChainRules>,
    /// Docker's chain exists: published container ports bypass INPUT.
    pub docker_user: bool,
}

/// A jump from INPUT to portlocker's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump<'a> {
    /// 0 = first in INPUT.
    pub index: usize,
    pub spec: &'a [String],
    pub tag: Option<JumpTag>,
}

impl FamilyHoldings {
    /// An empty firewall: INPUT accepting, no chain of portlocker's.
    pub fn bare() -> FamilyHoldings {
        FamilyHoldings {
            input: ChainRules {
                policy: Some("ACCEPT".into()),
                rules: Vec::new(),
            },
            ..FamilyHoldings::default()
        }
    }

    /// The chain that holds portlocker's rules: its own, or INPUT.
    pub fn ours<'a>(&'a self, config: &Config) -> Option<&'a ChainRules> {
        if config.firewall.chain.is_input() {
            Some(&self.input)
        } else {
            self.chain.as_ref()
        }
    }

    fn ours_mut(&mut self, config: &Config) -> Option<&mut ChainRules> {
        if config.firewall.chain.is_input() {
            Some(&mut self.input)
        } else {
            self.chain.as_mut()
        }
    }

    /// Whether portlocker's chain exists (always, when it is INPUT).
    pub fn chain_exists(&self, config: &Config) -> bool {
        self.ours(config).is_some()
    }

    /// The tagged rules of portlocker's chain, in order.
    pub fn tagged<'a>(&'a self, config: &Config) -> impl Iterator<Item = &'a Listed> + 'a {
        let rules = self.ours(config).map_or(&[][..], |chain| &chain.rules[..]);
        rules.iter().filter(|rule| rule.tag().is_some())
    }

    /// Rules in portlocker's own chain that are not portlocker's.
    pub fn foreign<'a>(&'a self, config: &Config) -> Vec<&'a Listed> {
        if config.firewall.chain.is_input() {
            return Vec::new();
        }
        let rules = self
            .chain
            .as_ref()
            .map_or(&[][..], |chain| &chain.rules[..]);
        rules.iter().filter(|rule| rule.tag().is_none()).collect()
    }

    /// How many copies of `rule` the chain holds.
    pub fn count(&self, config: &Config, rule: &Rule) -> usize {
        let listed = rule.listed_spec();
        self.tagged(config)
            .filter(|held| held.spec == listed)
            .count()
    }

    /// Every jump from INPUT to portlocker's chain, in INPUT's order.
    pub fn jumps<'a>(&'a self, config: &Config) -> Vec<Jump<'a>> {
        let chain = &config.firewall.chain;
        if chain.is_input() {
            return Vec::new();
        }
        self.input
            .rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.target() == Some(chain.as_str()))
            .map(|(index, rule)| Jump {
                index,
                spec: &rule.spec,
                tag: [JumpTag::A, JumpTag::B]
                    .into_iter()
                    .find(|tag| rule.spec == tag.spec(chain)),
            })
            .collect()
    }

    /// Records a change that was carried out, as iptables carries it out.
    pub fn record(&mut self, config: &Config, change: &Change) {
        match change {
            Change::NewChain { .. } => {
                self.chain.get_or_insert_with(ChainRules::default);
            }
            Change::InsertJump { chain, tag, .. } => {
                self.input.rules.insert(0, Listed::new(tag.spec(chain)));
            }
            Change::DeleteJump { spec, .. } => self.input.remove_first(spec),
            Change::DeleteChain { .. } => self.chain = None,
            Change::Append(rule) => {
                let listed = Listed::new(rule.listed_spec());
                if let Some(chain) = self.ours_mut(config) {
                    // A source rule goes first in portlocker's chain, before
                    // the DROPs (`-I CHAIN 1`); in INPUT it is appended.
                    match rule.source {
                        Some(_) if !rule.chain.is_input() => chain.rules.insert(0, listed),
                        _ => chain.rules.push(listed),
                    }
                }
            }
            Change::Delete(rule) => {
                if let Some(chain) = self.ours_mut(config) {
                    chain.remove_first(&rule.listed_spec());
                }
            }
            Change::DeleteListed { spec, .. } => {
                if let Some(chain) = self.ours_mut(config) {
                    chain.remove_first(spec);
                }
            }
        }
    }
}

/// What portlocker's part of the firewall holds, per family; `None` where
/// it could not be read (no root, no iptables, a failed listing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holdings {
    pub families: BTreeMap<Family, Option<FamilyHoldings>>,
}

impl Holdings {
    /// Holdings with nothing read, for a dry run that cannot look.
    pub fn unknown(config: &Config) -> Holdings {
        let families = config.families().into_iter().map(|f| (f, None)).collect();
        Holdings { families }
    }

    /// These holdings without the rules `theirs` says a plan must leave as
    /// they are.
    pub fn without(&self, config: &Config, theirs: impl Fn(&Listed) -> bool) -> Holdings {
        let mut holdings = self.clone();
        for held in holdings.families.values_mut().flatten() {
            if let Some(chain) = held.ours_mut(config) {
                chain.rules.retain(|rule| !theirs(rule));
            }
        }
        holdings
    }

    /// Records a change that was carried out.
    pub fn record(&mut self, config: &Config, change: &Change) {
        if let Some(Some(held)) = self.families.get_mut(&change.family()) {
            held.record(config, change);
        }
    }

    pub fn family(&self, family: Family) -> Option<&FamilyHoldings> {
        self.families.get(&family).and_then(Option::as_ref)
    }
}

/// A service's state in one family, as the owner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PortState {
    Open,
    Closed,
    /// Closed to all but some sources.
    OpenToSources,
    /// Some of its ports are closed and some are not.
    Partial,
    /// Open, but new connections past a rate are dropped (ufw's `limit`).
    RateLimited,
    /// The rules do not say: never reported as closed.
    Unknown,
}

impl PortState {
    /// Every state, in the order above.
    pub const ALL: [PortState; 6] = [
        PortState::Open,
        PortState::Closed,
        PortState::OpenToSources,
        PortState::Partial,
        PortState::RateLimited,
        PortState::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PortState::Open => "open",
            PortState::Closed => "closed",
            PortState::OpenToSources => "open to sources",
            PortState::Partial => "partly closed",
            PortState::RateLimited => "open (rate-limited)",
            PortState::Unknown => "unknown",
        }
    }
}

/// Every rule the config can produce for `family`: one per port spec per service.
pub fn rules_of(config: &Config, family: Family) -> impl Iterator<Item = Rule> + '_ {
    config.services.iter().flat_map(move |(service, specs)| {
        specs.iter().map(move |&ports| Rule {
            family,
            chain: config.firewall.chain.clone(),
            service: service.clone(),
            ports,
            keep_established: config.firewall.keep_established,
            source: None,
            deadline: None,
        })
    })
}

/// The rule of portlocker's chain in `family` that is listed as `spec`,
/// if portlocker makes it.
pub fn rule_of(config: &Config, family: Family, spec: &[String]) -> Option<Rule> {
    let service = ServiceName::new(tag_of(spec)?.strip_prefix("portlocker:")?).ok()?;
    let after = |flag: &str| {
        spec.windows(2)
            .find(|pair| pair[0] == flag)
            .map(|pair| pair[1].as_str())
    };
    let source = match after("-s") {
        Some(net) => Some(net.parse::<IpNet>().ok()?),
        None => None,
    };
    let ports = PortSpec::parse(&format!(
        "{}/{}",
        after("--dport")?.replace(':', "-"),
        after("-p")?
    ))
    .ok()?;
    let deadline = match after("--datestart").or(after("--datestop")) {
        Some(moment) => Some(KernelTime::from_listed(moment)?),
        None => None,
    };
    let rule = Rule {
        family,
        chain: config.firewall.chain.clone(),
        service,
        ports,
        // A source rule lets its source in however the DROPs are made.
        keep_established: match source {
            Some(_) => config.firewall.keep_established,
            None => after("--tcp-flags").is_some() || after("--ctstate").is_some(),
        },
        source,
        deadline,
    };
    (rule.listed_spec() == spec).then_some(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_are_split_as_iptables_save_quotes_them() {
        let listing = "# Warning: iptables-legacy tables present\n-P INPUT ACCEPT\n-A INPUT -j PORTLOCKER\n\
                       -A INPUT -m comment --comment \"a \\\"quoted\\\" thing\" -j ACCEPT\n\
                       -A INPUTX -j DROP\n";
        let input = ChainRules::from_listing(listing, "INPUT");
        assert_eq!(input.policy.as_deref(), Some("ACCEPT"));
        assert_eq!(input.rules.len(), 2);
        assert_eq!(input.rules[0].spec, ["-j", "PORTLOCKER"]);
        assert_eq!(input.rules[0].target(), Some("PORTLOCKER"));
        assert_eq!(
            input.rules[1].spec,
            [
                "-m",
                "comment",
                "--comment",
                "a \"quoted\" thing",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(
            input.rules[1].shown("INPUT"),
            "-A INPUT -m comment --comment \"a \\\"quoted\\\" thing\" -j ACCEPT"
        );
        assert_eq!(input.rules[1].tag(), None);
        let ours = split_listed("-p tcp -m comment --comment \"portlocker:ssh\" -j DROP");
        assert_eq!(tag_of(&ours), Some("portlocker:ssh"));
        assert_eq!(
            split_listed("--comment \"\" -j X"),
            ["--comment", "", "-j", "X"]
        );
    }

    #[test]
    fn sources_compare_in_canonical_form() {
        // ip6tables lists an IPv4-compatible address the old way.
        let listed = Listed::new(split_listed("-s ::1.2.3.4/128 -p tcp -j RETURN"));
        let ours: IpNet = "::102:304/128".parse().unwrap();
        assert_eq!(listed.spec[1], ours.to_string());
        let mapped = Listed::new(split_listed("-s ::ffff:1.2.3.4/128 -j RETURN"));
        assert_eq!(
            mapped.spec[1],
            "::ffff:1.2.3.4/128".parse::<IpNet>().unwrap().to_string()
        );
    }
}
