//! The real firewall: real iptables and ip6tables in a private network
//! namespace, and real TCP connections to a listener on port 22.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::TestEnv;
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

#[test]
fn closed_ssh_is_unreachable_over_ipv4_and_ipv6_and_open_is_reachable() {
    if !netns::enter("closed_ssh_is_unreachable_over_ipv4_and_ipv6_and_open_is_reachable") {
        return;
    }
    let env = TestEnv::with_real_iptables();
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
    assert!(!rules("/sbin/iptables").contains("portlocker:ssh"));
    assert!(!rules("/sbin/ip6tables").contains("portlocker:ssh"));
}

#[test]
fn a_close_wins_over_an_accept_already_in_input() {
    if !netns::enter("a_close_wins_over_an_accept_already_in_input") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    let [v4, _] = ssh_listeners();
    netns::iptables(
        "/sbin/iptables",
        &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    );
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    assert!(
        !reachable(v4),
        "the owner's ACCEPT in INPUT let a new connection through"
    );
}

#[test]
fn three_runs_leave_exactly_one_copy_of_each_rule() {
    if !netns::enter("three_runs_leave_exactly_one_copy_of_each_rule") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    env.control("close ssh\nclose web\nclose mosh\n");
    env.run(&[]).expect(0);
    let after_first = (rules("/sbin/iptables"), rules("/sbin/ip6tables"));
    env.run(&[]).expect(0);
    env.run(&[]).expect(0);
    assert_eq!(
        (rules("/sbin/iptables"), rules("/sbin/ip6tables")),
        after_first
    );
    for table in [&after_first.0, &after_first.1] {
        let jumps = table
            .lines()
            .filter(|l| l.starts_with("-A INPUT ") && l.ends_with(" -j PORTLOCKER"));
        assert_eq!(jumps.count(), 1, "{table}");
        for tag in ["portlocker:ssh", "portlocker:mosh"] {
            assert_eq!(table.matches(tag).count(), 1, "{tag} in {table}");
        }
        assert_eq!(table.matches("portlocker:web").count(), 2, "{table}");
    }
    assert!(
        env.log().lines().last().unwrap().contains("no change"),
        "{}",
        env.log()
    );
}

#[test]
fn a_rejected_file_leaves_the_firewall_exactly_as_it_was() {
    if !netns::enter("a_rejected_file_leaves_the_firewall_exactly_as_it_was") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    let before = (rules("/sbin/iptables"), rules("/sbin/ip6tables"));
    for bad in [
        "open ssh\nclose web\nopen vnp\n",
        "<html><body>open ssh</body></html>",
        "open ssh please\n",
    ] {
        env.control(bad);
        env.run(&[]).expect(1);
        assert_eq!(
            (rules("/sbin/iptables"), rules("/sbin/ip6tables")),
            before,
            "{bad:?} changed the firewall"
        );
    }
}

#[test]
fn an_established_session_survives_a_close() {
    if !netns::enter("an_established_session_survives_a_close") {
        return;
    }
    let env = TestEnv::with_real_iptables();
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

#[test]
fn without_keep_established_a_close_cuts_open_sessions_too() {
    if !netns::enter("without_keep_established_a_close_cuts_open_sessions_too") {
        return;
    }
    let env = TestEnv::with_real_iptables();
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
        "the rule without --syn let an open session through"
    );
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

#[test]
fn dry_run_as_root_prints_exactly_what_the_run_then_does() {
    if !netns::enter("dry_run_as_root_prints_exactly_what_the_run_then_does") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    env.control("close ssh\nclose mosh\n");
    let before = rules("/sbin/iptables");
    let dry = env.run(&["--dry-run"]);
    dry.expect(0);
    assert_eq!(
        rules("/sbin/iptables"),
        before,
        "the dry run changed the firewall"
    );
    assert!(
        !dry.stdout.contains("||"),
        "a dry run as root should be exact: {}",
        dry.stdout
    );
    env.run(&["-v"]).expect(0);
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

    // What check foretold: the open leaves IPv4 :22 unreachable.
    env.control("open ssh\n");
    env.run(&[]).expect(0);
    assert!(reachable(v6) && !reachable(v4));
    let command = removal_in(&check.stderr);
    let args: Vec<&str> = command[1..].iter().map(String::as_str).collect();
    netns::iptables(&command[0], &args);
    assert!(reachable(v4), "the command check gave did not open :22");
    env.run(&["check"]).expect(0);
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
