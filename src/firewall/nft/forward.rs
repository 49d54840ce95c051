//! The mirror (`firewall/forward.rs`) in nftables: a table of portlocker's,
//! `inet portlocker-fwd`, with one base chain on the forward hook (priority
//! -1, policy accept). A drop in any base chain is final, so it needs
//! nothing of Docker's chains; a source let in returns (which ends this
//! chain only, as in `inet portlocker`). Its rules are portlocker's, each
//! matching the port a translated connection was sent to (`ct status dnat
//! ct direction original ct original proto-dst P`) instead of the port it
//! meets, for the families where Docker is (its DOCKER-USER chain exists).
//! Written whole in one `nft -f -` transaction only when what is listed
//! differs; deleted when there is nothing to mirror.

use crate::config::Family;
use crate::firewall::forward::{Forwarded, Mirror, closes_only};
use crate::firewall::model::Rule;

use super::json::{self, Object, text};
use super::{Matches, Nft, Runner, WRITE, nft_rule_on};
use crate::sys::runner::{CommandError, Failure};

/// The mirror's table, as nft names it.
pub const TABLE: &str = "inet portlocker-fwd";

/// Its one base chain, and the chain's declaration.
const CHAIN: &str = "forward";
const BASE: &str = "type filter hook forward priority -1; policy accept;";

/// `rule` as it filters forwarded connections, in nft's syntax.
pub fn nft_rule(rule: &Rule) -> String {
    nft_rule_on(rule, |protocol, ports| {
        format!(
            "meta l4proto {protocol} ct status dnat ct direction original ct original \
             proto-dst {ports}"
        )
    })
}

/// What the table holds: None when it does not exist; each rule of its
/// forward chain, None for one that is not the mirror's; and whether the
/// table is as the mirror writes it (that one chain, so declared).
#[derive(Debug, Default, PartialEq, Eq)]
struct Held {
    rules: Vec<Option<Rule>>,
    shaped: bool,
}

/// Reads `nft -j list table inet portlocker-fwd`.
fn held(listing: &str, config: &crate::config::Config) -> Result<Held, String> {
    let mut held = Held {
        rules: Vec::new(),
        shaped: true,
    };
    let mut chains = 0;
    for object in json::objects(listing)? {
        match object {
            Object::Chain(chain) => {
                chains += 1;
                let as_written = text(&chain.name) == CHAIN
                    && text(&chain.hook) == "forward"
                    && text(&chain.policy) == "accept"
                    && chain.prio == Some(-1);
                held.shaped &= as_written;
            }
            Object::Rule(listed) => {
                let mut found = Matches::default();
                let known = listed.expr.iter().all(|e| found.take(e).is_some());
                let rule = match (known, found.family()) {
                    (true, Some(family)) => {
                        found.mirrored(config, family, listed.comment.as_deref())
                    }
                    _ => None,
                };
                held.rules.push(rule);
            }
            _ => {}
        }
    }
    held.shaped &= chains == 1;
    Ok(held)
}

/// The script that makes the table hold `wanted`, given what it holds;
/// None when it holds it already.
fn script(wanted: &[Rule], held: Option<&Held>) -> Option<String> {
    let in_place = match held {
        None => wanted.is_empty(),
        Some(held) => {
            let rules = held.rules.iter().map(Option::as_ref);
            held.shaped && rules.eq(wanted.iter().map(Some))
        }
    };
    if in_place {
        return None;
    }
    let mut lines = vec![format!("table {TABLE}"), format!("delete table {TABLE}")];
    if !wanted.is_empty() {
        lines.push(format!("table {TABLE} {{"));
        lines.push(format!("\tchain {CHAIN} {{"));
        lines.push(format!("\t\t{BASE}"));
        lines.extend(wanted.iter().map(|rule| format!("\t\t{}", nft_rule(rule))));
        lines.push("\t}".to_owned());
        lines.push("}".to_owned());
    }
    Some(lines.join("\n") + "\n")
}

impl<R: Runner> Nft<'_, R> {
    /// Makes the mirror's table hold the mirror, for the families where
    /// Docker is (`dry`: says what it would do instead). A family the
    /// mirror leaves out (its rules could not be read) leaves the table as
    /// it is.
    pub fn forward(&mut self, mirror: &Mirror, dry: bool) -> Forwarded {
        let mut forwarded = Forwarded::default();
        if let Err(error) = self.forward_all(mirror, dry, &mut forwarded) {
            forwarded.errors.push(error);
        }
        forwarded
    }

    fn forward_all(
        &mut self,
        mirror: &Mirror,
        dry: bool,
        forwarded: &mut Forwarded,
    ) -> Result<(), CommandError> {
        if self
            .config
            .families()
            .iter()
            .any(|family| !mirror.families.contains_key(family))
        {
            return Ok(());
        }
        let (docker, made) = self.look_for_docker()?;
        forwarded.docker = !docker.is_empty();
        // Where Docker was seen before, kept before it starts (at boot).
        let wanted: Vec<Rule> = mirror
            .families
            .iter()
            .filter(|(family, _)| mirror.docker_known || docker.contains(family))
            .flat_map(|(_, rules)| rules.iter().cloned())
            .collect();
        if wanted.is_empty() && !made {
            return Ok(());
        }
        let held = self.held()?;
        let Some(text) = script(&wanted, held.as_ref()) else {
            return Ok(());
        };
        let what = match wanted.is_empty() {
            false => format!(
                "ports Docker publishes: table {TABLE} holds portlocker's {} rules",
                wanted.len()
            ),
            true => format!("ports Docker publishes: table {TABLE} deleted"),
        };
        let command = self.command(&WRITE, Some(text));
        let committed = forwarded.commit(what, command, dry, |command| self.run(command));
        let Err(error) = committed else {
            forwarded.restored |= !dry && !docker.is_empty() && !wanted.is_empty();
            return Ok(());
        };
        // Refused: what the mirror closes goes in alone, each open a close.
        let closes = closes_only(&wanted);
        if !closes.is_empty() && closes != wanted {
            let what = format!(
                "ports Docker publishes: table {TABLE} holds portlocker's {} closes (every \
                 open there closed, after a refusal)",
                closes.len()
            );
            let text = script(&closes, None).expect("closes to write");
            let command = self.command(&WRITE, Some(text));
            if forwarded
                .commit(what.clone(), command, dry, |c| self.run(c))
                .is_ok()
            {
                log::warn!("{what}");
            }
        }
        Err(error)
    }

    /// The families whose filter table has Docker's DOCKER-USER chain, and
    /// whether the mirror's table has a chain (then it exists).
    fn look_for_docker(&mut self) -> Result<(Vec<Family>, bool), CommandError> {
        let command = self.command(&["-j", "list", "chains"], None);
        let done = self.run(command.clone())?;
        let unreadable = |why: String| CommandError {
            command: command.clone(),
            failure: Failure::Unreadable(why),
        };
        let mut families = Vec::new();
        let mut made = false;
        for object in json::objects(&done.stdout).map_err(unreadable)? {
            let Object::Chain(chain) = object else {
                continue;
            };
            made |= (text(&chain.family), text(&chain.table)) == ("inet", "portlocker-fwd");
            let family = match (text(&chain.family), text(&chain.table)) {
                ("ip", "filter") => Family::Ipv4,
                ("ip6", "filter") => Family::Ipv6,
                _ => continue,
            };
            if text(&chain.name) == "DOCKER-USER" && !families.contains(&family) {
                families.push(family);
            }
        }
        Ok((families, made))
    }

    /// What the mirror's table holds; None when it does not exist.
    fn held(&mut self) -> Result<Option<Held>, CommandError> {
        let command = self.command(&["-j", "list", "table", "inet", "portlocker-fwd"], None);
        match self.run(command.clone()) {
            Ok(done) => held(&done.stdout, self.config)
                .map(Some)
                .map_err(|why| CommandError {
                    command,
                    failure: Failure::Unreadable(why),
                }),
            Err(CommandError {
                failure: Failure::Exited { code: 1, stderr },
                ..
            }) if stderr.contains("No such file or directory") => Ok(None),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, PortSpec, ServiceName};
    use crate::firewall::model::KernelTime;

    fn config() -> Config {
        Config::parse(
            "source = \"-\"\n[firewall]\nbackend = \"nftables\"\n[services]\nweb = 8080\n",
        )
        .unwrap()
    }

    fn close(config: &Config, ports: &str) -> Rule {
        Rule {
            family: Family::Ipv4,
            chain: config.firewall.chain.clone(),
            service: ServiceName::new("web").unwrap(),
            ports: PortSpec::parse(ports).unwrap(),
            keep_established: true,
            source: None,
            deadline: None,
        }
    }

    /// What nft 1.0.6 lists for the table written with a close of 8080 and
    /// 192.0.2.2 let in to 8000-8010 until a deadline: `meta l4proto tcp`
    /// left out beside `tcp flags`, and `meta nfproto` beside `ip saddr`;
    /// `ct status dnat` as a bit test.
    const LISTED: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "portlocker-fwd", "handle": 1}}, {"chain": {"family": "inet", "table": "portlocker-fwd", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": -1, "policy": "accept"}}, {"rule": {"family": "inet", "table": "portlocker-fwd", "chain": "forward", "handle": 2, "comment": "portlocker:web", "expr": [{"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}}, {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}, {"match": {"op": "==", "left": {"ct": {"key": "direction"}}, "right": "original"}}, {"match": {"op": "==", "left": {"ct": {"key": "proto-dst", "dir": "original"}}, "right": 8080}}, {"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["fin", "syn", "rst", "ack"]]}, "right": "syn"}}, {"drop": null}]}}, {"rule": {"family": "inet", "table": "portlocker-fwd", "chain": "forward", "handle": 3, "comment": "portlocker:web", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "192.0.2.2"}}, {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}, {"match": {"op": "==", "left": {"ct": {"key": "direction"}}, "right": "original"}}, {"match": {"op": "==", "left": {"ct": {"key": "proto-dst", "dir": "original"}}, "right": {"range": [8000, 8010]}}}, {"match": {"op": "<", "left": {"meta": {"key": "time"}}, "right": "2026-12-09 10:00:00"}}, {"return": null}]}}]}"#;

    #[test]
    fn what_the_mirror_writes_reads_back_as_written() {
        let config = config();
        let letting = close(&config, "8000-8010")
            .letting("192.0.2.2/32".parse().unwrap())
            .until(KernelTime::from_listed("2026-12-09T10:00:00"));
        let wanted = [close(&config, "8080"), letting];
        assert_eq!(
            nft_rule(&wanted[0]),
            "meta nfproto ipv4 meta l4proto tcp ct status dnat ct direction original ct \
             original proto-dst 8080 tcp flags & (fin|syn|rst|ack) == syn drop comment \
             \"portlocker:web\""
        );
        let held = held(LISTED, &config).unwrap();
        assert!(held.shaped);
        assert_eq!(
            held.rules,
            wanted.iter().cloned().map(Some).collect::<Vec<_>>()
        );
        assert_eq!(script(&wanted, Some(&held)), None);
        // A rule taken away, or one more: written whole again.
        let written = script(&wanted[..1], Some(&held)).unwrap();
        assert!(written.starts_with(&format!("table {TABLE}\ndelete table {TABLE}\n")));
        assert!(written.contains("proto-dst 8080") && !written.contains("8000-8010"));
        // Nothing to mirror: deleted, where it is; nothing done where not.
        assert_eq!(
            script(&[], Some(&held)).unwrap(),
            format!("table {TABLE}\ndelete table {TABLE}\n")
        );
        assert_eq!(script(&[], None), None);
    }

    #[test]
    fn a_rule_the_mirror_does_not_write_is_drift() {
        let config = config();
        // The same drop matching the port it meets, not the one it was sent to.
        let changed = LISTED.replace(
            r#"{"ct": {"key": "proto-dst", "dir": "original"}}, "right": 8080"#,
            r#"{"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8080"#,
        );
        let held = held(&changed, &config).unwrap();
        assert_eq!(held.rules[0], None);
        let moved = LISTED.replace(r#""prio": -1"#, r#""prio": 10"#);
        assert!(!held_shaped(&moved, &config));
    }

    fn held_shaped(listing: &str, config: &Config) -> bool {
        held(listing, config).unwrap().shaped
    }
}
