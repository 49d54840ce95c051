//! portlocker's rules in the firewall backend the config does not name:
//! nftables' `table inet portlocker` when the config names iptables, and
//! portlocker's iptables chains (both iptables backends) when it names
//! nftables. The kernel applies both, so rules left there by a run from
//! before the owner switched backends go on dropping — a port opened since
//! stays unreachable while the page says open, and `reset` (or removing the
//! package) would leave them behind. They are removed as that backend's
//! own `reset` removes them, once the configured backend is known to hold
//! what the owner asked: removing a close anywhere before that could open
//! what the owner closed.

use std::path::Path;

use crate::config::{BackendKind, Config};
use crate::firewall::{self, CommandError, FirewallBackend, Runner};
use crate::plan;

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

/// What looking into the other backend found and did.
#[derive(Debug, Default)]
pub struct Swept {
    /// One line per removal made.
    pub removed: Vec<String>,
    /// Why it could not be looked into, or what could not be removed.
    pub problems: Vec<String>,
}

impl Swept {
    /// Whether the other backend is known to hold nothing of portlocker's now.
    pub fn clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Tells a run's owner, once: a warning for what was removed and for
    /// each problem. Returns the same, for the status page.
    pub fn tell_run(&self, configured: BackendKind) -> Vec<String> {
        let other = describe(other_kind(configured));
        let mut notices = Vec::new();
        if !self.removed.is_empty() {
            notices.push(format!(
                "portlocker's rules were still in {other}, left from before the config named {}; \
                 the kernel applies both, so they went on dropping where portlocker no longer \
                 looked. Removed: {}",
                configured.as_str(),
                self.removed.join(", ")
            ));
        }
        notices.extend(self.problems.iter().map(|problem| {
            format!(
                "portlocker's rules may still be in {other} (the backend the config does not \
                 name), dropping what the page shows open: {problem}; the next run looks again"
            )
        }));
        for notice in &notices {
            log::warn!("{notice}");
        }
        notices
    }
}

/// The config with the other backend named in its place.
fn naming_the_other(config: &Config) -> Config {
    let mut other = config.clone();
    other.firewall.backend = other_kind(config.firewall.backend);
    other
}

/// Why the other backend cannot be looked into; None when it can, and
/// Some(None) when none of its programs is installed, so it holds nothing.
fn unusable(backend: &dyn FirewallBackend) -> Option<Vec<String>> {
    let broken = backend.broken();
    if broken.is_empty() {
        return None;
    }
    Some(match broken.iter().all(|(path, _)| absent(path)) {
        true => Vec::new(),
        false => broken.into_iter().map(|(_, problem)| problem).collect(),
    })
}

/// Removes portlocker's rules from the backend `config` does not name,
/// through `runner`. A backend whose programs are not installed holds
/// nothing, and starts no process.
pub fn sweep<R: Runner>(config: &Config, runner: R) -> Swept {
    let other = naming_the_other(config);
    let mut backend = firewall::backend_for(&other, runner);
    if let Some(problems) = unusable(backend.as_ref()) {
        return Swept {
            removed: Vec::new(),
            problems,
        };
    }
    let reset = backend.reset();
    for line in &reset.said {
        log::info!("{line}");
    }
    Swept {
        removed: reset.said,
        problems: reset.errors.iter().map(CommandError::to_string).collect(),
    }
}

/// What a run's sweep would remove, as the other backend's dry run shows
/// it: empty when there is nothing to remove.
pub fn dry_run<R: Runner>(config: &Config, runner: R) -> Vec<String> {
    let other = naming_the_other(config);
    let named = describe(other.firewall.backend);
    let mut backend = firewall::backend_for(&other, runner);
    if let Some(problems) = unusable(backend.as_ref()) {
        return problems
            .iter()
            .map(|problem| {
                format!("# cannot look for portlocker's rules left in {named}: {problem}")
            })
            .collect();
    }
    let (holdings, errors) = backend.observe(false);
    if let Some(error) = errors.first() {
        return vec![format!(
            "# cannot look for portlocker's rules left in {named}: {error}"
        )];
    }
    let (steps, _) = plan::reset(&other, &holdings);
    if steps.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![format!(
        "# portlocker's rules are left in {named}; once the firewall matches, a run removes them:"
    )];
    lines.extend(backend.dry_run(&steps, &holdings));
    lines
}

fn absent(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_err_and(|error| error.kind() == std::io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeIptables;
    use crate::runner::{Command, Completion};
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
            let swept = sweep(&config, &mut runner);
            assert!(swept.clean() && swept.removed.is_empty(), "{swept:?}");
            assert_eq!(runner.calls, Vec::<String>::new());
            assert_eq!(
                swept.tell_run(config.firewall.backend),
                Vec::<String>::new()
            );
        }
    }

    #[test]
    fn one_that_is_there_but_cannot_be_run_may_still_hold_rules() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), "iptables", &[("nft", 0o644)]);
        let mut runner = Recording::default();
        let swept = sweep(&config, &mut runner);
        assert!(!swept.clean(), "{swept:?}");
        assert_eq!(runner.calls, Vec::<String>::new());
        let told = swept.tell_run(config.firewall.backend);
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(told[0].contains("may still be in nftables"), "{told:?}");
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
            let wants = crate::intent::wants_of(&on_iptables, "close ssh\n");
            let steps = crate::plan::plan(
                &on_iptables,
                &wants,
                &holdings,
                &crate::plan::SourcesSeen::new(),
            );
            assert!(firewall.apply(&steps, &mut holdings).errors.is_empty());
        }
        fake.admin("iptables", "-A INPUT -p tcp --dport 80 -j ACCEPT");
        assert!(fake.dump().contains("portlocker:ssh"), "{}", fake.dump());

        let swept = sweep(&on_nftables, &mut fake);
        assert!(swept.clean(), "{swept:?}");
        assert!(
            swept
                .removed
                .contains(&"IPv4: remove rule portlocker:ssh".to_owned()),
            "{:?}",
            swept.removed
        );
        let left = fake.dump();
        assert!(
            !left.contains("portlocker") && !left.contains("PORTLOCKER"),
            "{left}"
        );
        assert!(left.contains("--dport 80 -j ACCEPT"), "{left}");
        let told = swept.tell_run(on_nftables.firewall.backend);
        assert!(told[0].contains("were still in iptables"), "{told:?}");

        // Nothing left: the next look removes nothing.
        let again = sweep(&on_nftables, &mut fake);
        assert!(again.clean() && again.removed.is_empty(), "{again:?}");
    }
}
