//! The oracle: what the fake host does to a new connection, worked out from
//! its rules as the kernel walks them — every base chain on the input hook
//! in priority order (iptables' INPUT at 0, nftables' chains at theirs), an
//! accept ending only its own base chain, a drop final — never by
//! portlocker's verdicts.

use chrono::{DateTime, NaiveDateTime, Utc};
use ipnet::IpNet;

use crate::config::{Family, Protocol};

use super::nftables::{self, Ruleset, Verdict};
use super::xtables::{self, Table};
use super::{Fate, Probe};

/// The priority of iptables' filter INPUT on the input hook.
const IPTABLES_PRIORITY: i64 = 0;

/// What one base chain decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// On to the next base chain.
    Accept,
    /// Final.
    Drop,
}

/// The fate of `probe` of `family` through `iptables` (its filter table)
/// and `ruleset`, at `clock`.
pub(super) fn fate(
    iptables: &Table,
    ruleset: &Ruleset,
    family: Family,
    probe: Probe,
    clock: Option<DateTime<Utc>>,
) -> Fate {
    let mut hooked: Vec<(i64, Box<dyn Fn() -> Decision + '_>)> = Vec::new();
    hooked.push((
        IPTABLES_PRIORITY,
        Box::new(move || iptables_input(iptables, probe, clock)),
    ));
    for (priority, table, chain) in ruleset.input_chains(family) {
        hooked.push((
            priority,
            Box::new(move || nft_base(table, chain, family, probe, clock)),
        ));
    }
    // Equal priorities keep the order they were hooked in: iptables first.
    hooked.sort_by_key(|(priority, _)| *priority);
    for (_, decide) in &hooked {
        if decide() == Decision::Drop {
            return Fate::Dropped;
        }
    }
    Fate::Accepted
}

fn iptables_input(table: &Table, probe: Probe, clock: Option<DateTime<Utc>>) -> Decision {
    let policy = table.chains["INPUT"].policy.as_deref();
    let fate = walk(table, "INPUT", probe, clock, 0).unwrap_or(match policy {
        Some("DROP") => Fate::Dropped,
        _ => Fate::Accepted,
    });
    match fate {
        Fate::Accepted => Decision::Accept,
        Fate::Dropped => Decision::Drop,
    }
}

/// The fate a chain decides for `probe`; None when it falls off the end
/// or returns.
fn walk(
    table: &Table,
    name: &str,
    probe: Probe,
    clock: Option<DateTime<Utc>>,
    depth: usize,
) -> Option<Fate> {
    assert!(depth < 16, "jumps loop through {name}");
    let chain = table
        .chains
        .get(name)
        .unwrap_or_else(|| panic!("a jump to {name}, which does not exist"));
    for rule in &chain.rules {
        if !matches(rule, probe, clock) {
            continue;
        }
        match xtables::target(rule) {
            Some("ACCEPT") => return Some(Fate::Accepted),
            Some("DROP" | "REJECT") => return Some(Fate::Dropped),
            Some("RETURN") => return None,
            Some("LOG") | None => {}
            Some(other) => {
                if let Some(fate) = walk(table, other, probe, clock, depth + 1) {
                    return Some(fate);
                }
            }
        }
    }
    None
}

/// Whether every match of `rule` holds for a new connection (a TCP SYN,
/// conntrack state NEW) arriving on eth0.
fn matches(rule: &[String], probe: Probe, clock: Option<DateTime<Utc>>) -> bool {
    let moment = |text: &str| {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S")
            .expect("times are stored as iptables lists them")
            .and_utc()
    };
    let now = || clock.expect("a time match needs the fake's clock");
    let mut i = 0;
    while i < rule.len() {
        let value = rule.get(i + 1).map_or("", String::as_str);
        let holds = match rule[i].as_str() {
            "-s" => {
                let net: IpNet = value.parse().expect("sources are stored canonical");
                net.contains(&probe.from)
            }
            "-p" => match value {
                "all" => true,
                "tcp" => probe.protocol == Protocol::Tcp,
                "udp" => probe.protocol == Protocol::Udp,
                other => panic!("the oracle does not know protocol {other}"),
            },
            "-m" => match value {
                "tcp" | "udp" | "comment" | "conntrack" | "time" => true,
                other => panic!("the oracle does not know match {other}"),
            },
            "--datestart" => now() >= moment(value),
            "--datestop" => now() <= moment(value),
            "--dport" => {
                let (first, last) = value.split_once(':').unwrap_or((value, value));
                let (first, last): (u16, u16) = (first.parse().unwrap(), last.parse().unwrap());
                (first..=last).contains(&probe.port)
            }
            "--tcp-flags" => {
                // A new connection's first packet carries SYN alone.
                let set = rule.get(i + 2).map_or("", String::as_str);
                let examined: Vec<&str> = value.split(',').collect();
                let wanted: Vec<&str> = set.split(',').filter(|f| !f.is_empty()).collect();
                i += 1;
                let seen: Vec<&str> = examined.into_iter().filter(|f| *f == "SYN").collect();
                seen == wanted
            }
            "--ctstate" => value.split(',').any(|state| state == "NEW"),
            "--comment" => true,
            "-i" => value == "eth0",
            "-j" => true,
            other => panic!("the oracle does not know {other}"),
        };
        if !holds {
            return false;
        }
        i += 2;
    }
    true
}

/// What one nftables base chain decides for `probe`: its rules in order,
/// into the chains they jump to, its policy at the end.
fn nft_base(
    table: &nftables::Table,
    chain: &nftables::Chain,
    family: Family,
    probe: Probe,
    clock: Option<DateTime<Utc>>,
) -> Decision {
    let policy = match chain.base.as_ref().map(|base| base.policy.as_str()) {
        Some("drop") => Decision::Drop,
        _ => Decision::Accept,
    };
    nft_walk(table, chain, family, probe, clock, 0).unwrap_or(policy)
}

fn nft_walk(
    table: &nftables::Table,
    chain: &nftables::Chain,
    family: Family,
    probe: Probe,
    clock: Option<DateTime<Utc>>,
    depth: usize,
) -> Option<Decision> {
    assert!(depth < 16, "jumps loop through {}", chain.name);
    for rule in &chain.rules {
        if !nftables::matches(rule, family, probe, clock) {
            continue;
        }
        let verdict = rule
            .statements
            .iter()
            .find_map(|statement| match statement {
                nftables::Statement::Verdict(verdict) => Some(verdict),
                _ => None,
            });
        match verdict {
            None => {}
            Some(Verdict::Accept) => return Some(Decision::Accept),
            Some(Verdict::Drop | Verdict::Reject) => return Some(Decision::Drop),
            Some(Verdict::Return) => return None,
            Some(Verdict::Jump(target)) => {
                let into = table
                    .chain(target)
                    .expect("jumps are checked on committing");
                if let Some(decision) = nft_walk(table, into, family, probe, clock, depth + 1) {
                    return Some(decision);
                }
            }
            Some(Verdict::Goto(target)) => {
                let into = table
                    .chain(target)
                    .expect("gotos are checked on committing");
                return nft_walk(table, into, family, probe, clock, depth + 1);
            }
        }
    }
    None
}
