//! Fail closed in the firewall path: a value the grammar accepts is one
//! every backend writes, a refused commit never leaves a close undone, and
//! one family's broken program never holds back the other's closes. Real
//! iptables and nft in a private network namespace, real traffic; and the
//! recording fake where no namespace is needed.

mod common;

use std::net::IpAddr;

use common::TestEnv;
use common::backend::{self, Backend, IP6T, IPT};
use common::netns;
use common::probe::{self, Probe, Proto};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A probe from `from` to the same address, port `port`.
fn to_self(proto: Proto, from: &str, port: u16) -> Probe {
    Probe {
        proto,
        from: ip(from),
        to: ip(from),
        port,
    }
}

/// Asserts each probe gets through, or is dropped, as paired.
#[track_caller]
fn assert_traffic(expected: &[(Probe, bool)], context: &str) {
    let wrong = probe::mismatches(expected);
    assert!(wrong.is_empty(), "{context}: {wrong:#?}");
}

/// Both loopback addresses, on `port`, expected through or not.
fn both_families(proto: Proto, port: u16, through: bool) -> [(Probe, bool); 2] {
    [
        (to_self(proto, "127.0.0.1", port), through),
        (to_self(proto, "::1", port), through),
    ]
}

/// Serves the ports the test services name (ssh 22, web 80, mosh 60000/udp).
fn serve_services() {
    probe::serve_control();
    probe::serve(Proto::Tcp, 22);
    probe::serve(Proto::Tcp, 80);
    probe::serve(Proto::Udp, 60000);
}

/// What portlocker's part of the firewall holds, as its tools list it.
fn listed(backend: Backend) -> String {
    match backend {
        Backend::Iptables => format!("{}{}", netns::rules(IPT), netns::rules(IP6T)),
        Backend::Nftables => backend::nft_table(),
    }
}

on_both_backends! {
    /// `23:59:60` is valid RFC 3339, and iptables refuses it: the whole
    /// commit went, with every close of the file, now and after a reboot.
    fn a_leap_second_deadline_is_written_and_every_close_of_its_file_made(backend: Backend) {
        let env = backend.env();
        serve_services();
        env.control("open ssh until 2030-06-30T23:59:60Z\nclose web\n");
        env.run(&[]).expect(0);
        let expected: Vec<(Probe, bool)> = both_families(Proto::Tcp, 22, true)
            .into_iter()
            .chain(both_families(Proto::Tcp, 80, false))
            .collect();
        assert_traffic(&expected, "after the run");
        // The second before the leap second, as every backend writes it.
        let rules = listed(backend);
        let written = match backend {
            Backend::Iptables => "--datestart 2030-06-30T23:59:59",
            Backend::Nftables => "meta time >= \"2030-06-30 23:59:59\"",
        };
        assert!(rules.contains(written), "{rules}");
        assert!(env.run(&["check"]).code == Some(0));

        // After a reboot, the last good file puts it all back.
        backend.wipe();
        env.run(&["--offline"]).expect(0);
        assert_traffic(&expected, "after --offline");
        env.run(&[]).expect(0);
        assert!(env.log().lines().last().unwrap().contains("no change"), "{}", env.log());
    }
}

on_both_backends! {
    /// A notrack rule of another table, at raw priority, leaves new UDP
    /// flows untracked: a drop of `ct state new` alone let them through
    /// while status, metrics and check said closed.
    fn a_udp_close_drops_what_a_notrack_rule_of_another_table_leaves_untracked(backend: Backend) {
        let env = backend.env();
        serve_services();
        backend::nft_script(
            "table inet other {\n\
               chain pre { type filter hook prerouting priority raw; udp dport 60000 notrack; }\n\
               chain out { type filter hook output priority raw; udp dport 60000 notrack; }\n\
             }\n",
        );
        assert_traffic(&both_families(Proto::Udp, 60000, true), "before any rule");
        env.control("close mosh\n");
        env.run(&[]).expect(0);
        assert_traffic(&both_families(Proto::Udp, 60000, false), "after close mosh");
        let status = env.run(&["status"]);
        status.expect(0);
        assert!(
            status.stdout.lines().any(|line| line
                .split_whitespace()
                .eq(["mosh", "60000-61000/udp", "closed", "closed"])),
            "{}",
            status.stdout
        );
        env.control("open mosh\n");
        env.run(&[]).expect(0);
        assert_traffic(&both_families(Proto::Udp, 60000, true), "after open mosh");
    }
}

/// The real iptables, with `ip6tables` at `ip6tables` and `firewall` lines.
fn with_ip6tables(ip6tables: &str, firewall: &str) -> TestEnv {
    let mut env = TestEnv::with_real_iptables();
    env.ip6tables = ip6tables.into();
    env.write_config(&env.local_config("", firewall));
    env
}

#[test]
fn a_missing_ip6tables_never_holds_back_the_ipv4_closes() {
    if !netns::enter("a_missing_ip6tables_never_holds_back_the_ipv4_closes") {
        return;
    }
    serve_services();
    let env = with_ip6tables("/nonexistent/ip6tables", "");
    env.control("close ssh\n");
    let run = env.run(&[]);
    run.expect(1).says(
        "IPv6: /nonexistent/ip6tables not found (install the iptables package with `apt-get \
         install iptables`, or set firewall.ip6tables in the config, or firewall.ipv6 = false); \
         its rules were not changed",
    );
    assert!(
        !run.stderr.contains("nothing was changed"),
        "{}",
        run.stderr
    );
    let closed = [(to_self(Proto::Tcp, "127.0.0.1", 22), false)];
    assert_traffic(&closed, "after the run");

    // Each family's state, and what failed, told apart: nothing closes
    // ssh over IPv6, and status says so.
    let status = env.run(&["status"]);
    status.expect(1).says("IPv6: cannot change the firewall");
    assert!(
        status.stdout.lines().any(|line| line
            .split_whitespace()
            .eq(["ssh", "22/tcp", "closed", "open", "(asked:", "closed)"])),
        "{}",
        status.stdout
    );
    let json = env.run(&["status", "--json"]).stdout;
    assert!(
        json.contains("IPv6: cannot change the firewall: /nonexistent/ip6tables not found"),
        "{json}"
    );
    let page = env.status_page().unwrap();
    assert!(
        page.contains("IPv6: /nonexistent/ip6tables not found"),
        "{page}"
    );

    // After a reboot, the IPv4 closes come back.
    netns::iptables(IPT, &["-F"]);
    netns::iptables(IPT, &["-X"]);
    env.run(&["--offline"]).expect(1);
    assert_traffic(&closed, "after --offline");

    // reset clears IPv4, and says IPv6 was not.
    let reset = env.run(&["reset"]);
    reset
        .expect(1)
        .says("IPv6: /nonexistent/ip6tables not found");
    assert!(
        !netns::rules(IPT).contains("portlocker"),
        "{}",
        netns::rules(IPT)
    );
}

#[test]
fn a_hung_ip6tables_or_an_unusable_ip6tables_restore_never_holds_back_ipv4() {
    if !netns::enter("a_hung_ip6tables_or_an_unusable_ip6tables_restore_never_holds_back_ipv4") {
        return;
    }
    serve_services();
    let mut env = TestEnv::with_real_iptables();
    let hung = env.path("hung-ip6tables");
    common::write_program(&hung, "#!/bin/sh\nexec sleep 60\n");
    env.ip6tables = hung;
    env.write_config(&env.local_config("", "command_timeout_secs = 1"));
    env.control("close ssh\n");
    env.run(&[]).expect(1).says("did not finish within 1 s");
    assert_traffic(
        &[(to_self(Proto::Tcp, "127.0.0.1", 22), false)],
        "ip6tables hung",
    );

    // A restore tool that hangs: killed, the family read again, and its
    // closes made rule by rule.
    let env = TestEnv::with_real_iptables();
    let hung = env.path("hung-ip6tables-restore");
    common::write_program(&hung, "#!/bin/sh\nexec sleep 60\n");
    let firewall = format!("ip6tables_restore = {hung:?}\ncommand_timeout_secs = 1");
    env.write_config(&env.local_config("", &firewall));
    env.control("close ssh\n");
    env.run(&[]).expect(1).says("did not finish within 1 s");
    assert_traffic(
        &both_families(Proto::Tcp, 22, false),
        "ip6tables-restore hung",
    );

    // A restore tool that is not executable is not run: rule by rule instead.
    let env = TestEnv::with_real_iptables();
    let broken = env.path("ip6tables-restore");
    std::fs::write(&broken, "").unwrap();
    env.write_config(&env.local_config("", &format!("ip6tables_restore = {broken:?}")));
    env.control("close web\n");
    let run = env.run(&[]);
    run.expect(0).says("is not executable");
    assert_traffic(
        &both_families(Proto::Tcp, 80, false),
        "ip6tables-restore unusable",
    );
}

on_both_backends! {
    /// A refused source rule: the run commits again without it — the
    /// source is not let in, the service stays closed — makes every other
    /// close, says which line was refused and why, and fails; the file is
    /// not kept as the last good one. `--offline` after a reboot the same.
    fn a_refused_source_is_closed_and_every_other_close_made(backend: Backend) {
        let env = backend.refusing_env();
        serve_services();
        env.refuse("127.0.0.2");
        env.control("open ssh from 127.0.0.2 until 2099-01-01T00:00:00Z\nclose web\nclose mosh\n");
        let run = env.run(&[]);
        run.expect(1)
            .says("(IPv4: open ssh 22/tcp to 127.0.0.2/32)")
            .says("no-such-word")
            .says("IPv4: ssh stays closed to 127.0.0.2/32: the firewall refused its rule");
        let closed: Vec<(Probe, bool)> = [
            (to_self(Proto::Tcp, "127.0.0.2", 22), false),
            (to_self(Proto::Tcp, "127.0.0.1", 22), false),
            (to_self(Proto::Tcp, "::1", 22), false),
        ]
        .into_iter()
        .chain(both_families(Proto::Tcp, 80, false))
        .chain(both_families(Proto::Udp, 60000, false))
        .collect();
        assert_traffic(&closed, "after the refused run");
        assert!(last_good(&env).is_none(), "the file was kept as good");

        backend.wipe();
        env.run(&["--offline"]).expect(1);
        // Told once (on stderr, for cron's mail); logged each run.
        let last = env.log().lines().last().unwrap().to_owned();
        assert!(last.contains("IPv4: ssh stays closed to 127.0.0.2/32"), "{last}");
        assert_traffic(&closed, "after --offline");

        // Once it can be written, it is, and the file is good.
        env.refuse("");
        env.run(&[]).expect(0);
        let mut open = closed.clone();
        open[0].1 = true;
        assert_traffic(&open, "once written");
        assert!(last_good(&env).is_some());
    }
}

on_both_backends! {
    /// A refused rule that ends an open: the service is closed now, not
    /// opened; a refused close: every other close is made all the same.
    fn a_refused_deadline_closes_and_a_refused_close_holds_back_no_other(backend: Backend) {
        let env = backend.refusing_env();
        serve_services();
        env.refuse("2030-");
        env.control("open ssh until 2030-01-01T00:00:00Z\nclose web\n");
        env.run(&[])
            .expect(1)
            .says("ssh is closed now, not at the end of its open");
        let expected: Vec<(Probe, bool)> = both_families(Proto::Tcp, 22, false)
            .into_iter()
            .chain(both_families(Proto::Tcp, 80, false))
            .collect();
        assert_traffic(&expected, "deadline refused");

        env.refuse("portlocker:web");
        env.control("close ssh\nclose web\nclose mosh\n");
        env.run(&[]).expect(1).says("refused line");
        let expected: Vec<(Probe, bool)> = both_families(Proto::Tcp, 22, false)
            .into_iter()
            .chain(both_families(Proto::Udp, 60000, false))
            .collect();
        assert_traffic(&expected, "a close refused");
    }
}

on_both_backends! {
    /// A commit refused past any rule of portlocker's — as netlink refuses
    /// a batch too big for it — is made again with closes only.
    fn a_whole_commit_refused_is_made_again_with_closes_only(backend: Backend) {
        let env = backend.refusing_env();
        serve_services();
        std::fs::write(env.path("longest"), "20").unwrap();
        let sources: String = (1..=80).map(|n| format!("open ssh from 127.0.1.{n}\n")).collect();
        env.control(&format!("{sources}open ssh from 127.0.0.2\nclose web\n"));
        let run = env.run(&[]);
        run.expect(1);
        let expected: Vec<(Probe, bool)> = [
            (to_self(Proto::Tcp, "127.0.0.2", 22), false),
            (to_self(Proto::Tcp, "127.0.0.1", 22), false),
        ]
        .into_iter()
        .chain(both_families(Proto::Tcp, 80, false))
        .collect();
        assert_traffic(&expected, "whole commit refused");
        assert!(
            env.log().contains("IPv4: every open from a source or with an end is closed"),
            "{}",
            env.log()
        );
    }
}

on_both_backends! {
    /// The fallbacks too: without a restore tool (iptables, rule by rule),
    /// or with a table nft lists as garbage (the closes alone, in a chain
    /// of their own), a refused close holds back no other, and a refused
    /// open is closed.
    fn a_refusal_on_a_fallback_path_holds_back_no_other_close(backend: Backend) {
        let env = backend.refusing_env();
        serve_services();
        match backend {
            Backend::Iptables => {
                for restore in ["iptables-restore", "ip6tables-restore"] {
                    std::fs::remove_file(env.path("bin").join(restore)).unwrap();
                }
            }
            Backend::Nftables => std::fs::write(env.path("unreadable"), "").unwrap(),
        }
        env.refuse("portlocker:mosh");
        env.control("close ssh\nclose web\nclose mosh\n");
        env.run(&[]).expect(1);
        let expected: Vec<(Probe, bool)> = both_families(Proto::Tcp, 22, false)
            .into_iter()
            .chain(both_families(Proto::Tcp, 80, false))
            .chain(both_families(Proto::Udp, 60000, true))
            .collect();
        assert_traffic(&expected, "a close refused on the fallback");

        env.refuse("2030-");
        env.control("open ssh until 2030-01-01T00:00:00Z\n");
        env.run(&[]).expect(1);
        assert_traffic(&both_families(Proto::Tcp, 22, false), "an open's end refused on the fallback");
    }
}

/// The kept copy of the control file, if any.
fn last_good(env: &TestEnv) -> Option<String> {
    use portlocker::intake::state::{Loaded, State};
    match State::load(&env.path("state")) {
        Loaded::Kept(state) => state.last_good.map(|good| good.body),
        other => panic!("no whole state: {other:?}"),
    }
}

// The same with the recording fake: no namespace needed.

#[test]
fn with_the_fake_a_refused_source_is_closed_and_every_other_close_made() {
    let env = TestEnv::with_fake_iptables();
    env.refuse("203.0.113.7");
    env.control("open ssh from 203.0.113.7\nclose web\n");
    let run = env.run(&[]);
    run.expect(1)
        .says("refused line 3 of its input (IPv4: open ssh 22/tcp to 203.0.113.7/32)")
        .says("IPv4: ssh stays closed to 203.0.113.7/32");
    let v4 = env.fake_table("iptables");
    for close in ["--dport 22 --tcp-flags", "--dport 80 ", "--dport 443 "] {
        assert!(v4.contains(close), "{close} not in {v4}");
    }
    assert!(!v4.contains("203.0.113.7"), "{v4}");
    assert!(env.fake_table("ip6tables").contains("--dport 80 "));
    assert!(last_good(&env).is_none());
}

#[test]
fn with_the_fake_rule_by_rule_a_refused_open_keeps_its_service_closed() {
    let env = TestEnv::with_fake_iptables();
    env.without_restore();
    env.control("close ssh\nclose web\n");
    env.run(&[]).expect(0);
    // The open's timed DROPs are refused: the plain ones must stay.
    env.refuse("--datestart");
    env.control("open ssh until 2030-01-01T00:00:00Z\nopen web until 2030-01-01T00:00:00Z\n");
    env.run(&[])
        .expect(1)
        .says("ssh is closed now, not at the end of its open");
    let v4 = env.fake_table("iptables");
    for close in ["--dport 22 --tcp-flags", "--dport 80 ", "--dport 443 "] {
        assert!(v4.contains(close), "{close} not in {v4}");
    }
    // A refused source, from scratch: its service is closed.
    let env = TestEnv::with_fake_iptables();
    env.without_restore();
    env.refuse("203.0.113.7");
    env.control("open ssh from 203.0.113.7\n");
    env.run(&[])
        .expect(1)
        .says("IPv4: ssh stays closed to 203.0.113.7/32");
    assert!(
        env.fake_table("iptables")
            .contains("--dport 22 --tcp-flags")
    );
}

/// A bare time the host's zone skips is refused, naming the offset in
/// force before the skip; one it repeats is the earlier moment.
#[test]
fn a_time_the_clocks_skip_is_refused_with_the_offset_to_write() {
    let zones = [
        (
            "America/New_York",
            "2027-03-14 02:30",
            "2027-03-14T02:30:00-05:00",
            "2027-11-07 01:30",
            "2027-11-07T01:30:00-04:00",
        ),
        (
            "Australia/Lord_Howe",
            "2027-10-03 02:15",
            "2027-10-03T02:15:00+10:30",
            "2027-04-04 01:45",
            "2027-04-04T01:45:00+11:00",
        ),
    ];
    for (zone, gap, instead, fold, earlier) in zones {
        if !std::path::Path::new("/usr/share/zoneinfo")
            .join(zone)
            .exists()
        {
            common::skipped(
                "a_time_the_clocks_skip_is_refused",
                &format!("no {zone} here"),
            );
            continue;
        }
        let env = TestEnv::with_fake_iptables();
        let run = |text: &str| {
            env.control(text);
            let output = env
                .command()
                .args(["check", "--fetch"])
                .env("TZ", zone)
                .output()
                .unwrap();
            common::Run::from(output)
        };
        run(&format!("open ssh until {gap}\n"))
            .expect(1)
            .says(&format!(
                "does not exist here (the clocks skip it); write the offset, like {instead}"
            ));
        let folded = run(&format!("open ssh until {fold}\n"));
        assert!(
            folded.stdout.contains(&format!("open ssh until {earlier}")),
            "{folded:?}"
        );
    }
}

#[test]
fn with_the_fake_a_missing_ip6tables_never_holds_back_ipv4() {
    let env = TestEnv::with_fake_iptables();
    std::fs::remove_file(&env.ip6tables).unwrap();
    env.control("close ssh\n");
    env.run(&[])
        .expect(1)
        .says("IPv6: ")
        .says("ip6tables not found");
    assert!(env.fake_table("iptables").contains("portlocker:ssh"));
    assert!(
        env.calls()
            .iter()
            .all(|call| !call.starts_with("ip6tables"))
    );
}
