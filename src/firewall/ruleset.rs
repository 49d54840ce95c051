//! The host's input path as data that belongs to no backend: per family,
//! the base chains a packet from the network for this host meets on its way
//! in, in the kernel's order, each an ordered list of rules with tests,
//! effects and a verdict, every rule keeping its text in the words of the
//! tool that made it. Built by the readers (`iptables/read.rs`,
//! `nft/read.rs`, put together by `host.rs`) and judged by `eval.rs`. Pure
//! data: no tool's vocabulary beyond the rule texts, no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use chrono::{DateTime, NaiveTime, Utc};
use ipnet::IpNet;

use crate::config::Family;

/// What this host holds on the way in, per family read. A family that could
/// not be read at all holds why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    pub families: BTreeMap<Family, Result<InputPath, String>>,
}

impl Host {
    /// The input path of `family`, when it was read.
    pub fn family(&self, family: Family) -> Option<&InputPath> {
        self.families
            .get(&family)
            .and_then(|read| read.as_ref().ok())
    }

    /// The firewall managers whose rules are here, each once, in the order
    /// first met.
    pub fn managers(&self) -> Vec<Manager> {
        let mut found = Vec::new();
        for path in self.families.values().flatten() {
            for table in &path.tables {
                for (name, chain) in &table.chains {
                    let names = std::iter::once(Manager::of(table, name, None))
                        .chain(chain.rules.iter().map(|rule| rule.manager(table, name)));
                    for manager in names.flatten() {
                        if !found.contains(&manager) {
                            found.push(manager);
                        }
                    }
                }
            }
        }
        found
    }
}

/// One family's way in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPath {
    pub family: Family,
    /// The base chains on the ingress, prerouting and input hooks (and on
    /// forward, when `forward_read`), in the order the kernel runs them
    /// (hook, then priority).
    pub bases: Vec<Base>,
    pub tables: Vec<Table>,
    /// This host's own addresses in the family, loopback left out: where a
    /// packet from the network for this host is addressed. None when they
    /// could not be read.
    pub local: Option<Vec<IpAddr>>,
    /// This host's interfaces, loopback left out: where a packet from the
    /// network comes in. None when they could not be read.
    pub interfaces: Option<Vec<String>>,
    /// The networks this host's interfaces are on: a packet translated to
    /// an address in one leaves by that interface. None when not read.
    pub networks: Option<Vec<(String, IpNet)>>,
    /// Whether the forward hook's base chains were read (they are where a
    /// port translated to another host is filtered): read only when a
    /// managed port may be translated away.
    pub forward_read: bool,
}

impl InputPath {
    pub fn new(family: Family) -> InputPath {
        InputPath {
            family,
            bases: Vec::new(),
            tables: Vec::new(),
            local: None,
            interfaces: None,
            networks: None,
            forward_read: false,
        }
    }

    /// Puts the base chains in the kernel's order: by hook, then priority.
    /// Equal priorities have no guaranteed order (the walk does not rely on one).
    pub fn order(&mut self) {
        self.bases.sort_by_key(|base| (base.hook, base.priority));
    }

    /// The interface a packet forwarded to `address` leaves by, when one of
    /// this host's networks holds it.
    pub fn leaving_by(&self, address: IpAddr) -> Option<&str> {
        let networks = self.networks.as_ref()?;
        networks
            .iter()
            .filter(|(_, net)| net.contains(&address))
            .max_by_key(|(_, net)| net.prefix_len())
            .map(|(name, _)| name.as_str())
    }

    /// The table at `index`, with the chain `name` of it, if both exist.
    pub fn chain(&self, table: usize, name: &str) -> Option<&Chain> {
        self.tables.get(table)?.chains.get(name)
    }
}

/// A chain the kernel calls from a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// Index into `InputPath::tables`.
    pub table: usize,
    pub chain: String,
    pub hook: Hook,
    pub priority: i32,
    pub kind: ChainKind,
    pub policy: Policy,
    /// For an ingress chain: the device it is attached to.
    pub device: Option<String>,
}

/// The hooks a packet for this host passes, in the order it passes them;
/// after prerouting, one translated to another host takes forward instead
/// of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    Ingress,
    Prerouting,
    Input,
    Forward,
}

/// Before this priority on prerouting, connection tracking has not yet
/// seen the packet: a `notrack` there leaves it untracked.
pub const CONNTRACK_PRIORITY: i32 = -200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    Filter,
    /// Address translation: sees only a connection's first packet.
    Nat,
    /// iptables' mangle: may change what routing decides.
    Route,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    Accept,
    Drop,
}

/// A table and the tool that made it (which says how to quote and remove
/// its rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// As its tool names it: `filter`, `firewalld`.
    pub name: String,
    /// nft's family word: `ip`, `ip6`, `inet`, `netdev`.
    pub family: String,
    pub tool: Tool,
    pub chains: BTreeMap<String, Chain>,
}

impl Table {
    /// How messages name it: `iptables filter`, `nftables inet firewalld`.
    pub fn shown(&self) -> String {
        match &self.tool {
            Tool::Iptables { legacy: true, .. } => format!("legacy iptables {}", self.name),
            Tool::Iptables { .. } => format!("iptables {}", self.name),
            Tool::Nft => format!("nftables {} {}", self.family, self.name),
        }
    }
}

/// The tool whose words a table's rules are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tool {
    /// iptables (or ip6tables) at `binary`, which lists and deletes them.
    Iptables {
        binary: PathBuf,
        legacy: bool,
    },
    Nft,
}

/// A chain's rules in order; `unread` says why they are not known (the
/// walk cannot pass such a chain).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    pub rules: Vec<Rule>,
    pub unread: Option<String>,
}

impl Chain {
    pub fn of(rules: Vec<Rule>) -> Chain {
        Chain {
            rules,
            unread: None,
        }
    }

    pub fn unread(why: String) -> Chain {
        Chain {
            rules: Vec::new(),
            unread: Some(why),
        }
    }
}

/// One rule: its steps in order (each test must hold for the next step to
/// be taken; each effect happens when reached), then its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub steps: Vec<Step>,
    pub verdict: Verdict,
    /// As its tool prints it: `-A INPUT -p tcp -m tcp --dport 22 -j DROP`,
    /// `tcp dport 22 drop`.
    pub text: String,
    /// nft's handle of it, which deletes it.
    pub handle: Option<u64>,
    /// Its comment, where it has one (portlocker's rules are tagged there).
    pub comment: Option<String>,
}

impl Rule {
    /// Whether it matches some destination ports only, rather than
    /// whatever reaches it: deleting a rule that does not would open (or
    /// close) every port it decides.
    pub fn names_ports(&self) -> bool {
        self.steps.iter().any(|step| {
            matches!(
                step,
                Step::Test(Match {
                    test: Test::DestPort(_),
                    negated: false
                })
            )
        })
    }

    /// The manager that made it, if its table, chain or target tells.
    pub fn manager(&self, table: &Table, chain: &str) -> Option<Manager> {
        let target = match &self.verdict {
            Verdict::Jump(target) | Verdict::Goto(target) => Some(target.as_str()),
            _ => None,
        };
        Manager::of(table, chain, self.comment.as_deref())
            .or_else(|| target.and_then(|target| Manager::of(table, target, None)))
    }
}

/// A firewall manager whose rules portlocker recognises by where they are,
/// to name it (and never to advise deleting its rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Manager {
    Portlocker,
    Ufw,
    Fail2ban,
    Firewalld,
    Docker,
    Kubernetes,
    Calico,
}

impl Manager {
    /// The manager of chain `chain` of `table`, or of a rule with `comment`.
    pub fn of(table: &Table, chain: &str, comment: Option<&str>) -> Option<Manager> {
        if comment.is_some_and(|comment| comment.starts_with("portlocker:"))
            || (table.family == "inet" && table.name == "portlocker")
        {
            return Some(Manager::Portlocker);
        }
        let table_name = table.name.as_str();
        let prefixed = |prefixes: &[&str]| prefixes.iter().any(|p| chain.starts_with(p));
        if prefixed(&["ufw-", "ufw6-"]) {
            Some(Manager::Ufw)
        } else if prefixed(&["f2b-"]) || table_name.starts_with("f2b-") {
            Some(Manager::Fail2ban)
        } else if table_name == "firewalld"
            || matches!(chain, "INPUT_direct" | "INPUT_ZONES" | "INPUT_POLICIES")
            || prefixed(&["IN_", "FWD_", "PRE_", "POST_", "FWDI_", "FWDO_"])
        {
            Some(Manager::Firewalld)
        } else if prefixed(&["DOCKER"]) || table_name.starts_with("docker") {
            Some(Manager::Docker)
        } else if prefixed(&["KUBE-"]) || table_name.starts_with("kube") {
            Some(Manager::Kubernetes)
        } else if prefixed(&["cali-"]) {
            Some(Manager::Calico)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Manager::Portlocker => "portlocker",
            Manager::Ufw => "ufw",
            Manager::Fail2ban => "fail2ban",
            Manager::Firewalld => "firewalld",
            Manager::Docker => "Docker",
            Manager::Kubernetes => "Kubernetes (kube-proxy)",
            Manager::Calico => "Calico",
        }
    }
}

impl fmt::Display for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Test(Match),
    Do(Effect),
}

/// A test, or its negation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub negated: bool,
    pub test: Test,
}

impl Match {
    pub fn is(test: Test) -> Match {
        Match {
            negated: false,
            test,
        }
    }

    pub fn not(test: Test) -> Match {
        Match {
            negated: true,
            test,
        }
    }
}

/// What a rule can ask of a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    /// The layer-4 protocol number (6 tcp, 17 udp).
    Protocol(u8),
    /// Any of these protocols.
    Protocols(Vec<u8>),
    DestPort(Ranges),
    SourcePort(Ranges),
    Source(Addresses),
    Destination(Addresses),
    /// The interface it came in on is one of these names (`+` or `*` at
    /// the end: any name starting so).
    InInterface(Vec<String>),
    OutInterface(Vec<String>),
    /// Its conntrack state is one of these.
    State(States),
    /// Its destination was translated (`ct status dnat`).
    Translated,
    /// The destination port its connection was first sent to, before any
    /// translation (`--ctorigdstport`, `ct original proto-dst`).
    OriginalDestPort(Ranges),
    /// The packet goes the reply way of its connection (`--ctdir REPLY`):
    /// never the first packet of a new one.
    Reply,
    /// `(flags & mask) == compare`, TCP flags.
    TcpFlags {
        mask: u8,
        compare: u8,
    },
    /// Its source (or destination) address is of one of these kinds.
    AddressType {
        destination: bool,
        kinds: Vec<AddressKind>,
    },
    /// How the packet was addressed at the link layer.
    PacketType(Vec<AddressKind>),
    /// A reverse-path check: true for a source routed back the way it came.
    ReversePath,
    /// A non-first fragment.
    Fragment,
    /// An IPv6 extension header (routing, fragment, hop-by-hop,
    /// destination options) is there.
    ExtensionHeader,
    Time(TimeTest),
    /// A rate, count or recent-list test: `over` when it holds for a flood
    /// (`--hitcount`, `limit rate over`), not for a connection alone.
    Rate {
        over: bool,
    },
    /// `(mark & mask) == value`, the packet's mark or (`connection`) its
    /// connection's.
    Mark {
        connection: bool,
        mask: u32,
        value: u32,
    },
    /// The packet's family (an `inet` table's `meta nfproto`).
    Family(Family),
    /// Holds for every packet (a comment, `recent --set`).
    Always,
    /// Something portlocker does not model, in the rule's words.
    Unknown(String),
}

/// Conntrack states, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct States(pub u8);

impl States {
    pub const NEW: States = States(1);
    pub const ESTABLISHED: States = States(2);
    pub const RELATED: States = States(4);
    pub const INVALID: States = States(8);
    pub const UNTRACKED: States = States(16);
    /// iptables' virtual states: the destination (source) was translated.
    pub const DNAT: States = States(32);
    pub const SNAT: States = States(64);

    pub fn with(self, other: States) -> States {
        States(self.0 | other.0)
    }

    pub fn has(self, other: States) -> bool {
        self.0 & other.0 != 0
    }

    /// A state by name, either tool's spelling.
    pub fn named(name: &str) -> Option<States> {
        Some(match name.to_ascii_lowercase().as_str() {
            "new" => States::NEW,
            "established" => States::ESTABLISHED,
            "related" => States::RELATED,
            "invalid" => States::INVALID,
            "untracked" => States::UNTRACKED,
            "dnat" => States::DNAT,
            "snat" => States::SNAT,
            _ => return None,
        })
    }
}

/// Kinds of address (`addrtype`, `fib … type`, `pkttype`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressKind {
    Local,
    Unicast,
    Broadcast,
    Multicast,
    Other(String),
}

impl AddressKind {
    pub fn named(name: &str) -> AddressKind {
        match name.to_ascii_lowercase().as_str() {
            "local" => AddressKind::Local,
            "unicast" | "host" => AddressKind::Unicast,
            "broadcast" => AddressKind::Broadcast,
            "multicast" => AddressKind::Multicast,
            other => AddressKind::Other(other.to_owned()),
        }
    }
}

/// A time test, judged at the moment of the evaluation (UTC, as the
/// kernel judges it unless told otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeTest {
    /// From this moment on.
    From(DateTime<Utc>),
    /// Before this moment, strictly: nft's `meta time < T`; iptables'
    /// `--datestop T` holds through the whole second T, so it is `Before(T + 1 s)`.
    Before(DateTime<Utc>),
    /// Between two times of day (may wrap past midnight).
    Daily(NaiveTime, NaiveTime),
    /// On these weekdays (1 = Monday … 7 = Sunday).
    Weekdays(Vec<u32>),
}

/// Addresses a test names: ranges, or a named set whose contents may not
/// be known (an ipset, a set too large to follow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addresses {
    Ranges(Ranges),
    Set {
        name: String,
        ranges: Option<Ranges>,
    },
}

impl Addresses {
    pub fn nets(nets: &[IpNet]) -> Addresses {
        let mut ranges = Ranges::default();
        for net in nets {
            ranges = ranges.union(&Ranges::of_net(net));
        }
        Addresses::Ranges(ranges)
    }
}

/// A set of numbers (addresses as u128, IPv4 in the low 32 bits; ports) as
/// sorted, disjoint, inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ranges(pub Vec<(u128, u128)>);

impl Ranges {
    pub fn span(first: u128, last: u128) -> Ranges {
        Ranges(vec![(first.min(last), first.max(last))])
    }

    pub fn of_net(net: &IpNet) -> Ranges {
        Ranges::span(number(net.network()), number(net.broadcast()))
    }

    pub fn of_addr(addr: IpAddr) -> Ranges {
        Ranges::span(number(addr), number(addr))
    }

    /// Every address of `family`.
    pub fn everything(family: Family) -> Ranges {
        match family {
            Family::Ipv4 => Ranges::span(0, u128::from(u32::MAX)),
            Family::Ipv6 => Ranges::span(0, u128::MAX),
        }
    }

    /// Ranges from any list of spans, normalised.
    pub fn from_spans(mut spans: Vec<(u128, u128)>) -> Ranges {
        spans.sort();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(spans.len());
        for (first, last) in spans {
            match merged.last_mut() {
                Some((_, end)) if first <= end.saturating_add(1) => *end = (*end).max(last),
                _ => merged.push((first, last)),
            }
        }
        Ranges(merged)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, value: u128) -> bool {
        self.0
            .iter()
            .any(|&(first, last)| first <= value && value <= last)
    }

    pub fn union(&self, other: &Ranges) -> Ranges {
        Ranges::from_spans(self.0.iter().chain(&other.0).copied().collect())
    }

    pub fn intersect(&self, other: &Ranges) -> Ranges {
        let (mut a, mut b) = (0, 0);
        let mut out = Vec::new();
        while a < self.0.len() && b < other.0.len() {
            let (first, last) = (self.0[a].0.max(other.0[b].0), self.0[a].1.min(other.0[b].1));
            if first <= last {
                out.push((first, last));
            }
            if self.0[a].1 < other.0[b].1 {
                a += 1;
            } else {
                b += 1;
            }
        }
        Ranges(out)
    }

    pub fn subtract(&self, other: &Ranges) -> Ranges {
        let mut out = Vec::new();
        for &(first, last) in &self.0 {
            let mut start = first;
            let mut done = false;
            for &(cut_first, cut_last) in &other.0 {
                if cut_last < start || cut_first > last {
                    continue;
                }
                if cut_first > start {
                    out.push((start, cut_first - 1));
                }
                if cut_last >= last {
                    done = true;
                    break;
                }
                start = cut_last + 1;
            }
            if !done {
                out.push((start, last));
            }
        }
        Ranges(out)
    }

    /// How many numbers it holds (saturating).
    pub fn count(&self) -> u128 {
        self.0.iter().fold(0u128, |sum, (first, last)| {
            sum.saturating_add(last - first).saturating_add(1)
        })
    }

    /// The ranges as networks of `family`, at most `limit` of them.
    pub fn nets(&self, family: Family, limit: usize) -> Vec<IpNet> {
        let mut nets = Vec::new();
        for &(first, last) in &self.0 {
            let mut start = first;
            loop {
                if nets.len() >= limit {
                    return nets;
                }
                let bits = match family {
                    Family::Ipv4 => 32,
                    Family::Ipv6 => 128,
                };
                // The largest aligned block at `start` that ends by `last`.
                let mut size = if start == 0 {
                    bits
                } else {
                    start.trailing_zeros().min(bits)
                };
                while size > 0 && block_end(start, size).is_none_or(|end| end > last) {
                    size -= 1;
                }
                nets.push(net_of(start, (bits - size) as u8, family));
                match block_end(start, size) {
                    Some(end) if end < last => start = end + 1,
                    _ => break,
                }
            }
        }
        nets
    }
}

fn block_end(start: u128, size: u32) -> Option<u128> {
    if size >= 128 {
        return Some(u128::MAX);
    }
    start.checked_add((1u128 << size) - 1)
}

fn net_of(start: u128, prefix: u8, family: Family) -> IpNet {
    match family {
        Family::Ipv4 => IpNet::V4(
            ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(start as u32), prefix)
                .expect("a prefix within 32"),
        ),
        Family::Ipv6 => IpNet::V6(
            ipnet::Ipv6Net::new(std::net::Ipv6Addr::from(start), prefix)
                .expect("a prefix within 128"),
        ),
    }
}

/// An address as the number the ranges hold.
pub fn number(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// What a rule does besides its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Sets the packet's mark, or (`connection`) its connection's:
    /// `mark = (mark & !clear) ^ toggle`.
    Mark {
        connection: bool,
        clear: u32,
        toggle: u32,
    },
    /// Copies the connection's mark to the packet (`restore`) or back.
    CopyMark { to_packet: bool },
    /// Leaves the connection untracked (before conntrack sees it).
    Notrack,
    /// Translates the destination: to `address` (None: this host, a
    /// redirect), and to `port` if given. Ends the chain, as an accept.
    Dnat {
        address: Option<IpAddr>,
        port: Option<u16>,
        /// As its tool prints the target: `172.17.0.2:80`.
        to: String,
    },
    /// A statement that may change what becomes of the packet, in its
    /// tool's words: the walk cannot go past it.
    Unknown(String),
}

/// The word nftables names a family's own tables by (`ip filter`, `ip6 filter`).
pub fn family_word(family: Family) -> &'static str {
    match family {
        Family::Ipv4 => "ip",
        Family::Ipv6 => "ip6",
    }
}

/// What a rule does when every test holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Reject,
    Return,
    Jump(String),
    Goto(String),
    /// On to the next rule (no verdict, or only effects).
    Continue,
    /// A verdict portlocker does not model (a queue to a program), in the
    /// rule's words.
    Unknown(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(spans: &[(u128, u128)]) -> Ranges {
        Ranges::from_spans(spans.to_vec())
    }

    #[test]
    fn ranges_add_cut_and_meet() {
        let a = ranges(&[(10, 20), (30, 40)]);
        assert_eq!(a.union(&ranges(&[(21, 29)])), ranges(&[(10, 40)]));
        assert_eq!(
            a.intersect(&ranges(&[(15, 35)])),
            ranges(&[(15, 20), (30, 35)])
        );
        assert_eq!(
            a.subtract(&ranges(&[(15, 35)])),
            ranges(&[(10, 14), (36, 40)])
        );
        assert_eq!(a.subtract(&ranges(&[(0, 100)])), Ranges::default());
        assert_eq!(
            a.subtract(&ranges(&[(10, 10), (40, 40)])),
            ranges(&[(11, 20), (30, 39)])
        );
        assert_eq!(a.count(), 22);
        let everything = Ranges::everything(Family::Ipv6);
        assert_eq!(everything.subtract(&everything), Ranges::default());
        assert!(everything.contains(u128::MAX));
    }

    #[test]
    fn ranges_read_back_as_networks() {
        let net: IpNet = "192.0.2.0/24".parse().unwrap();
        let one: IpNet = "198.51.100.7/32".parse().unwrap();
        let both = Ranges::of_net(&net).union(&Ranges::of_net(&one));
        assert_eq!(both.nets(Family::Ipv4, 10), [net, one]);
        assert_eq!(
            Ranges::everything(Family::Ipv4).nets(Family::Ipv4, 10),
            ["0.0.0.0/0".parse::<IpNet>().unwrap()]
        );
        let odd = Ranges::span(1, 6);
        assert_eq!(
            odd.nets(Family::Ipv4, 10)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["0.0.0.1/32", "0.0.0.2/31", "0.0.0.4/31", "0.0.0.6/32"]
        );
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert_eq!(Ranges::of_net(&v6).nets(Family::Ipv6, 3), [v6]);
    }
}
