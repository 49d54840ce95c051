//! The changes that make the firewall hold what the owner wants. Pure:
//! never touches the network or the firewall.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ipnet::IpNet;

use crate::config::{ChainName, Config, Family, PortSpec, ServiceName};
use chrono::DateTime;

use crate::firewall::model::{
    ChainRules, Change, FamilyHoldings, Holdings, JumpTag, KernelTime, Listed, Rule, Unnameable,
    rules_of, tag_of,
};
use crate::intake::intent::{self, Deadline, Want};

/// One change of the plan. `checked` is false when the firewall could not be
/// read, so the change is to be made only if its check says it is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub change: Change,
    pub checked: bool,
}

/// Per service, every source that may have a rule in the firewall: what a
/// plan made without a listing must look for to remove.
pub type SourcesSeen = BTreeMap<ServiceName, BTreeSet<IpNet>>;

/// The rules that make `want` true for `service` in `family`, source
/// rules first. An open that ends keeps its DROPs, which the kernel starts
/// enforcing at the deadline; a source that ends is let through until then.
/// What `unwritable` says cannot be written is made a close instead, or for
/// a close, left out. No source is let past a DROP whose port a closed
/// service shares (`shut`): closing either closes the port for everyone.
fn rules_for(
    want: &Want,
    drops: &[Rule],
    family: Family,
    unwritable: &Unwritable,
    shut: &[PortSpec],
) -> Vec<Rule> {
    let Some(service) = drops.first().map(|drop| &drop.service) else {
        return Vec::new();
    };
    let closes_only = unwritable.closes_only.contains(&family);
    let rules: Vec<Rule> = match want {
        Want::Open(deadline) => match in_kernel(*deadline) {
            Ends::Never => Vec::new(),
            Ends::At(_)
                if closes_only || unwritable.deadlines.contains(&(family, service.clone())) =>
            {
                drops.to_vec()
            }
            Ends::At(deadline) => drops
                .iter()
                .map(|drop| drop.until(Some(deadline)))
                .collect(),
            Ends::Passed => drops.to_vec(),
        },
        Want::Closed => drops.to_vec(),
        Want::OpenTo(sources) => {
            let ours = sources.iter().filter(|(net, _)| {
                family_of(net) == family
                    && !closes_only
                    && !unwritable
                        .sources
                        .contains(&(family, service.clone(), **net))
            });
            let letting = ours.flat_map(|(&net, &deadline)| {
                let until = match in_kernel(deadline) {
                    Ends::Never => None,
                    Ends::At(deadline) => Some(deadline),
                    Ends::Passed => return Vec::new(),
                };
                drops
                    .iter()
                    .filter(|drop| !shut.iter().any(|port| port.overlaps(&drop.ports)))
                    .map(|drop| drop.letting(net).until(until))
                    .collect()
            });
            letting.chain(drops.iter().cloned()).collect()
        }
    };
    rules
        .into_iter()
        .filter(|rule| !unwritable.closes.contains(rule))
        .collect()
}

/// What this run's firewall refused to take, learnt from the refusals of
/// its commits, so that the next commit goes without it: a refused open is
/// made a close (its source not let in, an open that ends closed now), and
/// a close that cannot be written is left out, so every other close goes
/// in. A refusal never leaves a close undone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unwritable {
    /// The kernel has no time match (xt_time): deadlines are left to the
    /// runs after them, as on kernels of before.
    pub no_time_match: bool,
    /// Sources not let in, per family and service.
    sources: BTreeSet<(Family, ServiceName, IpNet)>,
    /// Services whose open that ends is closed now, per family.
    deadlines: BTreeSet<(Family, ServiceName)>,
    /// Families where every open that needs a rule is closed: refused too
    /// often to learn one rule at a time.
    closes_only: BTreeSet<Family>,
    /// Closes that cannot be written at all.
    closes: Vec<Rule>,
    /// What each of those means for the owner, in order.
    pub said: Vec<String>,
}

impl Unwritable {
    /// Takes in a rule a commit was refused at; false when it was known
    /// already, so a plan without it changes nothing.
    pub fn refuse(&mut self, rule: &Rule) -> bool {
        let (family, service) = (rule.family, rule.service.clone());
        let said = match (rule.source, rule.deadline) {
            (Some(net), _) => {
                if !self.sources.insert((family, service.clone(), net)) {
                    return false;
                }
                format!("{family}: {service} stays closed to {net}: the firewall refused its rule")
            }
            (None, Some(_)) => {
                if !self.deadlines.insert((family, service.clone())) {
                    return false;
                }
                format!(
                    "{family}: {service} is closed now, not at the end of its open: the firewall \
                     refused the rule that ends it"
                )
            }
            (None, None) => {
                if self.closes.contains(rule) {
                    return false;
                }
                self.closes.push(rule.clone());
                format!(
                    "{family}: {service} {} could not be closed: the firewall refused its rule",
                    rule.ports
                )
            }
        };
        self.said.push(said);
        true
    }

    /// Closes every open of `family` that needs a rule, because the
    /// firewall refused `what`; false when it did already.
    pub fn close_all(&mut self, family: Family, what: &str) -> bool {
        if !self.closes_only.insert(family) {
            return false;
        }
        let said = format!(
            "{family}: every open from a source or with an end is closed: the firewall refused {what}"
        );
        self.said.push(said);
        true
    }
}

/// When an open ends, as the kernel can enforce it.
enum Ends {
    /// No time match: no deadline, or one past what xt_time can name (the
    /// first run after it closes the open).
    Never,
    At(KernelTime),
    /// At or before the epoch: over for any clock that can run this.
    Passed,
}

/// A deadline as the kernel can enforce it, never later than asked: a
/// fraction of a second (or a leap second's) goes.
fn in_kernel(deadline: Deadline) -> Ends {
    let Some(deadline) = deadline else {
        return Ends::Never;
    };
    let whole = DateTime::from_timestamp(deadline.timestamp(), 0).unwrap_or(deadline);
    match KernelTime::new(whole) {
        Ok(deadline) => Ends::At(deadline),
        Err(Unnameable::Beyond) => Ends::Never,
        Err(Unnameable::Past | Unnameable::Fraction) => Ends::Passed,
    }
}

fn family_of(net: &IpNet) -> Family {
    match net {
        IpNet::V4(_) => Family::Ipv4,
        IpNet::V6(_) => Family::Ipv6,
    }
}

/// The rule of `drops`' service that is listed as `spec`: one of its DROPs,
/// or a source rule for any source, with or without a deadline; None when
/// the config cannot produce it.
fn as_rule(spec: &[String], drops: &[Rule]) -> Option<Rule> {
    let source = match spec {
        [flag, net, ..] if flag == "-s" => Some(net.parse::<IpNet>().ok()?),
        _ => None,
    };
    let deadline = spec
        .windows(2)
        .find(|pair| pair[0] == "--datestart" || pair[0] == "--datestop")
        .and_then(|pair| KernelTime::from_listed(&pair[1]));
    drops
        .iter()
        .map(|drop| match source {
            Some(net) => drop.letting(net).until(deadline),
            None => drop.until(deadline),
        })
        .find(|rule| rule.listed_spec() == spec)
}

/// The changes that make the firewall hold what `wants` asks, in the order
/// to make them. Services `wants` does not name keep their state; along the
/// way the jump goes back to the top of INPUT, and duplicates and rules the
/// config no longer produces are removed. `seen` is only used for a family
/// that could not be read.
pub fn plan(
    config: &Config,
    wants: &BTreeMap<ServiceName, Want>,
    holdings: &Holdings,
    seen: &SourcesSeen,
) -> Vec<Step> {
    plan_within(config, wants, holdings, seen, &Unwritable::default())
}

/// `plan`, for a firewall that refused what `unwritable` holds.
pub fn plan_within(
    config: &Config,
    wants: &BTreeMap<ServiceName, Want>,
    holdings: &Holdings,
    seen: &SourcesSeen,
    unwritable: &Unwritable,
) -> Vec<Step> {
    let without_deadlines;
    let wants = match unwritable.no_time_match {
        true => {
            without_deadlines = intent::without_deadlines(wants);
            &without_deadlines
        }
        false => wants,
    };
    let mut steps = Vec::new();
    for (&family, held) in &holdings.families {
        let changes = match held {
            Some(held) => plan_family(config, wants, family, held, unwritable),
            None => plan_blind(config, wants, family, seen, unwritable),
        };
        let checked = held.is_some();
        steps.extend(changes.into_iter().map(|change| Step { change, checked }));
    }
    steps
}

/// The ports of the services `wants` closes.
fn shut_ports(config: &Config, wants: &BTreeMap<ServiceName, Want>) -> Vec<PortSpec> {
    (wants.iter())
        .filter(|(_, want)| matches!(want, Want::Closed))
        .flat_map(|(service, _)| config.services[service].iter().copied())
        .collect()
}

/// The chain, and one jump to it first in INPUT, where they are missing.
/// A jump that must move is inserted before the old ones are removed, so
/// INPUT never lacks one; it carries the tag no old jump carries, so that
/// deleting an old one by its spec cannot hit the new one.
fn chain_and_jump(config: &Config, family: Family, held: Option<&FamilyHoldings>) -> Vec<Change> {
    let chain = config.firewall.chain.clone();
    let mut changes = Vec::new();
    if chain.is_input() {
        return changes;
    }
    if !held.is_some_and(|h| h.chain_exists(config)) {
        changes.push(Change::NewChain {
            family,
            chain: chain.clone(),
        });
    }
    let mut jumps = held.map(|h| h.jumps(config)).unwrap_or_default();
    // iptables-nft deletes by spec only what it meets before a rule it
    // cannot print: a jump below one stays, and its second pass through
    // the chain decides nothing the first did not.
    let stuck = held.and_then(|h| {
        h.input
            .rules
            .iter()
            .position(|r| r.nft_only_said().is_some())
    });
    jumps.retain(|jump| stuck.is_none_or(|stuck| jump.index < stuck));
    let first_is_jump = jumps.first().is_some_and(|jump| jump.index == 0);
    let top_is_unique = first_is_jump && jumps[1..].iter().all(|jump| jump.spec != jumps[0].spec);
    let delete = |spec: &[String]| Change::DeleteJump {
        family,
        chain: chain.clone(),
        spec: spec.to_vec(),
    };
    if top_is_unique {
        // Only copies lower down: removing them by spec never hits the top one.
        changes.extend(jumps[1..].iter().map(|jump| delete(jump.spec)));
        return changes;
    }
    let uses = |tag: JumpTag| jumps.iter().any(|jump| jump.tag == Some(tag));
    let (tag, mut old): (JumpTag, Vec<&[String]>) = match (uses(JumpTag::A), uses(JumpTag::B)) {
        (false, _) => (JumpTag::A, jumps.iter().map(|jump| jump.spec).collect()),
        (true, false) => (JumpTag::B, jumps.iter().map(|jump| jump.spec).collect()),
        (true, true) => {
            // Both tags in use: first drop the B jumps (an A jump remains), then use B.
            let b = JumpTag::B.spec(&chain);
            for _ in jumps.iter().filter(|jump| jump.tag == Some(JumpTag::B)) {
                changes.push(delete(&b));
            }
            let rest = jumps.iter().filter(|jump| jump.tag != Some(JumpTag::B));
            (JumpTag::B, rest.map(|jump| jump.spec).collect())
        }
    };
    changes.push(Change::InsertJump {
        family,
        chain: chain.clone(),
        tag,
    });
    old.retain(|spec| *spec != tag.spec(&chain).as_slice());
    changes.extend(old.into_iter().map(delete));
    changes
}

/// The rules of `family` the config makes for `service`.
fn drops_of(config: &Config, family: Family, service: &ServiceName) -> Vec<Rule> {
    rules_of(config, family)
        .filter(|r| r.service == *service)
        .collect()
}

/// The rules each configured service of `wants` needs in `family`.
fn wanted_rules<'w>(
    config: &Config,
    wants: &'w BTreeMap<ServiceName, Want>,
    family: Family,
    unwritable: &Unwritable,
) -> BTreeMap<&'w ServiceName, Vec<Rule>> {
    let shut = shut_ports(config, wants);
    (wants.iter())
        .filter(|(service, _)| config.services.contains_key(*service))
        .map(|(service, want)| {
            let drops = drops_of(config, family, service);
            (service, rules_for(want, &drops, family, unwritable, &shut))
        })
        .collect()
}

/// For a service no line names: its rules `mine` stay as they are, minus
/// duplicates and what the config no longer produces.
fn kept_once(
    mine: &[&Vec<String>],
    drops: &[Rule],
    family: Family,
    chain: &ChainName,
) -> Vec<Change> {
    let mut kept = HashSet::new();
    let mut changes = Vec::new();
    for &spec in mine {
        if kept.contains(spec) || as_rule(spec, drops).is_none() {
            changes.push(removal(spec, drops, family, chain));
        } else {
            kept.insert(spec);
        }
    }
    changes
}

/// Every source first, then every DROP, then what goes: no port is ever
/// without its DROP, and none of its sources below another's.
fn seat_sources_first(changes: &mut [Change]) {
    changes.sort_by_key(|change| match change {
        Change::Append(rule) if rule.source.is_some() => 0,
        Change::Append(_) => 1,
        _ => 2,
    });
}

fn plan_family(
    config: &Config,
    wants: &BTreeMap<ServiceName, Want>,
    family: Family,
    held: &FamilyHoldings,
    unwritable: &Unwritable,
) -> Vec<Change> {
    let chain = &config.firewall.chain;
    let tagged: Vec<&Listed> = held.tagged(config).collect();
    // How many copies of each rule the chain holds: counted once, so a file
    // of thousands of sources plans in time linear in them.
    let mut copies: HashMap<&[String], usize> = HashMap::new();
    for rule in &tagged {
        *copies.entry(&rule.spec).or_default() += 1;
    }
    let wanted_by = wanted_rules(config, wants, family, unwritable);
    let enforces_any = wanted_by.values().any(|rules| !rules.is_empty());
    let reseat = chain.is_input()
        && wanted_by
            .values()
            .flatten()
            .any(|rule| rule.source.is_some())
        && !seated(held.ours(config), wanted_by.values().flatten());
    let mut rule_changes = Vec::new();
    for service in config.services.keys() {
        let drops = drops_of(config, family, service);
        let tag = format!("portlocker:{service}");
        let mine: Vec<&Vec<String>> = tagged
            .iter()
            .map(|rule| &rule.spec)
            .filter(|spec| tag_of(spec) == Some(&tag))
            .collect();
        let Some(wanted) = wanted_by.get(service) else {
            rule_changes.extend(kept_once(&mine, &drops, family, chain));
            continue;
        };
        let mut wanted_specs = HashSet::new();
        for rule in wanted {
            let spec = rule.listed_spec();
            let held = copies.get(spec.as_slice()).copied().unwrap_or(0);
            if held == 0 || reseat {
                rule_changes.push(Change::Append(rule.clone()));
            }
            // Deleted by its words, a rule goes from where it is first: the
            // copy a reseat left above goes, the one it appended stays.
            for _ in 1..held + usize::from(reseat && held > 0) {
                rule_changes.push(Change::Delete(rule.clone()));
            }
            wanted_specs.insert(spec);
        }
        for spec in mine
            .into_iter()
            .filter(|spec| !wanted_specs.contains(*spec))
        {
            rule_changes.push(removal(spec, &drops, family, chain));
        }
    }
    if reseat {
        seat_sources_first(&mut rule_changes);
    }
    rule_changes.extend(unconfigured(config, family, &tagged));
    let mut changes = Vec::new();
    if held.chain_exists(config) || enforces_any {
        changes.extend(chain_and_jump(config, family, Some(held)));
    }
    changes.extend(rule_changes);
    changes
}

/// With `chain = "INPUT"`, whether portlocker's rules there are seated:
/// every one `wanted` held, every source rule above every DROP (services may
/// share a port), and no rule of others between the first source and the
/// first DROP, so a ban above them (fail2ban's jump, first in INPUT)
/// applies to a source too. Each is appended to INPUT, so when they are
/// not, all are made again at the end of INPUT, sources first, before the
/// old ones go (as a version that put sources first in INPUT left them).
fn seated<'r>(input: Option<&ChainRules>, mut wanted: impl Iterator<Item = &'r Rule>) -> bool {
    let rules = input.map_or(&[][..], |input| &input.rules[..]);
    let is_ours = |rule: &Listed| rule.tag().is_some();
    let is_source = |rule: &Listed| rule.spec.iter().any(|word| word == "-s");
    let Some(first_drop) = rules.iter().position(|r| is_ours(r) && !is_source(r)) else {
        return false;
    };
    let all_held = wanted.all(|rule| {
        let spec = rule.listed_spec();
        rules.iter().any(|listed| listed.spec == spec)
    });
    let first_source = rules.iter().position(|r| is_ours(r) && is_source(r));
    let untouched = first_source
        .is_some_and(|first| first < first_drop && rules[first..first_drop].iter().all(is_ours));
    let below = rules[first_drop..]
        .iter()
        .any(|r| is_ours(r) && is_source(r));
    all_held && untouched && !below
}

/// The removals of `tagged` rules of services the config no longer has.
/// A jump in INPUT, to a chain a config of before named, stays: its chain
/// may hold the only closes of what no line names now (the state that
/// knew lost). It goes with that chain, once a run knows what it held
/// (`leftovers.rs`).
fn unconfigured(config: &Config, family: Family, tagged: &[&Listed]) -> Vec<Change> {
    let configured = |rule: &Listed| {
        rule.service()
            .is_some_and(|s| config.services.contains_key(s))
    };
    tagged
        .iter()
        .filter(|rule| rule.tag().is_some() && !rule.is_our_jump() && !configured(rule))
        .map(|rule| Change::DeleteListed {
            family,
            chain: config.firewall.chain.clone(),
            spec: rule.spec.clone(),
        })
        .collect()
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
/// only if its check says so — source rules of sources seen before included.
fn plan_blind(
    config: &Config,
    wants: &BTreeMap<ServiceName, Want>,
    family: Family,
    seen: &SourcesSeen,
    unwritable: &Unwritable,
) -> Vec<Change> {
    let shut = shut_ports(config, wants);
    let mut rule_changes = Vec::new();
    for (service, want) in wants {
        let drops: Vec<Rule> = rules_of(config, family)
            .filter(|r| r.service == *service)
            .collect();
        let wanted = rules_for(want, &drops, family, unwritable, &shut);
        let stale_sources = seen.get(service).into_iter().flatten().filter(|net| {
            family_of(net) == family
                && !matches!(want, Want::OpenTo(keep) if keep.contains_key(net))
        });
        for &net in stale_sources {
            rule_changes.extend(drops.iter().map(|drop| Change::Delete(drop.letting(net))));
        }
        // A close that cannot be written is not a reason to remove one made before.
        let unwritten = drops.iter().any(|drop| unwritable.closes.contains(drop));
        if wanted.is_empty() && !unwritten {
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

/// With `chain = "INPUT"`: removes the jumps to a chain of portlocker's
/// that a config of before named, which `plan` leaves alone (that chain may
/// hold the only closes of what no line names). For a run whose state knew
/// that chain, so that every service it closed is asked of anew.
pub fn old_jumps(config: &Config, holdings: &Holdings) -> Vec<Step> {
    if !config.firewall.chain.is_input() {
        return Vec::new();
    }
    let mut steps = Vec::new();
    for (&family, held) in &holdings.families {
        let Some(held) = held else { continue };
        for rule in held.tagged(config) {
            if rule.is_our_jump() {
                steps.push(Step {
                    change: Change::DeleteListed {
                        family,
                        chain: config.firewall.chain.clone(),
                        spec: rule.spec.clone(),
                    },
                    checked: true,
                });
            }
        }
    }
    steps
}

/// The changes that remove everything portlocker made: its tagged rules,
/// then the jumps and the chain — unless the chain holds rules of the
/// owner's, which stay, and so do the chain and its jump. Returns those
/// rules too, as listed.
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
        for rule in held.tagged(config) {
            push(Change::DeleteListed {
                family,
                chain: chain.clone(),
                spec: rule.spec.clone(),
            });
        }
        if chain.is_input() || !held.chain_exists(config) {
            continue;
        }
        let foreign = held.foreign(config);
        if !foreign.is_empty() {
            let shown = foreign
                .iter()
                .map(|rule| rule.shown(chain.as_str()))
                .collect();
            kept.push((family, shown));
            continue;
        }
        for jump in held.jumps(config) {
            push(Change::DeleteJump {
                family,
                chain: chain.clone(),
                spec: jump.spec.to_vec(),
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

    /// The moment verdicts are read at in tests.
    fn test_now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .to_utc()
    }
    use crate::firewall::model::{ChainRules, PortState, split_listed};
    use crate::firewall::truth::held_state as service_state;

    fn config(extra: &str) -> Config {
        let text = format!(
            "source = \"-\"\n{extra}\n[services]\nssh = 22\nweb = [80, \"443/tcp\"]\nvpn = \"1194/udp\"\n"
        );
        Config::parse(&text).unwrap()
    }

    fn control(config: &Config, text: &str) -> BTreeMap<ServiceName, Want> {
        crate::intake::intent::wants_of(config, text)
    }

    fn rule(config: &Config, family: Family, service: &str, port: &str) -> Rule {
        rules_of(config, family)
            .find(|r| r.service.as_str() == service && r.ports.to_string() == port)
            .unwrap()
    }

    fn jump(config: &Config) -> Listed {
        Listed::new(JumpTag::A.spec(&config.firewall.chain))
    }

    /// Holdings where the chain exists, the jump is first, and `present`
    /// (`service port family`) lists the rules held.
    fn holdings(config: &Config, present: &[&str]) -> Holdings {
        let mut holdings = Holdings::unknown(config);
        for (&family, held) in holdings.families.iter_mut() {
            let rules = rules_of(config, family)
                .filter(|r| {
                    present.contains(&format!("{} {} {family}", r.service, r.ports).as_str())
                })
                .map(|r| Listed::new(r.listed_spec()))
                .collect();
            let mut bare = FamilyHoldings::bare();
            bare.input.rules.push(jump(config));
            bare.chain = Some(ChainRules {
                policy: None,
                rules,
            });
            *held = Some(bare);
        }
        holdings
    }

    fn bare(config: &Config) -> Holdings {
        let mut holdings = Holdings::unknown(config);
        for held in holdings.families.values_mut() {
            *held = Some(FamilyHoldings::bare());
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

    fn ours(holdings: &mut Holdings, family: Family) -> &mut Vec<Listed> {
        &mut held(holdings, family).chain.as_mut().unwrap().rules
    }

    fn listed(text: &str) -> Listed {
        Listed::new(split_listed(text))
    }

    fn plan_of(
        config: &Config,
        wants: &BTreeMap<ServiceName, Want>,
        holdings: &Holdings,
    ) -> Vec<Step> {
        plan(config, wants, holdings, &SourcesSeen::new())
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

    fn after(config: &Config, holdings: &Holdings, steps: &[Step]) -> Holdings {
        let mut after = holdings.clone();
        for step in steps {
            after.record(config, &step.change);
        }
        after
    }

    #[test]
    fn close_on_a_bare_firewall_creates_chain_jump_and_rules_per_family() {
        let config = config("");
        let steps = plan_of(&config, &control(&config, "close web\n"), &bare(&config));
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
        let done = after(&config, &bare(&config), &steps);
        assert!(plan_of(&config, &control(&config, "close web\n"), &done).is_empty());
    }

    /// Closing either closes a shared port: `open alt from NET` lets NET
    /// past no DROP of a port `close ssh` closes, not even its own.
    #[test]
    fn a_source_is_never_let_past_a_port_a_closed_service_shares() {
        let text =
            "source = \"-\"\n[firewall]\nipv6 = false\n[services]\nssh = 22\nalt = [22, 2222]\n";
        let config = Config::parse(text).unwrap();
        let wants = control(&config, "close ssh\nopen alt from 192.0.2.0/24\n");
        let steps = plan_of(&config, &wants, &bare(&config));
        let shown = shown(&steps).join("\n");
        assert!(shown.contains("2222/tcp to 192.0.2.0/24"), "{shown}");
        assert!(!shown.contains(" 22/tcp to"), "{shown}");
        let done = after(&config, &bare(&config), &steps);
        let ssh = ServiceName::new("ssh").unwrap();
        assert_eq!(
            service_state(
                &config,
                done.family(Family::Ipv4).unwrap(),
                Family::Ipv4,
                &ssh,
                test_now()
            ),
            PortState::Closed
        );
    }

    #[test]
    fn nothing_to_do_when_the_firewall_already_matches() {
        let config = config("");
        let held = holdings(&config, &["ssh 22/tcp IPv4", "ssh 22/tcp IPv6"]);
        let steps = plan_of(
            &config,
            &control(&config, "close ssh\nopen web\nopen vpn\n"),
            &held,
        );
        assert_eq!(shown(&steps), Vec::<String>::new());
    }

    #[test]
    fn an_empty_file_on_a_bare_firewall_plans_nothing() {
        let config = config("");
        assert!(plan_of(&config, &control(&config, "# nothing\n"), &bare(&config)).is_empty());
    }

    #[test]
    fn open_removes_every_copy_and_leaves_unnamed_services() {
        let config = config("[firewall]\nipv6 = false");
        let mut held_now = holdings(&config, &["web 443/tcp IPv4", "vpn 1194/udp IPv4"]);
        let copy = rule(&config, Family::Ipv4, "web", "443/tcp").listed_spec();
        ours(&mut held_now, Family::Ipv4).push(Listed::new(copy));
        let steps = plan_of(&config, &control(&config, "open web\n"), &held_now);
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
            ours(&mut held_now, Family::Ipv4).push(Listed::new(copy));
        }
        let steps = plan_of(&config, &control(&config, "close ssh\n"), &held_now);
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
        let stale = listed(
            "-p tcp -m tcp --dport 2222 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment portlocker:ssh -j DROP",
        );
        ours(&mut held_now, Family::Ipv4).push(stale);
        let steps = plan_of(&config, &control(&config, ""), &held_now);
        assert_eq!(shown(&steps), ["IPv4: remove rule portlocker:ssh"]);
    }

    #[test]
    fn a_jump_that_is_not_first_is_replaced_by_a_new_one_before_it_goes() {
        let config = config("[firewall]\nipv6 = false");
        let mut held_now = holdings(&config, &["ssh 22/tcp IPv4"]);
        let input = &mut held(&mut held_now, Family::Ipv4).input.rules;
        input.insert(0, listed("-p tcp -m tcp --dport 22 -j ACCEPT"));
        input.push(listed("-j PORTLOCKER"));
        let steps = plan_of(&config, &control(&config, ""), &held_now);
        // The new jump goes in first, with the tag no old jump has.
        let chain = &config.firewall.chain;
        let (family, chain_name) = (Family::Ipv4, chain.clone());
        let delete = |spec: Vec<String>| Change::DeleteJump {
            family,
            chain: chain_name.clone(),
            spec,
        };
        let insert = |tag| Change::InsertJump {
            family,
            chain: chain_name.clone(),
            tag,
        };
        let changes = |steps: &[Step]| steps.iter().map(|s| s.change.clone()).collect::<Vec<_>>();
        assert_eq!(
            changes(&steps),
            [
                insert(JumpTag::B),
                delete(JumpTag::A.spec(chain)),
                delete(split_listed("-j PORTLOCKER")),
            ]
        );
        let done = after(&config, &held_now, &steps);
        let jumps = held(&mut done.clone(), Family::Ipv4).jumps(&config).len();
        assert_eq!(jumps, 1);
        assert_eq!(
            done.family(Family::Ipv4).unwrap().jumps(&config)[0].index,
            0
        );
        assert!(plan_of(&config, &control(&config, ""), &done).is_empty());

        // Both tags in use below the top: the B jumps go first, then B is reused.
        let mut both = holdings(&config, &["ssh 22/tcp IPv4"]);
        let input = &mut held(&mut both, Family::Ipv4).input.rules;
        input.insert(0, listed("-j ACCEPT"));
        input.push(Listed::new(JumpTag::B.spec(&config.firewall.chain)));
        let steps = plan_of(&config, &control(&config, ""), &both);
        assert_eq!(
            changes(&steps),
            [
                delete(JumpTag::B.spec(chain)),
                insert(JumpTag::B),
                delete(JumpTag::A.spec(chain)),
            ]
        );
        let done = after(&config, &both, &steps);
        assert_eq!(done.family(Family::Ipv4).unwrap().jumps(&config).len(), 1);

        // No jump at all: one is inserted.
        let mut none = holdings(&config, &["ssh 22/tcp IPv4"]);
        held(&mut none, Family::Ipv4).input.rules.clear();
        let steps = plan_of(&config, &control(&config, ""), &none);
        assert_eq!(shown(&steps), ["IPv4: jump from INPUT to PORTLOCKER"]);
    }

    /// Replays steps, checking after each that INPUT still jumps to the
    /// chain whenever it did before: the jump is never absent.
    #[test]
    fn a_jump_below_a_rule_only_nft_can_print_stays_and_a_new_one_goes_on_top() {
        let config = config("[firewall]\nipv6 = false");
        let chain = &config.firewall.chain;
        let mut held_now = holdings(&config, &["ssh 22/tcp IPv4"]);
        let input = &mut held(&mut held_now, Family::Ipv4).input.rules;
        input.insert(0, Listed::nft_only("rule 1 of INPUT".into()));
        let steps = plan_of(&config, &control(&config, ""), &held_now);
        // iptables could not delete the old jump: nothing but the insert.
        let changes: Vec<Change> = steps.iter().map(|s| s.change.clone()).collect();
        let insert = |tag| Change::InsertJump {
            family: Family::Ipv4,
            chain: chain.clone(),
            tag,
        };
        assert_eq!(changes, [insert(JumpTag::A)]);
        let done = after(&config, &held_now, &steps);
        assert!(plan_of(&config, &control(&config, ""), &done).is_empty());

        // Something above the new jump: it moves, and of the jumps only
        // the one above the rule nft alone prints is deleted (by its spec,
        // the first match, which is that one).
        let mut moved = done.clone();
        let input = &mut held(&mut moved, Family::Ipv4).input.rules;
        input.insert(0, listed("-j ACCEPT"));
        input.push(Listed::new(JumpTag::B.spec(chain)));
        let steps = plan_of(&config, &control(&config, ""), &moved);
        let changes: Vec<Change> = steps.iter().map(|s| s.change.clone()).collect();
        let delete = Change::DeleteJump {
            family: Family::Ipv4,
            chain: chain.clone(),
            spec: JumpTag::A.spec(chain),
        };
        assert_eq!(changes, [insert(JumpTag::B), delete]);
    }

    #[test]
    fn the_jump_is_never_absent_while_it_moves() {
        let config = config("[firewall]\nipv6 = false");
        let a = Listed::new(JumpTag::A.spec(&config.firewall.chain));
        let b = Listed::new(JumpTag::B.spec(&config.firewall.chain));
        let legacy = listed("-j PORTLOCKER");
        let other = listed("-s 192.0.2.1/32 -j ACCEPT");
        let layouts: Vec<Vec<Listed>> = vec![
            vec![other.clone(), a.clone()],
            vec![other.clone(), b.clone()],
            vec![other.clone(), legacy.clone()],
            vec![a.clone(), a.clone()],
            vec![legacy.clone(), legacy.clone()],
            vec![other.clone(), a.clone(), b.clone(), legacy.clone()],
            vec![b.clone(), other.clone(), a.clone(), b.clone()],
            vec![a.clone(), other.clone(), legacy.clone()],
        ];
        for layout in layouts {
            let mut now = holdings(&config, &["ssh 22/tcp IPv4"]);
            held(&mut now, Family::Ipv4).input.rules = layout.clone();
            let steps = plan_of(&config, &control(&config, ""), &now);
            for step in &steps {
                now.record(&config, &step.change);
                let jumps = now.family(Family::Ipv4).unwrap().jumps(&config).len();
                assert!(jumps > 0, "{layout:?}: no jump after {}", step.change);
            }
            let jumps = now.family(Family::Ipv4).unwrap().jumps(&config);
            assert_eq!((jumps.len(), jumps[0].index), (1, 0), "{layout:?}");
        }
    }

    /// The rules the steps append, as given to iptables after the chain.
    fn appended(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .filter_map(|step| match &step.change {
                Change::Append(rule) => Some(rule.spec().join(" ")),
                _ => None,
            })
            .collect()
    }

    /// With chain = "INPUT", a source sits right above its DROP, below a
    /// ban of others: appended with the DROP made again after it, and one
    /// listed first in INPUT (above the ban) moved down the same way.
    #[test]
    fn in_input_a_source_sits_below_the_bans_right_above_its_drop() {
        let config = config("[firewall]\nipv6 = false\nchain = \"INPUT\"");
        let ban = listed("-s 203.0.113.9/32 -p tcp -m tcp --dport 22 -j REJECT");
        let ssh_drop = rule(&config, Family::Ipv4, "ssh", "22/tcp");
        let letting = |net: &str| Listed::new(ssh_drop.letting(net.parse().unwrap()).listed_spec());
        let input =
            |holdings: &Holdings| holdings.family(Family::Ipv4).unwrap().input.rules.clone();
        let mut before = bare(&config);
        held(&mut before, Family::Ipv4).input.rules =
            vec![ban.clone(), Listed::new(ssh_drop.listed_spec())];
        let wants = control(&config, "open ssh from 203.0.113.0/24\n");
        let now = after(&config, &before, &plan_of(&config, &wants, &before));
        let seated = vec![
            ban.clone(),
            letting("203.0.113.0/24"),
            Listed::new(ssh_drop.listed_spec()),
        ];
        assert_eq!(input(&now), seated);
        assert_eq!(shown(&plan_of(&config, &wants, &now)), Vec::<String>::new());

        // As a version that put sources first left it: moved below the ban.
        held(&mut before, Family::Ipv4).input.rules = vec![
            letting("203.0.113.0/24"),
            ban.clone(),
            Listed::new(ssh_drop.listed_spec()),
        ];
        let now = after(&config, &before, &plan_of(&config, &wants, &before));
        assert_eq!(input(&now), seated);

        // A second source joins the first above the DROP.
        let wants = control(
            &config,
            "open ssh from 203.0.113.0/24\nopen ssh from 198.51.100.7\n",
        );
        let later = after(&config, &now, &plan_of(&config, &wants, &now));
        assert_eq!(
            input(&later),
            [
                ban,
                letting("198.51.100.7/32"),
                letting("203.0.113.0/24"),
                Listed::new(ssh_drop.listed_spec()),
            ]
        );
        assert_eq!(
            shown(&plan_of(&config, &wants, &later)),
            Vec::<String>::new()
        );
    }

    /// With chain = "INPUT", two services that share a port, each open to
    /// its own sources: every source above every DROP, or one service's
    /// DROP would keep out the other's sources.
    #[test]
    fn in_input_every_source_sits_above_every_drop() {
        let config = Config::parse(
            "source = \"-\"\n[firewall]\nipv6 = false\nchain = \"INPUT\"\n\
             [services]\nssh = 22\nalt = [22, 2222]\n",
        )
        .unwrap();
        let wants = control(
            &config,
            "open ssh from 10.6.0.0/24\nopen alt from 10.7.0.0/24\n",
        );
        let bare = bare(&config);
        let now = after(&config, &bare, &plan_of(&config, &wants, &bare));
        let input = &now.family(Family::Ipv4).unwrap().input.rules;
        let is_source = |rule: &Listed| rule.spec.iter().any(|word| word == "-s");
        let first_drop = input.iter().position(|rule| !is_source(rule)).unwrap();
        assert_eq!(first_drop, 3, "{input:?}");
        assert!(
            input[first_drop..].iter().all(|rule| !is_source(rule)),
            "{input:?}"
        );
        assert_eq!(shown(&plan_of(&config, &wants, &now)), Vec::<String>::new());
        // A third source joins them above every DROP.
        let wants = control(
            &config,
            "open ssh from 10.6.0.0/24\nopen alt from 10.7.0.0/24\nopen alt from 10.8.0.0/24\n",
        );
        let later = after(&config, &now, &plan_of(&config, &wants, &now));
        let input = &later.family(Family::Ipv4).unwrap().input.rules;
        let first_drop = input.iter().position(|rule| !is_source(rule)).unwrap();
        assert_eq!(first_drop, 5, "{input:?}");
        assert!(
            input[first_drop..].iter().all(|rule| !is_source(rule)),
            "{input:?}"
        );
    }

    #[test]
    fn input_chain_needs_no_chain_or_jump() {
        let config = config("[firewall]\nipv6 = false\nchain = \"INPUT\"");
        let steps = plan_of(
            &config,
            &control(&config, "close ssh\n"),
            &Holdings::unknown(&config),
        );
        assert_eq!(shown(&steps), ["? IPv4: close ssh 22/tcp"]);
        let steps = plan_of(&config, &control(&config, "close ssh\n"), &bare(&config));
        assert_eq!(shown(&steps), ["IPv4: close ssh 22/tcp"]);
    }

    #[test]
    fn unknown_holdings_give_unchecked_steps_for_every_named_rule() {
        let config = config("[firewall]\nipv6 = false");
        let steps = plan_of(
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
    fn a_blind_plan_removes_source_rules_of_sources_seen() {
        let config = config("[firewall]\nipv6 = false");
        let ssh = ServiceName::new("ssh").unwrap();
        let seen: SourcesSeen = [(ssh, ["203.0.113.7/32".parse().unwrap()].into())].into();
        for text in ["close ssh\n", "open ssh\n"] {
            let steps = plan(
                &config,
                &control(&config, text),
                &Holdings::unknown(&config),
                &seen,
            );
            assert!(
                shown(&steps)
                    .contains(&"? IPv4: stop opening ssh 22/tcp to 203.0.113.7/32".to_owned()),
                "{text}: {:?}",
                shown(&steps)
            );
        }
        let steps = plan(
            &config,
            &control(&config, "open ssh from 203.0.113.7\n"),
            &Holdings::unknown(&config),
            &seen,
        );
        assert!(
            !shown(&steps).iter().any(|s| s.contains("stop opening")),
            "{:?}",
            shown(&steps)
        );
    }

    #[test]
    fn service_state_follows_the_holdings_and_recorded_changes() {
        let config = config("[firewall]\nipv6 = false");
        let web = ServiceName::new("web").unwrap();
        let state = |holdings: &Holdings| {
            service_state(
                &config,
                holdings.family(Family::Ipv4).unwrap(),
                Family::Ipv4,
                &web,
                test_now(),
            )
        };
        let mut now = holdings(&config, &["web 80/tcp IPv4"]);
        assert_eq!(state(&now), PortState::Partial);
        for step in plan_of(&config, &control(&config, "close web\n"), &now) {
            now.record(&config, &step.change);
        }
        assert_eq!(state(&now), PortState::Closed);
        held(&mut now, Family::Ipv4)
            .input
            .rules
            .insert(0, listed("-p tcp -m tcp --dport 80 -j ACCEPT"));
        assert_eq!(state(&now), PortState::Partial);
        held(&mut now, Family::Ipv4).input.rules.clear();
        assert_eq!(state(&now), PortState::Open);
    }

    #[test]
    fn sources_return_before_the_drop_and_only_in_their_family() {
        let config = config("");
        let held = holdings(&config, &[]);
        let text = "open ssh from 203.0.113.7\nopen ssh from 2001:db8::/48\n";
        let steps = plan_of(&config, &control(&config, text), &held);
        assert_eq!(
            shown(&steps),
            [
                "IPv4: open ssh 22/tcp to 203.0.113.7/32",
                "IPv4: close ssh 22/tcp",
                "IPv6: open ssh 22/tcp to 2001:db8::/48",
                "IPv6: close ssh 22/tcp",
            ]
        );
        let after = after(&config, &held, &steps);
        let ssh = ServiceName::new("ssh").unwrap();
        assert_eq!(
            service_state(
                &config,
                after.family(Family::Ipv4).unwrap(),
                Family::Ipv4,
                &ssh,
                test_now()
            ),
            PortState::OpenToSources
        );
        assert!(plan_of(&config, &control(&config, text), &after).is_empty());

        // A source taken out of the file loses its rule; the others stay.
        let fewer = "open ssh from 2001:db8::/48\n";
        let steps = plan_of(&config, &control(&config, fewer), &after);
        assert_eq!(
            shown(&steps),
            ["IPv4: stop opening ssh 22/tcp to 203.0.113.7/32"]
        );
        // A plain close takes every source rule away.
        let steps = plan_of(&config, &control(&config, "close ssh\n"), &after);
        assert_eq!(
            shown(&steps),
            [
                "IPv4: stop opening ssh 22/tcp to 203.0.113.7/32",
                "IPv6: stop opening ssh 22/tcp to 2001:db8::/48"
            ]
        );
        // Not named: the source rules are kept as they are.
        assert!(plan_of(&config, &control(&config, ""), &after).is_empty());
    }

    #[test]
    fn an_accept_of_the_first_version_is_replaced_by_a_return() {
        let config = config("[firewall]\nipv6 = false");
        let mut now = holdings(&config, &["ssh 22/tcp IPv4"]);
        let old = listed(
            "-s 203.0.113.7/32 -p tcp -m tcp --dport 22 -m comment --comment portlocker:ssh -j ACCEPT",
        );
        ours(&mut now, Family::Ipv4).insert(0, old);
        let steps = plan_of(
            &config,
            &control(&config, "open ssh from 203.0.113.7\n"),
            &now,
        );
        assert_eq!(
            shown(&steps),
            [
                "IPv4: open ssh 22/tcp to 203.0.113.7/32",
                "IPv4: remove rule portlocker:ssh"
            ]
        );
        // One the config cannot produce at all goes too.
        let odd = listed(
            "-s 203.0.113.7/32 -p tcp -m tcp --dport 2200 -m comment --comment portlocker:ssh -j RETURN",
        );
        let mut now = holdings(&config, &["ssh 22/tcp IPv4"]);
        ours(&mut now, Family::Ipv4).push(odd);
        let steps = plan_of(&config, &control(&config, ""), &now);
        assert_eq!(shown(&steps), ["IPv4: remove rule portlocker:ssh"]);
    }

    #[test]
    fn reset_removes_everything_portlocker_made_and_keeps_the_owners_rules() {
        let config = config("");
        let mut now = holdings(&config, &["ssh 22/tcp IPv4", "ssh 22/tcp IPv6"]);
        ours(&mut now, Family::Ipv6).push(listed("-s ::1/128 -j ACCEPT"));
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
        let now = after(&config, &now, &steps);
        let (again, _) = reset(&config, &now);
        assert_eq!(shown(&again), Vec::<String>::new());
    }

    #[test]
    fn an_open_that_ends_keeps_its_drops_for_the_kernel_to_start() {
        let config = config("[firewall]\nipv6 = false");
        let ssh = ServiceName::new("ssh").unwrap();
        let at = |text: &str| Some(DateTime::parse_from_rfc3339(text).unwrap().to_utc());
        let wants = BTreeMap::from([(ssh.clone(), Want::Open(at("2026-12-01T18:00:00Z")))]);
        let steps = plan_of(&config, &wants, &bare(&config));
        let args = appended(&steps);
        assert!(
            args.contains(&"-p tcp -m tcp --dport 22 --syn -m time --datestart 2026-12-01T18:00:00 --datestop 2038-01-19T03:14:07 -m comment --comment portlocker:ssh -j DROP".to_owned()),
            "{args:?}"
        );
        let done = after(&config, &bare(&config), &steps);
        assert!(plan_of(&config, &wants, &done).is_empty(), "it converges");
        let state = |now: &str| {
            service_state(
                &config,
                done.family(Family::Ipv4).unwrap(),
                Family::Ipv4,
                &ssh,
                at(now).unwrap(),
            )
        };
        assert_eq!(state("2026-12-01T17:59:59Z"), PortState::Open);
        assert_eq!(state("2026-12-01T18:00:00Z"), PortState::Closed);
        // Once ended, a plain DROP replaces the timed one, and that converges too.
        let closed = BTreeMap::from([(ssh.clone(), Want::Closed)]);
        let steps = plan_of(&config, &closed, &done);
        // Each change says what it does: the timed DROP going is no open.
        let due = at("2026-12-01T18:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M %:z");
        assert_eq!(
            shown(&steps),
            [
                "IPv4: close ssh 22/tcp".to_owned(),
                format!("IPv4: drop the close of ssh 22/tcp due at {due}")
            ]
        );
        let done = after(&config, &done, &steps);
        assert!(plan_of(&config, &closed, &done).is_empty());

        // A source that ends is let through until then, the DROP always there.
        let source: IpNet = "203.0.113.7/32".parse().unwrap();
        let wants = BTreeMap::from([(
            ssh.clone(),
            Want::OpenTo([(source, at("2026-12-01T18:00:00Z"))].into()),
        )]);
        let steps = plan_of(&config, &wants, &bare(&config));
        let args = appended(&steps);
        assert!(
            args.contains(&"-s 203.0.113.7/32 -p tcp -m tcp --dport 22 -m time --datestop 2026-12-01T18:00:00 -m comment --comment portlocker:ssh -j RETURN".to_owned()),
            "{args:?}"
        );

        // Past what xt_time can name: no time match, a plain open.
        let far = BTreeMap::from([(ssh, Want::Open(at("2040-01-01T00:00:00Z")))]);
        assert!(plan_of(&config, &far, &bare(&config)).is_empty());
    }

    /// The plan's rules for ssh in IPv4 after a run of `steps` on a bare
    /// firewall, in iptables' words.
    fn ssh_rules(config: &Config, steps: &[Step]) -> Vec<String> {
        let done = after(config, &bare(config), steps);
        let held = done.family(Family::Ipv4).unwrap();
        held.tagged(config)
            .filter(|rule| rule.tag() == Some("portlocker:ssh"))
            .map(|rule| rule.spec.join(" "))
            .collect()
    }

    /// What a refused commit teaches: a source not let in (its DROP
    /// stays), an open that ends closed now, a close left out while every
    /// other is made — and only in the family that refused.
    #[test]
    fn what_the_firewall_refused_is_closed_instead_or_left_out() {
        let config = config("");
        let ssh = ServiceName::new("ssh").unwrap();
        let at = |text: &str| Some(DateTime::parse_from_rfc3339(text).unwrap().to_utc());
        let source: IpNet = "203.0.113.7/32".parse().unwrap();
        let other: IpNet = "198.51.100.0/24".parse().unwrap();
        let wants = BTreeMap::from([(
            ssh.clone(),
            Want::OpenTo([(source, at("2030-01-01T00:00:00Z")), (other, None)].into()),
        )]);
        let steps = plan_of(&config, &wants, &bare(&config));
        let refused = steps
            .iter()
            .find_map(|step| match &step.change {
                Change::Append(rule) if rule.source == Some(source) => Some(rule.clone()),
                _ => None,
            })
            .unwrap();
        let mut unwritable = Unwritable::default();
        assert!(unwritable.refuse(&refused));
        assert!(!unwritable.refuse(&refused), "known already");
        let within = |wants: &BTreeMap<ServiceName, Want>, unwritable: &Unwritable| {
            plan_within(
                &config,
                wants,
                &bare(&config),
                &SourcesSeen::new(),
                unwritable,
            )
        };
        let rules = ssh_rules(&config, &within(&wants, &unwritable));
        assert!(
            rules.iter().all(|rule| !rule.contains("203.0.113.7")),
            "{rules:?}"
        );
        assert!(
            rules.iter().any(|rule| rule.contains("198.51.100.0/24")),
            "{rules:?}"
        );
        assert!(
            rules.iter().any(|rule| rule.ends_with("-j DROP")),
            "{rules:?}"
        );
        assert_eq!(
            unwritable.said,
            ["IPv4: ssh stays closed to 203.0.113.7/32: the firewall refused its rule"]
        );

        // An open that ends, refused: closed now, in that family only.
        let wants = BTreeMap::from([(ssh.clone(), Want::Open(at("2030-01-01T00:00:00Z")))]);
        let timed = plan_of(&config, &wants, &bare(&config));
        let refused = timed
            .iter()
            .find_map(|step| match &step.change {
                Change::Append(rule) if rule.family == Family::Ipv4 => Some(rule.clone()),
                _ => None,
            })
            .unwrap();
        let mut unwritable = Unwritable::default();
        assert!(unwritable.refuse(&refused));
        let steps = within(&wants, &unwritable);
        let rules = ssh_rules(&config, &steps);
        assert_eq!(rules.len(), 1, "{rules:?}");
        assert!(!rules[0].contains("-m time"), "{rules:?}");
        // IPv6 did not refuse it: its open still ends at the deadline.
        let timed = appended(&steps);
        let timed = timed.iter().filter(|rule| rule.contains("--datestart"));
        assert_eq!(timed.count(), 1);

        // A close refused: left out, every other close made.
        let wants = control(&config, "close ssh\nclose web\n");
        let closes = plan_of(&config, &wants, &bare(&config));
        let refused = rule(&config, Family::Ipv4, "web", "80/tcp");
        let mut unwritable = Unwritable::default();
        assert!(unwritable.refuse(&refused));
        let shown_steps = shown(&within(&wants, &unwritable));
        assert_eq!(shown_steps.len() + 1, closes.len(), "{shown_steps:?}");
        assert!(!shown_steps.contains(&"IPv4: close web 80/tcp".to_owned()));
        assert!(shown_steps.contains(&"IPv6: close web 80/tcp".to_owned()));

        // Refused too often: every open of the family that needs a rule closed.
        let wants = BTreeMap::from([
            (ssh.clone(), Want::OpenTo([(source, None)].into())),
            (
                ServiceName::new("web").unwrap(),
                Want::Open(at("2030-01-01T00:00:00Z")),
            ),
            (ServiceName::new("vpn").unwrap(), Want::Open(None)),
        ]);
        let mut unwritable = Unwritable::default();
        assert!(unwritable.close_all(Family::Ipv4, "all"));
        let steps = within(&wants, &unwritable);
        let done = after(&config, &bare(&config), &steps);
        let v4: Vec<String> = done
            .family(Family::Ipv4)
            .unwrap()
            .tagged(&config)
            .map(|rule| rule.spec.join(" "))
            .collect();
        assert!(
            v4.iter()
                .all(|rule| !rule.contains("-s ") && !rule.contains("-m time")),
            "{v4:?}"
        );
        assert_eq!(
            v4.len(),
            3,
            "ssh and both web ports closed, vpn open: {v4:?}"
        );
    }

    /// A deadline the kernel cannot name is never written: past 2038 no
    /// time match (a run ends the open), at or before the epoch over.
    #[test]
    fn deadlines_reach_the_kernel_only_as_it_can_name_them() {
        let at = |text: &str| Some(DateTime::parse_from_rfc3339(text).unwrap().to_utc());
        assert!(matches!(in_kernel(None), Ends::Never));
        assert!(matches!(in_kernel(at("2038-01-19T03:14:08Z")), Ends::Never));
        assert!(matches!(in_kernel(at("9999-12-31T23:59:59Z")), Ends::Never));
        assert!(matches!(
            in_kernel(at("1970-01-01T00:00:00Z")),
            Ends::Passed
        ));
        assert!(matches!(
            in_kernel(at("1969-12-31T23:59:59.5Z")),
            Ends::Passed
        ));
        let Ends::At(last) = in_kernel(at("2038-01-19T03:14:07.9Z")) else {
            panic!("the last second xt_time names");
        };
        assert_eq!(
            crate::firewall::model::kernel_time(last),
            "2038-01-19T03:14:07"
        );
        let Ends::At(leap) = in_kernel(at("2030-06-30T23:59:60Z")) else {
            panic!("a leap second");
        };
        assert_eq!(
            crate::firewall::model::kernel_time(leap),
            "2030-06-30T23:59:59"
        );
    }
}
