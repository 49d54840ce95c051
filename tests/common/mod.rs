//! What every end-to-end test starts from: a temporary directory with a
//! config, a control file, and either a recording fake iptables or the
//! real one (inside a private network namespace).

#![allow(dead_code)]

pub mod backend;
pub mod connect;
pub mod https;
pub mod managers;
pub mod netns;
pub mod peer;
pub mod probe;
pub mod signer;
pub mod stream;
pub mod watcher;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// Writes `text` as a program (mode 755) at `path`, through a child process.
///
/// A file this multithreaded test process had open for writing cannot be
/// run ("Text file busy") while a child another thread forked in that
/// instant still holds the descriptor, which on a loaded machine can last
/// long enough to fail a run; a program written by `install` was never open
/// here.
pub fn write_program(path: &Path, text: &str) {
    let staged = tempfile::NamedTempFile::new().unwrap();
    fs::write(staged.path(), text).unwrap();
    install_program(staged.path(), path);
}

/// Copies the program at `from` to `path` (mode 755), as `write_program`
/// writes one.
pub fn install_program(from: &Path, path: &Path) {
    let status = Command::new("/usr/bin/install")
        .args(["-m", "755"])
        .arg(from)
        .arg(path)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "install {} {}",
        from.display(),
        path.display()
    );
}

/// The services every test config declares.
pub const SERVICES: &str = "ssh = 22\nweb = [80, \"443/tcp\"]\nmosh = \"60000-61000/udp\"\n";

pub struct TestEnv {
    pub dir: TempDir,
    /// The iptables binaries the config names.
    pub iptables: PathBuf,
    pub ip6tables: PathBuf,
    /// Lines the config's `[firewall]` section starts with (the backend).
    pub backend: String,
}

impl TestEnv {
    /// An environment whose config points at a recording fake iptables.
    pub fn with_fake_iptables() -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let fake = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-iptables");
        for name in [
            "iptables",
            "ip6tables",
            "iptables-restore",
            "ip6tables-restore",
        ] {
            install_program(&fake, &bin.join(name));
        }
        let env = TestEnv {
            iptables: bin.join("iptables"),
            ip6tables: bin.join("ip6tables"),
            // None there: the iptables backend's look for leftovers in
            // nftables must never reach the host's real nft.
            backend: format!("nft = {:?}\n", bin.join("nft")),
            dir,
        };
        env.write_default_config();
        env
    }

    /// An environment whose config points at the system's real iptables.
    pub fn with_real_iptables() -> TestEnv {
        let env = TestEnv {
            dir: tempfile::tempdir().unwrap(),
            iptables: "/sbin/iptables".into(),
            ip6tables: "/sbin/ip6tables".into(),
            backend: String::new(),
        };
        env.write_default_config();
        env
    }

    /// An environment whose config drives the system's real nft
    /// (`backend = "nftables"`).
    pub fn with_real_nftables() -> TestEnv {
        let env = TestEnv {
            backend: format!("backend = \"nftables\"\nnft = {:?}\n", backend::NFT),
            ..TestEnv::with_real_iptables()
        };
        env.write_default_config();
        env
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config with the control file in the test directory as its source,
    /// with `fetch` and `firewall` lines added to those sections.
    pub fn config_text(&self, source: &str, fetch: &str, firewall: &str) -> String {
        format!(
            "source = {source:?}\nlog_file = {log:?}\nstatus_file = {status:?}\nstate_dir = {state:?}\n\
             [fetch]\n{fetch}\n\
             [firewall]\n{backend}iptables = {iptables:?}\nip6tables = {ip6tables:?}\n{firewall}\n\
             [services]\n{SERVICES}",
            log = self.path("portlocker.log"),
            status = self.path("status.html"),
            state = self.path("state"),
            iptables = self.iptables,
            ip6tables = self.ip6tables,
            backend = self.backend,
        )
    }

    /// A config with the test directory's control file as its source.
    pub fn local_config(&self, fetch: &str, firewall: &str) -> String {
        let source = self.path("control.txt");
        self.config_text(source.to_str().unwrap(), fetch, firewall)
    }

    pub fn write_default_config(&self) {
        self.write_config(&self.local_config("", ""));
    }

    pub fn write_config(&self, text: &str) {
        fs::write(self.path("config.toml"), text).unwrap();
    }

    /// A reboot for the fake iptables: both tables empty again.
    pub fn reboot_fake(&self) {
        for binary in ["iptables", "ip6tables"] {
            fs::remove_file(self.path(&format!("state-{binary}"))).unwrap();
        }
    }

    pub fn control(&self, text: &str) {
        fs::write(self.path("control.txt"), text).unwrap();
    }

    /// The portlocker binary with this environment's config, and no
    /// PORTLOCKER_* variables from the caller.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_portlocker"));
        for (key, _) in std::env::vars() {
            if key.starts_with("PORTLOCKER_") {
                command.env_remove(key);
            }
        }
        command.arg("-c").arg(self.path("config.toml"));
        command
    }

    /// Runs portlocker with `args`, stdin closed.
    pub fn run(&self, args: &[&str]) -> Run {
        let output = self
            .command()
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        Run::from(output)
    }

    /// Writes `config2.toml`: a second config in this one's firewall place
    /// (a test config of the owner's, say) with `services`, and a state_dir,
    /// control file (`control2.txt`, holding `control`), log and page of its own.
    pub fn write_second_config(&self, services: &str, control: &str) {
        let quoted = |name: &str| format!("{:?}", self.path(name));
        let second = fs::read_to_string(self.path("config.toml"))
            .unwrap()
            .replace(&quoted("state"), &quoted("state2"))
            .replace(&quoted("control.txt"), &quoted("control2.txt"))
            .replace(&quoted("portlocker.log"), &quoted("second.log"))
            .replace(&quoted("status.html"), &quoted("second.html"))
            .replace(SERVICES, services);
        fs::write(self.path("config2.toml"), second).unwrap();
        fs::write(self.path("control2.txt"), control).unwrap();
    }

    /// A run of the second config (`write_second_config`), stdin closed.
    pub fn run_second(&self) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_portlocker"))
            .arg("-c")
            .arg(self.path("config2.toml"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        Run::from(output)
    }

    /// Every iptables call the fake saw, as `NAME ARGS…`.
    pub fn calls(&self) -> Vec<String> {
        read_lines(&self.path("calls.log"))
    }

    /// The fake's calls that change the firewall: single changes, and
    /// transactions (a restore tool's call).
    pub fn changing_calls(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|call| {
                call.split(' ')
                    .next()
                    .is_some_and(|name| name.ends_with("-restore"))
                    || [" -N ", " -I ", " -A ", " -D "]
                        .iter()
                        .any(|op| call.contains(op))
            })
            .collect()
    }

    /// Every input the fake restore tools were fed, in order.
    pub fn restore_inputs(&self) -> String {
        fs::read_to_string(self.path("restore.log")).unwrap_or_default()
    }

    /// Takes the restore tools away, so changes go rule by rule.
    pub fn without_restore(&self) {
        for name in ["iptables-restore", "ip6tables-restore"] {
            fs::remove_file(self.dir.path().join("bin").join(name)).unwrap();
        }
    }

    pub fn forget_calls(&self) {
        let _ = fs::remove_file(self.path("calls.log"));
    }

    /// Makes every changing call of the fake fail with `code`.
    pub fn fail_changes(&self, code: i32) {
        fs::write(self.path("fail-changes"), code.to_string()).unwrap();
    }

    /// Makes the fake refuse every rule that holds `text`: a restore's line
    /// of input (naming its number, as iptables-restore does), or an -A or
    /// -I; an empty `text` refuses nothing.
    pub fn refuse(&self, text: &str) {
        fs::write(self.path("refuse"), text).unwrap();
    }

    /// Makes every call of the fake take a little while.
    pub fn slow_down(&self) {
        fs::write(self.path("slow"), "").unwrap();
    }

    /// The fake's table for `binary`, as `iptables -S` would print it.
    pub fn fake_table(&self, binary: &str) -> String {
        fs::read_to_string(self.path(&format!("state-{binary}"))).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.path("portlocker.log")).unwrap_or_default()
    }

    /// Changes the kept state through portlocker's own reading and writing
    /// of it (its checksum stays right): how tests move time without sleeping.
    pub fn edit_state(&self, edit: impl FnOnce(&mut portlocker::intake::state::State)) {
        use portlocker::intake::state::{Loaded, State};
        let Loaded::Kept(mut state) = State::load(&self.path("state")) else {
            panic!("no whole state to edit");
        };
        edit(&mut state);
        state.save(&self.path("state"), 65536, true).unwrap();
    }

    /// Makes the kept state say that portlocker's rules were left in an
    /// earlier boot, as after a real reboot (a test's "reboot" flushes the
    /// firewall in the same boot, which a run would take for a wipe).
    pub fn as_if_rebooted(&self) {
        self.edit_state(|state| {
            if let Some(in_place) = &mut state.in_place {
                in_place.boot = Some("an earlier boot".into());
            }
        });
    }

    /// The `[notify]` section of a config whose command keeps each notice it
    /// is told — the environment it was started with (`N.env`, as the kernel
    /// handed it over) and its stdin (`N.txt`), numbered from 0 in
    /// `notices/` — and exits with `code`.
    pub fn recording_command(&self, code: i32) -> String {
        let script = self.path("tell-owner");
        let dir = self.path("notices");
        std::fs::create_dir_all(&dir).unwrap();
        write_program(
            &script,
            &format!(
                "#!/bin/sh\nset -eu\nn=$(ls \"$1\" | grep -c txt || true)\n\
                 tr '\\0' '\\n' </proc/$$/environ >\"$1/$n.env\"\ncat >\"$1/$n.txt\"\nexit {code}\n"
            ),
        );
        format!(
            "[notify]\ncommand = [{:?}, {:?}]\n",
            script.display().to_string(),
            dir.display().to_string()
        )
    }

    /// The notices told so far: (environment lines, text), oldest first.
    pub fn notices(&self) -> Vec<(Vec<String>, String)> {
        let dir = self.path("notices");
        (0..)
            .map_while(|n| {
                let text = std::fs::read_to_string(dir.join(format!("{n}.txt"))).ok()?;
                let vars = std::fs::read_to_string(dir.join(format!("{n}.env"))).unwrap();
                Some((vars.lines().map(String::from).collect(), text))
            })
            .collect()
    }

    pub fn status_page(&self) -> Option<String> {
        fs::read_to_string(self.path("status.html")).ok()
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// True when this process is really root, so ownership checks can be tried;
/// otherwise says why the test skips (a failure when CI requires it).
pub fn require_root(test: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    if fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0) {
        return true;
    }
    if std::env::var("PORTLOCKER_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("{test} needs root and PORTLOCKER_REQUIRE_NETNS=1 forbids skipping it");
    }
    skipped(test, "not root");
    false
}

/// Says on the real stderr (libtest captures `eprintln!`, which would hide
/// it from a passing test) that `test` did not run, and why.
pub fn skipped(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// How a portlocker run ended.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(self.code, Some(code), "unexpected exit: {self:#?}");
        self
    }

    /// Asserts that stderr says `needle`.
    #[track_caller]
    pub fn says(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }
}
