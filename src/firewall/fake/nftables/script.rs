//! The fake nft reading a script: its words, and each command carried out
//! on a copy of the ruleset in the order nft carries it out — a table
//! block's chains before its rules — with nft's canonical forms and the
//! kernel's handles.

use std::net::IpAddr;

use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use ipnet::IpNet;

use super::{Base, Chain, Echo, Left, Refusal, Right, Rule, Ruleset, Statement, Table, Verdict};

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

pub(super) struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// What `-e -j` prints of what the script added, object by object.
    pub echo: Echo,
}

const NO_SUCH: &str = "Could not process rule: No such file or directory";

impl Parser {
    pub fn new(script: &str) -> Parser {
        Parser {
            tokens: tokens(script),
            at: 0,
            echo: Vec::new(),
        }
    }

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

    /// Carries out every command of the script on `work`.
    pub fn script(&mut self, work: &mut Ruleset) -> Result<(), Refusal> {
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
pub(super) fn state_bit(state: &str) -> u32 {
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
