//! portlocker's rules where the config no longer puts them. The kernel
//! applies every backend and every chain jumped to, so rules a run left
//! there before the owner changed the config go on dropping — a port
//! opened since stays unreachable while the page says open, and `reset`
//! (or removing the package) would leave them behind:
//! - the backend the config does not name: nftables' `table inet
//!   portlocker` when it names iptables, portlocker's iptables chains (both
//!   iptables backends) when it names nftables;
//! - with iptables, the chain the state says the rules were in, when the
//!   config names another (`chain`), and the IPv6 rules, when the config
//!   no longer manages IPv6 (`ipv6 = false`).
//!
//! Each goes with its mirror where Docker forwards (`forward.rs`), unless
//! that is the config's own. They are removed as `reset` removes them,
//! never touching where the config puts its rules now, and only once the
//! configured backend is known to hold what the owner asked: removing a
//! close anywhere before that could open what the owner closed.

use std::collections::BTreeSet;
use std::path::Path;

use crate::config::{BackendKind, ChainName, Config, Family};
use crate::firewall::forward::Mirror;
use crate::firewall::model::{Change, Holdings, tag_of};
use crate::firewall::plan::{self, Step};
use crate::firewall::{self, FirewallBackend};
use crate::intake::state::State;
use crate::sys::runner::{CommandError, Runner};

/// The backend the config does not name.
pub fn other_kind(kind: BackendKind) -> BackendKind {
    match kind {
        BackendKind::Iptables => BackendKind::Nftables,
        BackendKind::Nftables => BackendKind::Iptables,
    }
}

/// How that backend is named to the owner.
pub fn describe(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Iptables => "iptables (portlocker's chain and its jump from INPUT)",
        BackendKind::Nftables => "nftables (table inet portlocker)",
    }
}

/// Where the config puts portlocker's rules, as the state keeps it once a
/// run has made sure nothing of portlocker's is anywhere else.
pub fn remember(config: &Config, state: &mut State) {
    let iptables = config.firewall.backend == BackendKind::Iptables;
    state.backend = Some(config.firewall.backend.as_str().to_owned());
    state.chain = iptables.then(|| config.firewall.chain.as_str().to_owned());
    state.ipv6 = iptables.then_some(config.firewall.ipv6);
}

/// Where portlocker's rules may be that the config no longer puts them.
#[derive(Debug, Clone, Default)]
pub struct Elsewhere {
    places: Vec<Place>,
    /// Services whose rules there stay: what the owner asked of them is
    /// known only from those rules.
    spared: BTreeSet<String>,
}

/// One place to look into: a config that puts portlocker's rules there, the
/// families to look at, and how it is named to the owner.
#[derive(Debug, Clone)]
struct Place {
    config: Config,
    families: Vec<Family>,
    named: String,
    /// The config's own jump is in INPUT, which this place is: spare it.
    spare_jumps: bool,
    /// The backend the config does not name: all of it is portlocker's to
    /// remove, as its own `reset` does.
    whole: bool,
    /// The state says portlocker's rules were there: its programs missing
    /// do not mean it holds nothing (the kernel keeps what they loaded).
    known_there: bool,
    /// A chain of the configured backend that the config no longer names.
    old_chain: bool,
    /// Its mirror where Docker forwards (`forward.rs`) is not the
    /// config's own: it goes with the place's rules.
    mirror: bool,
}

impl Elsewhere {
    /// Where the state says portlocker's rules were, against where the
    /// config puts them. A state that does not say (from before it did, or
    /// lost) leaves the other backend to look into, where the config's
    /// chain would be.
    pub fn of(config: &Config, state: &State) -> Elsewhere {
        let mut places = Vec::new();
        let kept_chain = state
            .chain
            .as_deref()
            .and_then(|chain| ChainName::new(chain).ok());
        let kept_ipv6 = state.ipv6 == Some(true);
        if state.backend.as_deref() != Some(config.firewall.backend.as_str()) {
            let mut other = Place::other_kind(config, kept_chain, kept_ipv6);
            other.known_there =
                state.backend.as_deref() == Some(other.config.firewall.backend.as_str());
            places.push(other);
        } else if config.firewall.backend == BackendKind::Iptables {
            let chain = &config.firewall.chain;
            match kept_chain.filter(|kept| kept != chain) {
                Some(old) => {
                    let mut moved = config.clone();
                    moved.firewall.chain = old.clone();
                    moved.firewall.ipv6 |= kept_ipv6;
                    places.push(Place {
                        families: moved.families(),
                        named: format!("chain {old}, which the config no longer names"),
                        spare_jumps: old.is_input() && !chain.is_input(),
                        mirror: old.mirror() != chain.mirror(),
                        config: moved,
                        whole: false,
                        known_there: true,
                        old_chain: true,
                    });
                }
                None if kept_ipv6 && !config.firewall.ipv6 => {
                    let mut both = config.clone();
                    both.firewall.ipv6 = true;
                    places.push(Place {
                        config: both,
                        families: vec![Family::Ipv6],
                        named: "ip6tables, which the config no longer manages (ipv6 = false)"
                            .to_owned(),
                        spare_jumps: false,
                        whole: false,
                        known_there: true,
                        old_chain: false,
                        mirror: true,
                    });
                }
                None => {}
            }
        }
        Elsewhere {
            places,
            spared: BTreeSet::new(),
        }
    }

    /// The same places, where the rules of `services` stay: with `default
    /// = "keep"`, a service no line in force names (the state that named it
    /// lost) keeps what the firewall holds of it, and that may be only there.
    pub fn sparing(self, services: BTreeSet<String>) -> Elsewhere {
        Elsewhere {
            spared: services,
            ..self
        }
    }

    /// Everywhere the state says, and the other backend in any case: for
    /// `reset`.
    pub fn everywhere(config: &Config, state: &State) -> Elsewhere {
        let mut elsewhere = Elsewhere::of(config, state);
        let other = other_kind(config.firewall.backend);
        if !elsewhere
            .places
            .iter()
            .any(|place| place.config.firewall.backend == other)
        {
            elsewhere
                .places
                .push(Place::other_kind(config, None, false));
        }
        elsewhere
    }

    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// The state knew the chain a config of before named, which is not the
    /// config's now (same backend).
    pub fn moved_chain(&self) -> bool {
        self.places.iter().any(|place| place.old_chain)
    }
}

impl Place {
    /// The backend `config` does not name; with iptables, in `chain` (else
    /// the config's), and in IPv6 too with `ipv6`.
    fn other_kind(config: &Config, chain: Option<ChainName>, ipv6: bool) -> Place {
        let mut other = config.clone();
        other.firewall.backend = other_kind(config.firewall.backend);
        if other.firewall.backend == BackendKind::Iptables {
            other.firewall.chain = chain.unwrap_or(other.firewall.chain);
            other.firewall.ipv6 |= ipv6;
        }
        Place {
            families: other.families(),
            named: describe(other.firewall.backend).to_owned(),
            config: other,
            spare_jumps: false,
            whole: true,
            known_there: false,
            old_chain: false,
            // Its own reset removes it.
            mirror: false,
        }
    }
}

/// What looking elsewhere found and did.
#[derive(Debug, Default)]
pub struct Swept {
    /// One line per removal made, ending `, in PLACE`.
    pub removed: Vec<String>,
    /// Why a place could not be looked into, or what could not be removed.
    pub problems: Vec<String>,
    /// Per service spared, where its rules stay.
    pub kept: Vec<(String, String)>,
}

impl Swept {
    /// Whether nothing of portlocker's is known to be left elsewhere now.
    pub fn clean(&self) -> bool {
        self.problems.is_empty() && self.kept.is_empty()
    }

    /// Tells a run's owner, once: a warning for what was removed and for
    /// each problem. Returns the same, for the status page.
    pub fn tell_run(&self) -> Vec<String> {
        let mut notices = Vec::new();
        if !self.removed.is_empty() {
            let mut places: Vec<(&str, Vec<&str>)> = Vec::new();
            for (line, place) in self
                .removed
                .iter()
                .filter_map(|line| line.split_once(", in "))
            {
                match places.iter_mut().find(|(named, _)| *named == place) {
                    Some((_, lines)) => lines.push(line),
                    None => places.push((place, vec![line])),
                }
            }
            let removed: Vec<String> = places
                .iter()
                .map(|(place, lines)| format!("from {place}: {}", lines.join(", ")))
                .collect();
            notices.push(format!(
                "portlocker's rules were still where the config no longer puts them; the kernel \
                 applies them all, so they went on dropping where portlocker no longer looked. \
                 Removed {}",
                removed.join("; ")
            ));
        }
        notices.extend(self.kept.iter().map(|(service, place)| {
            format!(
                "{service}: its rules in {place} stay, left from before the config changed: no \
                 line in force names {service}, so they are all that says what you asked of it; \
                 a control file that names it moves it where the config puts its rules"
            )
        }));
        notices.extend(self.problems.iter().map(|problem| {
            format!(
                "portlocker's rules may still be where the config no longer puts them, dropping \
                 what the page shows open: {problem}; the next run looks again"
            )
        }));
        for notice in &notices {
            log::warn!("{notice}");
        }
        notices
    }
}

/// Why a place's backend cannot be looked into; None when it can, and
/// Some(empty) when none of its programs is installed and the state does
/// not say portlocker's rules were there, so it holds nothing.
fn unusable(place: &Place, backend: &dyn FirewallBackend) -> Option<Vec<String>> {
    let broken = backend.broken();
    if broken.is_empty() {
        return None;
    }
    if !broken.iter().all(|(path, _)| absent(path)) {
        return Some(broken.into_iter().map(|(_, problem)| problem).collect());
    }
    Some(match place.known_there {
        false => Vec::new(),
        true => broken
            .into_iter()
            .map(|(_, problem)| {
                format!(
                    "the state says they were in {}, and the kernel keeps what it loaded, but \
                     {problem}, so no run can remove them",
                    place.named
                )
            })
            .collect(),
    })
}

/// The removals `reset` would make in `place`, as read through `backend`,
/// leaving alone the jump of the config's own chain. Err: why it could not
/// be read.
fn removals(
    place: &Place,
    spared: &BTreeSet<String>,
    backend: &mut dyn FirewallBackend,
) -> Result<Removals, String> {
    let (mut holdings, errors) = backend.observe(false);
    if let Some(error) = errors.first() {
        return Err(error.to_string());
    }
    holdings
        .families
        .retain(|family, _| place.families.contains(family));
    let (mut steps, _) = plan::reset(&place.config, &holdings);
    let mut kept = BTreeSet::new();
    let mut kept_in = BTreeSet::new();
    steps.retain(|step| {
        let Change::DeleteListed { family, spec, .. } = &step.change else {
            return true;
        };
        let Some(tag) = tag_of(spec) else {
            return true;
        };
        if place.spare_jumps && tag.starts_with("portlocker:jump.") {
            return false;
        }
        match tag
            .strip_prefix("portlocker:")
            .filter(|name| spared.contains(*name))
        {
            Some(service) => {
                kept.insert(service.to_owned());
                kept_in.insert(*family);
                false
            }
            None => true,
        }
    });
    // A chain that keeps rules keeps its jump too — with nftables, in both
    // families: they are one table, whose rewrite would otherwise come
    // every run.
    let one_table = place.config.firewall.backend == BackendKind::Nftables;
    steps.retain(|step| match &step.change {
        Change::DeleteJump { family, .. } | Change::DeleteChain { family, .. } => {
            !kept_in.contains(family) && (!one_table || kept_in.is_empty())
        }
        _ => true,
    });
    Ok(Removals {
        holdings,
        steps,
        kept,
    })
}

/// What is to go from one place, and which spared services stay there.
struct Removals {
    holdings: Holdings,
    steps: Vec<Step>,
    kept: BTreeSet<String>,
}

/// Removes portlocker's rules from where `elsewhere` says they may be,
/// through `runner`. A backend whose programs are not installed holds
/// nothing, and starts no process.
pub fn sweep<R: Runner>(elsewhere: &Elsewhere, mut runner: R) -> Swept {
    let mut swept = Swept::default();
    for place in &elsewhere.places {
        let mut backend = firewall::backend_for(&place.config, &mut runner);
        if let Some(problems) = unusable(place, backend.as_ref()) {
            swept.problems.extend(problems);
            continue;
        }
        if place.whole && elsewhere.spared.is_empty() {
            // The other backend: its own reset, which knows all of it.
            let reset = backend.reset();
            let in_place = |line: &String| format!("{line}, in {}", place.named);
            swept.removed.extend(reset.said.iter().map(in_place));
            swept
                .problems
                .extend(reset.errors.iter().map(CommandError::to_string));
            continue;
        }
        match removals(place, &elsewhere.spared, backend.as_mut()) {
            Err(problem) => swept.problems.push(problem),
            Ok(Removals {
                mut holdings,
                steps,
                kept,
            }) => {
                let named = &place.named;
                let mirror_goes = place.mirror && kept.is_empty();
                swept
                    .kept
                    .extend(kept.into_iter().map(|service| (service, named.clone())));
                let applied = backend.apply(&steps, &mut holdings);
                swept.removed.extend(
                    applied
                        .made
                        .iter()
                        .map(|change| format!("{change}, in {}", place.named)),
                );
                swept
                    .problems
                    .extend(applied.errors.iter().map(CommandError::to_string));
                if mirror_goes {
                    let nothing = Mirror {
                        families: place.families.iter().map(|&f| (f, Vec::new())).collect(),
                        docker_known: true,
                    };
                    let forwarded = backend.forward(&nothing, false);
                    let in_place = |line: &String| format!("{line}, in {named}");
                    swept.removed.extend(forwarded.said.iter().map(in_place));
                    swept
                        .problems
                        .extend(forwarded.errors.iter().map(CommandError::to_string));
                }
            }
        }
    }
    for line in &swept.removed {
        log::info!("{line}");
    }
    swept
}

/// What a run's sweep would remove, as each place's backend's dry run
/// shows it: empty when there is nothing to remove.
pub fn dry_run<R: Runner>(elsewhere: &Elsewhere, mut runner: R) -> Vec<String> {
    let mut lines = Vec::new();
    for place in &elsewhere.places {
        let named = &place.named;
        let mut backend = firewall::backend_for(&place.config, &mut runner);
        if let Some(problems) = unusable(place, backend.as_ref()) {
            lines.extend(problems.iter().map(|problem| {
                format!("# cannot look for portlocker's rules left in {named}: {problem}")
            }));
            continue;
        }
        match removals(place, &elsewhere.spared, backend.as_mut()) {
            Err(problem) => lines.push(format!(
                "# cannot look for portlocker's rules left in {named}: {problem}"
            )),
            Ok(Removals { steps, .. }) if steps.is_empty() => {}
            Ok(Removals {
                holdings, steps, ..
            }) => {
                lines.push(format!(
                    "# portlocker's rules are left in {named}; once the firewall matches, a run \
                     removes them:"
                ));
                lines.extend(backend.dry_run(&steps, &holdings));
            }
        }
    }
    lines
}

fn absent(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_err_and(|error| error.kind() == std::io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::fake::FakeIptables;
    use crate::sys::runner::{Command, Completion};
    use std::os::unix::fs::PermissionsExt;

    /// Answers nothing, records every call.
    #[derive(Default)]
    struct Recording {
        calls: Vec<String>,
    }

    impl Runner for Recording {
        fn run(&mut self, command: &Command) -> std::io::Result<Completion> {
            self.calls.push(command.to_string());
            Err(std::io::Error::other("the test runs nothing"))
        }
    }

    /// A config naming `backend`, with its programs in `dir`, executable
    /// where `installed` says so (none of them there otherwise).
    fn config(dir: &Path, backend: &str, installed: &[(&str, u32)]) -> Config {
        for (name, mode) in installed {
            let path = dir.join(name);
            std::fs::write(&path, "").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        let path = |name: &str| dir.join(name).display().to_string();
        let text = format!(
            "source = \"https://example.org/c\"\nlog_file = {:?}\nstate_dir = {:?}\n\
             [firewall]\nbackend = {backend:?}\niptables = {:?}\nip6tables = {:?}\nnft = {:?}\n\
             [services]\nssh = [\"22/tcp\"]\n",
            path("log"),
            path("state"),
            path("iptables"),
            path("ip6tables"),
            path("nft"),
        );
        Config::parse(&text).unwrap()
    }

    #[test]
    fn a_backend_that_is_not_installed_holds_nothing_and_costs_no_process() {
        for backend in ["iptables", "nftables"] {
            let dir = tempfile::tempdir().unwrap();
            let config = config(dir.path(), backend, &[]);
            let mut runner = Recording::default();
            let swept = sweep(&Elsewhere::of(&config, &State::default()), &mut runner);
            assert!(swept.clean() && swept.removed.is_empty(), "{swept:?}");
            assert_eq!(runner.calls, Vec::<String>::new());
            assert_eq!(swept.tell_run(), Vec::<String>::new());
        }
    }

    #[test]
    fn one_that_is_there_but_cannot_be_run_may_still_hold_rules() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), "iptables", &[("nft", 0o644)]);
        let mut runner = Recording::default();
        let swept = sweep(&Elsewhere::of(&config, &State::default()), &mut runner);
        assert!(!swept.clean(), "{swept:?}");
        assert_eq!(runner.calls, Vec::<String>::new());
        let told = swept.tell_run();
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(
            told[0].contains("may still be where the config no longer puts them"),
            "{told:?}"
        );
        assert!(told[0].contains("not executable"), "{told:?}");
    }

    #[test]
    fn rules_left_in_iptables_are_removed_and_the_owners_kept() {
        let dir = tempfile::tempdir().unwrap();
        let programs = [("iptables", 0o755), ("ip6tables", 0o755)];
        let on_iptables = config(dir.path(), "iptables", &programs);
        let on_nftables = config(dir.path(), "nftables", &[]);
        let mut fake = FakeIptables::default();
        {
            let mut firewall = firewall::backend_for(&on_iptables, &mut fake);
            let (mut holdings, errors) = firewall.observe(false);
            assert!(errors.is_empty(), "{errors:?}");
            let wants = crate::intake::intent::wants_of(&on_iptables, "close ssh\n");
            let steps = crate::firewall::plan::plan(
                &on_iptables,
                &wants,
                &holdings,
                &crate::firewall::plan::SourcesSeen::new(),
            );
            assert!(firewall.apply(&steps, &mut holdings).errors.is_empty());
        }
        fake.admin("iptables", "-A INPUT -p tcp --dport 80 -j ACCEPT");
        assert!(fake.dump().contains("portlocker:ssh"), "{}", fake.dump());

        let swept = sweep(&Elsewhere::of(&on_nftables, &State::default()), &mut fake);
        assert!(swept.clean(), "{swept:?}");
        assert!(
            swept.removed.contains(
                &"IPv4: remove rule portlocker:ssh, in iptables (portlocker's chain and its jump \
                  from INPUT)"
                    .to_owned()
            ),
            "{:?}",
            swept.removed
        );
        let left = fake.dump();
        assert!(
            !left.contains("portlocker") && !left.contains("PORTLOCKER"),
            "{left}"
        );
        assert!(left.contains("--dport 80 -j ACCEPT"), "{left}");
        let told = swept.tell_run();
        assert!(
            told[0].contains("were still where the config no longer puts them"),
            "{told:?}"
        );

        // Nothing left: the next look removes nothing.
        let again = sweep(&Elsewhere::of(&on_nftables, &State::default()), &mut fake);
        assert!(again.clean() && again.removed.is_empty(), "{again:?}");
    }

    /// Closes `services` through `config`'s backend on `fake`, as a run does.
    fn close(config: &Config, fake: &mut FakeIptables, control: &str) {
        let mut firewall = firewall::backend_for(config, fake);
        let (mut holdings, errors) = firewall.observe(false);
        assert!(errors.is_empty(), "{errors:?}");
        let wants = crate::intake::intent::wants_of(config, control);
        let steps = plan::plan(
            config,
            &wants,
            &holdings,
            &crate::firewall::plan::SourcesSeen::new(),
        );
        assert!(firewall.apply(&steps, &mut holdings).errors.is_empty());
    }

    /// The state a run on `config` leaves, once it made sure.
    fn remembered(config: &Config) -> State {
        let mut state = State::default();
        remember(config, &mut state);
        state
    }

    fn with(config: &Config, edit: impl FnOnce(&mut Config)) -> Config {
        let mut config = config.clone();
        edit(&mut config);
        config
    }

    #[test]
    fn a_chain_the_config_no_longer_names_is_cleared_and_the_new_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let programs = [("iptables", 0o755), ("ip6tables", 0o755)];
        let new = config(dir.path(), "iptables", &programs);
        for old_chain in ["OLDCHAIN", "INPUT"] {
            let old = with(&new, |c| {
                c.firewall.chain = ChainName::new(old_chain).unwrap()
            });
            let mut fake = FakeIptables::default();
            close(&old, &mut fake, "close ssh\n");
            close(&new, &mut fake, "close ssh\n");
            let before = fake.dump();
            assert_eq!(before.matches("portlocker:ssh").count(), 4, "{before}");

            let elsewhere = Elsewhere::of(&new, &remembered(&old));
            let swept = sweep(&elsewhere, &mut fake);
            assert!(swept.clean(), "{swept:?}");
            let after = fake.dump();
            assert_eq!(after.matches("portlocker:ssh").count(), 2, "{after}");
            assert!(!after.contains("OLDCHAIN"), "{after}");
            for binary in ["iptables", "ip6tables"] {
                let listing = fake.listing(binary, "INPUT").unwrap();
                assert!(listing.contains("-j PORTLOCKER"), "{old_chain}: {listing}");
                assert!(
                    !listing.contains("portlocker:ssh"),
                    "{old_chain}: {listing}"
                );
            }
            assert!(swept.tell_run()[0].contains(&format!("chain {old_chain}")));
            // Where the config puts its rules now: nothing to look into.
            assert!(Elsewhere::of(&new, &remembered(&new)).is_empty());
        }
    }

    #[test]
    fn ipv6_rules_the_config_no_longer_manages_are_cleared_and_ipv4_kept() {
        let dir = tempfile::tempdir().unwrap();
        let programs = [("iptables", 0o755), ("ip6tables", 0o755)];
        let both = config(dir.path(), "iptables", &programs);
        let v4 = with(&both, |c| c.firewall.ipv6 = false);
        let mut fake = FakeIptables::default();
        close(&both, &mut fake, "close ssh\n");
        let swept = sweep(&Elsewhere::of(&v4, &remembered(&both)), &mut fake);
        assert!(swept.clean(), "{swept:?}");
        assert!(
            fake.listing("iptables", "PORTLOCKER")
                .unwrap()
                .contains("portlocker:ssh")
        );
        assert!(
            fake.listing("ip6tables", "PORTLOCKER").is_none(),
            "{}",
            fake.dump()
        );
    }

    /// With `default = "keep"` and the state lost, a service no line names
    /// is known only from the rules: those left elsewhere stay.
    #[test]
    fn the_rules_of_a_service_nothing_asks_about_stay_where_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let programs = [("iptables", 0o755), ("ip6tables", 0o755)];
        let on_iptables = config(dir.path(), "iptables", &programs);
        let on_nftables = with(&on_iptables, |c| c.firewall.backend = BackendKind::Nftables);
        let mut fake = FakeIptables::default();
        close(&on_iptables, &mut fake, "close ssh\n");
        let spared = BTreeSet::from(["ssh".to_owned()]);
        let elsewhere = Elsewhere::of(&on_nftables, &State::default()).sparing(spared);
        let swept = sweep(&elsewhere, &mut fake);
        assert!(!swept.clean(), "{swept:?}");
        assert_eq!(swept.kept.len(), 1, "{swept:?}");
        assert_eq!(
            fake.dump().matches("portlocker:ssh").count(),
            2,
            "{}",
            fake.dump()
        );
        assert!(
            fake.listing("iptables", "INPUT")
                .unwrap()
                .contains("-j PORTLOCKER")
        );
        let told = swept.tell_run();
        assert!(
            told.iter()
                .any(|line| line.starts_with("ssh: its rules in iptables")),
            "{told:?}"
        );
    }
}
