//! What the firewall holds, and the changes that make it match the control
//! file. Pure: never touches the network or the firewall.

use std::collections::BTreeMap;

use crate::config::{Config, Family, PortSpec, ServiceName};
use crate::control::{Action, ControlFile};
use crate::firewall::{Change, Rule};

/// Whether one thing (a chain, the jump, a rule) is in the firewall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Present,
    Absent,
    /// Not checked: no root, no iptables, or the check failed.
    Unknown,
}

/// What portlocker's part of the firewall holds, per family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holdings {
    pub families: BTreeMap<Family, FamilyHoldings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyHoldings {
    /// portlocker's chain (always present when the chain is INPUT).
    pub chain: Presence,
    /// The jump from INPUT to the chain (always present when the chain is INPUT).
    pub jump: Presence,
    pub rules: BTreeMap<(ServiceName, PortSpec), Presence>,
}

impl Holdings {
    /// Holdings with nothing checked, for a dry run that cannot look.
    pub fn unknown(config: &Config) -> Holdings {
        let families = config
            .families()
            .into_iter()
            .map(|family| {
                let rules = rules_of(config, family)
                    .map(|rule| (rule.key(), Presence::Unknown))
                    .collect();
                let fixed = if config.firewall.chain.is_input() {
                    Presence::Present
                } else {
                    Presence::Unknown
                };
                let holdings = FamilyHoldings {
                    chain: fixed,
                    jump: fixed,
                    rules,
                };
                (family, holdings)
            })
            .collect();
        Holdings { families }
    }

    /// Records a change that was carried out.
    pub fn record(&mut self, change: &Change) {
        let Some(holdings) = self.families.get_mut(&change.family()) else {
            return;
        };
        match change {
            Change::NewChain { .. } => holdings.chain = Presence::Present,
            Change::InsertJump { .. } => holdings.jump = Presence::Present,
            Change::Append(rule) => {
                holdings.rules.insert(rule.key(), Presence::Present);
            }
            Change::Delete(rule) => {
                holdings.rules.insert(rule.key(), Presence::Absent);
            }
        }
    }

    /// The state of one service in one family.
    pub fn state(&self, config: &Config, service: &ServiceName, family: Family) -> PortState {
        let Some(holdings) = self.families.get(&family) else {
            return PortState::Unknown;
        };
        let rules: Vec<Presence> = config.services[service]
            .iter()
            .map(|ports| {
                let key = (service.clone(), *ports);
                holdings
                    .rules
                    .get(&key)
                    .copied()
                    .unwrap_or(Presence::Unknown)
            })
            .collect();
        let enforced = [holdings.chain, holdings.jump];
        if rules.iter().all(|&p| p == Presence::Absent) || holdings.chain == Presence::Absent {
            PortState::Open
        } else if rules.contains(&Presence::Unknown) || enforced.contains(&Presence::Unknown) {
            PortState::Unknown
        } else if rules.iter().all(|&p| p == Presence::Present)
            && holdings.jump == Presence::Present
        {
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
    /// Some of its ports are closed, or the rules are there but the jump to them is not.
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
/// read, so the change is needed only if its check says so.
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

/// The changes that make the firewall match `control`, in the order to make them.
/// Services the control file does not name are left alone.
pub fn plan(config: &Config, control: &ControlFile, holdings: &Holdings) -> Vec<Step> {
    let mut steps = Vec::new();
    for (&family, held) in &holdings.families {
        let wanted = |rule: &Rule| {
            control
                .directives
                .get(&rule.service)
                .map(|directive| directive.action)
        };
        let rules: Vec<(Rule, Action, Presence)> = rules_of(config, family)
            .filter_map(|rule| {
                let action = wanted(&rule)?;
                let presence = held
                    .rules
                    .get(&rule.key())
                    .copied()
                    .unwrap_or(Presence::Unknown);
                Some((rule, action, presence))
            })
            .collect();

        let closes_any = rules.iter().any(|(_, action, _)| *action == Action::Close);
        let chain = &config.firewall.chain;
        if closes_any && !chain.is_input() {
            let change = Change::NewChain {
                family,
                chain: chain.clone(),
            };
            push_unless(&mut steps, change, held.chain, Presence::Present);
            let change = Change::InsertJump {
                family,
                chain: chain.clone(),
            };
            push_unless(&mut steps, change, held.jump, Presence::Present);
        }
        for (rule, action, presence) in rules {
            match action {
                Action::Close => push_unless(
                    &mut steps,
                    Change::Append(rule),
                    presence,
                    Presence::Present,
                ),
                Action::Open => {
                    push_unless(&mut steps, Change::Delete(rule), presence, Presence::Absent)
                }
            }
        }
    }
    steps
}

/// Adds `change` unless the firewall is already known to be `done`.
fn push_unless(steps: &mut Vec<Step>, change: Change, presence: Presence, done: Presence) {
    if presence != done {
        steps.push(Step {
            change,
            checked: presence != Presence::Unknown,
        });
    }
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

    /// Holdings where the chain and jump exist and `present` lists the rules held.
    fn holdings(config: &Config, present: &[&str]) -> Holdings {
        let mut holdings = Holdings::unknown(config);
        for (family, held) in holdings.families.iter_mut() {
            held.chain = Presence::Present;
            held.jump = Presence::Present;
            for ((service, ports), presence) in held.rules.iter_mut() {
                let name = format!("{service} {ports} {family}");
                *presence = if present.contains(&name.as_str()) {
                    Presence::Present
                } else {
                    Presence::Absent
                };
            }
        }
        holdings
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
        for held in bare.families.values_mut() {
            held.chain = Presence::Absent;
            held.jump = Presence::Absent;
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
    fn open_removes_only_what_is_there_and_leaves_unnamed_services() {
        let config = config("[firewall]\nipv6 = false");
        let held = holdings(&config, &["web 443/tcp IPv4", "vpn 1194/udp IPv4"]);
        let steps = plan(&config, &control(&config, "open web\n"), &held);
        assert_eq!(shown(&steps), ["IPv4: open web 443/tcp"]);
    }

    #[test]
    fn a_missing_jump_is_restored_even_when_the_rules_are_there() {
        let config = config("[firewall]\nipv6 = false");
        let mut held = holdings(&config, &["ssh 22/tcp IPv4"]);
        held.families.get_mut(&Family::Ipv4).unwrap().jump = Presence::Absent;
        let steps = plan(&config, &control(&config, "close ssh\n"), &held);
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
    fn an_empty_control_file_plans_nothing() {
        let config = config("");
        assert!(
            plan(
                &config,
                &control(&config, "# nothing\n"),
                &Holdings::unknown(&config)
            )
            .is_empty()
        );
    }

    #[test]
    fn service_state_follows_the_holdings_and_recorded_changes() {
        let config = config("[firewall]\nipv6 = false");
        let web = ServiceName::new("web").unwrap();
        let mut held = holdings(&config, &["web 80/tcp IPv4"]);
        assert_eq!(held.state(&config, &web, Family::Ipv4), PortState::Partial);
        for step in plan(&config, &control(&config, "close web\n"), &held) {
            held.record(&step.change);
        }
        assert_eq!(held.state(&config, &web, Family::Ipv4), PortState::Closed);
        held.families.get_mut(&Family::Ipv4).unwrap().jump = Presence::Absent;
        assert_eq!(held.state(&config, &web, Family::Ipv4), PortState::Partial);
        held.families.get_mut(&Family::Ipv4).unwrap().chain = Presence::Absent;
        assert_eq!(held.state(&config, &web, Family::Ipv4), PortState::Open);
        assert_eq!(held.state(&config, &web, Family::Ipv6), PortState::Unknown);
        let unknown = Holdings::unknown(&config);
        assert_eq!(
            unknown.state(&config, &web, Family::Ipv4),
            PortState::Unknown
        );
    }
}
