//! Surviving faults, against real iptables in a private network namespace
//! and a real HTTPS server on loopback: reboots, dead sources, drift,
//! stale rules, the owner's own rules, and a clean reset.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::TestEnv;
use common::https::{Reply, TlsServer};
use common::netns::{self, iptables, rules};

const IPT: &str = "/sbin/iptables";
const IP6T: &str = "/sbin/ip6tables";

fn env_for(server: &TlsServer, fetch: &str) -> TestEnv {
    let env = TestEnv::with_real_iptables();
    server.write_ca(&env.path("ca.pem"));
    let fetch = format!("ca_file = {:?}\n{fetch}", env.path("ca.pem"));
    env.write_config(&env.config_text(&server.url("/portlocker.txt"), &fetch, ""));
    env
}

fn text(body: &str) -> Reply {
    Reply::Body {
        body: body.as_bytes().to_vec(),
        content_type: "text/plain",
    }
}

fn both() -> (String, String) {
    (rules(IPT), rules(IP6T))
}

/// Wipes the filter table in both families, as a reboot or `iptables -F; iptables -X` does.
fn reboot() {
    for binary in [IPT, IP6T] {
        iptables(binary, &["-F"]);
        iptables(binary, &["-X"]);
    }
}

fn ssh_listener() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:22").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || for _ in listener.incoming() {});
    address
}

fn reachable(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_millis(700)).is_ok()
}

#[test]
fn after_a_reboot_a_dead_source_still_gets_every_closed_port_back() {
    if !netns::enter("after_a_reboot_a_dead_source_still_gets_every_closed_port_back") {
        return;
    }
    let ssh = ssh_listener();
    let server = TlsServer::start(text("close ssh\nclose mosh\n"));
    let env = env_for(&server, "timeout_secs = 1");
    env.run(&[]).expect(0);
    let closed = both();
    for failure in [
        Reply::Status("404 Not Found"),
        Reply::Status("500 Internal Server Error"),
        Reply::Hang,
    ] {
        reboot();
        env.as_if_rebooted();
        assert!(reachable(ssh));
        server.set_reply(failure);
        let run = env.run(&[]);
        run.expect(1);
        assert_eq!(
            both(),
            closed,
            "the firewall was not restored: {}",
            run.stderr
        );
        assert!(!reachable(ssh), "ssh reachable while the source is down");
        run.says("using last good control file from ");
    }
}

#[test]
fn the_second_fetch_is_conditional_and_a_304_keeps_the_firewall_right() {
    if !netns::enter("the_second_fetch_is_conditional_and_a_304_keeps_the_firewall_right") {
        return;
    }
    let server = TlsServer::start(Reply::Etagged {
        body: b"close ssh\n".to_vec(),
        etag: "\"v1\"",
    });
    let env = env_for(&server, "");
    env.run(&[]).expect(0);
    assert!(
        !server.last_head().contains("if-none-match"),
        "{}",
        server.last_head()
    );
    let closed = both();
    env.run(&[]).expect(0);
    assert!(
        server.last_head().contains("if-none-match: \"v1\"\r\n"),
        "{}",
        server.last_head()
    );
    assert_eq!(both(), closed);
    reboot();
    let run = env.run(&["-v"]);
    run.expect(0);
    run.says("has not changed (304)");
    assert_eq!(both(), closed, "a 304 did not restore the firewall");
}

#[test]
fn the_owners_own_rules_survive_every_run_and_reset() {
    if !netns::enter("the_owners_own_rules_survive_every_run_and_reset") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    iptables(
        IPT,
        &["-A", "INPUT", "-p", "tcp", "--dport", "80", "-j", "ACCEPT"],
    );
    env.control("close ssh\nclose web\n");
    env.run(&[]).expect(0);
    iptables(
        IPT,
        &["-A", "PORTLOCKER", "-s", "127.0.0.5", "-j", "ACCEPT"],
    );
    env.run(&[]).expect(0);
    env.control("open web\n");
    env.run(&[]).expect(0);
    let owners = [
        "-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT",
        "-A PORTLOCKER -s 127.0.0.5/32 -j ACCEPT",
    ];
    for rule in owners {
        assert!(rules(IPT).contains(rule), "{rule} lost: {}", rules(IPT));
    }
    let reset = env.run(&["reset"]);
    reset.expect(0);
    let table = rules(IPT);
    for rule in owners {
        assert!(table.contains(rule), "reset removed {rule}: {table}");
    }
    assert!(
        !table
            .lines()
            .any(|l| l.starts_with("-A PORTLOCKER ") && l.contains("portlocker:")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("-A INPUT ") && l.ends_with(" -j PORTLOCKER")),
        "the chain with the owner's rule lost its jump: {table}"
    );
    assert!(
        reset
            .stderr
            .contains("holds rules that are not portlocker's, so it stays"),
        "{}",
        reset.stderr
    );
    assert!(
        reset
            .stderr
            .contains("-A PORTLOCKER -s 127.0.0.5/32 -j ACCEPT"),
        "{}",
        reset.stderr
    );
    // IPv6 had nothing of the owner's: everything went.
    assert!(!rules(IP6T).contains("PORTLOCKER"), "{}", rules(IP6T));
}

#[test]
fn a_service_removed_from_the_config_loses_its_rules() {
    if !netns::enter("a_service_removed_from_the_config_loses_its_rules") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    env.control("close ssh\nclose web\n");
    env.run(&[]).expect(0);
    let without_web = env
        .local_config("", "")
        .replace("web = [80, \"443/tcp\"]\n", "");
    env.write_config(&without_web);
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    for table in [rules(IPT), rules(IP6T)] {
        assert!(!table.contains("portlocker:web"), "{table}");
        assert!(table.contains("portlocker:ssh"), "{table}");
    }
    // A port changed in the config: the old rule goes, the new one comes.
    env.write_config(&without_web.replace("ssh = 22", "ssh = 2222"));
    env.run(&[]).expect(0);
    let table = rules(IPT);
    assert!(
        table.contains("--dport 2222 ") && !table.contains("--dport 22 "),
        "{table}"
    );
}

#[test]
fn a_rule_inserted_above_the_jump_is_put_back_below_it() {
    if !netns::enter("a_rule_inserted_above_the_jump_is_put_back_below_it") {
        return;
    }
    let ssh = ssh_listener();
    let env = TestEnv::with_real_iptables();
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    iptables(
        IPT,
        &[
            "-I", "INPUT", "1", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
        ],
    );
    iptables(IPT, &["-A", "INPUT", "-j", "PORTLOCKER"]);
    assert!(
        reachable(ssh),
        "the inserted ACCEPT should win until portlocker runs"
    );
    env.run(&[]).expect(0);
    let input: Vec<String> = rules(IPT)
        .lines()
        .filter(|l| l.starts_with("-A INPUT"))
        .map(String::from)
        .collect();
    assert_eq!(
        input,
        [
            // The new jump carries the tag neither old one had.
            "-A INPUT -m comment --comment \"portlocker:jump.b\" -j PORTLOCKER",
            "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"
        ]
    );
    assert!(!reachable(ssh));
}

#[test]
fn a_config_others_can_write_is_refused() {
    if !netns::enter("a_config_others_can_write_is_refused") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::with_real_iptables();
    env.control("close ssh\n");
    let config = env.path("config.toml");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o664)).unwrap();
    let before = both();
    for args in [&[][..], &["check"], &["reset"], &["--dry-run"]] {
        let run = env.run(args);
        run.expect(2);
        let fix = format!(
            "is writable by group or others (mode 664): fix with `chmod go-w {}`",
            config.display()
        );
        assert!(run.stderr.contains(&fix), "{args:?}: {}", run.stderr);
    }
    assert_eq!(both(), before);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.run(&["check"]).expect(0);
}
