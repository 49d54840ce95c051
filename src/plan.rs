//! What the firewall holds, and the changes that make it match the control
//! file. Pure: never touches the network or the firewall.

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::config::{ChainName, Config, Family, ServiceName};
use crate::firewall::{Change, Rule, tag_of};
use crate::intent::Want;

/// What portlocker's part of the firewall holds, per family; `None` where
/// it could not be read (no root, no iptables, a failed listing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holdings {
    pub families: BTreeMap<Family, Option<FamilyHoldings>>,
}

/// One family's listing, as `iptables -S` printed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyHoldings {
    /// Whether portlocker's chain exists (always true when the chain is INPUT).
    pub chain_exists: bool,
    /// Positions in INPUT (1 = first) of each jump to the chain.
    pub jumps: Vec<usize>,
    /// Rules in the chain tagged `portlocker:*`, as listed, in chain order.
    pub tagged: Vec<Vec<String>>,
    /// Rules in portlocker's own chain that are not portlocker's, as listed.
    pub foreign: Vec<String>,
    /// Docker's chain exists: published container ports bypass INPUT.
    pub docker_user: bool,
}

impl FamilyHoldings {
    /// How many copies of `rule` the chain holds.
    pub fn count(&self, rule: &Rule) -> usize {
        let listed = rule.listed_spec();
        self.tagged.iter().filter(|spec| **spec == listed).count()
    }

    /// Whether the chain's rules are reached first, before any other INPUT rule.
    fn jump_at_top(&self, config: &Config) -> bool {
        config.firewall.chain.is_input() || self.jumps == [1]
    }

    /// Records a change that was carried out.
    fn record(&mut self, change: &Change) {
        match change {
            Change::NewChain { .. } => self.chain_exists = true,
            Change::InsertJump { .. } => {
                self.jumps.iter_mut().for_each(|position| *position += 1);
                self.jumps.insert(0, 1);
            }
            Change::DeleteJump { .. } => {
                if !self.jumps.is_empty() {
                    let removed = self.jumps.remove(0);
                    for position in self.jumps.iter_mut().filter(|p| **p > removed) {
                        *position -= 1;
                    }
                }
            }
            Change::DeleteChain { .. } => {
                *self = FamilyHoldings {
                    docker_user: self.docker_user,
                    ..FamilyHoldings::default()
                }
            }
            Change::Append(rule) => self.tagged.push(rule.listed_spec()),
            Change::Delete(rule) => remove_first(&mut self.tagged, &rule.listed_spec()),
            Change::DeleteListed { spec, .. } => remove_first(&mut self.tagged, spec),
        }
    }
}

fn remove_first(specs: &mut Vec<Vec<String>>, spec: &[String]) {
    if let Some(index) = specs.iter().position(|s| s == spec) {
        specs.remove(index);
    }
}

impl Holdings {
    /// Holdings with nothing read, for a dry run that cannot look.
    pub fn unknown(config: &Config) -> Holdings {
        let families = config.families().into_iter().map(|f| (f, None)).collect();
        Holdings { families }
    }

    /// Records a change that was carried out.
    pub fn record(&mut self, change: &Change) {
        if let Some(Some(held)) = self.families.get_mut(&change.family()) {
            held.record(change);
        }
    }

    /// The state of one service in one family.
    pub fn state(&self, config: &Config, service: &ServiceName, family: Family) -> PortState {
        let Some(Some(held)) = self.families.get(&family) else {
            return PortState::Unknown;
        };
        let counts: Vec<usize> = rules_of(config, family)
            .filter(|rule| rule.service == *service)
            .map(|rule| held.count(&rule))
            .collect();
        let tag = format!("portlocker:{service}");
        let accepts_some = held
            .tagged
            .iter()
            .any(|spec| spec.first().is_some_and(|a| a == "-s") && tag_of(spec) == Some(&tag));
        if !held.chain_exists || counts.iter().all(|&n| n == 0) {
            PortState::Open
        } else if counts.iter().all(|&n| n > 0) && held.jump_at_top(config) {
            if accepts_some {
                PortState::OpenToSources
            } else {
                PortState::Closed
            }
        } else {
            PortState::Partial
        }
    }
}

/// A service's state in one family, as the owner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PortState {
    Open,
    Closed,
    /// Closed to all but the sources of `from` lines.
    OpenToSources,
    /// Some of its ports are closed, or its rules are not reached first.
    Partial,
    Unknown,
}

impl PortState {
    pub fn as_str(self) -> &'static str {
        match self {
            PortState::Open => "open",
            PortState::Closed => "closed",
            PortState::OpenToSources => "open to sources",
            PortState::Partial => "partly closed",
            PortState::Unknown => "unknown",
        }
    }
}

/// One change of the plan. `checked` is false when the firewall could not be
/// read, so the change is to be made only if its check says it is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub change: Change,
    pub checked: bool,
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
        })
    })
}

/// The rules that make `want` true for one service in `family`, ACCEPTs first.
fn rules_for(want: &Want, drops: &[Rule], family: Family) -> Vec<Rule> {
    match want {
        Want::Open => Vec::new(),
        Want::Closed => drops.to_vec(),
        Want::OpenTo(sources) => {
            let ours = sources.iter().filter(|net| family_of(net) == family);
            let accepts = ours.flat_map(|&net| drops.iter().map(move |drop| drop.accepting(net)));
            accepts.chain(drops.iter().cloned()).collect()
        }
    }
}

fn family_of(net: &IpNet) -> Family {
    match net {
        IpNet::V4(_) => Family::Ipv4,
        IpNet::V6(_) => Family::Ipv6,
    }
}

/// The rule of `drops`' service that is listed as `spec`: one of its DROPs,
/// or an ACCEPT of any source; None when the config cannot produce it.
fn as_rule(spec: &[String], drops: &[Rule]) -> Option<Rule> {
    let source = match spec {
        [flag, net, ..] if flag == "-s" => Some(net.parse::<IpNet>().ok()?),
        _ => None,
    };
    drops
        .iter()
        .map(|drop| match source {
            Some(net) => drop.accepting(net),
            None => drop.clone(),
        })
        .find(|rule| rule.listed_spec() == spec)
}
/// The changes that make the firewall hold what `wants` asks, in the order
/// to make them. Services `wants` does not name keep their state; along the
/// way the jump goes back to the top of INPUT, and duplicates and rules the
/// config no longer produces are removed.
pub fn plan(
    config: &Config,
    wants: &BTreeMap<ServiceName, Want>,
    holdings: &Holdings,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for (&family, held) in &holdings.families {
        let changes = match held {
            Some(held) => plan_family(config, wants, family, held),
            None => plan_blind(config, wants, family),
        };
        let checked = held.is_some();
        steps.extend(changes.into_iter().map(|change| Step { change, checked }));
    }
    steps
}

/// The chain and a jump to it at the top of INPUT, where they are missing.
fn chain_and_jump(config: &Config, family: Family, held: Option<&FamilyHoldings>) -> Vec<Change> {
    let chain = config.firewall.chain.clone();
    let mut changes = Vec::new();
    if chain.is_input() {
        return changes;
    }
    if !held.is_some_and(|h| h.chain_exists) {
        changes.push(Change::NewChain {
            family,
            chain: chain.clone(),
        });
    }
    if !held.is_some_and(|h| h.jump_at_top(config)) {
        // Out of place or doubled: remove every jump, then put one first.
        for _ in held.map_or(&[][..], |h| &h.jumps[..]) {
            changes.push(Change::DeleteJump {
                family,
                chain: chain.clone(),
            });
        }
        changes.push(Change::InsertJump { family, chain });
    }
    changes
}

fn plan_family(
    config: &Config,
    wants: &BTreeMap<ServiceName, Want>,
    family: Family,
    held: &FamilyHoldings,
) -> Vec<Change> {
    let chain = &config.firewall.chain;
    let mut rule_changes = Vec::new();
    let mut enforces_any = false;
    for service in config.services.keys() {
        let drops: Vec<Rule> = rules_of(config, family)
            .filter(|r| r.service == *service)
            .collect();
        let tag = format!("portlocker:{service}");
        let tagged: Vec<&Vec<String>> = held
            .tagged
            .iter()
            .filter(|spec| tag_of(spec) == Some(&tag))
            .collect();
        let Some(want) = wants.get(service) else {
            // Not named: keep its state, minus duplicates and what the config no longer produces.
            let mut seen = Vec::new();
            for spec in tagged {
                if seen.contains(&spec) || as_rule(spec, &drops).is_none() {
                    rule_changes.push(removal(spec, &drops, family, chain));
                } else {
                    seen.push(spec);
                }
            }
            continue;
        };
        let wanted = rules_for(want, &drops, family);
        enforces_any |= !wanted.is_empty();
        for rule in &wanted {
            let copies = held.count(rule);
            if copies == 0 {
                rule_changes.push(Change::Append(rule.clone()));
            }
            for _ in 1..copies {
                rule_changes.push(Change::Delete(rule.clone()));
            }
        }
        let wanted_specs: Vec<Vec<String>> = wanted.iter().map(Rule::listed_spec).collect();
        for spec in tagged
            .into_iter()
            .filter(|spec| !wanted_specs.contains(spec))
        {
            rule_changes.push(removal(spec, &drops, family, chain));
        }
    }
    // Tagged for a service the config no longer has.
    for spec in &held.tagged {
        let configured = config
            .services
            .keys()
            .any(|service| tag_of(spec) == Some(&format!("portlocker:{service}")));
        if !configured {
            rule_changes.push(Change::DeleteListed {
                family,
                chain: chain.clone(),
                spec: spec.clone(),
            });
        }
    }

    let mut changes = Vec::new();
    if held.chain_exists || enforces_any {
        changes.extend(chain_and_jump(config, family, Some(held)));
    }
    changes.extend(rule_changes);
    changes
}

/// The change that removes one copy of a listed rule: named after the rule
/// when the config can produce it, as listed otherwise.
fn removal(spec: &[String], drops: &[Rule], family: Family, chain: &ChainName) -> Change {
    match as_rule(spec, drops) {
        Some(rule) => Change::Delete(rule),
        None => Change::DeleteListed {
            family,
            chain: chain.clone(),
            spec: spec.to_vec(),
        },
    }
}

/// Without a listing: every change the wants could need, each to be made
/// only if its check says so.
fn plan_blind(config: &Config, wants: &BTreeMap<ServiceName, Want>, family: Family) -> Vec<Change> {
    let mut rule_changes = Vec::new();
    for (service, want) in wants {
        let drops: Vec<Rule> = rules_of(config, family)
            .filter(|r| r.service == *service)
            .collect();
        let wanted = rules_for(want, &drops, family);
        if wanted.is_empty() {
            rule_changes.extend(drops.into_iter().map(Change::Delete));
        } else {
            rule_changes.extend(wanted.into_iter().map(Change::Append));
        }
    }
    let mut changes = Vec::new();
    if rule_changes
        .iter()
        .any(|change| matches!(change, Change::Append(_)))
    {
        changes.extend(chain_and_jump(config, family, None));
    }
    changes.extend(rule_changes);
    changes
}

/// The changes that remove everything portlocker made: its tagged rules,
/// then the jump and the chain — unless the chain holds rules of the owner's,
/// which stay, and so do the chain and its jump. Returns those rules too.
pub fn reset(config: &Config, holdings: &Holdings) -> (Vec<Step>, Vec<(Family, Vec<String>)>) {
    let chain = &config.firewall.chain;
    let mut steps = Vec::new();
    let mut kept = Vec::new();
    for (&family, held) in &holdings.families {
        let Some(held) = held else { continue };
        let mut push = |change| {
            steps.push(Step {
                change,
                checked: true,
            })
        };
        for spec in &held.tagged {
            push(Change::DeleteListed {
                family,
                chain: chain.clone(),
                spec: spec.clone(),
            });
        }
        if chain.is_input() || !held.chain_exists {
            continue;
        }
        if !held.foreign.is_empty() {
            kept.push((family, held.foreign.clone()));
            continue;
        }
        for _ in &held.jumps {
            push(Change::DeleteJump {
                family,
                chain: chain.clone(),
            });
        }
        push(Change::DeleteChain {
            family,
            chain: chain.clone(),
        });
    }
    (steps, kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "source = \"-\"\n{extra}\n[services]\nssh = 22\nweb = [80, \"443/tcp\"]\nvpn = \"1194/udp\"\n"
        );
        Config::parse(&text).unwrap()
    }

    fn control(config: &Config, text: &str) -> BTreeMap<ServiceName, Want> {
        crate::intent::wants_of(config, text)
    }

    fn rule(config: &Config, family: Family, service: &str, port: &str) -> Rule {
        rules_of(config, family)
            .find(|r| r.service.as_str() == service && r.ports.to_string() == port)
            .unwrap()
    }

    /// Holdings where the chain exists, the jump is first, and `present`
    /// (`service port family`) lists the rules held.
    fn holdings(config: &Config, present: &[&str]) -> Holdings {
        let mut holdings = Holdings::unknown(config);
        for (&family, held) in holdings.families.iter_mut() {
            let tagged = rules_of(config, family)
                .filter(|r| {
                    present.contains(&format!("{} {} {family}", r.service, r.ports).as_str())
                })
                .map(|r| r.listed_spec())
                .collect();
            *held = Some(FamilyHoldings {
                chain_exists: true,
                jumps: vec![1],
                tagged,
                ..FamilyHoldings::default()
            });
        }
        holdings
    }

    fn held(holdings: &mut Holdings, family: Family) -> &mut FamilyHoldings {
        holdings
            .families
            .get_mut(&family)
            .unwrap()
            .as_mut()
            .unwrap()
    }

    fn shown(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|step| {
                let mark = if step.checked { "" } else { "? " };
                format!("{mark}{}", step.change)
            })
            .collect()
    }

    #[test]
    fn close_on_a_bare_firewall_creates_chain_jump_and_rules_per_family() {
        let config = config("");
        let mut bare = holdings(&config, &[]);
        for family in config.families() {
            *held(&mut bare, family) = FamilyHoldings::default();
        }
        let steps = plan(&config, &control(&config, "close web\n"), &bare);
        assert_eq!(
            shown(&steps),
            [
                "IPv4: create chain PORTLOCKER",
                "IPv4: jump from INPUT to PORTLOCKER",
                "IPv4: close web 80/tcp",
                "IPv4: close web 443/tcp",
                "IPv6: create chain PORTLOCKER",
                "IPv6: jump from INPUT to PORTLOCKER",
                "IPv6: close web 80/tcp",
                "IPv6: close web 443/tcp",
            ]
        );
    }

    #[test]
    fn nothing_to_do_when_the_firewall_already_matches() {
        let config = config("");
        let held = holdings(&config, &["ssh 22/tcp IPv4", "ssh 22/tcp IPv6"]);
        let steps = plan(
            &config,
            &control(&config, "close ssh\nopen web\nopen vpn\n"),
            &held,
        );
        assert_eq!(shown(&steps), Vec::<String>::new());
    }

    #[test]
    fn an_empty_file_on_a_bare_firewall_plans_nothing() {
        let config = config("");
        let mut bare = holdings(&config, &[]);
        for family in config.families() {
            *held(&mut bare, family) = FamilyHoldings::default();
        }
        assert!(plan(&config, &control(&config, "# nothing\n"), &bare).is_empty());
    }

    #[test]
    fn open_removes_every_copy_and_leaves_unnamed_services() {
        let config = config("[firewall]\nipv6 = false");
        let mut held_now = holdings(&config, &["web 443/tcp IPv4", "vpn 1194/udp IPv4"]);
        let copy = rule(&config, Family::Ipv4, "web", "443/tcp").listed_spec();
        held(&mut held_now, Family::Ipv4).tagged.push(copy);
        let steps = plan(&config, &control(&config, "open web\n"), &held_now);
        assert_eq!(
            shown(&steps),
            ["IPv4: open web 443/tcp", "IPv4: open web 443/tcp"]
        );
    }

    #[test]
    fn duplicates_are_removed_down_to_one_even_for_unnamed_services() {
        let config = config("[firewall]\nipv6 = false");
        let mut held_now = holdings(&config, &["ssh 22/tcp IPv4", "vpn 1194/udp IPv4"]);
        for service in [("ssh", "22/tcp"), ("vpn", "1194/udp"), ("vpn", "1194/udp")] {
            let copy = rule(&config, Family::Ipv4, service.0, service.1).listed_spec();
            held(&mut held_now, Family::Ipv4).tagged.push(copy);
        }
        let steps = plan(&config, &control(&config, "close ssh\n"), &held_now);
        assert_eq!(
            shown(&steps),
            [
                "IPv4: open ssh 22/tcp",
                "IPv4: open vpn 1194/udp",
                "IPv4: open vpn 1194/udp"
            ]
        );
    }

    #[test]
    fn rules_the_config_no_longer_produces_are_removed() {
        let config = config("[firewall]\nipv6 = false");
        let mut held_now = holdings(&config, &["ssh 22/tcp IPv4"]);
        let stale: Vec<String> = "-p tcp -m tcp --dport 2222 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment portlocker:ssh -j DROP"
            .split(' ')
            .map(String::from)
            .collect();
        held(&mut held_now, Family::Ipv4).tagged.push(stale);
        let steps = plan(&config, &control(&config, ""), &held_now);
        assert_eq!(shown(&steps), ["IPv4: remove rule portlocker:ssh"]);
    }

    #[test]
    fn a_jump_that_is_not_first_is_moved_back_to_the_top() {
        let config = config("[firewall]\nipv6 = false");
        let mut held_now = holdings(&config, &["ssh 22/tcp IPv4"]);
        held(&mut held_now, Family::Ipv4).jumps = vec![2, 5];
        let steps = plan(&config, &control(&config, ""), &held_now);
        assert_eq!(
            shown(&steps),
            [
                "IPv4: remove jump from INPUT to PORTLOCKER",
                "IPv4: remove jump from INPUT to PORTLOCKER",
                "IPv4: jump from INPUT to PORTLOCKER"
            ]
        );
        let mut after = held_now.clone();
        for step in &steps {
            after.record(&step.change);
        }
        assert_eq!(held(&mut after, Family::Ipv4).jumps, [1]);
        held(&mut held_now, Family::Ipv4).jumps = vec![];
        let steps = plan(&config, &control(&config, ""), &held_now);
        assert_eq!(shown(&steps), ["IPv4: jump from INPUT to PORTLOCKER"]);
    }

    #[test]
    fn input_chain_needs_no_chain_or_jump() {
        let config = config("[firewall]\nipv6 = false\nchain = \"INPUT\"");
        let steps = plan(
            &config,
            &control(&config, "close ssh\n"),
            &Holdings::unknown(&config),
        );
        assert_eq!(shown(&steps), ["? IPv4: close ssh 22/tcp"]);
        let mut bare = holdings(&config, &[]);
        held(&mut bare, Family::Ipv4).jumps.clear();
        let steps = plan(&config, &control(&config, "close ssh\n"), &bare);
        assert_eq!(shown(&steps), ["IPv4: close ssh 22/tcp"]);
    }

    #[test]
    fn unknown_holdings_give_unchecked_steps_for_every_named_rule() {
        let config = config("[firewall]\nipv6 = false");
        let steps = plan(
            &config,
            &control(&config, "close ssh\nopen vpn\n"),
            &Holdings::unknown(&config),
        );
        assert_eq!(
            shown(&steps),
            [
                "? IPv4: create chain PORTLOCKER",
                "? IPv4: jump from INPUT to PORTLOCKER",
                "? IPv4: close ssh 22/tcp",
                "? IPv4: open vpn 1194/udp",
            ]
        );
    }

    #[test]
    fn service_state_follows_the_holdings_and_recorded_changes() {
        let config = config("[firewall]\nipv6 = false");
        let web = ServiceName::new("web").unwrap();
        let mut now = holdings(&config, &["web 80/tcp IPv4"]);
        assert_eq!(now.state(&config, &web, Family::Ipv4), PortState::Partial);
        for step in plan(&config, &control(&config, "close web\n"), &now) {
            now.record(&step.change);
        }
        assert_eq!(now.state(&config, &web, Family::Ipv4), PortState::Closed);
        held(&mut now, Family::Ipv4).jumps = vec![2];
        assert_eq!(now.state(&config, &web, Family::Ipv4), PortState::Partial);
        held(&mut now, Family::Ipv4).chain_exists = false;
        assert_eq!(now.state(&config, &web, Family::Ipv4), PortState::Open);
        assert_eq!(now.state(&config, &web, Family::Ipv6), PortState::Unknown);
        let unknown = Holdings::unknown(&config);
        assert_eq!(
            unknown.state(&config, &web, Family::Ipv4),
            PortState::Unknown
        );
    }

    #[test]
    fn sources_are_accepted_before_the_drop_and_only_in_their_family() {
        let config = config("");
        let held = holdings(&config, &[]);
        let text = "open ssh from 203.0.113.7\nopen ssh from 2001:db8::/48\n";
        let steps = plan(&config, &control(&config, text), &held);
        assert_eq!(
            shown(&steps),
            [
                "IPv4: open ssh 22/tcp to 203.0.113.7/32",
                "IPv4: close ssh 22/tcp",
                "IPv6: open ssh 22/tcp to 2001:db8::/48",
                "IPv6: close ssh 22/tcp",
            ]
        );
        let mut after = held.clone();
        for step in &steps {
            after.record(&step.change);
        }
        let ssh = ServiceName::new("ssh").unwrap();
        assert_eq!(
            after.state(&config, &ssh, Family::Ipv4),
            PortState::OpenToSources
        );
        assert!(plan(&config, &control(&config, text), &after).is_empty());

        // A source taken out of the file loses its ACCEPT; the others stay.
        let fewer = "open ssh from 2001:db8::/48\n";
        let steps = plan(&config, &control(&config, fewer), &after);
        assert_eq!(
            shown(&steps),
            ["IPv4: stop opening ssh 22/tcp to 203.0.113.7/32"]
        );
        // A plain close takes every ACCEPT away.
        let steps = plan(&config, &control(&config, "close ssh\n"), &after);
        assert_eq!(
            shown(&steps),
            [
                "IPv4: stop opening ssh 22/tcp to 203.0.113.7/32",
                "IPv6: stop opening ssh 22/tcp to 2001:db8::/48"
            ]
        );
        // Not named: the ACCEPTs are kept as they are.
        assert!(plan(&config, &control(&config, ""), &after).is_empty());
    }

    #[test]
    fn an_accept_with_a_source_the_config_cannot_produce_is_removed() {
        let config = config("[firewall]\nipv6 = false");
        let mut now = holdings(&config, &["ssh 22/tcp IPv4"]);
        let odd: Vec<String> = "-s 203.0.113.7/32 -p tcp -m tcp --dport 2200 -m comment --comment portlocker:ssh -j ACCEPT"
            .split(' ')
            .map(String::from)
            .collect();
        held(&mut now, Family::Ipv4).tagged.push(odd);
        let steps = plan(&config, &control(&config, ""), &now);
        assert_eq!(shown(&steps), ["IPv4: remove rule portlocker:ssh"]);
    }

    #[test]
    fn reset_removes_everything_portlocker_made_and_keeps_the_owners_rules() {
        let config = config("");
        let mut now = holdings(&config, &["ssh 22/tcp IPv4", "ssh 22/tcp IPv6"]);
        held(&mut now, Family::Ipv6).foreign = vec!["-A PORTLOCKER -s ::1/128 -j ACCEPT".into()];
        let (steps, kept) = reset(&config, &now);
        assert_eq!(
            shown(&steps),
            [
                "IPv4: remove rule portlocker:ssh",
                "IPv4: remove jump from INPUT to PORTLOCKER",
                "IPv4: delete chain PORTLOCKER",
                "IPv6: remove rule portlocker:ssh",
            ]
        );
        assert_eq!(
            kept,
            [(
                Family::Ipv6,
                vec!["-A PORTLOCKER -s ::1/128 -j ACCEPT".to_owned()]
            )]
        );
        for step in &steps {
            now.record(&step.change);
        }
        let (again, _) = reset(&config, &now);
        assert_eq!(shown(&again), Vec::<String>::new());
    }
}
