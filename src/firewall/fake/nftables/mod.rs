//! The fake's nftables: tables of chains of rules, changed by `nft -f`
//! scripts, all of a script or none, listed (`nft -j list …`) and echoed
//! (`nft -e -j -f -`) in the JSON nft 1.0.6 prints, text for text — with
//! the canonical forms it prints rather than what it was given: a family
//! match a source implies left out, `/32` dropped, a network masked, a
//! set of one element a value, a leap second carried (`script.rs` reads,
//! `json.rs` prints). `real.rs` holds it to the real tool. Knows the
//! statements portlocker and the property test's other tools write; any
//! other is a panic that says so.

mod json;
mod script;

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use ipnet::IpNet;

use crate::config::{Family, Protocol};

use super::Probe;
pub(super) use json::echoed;
use json::quoted;
use script::Parser;

/// Every table, in the order they were made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Ruleset {
    pub tables: Vec<Table>,
    /// The kernel's handle counter for tables: it never goes back, not even
    /// for a table an aborted transaction made.
    handles: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Table {
    pub family: String,
    pub name: String,
    handle: u64,
    pub chains: Vec<Chain>,
    /// The table's own handle counter, shared by its chains, rules and
    /// anonymous sets.
    handles: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Chain {
    pub name: String,
    handle: u64,
    pub base: Option<Base>,
    pub rules: Vec<Rule>,
}

/// How a base chain is hooked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Base {
    pub kind: String,
    pub hook: String,
    pub priority: i64,
    pub policy: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rule {
    handle: u64,
    pub statements: Vec<Statement>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Statement {
    Match {
        left: Left,
        op: &'static str,
        right: Right,
    },
    Counter,
    Verdict(Verdict),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Left {
    /// `meta KEY`
    Meta(String),
    /// `PROTOCOL FIELD`: `ip saddr`, `tcp dport`.
    Payload(String, String),
    /// `ct KEY`
    Ct(String),
    /// `tcp flags & (MASK…)`
    TcpFlags(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Right {
    Text(String),
    Number(u64),
    Range(u64, u64),
    Net(IpNet),
    /// `meta time`: nanoseconds since the epoch, as the kernel keeps them.
    Time(u64),
    /// `ct state new,untracked`: flags.
    Flags(Vec<String>),
    /// `{ a, b }`, in the order given (the kernel lists it sorted).
    Set(Vec<Right>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Accept,
    Drop,
    Reject,
    Return,
    Jump(String),
    Goto(String),
}

/// Why a script was refused: where, and what nft says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    line: usize,
    start: usize,
    end: usize,
    why: String,
}

impl Refusal {
    /// nft's words for it: the place, the message, the line and carets.
    pub fn render(&self, script: &str) -> String {
        let text = script.lines().nth(self.line - 1).unwrap_or("");
        format!(
            "/dev/stdin:{}:{}-{}: Error: {}\n{text}\n{}{}\n",
            self.line,
            self.start,
            self.end,
            self.why,
            " ".repeat(self.start - 1),
            "^".repeat(self.end + 1 - self.start)
        )
    }

    /// A refusal of line `line` of `script` as a whole, the way nft names a
    /// rule the kernel would not take.
    pub fn of_line(script: &str, line: usize, why: &str) -> Refusal {
        let text = script.lines().nth(line - 1).unwrap_or("");
        let start = text.len() - text.trim_start().len() + 1;
        Refusal {
            line,
            start,
            end: text.trim_end().len().max(start),
            why: why.to_owned(),
        }
    }
}

/// What a successful script printed with `-e -j`: each object it added.
type Echo = Vec<String>;

/// Reads a script and carries it out on `ruleset`, all of it or none.
pub(super) fn apply(ruleset: &mut Ruleset, script: &str) -> Result<Echo, Refusal> {
    let mut work = ruleset.clone();
    let mut parser = Parser::new(script);
    match parser.script(&mut work) {
        Ok(()) => {
            *ruleset = work;
            Ok(parser.echo)
        }
        Err(refusal) => {
            // Handles handed out before the abort stay used.
            ruleset.handles = work.handles;
            for table in &mut ruleset.tables {
                if let Some(tried) = work.tables.iter().find(|t| t.handle == table.handle) {
                    table.handles = tried.handles;
                }
            }
            Err(refusal)
        }
    }
}

impl Ruleset {
    /// Every rule of every table, one line each — its statements as nft
    /// lists them, its comment last, quoted — for messages and checks.
    pub fn rules(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for table in &self.tables {
            for chain in &table.chains {
                for rule in &chain.rules {
                    let statements: Vec<String> =
                        rule.statements.iter().map(|s| s.json(true)).collect();
                    let mut line = format!(
                        "{} {} {} handle {}: [{}]",
                        table.family,
                        table.name,
                        chain.name,
                        rule.handle,
                        statements.join(", ")
                    );
                    if let Some(comment) = &rule.comment {
                        let _ = write!(line, " comment {}", quoted(comment));
                    }
                    lines.push(line);
                }
            }
        }
        lines
    }

    /// Every source network a rule of a table of `family` names.
    pub fn sources(&self, family: Family) -> Vec<IpNet> {
        let mut nets = Vec::new();
        for table in self.tables.iter().filter(|t| applies(&t.family, family)) {
            for rule in table.chains.iter().flat_map(|c| &c.rules) {
                for statement in &rule.statements {
                    if let Statement::Match {
                        left: Left::Payload(_, field),
                        right,
                        ..
                    } = statement
                        && field == "saddr"
                    {
                        match right {
                            Right::Net(net) => nets.push(*net),
                            Right::Set(items) => {
                                nets.extend(items.iter().filter_map(|item| match item {
                                    Right::Net(net) => Some(*net),
                                    _ => None,
                                }))
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        nets.retain(|net| matches!(net, IpNet::V4(_)) == (family == Family::Ipv4));
        nets
    }

    /// The base chains on the input hook that see packets of `family`: each
    /// table's, with its priority.
    pub fn input_chains(&self, family: Family) -> Vec<(i64, &Table, &Chain)> {
        let mut chains = Vec::new();
        for table in self.tables.iter().filter(|t| applies(&t.family, family)) {
            for chain in &table.chains {
                if let Some(base) = chain
                    .base
                    .as_ref()
                    .filter(|b| b.hook == "input" && b.kind == "filter")
                {
                    chains.push((base.priority, table, chain));
                }
            }
        }
        chains
    }
}
/// Whether portlocker's table in `ruleset` holds the rule a script line
/// writes (in a table block, or `add rule inet portlocker CHAIN …`): a
/// line written again, not for the first time.
pub(super) fn holds(ruleset: &Ruleset, line: &str) -> bool {
    let mut text = line.trim();
    for verb in ["add rule inet portlocker ", "insert rule inet portlocker "] {
        if let Some(rest) = text.strip_prefix(verb) {
            text = rest.split_once(' ').map_or("", |(_, rule)| rule);
        }
    }
    let mut scratch = Ruleset::default();
    let script = format!(
        "add table inet scratch\nadd chain inet scratch x\nadd rule inet scratch x {text}\n"
    );
    if apply(&mut scratch, &script).is_err() {
        return false;
    }
    let written = &scratch.tables[0].chains[0].rules[0];
    ruleset
        .tables
        .iter()
        .filter(|table| table.family == "inet" && table.name == "portlocker")
        .flat_map(|table| table.chains.iter().flat_map(|chain| &chain.rules))
        .any(|rule| rule.statements == written.statements && rule.comment == written.comment)
}

/// Whether a table of nft family `table_family` sees packets of `family`.
fn applies(table_family: &str, family: Family) -> bool {
    matches!(
        (table_family, family),
        ("inet", _) | ("ip", Family::Ipv4) | ("ip6", Family::Ipv6)
    )
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|chain| chain.name == name)
    }
}

/// Whether every match of `rule` holds for the new connection `probe` (a
/// TCP SYN, conntrack state NEW, on eth0) of `family` at `now_nanos`.
pub(super) fn matches(
    rule: &Rule,
    family: Family,
    probe: Probe,
    now: Option<DateTime<Utc>>,
) -> bool {
    rule.statements.iter().all(|statement| {
        let Statement::Match { left, op, right } = statement else {
            return true;
        };
        let holds = match left {
            Left::Meta(key) => match (key.as_str(), right) {
                ("nfproto", Right::Text(value)) => {
                    value
                        == if family == Family::Ipv4 {
                            "ipv4"
                        } else {
                            "ipv6"
                        }
                }
                ("l4proto", Right::Text(value)) => value == probe.protocol.as_str(),
                ("iifname", Right::Text(value)) => value == "eth0",
                ("time", Right::Time(moment)) => {
                    let now = now.expect("a time match needs the fake's clock");
                    let now = (i128::from(now.timestamp()) * 1_000_000_000) as u64;
                    return match *op {
                        "<" => now < *moment,
                        ">=" => now >= *moment,
                        ">" => now > *moment,
                        "<=" => now <= *moment,
                        other => panic!("the oracle does not know meta time {other}"),
                    };
                }
                _ => panic!("the oracle does not know meta {key}"),
            },
            Left::Payload(protocol, field) => {
                let of_packet = match protocol.as_str() {
                    "ip" => family == Family::Ipv4,
                    "ip6" => family == Family::Ipv6,
                    "tcp" => probe.protocol == Protocol::Tcp,
                    _ => probe.protocol == Protocol::Udp,
                };
                if !of_packet {
                    // No such header: the match fails whatever its operator.
                    return false;
                }
                match field.as_str() {
                    "saddr" => contains(right, |item| match item {
                        Right::Net(net) => net.contains(&probe.from),
                        _ => false,
                    }),
                    "dport" => contains(right, |item| match item {
                        Right::Number(port) => *port == u64::from(probe.port),
                        Right::Range(first, last) => {
                            (*first..=*last).contains(&u64::from(probe.port))
                        }
                        _ => false,
                    }),
                    other => panic!("the oracle does not know {protocol} {other}"),
                }
            }
            Left::TcpFlags(mask) => {
                if probe.protocol != Protocol::Tcp {
                    return false;
                }
                // A new connection's first packet carries SYN alone.
                let seen: Vec<&str> = mask
                    .iter()
                    .map(String::as_str)
                    .filter(|f| *f == "syn")
                    .collect();
                match right {
                    Right::Text(wanted) => seen == wanted.split('|').collect::<Vec<_>>(),
                    _ => panic!("the oracle does not know tcp flags {right:?}"),
                }
            }
            Left::Ct(_) => contains(right, |item| match item {
                Right::Text(state) => state == "new",
                Right::Flags(states) => states.iter().any(|state| state == "new"),
                _ => false,
            }),
        };
        match *op {
            "==" | "in" => holds,
            "!=" => !holds,
            other => panic!("the oracle does not know {other} here"),
        }
    })
}

/// Whether `right`, or an element of it if it is a set, is `found`.
fn contains(right: &Right, found: impl Fn(&Right) -> bool) -> bool {
    match right {
        Right::Set(items) => items.iter().any(found),
        one => found(one),
    }
}
