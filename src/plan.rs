//! What the firewall holds, and the changes that make it match the control
//! file. Pure: never touches the network or the firewall.

use std::collections::BTreeMap;

use crate::config::{Config, Family, ServiceName};
use crate::control::{Action, ControlFile};
use crate::firewall::{Change, Rule};

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
            Change::DeleteChain { .. } => *self = FamilyHoldings::default(),
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
        if !held.chain_exists || counts.iter().all(|&n| n == 0) {
            PortState::Open
        } else if counts.iter().all(|&n| n > 0) && held.jump_at_top(config) {
            PortState::Closed
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
    /// Some of its ports are closed, or its rules are not reached first.
    Partial,
    Unknown,
}

impl PortState {
    pub fn as_str(self) -> &'static str {
        match self {
            PortState::Open => "open",
            PortState::Closed => "closed",
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
        })
    })
}

/// The changes that make the firewall match `control`, in the order to make
/// them. Services the control file does not name keep their state; along the
/// way the jump goes back to the top of INPUT, and duplicates and rules the
/// config no longer produces are removed.
pub fn plan(config: &Config, control: &ControlFile, holdings: &Holdings) -> Vec<Step> {
    let mut steps = Vec::new();
    for (&family, held) in &holdings.families {
        match held {
            Some(held) => plan_family(config, control, family, held, &mut steps),
            None => plan_blind(config, control, family, &mut steps),
        }
    }
    steps
}

fn wanted(control: &ControlFile, rule: &Rule) -> Option<Action> {
    control.directives.get(&rule.service).map(|d| d.action)
}

fn plan_family(
    config: &Config,
    control: &ControlFile,
    family: Family,
    held: &FamilyHoldings,
    steps: &mut Vec<Step>,
) {
    let mut push = |change| {
        steps.push(Step {
            change,
            checked: true,
        })
    };
    let chain = &config.firewall.chain;
    let rules: Vec<Rule> = rules_of(config, family).collect();
    let closes_any = rules
        .iter()
        .any(|rule| wanted(control, rule) == Some(Action::Close));

    if !chain.is_input() && (held.chain_exists || closes_any) {
        if !held.chain_exists {
            push(Change::NewChain {
                family,
                chain: chain.clone(),
            });
        }
        if !held.jump_at_top(config) {
            // Out of place or doubled: remove every jump, then put one first.
            for _ in &held.jumps {
                push(Change::DeleteJump {
                    family,
                    chain: chain.clone(),
                });
            }
            push(Change::InsertJump {
                family,
                chain: chain.clone(),
            });
        }
    }
    for rule in rules.iter().cloned() {
        let held_copies = held.count(&rule);
        let keep = match wanted(control, &rule) {
            Some(Action::Close) => 1,
            Some(Action::Open) => 0,
            None => held_copies.min(1),
        };
        if held_copies < keep {
            push(Change::Append(rule));
        } else {
            for _ in keep..held_copies {
                push(Change::Delete(rule.clone()));
            }
        }
    }
    let producible: Vec<Vec<String>> = rules.iter().map(Rule::listed_spec).collect();
    for spec in held.tagged.iter().filter(|spec| !producible.contains(spec)) {
        push(Change::DeleteListed {
            family,
            chain: chain.clone(),
            spec: spec.clone(),
        });
    }
}

/// Without a listing: every change the control file could need, each to be
/// made only if its check says so.
fn plan_blind(config: &Config, control: &ControlFile, family: Family, steps: &mut Vec<Step>) {
    let mut push = |change| {
        steps.push(Step {
            change,
            checked: false,
        })
    };
    let chain = &config.firewall.chain;
    let named: Vec<(Rule, Action)> = rules_of(config, family)
        .filter_map(|rule| wanted(control, &rule).map(|action| (rule, action)))
        .collect();
    if !chain.is_input() && named.iter().any(|(_, action)| *action == Action::Close) {
        push(Change::NewChain {
            family,
            chain: chain.clone(),
        });
        push(Change::InsertJump {
            family,
            chain: chain.clone(),
        });
    }
    for (rule, action) in named {
        push(match action {
            Action::Close => Change::Append(rule),
            Action::Open => Change::Delete(rule),
        });
    }
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
    use crate::control;

    fn config(extra: &str) -> Config {
        let text = format!(
            "source = \"-\"\n{extra}\n[services]\nssh = 22\nweb = [80, \"443/tcp\"]\nvpn = \"1194/udp\"\n"
        );
        Config::parse(&text).unwrap()
    }

    fn control(config: &Config, text: &str) -> ControlFile {
        let names = config.services.keys().cloned().collect();
        control::parse(text.as_bytes(), &names).unwrap()
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
                foreign: Vec::new(),
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
