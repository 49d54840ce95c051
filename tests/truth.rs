//! Rules that mean what they say, and a status that tells the truth: real
//! iptables and ip6tables in a private network namespace, real TCP
//! connections, and what `status`, `status --json`, the page and the
//! metrics say about the same rules.

mod common;

use std::fs;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::TestEnv;
use common::netns::{self, rules};
use socket2::{Domain, Socket, Type};

const IPT: &str = "/sbin/iptables";
const IP6T: &str = "/sbin/ip6tables";

/// How long a connection attempt may take before a dropped SYN counts as
/// unreachable. A loopback connect that is not dropped completes at once.
const CONNECT_WAIT: Duration = Duration::from_millis(700);

/// Listens on each of `ports` on every IPv4 and IPv6 address.
fn listeners(ports: &[u16]) {
    for &port in ports {
        for ip in ["0.0.0.0", "::"] {
            let address = SocketAddr::new(ip.parse().unwrap(), port);
            let socket = Socket::new(Domain::for_address(address), Type::STREAM, None).unwrap();
            if address.is_ipv6() {
                socket.set_only_v6(true).unwrap();
            }
            socket.set_reuse_address(true).unwrap();
            socket.bind(&address.into()).unwrap();
            socket.listen(128).unwrap();
            let listener: TcpListener = socket.into();
            std::thread::spawn(move || for _ in listener.incoming() {});
        }
    }
}

/// Whether a new connection from `from` to `to`:`port` gets through within `wait`.
fn connects(from: &str, to: &str, port: u16, wait: Duration) -> bool {
    let from: IpAddr = from.parse().unwrap();
    let to = SocketAddr::new(to.parse().unwrap(), port);
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
    match socket.connect_timeout(&to.into(), wait) {
        Ok(()) => true,
        Err(error) if error.kind() == std::io::ErrorKind::TimedOut => false,
        Err(error) => panic!("{from} -> {to}: unexpected {error}"),
    }
}

fn reaches(from: &str, to: &str, port: u16) -> bool {
    connects(from, to, port, CONNECT_WAIT)
}

fn both() -> (String, String) {
    (rules(IPT), rules(IP6T))
}

/// The `-A INPUT` lines of `binary -S INPUT`.
fn input(binary: &str) -> Vec<String> {
    let output = Command::new(binary)
        .args(["-w", "5", "-S", "INPUT"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{binary} -S INPUT failed");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|line| line.starts_with("-A INPUT "))
        .map(String::from)
        .collect()
}

/// A config of `env` with a metrics file, `firewall` lines, and `services`
/// instead of the usual ones when given.
fn configure(env: &TestEnv, firewall: &str, services: Option<&str>) {
    let mut text = format!(
        "metrics_file = {:?}\n{}",
        env.path("portlocker.prom"),
        env.local_config("", firewall)
    );
    if let Some(services) = services {
        text = text.replace(common::SERVICES, services);
    }
    env.write_config(&text);
}

/// The real iptables with a metrics file.
fn real_env(firewall: &str) -> TestEnv {
    let env = TestEnv::with_real_iptables();
    configure(&env, firewall, None);
    env
}

/// An environment whose config names `bin/iptables` and `bin/ip6tables` in
/// its directory: wrappers that pass every call to the real one, except
/// that while `unreadable-NAME` exists, NAME fails its listings (`-S`):
/// every one when the file is empty, else that of the chain it names.
fn wrapped_env() -> TestEnv {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    for (name, real) in [("iptables", IPT), ("ip6tables", IP6T)] {
        let flag = dir.path().join(format!("unreadable-{name}"));
        let script = format!(
            "#!/bin/sh\n\
             refuse() {{ echo '{name}: listing refused by the test' >&2; exit 4; }}\n\
             if [ -e '{flag}' ]; then\n\
             \x20   only=$(cat '{flag}')\n\
             \x20   listing=no\n\
             \x20   for arg in \"$@\"; do\n\
             \x20       if [ $listing = yes ] && [ \"$arg\" = \"$only\" ]; then refuse; fi\n\
             \x20       if [ \"$arg\" = -S ]; then [ -z \"$only\" ] && refuse; listing=yes; fi\n\
             \x20   done\n\
             fi\n\
             exec {real} \"$@\"\n",
            flag = flag.display(),
        );
        common::write_program(&bin.join(name), &script);
    }
    let env = TestEnv {
        iptables: bin.join("iptables"),
        ip6tables: bin.join("ip6tables"),
        dir,
        backend: String::new(),
    };
    configure(&env, "", None);
    env
}

/// Makes the wrapper `name` ("iptables" or "ip6tables") fail its listings:
/// `Some("")` every one, `Some(CHAIN)` that chain's; `None` none.
fn unreadable(env: &TestEnv, name: &str, listings: Option<&str>) {
    let flag = env.path(&format!("unreadable-{name}"));
    match listings {
        Some(chain) => fs::write(flag, chain).unwrap(),
        None => fs::remove_file(flag).unwrap(),
    }
}

/// What the four outputs say of one service in one family ("IPv4" or
/// "IPv6"); the first three spelled as `status` spells states.
#[derive(Debug)]
struct Views {
    /// `portlocker status`, read from the firewall now.
    status: String,
    /// `portlocker status --json`, read from the firewall now.
    json: String,
    /// The status page of the last run.
    page: String,
    /// `portlocker_service_closed` in the metrics of the last run; None when absent.
    metric: Option<String>,
}

impl Views {
    #[track_caller]
    fn assert_all(&self, state: &str) {
        assert_eq!(
            [&self.status, &self.json, &self.page],
            [state; 3],
            "{self:#?}"
        );
    }
}

fn views(env: &TestEnv, service: &str, family: &str) -> Views {
    let column = match family {
        "IPv4" => 2,
        "IPv6" => 3,
        other => panic!("no family {other}"),
    };
    let text = env.run(&["status"]).stdout;
    // A cell not as asked says so, `closed (asked: open)`: one word here.
    let lines: Vec<String> = text
        .lines()
        .map(|line| line.replace(" (asked: ", "(asked:"))
        .collect();
    let row: Vec<&str> = lines
        .iter()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|words| words.first() == Some(&service))
        .unwrap_or_else(|| panic!("no {service} in status:\n{text}"));
    let status = row[column].split("(asked:").next().unwrap().to_owned();

    let document = env.run(&["status", "--json"]).stdout;
    let document: serde_json::Value = serde_json::from_str(&document)
        .unwrap_or_else(|error| panic!("status --json: {error}:\n{document}"));
    let services = document["services"].as_array().unwrap();
    let entry = services
        .iter()
        .find(|entry| entry["name"] == service)
        .unwrap_or_else(|| panic!("no {service} in {document}"));
    let json = entry["state"][family.to_lowercase()]
        .as_str()
        .unwrap_or_else(|| panic!("no {family} state in {entry}"))
        .replace(' ', "-");

    let page = env.status_page().expect("no status page");
    let item = page
        .split("<li class=\"service\"")
        .find(|item| item.starts_with(&format!(" data-service=\"{service}\"")))
        .unwrap_or_else(|| panic!("no {service} on the page:\n{page}"));
    let marker = format!("data-family=\"{family}\">{family} ");
    let (_, after) = item
        .split_once(&marker)
        .unwrap_or_else(|| panic!("no {family} state for {service} on the page: {item}"));
    // The words of the state, without what the page adds when it is not as asked.
    let shown = after.split('<').next().unwrap();
    let page = shown.trim_end().replace(' ', "-");

    let metrics = fs::read_to_string(env.path("portlocker.prom")).unwrap_or_default();
    let sample = format!(
        "portlocker_service_closed{{service=\"{service}\",family=\"{}\"}} ",
        family.to_lowercase()
    );
    let metric = metrics
        .lines()
        .find_map(|line| line.strip_prefix(&sample))
        .map(String::from);
    Views {
        status,
        json,
        page,
        metric,
    }
}

// A source rule in portlocker's chain returns to INPUT; in INPUT it accepts.

#[test]
fn an_open_from_a_source_lets_a_ban_further_down_input_apply() {
    if !netns::enter("an_open_from_a_source_lets_a_ban_further_down_input_apply") {
        return;
    }
    listeners(&[22]);
    let env = real_env("");
    env.control("open ssh from 127.0.0.2\n");
    env.run(&[]).expect(0);
    assert!(
        reaches("127.0.0.2", "127.0.0.1", 22),
        "the source was not let in"
    );
    assert!(
        !reaches("127.0.0.3", "127.0.0.1", 22),
        "another source got in"
    );

    // The owner bans the address further down INPUT, below portlocker's jump.
    let ban = ["-w", "5", "-A", "INPUT", "-s", "127.0.0.2", "-j", "DROP"];
    netns::iptables(IPT, &ban);
    let chain = input(IPT);
    assert!(
        chain[0].ends_with("-j PORTLOCKER") && chain.last().unwrap().contains("-s 127.0.0.2/32"),
        "{chain:?}"
    );
    assert!(
        !reaches("127.0.0.2", "127.0.0.1", 22),
        "portlocker's source rule let a banned address past the owner's DROP"
    );
    assert!(!reaches("127.0.0.3", "127.0.0.1", 22));
    // The only source opened is banned: not as asked, and the run says by what.
    env.run(&[]).expect(1).says(
        "`-A INPUT -s 127.0.0.2/32 -j DROP` is not portlocker's and closes it to 127.0.0.2/32",
    );
    assert!(
        !reaches("127.0.0.2", "127.0.0.1", 22),
        "a run let the banned address in"
    );
    let table = rules(IPT);
    assert!(
        table.contains(
            "-A PORTLOCKER -s 127.0.0.2/32 -p tcp -m tcp --dport 22 -m comment --comment \"portlocker:ssh\" -j RETURN"
        ),
        "{table}"
    );

    // One of two sources banned: not as asked either (it was called OK).
    env.control("open ssh from 127.0.0.2\nopen ssh from 127.0.0.4\n");
    env.run(&[])
        .expect(1)
        .says("ssh 22/tcp is closed to sources the control file opens it to")
        .says("closes it to 127.0.0.2/32");
    assert!(reaches("127.0.0.4", "127.0.0.1", 22));
    let metrics = std::fs::read_to_string(env.path("portlocker.prom")).unwrap();
    assert!(
        metrics.contains("portlocker_service_as_asked{service=\"ssh\",family=\"ipv4\"} 0"),
        "{metrics}"
    );

    let lift = ["-w", "5", "-D", "INPUT", "-s", "127.0.0.2", "-j", "DROP"];
    netns::iptables(IPT, &lift);
    assert!(reaches("127.0.0.2", "127.0.0.1", 22));
    env.run(&[]).expect(0);
}

#[test]
fn in_input_an_open_from_a_source_accepts() {
    if !netns::enter("in_input_an_open_from_a_source_accepts") {
        return;
    }
    listeners(&[22]);
    let env = real_env("chain = \"INPUT\"");
    env.control("open ssh from 127.0.0.2\n");
    env.run(&[]).expect(0);
    let chain = input(IPT);
    assert_eq!(
        chain,
        [
            "-A INPUT -s 127.0.0.2/32 -p tcp -m tcp --dport 22 -m comment --comment \"portlocker:ssh\" -j ACCEPT",
            "-A INPUT -p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment \"portlocker:ssh\" -j DROP",
        ]
    );
    assert!(reaches("127.0.0.2", "127.0.0.1", 22));
    assert!(!reaches("127.0.0.3", "127.0.0.1", 22));
}

// Sources that can never be honoured, and sources written the IPv4 way.

#[test]
fn every_address_as_a_source_is_refused_and_changes_nothing() {
    if !netns::enter("every_address_as_a_source_is_refused_and_changes_nothing") {
        return;
    }
    let env = real_env("");
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    let before = both();
    for (text, line) in [
        (
            "close web\nopen ssh from 0.0.0.0/0\n",
            "line 2: `from 0.0.0.0/0` is every IPv4 address",
        ),
        (
            "close web\n# everyone\nopen ssh from ::/0\n",
            "line 3: `from ::/0` is every IPv6 address",
        ),
    ] {
        env.control(text);
        env.run(&[]).expect(1).says(line);
        assert_eq!(both(), before, "{text:?} changed the firewall");
    }
}

#[test]
fn ipv6_sources_written_the_ipv4_way_converge() {
    if !netns::enter("ipv6_sources_written_the_ipv4_way_converge") {
        return;
    }
    let env = real_env("");
    for text in [
        "open ssh from ::1.2.3.4\n",
        "open ssh from ::ffff:1.2.3.4\n",
        "open ssh from ::1.2.3.4\nopen ssh from ::ffff:1.2.3.4\n",
    ] {
        env.control(text);
        env.run(&[]).expect(0);
        let first = both();
        let run = env.run(&[]);
        run.expect(0);
        assert_eq!(both(), first, "{text:?}: a second run changed the rules");
        let last = env.log().lines().last().unwrap_or_default().to_owned();
        assert!(last.contains(": no change;"), "{text:?}: {last}");
        assert_eq!(
            first.1.matches("-j RETURN").count(),
            text.lines().count(),
            "{text:?}:\n{}",
            first.1
        );
        let v6 = views(&env, "ssh", "IPv6");
        v6.assert_all("open-to-sources");
        assert_eq!(v6.metric.as_deref(), Some("0"), "{text:?}");
        views(&env, "ssh", "IPv4").assert_all("closed");
    }
}

// status, status --json, the page and the metrics say what the rules do.

#[test]
fn an_accept_of_the_owners_in_portlockers_chain_is_not_closed() {
    if !netns::enter("an_accept_of_the_owners_in_portlockers_chain_is_not_closed") {
        return;
    }
    listeners(&[22]);
    let env = real_env("");
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    assert!(!reaches("127.0.0.1", "127.0.0.1", 22));
    views(&env, "ssh", "IPv4").assert_all("closed");

    let accept = [
        "-w",
        "5",
        "-I",
        "PORTLOCKER",
        "1",
        "-p",
        "tcp",
        "--dport",
        "22",
    ];
    netns::iptables(IPT, &[&accept[..], &["-j", "ACCEPT"]].concat());
    assert!(reaches("127.0.0.1", "127.0.0.1", 22));
    let run = env.run(&[]);
    assert!(
        reaches("127.0.0.1", "127.0.0.1", 22),
        "the owner's rule is not portlocker's to remove"
    );
    let v4 = views(&env, "ssh", "IPv4");
    v4.assert_all("open");
    assert_eq!(v4.metric.as_deref(), Some("0"), "{v4:#?}");
    run.expect(1).says(
        "IPv4: ssh 22/tcp should be closed but is open: `-A PORTLOCKER -p tcp -m tcp --dport 22 -j ACCEPT` lets it through first",
    );
    assert!(!reaches("::1", "::1", 22));
    let v6 = views(&env, "ssh", "IPv6");
    v6.assert_all("closed");
    assert_eq!(v6.metric.as_deref(), Some("1"));
}

#[test]
fn in_input_an_accept_above_the_drops_is_not_closed() {
    if !netns::enter("in_input_an_accept_above_the_drops_is_not_closed") {
        return;
    }
    listeners(&[22]);
    let env = real_env("chain = \"INPUT\"");
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    assert!(!reaches("127.0.0.1", "127.0.0.1", 22));
    let accept = [
        "-I", "INPUT", "1", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
    ];
    netns::iptables(IPT, &accept);
    assert!(reaches("127.0.0.1", "127.0.0.1", 22));
    let run = env.run(&[]);
    assert!(reaches("127.0.0.1", "127.0.0.1", 22));
    let v4 = views(&env, "ssh", "IPv4");
    v4.assert_all("open");
    assert_eq!(v4.metric.as_deref(), Some("0"), "{v4:#?}");
    run.expect(1).says(
        "IPv4: ssh 22/tcp should be closed but is open: `-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT` lets it through first",
    );
    views(&env, "ssh", "IPv6").assert_all("closed");
}

#[test]
fn a_leftover_drop_of_the_2014_script_is_closed_and_named_with_its_removal() {
    if !netns::enter("a_leftover_drop_of_the_2014_script_is_closed_and_named_with_its_removal") {
        return;
    }
    listeners(&[22]);
    let env = real_env("");
    netns::iptables(
        IPT,
        &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP"],
    );
    env.control("open ssh\n");
    // A lockout fails the run: cron hears of it, with the rule and its removal.
    let run = env.run(&[]);
    run.expect(1);
    assert!(!reaches("127.0.0.1", "127.0.0.1", 22));
    let v4 = views(&env, "ssh", "IPv4");
    v4.assert_all("closed");
    assert_eq!(v4.metric.as_deref(), Some("1"));
    assert!(reaches("::1", "::1", 22));
    views(&env, "ssh", "IPv6").assert_all("open");
    // Every view says it is not as asked, and names the rule.
    let page = env.status_page().unwrap();
    assert!(
        page.contains("Not as asked: ssh closed over IPv4 (asked: open)"),
        "{page}"
    );
    let status = env.run(&["status"]).stdout;
    assert!(status.contains("closed (asked: open)"), "{status}");
    let document: serde_json::Value =
        serde_json::from_str(&env.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(document["outcome"], "not_as_asked");
    let ipv4 = &document["services"][0]["families"]["ipv4"];
    assert_eq!(
        (&ipv4["state"], &ipv4["asked"], &ipv4["as_asked"]),
        (&"closed".into(), &"open".into(), &false.into())
    );
    assert_eq!(
        ipv4["reason"],
        "dropped by `-A INPUT -p tcp -m tcp --dport 22 -j DROP`"
    );
    let metrics = fs::read_to_string(env.path("portlocker.prom")).unwrap();
    assert!(
        metrics.contains("portlocker_service_as_asked{service=\"ssh\",family=\"ipv4\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portlocker_last_run_success 0"),
        "{metrics}"
    );

    let rule = "IPv4: ssh 22/tcp is closed, but the control file opens it: dropped by \
                `-A INPUT -p tcp -m tcp --dport 22 -j DROP`; it is not portlocker's";
    assert_eq!(run.stderr.matches(rule).count(), 1, "{}", run.stderr);
    // Told once: the next run fails as quietly as cron needs.
    assert_eq!(env.run(&[]).expect(1).stderr, "");
    assert_eq!(
        run.stderr.matches("is not portlocker's").count(),
        1,
        "{}",
        run.stderr
    );
    let (_, after) = run.stderr.split_once("remove it with `").unwrap();
    let remove = after.split('`').next().unwrap();
    assert_eq!(
        remove,
        "/sbin/iptables -w 10 -D INPUT -p tcp -m tcp --dport 22 -j DROP"
    );
    let words: Vec<&str> = remove.split_whitespace().collect();
    netns::iptables(words[0], &words[1..]);
    assert!(
        reaches("127.0.0.1", "127.0.0.1", 22),
        "the named command did not open the port"
    );
    // The next run works, and says so once: cron heard of the lockout.
    let run = env.run(&[]);
    assert!(
        run.expect(0)
            .stderr
            .starts_with("[WARN] runs work again: the failure since "),
        "{}",
        run.stderr
    );
    let v4 = views(&env, "ssh", "IPv4");
    v4.assert_all("open");
    assert_eq!(v4.metric.as_deref(), Some("0"));
}

#[test]
fn a_port_another_services_rule_closes_shows_closed() {
    if !netns::enter("a_port_another_services_rule_closes_shows_closed") {
        return;
    }
    listeners(&[80, 443]);
    let env = TestEnv::with_real_iptables();
    configure(&env, "", Some("web = [80, 443]\nhttpd = 80\n"));
    env.control("close web\nopen httpd\n");
    // httpd is closed, though asked open: the run says so, and fails.
    env.run(&[])
        .expect(1)
        .says("it shares 80/tcp with web, which the control file closes");
    for (from, to) in [("127.0.0.1", "127.0.0.1"), ("::1", "::1")] {
        assert!(!reaches(from, to, 80), "{to} :80");
        assert!(!reaches(from, to, 443), "{to} :443");
    }
    for family in ["IPv4", "IPv6"] {
        for service in ["httpd", "web"] {
            let seen = views(&env, service, family);
            seen.assert_all("closed");
            assert_eq!(seen.metric.as_deref(), Some("1"), "{service}: {seen:#?}");
        }
    }
}

#[test]
fn an_unreadable_family_is_unknown_never_closed() {
    if !netns::enter("an_unreadable_family_is_unknown_never_closed") {
        return;
    }
    listeners(&[22]);
    let env = wrapped_env();
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    views(&env, "ssh", "IPv6").assert_all("closed");

    // Every listing fails, or only that of portlocker's chain (INPUT reads).
    for listings in ["", "PORTLOCKER"] {
        unreadable(&env, "ip6tables", Some(listings));
        env.run(&[]).expect(1);
        assert!(!reaches("::1", "::1", 22), "the rules themselves stay");
        let v6 = views(&env, "ssh", "IPv6");
        v6.assert_all("unknown");
        assert_eq!(v6.metric, None, "{listings:?}");
        let metrics = fs::read_to_string(env.path("portlocker.prom")).unwrap();
        assert!(
            !metrics.contains("family=\"ipv6\""),
            "{listings:?}: {metrics}"
        );
        let v4 = views(&env, "ssh", "IPv4");
        v4.assert_all("closed");
        assert_eq!(v4.metric.as_deref(), Some("1"));
    }
    unreadable(&env, "ip6tables", None);
    env.run(&[]).expect(0);
    views(&env, "ssh", "IPv6").assert_all("closed");
}

// The jump is never absent while it moves back to the top of INPUT.

/// How many times portlocker moves the jump back while clients knock.
const RUNS: usize = 25;

/// The most connection attempts each client makes, however slow the runs.
const MAX_ATTEMPTS: usize = 3000;

/// How long one knock waits: a loopback SYN that is let through is answered at once.
const KNOCK_WAIT: Duration = Duration::from_millis(10);

/// New connections to `to`:22 until `done` or MAX_ATTEMPTS: (got through, tried).
fn knock(to: &str, done: &AtomicBool) -> (usize, usize) {
    let (mut through, mut tried) = (0, 0);
    while !done.load(Ordering::Relaxed) && tried < MAX_ATTEMPTS {
        tried += 1;
        if connects(to, to, 22, KNOCK_WAIT) {
            through += 1;
        }
    }
    (through, tried)
}

/// Sets the flag when dropped, so the clients stop even if a run's check fails.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn the_jump_is_never_absent_while_it_moves_back_to_the_top() {
    if !netns::enter("the_jump_is_never_absent_while_it_moves_back_to_the_top") {
        return;
    }
    listeners(&[22]);
    let env = TestEnv::with_real_iptables();
    env.control("close ssh\n");
    env.run(&[]).expect(0);
    assert!(!reaches("127.0.0.1", "127.0.0.1", 22) && !reaches("::1", "::1", 22));

    let done = AtomicBool::new(false);
    let knocks = std::thread::scope(|scope| {
        let clients = ["127.0.0.1", "::1"].map(|to| {
            let done = &done;
            scope.spawn(move || knock(to, done))
        });
        let stop = StopOnDrop(&done);
        for round in 0..RUNS {
            for (binary, foreign) in [(IPT, "192.0.2.1"), (IP6T, "2001:db8::1")] {
                let rule = ["-s", foreign, "-j", "ACCEPT"];
                if round > 0 {
                    netns::iptables(binary, &[&["-w", "5", "-D", "INPUT"], &rule[..]].concat());
                }
                netns::iptables(
                    binary,
                    &[&["-w", "5", "-I", "INPUT", "1"], &rule[..]].concat(),
                );
                assert!(!input(binary)[0].ends_with("-j PORTLOCKER"));
            }
            env.run(&[]).expect(0);
            for binary in [IPT, IP6T] {
                let chain = input(binary);
                let jumps = chain.iter().filter(|r| r.ends_with("-j PORTLOCKER"));
                assert_eq!(jumps.count(), 1, "run {round}, {binary}: {chain:#?}");
                assert!(
                    chain[0].ends_with("-j PORTLOCKER"),
                    "run {round}, {binary}: {chain:#?}"
                );
            }
        }
        drop(stop);
        clients.map(|client| client.join().unwrap())
    });
    for ((through, tried), to) in knocks.into_iter().zip(["127.0.0.1", "::1"]) {
        eprintln!("{to}: {through} of {tried} new connections got through during {RUNS} runs");
        assert!(tried > 0, "{to}: no connection was tried");
        assert_eq!(
            through, 0,
            "{to}: {through} of {tried} new connections to the closed :22 got through while the jump moved"
        );
    }
}

// A plan made without a listing removes source rules too.

#[test]
fn a_close_planned_without_a_listing_removes_source_rules() {
    if !netns::enter("a_close_planned_without_a_listing_removes_source_rules") {
        return;
    }
    listeners(&[22]);
    let env = wrapped_env();
    env.control("open ssh from 127.0.0.2\n");
    env.run(&[]).expect(0);
    assert!(rules(IPT).contains("-s 127.0.0.2/32"), "{}", rules(IPT));
    assert!(reaches("127.0.0.2", "127.0.0.1", 22));

    unreadable(&env, "iptables", Some(""));
    env.control("close ssh\n");
    env.run(&[]).expect(1).says("listing refused by the test");
    let table = rules(IPT);
    assert!(
        !table.contains("127.0.0.2"),
        "the source rule outlived the close:\n{table}"
    );
    assert!(
        table.contains("--dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment \"portlocker:ssh\" -j DROP"),
        "{table}"
    );
    assert!(
        !reaches("127.0.0.2", "127.0.0.1", 22),
        "the source still gets in after the close"
    );
}
