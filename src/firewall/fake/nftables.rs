//! The fake's nftables: tables of chains of rules, changed by `nft -f`
//! scripts, all of a script or none, listed (`nft -j list …`) and echoed
//! (`nft -e -j -f -`) in the JSON nft 1.0.6 prints, text for text — with
//! the canonical forms it prints rather than what it was given: a family
//! match a source implies left out, `/32` dropped, a network masked, a
//! set of one element a value, a leap second carried. `tests` in `real.rs`
//! hold it to the real tool. Knows the statements portlocker and the
//! property test's other tools write; any other is a panic that says so.

use std::fmt::Write as _;
use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use ipnet::IpNet;

use crate::config::{Family, Protocol};

use super::Probe;

/// What the fake says it is.
const METAINFO: &str = r#"{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}"#;

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

// ---- the script's words --------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Word,
    Text,
    Open,
    Close,
    /// `;` or the end of a line: the end of a statement.
    End,
    Comma,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    text: String,
    line: usize,
    start: usize,
    end: usize,
}

fn tokens(script: &str) -> Vec<Token> {
    let mut out = Vec::new();
    for (index, line) in script.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let mut at = 0;
        let token = |kind, text: String, from: usize, to: usize| Token {
            kind,
            text,
            line: index + 1,
            start: from + 1,
            end: to,
        };
        while at < chars.len() {
            let c = chars[at];
            let from = at;
            match c {
                '#' => break,
                c if c.is_whitespace() => at += 1,
                '{' | '}' | ';' | ',' => {
                    at += 1;
                    let kind = match c {
                        '{' => Kind::Open,
                        '}' => Kind::Close,
                        ';' => Kind::End,
                        _ => Kind::Comma,
                    };
                    out.push(token(kind, c.to_string(), from, at));
                }
                '"' => {
                    at += 1;
                    let mut text = String::new();
                    while at < chars.len() && chars[at] != '"' {
                        text.push(chars[at]);
                        at += 1;
                    }
                    at += 1;
                    out.push(token(Kind::Text, text, from, at));
                }
                _ => {
                    while at < chars.len()
                        && !chars[at].is_whitespace()
                        && !"{};,\"".contains(chars[at])
                    {
                        at += 1;
                    }
                    let text: String = chars[from..at].iter().collect();
                    out.push(token(Kind::Word, text, from, at));
                }
            }
        }
        out.push(Token {
            kind: Kind::End,
            text: String::new(),
            line: index + 1,
            start: chars.len() + 1,
            end: chars.len() + 1,
        });
    }
    out
}

/// What a successful script printed with `-e -j`: each object it added.
type Echo = Vec<String>;

/// Reads a script and carries it out on `ruleset`, all of it or none.
pub(super) fn apply(ruleset: &mut Ruleset, script: &str) -> Result<Echo, Refusal> {
    let mut work = ruleset.clone();
    let mut parser = Parser {
        tokens: tokens(script),
        at: 0,
        echo: Vec::new(),
    };
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

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    echo: Echo,
}

const NO_SUCH: &str = "Could not process rule: No such file or directory";

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Token {
        let token = self.tokens.get(self.at).cloned().unwrap_or(Token {
            kind: Kind::End,
            text: String::new(),
            line: 1,
            start: 1,
            end: 1,
        });
        self.at += 1;
        token
    }

    fn word(&mut self) -> Token {
        let token = self.next();
        if token.kind != Kind::Word {
            self.unknown(&token);
        }
        token
    }

    fn expect(&mut self, word: &str) {
        let token = self.next();
        if token.text != word {
            self.unknown(&token);
        }
    }

    fn is(&self, kind: Kind) -> bool {
        self.peek().is_some_and(|token| token.kind == kind)
    }

    fn skip_ends(&mut self) {
        while self.is(Kind::End) {
            self.at += 1;
        }
    }

    fn unknown(&self, token: &Token) -> ! {
        let line: Vec<&str> = self
            .tokens
            .iter()
            .filter(|t| t.line == token.line)
            .map(|t| t.text.as_str())
            .collect();
        panic!(
            "the fake nft does not know `{}` at line {} (`{}`): teach it what real nft does",
            token.text,
            token.line,
            line.join(" ")
        );
    }

    fn refuse(token: &Token, why: &str) -> Refusal {
        Refusal {
            line: token.line,
            start: token.start,
            end: token.end,
            why: why.to_owned(),
        }
    }

    fn script(&mut self, work: &mut Ruleset) -> Result<(), Refusal> {
        loop {
            self.skip_ends();
            let Some(first) = self.peek().cloned() else {
                return Ok(());
            };
            self.at += 1;
            match first.text.as_str() {
                "table" => self.table(work)?,
                "add" | "create" | "insert" | "delete" | "flush" => {
                    let what = self.word();
                    match (first.text.as_str(), what.text.as_str()) {
                        ("add", "table") => self.table(work)?,
                        ("add", "chain") => {
                            let (family, table) = (self.word().text, self.word());
                            let at = find_table(work, &family, &table)?;
                            let rules = self.chain(work, at);
                            self.rules_at(work, at, rules)?;
                        }
                        (op @ ("add" | "insert"), "rule") => {
                            let (family, table, chain) =
                                (self.word().text, self.word(), self.word());
                            let at = find_table(work, &family, &table)?;
                            let index = find_chain(&work.tables[at], &chain)?;
                            self.rule(work, at, index, op == "insert")?;
                        }
                        ("delete", "table") => {
                            let (family, name) = (self.word().text, self.word());
                            let at = find_table(work, &family, &name)?;
                            work.tables.remove(at);
                        }
                        ("delete", "chain") => {
                            let (family, table, chain) =
                                (self.word().text, self.word(), self.word());
                            let at = find_table(work, &family, &table)?;
                            let index = find_chain(&work.tables[at], &chain)?;
                            work.tables[at].chains.remove(index);
                        }
                        ("flush", "chain") => {
                            let (family, table, chain) =
                                (self.word().text, self.word(), self.word());
                            let at = find_table(work, &family, &table)?;
                            let index = find_chain(&work.tables[at], &chain)?;
                            work.tables[at].chains[index].rules.clear();
                        }
                        ("flush", "table") => {
                            let (family, table) = (self.word().text, self.word());
                            let at = find_table(work, &family, &table)?;
                            for chain in &mut work.tables[at].chains {
                                chain.rules.clear();
                            }
                        }
                        ("flush", "ruleset") => work.tables.clear(),
                        _ => self.unknown(&what),
                    }
                }
                _ => self.unknown(&first),
            }
        }
    }

    /// `table FAMILY NAME [{ chain … }]`, after `table` (or `add table`).
    /// As nft does, every chain of the block is made before any rule.
    fn table(&mut self, work: &mut Ruleset) -> Result<(), Refusal> {
        let family = self.word().text;
        if !["inet", "ip", "ip6"].contains(&family.as_str()) {
            let token = self.tokens[self.at - 1].clone();
            self.unknown(&token);
        }
        let name = self.word().text;
        let at = match work
            .tables
            .iter()
            .position(|t| t.family == family && t.name == name)
        {
            Some(at) => at,
            None => {
                work.handles += 1;
                let table = Table {
                    family,
                    name,
                    handle: work.handles,
                    chains: Vec::new(),
                    handles: 0,
                };
                self.echo.push(format!("{{\"add\": {}}}", table.json()));
                work.tables.push(table);
                work.tables.len() - 1
            }
        };
        if !self.is(Kind::Open) {
            return Ok(());
        }
        self.at += 1;
        let mut rules = Vec::new();
        loop {
            self.skip_ends();
            let token = self.next();
            match (token.kind.clone(), token.text.as_str()) {
                (Kind::Close, _) => break,
                (Kind::Word, "chain") => rules.extend(self.chain(work, at)),
                _ => self.unknown(&token),
            }
        }
        self.rules_at(work, at, rules)
    }

    /// Adds the rules whose statements begin at the tokens `rules` (with
    /// the chain each is for) to table `at`, and comes back.
    fn rules_at(
        &mut self,
        work: &mut Ruleset,
        at: usize,
        rules: Vec<(usize, usize)>,
    ) -> Result<(), Refusal> {
        let back = self.at;
        for (index, start) in rules {
            self.at = start;
            self.rule(work, at, index, false)?;
        }
        self.at = back;
        Ok(())
    }

    /// `NAME [{ type … ; policy …; rules }]`, after `chain` (or `add chain
    /// FAMILY TABLE`), in table `at`: the chain made (or found), and where
    /// each of its rules begins, to be added once every chain is made.
    fn chain(&mut self, work: &mut Ruleset, at: usize) -> Vec<(usize, usize)> {
        let name = self.word().text;
        let table = &mut work.tables[at];
        let index = match table.chains.iter().position(|c| c.name == name) {
            Some(index) => index,
            None => {
                table.handles += 1;
                table.chains.push(Chain {
                    name,
                    handle: table.handles,
                    base: None,
                    rules: Vec::new(),
                });
                table.chains.len() - 1
            }
        };
        let mut rules = Vec::new();
        if self.is(Kind::Open) {
            self.at += 1;
            loop {
                self.skip_ends();
                let Some(token) = self.peek().cloned() else {
                    self.unknown(&self.tokens[self.tokens.len() - 1].clone());
                };
                match (token.kind.clone(), token.text.as_str()) {
                    (Kind::Close, _) => {
                        self.at += 1;
                        break;
                    }
                    (Kind::Word, "type") => {
                        self.at += 1;
                        let base = self.base();
                        let chain = &mut work.tables[at].chains[index];
                        if chain.base.is_none() {
                            chain.base = Some(base);
                        }
                    }
                    (Kind::Word, "policy") => {
                        self.at += 1;
                        let policy = self.word().text;
                        if let Some(base) = &mut work.tables[at].chains[index].base {
                            base.policy = policy;
                        }
                    }
                    _ => {
                        rules.push((index, self.at));
                        self.skip_statement();
                    }
                }
            }
        }
        self.announce(work, at, index);
        rules
    }

    /// Past one statement: to its end, or the `}` that closes its block.
    fn skip_statement(&mut self) {
        let mut depth = 0;
        while let Some(token) = self.peek() {
            match token.kind {
                Kind::End if depth == 0 => return,
                Kind::Close if depth == 0 => return,
                Kind::Close => depth -= 1,
                Kind::Open => depth += 1,
                _ => {}
            }
            self.at += 1;
        }
    }

    /// nft echoes every chain a script adds, made or already there.
    fn announce(&mut self, work: &Ruleset, at: usize, index: usize) {
        let table = &work.tables[at];
        self.echo
            .push(format!("{{\"add\": {}}}", table.chains[index].json(table)));
    }

    /// `filter hook input priority P`, after `type`.
    fn base(&mut self) -> Base {
        let kind = self.word().text;
        self.expect("hook");
        let hook = self.word().text;
        self.expect("priority");
        let first = self.word();
        let mut priority = match first.text.as_str() {
            "raw" => -300,
            "mangle" => -150,
            "filter" => 0,
            "security" => 50,
            number => number
                .parse::<i64>()
                .unwrap_or_else(|_| self.unknown(&first)),
        };
        while let Some(sign) = self
            .peek()
            .filter(|t| t.text == "+" || t.text == "-")
            .cloned()
        {
            self.at += 1;
            let amount = self.word();
            let amount: i64 = amount
                .text
                .parse()
                .unwrap_or_else(|_| self.unknown(&amount));
            priority += if sign.text == "+" { amount } else { -amount };
        }
        Base {
            kind,
            hook,
            priority,
            policy: "accept".to_owned(),
        }
    }

    /// One rule, to the end of its statement, into chain `index` of table `at`.
    fn rule(
        &mut self,
        work: &mut Ruleset,
        at: usize,
        index: usize,
        first: bool,
    ) -> Result<(), Refusal> {
        let mut statements = Vec::new();
        let mut comment = None;
        let mut sets = 0;
        while !self.is(Kind::End) && !self.is(Kind::Close) {
            let token = self.word();
            let statement = match token.text.as_str() {
                "meta" => {
                    let key = self.word();
                    let op = self.op();
                    let right = match key.text.as_str() {
                        "nfproto" | "l4proto" | "iifname" => self.value(),
                        "time" => {
                            let value = self.next();
                            Right::Time(
                                nft_time(&value.text).unwrap_or_else(|| self.unknown(&value)),
                            )
                        }
                        _ => self.unknown(&key),
                    };
                    Statement::Match {
                        left: Left::Meta(key.text),
                        op: op.unwrap_or("=="),
                        right,
                    }
                }
                protocol @ ("ip" | "ip6" | "tcp" | "udp") => {
                    let field = self.word();
                    if protocol == "tcp" && field.text == "flags" {
                        self.tcp_flags()
                    } else {
                        let op = self.op().unwrap_or("==");
                        let right = match field.text.as_str() {
                            "saddr" | "daddr" if protocol.starts_with("ip") => {
                                self.addresses(protocol)
                            }
                            "dport" | "sport" if !protocol.starts_with("ip") => self.ports(),
                            _ => self.unknown(&field),
                        };
                        if matches!(right, Right::Set(_)) {
                            sets += 1;
                        }
                        Statement::Match {
                            left: Left::Payload(protocol.to_owned(), field.text),
                            op,
                            right,
                        }
                    }
                }
                "ct" => {
                    let key = self.word();
                    if key.text != "state" {
                        self.unknown(&key);
                    }
                    let op = self.op();
                    let (op, right) = self.states(op);
                    if matches!(right, Right::Set(_)) {
                        sets += 1;
                    }
                    Statement::Match {
                        left: Left::Ct(key.text),
                        op,
                        right,
                    }
                }
                "counter" => Statement::Counter,
                "accept" => Statement::Verdict(Verdict::Accept),
                "drop" => Statement::Verdict(Verdict::Drop),
                "reject" => Statement::Verdict(Verdict::Reject),
                "return" => Statement::Verdict(Verdict::Return),
                jump @ ("jump" | "goto") => {
                    let target = self.word();
                    if find_chain(&work.tables[at], &target).is_err() {
                        return Err(Parser::refuse(&target, NO_SUCH));
                    }
                    Statement::Verdict(match jump {
                        "jump" => Verdict::Jump(target.text),
                        _ => Verdict::Goto(target.text),
                    })
                }
                "comment" => {
                    let text = self.next();
                    if text.kind != Kind::Text {
                        self.unknown(&text);
                    }
                    comment = Some(text.text);
                    continue;
                }
                _ => self.unknown(&token),
            };
            statements.push(statement);
        }
        let statements = implied_left_out(statements);
        let table = &mut work.tables[at];
        table.handles += sets;
        table.handles += 1;
        let rule = Rule {
            handle: table.handles,
            statements,
            comment,
        };
        let (verb, chain) = (if first { "insert" } else { "add" }, &table.chains[index]);
        self.echo.push(format!(
            "{{\"{verb}\": {}}}",
            rule.json(table, chain, false)
        ));
        let rules = &mut table.chains[index].rules;
        match first {
            true => rules.insert(0, rule),
            false => rules.push(rule),
        }
        Ok(())
    }

    fn op(&mut self) -> Option<&'static str> {
        let op = match self.peek()?.text.as_str() {
            "==" => "==",
            "!=" => "!=",
            "<" => "<",
            ">" => ">",
            "<=" => "<=",
            ">=" => ">=",
            _ => return None,
        };
        self.at += 1;
        Some(op)
    }

    fn value(&mut self) -> Right {
        let token = self.next();
        match token.kind {
            Kind::Word | Kind::Text => Right::Text(token.text),
            _ => self.unknown(&token),
        }
    }

    /// `& (fin|syn|rst|ack) == syn`, after `tcp flags`.
    fn tcp_flags(&mut self) -> Statement {
        self.expect("&");
        let mask = self.word();
        let flags: Vec<String> = mask
            .text
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split('|')
            .map(str::to_owned)
            .collect();
        let op = self.op().unwrap_or("==");
        let right = self.value();
        Statement::Match {
            left: Left::TcpFlags(flags),
            op,
            right,
        }
    }

    /// A set `{ a, b }` of what `one` reads, or one of them.
    fn set_of(&mut self, one: impl Fn(&mut Parser) -> Right) -> Right {
        if !self.is(Kind::Open) {
            return one(self);
        }
        self.at += 1;
        let mut items = Vec::new();
        loop {
            items.push(one(self));
            let token = self.next();
            match token.kind {
                Kind::Comma => continue,
                Kind::Close => break,
                _ => self.unknown(&token),
            }
        }
        // A set of one is that one element.
        if items.len() == 1 {
            return items.remove(0);
        }
        Right::Set(items)
    }

    fn addresses(&mut self, protocol: &str) -> Right {
        let v6 = protocol == "ip6";
        self.set_of(|parser| {
            let token = parser.word();
            let net = token
                .text
                .parse::<IpNet>()
                .or_else(|_| token.text.parse::<IpAddr>().map(IpNet::from))
                .ok()
                .filter(|net| matches!(net, IpNet::V6(_)) == v6)
                .unwrap_or_else(|| parser.unknown(&token));
            Right::Net(net.trunc())
        })
    }

    fn ports(&mut self) -> Right {
        self.set_of(|parser| {
            let token = parser.word();
            let port = |text: &str| text.parse::<u16>().ok().map(u64::from);
            let ports = match token.text.split_once('-') {
                Some((first, last)) => port(first).zip(port(last)).map(|(a, b)| Right::Range(a, b)),
                None => port(&token.text).map(Right::Number),
            };
            ports.unwrap_or_else(|| parser.unknown(&token))
        })
    }

    /// `new`, `new,untracked` (flags), or `{ new, untracked }` (a set).
    fn states(&mut self, op: Option<&'static str>) -> (&'static str, Right) {
        if self.is(Kind::Open) {
            let right = self.set_of(|parser| parser.value());
            let op = match right {
                Right::Set(_) => op.unwrap_or("=="),
                _ => op.unwrap_or("in"),
            };
            return (op, right);
        }
        let mut states = vec![self.word().text];
        while self.is(Kind::Comma) {
            self.at += 1;
            states.push(self.word().text);
        }
        states.sort_by_key(|state| state_bit(state));
        let right = match states.len() {
            1 => Right::Text(states.remove(0)),
            _ => Right::Flags(states),
        };
        (op.unwrap_or("in"), right)
    }
}

/// The bit of a conntrack state, the order nft lists them in.
fn state_bit(state: &str) -> u32 {
    match state {
        "invalid" => 1,
        "established" => 2,
        "related" => 4,
        "new" => 8,
        "untracked" => 64,
        _ => 128,
    }
}

/// nft leaves out a match the next one implies: `meta nfproto ipv4` before
/// `ip saddr`, `meta l4proto tcp` before `tcp dport`.
fn implied_left_out(statements: Vec<Statement>) -> Vec<Statement> {
    let mut kept: Vec<Statement> = Vec::new();
    for (index, statement) in statements.iter().enumerate() {
        let next = statements.get(index + 1);
        let implied = match (statement, next) {
            (
                Statement::Match {
                    left: Left::Meta(key),
                    op: "==",
                    right: Right::Text(value),
                },
                Some(Statement::Match {
                    left: Left::Payload(protocol, _),
                    ..
                }),
            ) => matches!(
                (key.as_str(), value.as_str(), protocol.as_str()),
                ("nfproto", "ipv4", "ip")
                    | ("nfproto", "ipv6", "ip6")
                    | ("l4proto", "tcp", "tcp")
                    | ("l4proto", "udp", "udp")
            ),
            _ => false,
        };
        if !implied {
            kept.push(statement.clone());
        }
    }
    kept
}

/// A `meta time` value as nft reads it, in UTC (portlocker's runner sets
/// TZ=UTC0): nanoseconds since the epoch, a second of 60 carried into the
/// next minute, a moment before 1970 wrapped around 2^64 as nft 1.0.6 does.
fn nft_time(text: &str) -> Option<u64> {
    let (date, clock) = text.split_once(' ')?;
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let parts: Vec<i64> = clock
        .split(':')
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    let [hour, minute, second] = parts[..] else {
        return None;
    };
    let moment = NaiveDateTime::from(date)
        + TimeDelta::hours(hour)
        + TimeDelta::minutes(minute)
        + TimeDelta::seconds(second);
    let nanos = i128::from(moment.and_utc().timestamp()) * 1_000_000_000;
    Some(nanos.rem_euclid(1 << 64) as u64)
}

fn time_text(nanos: u64) -> String {
    let seconds = (nanos / 1_000_000_000) as i64;
    DateTime::<Utc>::from_timestamp(seconds, 0)
        .map(|moment| moment.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn find_table(work: &Ruleset, family: &str, name: &Token) -> Result<usize, Refusal> {
    work.tables
        .iter()
        .position(|t| t.family == family && t.name == name.text)
        .ok_or_else(|| Parser::refuse(name, NO_SUCH))
}

fn find_chain(table: &Table, name: &Token) -> Result<usize, Refusal> {
    table
        .chains
        .iter()
        .position(|c| c.name == name.text)
        .ok_or_else(|| Parser::refuse(name, NO_SUCH))
}

// ---- JSON, as nft 1.0.6 writes it ----------------------------------------

fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Table {
    fn json(&self) -> String {
        format!(
            "{{\"table\": {{\"family\": {}, \"name\": {}, \"handle\": {}}}}}",
            quoted(&self.family),
            quoted(&self.name),
            self.handle
        )
    }

    /// Its objects as `list table` prints them: the table, its chains, then
    /// every chain's rules.
    fn listing(&self, out: &mut Vec<String>) {
        out.push(self.json());
        out.extend(self.chains.iter().map(|chain| chain.json(self)));
        for chain in &self.chains {
            out.extend(chain.rules.iter().map(|rule| rule.json(self, chain, true)));
        }
    }
}

impl Chain {
    fn json(&self, table: &Table) -> String {
        let mut text = format!(
            "{{\"chain\": {{\"family\": {}, \"table\": {}, \"name\": {}, \"handle\": {}",
            quoted(&table.family),
            quoted(&table.name),
            quoted(&self.name),
            self.handle
        );
        if let Some(base) = &self.base {
            let _ = write!(
                text,
                ", \"type\": {}, \"hook\": {}, \"prio\": {}, \"policy\": {}",
                quoted(&base.kind),
                quoted(&base.hook),
                base.priority,
                quoted(&base.policy)
            );
        }
        text.push_str("}}");
        text
    }
}

impl Rule {
    /// As listed (`sorted`: sets as the kernel keeps them) or as echoed.
    fn json(&self, table: &Table, chain: &Chain, sorted: bool) -> String {
        let mut text = format!(
            "{{\"rule\": {{\"family\": {}, \"table\": {}, \"chain\": {}, \"handle\": {}",
            quoted(&table.family),
            quoted(&table.name),
            quoted(&chain.name),
            self.handle
        );
        if let Some(comment) = &self.comment {
            let _ = write!(text, ", \"comment\": {}", quoted(comment));
        }
        let statements: Vec<String> = self
            .statements
            .iter()
            .map(|statement| statement.json(sorted))
            .collect();
        let _ = write!(text, ", \"expr\": [{}]}}}}", statements.join(", "));
        text
    }
}

impl Statement {
    fn json(&self, sorted: bool) -> String {
        match self {
            Statement::Counter => "{\"counter\": {\"packets\": 0, \"bytes\": 0}}".to_owned(),
            Statement::Verdict(verdict) => match verdict {
                Verdict::Accept => "{\"accept\": null}".to_owned(),
                Verdict::Drop => "{\"drop\": null}".to_owned(),
                Verdict::Reject => "{\"reject\": null}".to_owned(),
                Verdict::Return => "{\"return\": null}".to_owned(),
                Verdict::Jump(target) => {
                    format!("{{\"jump\": {{\"target\": {}}}}}", quoted(target))
                }
                Verdict::Goto(target) => {
                    format!("{{\"goto\": {{\"target\": {}}}}}", quoted(target))
                }
            },
            Statement::Match { left, op, right } => format!(
                "{{\"match\": {{\"op\": {}, \"left\": {}, \"right\": {}}}}}",
                quoted(op),
                left.json(),
                right.json(sorted)
            ),
        }
    }
}

impl Left {
    fn json(&self) -> String {
        match self {
            Left::Meta(key) => format!("{{\"meta\": {{\"key\": {}}}}}", quoted(key)),
            Left::Ct(key) => format!("{{\"ct\": {{\"key\": {}}}}}", quoted(key)),
            Left::Payload(protocol, field) => format!(
                "{{\"payload\": {{\"protocol\": {}, \"field\": {}}}}}",
                quoted(protocol),
                quoted(field)
            ),
            Left::TcpFlags(mask) => {
                let mask: Vec<String> = mask.iter().map(|flag| quoted(flag)).collect();
                format!(
                    "{{\"&\": [{{\"payload\": {{\"protocol\": \"tcp\", \"field\": \"flags\"}}}}, [{}]]}}",
                    mask.join(", ")
                )
            }
        }
    }
}

impl Right {
    fn json(&self, sorted: bool) -> String {
        match self {
            Right::Text(text) => quoted(text),
            Right::Number(number) => number.to_string(),
            Right::Range(first, last) => format!("{{\"range\": [{first}, {last}]}}"),
            Right::Time(nanos) => quoted(&time_text(*nanos)),
            Right::Net(net) if net.prefix_len() == net.max_prefix_len() => {
                quoted(&net.addr().to_string())
            }
            Right::Net(net) => format!(
                "{{\"prefix\": {{\"addr\": {}, \"len\": {}}}}}",
                quoted(&net.addr().to_string()),
                net.prefix_len()
            ),
            Right::Flags(flags) => {
                let flags: Vec<String> = flags.iter().map(|flag| quoted(flag)).collect();
                format!("[{}]", flags.join(", "))
            }
            Right::Set(items) => {
                let mut items = items.clone();
                if sorted {
                    items.sort_by_key(Right::order);
                }
                let items: Vec<String> = items.iter().map(|item| item.json(sorted)).collect();
                format!("{{\"set\": [{}]}}", items.join(", "))
            }
        }
    }

    /// Where the kernel keeps an element of a set.
    fn order(&self) -> (u128, String) {
        match self {
            Right::Number(n) | Right::Range(n, _) => (u128::from(*n), String::new()),
            Right::Net(net) => match net.network() {
                IpAddr::V4(address) => (u128::from(u32::from(address)), String::new()),
                IpAddr::V6(address) => (u128::from(address), String::new()),
            },
            Right::Text(text) => (u128::from(state_bit(text)), text.clone()),
            _ => (0, String::new()),
        }
    }
}

impl Ruleset {
    /// What `nft -j list table FAMILY NAME` prints; None: no such table.
    pub fn list_table(&self, family: &str, name: &str) -> Option<String> {
        let table = self
            .tables
            .iter()
            .find(|t| t.family == family && t.name == name)?;
        let mut objects = vec![METAINFO.to_owned()];
        table.listing(&mut objects);
        Some(document(&objects))
    }

    /// What `nft -j list ruleset` prints.
    pub fn list_ruleset(&self) -> String {
        let mut objects = vec![METAINFO.to_owned()];
        for table in &self.tables {
            table.listing(&mut objects);
        }
        document(&objects)
    }

    /// What `nft -j list chains` prints.
    pub fn list_chains(&self) -> String {
        let mut objects = vec![METAINFO.to_owned()];
        for table in &self.tables {
            objects.extend(table.chains.iter().map(|chain| chain.json(table)));
        }
        document(&objects)
    }

    /// What `nft -j list tables` prints.
    pub fn list_tables(&self) -> String {
        let mut objects = vec![METAINFO.to_owned()];
        objects.extend(self.tables.iter().map(Table::json));
        document(&objects)
    }

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

fn document(objects: &[String]) -> String {
    format!("{{\"nftables\": [{}]}}", objects.join(", "))
}

/// What `nft -e -j -f` prints for `echo`: nothing when it is empty.
pub(super) fn echoed(echo: &[String]) -> String {
    match echo.is_empty() {
        true => String::new(),
        false => format!("{}\n", document(echo)),
    }
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
