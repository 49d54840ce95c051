//! nft's JSON (`nft -j list chains|table|chain|set`) read into the neutral
//! model (`ruleset.rs`): chains with their hooks, each rule's statements as
//! tests, effects and a verdict (a verdict map becomes one rule per entry),
//! sets with their elements, and each rule's text as nft prints it. What it
//! does not know becomes an unknown test or effect in nft's words, never a
//! guess. Objects are read one at a time, so a large listing never sits in
//! memory as a tree. Pure: reads text only.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use chrono::{NaiveDateTime, NaiveTime};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::Value;

use crate::config::Family;
use crate::firewall::ruleset::{
    AddressKind, Addresses, Chain, ChainKind, Effect, Hook, Match, Policy, Ranges, Rule, States,
    Step, Test, TimeTest, Verdict,
};

/// What a listing holds, by table (`family`, `name`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub tables: BTreeMap<(String, String), Tabled>,
}

/// One table's chains and sets, as far as the listing shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tabled {
    /// Every chain named, with how it is hooked (None: a regular chain).
    pub chains: BTreeMap<String, Option<Hooked>>,
    /// The rules of each chain listed with its rules.
    pub rules: BTreeMap<String, Chain>,
    pub sets: BTreeMap<String, SetContents>,
    /// The table has flags: `dormant` (its chains see nothing) or another;
    /// nft 1.0.6 does not print which legibly.
    pub flagged: bool,
}

/// How a base chain is hooked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooked {
    /// None for a hook the input path does not pass (forward, output…).
    pub hook: Option<Hook>,
    pub priority: i32,
    pub kind: ChainKind,
    pub policy: Policy,
    pub device: Option<String>,
}

/// A set's elements, as ranges of what its type holds; None when they
/// cannot be read (a concatenation, a type portlocker does not follow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetContents {
    pub ranges: Option<Ranges>,
    pub addresses: bool,
}

/// Reads a listing; Err saying why when `text` is not one.
pub fn listing(text: &str) -> Result<Listing, String> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let document =
        Document::deserialize(&mut deserializer).map_err(|error| match error.is_data() {
            true => format!("not what nft lists: {error}"),
            false => format!("not JSON: {error}"),
        })?;
    let mut listing = document.0;
    listing.resolve();
    Ok(listing)
}

/// `{"nftables": [...]}`, each object taken in as it is read.
struct Document(Listing);

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Outer {
            nftables: Objects,
        }
        Ok(Document(Outer::deserialize(deserializer)?.nftables.0))
    }
}

struct Objects(Listing);

impl<'de> Deserialize<'de> for Objects {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Each;
        impl<'de> Visitor<'de> for Each {
            type Value = Objects;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of nft objects")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Objects, A::Error> {
                let mut listing = Listing::default();
                while let Some(object) = seq.next_element::<Object>()? {
                    listing.take(object);
                }
                Ok(Objects(listing))
            }
        }
        deserializer.deserialize_seq(Each)
    }
}

/// One object of a listing: `{"chain": {...}}`.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Known {
    Chain(ChainObject),
    Rule(RuleObject),
    Set(SetObject),
    Map(SetObject),
    Table(Named),
}

enum Object {
    Known(Known),
    Other,
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Kinds portlocker does not read (metainfo, counters, flowtables…) are skipped.
        let value = Value::deserialize(deserializer)?;
        let kind = value
            .as_object()
            .filter(|object| object.len() == 1)
            .and_then(|object| object.keys().next().cloned())
            .ok_or_else(|| de::Error::custom("an object of one key"))?;
        match kind.as_str() {
            "chain" | "rule" | "set" | "map" | "table" => Known::deserialize(value)
                .map(Object::Known)
                .map_err(de::Error::custom),
            _ => Ok(Object::Other),
        }
    }
}

#[derive(Deserialize)]
struct Named {
    family: String,
    name: String,
    #[serde(default)]
    flags: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ChainObject {
    family: String,
    table: String,
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    hook: Option<String>,
    prio: Option<i64>,
    policy: Option<String>,
    dev: Option<Value>,
}

#[derive(Deserialize)]
struct RuleObject {
    family: String,
    table: String,
    chain: String,
    handle: Option<u64>,
    comment: Option<String>,
    #[serde(default)]
    expr: Vec<Value>,
}

#[derive(Deserialize)]
struct SetObject {
    family: String,
    table: String,
    name: String,
    #[serde(rename = "type")]
    kind: Option<Value>,
    elem: Option<Vec<Value>>,
    #[serde(default)]
    #[allow(dead_code)]
    map: Option<IgnoredAny>,
}

impl Listing {
    fn table(&mut self, family: &str, name: &str) -> &mut Tabled {
        self.tables
            .entry((family.to_owned(), name.to_owned()))
            .or_default()
    }

    fn take(&mut self, object: Object) {
        let Object::Known(known) = object else { return };
        match known {
            Known::Table(table) => {
                self.table(&table.family, &table.name).flagged |= table.flags.is_some();
            }
            Known::Chain(chain) => {
                let hooked = hooked(&chain);
                let table = self.table(&chain.family, &chain.table);
                table.chains.insert(chain.name, hooked);
            }
            Known::Rule(object) => {
                let rules = rules_of(&object);
                let table = self.table(&object.family, &object.table);
                table
                    .rules
                    .entry(object.chain)
                    .or_default()
                    .rules
                    .extend(rules);
            }
            Known::Set(set) | Known::Map(set) => {
                let contents = contents(&set);
                self.table(&set.family, &set.table)
                    .sets
                    .insert(set.name, contents);
            }
        }
    }

    /// Fills in each reference to a named set from the set, where it was listed.
    fn resolve(&mut self) {
        self.tables.values_mut().for_each(fill_sets);
    }
}

/// A reference to a named set left by `test_of`, filled in from `sets`.
fn resolve_test(test: &mut Test, sets: &BTreeMap<String, SetContents>) {
    match test {
        Test::Source(Addresses::Set { name, ranges })
        | Test::Destination(Addresses::Set { name, ranges }) => {
            if let Some(SetContents {
                ranges: Some(found),
                addresses: true,
            }) = sets.get(name.as_str())
            {
                *ranges = Some(found.clone());
            }
        }
        Test::Unknown(text) => {
            let Some(name) = text.strip_prefix(PORT_SET) else {
                return;
            };
            if let Some(SetContents {
                ranges: Some(found),
                addresses: false,
            }) = sets.get(name)
            {
                *test = Test::DestPort(found.clone());
            }
        }
        _ => {}
    }
}

/// Fills in each reference to a named set of `table` from its sets.
pub fn fill_sets(table: &mut Tabled) {
    let sets = table.sets.clone();
    for chain in table.rules.values_mut() {
        for rule in &mut chain.rules {
            for step in &mut rule.steps {
                if let Step::Test(Match { test, .. }) = step {
                    resolve_test(test, &sets);
                }
            }
        }
    }
}

/// The set an unresolved port-set test names.
pub fn port_set_named(text: &str) -> Option<&str> {
    text.strip_prefix(PORT_SET)
}

/// How an unresolved `th dport @NAME` is held until its set is read.
const PORT_SET: &str = "dport @";

fn hooked(chain: &ChainObject) -> Option<Hooked> {
    let hook = chain.hook.as_deref()?;
    let priority = chain
        .prio
        .unwrap_or(0)
        .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    Some(Hooked {
        hook: match hook {
            "ingress" => Some(Hook::Ingress),
            "prerouting" => Some(Hook::Prerouting),
            "input" => Some(Hook::Input),
            "forward" => Some(Hook::Forward),
            _ => None,
        },
        priority,
        kind: match chain.kind.as_deref() {
            Some("nat") => ChainKind::Nat,
            Some("route") => ChainKind::Route,
            _ => ChainKind::Filter,
        },
        policy: match chain.policy.as_deref() {
            Some("drop") => Policy::Drop,
            _ => Policy::Accept,
        },
        device: match &chain.dev {
            Some(Value::String(dev)) => Some(dev.clone()),
            _ => None,
        },
    })
}

/// A set's elements, when its type is one portlocker follows.
fn contents(set: &SetObject) -> SetContents {
    let kind = set.kind.as_ref().and_then(Value::as_str).unwrap_or("");
    let addresses = matches!(kind, "ipv4_addr" | "ipv6_addr");
    let ranges = match kind {
        "ipv4_addr" | "ipv6_addr" | "inet_service" => set
            .elem
            .iter()
            .flatten()
            .map(|element| element_spans(element, addresses))
            .collect::<Option<Vec<Vec<(u128, u128)>>>>()
            .map(|spans| Ranges::from_spans(spans.into_iter().flatten().collect())),
        _ => None,
    };
    SetContents {
        ranges: if set.elem.is_none() && ranges.is_some() {
            Some(Ranges::default())
        } else {
            ranges
        },
        addresses,
    }
}

/// The spans one element stands for: an address, a prefix, a range, a
/// port, or any of those wrapped as `{"elem": {"val": …}}`.
fn element_spans(element: &Value, addresses: bool) -> Option<Vec<(u128, u128)>> {
    if let Some(inner) = element.get("elem").and_then(|elem| elem.get("val")) {
        return element_spans(inner, addresses);
    }
    let spans = match addresses {
        true => address_ranges(element)?,
        false => port_ranges(element)?,
    };
    Some(spans.0)
}

/// The rules one listed rule is: one, or one per entry of a verdict map.
fn rules_of(object: &RuleObject) -> Vec<Rule> {
    let family = family_of(&object.family);
    let text = rule_text(&object.expr, object.comment.as_deref());
    let mut steps = Vec::new();
    let mut verdict = Verdict::Continue;
    for (index, statement) in object.expr.iter().enumerate() {
        if let Some(vmap) = statement.get("vmap") {
            return vmap_rules(steps, vmap, object, &text);
        }
        steps.extend(implied(statement, family));
        match statement_of(statement, family) {
            Statement::Steps(more) => steps.extend(more),
            Statement::Verdict(found) => {
                verdict = found;
                // Nothing after a verdict is reached.
                let _ = index;
                break;
            }
        }
        // A translation ends its chain as an accept does (nft's dnat and
        // redirect are terminal), as iptables' -j DNAT does.
        if ["dnat", "redirect"]
            .iter()
            .any(|kind| statement.get(kind).is_some())
        {
            verdict = Verdict::Accept;
            break;
        }
    }
    vec![Rule {
        steps,
        verdict,
        text,
        handle: object.handle,
        comment: object.comment.clone(),
    }]
}

/// `KEY vmap { V1 : accept, V2 : jump c }`, after `steps`: a rule per entry.
fn vmap_rules(steps: Vec<Step>, vmap: &Value, object: &RuleObject, text: &str) -> Vec<Rule> {
    let family = family_of(&object.family);
    let rule = |steps: Vec<Step>, verdict| Rule {
        steps,
        verdict,
        text: text.to_owned(),
        handle: object.handle,
        comment: object.comment.clone(),
    };
    let entries = vmap
        .get("data")
        .and_then(|data| data.get("set"))
        .and_then(Value::as_array);
    let (Some(key), Some(entries)) = (vmap.get("key"), entries) else {
        return vec![rule(
            steps,
            Verdict::Unknown("a verdict map portlocker cannot read".into()),
        )];
    };
    let mut rules = Vec::new();
    for entry in entries {
        let (Some(value), Some(target)) = (entry.get(0), entry.get(1)) else {
            return vec![rule(
                steps,
                Verdict::Unknown("a verdict map portlocker cannot read".into()),
            )];
        };
        let mut own = steps.clone();
        own.extend(match_of("==", key, value, family));
        let verdict = match statement_of(target, family) {
            Statement::Verdict(verdict) => verdict,
            Statement::Steps(_) => {
                Verdict::Unknown(format!("`{}` in a verdict map", render(target)))
            }
        };
        rules.push(rule(own, verdict));
    }
    rules
}

fn family_of(word: &str) -> Option<Family> {
    match word {
        "ip" => Some(Family::Ipv4),
        "ip6" => Some(Family::Ipv6),
        _ => None,
    }
}

/// The tests nft adds before a statement that works on some packets only:
/// `reject with icmp …` (IPv4) and `with icmpv6 …` (IPv6), `dnat ip to …`
/// and `dnat ip6 to …` in an `inet` table, `reject with tcp reset` (TCP).
/// A packet it cannot work on goes on to the next rule.
fn implied(statement: &Value, family: Option<Family>) -> Vec<Step> {
    let Some((kind, body)) = statement.as_object().and_then(|o| o.iter().next()) else {
        return Vec::new();
    };
    let word = |key: &str| body.get(key).and_then(Value::as_str).unwrap_or("");
    let only = match (kind.as_str(), word("type")) {
        ("reject", "tcp reset") => return vec![Step::Test(Match::is(Test::Protocol(6)))],
        ("reject", "icmp") => Some(Family::Ipv4),
        ("reject", "icmpv6") => Some(Family::Ipv6),
        ("dnat" | "snat", _) => family_of(word("family")),
        _ => None,
    };
    match (only, family) {
        // In an `ip` or `ip6` table every packet is of its family already.
        (Some(only), None) => vec![Step::Test(Match::is(Test::Family(only)))],
        _ => Vec::new(),
    }
}

/// What one statement is.
enum Statement {
    Steps(Vec<Step>),
    Verdict(Verdict),
}

fn statement_of(statement: &Value, family: Option<Family>) -> Statement {
    let Some((kind, body)) = statement.as_object().and_then(|o| o.iter().next()) else {
        return Statement::Steps(vec![unknown_effect(statement)]);
    };
    let target = || {
        body.get("target")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let verdict = match kind.as_str() {
        "accept" => Verdict::Accept,
        "drop" => Verdict::Drop,
        "reject" => Verdict::Reject,
        "return" => Verdict::Return,
        "continue" => Verdict::Continue,
        "jump" => Verdict::Jump(target()),
        "goto" => Verdict::Goto(target()),
        "queue" => Verdict::Unknown("a program through a queue".into()),
        "snat" | "masquerade" => Verdict::Accept,
        _ => return Statement::Steps(steps_of(kind, body, statement, family)),
    };
    Statement::Verdict(verdict)
}

/// The steps of a statement that is not a verdict.
fn steps_of(kind: &str, body: &Value, statement: &Value, family: Option<Family>) -> Vec<Step> {
    match kind {
        "match" => {
            let op = body.get("op").and_then(Value::as_str).unwrap_or("==");
            match (body.get("left"), body.get("right")) {
                (Some(left), Some(right)) => match_of(op, left, right, family),
                _ => vec![unknown_test(statement)],
            }
        }
        // Statements that change nothing of what becomes of the packet.
        "counter" | "log" | "nftrace" | "ct helper" | "ct timeout" | "ct expectation" | "flow"
        | "dup" | "last" | "comment" => Vec::new(),
        "limit" => vec![rate(
            body.get("inv").and_then(Value::as_bool).unwrap_or(false),
        )],
        "ct count" => vec![rate(
            body.get("inv").and_then(Value::as_bool).unwrap_or(false),
        )],
        "quota" => vec![rate(
            body.get("inv").and_then(Value::as_bool).unwrap_or(false),
        )],
        "set" | "meter" => match body.get("stmt").and_then(Value::as_array) {
            Some(inner) if inner.iter().any(|stmt| stmt.get("limit").is_some()) => {
                let over = inner.iter().any(|stmt| {
                    stmt.get("limit")
                        .and_then(|limit| limit.get("inv"))
                        .and_then(Value::as_bool)
                        == Some(true)
                });
                vec![rate(over)]
            }
            _ => Vec::new(),
        },
        "notrack" => vec![Step::Do(Effect::Notrack)],
        "mangle" => vec![mangle(body, statement)],
        "dnat" | "redirect" => vec![Step::Do(translation(kind, body, statement))],
        "xt" => vec![unknown_test(statement)],
        _ => vec![unknown_effect(statement)],
    }
}

fn rate(over: bool) -> Step {
    Step::Test(Match::is(Test::Rate { over }))
}

fn unknown_test(statement: &Value) -> Step {
    Step::Test(Match::is(Test::Unknown(render(statement))))
}

fn unknown_effect(statement: &Value) -> Step {
    Step::Do(Effect::Unknown(render(statement)))
}

/// `meta mark set 0x1`, `ct mark set meta mark`, …
fn mangle(body: &Value, statement: &Value) -> Step {
    let key = body.get("key");
    let meta = key
        .and_then(|key| key.get("meta"))
        .and_then(|m| m.get("key"))
        .and_then(Value::as_str);
    let ct = key
        .and_then(|key| key.get("ct"))
        .and_then(|c| c.get("key"))
        .and_then(Value::as_str);
    let value = body.get("value");
    let source_meta = value
        .and_then(|v| v.get("meta"))
        .and_then(|m| m.get("key"))
        .and_then(Value::as_str);
    let source_ct = value
        .and_then(|v| v.get("ct"))
        .and_then(|c| c.get("key"))
        .and_then(Value::as_str);
    let number = value
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok());
    let effect = match (meta, ct, number, source_meta, source_ct) {
        (Some("mark"), _, Some(n), _, _) => Effect::Mark {
            connection: false,
            clear: u32::MAX,
            toggle: n,
        },
        (_, Some("mark"), Some(n), _, _) => Effect::Mark {
            connection: true,
            clear: u32::MAX,
            toggle: n,
        },
        (Some("mark"), _, _, _, Some("mark")) => Effect::CopyMark { to_packet: true },
        (_, Some("mark"), _, Some("mark"), _) => Effect::CopyMark { to_packet: false },
        (Some("nftrace" | "priority" | "secmark"), ..) => {
            return Step::Test(Match::is(Test::Always));
        }
        _ => Effect::Unknown(render(statement)),
    };
    Step::Do(effect)
}

/// `dnat to 172.17.0.2:80`, `redirect to :2222`. A destination taken from
/// a map, or a range of ports, may be anything: unknown.
fn translation(kind: &str, body: &Value, statement: &Value) -> Effect {
    let address = match (kind, body.get("addr")) {
        ("redirect", _) | (_, None) => None,
        (_, Some(addr)) => match addr.as_str().and_then(|a| a.parse::<IpAddr>().ok()) {
            Some(address) => Some(address),
            None => return Effect::Unknown(render(statement)),
        },
    };
    let port = match body.get("port").map(one_port) {
        None => None,
        Some(Some(port)) => Some(port),
        Some(None) => return Effect::Unknown(render(statement)),
    };
    let to = match (kind, address, port) {
        ("redirect", _, Some(port)) => format!("this host, port {port}"),
        ("redirect", _, None) => "this host".to_owned(),
        (_, Some(IpAddr::V6(addr)), Some(port)) => format!("[{addr}]:{port}"),
        (_, Some(addr), Some(port)) => format!("{addr}:{port}"),
        (_, Some(addr), None) => addr.to_string(),
        _ => render(body),
    };
    Effect::Dnat { address, port, to }
}

/// A translation's port: a number, or a range of one.
fn one_port(port: &Value) -> Option<u16> {
    let number = |value: &Value| value.as_u64().and_then(|p| u16::try_from(p).ok());
    if let Some(port) = number(port) {
        return Some(port);
    }
    match port.get("range").and_then(Value::as_array)?.as_slice() {
        [low, high] if number(low).is_some() && number(low) == number(high) => number(low),
        _ => None,
    }
}

/// The steps `left op right` stands for.
fn match_of(op: &str, left: &Value, right: &Value, family: Option<Family>) -> Vec<Step> {
    let negated = op == "!=";
    let comparison = matches!(op, "==" | "!=" | "in");
    let statement = serde_json::json!({"match": {"op": op, "left": left, "right": right}});
    let mut steps = Vec::new();
    let test = match test_of(op, comparison, left, right, &mut steps, family) {
        Some(test) => test,
        None => Test::Unknown(render(&statement)),
    };
    steps.push(Step::Test(Match { negated, test }));
    steps
}

/// The test of a match; `implied` gets what it presupposes (`tcp dport`:
/// the protocol; `ip saddr` in an inet table: the family).
fn test_of(
    op: &str,
    comparison: bool,
    left: &Value,
    right: &Value,
    implied: &mut Vec<Step>,
    family: Option<Family>,
) -> Option<Test> {
    if let Some(payload) = left.get("payload") {
        return payload_test(op, comparison, payload, right, implied, family);
    }
    if let Some(key) = left
        .get("meta")
        .and_then(|m| m.get("key"))
        .and_then(Value::as_str)
    {
        return meta_test(op, comparison, key, right);
    }
    if let Some(ct) = left.get("ct") {
        let key = ct.get("key").and_then(Value::as_str)?;
        let original = ct.get("dir").and_then(Value::as_str) == Some("original");
        if key == "proto-dst" && original && comparison {
            return port_ranges(right).map(Test::OriginalDestPort);
        }
        return ct_test(comparison, key, right);
    }
    if let Some(fib) = left.get("fib") {
        return fib_test(comparison, fib, right);
    }
    if let Some([inner, mask]) = left.get("&").and_then(Value::as_array).map(Vec::as_slice) {
        return masked_test(op, inner, mask, right);
    }
    None
}

fn payload_test(
    op: &str,
    comparison: bool,
    payload: &Value,
    right: &Value,
    implied: &mut Vec<Step>,
    family: Option<Family>,
) -> Option<Test> {
    let protocol = payload.get("protocol").and_then(Value::as_str)?;
    let field = payload.get("field").and_then(Value::as_str)?;
    // A header of a layer-4 protocol is there only in that protocol's packets.
    match protocol {
        "th" => implied.push(Step::Test(Match::is(Test::Protocols(vec![
            6, 17, 33, 132, 136,
        ])))),
        "tcp" | "udp" | "sctp" | "udplite" | "dccp" | "icmp" | "icmpv6" | "igmp" | "esp" | "ah" => {
            implied.push(Step::Test(Match::is(Test::Protocol(protocol_number(
                protocol,
            )))))
        }
        _ => {}
    }
    match (protocol, field) {
        ("tcp" | "udp" | "sctp" | "udplite" | "dccp" | "th", "dport") => port_test(op, right),
        ("tcp" | "udp" | "sctp" | "th", "sport") => Some(Test::SourcePort(Ranges::default())),
        ("ip" | "ip6", "saddr" | "daddr") => {
            let of = if protocol == "ip" {
                Family::Ipv4
            } else {
                Family::Ipv6
            };
            if family.is_none() {
                implied.push(Step::Test(Match::is(Test::Family(of))));
            }
            let addresses = addresses_of(right).filter(|_| comparison)?;
            Some(match field {
                "saddr" => Test::Source(addresses),
                _ => Test::Destination(addresses),
            })
        }
        ("ip", "protocol") | ("ip6", "nexthdr") => {
            let of = if protocol == "ip" {
                Family::Ipv4
            } else {
                Family::Ipv6
            };
            if family.is_none() {
                implied.push(Step::Test(Match::is(Test::Family(of))));
            }
            protocols(right).filter(|_| comparison).map(Test::Protocols)
        }
        ("tcp", "flags") if comparison => {
            let flags = tcp_flags(right)?;
            Some(match op {
                "in" => Test::TcpFlags {
                    mask: flags,
                    compare: flags,
                },
                _ => Test::TcpFlags {
                    mask: 0xff,
                    compare: flags,
                },
            })
        }
        _ => None,
    }
}

fn protocol_number(name: &str) -> u8 {
    crate::firewall::iptables::read::protocol_number(name).unwrap_or(0)
}

fn port_test(op: &str, right: &Value) -> Option<Test> {
    let ranges = match op {
        "==" | "!=" | "in" => match right.as_str().and_then(|r| r.strip_prefix('@')) {
            Some(set) => return Some(Test::Unknown(format!("{PORT_SET}{set}"))),
            None => port_ranges(right)?,
        },
        "<" | "<=" | ">" | ">=" => {
            let port = u128::from(u16::try_from(right.as_u64()?).ok()?);
            match op {
                "<" if port > 0 => Ranges::span(0, port - 1),
                "<=" => Ranges::span(0, port),
                ">" if port < 65535 => Ranges::span(port + 1, 65535),
                ">=" => Ranges::span(port, 65535),
                _ => Ranges::default(),
            }
        }
        _ => return None,
    };
    Some(Test::DestPort(ranges))
}

fn meta_test(op: &str, comparison: bool, key: &str, right: &Value) -> Option<Test> {
    if !comparison && !matches!(key, "time" | "hour") {
        return None;
    }
    Some(match key {
        "l4proto" => Test::Protocols(protocols(right)?),
        "nfproto" => Test::Family(match right.as_str()? {
            "ipv4" => Family::Ipv4,
            "ipv6" => Family::Ipv6,
            _ => return None,
        }),
        "iifname" | "iif" => Test::InInterface(strings(right)?),
        "oifname" | "oif" => Test::OutInterface(strings(right)?),
        "mark" => Test::Mark {
            connection: false,
            mask: u32::MAX,
            value: u32::try_from(right.as_u64()?).ok()?,
        },
        "pkttype" => Test::PacketType(
            strings(right)?
                .iter()
                .map(|k| AddressKind::named(k))
                .collect(),
        ),
        "time" => time_test(op, right)?,
        "hour" => hour_test(op, right)?,
        _ => return None,
    })
}

fn ct_test(comparison: bool, key: &str, right: &Value) -> Option<Test> {
    if !comparison {
        return None;
    }
    Some(match key {
        "state" => Test::State(
            strings(right)?
                .iter()
                .try_fold(States::default(), |all, name| {
                    Some(all.with(States::named(name)?))
                })?,
        ),
        "status" => {
            let all = strings(right)?;
            match all.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["dnat"] => Test::Translated,
                _ => return None,
            }
        }
        "mark" => Test::Mark {
            connection: true,
            mask: u32::MAX,
            value: u32::try_from(right.as_u64()?).ok()?,
        },
        "direction" if right.as_str() == Some("original") => Test::Always,
        "direction" if right.as_str() == Some("reply") => Test::Reply,
        _ => return None,
    })
}

/// `fib daddr type local`, and the reverse-path check `fib saddr . iif oif`.
fn fib_test(comparison: bool, fib: &Value, right: &Value) -> Option<Test> {
    let result = fib.get("result").and_then(Value::as_str)?;
    let flags = strings(fib.get("flags")?)?;
    let has = |flag: &str| flags.iter().any(|f| f == flag);
    match result {
        "type" if comparison && has("daddr") => Some(Test::AddressType {
            destination: true,
            kinds: strings(right)?
                .iter()
                .map(|k| AddressKind::named(k))
                .collect(),
        }),
        "type" if comparison && has("saddr") => Some(Test::AddressType {
            destination: false,
            kinds: strings(right)?
                .iter()
                .map(|k| AddressKind::named(k))
                .collect(),
        }),
        "oif" | "oifname" if has("saddr") => match right.as_bool() {
            // `oif missing`: no route back; never for a real source.
            Some(false) => Some(Test::Fragment),
            Some(true) => Some(Test::ReversePath),
            None => None,
        },
        _ => None,
    }
}

/// `meta mark & 0xff == 0x1`, `tcp flags & (syn|ack) == syn`.
fn masked_test(op: &str, inner: &Value, mask: &Value, right: &Value) -> Option<Test> {
    if !matches!(op, "==" | "!=") {
        return None;
    }
    let is_flags = inner
        .get("payload")
        .and_then(|p| p.get("field"))
        .and_then(Value::as_str)
        == Some("flags");
    if is_flags {
        return Some(Test::TcpFlags {
            mask: tcp_flags(mask)?,
            compare: tcp_flags(right)?,
        });
    }
    let mark_key = |which: &str| {
        inner
            .get(which)
            .and_then(|x| x.get("key"))
            .and_then(Value::as_str)
            == Some("mark")
    };
    let number = |value: &Value| value.as_u64().and_then(|n| u32::try_from(n).ok());
    if mark_key("meta") || mark_key("ct") {
        return Some(Test::Mark {
            connection: mark_key("ct"),
            mask: number(mask)?,
            value: number(right)?,
        });
    }
    None
}

fn time_test(op: &str, right: &Value) -> Option<Test> {
    let moment = |value: &Value| {
        NaiveDateTime::parse_from_str(value.as_str()?, "%Y-%m-%d %H:%M:%S")
            .ok()
            .map(|naive| naive.and_utc())
    };
    // nft compares in nanoseconds: `> T` holds from just after T, `<= T` up to T itself.
    let instant = chrono::Duration::nanoseconds(1);
    Some(Test::Time(match op {
        ">=" => TimeTest::From(moment(right)?),
        ">" => TimeTest::From(moment(right)? + instant),
        "<" => TimeTest::Before(moment(right)?),
        "<=" => TimeTest::Before(moment(right)? + instant),
        _ => return None,
    }))
}

fn hour_test(op: &str, right: &Value) -> Option<Test> {
    let clock = |value: &Value| {
        let text = value.as_str()?;
        NaiveTime::parse_from_str(text, "%H:%M:%S")
            .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M"))
            .ok()
    };
    let [first, last] = right.get("range")?.as_array()?.as_slice() else {
        return None;
    };
    matches!(op, "==" | "in").then_some(())?;
    Some(Test::Time(TimeTest::Daily(clock(first)?, clock(last)?)))
}

/// Strings of a value: one, a list, or an anonymous set.
fn strings(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(text) => Some(vec![text.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect(),
        Value::Object(_) => strings(value.get("set")?),
        _ => None,
    }
}

fn protocols(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::Number(number) => Some(vec![u8::try_from(number.as_u64()?).ok()?]),
        Value::String(name) => Some(vec![crate::firewall::iptables::read::protocol_number(
            name,
        )?]),
        Value::Object(_) => protocols(value.get("set")?),
        Value::Array(items) => items
            .iter()
            .map(protocols)
            .collect::<Option<Vec<_>>>()
            .map(|all| all.concat()),
        _ => None,
    }
}

fn tcp_flags(value: &Value) -> Option<u8> {
    match value {
        Value::String(flag) => Some(match flag.as_str() {
            "fin" => 0x01,
            "syn" => 0x02,
            "rst" => 0x04,
            "psh" => 0x08,
            "ack" => 0x10,
            "urg" => 0x20,
            "ecn" => 0x40,
            "cwr" => 0x80,
            _ => return None,
        }),
        Value::Number(n) => u8::try_from(n.as_u64()?).ok(),
        Value::Array(items) => items
            .iter()
            .try_fold(0, |all, item| Some(all | tcp_flags(item)?)),
        Value::Object(_) => tcp_flags(value.get("|").or_else(|| value.get("set"))?),
        _ => None,
    }
}

/// Addresses of a match's right-hand side; a named set is filled in later.
fn addresses_of(value: &Value) -> Option<Addresses> {
    if let Some(set) = value.as_str().and_then(|text| text.strip_prefix('@')) {
        return Some(Addresses::Set {
            name: set.to_owned(),
            ranges: None,
        });
    }
    Some(Addresses::Ranges(address_ranges(value)?))
}

fn address_ranges(value: &Value) -> Option<Ranges> {
    match value {
        Value::String(text) => Some(Ranges::of_addr(text.parse::<IpAddr>().ok()?)),
        Value::Array(items) => items.iter().try_fold(Ranges::default(), |all, item| {
            Some(all.union(&address_ranges(item)?))
        }),
        Value::Object(object) => {
            if let Some(prefix) = object.get("prefix") {
                let addr: IpAddr = prefix.get("addr")?.as_str()?.parse().ok()?;
                let len = u8::try_from(prefix.get("len")?.as_u64()?).ok()?;
                let net = ipnet::IpNet::new(addr, len).ok()?;
                return Some(Ranges::of_net(&net.trunc()));
            }
            if let Some([first, last]) = object
                .get("range")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
            {
                let first: IpAddr = first.as_str()?.parse().ok()?;
                let last: IpAddr = last.as_str()?.parse().ok()?;
                return Some(Ranges::span(
                    crate::firewall::ruleset::number(first),
                    crate::firewall::ruleset::number(last),
                ));
            }
            if let Some(elem) = object.get("elem").and_then(|e| e.get("val")) {
                return address_ranges(elem);
            }
            address_ranges(object.get("set")?)
        }
        _ => None,
    }
}

fn port_ranges(value: &Value) -> Option<Ranges> {
    match value {
        Value::Number(number) => {
            let port = u128::from(u16::try_from(number.as_u64()?).ok()?);
            Some(Ranges::span(port, port))
        }
        Value::Array(items) => items.iter().try_fold(Ranges::default(), |all, item| {
            Some(all.union(&port_ranges(item)?))
        }),
        Value::Object(object) => {
            if let Some([first, last]) = object
                .get("range")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
            {
                let first = u128::from(u16::try_from(first.as_u64()?).ok()?);
                let last = u128::from(u16::try_from(last.as_u64()?).ok()?);
                return Some(Ranges::span(first, last));
            }
            if let Some(elem) = object.get("elem").and_then(|e| e.get("val")) {
                return port_ranges(elem);
            }
            port_ranges(object.get("set")?)
        }
        _ => None,
    }
}

/// A rule as nft prints it (near enough: counters without their counts,
/// so the text stays the same from one reading to the next).
pub fn rule_text(statements: &[Value], comment: Option<&str>) -> String {
    let mut words: Vec<String> = statements
        .iter()
        .map(render)
        .filter(|word| !word.is_empty())
        .collect();
    if let Some(comment) = comment {
        words.push(format!("comment \"{comment}\""));
    }
    words.join(" ")
}

/// One statement or expression in nft's words.
pub fn render(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(true) => "exists".into(),
        Value::Bool(false) => "missing".into(),
        Value::Number(number) => number.to_string(),
        Value::String(text)
            if text.contains(' ')
                || text.contains(':') && !text.contains('.') && text.len() <= 8 =>
        {
            format!("\"{text}\"")
        }
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(render).collect::<Vec<_>>().join(", "),
        Value::Object(object) => match object.iter().next() {
            Some((key, body)) if object.len() == 1 => render_object(key, body),
            _ => value.to_string(),
        },
    }
}

fn render_object(key: &str, body: &Value) -> String {
    let field = |name: &str| body.get(name).map(render).unwrap_or_default();
    match key {
        "match" => {
            let op = body.get("op").and_then(Value::as_str).unwrap_or("==");
            let (left, right) = (field("left"), field("right"));
            match op {
                "==" | "in" => format!("{left} {right}"),
                op => format!("{left} {op} {right}"),
            }
        }
        "payload" => format!("{} {}", field("protocol"), field("field")),
        "meta" => match body.get("key").and_then(Value::as_str) {
            Some(
                key @ ("iifname" | "oifname" | "iif" | "oif" | "mark" | "l4proto" | "nfproto"
                | "pkttype"),
            ) => {
                if matches!(key, "iifname" | "oifname" | "iif" | "oif") {
                    key.to_owned()
                } else {
                    format!("meta {key}")
                }
            }
            Some(key) => format!("meta {key}"),
            None => "meta".into(),
        },
        "ct" => match body.get("dir").and_then(Value::as_str) {
            Some(dir) => format!("ct {dir} {}", field("key")),
            None => format!("ct {}", field("key")),
        },
        "fib" => format!(
            "fib {} {}",
            field("flags").replace(", ", " . "),
            field("result")
        ),
        "prefix" => format!("{}/{}", field("addr"), field("len")),
        "range" => match body.as_array().map(Vec::as_slice) {
            Some([a, b]) => format!("{}-{}", render(a), render(b)),
            _ => body.to_string(),
        },
        "set" => match body {
            Value::Array(items) => format!(
                "{{ {} }}",
                items.iter().map(render).collect::<Vec<_>>().join(", ")
            ),
            other => render(other),
        },
        "&" | "|" => match body.as_array().map(Vec::as_slice) {
            Some([a, b]) if key == "&" => {
                format!("{} & ({})", render(a), render(b).replace(", ", " | "))
            }
            Some(items) => items.iter().map(render).collect::<Vec<_>>().join(" | "),
            None => body.to_string(),
        },
        "elem" => field("val"),
        "concat" => body
            .as_array()
            .map(|items| items.iter().map(render).collect::<Vec<_>>().join(" . "))
            .unwrap_or_default(),
        _ => render_statement(key, body),
    }
}

/// A statement in nft's words.
fn render_statement(key: &str, body: &Value) -> String {
    let field = |name: &str| body.get(name).map(render).unwrap_or_default();
    match key {
        "accept" | "drop" | "return" | "continue" | "notrack" => key.to_owned(),
        "reject" => match (body.get("type").and_then(Value::as_str), body.get("expr")) {
            (Some("tcp reset"), _) => "reject with tcp reset".into(),
            (Some(kind), Some(code)) => format!("reject with {kind} {}", render(code)),
            _ => "reject".into(),
        },
        "jump" | "goto" => format!("{key} {}", field("target")),
        "counter" => "counter".into(),
        "log" => match body.get("prefix") {
            Some(prefix) => format!("log prefix \"{}\"", prefix.as_str().unwrap_or("")),
            None => "log".into(),
        },
        "limit" => format!(
            "limit rate {}{}/{}",
            if body.get("inv").and_then(Value::as_bool) == Some(true) {
                "over "
            } else {
                ""
            },
            field("rate"),
            field("per")
        ),
        "mangle" => format!("{} set {}", field("key"), field("value")),
        "dnat" | "snat" => format!(
            "{key} {}to {}{}",
            body.get("family")
                .and_then(Value::as_str)
                .map(|family| format!("{family} "))
                .unwrap_or_default(),
            field("addr"),
            body.get("port")
                .map(|p| format!(":{}", render(p)))
                .unwrap_or_default()
        ),
        "redirect" => format!("redirect to :{}", field("port")),
        "masquerade" => "masquerade".into(),
        "vmap" => format!("{} vmap {}", field("key"), render_vmap(body.get("data"))),
        "queue" => "queue".into(),
        "xt" => format!("xt {} {}", field("type"), field("name")),
        _ => format!("{key} {body}"),
    }
}

fn render_vmap(data: Option<&Value>) -> String {
    let Some(entries) = data.and_then(|d| d.get("set")).and_then(Value::as_array) else {
        return data.map(render).unwrap_or_default();
    };
    let shown: Vec<String> = entries
        .iter()
        .map(|entry| match entry.as_array().map(Vec::as_slice) {
            Some([key, verdict]) => format!("{} : {}", render(key), render(verdict)),
            _ => render(entry),
        })
        .collect();
    format!("{{ {} }}", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
      {"table": {"family": "inet", "name": "f2b-table", "handle": 5}},
      {"set": {"family": "inet", "name": "addr-set-sshd", "table": "f2b-table", "type": "ipv4_addr", "handle": 2, "elem": ["192.0.2.7", {"prefix": {"addr": "198.51.100.0", "len": 24}}]}},
      {"chain": {"family": "inet", "table": "f2b-table", "name": "f2b-chain", "handle": 1, "type": "filter", "hook": "input", "prio": -1, "policy": "accept"}},
      {"rule": {"family": "inet", "table": "f2b-table", "chain": "f2b-chain", "handle": 4, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [22]}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@addr-set-sshd"}}, {"reject": {"type": "icmpx", "expr": "port-unreachable"}}]}},
      {"rule": {"family": "inet", "table": "f2b-table", "chain": "f2b-chain", "handle": 6, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"counter": {"packets": 7, "bytes": 420}}, {"accept": null}]}},
      {"rule": {"family": "inet", "table": "f2b-table", "chain": "f2b-chain", "handle": 7, "expr": [{"vmap": {"key": {"ct": {"key": "state"}}, "data": {"set": [["established", {"accept": null}], ["invalid", {"drop": null}]]}}}]}}
    ]}"#;

    /// nft's `meta time < T` (a source's deadline) no longer holds at T;
    /// iptables' `--datestop T` holds through the second T (xt_time
    /// compares whole seconds): each read as its kernel judges it.
    #[test]
    fn a_deadline_ends_where_each_kernel_ends_it() {
        let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc();
        let nft = time_test("<", &serde_json::json!("2026-11-25 12:00:00")).unwrap();
        let Test::Time(TimeTest::Before(end)) = nft else {
            panic!("{nft:?}")
        };
        assert!(at("2026-11-25T11:59:59.999Z") < end);
        assert!(at("2026-11-25T12:00:00Z") >= end, "nft has closed at T");
        let through = time_test("<=", &serde_json::json!("2026-11-25 12:00:00")).unwrap();
        let Test::Time(TimeTest::Before(end)) = through else {
            panic!("{through:?}")
        };
        assert!(at("2026-11-25T12:00:00Z") < end);
        assert!(at("2026-11-25T12:00:00.001Z") >= end);
        let words = ["-m", "time", "--datestop", "2026-11-25T12:00:00"].map(String::from);
        let rule = crate::firewall::iptables::read::rule("INPUT", &words, &|_| false);
        let end = rule
            .steps
            .iter()
            .find_map(|step| match step {
                Step::Test(Match {
                    test: Test::Time(TimeTest::Before(end)),
                    ..
                }) => Some(*end),
                _ => None,
            })
            .unwrap();
        assert!(
            at("2026-11-25T12:00:00.999Z") < end,
            "iptables still matches in second T"
        );
        assert!(at("2026-11-25T12:00:01Z") >= end);
    }

    #[test]
    fn a_table_reads_with_its_sets_filled_in() {
        let listing = listing(TABLE).unwrap();
        let table = &listing.tables[&("inet".to_owned(), "f2b-table".to_owned())];
        let hooked = table.chains["f2b-chain"].clone().unwrap();
        assert_eq!(
            (hooked.hook, hooked.priority, hooked.policy),
            (Some(Hook::Input), -1, Policy::Accept)
        );
        let rules = &table.rules["f2b-chain"].rules;
        assert_eq!(rules.len(), 4, "the verdict map is one rule per entry");
        assert_eq!(rules[0].verdict, Verdict::Reject);
        assert_eq!(rules[0].handle, Some(4));
        assert_eq!(
            rules[0].text,
            "meta l4proto tcp tcp dport { 22 } ip saddr @addr-set-sshd reject with icmpx port-unreachable"
        );
        let source = rules[0].steps.iter().find_map(|step| match step {
            Step::Test(Match {
                test: Test::Source(addresses),
                ..
            }) => Some(addresses.clone()),
            _ => None,
        });
        let Some(Addresses::Set {
            ranges: Some(ranges),
            ..
        }) = source
        else {
            panic!("{source:?}")
        };
        assert_eq!(ranges.count(), 257);
        // Counters are left out, so the text stays the same from one reading to the next.
        assert_eq!(
            rules[1].text,
            "ct state established, related counter accept"
        );
        assert_eq!(rules[2].verdict, Verdict::Accept);
        assert_eq!(rules[3].verdict, Verdict::Drop);
        assert!(
            rules[2]
                .text
                .contains("ct state vmap { established : accept, invalid : drop }"),
            "{}",
            rules[2].text
        );
    }

    #[test]
    fn what_is_not_known_is_unknown_in_nfts_words() {
        let text = r#"{"nftables": [{"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 2,
          "expr": [{"match": {"op": "==", "left": {"socket": {"key": "transparent"}}, "right": 1}}, {"accept": null}]}},
          {"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 3, "expr": [{"tproxy": {"port": 1}}, {"accept": null}]}}]}"#;
        let listing = listing(text).unwrap();
        let rules = &listing.tables[&("inet".to_owned(), "t".to_owned())].rules["c"].rules;
        assert!(
            matches!(&rules[0].steps[0], Step::Test(Match { test: Test::Unknown(t), .. }) if t.contains("socket"))
        );
        assert!(matches!(&rules[1].steps[0], Step::Do(Effect::Unknown(_))));
        assert!(
            super::listing("not json")
                .unwrap_err()
                .starts_with("not JSON")
        );
        assert!(super::listing("{\"nftables\": {}}").is_err());
    }
}
