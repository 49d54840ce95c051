//! `portlocker watch` for real, in private network namespaces: real
//! iptables or nftables, real connections to port 22 over IPv4 and IPv6,
//! the wipes of the managers that flush rulesets, an owner's edit, signals,
//! a program that keeps deleting portlocker's rules, a poke over a local
//! ntfy-style stream, a cron run beside it, and a soak. Every wait is on
//! the effect, with a generous bound; the speed is measured in benches/.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::TestEnv;
use common::backend::{self, Backend, IP6T, IPT, NFT};
use common::connect::{reachable, ssh_listeners};
use common::netns;
use common::stream::StreamServer;
use common::watcher::{Watcher, wait_for};

/// A config over the test directory's control file with `[watch]` lines
/// (and any other sections) after it.
fn watch_config(env: &TestEnv, watch: &str, more: &str) -> String {
    format!("{}\n[watch]\n{watch}\n{more}", env.local_config("", ""))
}

fn closed(addresses: &[SocketAddr; 2]) -> bool {
    addresses.iter().all(|&address| !reachable(address))
}

fn open(addresses: &[SocketAddr; 2]) -> bool {
    addresses.iter().all(|&address| reachable(address))
}

/// Runs a command inside the namespace, asserting success.
fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?}");
}

/// Feeds `input` to `program` on stdin, asserting success.
fn feed(program: &str, args: &[&str], input: &str) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{program} {args:?}");
}

fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A wipe: what it is, and the commands that make it.
type Wipe = (&'static str, Box<dyn Fn()>);

/// The wipes a manager or an admin makes.
fn wipes(backend: Backend) -> Vec<Wipe> {
    let mut wipes: Vec<Wipe> = vec![
        (
            "nft flush ruleset",
            Box::new(|| run(NFT, &["flush", "ruleset"])),
        ),
        (
            "nft -f of a ruleset that begins with flush ruleset (nftables.service)",
            Box::new(|| {
                feed(
                    NFT,
                    &["-f", "-"],
                    "flush ruleset\ntable inet filter {\n chain input { type filter hook input priority 0; }\n}\n",
                )
            }),
        ),
    ];
    match backend {
        Backend::Iptables => {
            wipes.push((
                "iptables -F in both families",
                Box::new(|| {
                    run(IPT, &["-w", "5", "-F"]);
                    run(IP6T, &["-w", "5", "-F"]);
                }),
            ));
            wipes.push((
                "a firewalld-style flush (-F -X -Z of filter in one restore)",
                Box::new(|| {
                    for restore in ["/sbin/iptables-restore", "/sbin/ip6tables-restore"] {
                        feed(restore, &["-w", "5"], "*filter\n-F\n-X\n-Z\nCOMMIT\n");
                    }
                }),
            ));
            wipes.push((
                "iptables-restore of a dump without --noflush (netfilter-persistent)",
                Box::new(|| {
                    let dump = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                                -A INPUT -p tcp --dport 8080 -j ACCEPT\nCOMMIT\n";
                    feed("/sbin/iptables-restore", &["-w", "5"], dump);
                    feed("/sbin/ip6tables-restore", &["-w", "5"], dump);
                }),
            ));
        }
        Backend::Nftables => {
            wipes.push((
                "nft delete table inet portlocker",
                Box::new(|| run(NFT, &["delete", "table", "inet", "portlocker"])),
            ));
            wipes.push((
                "nft flush chain inet portlocker input",
                Box::new(|| run(NFT, &["flush", "chain", "inet", "portlocker", "input"])),
            ));
        }
    }
    wipes
}

on_both_backends! {
    /// An edit to open takes effect, and one to close; SIGTERM ends watch
    /// with exit 0 and the closes kept.
    fn an_edit_takes_effect_and_sigterm_keeps_the_closes(backend: Backend) {
        let env = backend.env();
        let ssh = ssh_listeners();
        env.write_config(&watch_config(&env, "every = \"1s\"", ""));
        env.control("close ssh\n");
        let mut watcher = Watcher::start(&env, &[]);
        wait_for("ssh closed", || closed(&ssh));
        env.control("open ssh\n");
        wait_for("ssh open after the edit", || open(&ssh));
        env.control("close ssh\n");
        wait_for("ssh closed after the edit", || closed(&ssh));
        let rules = backend.snapshot();
        watcher.signal(libc::SIGTERM);
        assert_eq!(watcher.exit_code(), Some(0));
        assert_eq!(backend.snapshot(), rules, "the rules stay as they were");
        assert!(closed(&ssh));
        let err = std::fs::read_to_string(env.path("watch.err")).unwrap();
        assert_eq!(err, "", "a quiet watch prints nothing");
    }
}

on_both_backends! {
    /// Each wipe of the managers is undone by netfilter's news alone (the
    /// source is asked once an hour), in both families.
    fn every_wipe_is_undone(backend: Backend) {
        let env = backend.env();
        let ssh = ssh_listeners();
        env.write_config(&watch_config(&env, "every = \"1h\"", ""));
        env.control("close ssh\n");
        let want = |ipv6| backend.ours(ipv6);
        // Each repair says what was missing in the log.
        let repairs = || env.log().matches("portlocker's rules were missing").count();
        for (name, wipe) in wipes(backend) {
            // A watch of its own per wipe: five repairs in a row would be a fight.
            let _watcher = Watcher::start(&env, &[]);
            wait_for("ssh closed", || closed(&ssh) && !want(false).is_empty());
            let (v4, v6) = (want(false), want(true));
            let before = repairs();
            wipe();
            wait_for(name, || {
                repairs() > before
                    && want(false) == v4
                    && want(true) == v6
                    && backend.ways_in(false) == 1
                    && backend.ways_in(true) == 1
            });
            assert!(closed(&ssh), "after {name}");
        }
    }
}

/// iptables-legacy tells netfilter's news nothing: watch looks every second.
#[test]
fn a_legacy_wipe_is_undone_by_looking() {
    if !netns::enter_with_both_backends("a_legacy_wipe_is_undone_by_looking") {
        return;
    }
    let mut env = TestEnv::with_real_iptables();
    [env.iptables, env.ip6tables] = netns::LEGACY.map(Into::into);
    let ssh = ssh_listeners();
    env.write_config(&watch_config(&env, "every = \"1h\"", ""));
    env.control("close ssh\n");
    let _watcher = Watcher::start(&env, &[]);
    wait_for("ssh closed", || closed(&ssh));
    let before = (
        netns::rules(netns::LEGACY[0]),
        netns::rules(netns::LEGACY[1]),
    );
    for binary in netns::LEGACY {
        netns::iptables(binary, &["-F"]);
    }
    wait_for("the legacy rules back", || {
        (
            netns::rules(netns::LEGACY[0]),
            netns::rules(netns::LEGACY[1]),
        ) == before
    });
    assert!(closed(&ssh));
}

/// SIGHUP reads the config again; one that does not validate is refused
/// with an error, and the old one stays in force.
#[test]
fn sighup_takes_a_good_config_and_refuses_a_bad_one() {
    if !netns::enter("sighup_takes_a_good_config_and_refuses_a_bad_one") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    let ssh = ssh_listeners();
    env.write_config(&watch_config(&env, "every = \"1s\"", ""));
    env.control("close ssh\n");
    let mut watcher = Watcher::start(&env, &[]);
    wait_for("ssh closed", || closed(&ssh));
    // A good config: another control file, which opens ssh.
    std::fs::write(env.path("other.txt"), "open ssh\n").unwrap();
    let other = env.config_text(env.path("other.txt").to_str().unwrap(), "", "");
    env.write_config(&format!("{other}\n[watch]\nevery = \"1s\"\n"));
    watcher.signal(libc::SIGHUP);
    wait_for("ssh open from the other file", || open(&ssh));
    // A bad one: refused, the old one kept.
    env.write_config(
        "source = \"https://example.org/x\"\n[watch]\nevery = \"0s\"\n[services]\nssh = 22\n",
    );
    watcher.signal(libc::SIGHUP);
    let err = || std::fs::read_to_string(env.path("watch.err")).unwrap();
    wait_for("the refusal", || {
        err().contains("the config was not read again")
    });
    assert!(err().contains("watch.every"), "{}", err());
    std::fs::write(env.path("other.txt"), "close ssh\n").unwrap();
    wait_for("ssh closed by the kept config", || closed(&ssh));
    assert!(watcher.running());
    watcher.signal(libc::SIGTERM);
    assert_eq!(watcher.exit_code(), Some(0));
}

/// A config edited while watch runs is not left unread: the next cron run
/// (which leaves the work to watch) has it read the config again first.
#[test]
fn a_cron_run_after_a_config_edit_has_watch_read_it() {
    if !netns::enter("a_cron_run_after_a_config_edit_has_watch_read_it") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    let ssh = ssh_listeners();
    env.write_config(&watch_config(&env, "every = \"1h\"", ""));
    env.control("close ssh\n");
    let mut watcher = Watcher::start(&env, &[]);
    wait_for("ssh closed", || closed(&ssh));
    // The owner points the config at another file, which opens ssh.
    std::fs::write(env.path("other.txt"), "open ssh\n").unwrap();
    let other = env.config_text(env.path("other.txt").to_str().unwrap(), "", "");
    env.write_config(&format!("{other}\n[watch]\nevery = \"1h\"\n"));
    env.run(&[]).expect(0);
    let asked = "was asked to read the changed config, then run";
    assert!(env.log().contains(asked), "{}", env.log());
    wait_for("ssh open from the edited config", || open(&ssh));
    // Unchanged since: the next cron run only asks it to run.
    env.run(&[]).expect(0);
    assert!(
        env.log()
            .trim_end()
            .ends_with("this run left the work to it")
    );
    assert_eq!(env.log().matches(asked).count(), 1, "{}", env.log());
    // A run with another config on the same state directory is not left to
    // a watcher that will never read it: it fails, saying so.
    let other_config = env.path("other.toml");
    std::fs::copy(env.path("config.toml"), &other_config).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_portlocker"))
        .arg("-c")
        .arg(&other_config)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    common::Run::from(output).expect(1).says("not this run's");
    watcher.signal(libc::SIGTERM);
    assert_eq!(watcher.exit_code(), Some(0));
}

on_both_backends! {
    /// A program that keeps deleting portlocker's rules: watch puts them
    /// back a few times, then backs off, names the program and tells the
    /// owner once; the wipe itself is told once too.
    fn a_fight_ends_in_back_off_and_one_notice(backend: Backend) {
        let env = backend.env();
        let ssh = ssh_listeners();
        let notify = env.recording_command(0);
        env.write_config(&watch_config(&env, "every = \"1h\"", &notify));
        env.control("close ssh\n");
        let _watcher = Watcher::start(&env, &[]);
        wait_for("ssh closed", || closed(&ssh));
        let events = || -> Vec<String> {
            env.notices()
                .iter()
                .filter_map(|(vars, _)| {
                    vars.iter()
                        .find_map(|v| v.strip_prefix("PORTLOCKER_EVENT="))
                        .map(String::from)
                })
                .collect()
        };
        let delete = || match backend {
            // It may be gone already: repaired or not, it is deleted again.
            Backend::Nftables => {
                let _ = Command::new(NFT).args(["delete", "table", "inet", "portlocker"]).status();
            }
            Backend::Iptables => {
                let _ = Command::new(IPT).args(["-w", "5", "-F"]).status();
                let _ = Command::new(IPT).args(["-w", "5", "-X", "PORTLOCKER"]).status();
            }
        };
        let deadline = Instant::now() + common::watcher::PATIENCE;
        while !events().iter().any(|e| e == "contested") {
            assert!(Instant::now() < deadline, "no contested notice: {:?}", events());
            if !backend.ours(false).is_empty() {
                delete();
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        // Backing off: deleted once more, the rules stay away for a while.
        delete();
        let gone_at = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        assert!(backend.ours(false).is_empty(), "repaired at once during a fight");
        let notices = env.notices();
        let contested: Vec<&String> = notices
            .iter()
            .filter(|(vars, _)| vars.iter().any(|v| v == "PORTLOCKER_EVENT=contested"))
            .map(|(_, text)| text)
            .collect();
        assert_eq!(contested.len(), 1, "{notices:?}");
        let program = match backend {
            Backend::Nftables => "nft (pid ",
            Backend::Iptables => "iptables",
        };
        assert!(contested[0].contains(program), "{}", contested[0]);
        assert_eq!(events().iter().filter(|e| *e == "wiped").count(), 1, "{:?}", events());
        // Left alone, they come back after the pause.
        wait_for("the rules back after the pause", || !backend.ours(false).is_empty());
        assert!(gone_at.elapsed() >= Duration::from_secs(2));
        assert!(closed(&ssh));
    }
}

/// A poke on a local ntfy-style stream makes watch fetch at once (the
/// source is otherwise asked once an hour); a dropped stream is resumed
/// with `since=` the last message; every fetch goes over one kept-alive
/// connection; and watch listens on no socket.
#[test]
fn a_poke_fetches_at_once_over_one_connection_and_nothing_listens() {
    if !netns::enter("a_poke_fetches_at_once_over_one_connection_and_nothing_listens") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    let ssh = ssh_listeners();
    let server = StreamServer::start("close ssh\n");
    std::fs::write(env.path("ca.pem"), server.ca_pem()).unwrap();
    let fetch = format!("ca_file = {:?}", env.path("ca.pem"));
    let config = env.config_text(&server.url("/portlocker.txt"), &fetch, "");
    let watch = format!("every = \"1h\"\npoke = {:?}\n", server.url("/topic"));
    env.write_config(&format!("{config}\n[watch]\n{watch}"));
    let watcher = Watcher::start(&env, &[]);
    wait_for("ssh closed and the stream open", || {
        closed(&ssh) && server.subscribers() == 1
    });
    server.set_body("open ssh\n");
    assert_eq!(server.poke(), 1);
    wait_for("ssh open after the poke", || open(&ssh));
    // A poke after which the stream drops: resumed with since= its id.
    server.drop_streams_after_a_message();
    server.set_body("close ssh\n");
    server.poke();
    wait_for("the resumed stream", || {
        server
            .request_lines()
            .iter()
            .any(|l| l.contains("/topic/json?since=m2 "))
    });
    wait_for("ssh closed after the second poke", || closed(&ssh));
    let streams = server
        .request_lines()
        .iter()
        .filter(|l| l.contains("/json"))
        .count();
    let fetches = server.requests() - streams;
    assert!(fetches >= 3, "{:?}", server.request_lines());
    assert_eq!(
        server.connections() - streams,
        1,
        "every fetch over one connection: {:?}",
        server.request_lines()
    );
    // Nothing of the watcher's listens: TCP, UDP, raw or local.
    let listening = output("/usr/bin/ss", &["-lnptuwx"]);
    let mine = format!("pid={},", watcher.pid);
    assert!(!listening.contains(&mine), "{listening}");
}

on_both_backends! {
    /// Without watch: a run that finds portlocker's rules wiped says so,
    /// once per episode, with a notice; check fails until they are back.
    fn a_one_shot_run_tells_a_wipe_once(backend: Backend) {
        let env = backend.env();
        let notify = env.recording_command(0);
        env.write_config(&format!("{}\n{notify}", env.local_config("", "")));
        env.control("close ssh\nclose web\n");
        env.run(&[]).expect(0);
        env.run(&["check"]).expect(0);
        backend.wipe();
        let check = env.run(&["check"]);
        check.expect(1).says("portlocker's rules are missing");
        let run = env.run(&[]);
        run.expect(0).says("portlocker's rules were missing").says("ssh and web were reachable since at most ");
        env.run(&["check"]).expect(0);
        backend.wipe();
        let again = env.run(&[]);
        again.expect(0);
        assert_eq!(again.stderr, "", "the same episode is told once");
        let wiped: Vec<String> = env
            .notices()
            .into_iter()
            .filter(|(vars, _)| vars.iter().any(|v| v == "PORTLOCKER_EVENT=wiped"))
            .map(|(_, text)| text)
            .collect();
        assert_eq!(wiped.len(), 1, "{wiped:?}");
        assert!(wiped[0].contains("ssh and web were reachable"), "{}", wiped[0]);
    }
}

/// A cron run beside a live watch leaves the work to it and asks it to run
/// now; reset is refused while watch would put the rules back.
#[test]
fn a_cron_run_leaves_the_work_to_a_live_watch() {
    if !netns::enter("a_cron_run_leaves_the_work_to_a_live_watch") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    let ssh = ssh_listeners();
    env.write_config(&watch_config(&env, "every = \"1h\"", ""));
    env.control("close ssh\n");
    let _watcher = Watcher::start(&env, &[]);
    wait_for("ssh closed", || closed(&ssh));
    env.control("open ssh\n");
    let run = env.run(&[]);
    run.expect(0);
    assert_eq!(run.stderr, "");
    // The run itself changed nothing: watch did, when asked.
    wait_for("ssh open by watch", || open(&ssh));
    env.run(&["reset"])
        .expect(75)
        .says("portlocker watch (pid ")
        .says("stop it first");
    assert!(open(&ssh));
    // A run given its own control file is refused loudly, never left to
    // watch, which fetches the config's (hostile tester 9, F8: exit 0).
    let closing = env.path("closing.txt");
    std::fs::write(&closing, "close ssh\n").unwrap();
    env.run(&["--source", closing.to_str().unwrap()])
        .expect(75)
        .says("a run with --source would be undone by its next fetch, so nothing was done");
    // A second watch on the same state is refused.
    let mut second = Watcher::start(&env, &[]);
    assert_eq!(second.exit_code(), Some(75));
}

/// The watcher's footprint between its runs: the least of a few looks (a
/// run under way holds a child's pipes, a look its socket, for a moment).
fn settled_footprint(watcher: &Watcher) -> (u64, usize) {
    let looks: Vec<(u64, usize)> = (0..20)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            watcher.footprint()
        })
        .collect();
    let rss = looks.iter().map(|(rss, _)| *rss).max().unwrap();
    let fds = looks.iter().map(|(_, fds)| *fds).min().unwrap();
    (rss, fds)
}

/// Thousands of runs and repairs: the watcher's memory and descriptors stay flat.
#[test]
fn a_soak_of_runs_and_repairs_stays_flat() {
    if !backend::enter("a_soak_of_runs_and_repairs_stays_flat", Backend::Nftables) {
        return;
    }
    let iterations: usize = std::env::var("PORTLOCKER_SOAK_ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let env = Backend::Nftables.env();
    env.write_config(&watch_config(&env, "every = \"1h\"", ""));
    env.control("close ssh\n");
    let watcher = Watcher::start(&env, &[]);
    let table = || !backend::nft_table().is_empty();
    wait_for("the table", table);
    let mut before = None;
    for n in 0..iterations {
        if n == iterations / 3 {
            before = Some(settled_footprint(&watcher));
        }
        // A wipe, and a run asked at once: a repair each time.
        run(NFT, &["delete", "table", "inet", "portlocker"]);
        watcher.signal(libc::SIGUSR1);
        wait_for("the table back", table);
    }
    let (rss_before, fds_before) = before.unwrap();
    let (rss_after, fds_after) = settled_footprint(&watcher);
    eprintln!(
        "soak: {iterations} repairs; RSS {rss_before} → {rss_after} kB, fds {fds_before} → {fds_after}"
    );
    assert!(fds_after <= fds_before, "descriptors leak");
    assert!(
        rss_after <= rss_before + 512,
        "RSS grew from {rss_before} kB to {rss_after} kB"
    );
}

/// A storm of SIGHUPs (found attacking watch): each reload used to start a
/// new poke thread while the old one waited on its stream, and to fetch at
/// once. Now the same poke keeps its thread and its stream, and reloads
/// fetch no more often than pokes.
#[test]
fn a_sighup_storm_costs_no_threads_streams_or_fetches() {
    if !netns::enter("a_sighup_storm_costs_no_threads_streams_or_fetches") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    let server = StreamServer::start("close ssh\n");
    std::fs::write(env.path("ca.pem"), server.ca_pem()).unwrap();
    let fetch = format!("ca_file = {:?}", env.path("ca.pem"));
    let config = env.config_text(&server.url("/portlocker.txt"), &fetch, "");
    let watch = format!("every = \"1h\"\npoke = {:?}\n", server.url("/topic"));
    env.write_config(&format!("{config}\n[watch]\n{watch}"));
    let watcher = Watcher::start(&env, &["-v"]);
    wait_for("the stream open", || server.subscribers() == 1);
    let threads = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", watcher.pid)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap()
    };
    let (threads_before, requests_before) = (threads(), server.requests());
    let storm = Instant::now();
    let mut reloads = 0;
    let read_again = || {
        std::fs::read_to_string(env.path("watch.err"))
            .unwrap()
            .matches("the config was read again")
            .count()
    };
    while reloads < 20 {
        watcher.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(5));
        reloads = read_again();
    }
    let lasted = storm.elapsed();
    let streams = server
        .request_lines()
        .iter()
        .filter(|l| l.contains("/json"))
        .count();
    assert_eq!(
        streams,
        1,
        "the stream was opened again: {:?}",
        server.request_lines()
    );
    assert!(
        threads() <= threads_before + 2,
        "{} threads, {threads_before} before",
        threads()
    );
    let fetches = server.requests() - requests_before;
    let allowed = 2 + lasted.as_secs() as usize / 2;
    assert!(
        fetches <= allowed,
        "{fetches} fetches in {lasted:?} of reloads"
    );
}

/// A repair by watch fetches nothing but is no boot run: its notice is
/// posted to notify.url (it was withheld as from an --offline run).
#[test]
fn a_repair_by_watch_posts_its_notice() {
    if !backend::enter("a_repair_by_watch_posts_its_notice", Backend::Nftables) {
        return;
    }
    use common::https::{Reply, TlsServer};
    let env = Backend::Nftables.env();
    let notices = TlsServer::start(Reply::Status("200 OK"));
    notices.write_ca(&env.path("ca.pem"));
    let fetch = format!("ca_file = {:?}", env.path("ca.pem"));
    let source = env.path("control.txt");
    let config = env.config_text(source.to_str().unwrap(), &fetch, "");
    let notify = format!("[notify]\nurl = {:?}\n", notices.url("/topic"));
    env.write_config(&format!("{config}\n[watch]\nevery = \"1h\"\n{notify}"));
    env.control("close ssh\n");
    let _watcher = Watcher::start(&env, &[]);
    wait_for("the table", || !backend::nft_table().is_empty());
    run(NFT, &["flush", "ruleset"]);
    wait_for("the wipe's notice posted", || {
        notices
            .bodies()
            .iter()
            .any(|body| body.contains("rules were wiped"))
    });
}

/// A watcher that holds its lock but has stopped looking (stuck, stopped)
/// is not left the work: a cron run does it, and says so once.
#[test]
fn a_cron_run_does_the_work_of_a_stuck_watch_and_says_so_once() {
    let env = TestEnv::with_fake_iptables();
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    // Another process holds the watch lock; its last beat is long past.
    let held = std::fs::File::options()
        .read(true)
        .write(true)
        .open(env.path("state/watch"))
        .or_else(|_| std::fs::File::create(env.path("state/watch")))
        .unwrap();
    held.try_lock().unwrap();
    std::fs::write(env.path("state/watch"), "4242 1000000000\n").unwrap();
    env.control("open ssh\n");
    env.forget_calls();
    let run = env.run(&[]);
    run.expect(0)
        .says("portlocker watch (pid 4242) holds its lock but has not looked since");
    assert!(!env.changing_calls().is_empty(), "the run did the work");
    let again = env.run(&[]);
    again.expect(0);
    assert_eq!(again.stderr, "", "told once");
    drop(held);
}

/// Rules removed by `portlocker reset` are gone on purpose: the next run
/// puts them back without telling a wipe.
#[test]
fn a_run_after_reset_tells_no_wipe() {
    let env = TestEnv::with_fake_iptables();
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    env.run(&["reset"]).expect(0);
    let run = env.run(&[]);
    run.expect(0);
    assert_eq!(run.stderr, "");
    assert!(!env.log().contains("rules were missing"), "{}", env.log());
}

/// A watch of an HTTPS source on loopback that says `close ssh`, asked
/// every second, each fetch given `timeout_secs`.
fn watching_https(env: &TestEnv, timeout_secs: u64) -> (common::https::TlsServer, Watcher) {
    use common::https::{Reply, TlsServer};
    let server = TlsServer::start(Reply::Body {
        body: b"close ssh\n".to_vec(),
        content_type: "text/plain",
    });
    server.write_ca(&env.path("ca.pem"));
    let fetch = format!(
        "ca_file = {:?}\ntimeout_secs = {timeout_secs}",
        env.path("ca.pem")
    );
    let config = env.config_text(&server.url("/portlocker.txt"), &fetch, "");
    env.write_config(&format!("{config}\n[watch]\nevery = \"1s\"\n"));
    (server, Watcher::start(env, &[]))
}

/// A config watch reads again (SIGHUP) is the one kept for a run whose
/// config is broken: at boot after a bad edit, a service the reload added
/// stays closed (hostile tester 9, F2: the copy was the config before).
#[test]
fn a_config_watch_reads_again_is_kept_for_a_broken_one() {
    if !netns::enter("a_config_watch_reads_again_is_kept_for_a_broken_one") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    let first = watch_config(&env, "every = \"1s\"", "");
    env.write_config(&first.replace(common::SERVICES, "ssh = 22\n"));
    env.control("close ssh\n");
    let mut watcher = Watcher::start(&env, &[]);
    let has_backup = || netns::rules(IPT).contains("--dport 873 ");
    wait_for("ssh closed", || netns::rules(IPT).contains("--dport 22 "));
    env.write_config(&first.replace(common::SERVICES, "ssh = 22\nbackup = 873\n"));
    watcher.signal(libc::SIGHUP);
    env.control("close ssh\nclose backup\n");
    wait_for("backup closed by the config read again", has_backup);
    watcher.signal(libc::SIGTERM);
    assert_eq!(watcher.exit_code(), Some(0));
    // A bad edit, then a reboot: the boot run enforces the kept config.
    env.write_config(&format!("{first}\n[services\n"));
    for binary in [IPT, IP6T] {
        run(binary, &["-F"]);
        run(binary, &["-X"]);
    }
    env.run(&["--offline"]).expect(1);
    assert!(has_backup(), "backup left open:\n{}", netns::rules(IPT));
}

/// A hung ip6tables does not hold back IPv4's repairs run after run: watch
/// remembers a program that hung and does not wait on it again for a
/// while, so a wipe of IPv4 is put back at once (hostile tester 9, F6: each
/// look and repair waited out the hung calls, 84 s with the defaults).
#[test]
fn a_hung_ip6tables_does_not_hold_back_ipv4_repairs() {
    if !netns::enter("a_hung_ip6tables_does_not_hold_back_ipv4_repairs") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    let ssh = ssh_listeners();
    for name in ["ip6hang", "ip6hang-restore"] {
        common::write_program(&env.path(name), "#!/bin/sh\nexec sleep 3600\n");
    }
    let (ip6tables, restore) = (env.path("ip6hang"), env.path("ip6hang-restore"));
    let firewall = format!(
        "ip6tables = {ip6tables:?}\nip6tables_restore = {restore:?}\ncommand_timeout_secs = 20"
    );
    let config = env.local_config("", "").replace(
        &format!("ip6tables = {:?}\n", env.ip6tables),
        &format!("{firewall}\n"),
    );
    env.write_config(&format!("{config}\n[watch]\nevery = \"1h\"\n"));
    env.control("close ssh\n");
    let _watcher = Watcher::start(&env, &[]);
    wait_for("IPv4 ssh closed", || !reachable(ssh[0]));
    run(IPT, &["-w", "5", "-F"]);
    wait_for("the IPv4 wipe put back", || {
        netns::rules(IPT).contains("-A PORTLOCKER")
    });
    assert!(!reachable(ssh[0]));
}

/// A source that never answers: each fetch ends at fetch.timeout_secs, the
/// rules stay closed and wipes are still put back, and the fetches it
/// abandoned do not pile up threads.
#[test]
fn a_hanging_source_neither_stops_repairs_nor_piles_up_threads() {
    if !backend::enter(
        "a_hanging_source_neither_stops_repairs_nor_piles_up_threads",
        Backend::Nftables,
    ) {
        return;
    }
    let env = Backend::Nftables.env();
    let ssh = ssh_listeners();
    let (server, watcher) = watching_https(&env, 1);
    wait_for("ssh closed", || closed(&ssh));
    server.set_reply(common::https::Reply::Hang);
    let threads = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", watcher.pid)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap()
    };
    let hung = server.requests.load(std::sync::atomic::Ordering::SeqCst);
    // Failures back off: 1 s, 2 s, 4 s … after each timed-out fetch.
    wait_for("three fetches to the hanging source", || {
        server.requests.load(std::sync::atomic::Ordering::SeqCst) >= hung + 3
    });
    run(NFT, &["flush", "ruleset"]);
    wait_for("the wipe put back", || !backend::nft_table().is_empty());
    assert!(closed(&ssh));
    assert!(threads() <= 8, "{} threads", threads());
}

/// A source that keeps a fetch waiting (here for up to ten minutes) does
/// not hold up a repair: watch fetches in a thread of its own, and a wipe
/// made while the fetch waits is put back at once, not once it ends.
#[test]
fn a_wipe_while_a_fetch_waits_is_put_back_at_once() {
    if !backend::enter(
        "a_wipe_while_a_fetch_waits_is_put_back_at_once",
        Backend::Nftables,
    ) {
        return;
    }
    use std::sync::atomic::Ordering::SeqCst;
    let env = Backend::Nftables.env();
    let ssh = ssh_listeners();
    let (server, _watcher) = watching_https(&env, 600);
    wait_for("ssh closed", || closed(&ssh));
    server.set_reply(common::https::Reply::Hang);
    let before = server.requests.load(SeqCst);
    wait_for("a fetch the source keeps waiting", || {
        server.requests.load(SeqCst) > before
    });
    run(NFT, &["flush", "ruleset"]);
    wait_for("the wipe put back while the fetch waits", || {
        !backend::nft_table().is_empty()
    });
    assert!(closed(&ssh));
    assert_eq!(
        server.requests.load(SeqCst),
        before + 1,
        "one fetch at a time"
    );
}

/// logrotate moves the log away and creates a new one: watch, which keeps
/// its log open for days, writes to the new file from its next run on.
#[test]
fn a_rotated_log_is_opened_again() {
    if !netns::enter("a_rotated_log_is_opened_again") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    let ssh = ssh_listeners();
    env.write_config(&watch_config(&env, "every = \"1s\"", ""));
    env.control("close ssh\n");
    let _watcher = Watcher::start(&env, &[]);
    wait_for("ssh closed", || closed(&ssh));
    std::fs::rename(env.path("portlocker.log"), env.path("portlocker.log.1")).unwrap();
    std::fs::write(env.path("portlocker.log"), "").unwrap();
    env.control("open ssh\n");
    wait_for("ssh open", || open(&ssh));
    wait_for("the run logged in the new file", || {
        env.log().contains("IPv4: open ssh")
    });
    assert!(
        !std::fs::read_to_string(env.path("portlocker.log.1"))
            .unwrap()
            .contains("open ssh"),
        "logged to the rotated file"
    );
}

/// stdin can be read once: watch refuses it as its source (exit 2).
#[test]
fn watch_refuses_stdin_as_its_source() {
    let env = TestEnv::with_fake_iptables();
    env.run(&["--source", "-", "watch"])
        .expect(2)
        .says("not stdin");
}

/// With watch running and the config broken, a cron run says what is wrong
/// with the config and that watch keeps the one it read — not that watch
/// runs "another config" (hostile tester 12, F9).
#[test]
fn a_cron_run_with_a_broken_config_beside_watch_says_what_is_broken() {
    if !netns::enter("a_cron_run_with_a_broken_config_beside_watch_says_what_is_broken") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    let ssh = ssh_listeners();
    let config = watch_config(&env, "every = \"1h\"", "");
    env.write_config(&config);
    env.control("close ssh\n");
    let _watcher = Watcher::start(&env, &[]);
    wait_for("ssh closed", || closed(&ssh));
    // A run takes the config in use as the last one it could use.
    env.write_config(&format!("bogus_key = 1\n{config}"));
    let run = env.run(&[]);
    run.expect(1)
        .says("bogus_key")
        .says("keeps the config it last read");
    assert!(!run.stderr.contains("another config"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("runs with the config"),
        "{}",
        run.stderr
    );
    assert!(closed(&ssh));
}
