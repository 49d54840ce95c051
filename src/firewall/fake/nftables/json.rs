//! What the fake nft prints, text for text as nft 1.0.6 does: listings
//! (`-j list …`) and the echo of a script (`-e -j`).

use std::fmt::Write as _;
use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::script::state_bit;
use super::{Chain, Left, Right, Rule, Ruleset, Statement, Table, Verdict};

/// What the fake says it is.
const METAINFO: &str = r#"{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}"#;

pub(super) fn quoted(text: &str) -> String {
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
    pub(super) fn json(&self) -> String {
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
    pub(super) fn json(&self, table: &Table) -> String {
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
    pub(super) fn json(&self, table: &Table, chain: &Chain, sorted: bool) -> String {
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
    pub(super) fn json(&self, sorted: bool) -> String {
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
    pub(super) fn json(&self) -> String {
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
    pub(super) fn json(&self, sorted: bool) -> String {
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

fn time_text(nanos: u64) -> String {
    let seconds = (nanos / 1_000_000_000) as i64;
    DateTime::<Utc>::from_timestamp(seconds, 0)
        .map(|moment| moment.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
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
    /// `others`: the objects of iptables-nft's tables, which nft lists too.
    pub fn list_chains(&self, others: &[String]) -> String {
        let mut objects = vec![METAINFO.to_owned()];
        objects.extend(
            others
                .iter()
                .filter(|o| o.starts_with("{\"chain\""))
                .cloned(),
        );
        for table in &self.tables {
            objects.extend(table.chains.iter().map(|chain| chain.json(table)));
        }
        document(&objects)
    }

    /// What `nft -j list tables` prints; `others` as for `list_chains`.
    pub fn list_tables(&self, others: &[String]) -> String {
        let mut objects = vec![METAINFO.to_owned()];
        objects.extend(
            others
                .iter()
                .filter(|o| o.starts_with("{\"table\""))
                .cloned(),
        );
        objects.extend(self.tables.iter().map(Table::json));
        document(&objects)
    }
}

fn document(objects: &[String]) -> String {
    format!("{{\"nftables\": [{}]}}", objects.join(", "))
}

/// What `nft -e -j -f` prints for `echo`: nothing when it is empty.
pub(in crate::firewall::fake) fn echoed(echo: &[String]) -> String {
    match echo.is_empty() {
        true => String::new(),
        false => format!("{}\n", document(echo)),
    }
}
