//! The iptables backend the config does not name. iptables-nft and
//! iptables-legacy keep separate tables and the kernel applies both, so
//! rules portlocker left in one before the owner switched to the other go on
//! closing ports where portlocker never looks. Finds them without starting
//! a process where nothing can be, and removes them as `reset` does; a rule
//! of the owner's there is never touched.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{Backend, CommandError, Failure, Firewall, Runner};
use crate::config::{Config, Family, restore_beside};
use crate::firewall::model::{Change, Holdings};
use crate::firewall::plan::{self, Step};
use crate::sys::files;

/// Where the other backend is looked for: the kernel's list of legacy
/// tables, and the directory searched last for its binaries.
#[derive(Debug, Clone)]
pub struct Places {
    /// `/proc/net`: `ip_tables_names` and `ip6_tables_names` list the legacy
    /// tables something has loaded (in this network namespace).
    pub proc_net: PathBuf,
    /// `/usr/sbin`.
    pub sbin: PathBuf,
}

impl Places {
    pub fn system() -> Places {
        Places {
            proc_net: "/proc/net".into(),
            sbin: "/usr/sbin".into(),
        }
    }
}

/// The backend each family's configured binary is not, where it is
/// installed and may hold something.
#[derive(Debug, Clone)]
pub struct Other {
    /// The config with the other backend's binaries in place of the
    /// configured ones: `Firewall` and the planner work on it unchanged.
    pub config: Config,
    /// The families to look into, each with its other backend.
    pub families: Vec<(Family, Backend)>,
}

impl Other {
    /// The other backend on this machine; None when there is nothing to look into.
    pub fn find(config: &Config) -> Option<Other> {
        Other::find_in(config, &Places::system())
    }

    /// The other backend of each family's configured binary: its sibling
    /// (`iptables-legacy` for `iptables-nft`, `ip6tables-…` for IPv6) next to
    /// the configured path, next to where that path leads, or in `sbin`.
    /// A legacy backend is looked into only once something has loaded its
    /// filter table: listing it would load it (and with no table there is
    /// nothing of portlocker's). Costs no process.
    pub fn find_in(config: &Config, places: &Places) -> Option<Other> {
        let mut other = config.clone();
        let mut families = Vec::new();
        for family in config.families() {
            let configured = config.binary(family);
            let Some(backend) = Backend::of(configured).map(Backend::other) else {
                continue;
            };
            if backend == Backend::Legacy && !legacy_filter_loaded(family, places) {
                continue;
            }
            let Some(binary) = sibling(configured, backend, family, places) else {
                continue;
            };
            // Its own restore tool, so a transaction lands in that backend.
            let restore = restore_beside(&binary);
            match family {
                Family::Ipv4 => {
                    (other.firewall.iptables, other.firewall.iptables_restore) = (binary, restore)
                }
                Family::Ipv6 => {
                    (other.firewall.ip6tables, other.firewall.ip6tables_restore) = (binary, restore)
                }
            }
            families.push((family, backend));
        }
        (!families.is_empty()).then_some(Other {
            config: other,
            families,
        })
    }

    /// What the other backend holds of portlocker's, read through
    /// `firewall` (made on `self.config`), and the steps that remove it.
    pub fn look<R: Runner>(&self, firewall: &mut Firewall<'_, R>) -> Found {
        let families: Vec<Family> = self.families.iter().map(|(family, _)| *family).collect();
        let (holdings, unread) = firewall.observe_leftovers(&families);
        let (steps, kept) = plan::reset(&self.config, &holdings);
        Found {
            holdings,
            steps,
            kept,
            unread,
        }
    }

    /// `legacy iptables (/usr/sbin/iptables-legacy)`: the other backend of
    /// `families` (of every family looked into when `families` is empty).
    pub fn describe(&self, families: &BTreeSet<Family>) -> String {
        let chosen: Vec<&(Family, Backend)> = self
            .families
            .iter()
            .filter(|(family, _)| families.is_empty() || families.contains(family))
            .collect();
        let backends: BTreeSet<Backend> = chosen.iter().map(|(_, backend)| *backend).collect();
        let names: Vec<&str> = backends.iter().map(|backend| backend.as_str()).collect();
        let binaries: Vec<String> = chosen
            .iter()
            .map(|(family, _)| self.config.binary(*family).display().to_string())
            .collect();
        format!("{} iptables ({})", names.join(" and "), binaries.join(", "))
    }

    fn backend(&self, family: Family) -> Option<Backend> {
        self.families
            .iter()
            .find(|(f, _)| *f == family)
            .map(|(_, backend)| *backend)
    }
}

/// Whether the legacy filter table of `family` exists in this network namespace.
fn legacy_filter_loaded(family: Family, places: &Places) -> bool {
    let names = match family {
        Family::Ipv4 => "ip_tables_names",
        Family::Ipv6 => "ip6_tables_names",
    };
    std::fs::read_to_string(places.proc_net.join(names))
        .is_ok_and(|text| text.lines().any(|line| line.trim() == "filter"))
}

/// The first existing binary of `backend` for `family` next to `configured`,
/// next to where it leads, or in `sbin` — only one that really is that
/// backend: taking the configured backend for the other would remove the
/// very rules that keep ports closed — and only one that passes the trust
/// check every program root runs, with its restore tool.
pub(super) fn sibling(
    configured: &Path,
    backend: Backend,
    family: Family,
    places: &Places,
) -> Option<PathBuf> {
    let name = backend.binary_name(family);
    let resolved = std::fs::canonicalize(configured).ok();
    let directories = [
        configured.parent(),
        resolved.as_deref().and_then(Path::parent),
        Some(places.sbin.as_path()),
    ];
    directories
        .into_iter()
        .flatten()
        .map(|directory| directory.join(name))
        .find(|candidate| {
            candidate.is_file() && Backend::of(candidate) == Some(backend) && trusted(candidate)
        })
}

/// Whether root may run `binary` and the restore tool beside it; one
/// another account could change is named in a warning and never run.
fn trusted(binary: &Path) -> bool {
    let what = "the other iptables backend's";
    let checked = files::check_program(binary, what)
        .and_then(|()| files::check_program(&restore_beside(binary), what));
    match checked {
        Ok(()) => true,
        Err(error) => {
            log::warn!(
                "{error:#}; portlocker does not run it, so it does not look for its rules there"
            );
            false
        }
    }
}

/// What the other backend holds of portlocker's, and what removes it.
#[derive(Debug)]
pub struct Found {
    pub holdings: Holdings,
    pub steps: Vec<Step>,
    /// Per family, the owner's rules that keep portlocker's chain there, as listed.
    pub kept: Vec<(Family, Vec<String>)>,
    /// Families that could not be read.
    pub unread: Vec<CommandError>,
}

/// What removing portlocker's rules from the other backend did.
#[derive(Debug, Default)]
pub struct Swept {
    /// None when there was no other backend to look into.
    pub other: Option<Other>,
    pub removed: Vec<Change>,
    pub kept: Vec<(Family, Vec<String>)>,
    pub unread: Vec<CommandError>,
    /// Removals that failed.
    pub failed: Vec<CommandError>,
}

/// Removes from the other backend everything of portlocker's, through
/// `runner`, as `reset` would. Each change made is logged.
pub fn sweep<R: Runner>(config: &Config, runner: R) -> Swept {
    sweep_in(config, runner, &Places::system())
}

pub fn sweep_in<R: Runner>(config: &Config, runner: R, places: &Places) -> Swept {
    let Some(other) = Other::find_in(config, places) else {
        return Swept::default();
    };
    let mut firewall = Firewall::new(&other.config, runner);
    let mut found = other.look(&mut firewall);
    let applied = firewall.apply(&found.steps, &mut found.holdings);
    Swept {
        removed: applied.made,
        kept: found.kept,
        unread: found.unread,
        failed: applied.errors,
        other: Some(other),
    }
}

impl Swept {
    /// Tells what a run should: one warning naming what was removed and
    /// why, and each removal that failed; the rest goes to the log. Returns
    /// the same as notices for the status page.
    pub fn tell_run(&self) -> Vec<String> {
        let Some(other) = &self.other else {
            return Vec::new();
        };
        let mut notices = Vec::new();
        if !self.removed.is_empty() {
            let families = self.removed.iter().map(Change::family).collect();
            let removed: Vec<String> = self.removed.iter().map(ToString::to_string).collect();
            let notice = format!(
                "portlocker's rules were still in {}, left from before the configured iptables \
                 changed backend; the kernel applies both backends, so they went on closing ports \
                 where portlocker no longer looked. Removed: {}",
                other.describe(&families),
                removed.join(", ")
            );
            log::warn!("{notice}");
            notices.push(notice);
        }
        for notice in self.kept_lines(other) {
            log::info!("{notice}");
            notices.push(notice);
        }
        for error in &self.failed {
            let notice = format!(
                "portlocker's rules left in {} could not all be removed: {error}",
                other.describe(&BTreeSet::from([error_family(other, error)]))
            );
            log::warn!("{notice}");
            notices.push(notice);
        }
        self.tell_unread(other, false);
        notices
    }

    /// Tells what `reset` should: returns a line per change made, for
    /// stdout; warns of rules kept and of families that could not be read.
    /// Failed removals are the caller's to report.
    pub fn tell_reset(&self) -> Vec<String> {
        let Some(other) = &self.other else {
            return Vec::new();
        };
        for warning in self.kept_lines(other) {
            log::warn!("{warning}");
        }
        self.tell_unread(other, true);
        self.removed
            .iter()
            .map(|change| {
                let family = BTreeSet::from([change.family()]);
                format!("{change}, in {}", other.describe(&family))
            })
            .collect()
    }

    fn kept_lines(&self, other: &Other) -> Vec<String> {
        self.kept
            .iter()
            .map(|(family, rules)| {
                format!(
                    "{family}: chain {} in {} holds rules that are not portlocker's, so it stays, \
                     and so does its jump: {}",
                    other.config.firewall.chain,
                    other.describe(&BTreeSet::from([*family])),
                    rules.join(" | ")
                )
            })
            .collect()
    }

    /// A backend that answers but cannot be used here (no nf_tables in the
    /// kernel) is for the log only; one that could not be run, or hung, is
    /// worth a warning.
    fn tell_unread(&self, other: &Other, warn: bool) {
        for error in &self.unread {
            let message = format!(
                "could not look for portlocker's rules in {}: {error}",
                match other.backend(error_family(other, error)) {
                    Some(backend) => format!("{backend} iptables"),
                    None => "the other iptables backend".to_owned(),
                }
            );
            if warn || !matches!(error.failure, Failure::Exited { .. }) {
                log::warn!("{message}");
            } else {
                log::info!("{message}");
            }
        }
    }
}

/// The family whose binary ran the failed command.
fn error_family(other: &Other, error: &CommandError) -> Family {
    match error.command.program == other.config.firewall.ip6tables {
        true => Family::Ipv6,
        false => Family::Ipv4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::runner::{Command, Completion, Termination};
    use std::os::unix::fs::symlink;

    /// A directory laid out like Debian's /usr/sbin, with both backends.
    struct Sbin {
        _dir: tempfile::TempDir,
        root: PathBuf,
    }

    impl Sbin {
        fn new() -> Sbin {
            let dir = tempfile::tempdir().unwrap();
            // Canonical, as the places found next to a link's target are.
            let root = std::fs::canonicalize(dir.path()).unwrap();
            let root = root.as_path();
            for multi in ["xtables-nft-multi", "xtables-legacy-multi"] {
                use std::os::unix::fs::PermissionsExt;
                std::fs::write(root.join(multi), "").unwrap();
                // Executable, as installed: one that is not is never run.
                let mode = std::fs::Permissions::from_mode(0o755);
                std::fs::set_permissions(root.join(multi), mode).unwrap();
            }
            for (name, multi) in [
                ("iptables-nft", "xtables-nft-multi"),
                ("ip6tables-nft", "xtables-nft-multi"),
                ("iptables-legacy", "xtables-legacy-multi"),
                ("ip6tables-legacy", "xtables-legacy-multi"),
            ] {
                symlink(multi, root.join(name)).unwrap();
            }
            std::fs::create_dir(root.join("proc")).unwrap();
            Sbin {
                root: root.to_owned(),
                _dir: dir,
            }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.root.join(name)
        }

        fn places(&self) -> Places {
            Places {
                proc_net: self.path("proc"),
                sbin: self.path("elsewhere"),
            }
        }

        fn load_legacy(&self, names: &str, tables: &str) {
            std::fs::write(self.path("proc").join(names), tables).unwrap();
        }

        fn config(&self, iptables: &Path, ip6tables: &Path) -> Config {
            let text = format!(
                "source = \"-\"\n[firewall]\niptables = {iptables:?}\nip6tables = {ip6tables:?}\n\
                 [services]\nssh = 22\n"
            );
            Config::parse(&text).unwrap()
        }
    }

    fn binaries(other: &Option<Other>) -> Vec<(Family, PathBuf)> {
        let Some(other) = other else {
            return Vec::new();
        };
        other
            .families
            .iter()
            .map(|&(family, _)| (family, other.config.binary(family).to_owned()))
            .collect()
    }

    #[test]
    fn nf_tables_configured_looks_into_legacy_only_once_its_filter_table_exists() {
        let sbin = Sbin::new();
        // The way Debian links it: /sbin/iptables → alternatives → iptables-nft.
        let alternatives = sbin.path("alternatives");
        std::fs::create_dir(&alternatives).unwrap();
        symlink(sbin.path("iptables-nft"), alternatives.join("iptables")).unwrap();
        symlink(alternatives.join("iptables"), sbin.path("iptables")).unwrap();
        let config = sbin.config(&sbin.path("iptables"), &sbin.path("ip6tables-nft"));
        let places = sbin.places();

        assert!(Other::find_in(&config, &places).is_none());
        sbin.load_legacy("ip_tables_names", "nat\n");
        assert!(
            Other::find_in(&config, &places).is_none(),
            "only a filter table can hold portlocker's rules"
        );
        sbin.load_legacy("ip_tables_names", "nat\nfilter\n");
        assert_eq!(
            binaries(&Other::find_in(&config, &places)),
            [(Family::Ipv4, sbin.path("iptables-legacy"))]
        );
        sbin.load_legacy("ip6_tables_names", "filter\n");
        let other = Other::find_in(&config, &places);
        assert_eq!(
            binaries(&other),
            [
                (Family::Ipv4, sbin.path("iptables-legacy")),
                (Family::Ipv6, sbin.path("ip6tables-legacy"))
            ]
        );
        assert_eq!(
            other.unwrap().describe(&BTreeSet::new()),
            format!(
                "legacy iptables ({}, {})",
                sbin.path("iptables-legacy").display(),
                sbin.path("ip6tables-legacy").display()
            )
        );
    }

    #[test]
    fn legacy_configured_always_looks_into_nf_tables() {
        let sbin = Sbin::new();
        let config = sbin.config(
            &sbin.path("iptables-legacy"),
            &sbin.path("ip6tables-legacy"),
        );
        assert_eq!(
            binaries(&Other::find_in(&config, &sbin.places())),
            [
                (Family::Ipv4, sbin.path("iptables-nft")),
                (Family::Ipv6, sbin.path("ip6tables-nft"))
            ]
        );
        let mut v4_only = config.clone();
        v4_only.firewall.ipv6 = false;
        assert_eq!(
            binaries(&Other::find_in(&v4_only, &sbin.places())),
            [(Family::Ipv4, sbin.path("iptables-nft"))]
        );
    }

    #[test]
    fn the_sibling_is_found_next_to_the_link_target_and_in_sbin() {
        let sbin = Sbin::new();
        // A link elsewhere to the nf_tables binary: its sibling is where it leads.
        let elsewhere = tempfile::tempdir().unwrap();
        symlink(sbin.path("iptables-nft"), elsewhere.path().join("iptables")).unwrap();
        let mut config = sbin.config(&elsewhere.path().join("iptables"), Path::new("/nowhere"));
        config.firewall.ipv6 = false;
        let mut places = sbin.places();
        places.proc_net = {
            let proc = elsewhere.path().join("proc");
            std::fs::create_dir(&proc).unwrap();
            std::fs::write(proc.join("ip_tables_names"), "filter\n").unwrap();
            proc
        };
        assert_eq!(
            binaries(&Other::find_in(&config, &places)),
            [(Family::Ipv4, sbin.path("iptables-legacy"))]
        );

        // A plain file that says nothing of its backend: nothing to look for.
        let plain = elsewhere.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        config.firewall.iptables = plain;
        assert!(Other::find_in(&config, &places).is_none());

        // The configured binary inside a copy of sbin without the sibling:
        // found in `sbin` (the last place looked).
        let bare = tempfile::tempdir().unwrap();
        std::fs::write(bare.path().join("xtables-nft-multi"), "").unwrap();
        symlink("xtables-nft-multi", bare.path().join("iptables-nft")).unwrap();
        config.firewall.iptables = bare.path().join("iptables-nft");
        places.sbin = sbin.root.clone();
        assert_eq!(
            binaries(&Other::find_in(&config, &places)),
            [(Family::Ipv4, sbin.path("iptables-legacy"))]
        );
        places.sbin = bare.path().join("none");
        assert!(Other::find_in(&config, &places).is_none());
    }

    #[test]
    fn a_sibling_that_is_really_the_configured_backend_is_never_taken() {
        let sbin = Sbin::new();
        // A misnamed link: `iptables-legacy` that leads to the nf_tables binary.
        let odd = tempfile::tempdir().unwrap();
        std::fs::write(odd.path().join("xtables-nft-multi"), "").unwrap();
        symlink("xtables-nft-multi", odd.path().join("iptables-nft")).unwrap();
        symlink("xtables-nft-multi", odd.path().join("iptables-legacy")).unwrap();
        let mut config = sbin.config(&odd.path().join("iptables-nft"), Path::new("/nowhere"));
        config.firewall.ipv6 = false;
        sbin.load_legacy("ip_tables_names", "filter\n");
        let mut places = sbin.places();
        places.sbin = odd.path().join("none");
        assert!(Other::find_in(&config, &places).is_none());
    }

    /// Root runs the sibling it finds: one another account could change —
    /// the binary, its restore tool, or a directory above them — is never
    /// taken, as the configured binaries are never run.
    #[test]
    fn a_sibling_another_account_could_change_is_never_taken() {
        use std::os::unix::fs::{PermissionsExt, chown};
        if !files::root_for_test("flavours::tests::a_sibling_another_account_could_change") {
            return;
        }
        let sbin = Sbin::new();
        let mut config = sbin.config(&sbin.path("iptables-legacy"), Path::new("/nowhere"));
        config.firewall.ipv6 = false;
        let found = || binaries(&Other::find_in(&config, &sbin.places()));
        let nft = [(Family::Ipv4, sbin.path("iptables-nft"))];
        assert_eq!(found(), nft);
        let multi = sbin.path("xtables-nft-multi");
        chown(&multi, Some(65534), None).unwrap();
        assert_eq!(found(), []);
        chown(&multi, Some(0), None).unwrap();
        let restore = sbin.path("iptables-nft-restore");
        std::fs::write(&restore, "").unwrap();
        std::fs::set_permissions(&restore, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(found(), []);
        std::fs::set_permissions(&restore, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(found(), nft);
        std::fs::set_permissions(&sbin.root, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(found(), []);
    }

    /// Answers every listing as iptables does for a chain that does not
    /// exist, and records each call.
    #[derive(Default)]
    struct Empty {
        calls: Vec<String>,
    }

    impl Runner for Empty {
        fn run(&mut self, command: &Command) -> std::io::Result<Completion> {
            self.calls.push(command.to_string());
            Ok(Completion {
                termination: Termination::Code(1),
                stdout: String::new(),
                stderr: "iptables: No chain/target/match by that name.\n".into(),
            })
        }
    }

    #[test]
    fn with_nothing_there_looking_costs_one_listing_per_family() {
        let sbin = Sbin::new();
        let config = sbin.config(
            &sbin.path("iptables-legacy"),
            &sbin.path("ip6tables-legacy"),
        );
        let mut empty = Empty::default();
        let swept = sweep_in(&config, &mut empty, &sbin.places());
        assert!(swept.removed.is_empty() && swept.unread.is_empty());
        assert!(swept.tell_run().is_empty());
        let nft = |name: &str| sbin.path(name).display().to_string();
        assert_eq!(
            empty.calls,
            [
                format!("{} -w 10 -S PORTLOCKER", nft("iptables-nft")),
                format!("{} -w 10 -S PORTLOCKER", nft("ip6tables-nft")),
            ]
        );

        // nf_tables configured, no legacy table: not even that.
        let config = sbin.config(&sbin.path("iptables-nft"), &sbin.path("ip6tables-nft"));
        let mut empty = Empty::default();
        let swept = sweep_in(&config, &mut empty, &sbin.places());
        assert!(swept.other.is_none());
        assert!(empty.calls.is_empty(), "{:?}", empty.calls);
    }
}
