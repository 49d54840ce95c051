//! What ships beside the binary agrees with the binary and with itself: the
//! units in dist/ with the example config and the exit codes, the .deb's
//! assets with the files, the generated man page and completions with the
//! command line. (systemd-analyze and dpkg check the same files in .ci/package.)

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;
use portlocker::cli::Cli;
use portlocker::config::Config;
use portlocker::exit::Exit;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A unit file as (section, key, value), in order; comments and blank lines
/// dropped.
fn unit(path: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut entries = Vec::new();
    for line in read(path).lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{path}: not key=value: {line}"));
        entries.push((section.clone(), key.to_owned(), value.to_owned()));
    }
    entries
}

fn values(unit: &[(String, String, String)], section: &str, key: &str) -> Vec<String> {
    unit.iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.clone())
        .collect()
}

fn value(unit: &[(String, String, String)], section: &str, key: &str) -> String {
    match values(unit, section, key).as_slice() {
        [one] => one.clone(),
        other => panic!("[{section}] {key}= should be set once, is {other:?}"),
    }
}

const SERVICES: [&str; 2] = ["dist/portlocker.service", "dist/portlocker-boot.service"];
const WATCH: &str = "dist/portlocker-watch.service";

#[test]
fn both_services_run_the_packaged_binary_where_the_deb_puts_it() {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let assets = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .unwrap();
    let binary = assets
        .iter()
        .find(|a| a[0].as_str() == Some("target/release/portlocker"))
        .expect("the binary is an asset");
    assert_eq!(binary[1].as_str(), Some("usr/sbin/"));
    for path in SERVICES.into_iter().chain([WATCH]) {
        let exec = value(&unit(path), "Service", "ExecStart");
        assert!(exec.starts_with("/usr/sbin/portlocker"), "{path}: {exec}");
        assert_eq!(
            value(&unit(path), "Service", "SuccessExitStatus"),
            (Exit::Busy as u8).to_string(),
            "{path}: a run that found the lock held is not a failure"
        );
    }
    assert_eq!(
        value(&unit(SERVICES[1]), "Service", "ExecStart"),
        "/usr/sbin/portlocker --offline"
    );
}

#[test]
fn every_file_the_deb_takes_from_the_repository_exists() {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let mut shipped = BTreeSet::new();
    for asset in deb["assets"].as_array().unwrap() {
        let source = asset[0].as_str().unwrap();
        if !source.starts_with("target/") {
            assert!(
                Path::new(ROOT).join(source).is_file(),
                "{source} is missing"
            );
            shipped.insert(source.to_owned());
        }
    }
    for entry in std::fs::read_dir(Path::new(ROOT).join("dist")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let path = format!("dist/{name}");
        if Path::new(ROOT).join(&path).is_file() {
            assert!(shipped.contains(&path), "{path} is not in the .deb");
        }
    }
    let scripts = deb["maintainer-scripts"].as_str().unwrap();
    for script in ["postinst", "prerm", "postrm"] {
        assert!(Path::new(ROOT).join(scripts).join(script).is_file());
    }
}

#[test]
fn the_example_config_writes_only_where_the_sandbox_lets_it() {
    // The config as the .deb installs it, with the optional page and metrics on.
    let text = read("config.example.toml")
        .replace("# status_file = ", "status_file = ")
        .replace("# metrics_file = ", "metrics_file = ");
    let config = Config::parse(&text).unwrap();
    for path in SERVICES.into_iter().chain([WATCH]) {
        let unit = unit(path);
        let state = Path::new("/var/lib").join(value(&unit, "Service", "StateDirectory"));
        assert_eq!(config.state_dir, state, "{path}");
        let logs = Path::new("/var/log").join(value(&unit, "Service", "LogsDirectory"));
        assert_eq!(config.log_file.parent(), Some(logs.as_path()), "{path}");
        let writable: Vec<String> = values(&unit, "Service", "ReadWritePaths")
            .iter()
            .flat_map(|v| {
                v.split_whitespace()
                    .map(|p| p.trim_start_matches('-').to_owned())
            })
            .collect();
        for file in [&config.status_file, &config.metrics_file] {
            let dir = file.as_ref().unwrap().parent().unwrap();
            assert!(
                writable.iter().any(|w| Path::new(w) == dir),
                "{path}: {} is not writable in {writable:?}",
                dir.display()
            );
        }
        assert_eq!(value(&unit, "Service", "ProtectSystem"), "strict");
    }
}

#[test]
fn the_boot_unit_has_the_sandbox_of_the_service_and_no_network() {
    let sandbox = |path: &str| -> Vec<(String, String)> {
        unit(path)
            .into_iter()
            .filter(|(s, k, _)| {
                s == "Service" && !matches!(k.as_str(), "ExecStart" | "TimeoutStartSec")
            })
            .map(|(_, k, v)| (k, v))
            .collect()
    };
    let mut boot = sandbox(SERVICES[1]);
    let deny = ("IPAddressDeny".to_owned(), "any".to_owned());
    assert!(boot.contains(&deny), "--offline fetches nothing");
    boot.retain(|entry| entry != &deny);
    assert_eq!(boot, sandbox(SERVICES[0]));
    assert_eq!(
        value(&unit(SERVICES[0]), "Service", "CapabilityBoundingSet"),
        "CAP_NET_ADMIN CAP_NET_RAW"
    );
}

/// The watch unit runs `portlocker watch` in the very sandbox of the
/// timer's service, restarted whatever ends it.
#[test]
fn the_watch_unit_has_the_sandbox_of_the_service_and_always_restarts() {
    let sandbox = |path: &str| -> Vec<(String, String)> {
        let from = unit(path)
            .iter()
            .position(|(s, k, _)| s == "Service" && k == "CapabilityBoundingSet")
            .unwrap();
        unit(path)[from..]
            .iter()
            .filter(|(s, _, _)| s == "Service")
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(sandbox(WATCH), sandbox(SERVICES[0]));
    let watch = unit(WATCH);
    assert_eq!(
        value(&watch, "Service", "ExecStart"),
        "/usr/sbin/portlocker watch"
    );
    assert_eq!(value(&watch, "Service", "Restart"), "always");
    assert_eq!(value(&watch, "Service", "Type"), "exec");
    assert_eq!(
        value(&watch, "Service", "ExecReload"),
        "/bin/kill -HUP $MAINPID"
    );
    assert_eq!(value(&watch, "Install", "WantedBy"), "multi-user.target");
    let after = values(&watch, "Unit", "After").join(" ");
    for unit in [
        "portlocker-boot.service",
        "network-online.target",
        "nftables.service",
    ] {
        assert!(after.split_whitespace().any(|u| u == unit), "After={after}");
    }
}

#[test]
fn the_boot_unit_is_ordered_as_debians_nftables_service() {
    let boot = unit(SERVICES[1]);
    assert_eq!(value(&boot, "Unit", "DefaultDependencies"), "no");
    for (key, wanted) in [
        ("Before", "network-pre.target"),
        ("Wants", "network-pre.target"),
        ("After", "systemd-tmpfiles-setup.service"),
        // A manager that loads its ruleset after the boot unit would flush its closes.
        ("After", "nftables.service"),
        ("After", "netfilter-persistent.service"),
        ("After", "ufw.service"),
        ("After", "firewalld.service"),
    ] {
        let all = values(&boot, "Unit", key).join(" ");
        assert!(all.split_whitespace().any(|u| u == wanted), "{key}={all}");
    }
    assert_eq!(value(&boot, "Install", "WantedBy"), "sysinit.target");
}

#[test]
fn the_timer_keeps_to_the_five_minute_grid() {
    let timer = unit("dist/portlocker.timer");
    assert_eq!(value(&timer, "Timer", "OnCalendar"), "*:0/5");
    assert_eq!(value(&timer, "Timer", "AccuracySec"), "1s");
    assert_eq!(value(&timer, "Timer", "Persistent"), "true");
    assert!(!value(&timer, "Timer", "RandomizedDelaySec").is_empty());
    assert!(
        values(&timer, "Timer", "OnUnitActiveSec").is_empty(),
        "drifts by each run's length, and Persistent= ignores it"
    );
    assert_eq!(value(&timer, "Install", "WantedBy"), "timers.target");
}

#[test]
fn the_cron_file_runs_nothing_until_uncommented() {
    let cron = read("dist/portlocker.cron");
    let active: Vec<&str> = cron
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    assert!(active.is_empty(), "{active:?}");
    assert!(cron.contains("#*/5 * * * * root /usr/sbin/portlocker\n"));
    assert!(cron.contains("#@reboot     root /usr/sbin/portlocker --offline\n"));
}

const MAN: &str = include_str!(concat!(env!("OUT_DIR"), "/man/portlocker.8"));

#[test]
fn the_man_page_has_the_grammar_the_files_and_every_exit_code() {
    for heading in [
        "CONTROL FILE",
        "CONFIGURATION",
        "FILES",
        "EXIT STATUS",
        "SEE ALSO",
    ] {
        assert!(
            MAN.lines()
                .any(|l| l == format!(".SH \"{heading}\"") || l == format!(".SH {heading}")),
            "no {heading} section"
        );
    }
    let exit_status = MAN.split(".SH \"EXIT STATUS\"").nth(1).unwrap();
    let exit_status = exit_status.split(".SH").next().unwrap();
    for exit in [Exit::Ok, Exit::Failed, Exit::Usage, Exit::Busy] {
        let code = (exit as u8).to_string();
        assert!(
            exit_status.lines().any(|l| l == format!("\\fB{code}\\fR")),
            "exit code {code} missing from:\n{exit_status}"
        );
    }
    for word in ["from NET", "until TIME", "for DURATION", "on PATTERNS"] {
        assert!(MAN.contains(word), "{word} missing");
    }
    for sub in Cli::command().get_subcommands() {
        let page = Path::new(env!("OUT_DIR")).join(format!("man/portlocker-{}.8", sub.get_name()));
        assert!(page.is_file(), "{} has no page", sub.get_name());
    }
}

#[test]
fn the_completions_know_every_subcommand_and_option() {
    let out = Path::new(env!("OUT_DIR")).join("completions");
    let command = Cli::command();
    let mut words: Vec<String> = command
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    words.extend(
        command
            .get_arguments()
            .chain(command.get_subcommands().flat_map(|s| s.get_arguments()))
            .filter_map(|a| a.get_long().map(str::to_owned)),
    );
    for file in ["portlocker.bash", "_portlocker", "portlocker.fish"] {
        let text = std::fs::read_to_string(out.join(file)).unwrap();
        for word in &words {
            assert!(text.contains(word.as_str()), "{file} lacks {word}");
        }
    }
}

// The configuration reference: config.example.toml documents every key the
// config takes; the man page and the README are made from it.

#[path = "../src/reference.rs"]
mod reference;

/// The README's reference lies between these lines.
const REFERENCE_START: &str = "<!-- The configuration reference, made from config.example.toml: \
                               `PORTLOCKER_BLESS=1 cargo test --test dist` rewrites it. -->\n";
const REFERENCE_END: &str = "<!-- End of the configuration reference. -->\n";

fn example_reference() -> Vec<reference::Section> {
    reference::parse(&read("config.example.toml")).unwrap()
}

/// Every key the config's serde types take, as `section.key`, read from
/// src/config.rs: a `Raw*` struct's fields, a field of type `RawX` or
/// `Option<RawX>` being a section. `[services]` holds the owner's names.
fn keys_the_config_takes() -> BTreeSet<String> {
    let source = read("src/config.rs");
    let fields = |name: &str| -> Vec<(String, String)> {
        let start = source
            .find(&format!("struct {name} {{"))
            .unwrap_or_else(|| panic!("no struct {name} in src/config.rs"));
        let body = &source[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find("\n}").unwrap()];
        body.lines()
            .map(str::trim)
            .filter(|line| !line.starts_with("//") && !line.starts_with('#'))
            .filter_map(|line| line.split_once(": "))
            .map(|(field, kind)| (field.to_owned(), kind.trim_end_matches(',').to_owned()))
            .collect()
    };
    let mut keys = BTreeSet::new();
    for (field, kind) in fields("RawConfig") {
        let inner = kind.trim_start_matches("Option<").trim_end_matches('>');
        if field == "services" {
            continue;
        } else if inner.starts_with("Raw") {
            for (key, _) in fields(inner) {
                keys.insert(format!("{field}.{key}"));
            }
        } else {
            keys.insert(field);
        }
    }
    keys
}

#[test]
fn the_example_config_documents_every_key_the_config_takes() {
    let sections = example_reference();
    let documented: BTreeSet<String> = reference::keys(&sections).into_iter().collect();
    let taken = keys_the_config_takes();
    assert!(taken.len() > 20, "src/config.rs was misread: {taken:?}");
    assert_eq!(
        taken.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "keys the config takes that config.example.toml does not document"
    );
    assert_eq!(
        documented.difference(&taken).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "keys config.example.toml documents that the config does not take"
    );
    for section in &sections {
        for key in &section.keys {
            assert!(
                key.about.len() > 20 || section.name.as_deref() == Some("services"),
                "{:?}.{}: say what it does in the comment above it",
                section.name,
                key.name
            );
        }
    }
}

#[test]
fn the_man_page_documents_every_key() {
    let configuration = MAN
        .split(".SH CONFIGURATION")
        .nth(1)
        .expect("a CONFIGURATION section")
        .split("\n.SH ")
        .next()
        .unwrap();
    for section in example_reference() {
        if let Some(name) = &section.name {
            assert!(
                configuration.contains(&format!(".SS \"[{name}]\""))
                    || configuration.contains(&format!(".SS [{name}]\n")),
                "no [{name}] in the man page:\n{configuration}"
            );
        }
        // The services are examples, shown as they are.
        let shown = match section.name.as_deref() {
            Some("services") => |key: &str| format!("\n{key} = "),
            _ => |key: &str| format!("\\fB{key} = "),
        };
        for key in &section.keys {
            assert!(
                configuration.contains(&shown(&key.name)),
                "{} is missing from the man page:\n{configuration}",
                key.name
            );
        }
    }
}

/// The README's reference is the example's, word for word; with
/// PORTLOCKER_BLESS=1 this test writes it instead of failing.
#[test]
fn the_readme_configuration_reference_is_made_from_the_example() {
    let readme = read("README.md");
    let start = readme
        .find(REFERENCE_START)
        .expect("the README has the reference's start line")
        + REFERENCE_START.len();
    let end = readme[start..]
        .find(REFERENCE_END)
        .expect("the README has the reference's end line")
        + start;
    let made = reference::markdown(&example_reference());
    if std::env::var("PORTLOCKER_BLESS").as_deref() == Ok("1") {
        let blessed = format!("{}{made}{}", &readme[..start], &readme[end..]);
        std::fs::write(Path::new(ROOT).join("README.md"), blessed).unwrap();
        return;
    }
    assert!(
        readme[start..end] == made,
        "the README's configuration reference differs from config.example.toml's: run \
         PORTLOCKER_BLESS=1 cargo test --test dist the_readme_configuration_reference"
    );
}

#[test]
fn logrotate_creates_the_log_as_portlocker_does() {
    let snippet = read("dist/portlocker.logrotate");
    let create = snippet
        .lines()
        .find_map(|line| line.trim().strip_prefix("create "))
        .expect("logrotate creates the new log");
    let mode = create.split_whitespace().next().unwrap();
    assert_eq!(
        u32::from_str_radix(mode, 8).unwrap(),
        portlocker::report::logging::LOG_MODE,
        "{create}"
    );
}

#[test]
fn the_deb_needs_what_a_minimal_system_lacks() {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let depends: Vec<&str> = deb["depends"]
        .as_str()
        .unwrap()
        .split(',')
        .map(str::trim)
        .collect();
    for package in ["iptables", "ca-certificates"] {
        assert!(depends.contains(&package), "{depends:?} lacks {package}");
    }
    let changelog = read(
        deb["changelog"]
            .as_str()
            .expect("a changelog for changelog.Debian"),
    );
    let version = manifest["package"]["version"].as_str().unwrap();
    assert!(
        changelog.starts_with(&format!("portlocker ({version}) ")),
        "the changelog's first entry is not {version}:\n{changelog}"
    );
}
