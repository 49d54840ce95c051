//! The real firewall: real iptables and ip6tables, or real nftables, in a
//! private network namespace, and real TCP connections to a listener on
//! port 22. Scenarios written with `on_both_backends!` run on both.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::TestEnv;
use common::backend::{self, Backend, IP6T, IPT};
use common::netns::{self, rules};

/// How long a connection attempt may take before a dropped SYN counts as
/// unreachable. A loopback connect that is not dropped completes at once.
const CONNECT_WAIT: Duration = Duration::from_millis(700);

/// Listens on 127.0.0.1:22 and [::1]:22 and echoes what each client sends.
fn ssh_listeners() -> [SocketAddr; 2] {
    let addresses: [SocketAddr; 2] = ["127.0.0.1:22".parse().unwrap(), "[::1]:22".parse().unwrap()];
    for address in addresses {
        let listener = TcpListener::bind(address).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || echo(stream));
            }
        });
    }
    addresses
}

fn echo(mut stream: TcpStream) {
    let mut buffer = [0u8; 64];
    while let Ok(n @ 1..) = stream.read(&mut buffer) {
        if stream.write_all(&buffer[..n]).is_err() {
            return;
        }
    }
}

/// Whether a new connection to `address` gets through.
fn reachable(address: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&address, CONNECT_WAIT) {
        Ok(_) => true,
        Err(error) if error.kind() == std::io::ErrorKind::TimedOut => false,
        Err(error) => panic!("connect to {address}: unexpected {error}"),
    }
}

/// Whether an open session still carries data both ways.
fn still_talks(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reply = [0u8; 5];
    stream.write_all(b"hello").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"hello"
}

on_both_backends! {
    fn closed_ssh_is_unreachable_over_ipv4_and_ipv6_and_open_is_reachable(backend: Backend) {
        let env = backend.env();
        let [v4, v6] = ssh_listeners();
        assert!(
            reachable(v4) && reachable(v6),
            "the listener must be reachable before any rule"
        );

        env.control("close ssh\n");
        env.run(&[]).expect(0);
        assert!(!reachable(v4), "IPv4 :22 reachable after close");
        assert!(!reachable(v6), "IPv6 :22 reachable after close");
        let status = env.run(&["status"]);
        assert!(
            status.stdout.lines().any(|l| l
                .split_whitespace()
                .eq(["ssh", "22/tcp", "closed", "closed"])),
            "{}",
            status.stdout
        );

        env.control("open ssh\n");
        env.run(&[]).expect(0);
        assert!(reachable(v4) && reachable(v6), "not reachable after open");
        for ipv6 in [false, true] {
            let ours = backend.ours(ipv6);
            assert!(ours.iter().all(|rule| !rule.contains("portlocker:ssh")), "{ours:?}");
        }
    }
}

on_both_backends! {
    /// Rules of others that accept :22 — in INPUT, and with nftables in a
    /// table of others too — cannot undo a close: a drop anywhere is final.
    fn a_close_wins_over_an_accept_already_in_input(backend: Backend) {
        let env = backend.env();
        let [v4, v6] = ssh_listeners();
        for binary in [IPT, IP6T] {
            netns::iptables(
                binary,
                &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
            );
        }
        if backend == Backend::Nftables {
            backend::nft_script(
                "table inet filter {\n  chain input {\n    type filter hook input priority -100; policy accept;\n    \
                 tcp dport 22 accept\n  }\n}\n",
            );
        }
        env.control("close ssh\n");
        env.run(&[]).expect(0);
        assert!(
            !reachable(v4) && !reachable(v6),
            "the owner's ACCEPT let a new connection through"
        );
    }
}

on_both_backends! {
    fn three_runs_leave_exactly_one_copy_of_each_rule(backend: Backend) {
        let env = backend.env();
        env.control("close ssh\nclose web\nclose mosh\n");
        env.run(&[]).expect(0);
        let after_first = backend.snapshot();
        env.run(&[]).expect(0);
        env.run(&[]).expect(0);
        assert_eq!(backend.snapshot(), after_first);
        for ipv6 in [false, true] {
            assert_eq!(backend.ways_in(ipv6), 1, "{after_first}");
            let ours = backend.ours(ipv6).join("\n");
            for tag in ["portlocker:ssh", "portlocker:mosh"] {
                assert_eq!(ours.matches(tag).count(), 1, "{tag} in {ours}");
            }
            assert_eq!(ours.matches("portlocker:web").count(), 2, "{ours}");
        }
        assert!(
            env.log().lines().last().unwrap().contains("no change"),
            "{}",
            env.log()
        );
        // Only the first run wrote: one transaction per family, or one for both.
        let transactions = match backend {
            Backend::Iptables => 2,
            Backend::Nftables => 1,
        };
        assert_eq!(env.log().matches("in one transaction").count(), transactions, "{}", env.log());
    }
}

on_both_backends! {
    fn a_rejected_file_leaves_the_firewall_exactly_as_it_was(backend: Backend) {
        let env = backend.env();
        env.control("close ssh\n");
        env.run(&[]).expect(0);
        let before = backend.snapshot();
        for bad in [
            "open ssh\nclose web\nopen vnp\n",
            "<html><body>open ssh</body></html>",
            "open ssh please\n",
        ] {
            env.control(bad);
            env.run(&[]).expect(1);
            assert_eq!(backend.snapshot(), before, "{bad:?} changed the firewall");
        }
    }
}

on_both_backends! {
    fn an_established_session_survives_a_close(backend: Backend) {
        let env = backend.env();
        let [v4, v6] = ssh_listeners();
        let mut sessions = [
            TcpStream::connect(v4).unwrap(),
            TcpStream::connect(v6).unwrap(),
        ];
        for session in &mut sessions {
            assert!(still_talks(session));
        }
        env.control("close ssh\n");
        env.run(&[]).expect(0);
        assert!(
            !reachable(v4) && !reachable(v6),
            "new connections must be dropped"
        );
        for session in &mut sessions {
            assert!(
                still_talks(session),
                "the open session was cut by the close"
            );
        }
    }
}

on_both_backends! {
    fn without_keep_established_a_close_cuts_open_sessions_too(backend: Backend) {
        let env = backend.env();
        env.write_config(&env.local_config("", "keep_established = false\nipv6 = false"));
        let [v4, _] = ssh_listeners();
        let mut session = TcpStream::connect(v4).unwrap();
        assert!(still_talks(&mut session));
        env.control("close ssh\n");
        env.run(&[]).expect(0);
        session.set_write_timeout(Some(CONNECT_WAIT)).unwrap();
        session.set_read_timeout(Some(CONNECT_WAIT)).unwrap();
        let _ = session.write_all(b"hello");
        let mut reply = [0u8; 5];
        assert!(
            session.read_exact(&mut reply).is_err(),
            "the rule for new connections only let an open session through"
        );
    }
}

on_both_backends! {
    /// What others remove or add is put right by the next run: everything
    /// of portlocker's gone, its chain emptied, a rule added by hand.
    fn drift_is_repaired_by_the_next_run(backend: Backend) {
        let env = backend.env();
        let [v4, v6] = ssh_listeners();
        env.control("close ssh\nclose mosh\nopen web from 127.0.0.2\n");
        env.run(&[]).expect(0);
        let right = backend.snapshot();
        for (what, drift) in [
            ("wiped", Backend::wipe as fn(Backend)),
            ("flushed", Backend::flush),
            ("meddled with", Backend::meddle),
        ] {
            drift(backend);
            assert_ne!(backend.snapshot(), right, "{what}: nothing changed");
            let repair = env.run(&[]);
            repair.expect(0);
            // An accept in portlocker's own table is told as what it was
            // (hostile tester 12, F10: removed without a word).
            if what == "meddled with" && backend == Backend::Nftables {
                repair.says("a rule portlocker did not make was in its own place");
            }
            assert_eq!(backend.snapshot(), right, "{what}: not repaired");
            assert!(!reachable(v4) && !reachable(v6), "{what}: ssh reachable after the repair");
        }
    }
}

/// Listens on `address` and accepts, so a connection that gets through completes.
fn listener(address: &str) -> SocketAddr {
    let listener = TcpListener::bind(address).unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || for _ in listener.incoming() {});
    address
}

on_both_backends! {
    /// Real connections for what the fake showed: a second config in the
    /// same place (a test config of the owner's) never reopens the first
    /// one's close, nor the first the second's; and a service renamed in the
    /// config stays closed through the edit and a wipe (a reboot).
    fn a_second_config_and_a_rename_never_reopen_a_close(backend: Backend) {
        let env = backend.env();
        let [v4, v6] = ssh_listeners();
        let admin = listener("127.0.0.1:2222");
        env.control("close ssh\n");
        env.run(&[]).expect(0);
        env.write_second_config("admin = 2222\n", "close admin\n");
        env.run_second().expect(0);
        assert!(!reachable(v4) && !reachable(v6), "the second config reopened ssh");
        assert!(!reachable(admin));
        env.run(&[]).expect(0);
        assert!(!reachable(admin), "the first config reopened admin");
        assert!(!reachable(v4) && !reachable(v6));

        // ssh renamed sshd; the control file still says `close ssh`.
        let text = std::fs::read_to_string(env.path("config.toml")).unwrap();
        env.write_config(&text.replace("ssh = 22\n", "sshd = 22\n"));
        env.run(&[]).expect(1);
        assert!(!reachable(v4) && !reachable(v6), "the rename opened ssh");
        backend.wipe();
        // The boot run fails as the last fetch did (the file names ssh), and closes.
        env.run(&["--offline"]).expect(1);
        assert!(!reachable(v4) && !reachable(v6), "the rename opened ssh after a reboot");
        env.run_second().expect(0);
        assert!(!reachable(admin) && !reachable(v4));
    }
}

on_both_backends! {
    fn reset_twice_leaves_the_firewall_as_it_was_before_portlocker(backend: Backend) {
        let env = backend.env();
        netns::iptables(
            IPT,
            &["-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "ACCEPT"],
        );
        let before = backend.snapshot();
        env.control("close ssh\nclose web\nclose mosh\n");
        env.run(&[]).expect(0);
        assert_ne!(backend.snapshot(), before);
        let first = env.run(&["reset"]);
        first.expect(0);
        assert!(
            first.stdout.contains("IPv4: remove rule portlocker:ssh"),
            "{}",
            first.stdout
        );
        assert_eq!(first.stdout.lines().last(), Some(backend.reset_ends()), "{}", first.stdout);
        assert_eq!(backend.snapshot(), before);
        let second = env.run(&["reset"]);
        second.expect(0);
        assert_eq!(
            second.stdout,
            "nothing to remove: the firewall holds nothing of portlocker's\n"
        );
        assert_eq!(backend.snapshot(), before);
    }
}

#[test]
fn input_chain_mode_puts_the_rules_straight_into_input() {
    if !netns::enter("input_chain_mode_puts_the_rules_straight_into_input") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    env.write_config(&env.local_config("", "chain = \"INPUT\""));
    let [v4, v6] = ssh_listeners();
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    assert!(!reachable(v4) && !reachable(v6));
    let table = rules("/sbin/iptables");
    assert!(table.contains("-A INPUT -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment \"portlocker:ssh\" -j DROP"), "{table}");
    assert!(!table.contains("PORTLOCKER"), "{table}");
    env.control("open ssh\n");
    env.run(&[]).expect(0);
    assert!(reachable(v4) && reachable(v6));
}

on_both_backends! {
    fn dry_run_as_root_prints_exactly_what_the_run_then_does(backend: Backend) {
        let env = backend.env();
        env.control("close ssh\nclose mosh\nopen web from 127.0.0.2\n");
        let before = backend.snapshot();
        let dry = env.run(&["--dry-run"]);
        dry.expect(0);
        assert_eq!(backend.snapshot(), before, "the dry run changed the firewall");
        assert!(
            !dry.stdout.contains("||"),
            "a dry run as root should be exact: {}",
            dry.stdout
        );
        env.run(&["-v"]).expect(0);
        match backend {
            Backend::Iptables => {
                let printed: Vec<&str> = dry.stdout.lines().filter(|l| !l.starts_with('#')).collect();
                // The log names each change as its command, then the transaction.
                let done: Vec<String> = env
                    .log()
                    .lines()
                    .filter(|l| !l.contains("in one transaction"))
                    .filter_map(|l| {
                        l.split_once(": /sbin/")
                            .map(|(_, cmd)| format!("/sbin/{cmd}"))
                    })
                    .collect();
                assert_eq!(printed, done);
                let transactions = env
                    .log()
                    .matches("in one transaction: /sbin/iptables-restore --noflush -w 10")
                    .count()
                    + env
                        .log()
                        .matches("in one transaction: /sbin/ip6tables-restore --noflush -w 10")
                        .count();
                assert_eq!(transactions, 2, "{}", env.log());
            }
            Backend::Nftables => {
                // Every line a comment: the changes, then the script.
                assert!(dry.stdout.lines().all(|l| l.starts_with('#')), "{}", dry.stdout);
                let (changes, script) = dry
                    .stdout
                    .split_once("# all of it in one transaction, as `/usr/sbin/nft -f -` reads it:\n")
                    .unwrap_or_else(|| panic!("no script in {}", dry.stdout));
                let said: Vec<&str> = changes
                    .lines()
                    .filter(|l| !l.starts_with("# the control file wants"))
                    .map(|l| l.trim_start_matches("# "))
                    .collect();
                let log = env.log();
                let logged: Vec<&str> = log
                    .lines()
                    .filter_map(|l| l.split_once("[INFO] ").map(|(_, said)| said))
                    .take_while(|l| !l.contains("in one transaction"))
                    .collect();
                assert_eq!(said, logged);
                assert_eq!(log.matches("in one transaction: /usr/sbin/nft -e -j -f -").count(), 1, "{log}");
                // The script, fed to nft by hand, makes the very table the run made.
                let made = backend::nft_table();
                backend.wipe();
                let script: String = script
                    .lines()
                    .map(|l| format!("{}\n", l.strip_prefix("#   ").unwrap()))
                    .collect();
                backend::nft_script(&script);
                assert_eq!(backend::nft_table(), made);
            }
        }
    }
}

/// The command `check` gives to remove a rule, as it printed it.
fn removal_in(stderr: &str) -> Vec<String> {
    let (_, rest) = stderr
        .split_once("remove it with `")
        .unwrap_or_else(|| panic!("no removal in: {stderr}"));
    let (command, _) = rest.split_once('`').unwrap();
    command.split(' ').map(String::from).collect()
}

/// The original 2014 script closed :22 with its own DROP in INPUT. Left
/// there after switching to portlocker, `open ssh` cannot open the port:
/// `check` names the rule, and its command makes the open work.
#[test]
fn check_names_a_leftover_drop_that_defeats_an_open() {
    if !netns::enter("check_names_a_leftover_drop_that_defeats_an_open") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    let [v4, v6] = ssh_listeners();
    netns::iptables(
        "/sbin/iptables",
        &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP"],
    );
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    let before = (rules("/sbin/iptables"), rules("/sbin/ip6tables"));
    let check = env.run(&["check"]);
    check.expect(1);
    check.says(
        "IPv4: `-A INPUT -p tcp -m tcp --dport 22 -j DROP` is not portlocker's and closes ssh 22/tcp \
         for everyone, so `open ssh` would leave it unreachable: remove it with \
         `/sbin/iptables -w 10 -D INPUT -p tcp -m tcp --dport 22 -j DROP`",
    );
    assert_eq!(check.stderr.lines().count(), 1, "{}", check.stderr);
    assert_eq!(
        (rules("/sbin/iptables"), rules("/sbin/ip6tables")),
        before,
        "check changed the firewall"
    );

    // What check foretold: the open leaves IPv4 :22 unreachable, and the run says so.
    env.control("open ssh\n");
    env.run(&[])
        .expect(1)
        .says("IPv4: ssh 22/tcp is closed, but the control file opens it");
    assert!(reachable(v6) && !reachable(v4));
    let command = removal_in(&check.stderr);
    let args: Vec<&str> = command[1..].iter().map(String::as_str).collect();
    netns::iptables(&command[0], &args);
    assert!(reachable(v4), "the command check gave did not open :22");
    env.run(&["check"]).expect(0);
    env.run(&[]).expect(0);
}

/// With `chain = "INPUT"` portlocker's DROPs go after what INPUT holds: an
/// ACCEPT of the owner's there defeats a close, and `check` says so first.
#[test]
fn check_names_a_rule_that_lets_a_port_through_before_portlockers_drop() {
    if !netns::enter("check_names_a_rule_that_lets_a_port_through_before_portlockers_drop") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    env.write_config(&env.local_config("", "chain = \"INPUT\"\nipv6 = false"));
    let [v4, _] = ssh_listeners();
    netns::iptables(
        "/sbin/iptables",
        &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    );
    let check = env.run(&["check"]);
    check.expect(1);
    check.says(
        "IPv4: `-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT` is not portlocker's and lets ssh 22/tcp \
         through before portlocker's DROP, so `close ssh` would not close it for everyone: remove it \
         with `/sbin/iptables -w 10 -D INPUT -p tcp -m tcp --dport 22 -j ACCEPT`, or set \
         firewall.chain = \"PORTLOCKER\" so portlocker's rules come first",
    );
    // What check foretold: the close fails, and :22 stays reachable.
    env.control("close ssh\n");
    env.run(&[])
        .expect(1)
        .says("ssh 22/tcp should be closed but is open");
    assert!(reachable(v4));
    let command = removal_in(&check.stderr);
    let args: Vec<&str> = command[1..].iter().map(String::as_str).collect();
    netns::iptables(&command[0], &args);
    env.run(&[]).expect(0);
    assert!(
        !reachable(v4),
        "the close does not hold once the ACCEPT is gone"
    );
    env.run(&["check"]).expect(0);
}

/// In a namespace of `test`'s own with nft there (None: skipped), ssh
/// closed by the iptables backend, with listeners on it.
fn ssh_closed_by_iptables_beside_nft(test: &str) -> Option<(TestEnv, [SocketAddr; 2])> {
    if !backend::enter(test, Backend::Nftables) {
        return None;
    }
    let env = TestEnv::with_real_iptables();
    let [v4, v6] = ssh_listeners();
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    assert!(!reachable(v4) && !reachable(v6));
    Some((env, [v4, v6]))
}

/// A rule nft put into iptables-nft's INPUT above portlocker's jump, one
/// iptables cannot print (`th dport 22 accept`), makes iptables refuse to
/// list INPUT whole. It must not keep a closed port open: the run reads
/// INPUT one rule at a time, puts its jump back on top, and says closed
/// only once a connection finds it closed (hostile tester 2, F23).
#[test]
fn a_rule_only_nft_can_print_above_the_jump_does_not_keep_a_close_open() {
    let test = "a_rule_only_nft_can_print_above_the_jump_does_not_keep_a_close_open";
    let Some((env, [v4, v6])) = ssh_closed_by_iptables_beside_nft(test) else {
        return;
    };
    for table in ["ip", "ip6"] {
        let rule = [
            "insert", "rule", table, "filter", "INPUT", "th", "dport", "22", "accept",
        ];
        backend::nft(&rule);
    }
    assert!(reachable(v4) && reachable(v6), "the nft rule opens nothing");
    let unlistable = std::process::Command::new(IPT)
        .args(["-w", "5", "-S", "INPUT"])
        .output();
    assert!(
        !unlistable.unwrap().status.success(),
        "iptables lists INPUT whole"
    );

    env.run(&[]).expect(0);
    assert!(
        !reachable(v4) && !reachable(v6),
        "ssh reachable past the repair"
    );
    let listing = || {
        let mut nft = std::process::Command::new(backend::NFT);
        let output = nft.args(["-a", "list", "ruleset"]).output().unwrap();
        String::from_utf8(output.stdout).unwrap()
    };
    let repaired = listing();
    env.run(&[]).expect(0);
    assert_eq!(
        listing(),
        repaired,
        "a second run changed the firewall again"
    );
    let status = env.run(&["status"]);
    status.expect(0);
    assert!(
        status
            .stdout
            .lines()
            .any(|line| line.starts_with("ssh") && line.matches("closed").count() == 2),
        "{}",
        status.stdout
    );
}

/// The same rule inside portlocker's own chain cannot be put right with
/// iptables (it can delete nothing below it): the run fails, names the
/// rule and how to see it, and tells each failed command once.
#[test]
fn a_rule_only_nft_can_print_in_portlockers_chain_is_named_once() {
    let test = "a_rule_only_nft_can_print_in_portlockers_chain_is_named_once";
    if !backend::enter(test, Backend::Nftables) {
        return;
    }
    let env = TestEnv::with_real_iptables();
    env.write_config(&env.local_config("", "ipv6 = false"));
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    let rule = [
        "insert",
        "rule",
        "ip",
        "filter",
        "PORTLOCKER",
        "th",
        "dport",
        "22",
        "accept",
    ];
    backend::nft(&rule);
    let run = env.run(&[]);
    run.expect(1).says(
        "ssh 22/tcp should be closed but is unknown: `rule 1 of PORTLOCKER (only \
         `nft -a list chain ip filter PORTLOCKER` prints it)`",
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    let told: std::collections::BTreeSet<&str> = lines.iter().copied().collect();
    assert_eq!(told.len(), lines.len(), "told twice:\n{}", run.stderr);
}

/// iptables-nft's table made dormant by nft sees no packet, whatever
/// iptables lists in it: a close there is unknown and the run fails, with
/// the command that wakes it (hostile tester 8, finding 1: it said closed).
#[test]
fn a_dormant_iptables_table_is_never_called_closed() {
    let test = "a_dormant_iptables_table_is_never_called_closed";
    let Some((env, [v4, _])) = ssh_closed_by_iptables_beside_nft(test) else {
        return;
    };
    backend::nft(&["add", "table", "ip", "filter", "{ flags dormant; }"]);
    assert!(reachable(v4), "a dormant table drops nothing");
    env.run(&[])
        .expect(1)
        .says("IPv4: ssh 22/tcp should be closed but is unknown: table ip filter has flags")
        .says("`nft add table ip filter` clears them");
    let status = env.run(&["status"]);
    let ssh = status.stdout.lines().find(|line| line.starts_with("ssh"));
    assert!(
        ssh.is_some_and(|line| line.contains("unknown")),
        "{}",
        status.stdout
    );
    backend::nft(&["add", "table", "ip", "filter"]);
    env.run(&[]).expect(0);
    assert!(!reachable(v4));
}

/// The nftables backend never runs iptables: what iptables and ip6tables
/// list stays exactly as it was through runs, opens, closes and a reset.
#[test]
fn with_nftables_iptables_is_never_touched() {
    let test = "with_nftables_iptables_is_never_touched";
    if !backend::enter(test, Backend::Nftables) {
        return;
    }
    let env = TestEnv::with_real_nftables();
    netns::iptables(
        IPT,
        &["-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "ACCEPT"],
    );
    let iptables = || (rules(IPT), rules(IP6T));
    let before = iptables();
    for control in [
        "close ssh\nclose mosh\n",
        "open ssh from 127.0.0.2\nopen mosh\nclose web\n",
        "open ssh\n",
    ] {
        env.control(control);
        env.run(&[]).expect(0);
        assert_eq!(iptables(), before, "{control:?} touched iptables");
        assert!(backend::nft_table().contains("comment \"portlocker:"));
    }
    env.run(&["status"]).expect(0);
    env.run(&["reset"]).expect(0);
    assert_eq!(iptables(), before, "reset touched iptables");
    assert_eq!(backend::nft_table(), "");
}

/// A dormant table sees no packet: status must not say closed, and the
/// next run writes the table anew, awake.
#[test]
fn a_table_made_dormant_by_hand_is_not_closed_and_is_woken() {
    let test = "a_table_made_dormant_by_hand_is_not_closed_and_is_woken";
    if !backend::enter(test, Backend::Nftables) {
        return;
    }
    let env = TestEnv::with_real_nftables();
    let [v4, v6] = ssh_listeners();
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    backend::nft(&["add", "table", "inet", "portlocker", "{ flags dormant; }"]);
    assert!(
        reachable(v4) && reachable(v6),
        "a dormant table still drops"
    );
    // Not closed, whatever was asked (`open (asked: closed)`).
    let status = env.run(&["status"]);
    assert!(
        !status.stdout.lines().any(|line| line.starts_with("ssh")
            && line.split_whitespace().nth(2) == Some("closed")),
        "{}",
        status.stdout
    );
    env.run(&[]).expect(0);
    assert!(
        !reachable(v4) && !reachable(v6),
        "the run left the table dormant"
    );
    assert!(!backend::nft_table().contains("dormant"));
}

/// nft applies a script whole or not at all: a run whose script nft
/// refuses changes nothing, fails naming the line, and the next run that
/// nft takes makes the change.
#[test]
fn a_refused_nft_script_changes_nothing() {
    let test = "a_refused_nft_script_changes_nothing";
    if !backend::enter(test, Backend::Nftables) {
        return;
    }
    let mut env = TestEnv::with_real_nftables();
    // A wrapper that, while `refuse` exists, adds to each script a last
    // line the kernel refuses, after all of portlocker's. (Through a file:
    // `nft -j -f -` reads its input twice, which a pipe cannot give.)
    let flag = env.path("refuse");
    let wrapper = env.path("nft");
    common::write_program(
        &wrapper,
        &format!(
            "#!/bin/sh\n\
             case \" $* \" in *' -f '*) writes=1 ;; esac\n\
             if [ -n \"$writes\" ] && [ -e '{flag}' ]; then\n\
             \x20   {{ cat; echo 'delete chain inet portlocker nosuch'; }} >'{script}'\n\
             \x20   {nft} \"$@\" <'{script}'\n\
             \x20   exit $?\n\
             fi\n\
             exec {nft} \"$@\"\n",
            flag = flag.display(),
            script = env.path("script.nft").display(),
            nft = backend::NFT,
        ),
    );
    env.backend = format!("backend = \"nftables\"\nnft = {wrapper:?}\n");
    env.write_default_config();
    let [v4, v6] = ssh_listeners();

    env.control("close ssh\nclose web\n");
    env.run(&[]).expect(0);
    let before = backend::nft_table();
    std::fs::write(&flag, "").unwrap();
    env.control("open ssh\nclose web\nclose mosh\n");
    let refused = env.run(&[]);
    refused.expect(1);
    refused.says("refused line");
    refused.says("so it changed nothing");
    assert_eq!(backend::nft_table(), before);
    assert!(
        !reachable(v4) && !reachable(v6),
        "ssh opened by a refused script"
    );

    std::fs::remove_file(&flag).unwrap();
    env.run(&[]).expect(0);
    assert!(
        reachable(v4) && reachable(v6),
        "ssh not opened once nft takes the script"
    );
    assert!(backend::nft_table().contains("portlocker:mosh"));
}

/// What a run changes is read back from nft's echo of its transaction:
/// real nft's echo is trusted, so the backend makes no second listing; a
/// run that changes nothing only lists, and its verdicts reuse its listing.
/// (After a change, the evaluator reads the host's way in once: the one
/// listing more.)
#[test]
fn a_change_is_read_back_from_nfts_echo_with_no_second_listing() {
    let test = "a_change_is_read_back_from_nfts_echo_with_no_second_listing";
    if !backend::enter(test, Backend::Nftables) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mut env = TestEnv::with_real_nftables();
    let calls = env.path("calls.log");
    let wrapper = env.path("nft");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >>'{calls}'\nexec {nft} \"$@\"\n",
            calls = calls.display(),
            nft = backend::NFT,
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.backend = format!("backend = \"nftables\"\nnft = {wrapper:?}\n");
    env.write_default_config();
    let [v4, v6] = ssh_listeners();
    let run = |control: &str| {
        env.control(control);
        let _ = std::fs::remove_file(&calls);
        env.run(&[]).expect(0);
        std::fs::read_to_string(&calls).unwrap()
    };
    let listings = |calls: &str| calls.matches("-j list table inet portlocker").count();
    let first = run("close ssh\nopen web\n");
    assert_eq!(listings(&first), 2, "{first}");
    assert_eq!(first.matches("-e -j -f -").count(), 1, "{first}");
    assert!(!reachable(v4) && !reachable(v6));
    let page = env.status_page().unwrap();
    assert!(
        page.contains("IPv4 closed") && page.contains("IPv6 closed"),
        "{page}"
    );
    let same = run("close ssh\nopen web\n");
    assert_eq!(listings(&same), 1, "{same}");
    assert!(!same.contains(" -f "), "{same}");
    // From an existing table, the echo tells the table as replaced.
    let table = backend::nft_table();
    let opened = run("open ssh\nopen web\n");
    assert_eq!(listings(&opened), 2, "{opened}");
    assert!(reachable(v4) && reachable(v6));
    assert_ne!(backend::nft_table(), table);
    let page = env.status_page().unwrap();
    assert!(
        page.contains("IPv4 open") && page.contains("IPv6 open"),
        "{page}"
    );
}

/// A change nft says it made but did not is caught by reading the table
/// again: nft's echo of its transaction (missing, or empty) is not taken
/// for what the table holds, nor are the changes.
#[test]
fn a_change_nft_claims_but_does_not_make_is_caught_by_reading_back() {
    let test = "a_change_nft_claims_but_does_not_make_is_caught_by_reading_back";
    if !backend::enter(test, Backend::Nftables) {
        return;
    }
    let [v4, _] = ssh_listeners();
    for echo in ["", "{\"nftables\": []}"] {
        let mut env = TestEnv::with_real_nftables();
        // A wrapper that takes each script, applies none of it, prints
        // `echo` and says it succeeded; it lists as nft does.
        let wrapper = env.path("nft");
        common::write_program(
            &wrapper,
            &format!(
                "#!/bin/sh\n\
                 case \" $* \" in *' -f '*) cat >/dev/null; printf '%s' '{echo}'; exit 0 ;; esac\n\
                 exec {nft} \"$@\"\n",
                nft = backend::NFT,
            ),
        );
        env.backend = format!("backend = \"nftables\"\nnft = {wrapper:?}\n");
        let config = env.local_config("", "").replace(
            "[fetch]",
            &format!("metrics_file = {:?}\n[fetch]", env.path("metrics.prom")),
        );
        env.write_config(&config);
        env.control("close ssh\n");
        let run = env.run(&[]);
        run.expect(1)
            .says("ssh 22/tcp should be closed but is open");
        assert!(reachable(v4), "the lying nft closed ssh");
        assert_eq!(backend::nft_table(), "");
        let page = env.status_page().unwrap();
        assert!(
            page.contains("Not as asked: ssh open over IPv4 (asked: closed)"),
            "{page}"
        );
        assert!(!page.contains("IPv4 closed"), "{page}");
        let metrics = std::fs::read_to_string(env.path("metrics.prom")).unwrap();
        assert!(
            metrics.contains("portlocker_service_closed{service=\"ssh\",family=\"ipv4\"} 0"),
            "{metrics}"
        );
    }
}

/// Another table whose input chain drops by default closes what
/// portlocker opens; the status page says so.
#[test]
fn another_tables_default_drop_is_told_on_the_page() {
    let test = "another_tables_default_drop_is_told_on_the_page";
    if !backend::enter(test, Backend::Nftables) {
        return;
    }
    let env = TestEnv::with_real_nftables();
    backend::nft_script(
        "table inet filter {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    \
         iif lo tcp dport 80 accept\n  }\n}\n",
    );
    env.control("open ssh\n");
    // ssh stays closed, by the other table: not as asked, and why.
    env.run(&[])
        .expect(1)
        .says("dropped by the policy drop of chain input (nftables inet filter)");
    let page = env.status_page().unwrap();
    assert!(
        page.contains("chain input of table inet filter drops what it does not accept"),
        "{page}"
    );
    assert!(
        page.contains("ssh closed over IPv4 (asked: open)"),
        "{page}"
    );
    assert!(page.contains("nftables (table inet portlocker)"), "{page}");
}
