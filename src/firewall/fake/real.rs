//! The fake held to the real tools, so it cannot drift from them: every
//! command portlocker's backends run in a series of plans (and a few made
//! by hand) goes both to the fake and to real iptables 1.8.9 or nft 1.0.6
//! in a private network namespace, and each must answer the other's
//! answer, byte for byte — listings, echoes, refusals and exit codes.
//! Without namespaces the tests skip visibly; PORTLOCKER_REQUIRE_NETNS=1
//! makes that a failure.

use std::io;
use std::path::Path;

use super::FakeFirewall;
use crate::config::Config;
use crate::firewall::{self, plan};
use crate::sys::runner::{Command, Completion, Runner, SystemRunner};

const INSIDE: &str = "PORTLOCKER_TEST_INSIDE_NETNS";
const REQUIRE: &str = "PORTLOCKER_REQUIRE_NETNS";

/// True when the caller runs inside its own network namespace and should
/// do its work; otherwise runs this test binary again for `test` alone,
/// under `unshare --net --map-root-user`, and returns false (or skips,
/// saying why, where that cannot be done).
fn enter(test: &str, tools: &[&str]) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    let path = format!("firewall::fake::real::tests::{test}");
    if let Err(reason) = can_isolate(tools) {
        if std::env::var(REQUIRE).as_deref() == Ok("1") {
            panic!("{path} cannot run and {REQUIRE}=1 forbids skipping it: {reason}");
        }
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {path}: {reason} (set {REQUIRE}=1 to make this a failure)"
        );
        return false;
    }
    let output = std::process::Command::new("unshare")
        .args(["--net", "--map-root-user", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([path.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("spawn unshare");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{path} failed inside its network namespace:\n{stdout}\n{stderr}"
    );
    false
}

fn can_isolate(tools: &[&str]) -> Result<(), String> {
    if let Some(missing) = tools.iter().find(|tool| !Path::new(tool).exists()) {
        return Err(format!("{missing} is missing"));
    }
    let probe = std::process::Command::new("unshare")
        .args(["--net", "--map-root-user", "--", tools[0], "--version"])
        .output()
        .map_err(|error| format!("cannot run unshare: {error}"))?;
    match probe.status.success() {
        true => Ok(()),
        false => Err(format!(
            "no private network namespace here: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        )),
    }
}

/// Hands every command to the fake and to the real tool, keeps what the
/// real one answered, and notes every way the fake's answer differs.
struct Both {
    fake: FakeFirewall,
    real: SystemRunner,
    differences: Vec<String>,
    commands: usize,
}

impl Both {
    fn new() -> Both {
        Both {
            fake: FakeFirewall::default(),
            real: SystemRunner::with_limit(std::time::Duration::from_secs(20)),
            differences: Vec::new(),
            commands: 0,
        }
    }

    /// Runs a command of `program` (a real path) with `args` and `stdin`.
    fn run_args(&mut self, program: &str, args: &[&str], stdin: Option<&str>) -> Completion {
        let command = Command {
            program: program.into(),
            args: args.iter().map(|arg| arg.to_string()).collect(),
            stdin: stdin.map(str::to_owned),
        };
        self.run(&command).expect("the real tool runs")
    }

    fn check(&self) {
        assert!(
            self.differences.is_empty(),
            "the fake answers otherwise than the real tool in {} of {} commands:\n{}",
            self.differences.len(),
            self.commands,
            self.differences.join("\n\n")
        );
        assert!(self.commands > 20, "only {} commands", self.commands);
    }
}

impl Runner for Both {
    fn run(&mut self, command: &Command) -> io::Result<Completion> {
        self.commands += 1;
        let faked = self.fake.run(command);
        let real = self.real.run(command);
        let same = match (&faked, &real) {
            (Ok(faked), Ok(real)) => faked == real,
            (Err(faked), Err(real)) => faked.kind() == real.kind(),
            _ => false,
        };
        if !same {
            self.differences.push(format!(
                "`{command}`{}\nthe fake: {faked:?}\nthe real: {real:?}",
                match &command.stdin {
                    Some(input) => format!(" with\n{input}"),
                    None => String::new(),
                }
            ));
        }
        real
    }
}

const SERVICES: &str = "[services]\nssh = 22\nmosh = \"60000-61000/udp\"\nvpn = \"1194/udp\"\n\
                        web = [80, \"443/tcp\"]\ndns = [53, \"53/udp\"]\n";

/// What a series of runs asks, one control file each: closes, sources of
/// both families, deadlines (one a leap second, which iptables cannot
/// take), a file that names nothing.
const FILES: &[&str] = &[
    "close ssh\nclose mosh\nclose vpn\nclose web\nclose dns\n",
    "open ssh from 198.51.100.0/24\nopen ssh from 2001:db8::/48\nopen ssh from 203.0.113.7\nclose mosh\nopen vpn\n",
    "open ssh until 2026-12-01T18:00:00Z\nopen web from 198.51.100.0/24 until 2026-12-02T08:30:00Z\nclose dns\n",
    "open ssh until 2026-12-08T00:00:60Z\nclose vpn\n",
    "open ssh from 2001:db8:1::7 until 2026-12-01T18:00:00Z\nclose web\nopen dns\n",
    "close ssh\nclose mosh\nclose vpn\nclose web\nclose dns\n",
    "",
];

/// One run's firewall work, as `run::reconcile` does it: read, plan, apply,
/// read back.
fn reconcile(config: &Config, both: &mut Both, text: &str) {
    let wants = crate::intake::intent::wants_of(config, text);
    let mut backend = firewall::backend_for(config, &mut *both);
    let (mut holdings, _) = backend.observe(true);
    let steps = plan::plan(config, &wants, &holdings, &plan::SourcesSeen::new());
    let applied = backend.apply(&steps, &mut holdings);
    if applied.confirmed.is_none() {
        backend.observe(true);
    }
}

/// A plan made without reading the firewall (as when it cannot be read),
/// carried out blind.
fn blind(config: &Config, both: &mut Both, text: &str) {
    let wants = crate::intake::intent::wants_of(config, text);
    let holdings = crate::firewall::model::Holdings::unknown(config);
    let steps = plan::plan(config, &wants, &holdings, &plan::SourcesSeen::new());
    let mut backend = firewall::backend_for(config, &mut *both);
    let mut unread = holdings.clone();
    backend.apply(&steps, &mut unread);
}

mod tests {
    use super::*;

    const IPTABLES: [&str; 4] = [
        "/usr/sbin/iptables",
        "/usr/sbin/ip6tables",
        "/usr/sbin/iptables-restore",
        "/usr/sbin/ip6tables-restore",
    ];
    const NFT: &str = "/usr/sbin/nft";

    fn iptables_config(extra: &str) -> Config {
        Config::parse(&format!(
            "source = \"-\"\n[firewall]\niptables = {:?}\nip6tables = {:?}\n{extra}\n{SERVICES}",
            IPTABLES[0], IPTABLES[1]
        ))
        .unwrap()
    }

    /// Restore transactions (and rule by rule where the restore tool is
    /// missing, and with `chain = "INPUT"`), each run planned on what the
    /// last one left; refusals by hand; and a reset.
    #[test]
    fn the_fake_iptables_answers_as_real_iptables_does() {
        if !enter("the_fake_iptables_answers_as_real_iptables_does", &IPTABLES) {
            return;
        }
        let mut both = Both::new();
        let configs = [
            iptables_config(""),
            iptables_config("keep_established = false"),
            iptables_config(
                "iptables_restore = \"/nonexistent/iptables-restore\"\n\
                 ip6tables_restore = \"/nonexistent/ip6tables-restore\"",
            ),
            iptables_config("chain = \"INPUT\""),
        ];
        for config in &configs {
            for text in FILES {
                reconcile(config, &mut both, text);
            }
            blind(config, &mut both, FILES[0]);
            reconcile(config, &mut both, FILES[1]);
            firewall::backend_for(config, &mut both).reset();
        }
        // What other tools and owners do, and what iptables refuses.
        let restore = IPTABLES[2];
        for input in [
            "*filter\n:P - [0:0]\n-A P -s 198.51.100.7/24 -p tcp -m tcp --dport 22 -j RETURN\n-I INPUT 1 -j P\nCOMMIT\n",
            "*filter\n:P - [0:0]\n-A P -p udp -m udp --dport 53 -m conntrack --ctstate NEW,UNTRACKED -m comment --comment \"a \\\"b\\\"\" -j DROP\nCOMMIT\n",
            "*filter\n-D INPUT -p tcp -m tcp --dport 9 -j DROP\nCOMMIT\n",
            "*filter\n-A NOPE -j DROP\nCOMMIT\n",
            "*filter\n-A INPUT -j NOPE\n-A INPUT -j DROP\nCOMMIT\n",
            "*filter\n:P - [0:0]\n-X P\nCOMMIT\n",
            "*filter\n-X NOPE\nCOMMIT\n",
            "*filter\n-I INPUT 9 -j DROP\nCOMMIT\n",
            "*filter\n-N P\nCOMMIT\n",
            "*filter\n-A INPUT -s 300.1.1.1 -j DROP\nCOMMIT\n",
            "*filter\n-A INPUT -p tcp -m tcp --dport 99999 -j DROP\nCOMMIT\n",
            "*filter\n-A INPUT -p tcp -m tcp --dport 22 -m time --datestart 2039-01-01T00:00:00 -j DROP\nCOMMIT\n",
            "*filter\n-A INPUT -p tcp -m tcp --dport 22 -m time --datestop 2026-02-30T23:59:59 -j DROP\nCOMMIT\n",
            "*filter\n-A INPUT -j DROP\n",
        ] {
            both.run_args(restore, &["--noflush", "-w", "10"], Some(input));
            for binary in &IPTABLES[..2] {
                both.run_args(binary, &["-w", "10", "-S"], None);
            }
        }
        for args in [
            &["-w", "10", "-S", "NOPE"][..],
            &["-w", "10", "-C", "INPUT", "-j", "DROP"],
            &["-w", "10", "-N", "P"],
            &["-w", "10", "-X", "P"],
            &["-w", "10", "-A", "INPUT", "-j", "NOPE"],
            &["-w", "10", "-I", "INPUT", "9", "-j", "DROP"],
            &["-w", "10", "-D", "INPUT", "1"],
            &["-w", "10", "-A", "INPUT", "-s", "2001:db8::1", "-j", "DROP"],
        ] {
            both.run_args(IPTABLES[0], args, None);
            both.run_args(IPTABLES[0], &["-w", "10", "-S"], None);
        }
        both.check();
    }

    fn nft_config(extra: &str) -> Config {
        Config::parse(&format!(
            "source = \"-\"\n[firewall]\nbackend = \"nftables\"\nnft = {NFT:?}\n{extra}\n{SERVICES}"
        ))
        .unwrap()
    }

    /// Whole-table transactions echoed, listings, the closes made blind, a
    /// reset; what other tools add, in portlocker's table and beside it,
    /// and what nft refuses.
    #[test]
    fn the_fake_nft_lists_and_echoes_as_real_nft_does() {
        if !enter("the_fake_nft_lists_and_echoes_as_real_nft_does", &[NFT]) {
            return;
        }
        let mut both = Both::new();
        let configs = [nft_config(""), nft_config("keep_established = false")];
        let listings: [&[&str]; 4] = [
            &["-j", "list", "ruleset"],
            &["-j", "list", "tables"],
            &["-j", "list", "chains"],
            &["-j", "list", "table", "inet", "portlocker"],
        ];
        for config in &configs {
            for text in FILES {
                reconcile(config, &mut both, text);
                both.run_args(NFT, listings[0], None);
            }
            blind(config, &mut both, FILES[0]);
            blind(config, &mut both, FILES[5]);
            reconcile(config, &mut both, FILES[1]);
            firewall::backend_for(config, &mut both).reset();
        }
        for script in [
            // Another tool's table before portlocker's and one after it.
            "table inet early {\n  chain input {\n    type filter hook input priority -100; policy accept;\n    \
             tcp dport 22 accept\n  }\n}\n",
            "table ip late {\n  chain input {\n    type filter hook input priority filter + 10; policy drop;\n    \
             tcp dport { 443, 80 } counter accept\n    tcp dport { 22 } accept\n    udp dport 1194 ct state new,untracked accept\n    \
             meta l4proto tcp tcp dport 8080 accept\n  }\n}\n",
            "table ip6 v6 {\n  chain c {\n    ip6 saddr 2001:DB8::7/64 tcp dport 22-22 ct state { untracked, new } return\n    \
             ip6 saddr { 2001:db8::1, 2001:db8:1::/48 } accept\n  }\n  chain input {\n    \
             type filter hook input priority 5; policy accept;\n    jump c\n  }\n}\n",
            // Drift in portlocker's own table.
            "table inet portlocker\ninsert rule inet portlocker input tcp dport 22 accept\n",
            "add table inet portlocker\nadd chain inet portlocker input { type filter hook input priority -10; policy accept; }\n\
             add rule inet portlocker input meta nfproto ipv4 tcp dport 22 meta time >= \"2026-12-08 00:00:60\" drop\n",
            "add rule inet portlocker input meta nfproto ipv4 tcp dport 23 meta time >= \"1969-12-08 00:00:00\" drop\n",
            // What nft refuses. (Not a table that does not exist: nft then
            // suggests a table of a similar name, which the fake does not.)
            "add rule inet portlocker nope tcp dport 22 drop\n",
            "table inet portlocker {\n  chain input {\n    tcp dport 22 drop\n    tcp dport 23 jump nope\n  }\n}\n",
        ] {
            both.run_args(NFT, &["-e", "-j", "-f", "-"], Some(script));
            for listing in listings {
                both.run_args(NFT, listing, None);
            }
        }
        // portlocker reads its table with the drift, and removes it.
        reconcile(&configs[0], &mut both, FILES[1]);
        for listing in listings {
            both.run_args(NFT, listing, None);
        }
        firewall::backend_for(&configs[0], &mut both).reset();
        both.run_args(NFT, listings[3], None);
        both.check();
    }
}
