//! Real firewall managers — ufw, fail2ban, firewalld — run inside a test's
//! network and mount namespaces, from their Debian packages unpacked
//! (`dpkg -x`, no package script ever run) into `target/managers/root` or
//! `$PORTLOCKER_MANAGERS`; their configuration and state live in a
//! directory on a private tmpfs, so nothing of the host's is read or
//! changed. `.ci/run` unpacks them; without them the tests that need them
//! skip visibly, unless PORTLOCKER_REQUIRE_MANAGERS=1 (set by CI).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const REQUIRE: &str = "PORTLOCKER_REQUIRE_MANAGERS";
const PYTHON: &str = "/usr/bin/python3";

/// Where the unpacked packages are.
pub struct Managers {
    root: PathBuf,
}

impl Managers {
    /// The unpacked packages holding `needs` (paths under the root), or
    /// why not.
    pub fn find(needs: &[&str]) -> Result<Managers, String> {
        let root = std::env::var_os("PORTLOCKER_MANAGERS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/managers/root"));
        if !Path::new(PYTHON).exists() {
            return Err(format!("{PYTHON} is missing (apt-get install python3)"));
        }
        for need in needs {
            if !root.join(need).exists() {
                return Err(format!(
                    "{} is missing: unpack the managers' packages there as .ci/run does \
                     (apt-get download ufw fail2ban firewalld python3-firewall python3-nftables, \
                     then dpkg -x each), or set PORTLOCKER_MANAGERS",
                    root.join(need).display()
                ));
            }
        }
        Ok(Managers { root })
    }

    /// Says why a test cannot run its managers; a failure where CI requires them.
    pub fn skip(test: &str, reason: &str) {
        if std::env::var(REQUIRE).as_deref() == Ok("1") {
            panic!("{test} cannot run and {REQUIRE}=1 forbids skipping it: {reason}");
        }
        super::skipped(
            test,
            &format!("{reason} (set {REQUIRE}=1 to make this a failure)"),
        );
    }

    fn python(&self, script: &str) -> Command {
        let mut command = Command::new(PYTHON);
        command.arg(self.root.join(script)).env(
            "PYTHONPATH",
            self.root.join("usr/lib/python3/dist-packages"),
        );
        command
    }

    /// ufw, its files under `work` (on a private tmpfs): enabled with its
    /// default policy (deny incoming) before this returns.
    pub fn ufw(&self, work: &Path) -> Ufw<'_> {
        let (root, data) = (work.join("ufw-root"), work.join("ufw-data"));
        for dir in ["lib/ufw", "usr/share/ufw", "etc/ufw"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        copy_tree(&self.root.join("lib/ufw"), &root.join("lib/ufw"));
        copy_tree(
            &self.root.join("usr/share/ufw"),
            &root.join("usr/share/ufw"),
        );
        let conf = self.root.join("usr/share/ufw/ufw.conf");
        fs::copy(&conf, root.join("etc/ufw/ufw.conf")).unwrap();
        for dir in ["etc/ufw/applications.d", "etc/default", "lib/ufw"] {
            fs::create_dir_all(data.join(dir)).unwrap();
        }
        copy_tree(
            &self.root.join("usr/share/ufw/iptables"),
            &data.join("etc/ufw"),
        );
        fs::copy(&conf, data.join("etc/ufw/ufw.conf")).unwrap();
        // No sysctl of the host's is ever set.
        fs::write(data.join("etc/ufw/sysctl.conf"), "").unwrap();
        let defaults = fs::read_to_string(self.root.join("etc/default/ufw")).unwrap();
        let sysctl = format!("IPT_SYSCTL={}", data.join("etc/ufw/sysctl.conf").display());
        let defaults: Vec<String> = defaults
            .lines()
            .map(|line| {
                if line.starts_with("IPT_SYSCTL=") {
                    sysctl.clone()
                } else {
                    line.to_owned()
                }
            })
            .collect();
        fs::write(data.join("etc/default/ufw"), defaults.join("\n") + "\n").unwrap();
        let ufw = Ufw {
            managers: self,
            root,
            data,
        };
        ufw.run(&["--force", "enable"]);
        ufw
    }

    /// fail2ban with one jail, `sshd` on port 22, acting through
    /// `banaction`; its files under `work`. Running once this returns.
    pub fn fail2ban(&self, work: &Path, banaction: &str) -> Fail2ban<'_> {
        let conf = work.join("fail2ban");
        copy_tree(&self.root.join("etc/fail2ban"), &conf);
        for entry in fs::read_dir(conf.join("jail.d")).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let socket = work.join("fail2ban.sock");
        let log = work.join("auth.log");
        fs::write(&log, "").unwrap();
        fs::write(
            conf.join("fail2ban.local"),
            format!(
                "[Definition]\nlogtarget = {}\nsocket = {}\npidfile = {}\ndbfile = :memory:\n",
                work.join("fail2ban.log").display(),
                socket.display(),
                work.join("fail2ban.pid").display()
            ),
        )
        .unwrap();
        fs::write(
            conf.join("jail.local"),
            format!(
                "[DEFAULT]\nbanaction = {banaction}\nbanaction_allports = {banaction}\nbackend = polling\n\
                 [sshd]\nenabled = true\nport = ssh\nlogpath = {}\n",
                log.display()
            ),
        )
        .unwrap();
        let fail2ban = Fail2ban {
            managers: self,
            conf,
            socket,
        };
        let started = self
            .python("usr/bin/fail2ban-server")
            .args([
                "-c",
                &fail2ban.conf.to_string_lossy(),
                "-s",
                &fail2ban.socket.to_string_lossy(),
            ])
            .args([
                "-p",
                &work.join("fail2ban.pid").to_string_lossy(),
                "-b",
                "-x",
            ])
            .output()
            .unwrap();
        assert!(started.status.success(), "fail2ban-server: {started:?}");
        until("fail2ban answers", || {
            fail2ban.client(&["ping"]).status.success()
        });
        fail2ban
    }

    /// firewalld on `backend` (`nftables` or `iptables`) with a private
    /// system bus, its configuration under `work`: the public zone with
    /// `zone` as its XML. Its rules are in place once this returns. Needs
    /// /run on a private tmpfs (its bus socket lives there), dbus-daemon,
    /// and python3-dbus and python3-gi.
    pub fn firewalld(&self, work: &Path, backend: &str, zone: &str) -> Firewalld {
        let config = work.join("firewalld");
        copy_tree(&self.root.join("etc/firewalld"), &config);
        let conf = fs::read_to_string(config.join("firewalld.conf")).unwrap();
        let conf: Vec<String> = conf
            .lines()
            .map(|line| match line.starts_with("FirewallBackend=") {
                true => format!("FirewallBackend={backend}"),
                false => line.to_owned(),
            })
            .collect();
        fs::write(config.join("firewalld.conf"), conf.join("\n") + "\n").unwrap();
        fs::write(config.join("zones/public.xml"), zone).unwrap();
        let bus = work.join("bus.conf");
        fs::write(
            &bus,
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
             \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig><type>system</type>\
             <listen>unix:path=/run/dbus/system_bus_socket</listen><auth>EXTERNAL</auth>\
             <policy context=\"default\"><allow user=\"*\"/><allow own=\"*\"/><allow send_type=\"method_call\"/>\
             <allow send_destination=\"*\"/><allow receive_sender=\"*\"/></policy></busconfig>\n",
        )
        .unwrap();
        fs::create_dir_all("/run/dbus").unwrap();
        // Held from the first child on: a failure below still ends them.
        let mut firewalld = Firewalld {
            children: Vec::new(),
        };
        let bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", bus.display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon");
        firewalld.children.push(bus);
        until("the private bus", || {
            Path::new("/run/dbus/system_bus_socket").exists()
        });
        let daemon = self
            .python("usr/sbin/firewalld")
            .args(["--nofork", "--nopid", "--log-target", "file"])
            .arg("--log-file")
            .arg(work.join("firewalld.log"))
            .arg("--default-config")
            .arg(self.root.join("usr/lib/firewalld"))
            .arg("--system-config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("firewalld");
        firewalld.children.insert(0, daemon);
        until("firewalld's rules", || listing_shows_firewalld(backend));
        firewalld
    }
}

/// Whether the ruleset shows firewalld's rules for `backend` in place.
fn listing_shows_firewalld(backend: &str) -> bool {
    let (program, args, sign): (&str, &[&str], &str) = match backend {
        "iptables" => ("/usr/sbin/iptables", &["-w", "5", "-S"], "IN_public_allow"),
        _ => (
            "/usr/sbin/nft",
            &[
                "list",
                "chain",
                "inet",
                "firewalld",
                "filter_IN_public_allow",
            ],
            "accept",
        ),
    };
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(sign))
}

/// Everything the firewall holds, as the tools list it.
fn firewall_text() -> String {
    let mut text = String::new();
    for argv in [
        &["/usr/sbin/iptables-save"][..],
        &["/usr/sbin/ip6tables-save"],
        &["/usr/sbin/nft", "list", "ruleset"],
    ] {
        let output = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
        text.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    text
}

/// Waits for `ready`, up to ten seconds.
pub fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not come within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

pub struct Ufw<'m> {
    managers: &'m Managers,
    root: PathBuf,
    data: PathBuf,
}

impl Ufw<'_> {
    /// `ufw ARGS`, asserting success.
    pub fn run(&self, args: &[&str]) -> Output {
        let output = self
            .managers
            .python("usr/sbin/ufw")
            .arg(format!("--rootdir={}", self.root.display()))
            .arg(format!("--datadir={}", self.data.display()))
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "ufw {args:?}: {output:?}");
        output
    }
}

pub struct Fail2ban<'m> {
    managers: &'m Managers,
    conf: PathBuf,
    socket: PathBuf,
}

impl Fail2ban<'_> {
    fn client(&self, args: &[&str]) -> Output {
        self.managers
            .python("usr/bin/fail2ban-client")
            .args([
                "-c",
                &self.conf.to_string_lossy(),
                "-s",
                &self.socket.to_string_lossy(),
            ])
            .args(args)
            .output()
            .unwrap()
    }

    /// Bans `addresses` in jail sshd; returns once fail2ban says it has.
    pub fn ban(&self, addresses: &[&str]) {
        let mut args = vec!["set", "sshd", "banip"];
        args.extend_from_slice(addresses);
        let done = self.client(&args);
        assert!(done.status.success(), "banip: {done:?}");
        until("the bans in the firewall", || {
            let shown = firewall_text();
            addresses.iter().all(|address| shown.contains(address))
        });
    }
}

impl Drop for Fail2ban<'_> {
    fn drop(&mut self) {
        let _ = self.client(&["stop"]);
    }
}

/// firewalld and its bus, ended in that order when dropped.
pub struct Firewalld {
    children: Vec<Child>,
}

impl Drop for Firewalld {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
