//! Time-boxed and per-source opens, signed control files and fleet
//! patterns, against real iptables in a private network namespace.

mod common;

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use common::TestEnv;
use common::backend::Backend;
use common::netns::{self, rules};
use socket2::{Domain, Socket, Type};

const IPT: &str = "/sbin/iptables";
const IP6T: &str = "/sbin/ip6tables";

/// Listens on port 22 of every IPv4 and IPv6 address.
fn ssh_listeners() {
    for address in ["0.0.0.0:22", "[::]:22"] {
        let address: SocketAddr = address.parse().unwrap();
        let socket = Socket::new(Domain::for_address(address), Type::STREAM, None).unwrap();
        if address.is_ipv6() {
            socket.set_only_v6(true).unwrap();
        }
        socket.set_reuse_address(true).unwrap();
        socket.bind(&address.into()).unwrap();
        socket.listen(16).unwrap();
        let listener: TcpListener = socket.into();
        std::thread::spawn(move || for _ in listener.incoming() {});
    }
}

/// Whether a connection from `from` to `to` port 22 gets through.
fn reaches(from: &str, to: &str) -> bool {
    let from: IpAddr = from.parse().unwrap();
    let to = SocketAddr::new(to.parse().unwrap(), 22);
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
    match socket.connect_timeout(&to.into(), Duration::from_millis(700)) {
        Ok(()) => true,
        Err(error) if error.kind() == std::io::ErrorKind::TimedOut => false,
        Err(error) => panic!("{from} -> {to}: unexpected {error}"),
    }
}

fn reachable() -> bool {
    reaches("127.0.0.1", "127.0.0.1")
}

fn both() -> (String, String) {
    (rules(IPT), rules(IP6T))
}

#[test]
fn an_open_until_a_past_deadline_is_closed_quietly() {
    if !netns::enter("an_open_until_a_past_deadline_is_closed_quietly") {
        return;
    }
    ssh_listeners();
    let env = TestEnv::with_real_iptables();
    env.control("open ssh until 2020-01-01 00:00\n");
    let run = env.run(&[]);
    run.expect(0);
    assert_eq!(
        run.stderr, "",
        "an open ending as asked is no reason to mail the owner"
    );
    assert!(!reachable());
    assert!(
        env.log().contains("ssh: the open ended 2020-01-01 00:00 +"),
        "{}",
        env.log()
    );
    let page = env.status_page().unwrap();
    assert!(
        page.contains("<p class=\"note\">the open ended <span class=\"time\">2020-01-01 00:00 +"),
        "{page}"
    );

    env.control("open ssh until 2099-01-01T00:00:00Z\n");
    env.run(&[]).expect(0);
    assert!(reachable());
    assert!(
        env.status_page()
            .unwrap()
            .contains("until <span class=\"time\">2099-01-01"),
        "the page shows no deadline"
    );
}

#[test]
fn an_open_for_a_while_closes_once_the_time_is_up() {
    if !netns::enter("an_open_for_a_while_closes_once_the_time_is_up") {
        return;
    }
    ssh_listeners();
    let env = TestEnv::with_real_iptables();
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    assert!(!reachable());
    env.control("open ssh for 2h\n");
    env.run(&[]).expect(0);
    assert!(reachable(), "open for 2h did not open");
    env.run(&[]).expect(0);
    assert!(reachable(), "the second run within the two hours closed it");

    // Three hours pass: move the recorded start back instead of sleeping.
    env.edit_state(|state| {
        let started = state.opens.get_mut("open ssh for 2h").unwrap();
        *started -= chrono::TimeDelta::hours(3);
    });

    let run = env.run(&[]);
    run.expect(0);
    assert!(!reachable(), "the open outlived its two hours");
    assert_eq!(run.stderr, "");
}

#[test]
fn an_open_from_a_source_lets_only_that_source_in() {
    if !netns::enter("an_open_from_a_source_lets_only_that_source_in") {
        return;
    }
    for address in ["2001:db8::2/128", "2001:db8::3/128"] {
        let status = std::process::Command::new("/sbin/ip")
            .args(["addr", "add", address, "dev", "lo", "nodad"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    ssh_listeners();
    let env = TestEnv::with_real_iptables();
    env.control("open ssh from 127.0.0.2\nopen ssh from 2001:db8::2\n");
    env.run(&[]).expect(0);
    assert!(
        reaches("127.0.0.2", "127.0.0.1"),
        "the allowed IPv4 source was dropped"
    );
    assert!(
        !reaches("127.0.0.1", "127.0.0.1"),
        "another IPv4 source got in"
    );
    assert!(
        reaches("2001:db8::2", "::1"),
        "the allowed IPv6 source was dropped"
    );
    assert!(!reaches("2001:db8::3", "::1"), "another IPv6 source got in");
    let status = env.run(&["status"]);
    assert!(
        status.stdout.contains("open-to-sources"),
        "{}",
        status.stdout
    );

    env.control("open ssh from 127.0.0.0/30\n");
    env.run(&[]).expect(0);
    assert!(reaches("127.0.0.1", "127.0.0.1") && reaches("127.0.0.2", "127.0.0.1"));
    assert!(
        !reaches("2001:db8::2", "::1"),
        "the IPv6 source lost its line but kept its ACCEPT"
    );
    assert!(!rules(IP6T).contains("-j ACCEPT"), "{}", rules(IP6T));

    env.control("close ssh\n");
    env.run(&[]).expect(0);
    assert!(!reaches("127.0.0.2", "127.0.0.1"));
    assert!(!rules(IPT).contains("-j ACCEPT"), "{}", rules(IPT));
}

struct Signer {
    keys: minisign::KeyPair,
}

impl Signer {
    fn new() -> Signer {
        Signer {
            keys: minisign::KeyPair::generate_unencrypted_keypair().unwrap(),
        }
    }

    fn public_key(&self) -> String {
        self.keys.pk.to_base64()
    }

    /// A signature as `minisign -S` writes it, signed `ago` seconds ago.
    fn sign(&self, body: &str, ago: i64) -> String {
        let at = chrono::Utc::now().timestamp() - ago;
        let comment = format!("timestamp:{at}\tfile:portlocker.txt\thashed");
        minisign::sign(
            Some(&self.keys.pk),
            &self.keys.sk,
            Cursor::new(body),
            Some(&comment),
            None,
        )
        .unwrap()
        .to_string()
    }
}

fn signed_env(signer: &Signer) -> TestEnv {
    let env = TestEnv::with_real_iptables();
    configure_key(&env, signer);
    env
}

/// Gives `env`'s config the public key of `signer`.
fn configure_key(env: &TestEnv, signer: &Signer) {
    let config = env.local_config("", "").replace(
        "[services]",
        &format!(
            "[signature]\npublic_key = {:?}\n[services]",
            signer.public_key()
        ),
    );
    env.write_config(&config);
}

fn publish(env: &TestEnv, body: &str, signature: Option<&str>) {
    env.control(body);
    let path = env.path("control.txt.minisig");
    match signature {
        Some(signature) => std::fs::write(path, signature).unwrap(),
        None => {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[test]
fn only_a_fresh_file_signed_by_the_key_is_obeyed() {
    if !netns::enter("only_a_fresh_file_signed_by_the_key_is_obeyed") {
        return;
    }
    let signer = Signer::new();
    let env = signed_env(&signer);
    publish(&env, "close ssh\n", Some(&signer.sign("close ssh\n", 60)));
    env.run(&[]).expect(0);
    let closed = both();
    assert!(
        closed.0.contains("portlocker:ssh"),
        "a signed file was not applied"
    );

    let intruder = Signer::new();
    let older = signer.sign("open ssh\n", 3600);
    let cases = [
        (
            "open ssh\n",
            Some(signer.sign("close ssh\n", 30)),
            "does not match",
        ),
        (
            "open ssh\n",
            Some(intruder.sign("open ssh\n", 30)),
            "does not match",
        ),
        (
            "open ssh\n",
            None,
            "this file carries no #minisig lines, and its detached signature at",
        ),
        (
            "open ssh\n",
            Some("garbage".to_owned()),
            "not a minisign signature",
        ),
        ("open ssh\n", Some(older), "before the file accepted last"),
    ];
    for (body, signature, needle) in cases {
        publish(&env, body, signature.as_deref());
        env.run(&[]).expect(1);
        // In the log every run; on stderr only when it differs from the last
        // (the first two cases fail alike).
        let log = env.log();
        let last = log.lines().last().unwrap();
        assert!(
            last.contains("run failed: ")
                && last.contains(needle)
                && last.contains("enforced the last good control file instead"),
            "{last}"
        );
        assert_eq!(
            both(),
            closed,
            "a refused file ({needle}) changed the firewall"
        );
    }
    publish(&env, "open ssh\n", Some(&signer.sign("open ssh\n", 0)));
    env.run(&[]).expect(0);
    assert!(
        !rules(IPT).contains("portlocker:ssh"),
        "a newer signed file was refused"
    );
}

#[test]
fn lines_for_other_hosts_are_checked_but_not_applied() {
    if !netns::enter("lines_for_other_hosts_are_checked_but_not_applied") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    let config = format!("host_name = \"web-1\"\n{}", env.local_config("", ""));
    env.write_config(&config);
    env.control("close ssh on web-*\nclose web on db-*,mail\nclose mosh\nclose postgres on db-*\n");
    env.run(&[]).expect(0);
    let table = rules(IPT);
    assert!(
        table.contains("portlocker:ssh") && table.contains("portlocker:mosh"),
        "{table}"
    );
    assert!(
        !table.contains("portlocker:web"),
        "a line for db-* was applied on web-1: {table}"
    );
    env.control("close ssh on db-*\nclose ssh for 2h on db-*\n");
    let run = env.run(&[]);
    run.expect(1);
    run.says("line 2: `from`, `until` and `for` go with open only");
    assert_eq!(rules(IPT), table, "a rejected file changed the firewall");
}

/// `check --fetch` checks the configured source's signature as a run does,
/// and `check` tells when the kept copy, accepted before the key was
/// configured, is not in force.
#[test]
fn check_fetch_checks_the_signature_and_the_kept_copy() {
    if !netns::enter("check_fetch_checks_the_signature_and_the_kept_copy") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    env.control("open ssh\n");
    env.run(&[]).expect(0);
    let signer = Signer::new();
    configure_key(&env, &signer);
    let run = env.run(&["check"]);
    run.expect(1);
    run.says("state: the kept control file is not in force (it was accepted without a signature)");
    let run = env.run(&["check", "--fetch"]);
    run.expect(1);
    run.says(&format!(
        "this file carries no #minisig lines, and its detached signature at {} does not exist",
        env.path("control.txt.minisig").display()
    ));

    publish(&env, "open ssh\n", Some(&signer.sign("open ssh\n", 60)));
    let run = env.run(&["check", "--fetch"]);
    run.expect(1);
    assert!(
        run.stdout.contains(&format!(
            "control file from {}: ok (open ssh)",
            env.path("control.txt").display()
        )),
        "{}",
        run.stdout
    );
    env.run(&[]).expect(0);
    env.run(&["check", "--fetch"]).expect(0);

    publish(&env, "close ssh\n", Some(&signer.sign("close ssh\n", 3600)));
    let run = env.run(&["check", "--fetch"]);
    run.expect(1);
    run.says("before the file accepted last");
}

/// Whether a connection from `from` to `to`:`port` gets through.
fn reaches_port(from: &str, to: &str, port: u16) -> bool {
    let from: IpAddr = from.parse().unwrap();
    let to = SocketAddr::new(to.parse().unwrap(), port);
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
    match socket.connect_timeout(&to.into(), Duration::from_millis(700)) {
        Ok(()) => true,
        Err(error) if error.kind() == std::io::ErrorKind::TimedOut => false,
        Err(error) => panic!("{from} -> {to}: unexpected {error}"),
    }
}

on_both_backends! {
    /// An open with a deadline ends at the deadline even if portlocker never
    /// runs again: the kernel starts the DROP (and stops the source rule) then.
    fn the_kernel_closes_an_open_at_its_deadline_with_no_run_after_it(backend: Backend) {
        ssh_listeners();
        for address in ["0.0.0.0:2222", "[::]:2222"] {
            let address: SocketAddr = address.parse().unwrap();
            let socket = Socket::new(Domain::for_address(address), Type::STREAM, None).unwrap();
            if address.is_ipv6() {
                socket.set_only_v6(true).unwrap();
            }
            socket.bind(&address.into()).unwrap();
            socket.listen(16).unwrap();
            let listener: TcpListener = socket.into();
            std::thread::spawn(move || for _ in listener.incoming() {});
        }
        let env = backend.env();
        let config = env
            .local_config("", "")
            .replace("[services]\n", "[services]\nvpn = 2222\n");
        env.write_config(&config);
        // The deadline is a few seconds ahead, to the second, in UTC.
        let deadline = chrono::Utc::now() + chrono::TimeDelta::seconds(6);
        let until = deadline.format("%Y-%m-%dT%H:%M:%SZ");
        env.control(&format!(
            "open ssh until {until}\nopen vpn from 127.0.0.2 until {until}\n"
        ));
        env.run(&[]).expect(0);
        assert!(
            reaches_port("127.0.0.1", "127.0.0.1", 22),
            "ssh not open before the deadline"
        );
        assert!(
            reaches_port("::1", "::1", 22),
            "ssh not open over IPv6 before the deadline"
        );
        assert!(
            reaches_port("127.0.0.2", "127.0.0.1", 2222),
            "the source not let in"
        );
        assert!(
            !reaches_port("127.0.0.3", "127.0.0.1", 2222),
            "another address let in"
        );
        assert!(!reaches_port("::1", "::1", 2222), "vpn open over IPv6");

        // No run from here on: wait for the clock to pass the deadline.
        while chrono::Utc::now() < deadline + chrono::TimeDelta::seconds(1) {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            !reaches_port("127.0.0.1", "127.0.0.1", 22),
            "ssh open past its deadline"
        );
        assert!(
            !reaches_port("::1", "::1", 22),
            "ssh open over IPv6 past its deadline"
        );
        assert!(
            !reaches_port("127.0.0.2", "127.0.0.1", 2222),
            "the source let in past its deadline"
        );
        let status = env.run(&["status"]);
        assert!(
            status.stdout.lines().any(|l| l
                .split_whitespace()
                .take(4)
                .eq(["ssh", "22/tcp", "closed", "closed"])),
            "status, with no run since, must say closed:\n{}",
            status.stdout
        );
        assert!(
            status.stdout.lines().any(|l| l
                .split_whitespace()
                .take(4)
                .eq(["vpn", "2222/tcp", "closed", "closed"])),
            "{}",
            status.stdout
        );
        // Runs after the deadline converge.
        env.run(&[]).expect(0);
        let after = backend.snapshot();
        env.run(&[]).expect(0);
        assert_eq!(backend.snapshot(), after);
        assert!(
            env.log().lines().last().unwrap().contains("no change"),
            "{}",
            env.log()
        );
    }
}

/// An `open ssh for 30m` that stays open for 30 minutes, told so by status.
fn opens_for_half_an_hour(backend: Backend) {
    ssh_listeners();
    let env = backend.env();
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    assert!(!reachable());
    env.control("open ssh for 30m\n");
    env.run(&[]).expect(0);
    assert!(reachable(), "an open for 30 minutes closed at once");
    let status = env.run(&["status"]);
    assert!(
        status.stdout.lines().any(|line| line
            .split_whitespace()
            .take(4)
            .eq(["ssh", "22/tcp", "open", "open"])),
        "{}",
        status.stdout
    );
}

/// Makes this mount namespace's host live in Tokyo (UTC+9): over /etc, a
/// directory of links to each of its entries, but `localtime`, which leads
/// to Asia/Tokyo. All of it on a tmpfs of this namespace's own, over /mnt,
/// the real /etc bound there read-only — and never removed: removing a
/// directory that holds a bind of /etc would remove the host's /etc. The
/// namespace takes it all away when the test ends.
fn host_in_tokyo() {
    let mount = |args: &[&str]| {
        let status = std::process::Command::new("mount")
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "mount {args:?}");
    };
    std::fs::create_dir_all("/mnt").unwrap();
    mount(&["-t", "tmpfs", "-o", "size=1m", "portlocker-test", "/mnt"]);
    let (real, shown) = (Path::new("/mnt/real"), Path::new("/mnt/etc"));
    std::fs::create_dir(real).unwrap();
    std::fs::create_dir(shown).unwrap();
    mount(&["--bind", "/etc", "/mnt/real"]);
    mount(&["-o", "remount,bind,ro", "/mnt/real"]);
    for entry in std::fs::read_dir(real).unwrap() {
        let name = entry.unwrap().file_name();
        if name != "localtime" {
            std::os::unix::fs::symlink(real.join(&name), shown.join(&name)).unwrap();
        }
    }
    std::os::unix::fs::symlink("/usr/share/zoneinfo/Asia/Tokyo", shown.join("localtime")).unwrap();
    mount(&["--bind", "/mnt/etc", "/etc"]);
}

/// A deadline is a moment in UTC whatever zone the host lives in: on a
/// host in Tokyo, nine hours ahead, an open for 30 minutes must not have
/// ended nine hours before it began.
fn deadlines_are_utc_on_a_host_in_another_zone(backend: Backend) {
    host_in_tokyo();
    opens_for_half_an_hour(backend);
}

#[test]
fn deadlines_are_utc_on_a_host_in_another_zone_with_iptables() {
    let test = "deadlines_are_utc_on_a_host_in_another_zone_with_iptables";
    if common::backend::enter_with_mounts(test, Backend::Iptables) {
        deadlines_are_utc_on_a_host_in_another_zone(Backend::Iptables);
    }
}

#[test]
fn deadlines_are_utc_on_a_host_in_another_zone_with_nftables() {
    let test = "deadlines_are_utc_on_a_host_in_another_zone_with_nftables";
    if common::backend::enter_with_mounts(test, Backend::Nftables) {
        deadlines_are_utc_on_a_host_in_another_zone(Backend::Nftables);
    }
}

/// nft takes `TZ` from its environment, and `TZ=UTC` is looked up as a zone
/// file first: portlocker gives it a POSIX rule no file can change, so a
/// damaged tzdata (here the file `UTC` leads to holding Tokyo's zone)
/// cannot move its deadlines. (iptables sets its own `TZ=UTC` inside, so it
/// follows that file whatever portlocker gives it.)
#[test]
fn nft_deadlines_do_not_depend_on_the_utc_zone_file() {
    let test = "nft_deadlines_do_not_depend_on_the_utc_zone_file";
    if !common::backend::enter_with_mounts(test, Backend::Nftables) {
        return;
    }
    let status = std::process::Command::new("mount")
        .args([
            "--bind",
            "/usr/share/zoneinfo/Asia/Tokyo",
            "/usr/share/zoneinfo/Etc/UTC",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    opens_for_half_an_hour(Backend::Nftables);
}
