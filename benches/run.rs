//! How fast and small a run is, on both backends (iptables and nftables),
//! against issue 9's targets. In a private network namespace with real
//! iptables, nft and a real HTTPS server on loopback; run as root with
//! `cargo bench`.
//!
//! For each backend, at 3, 30 and 100 services with IPv6, it times a first
//! run (every port to close) and a no-change run, with one fetch
//! (`portlocker check --source URL`) for reference. It counts the processes
//! each run starts, and those of them that write (restore tools, `nft -f`,
//! any `-A/-I/-D/-N/-X`), through recording wrappers at the configured
//! program paths; and it measures the peak RSS of the binary, its size, and
//! how long parsing a 64 KiB control file takes.
//!
//! Then, per backend, a host full of other tools' rules: a second network
//! namespace holds 20,000 rules per family in 200 chains (iptables: of the
//! filter table, some jumped to from FORWARD, none from INPUT; nftables:
//! tables `ip other` and `ip6 other`, some jumped to from a forward hook),
//! as Docker or Kubernetes leave them, and a no-change run there is timed
//! against the same run on an empty host, in alternating rounds, so load on
//! the machine falls on both.
//!
//! Each target is printed with "met" or "NOT MET" and its numbers.

#[path = "../tests/common/https.rs"]
#[allow(dead_code)]
mod https;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portlocker::config::ServiceName;
use portlocker::intake::control::{self, Context};

const BINARY: &str = env!("CARGO_BIN_EXE_portlocker");
const INSIDE: &str = "PORTLOCKER_BENCH_INSIDE_NETNS";
const LAUNCHER: &str = "PORTLOCKER_BENCH_LAUNCHER";
const ROUNDS: usize = 11;
/// Rounds of the empty-host against loaded-host comparison: more, since
/// its target is a ratio of two small times.
const FOREIGN_ROUNDS: usize = 61;
/// The host full of other tools' rules: chains × rules per chain, per family,
/// and every how many chains one is jumped to from FORWARD.
const FOREIGN_CHAINS: usize = 200;
const FOREIGN_RULES_PER_CHAIN: usize = 100;
const FOREIGN_JUMP_EVERY: usize = 10;
/// The target: a no-change run on the loaded host within this factor of the
/// same run on an empty host.
const FOREIGN_TARGET: f64 = 1.2;
/// The target: a first run at 100 services with IPv6 within this factor of
/// a no-change run at 100 services.
const FIRST_TARGET: f64 = 1.5;

fn main() {
    if std::env::var_os(LAUNCHER).is_some() {
        launch_and_report();
    }
    if std::env::var_os(INSIDE).is_none() {
        let status = Command::new("unshare")
            .args(["--net", "--map-root-user", "--"])
            .arg(std::env::current_exe().unwrap())
            .env(INSIDE, "1")
            .status()
            .expect(
                "unshare (util-linux) is needed: the benchmark runs in a private network namespace",
            );
        std::process::exit(status.code().unwrap_or(1));
    }
    run(&["/sbin/ip", "link", "set", "lo", "up"]);
    address_host();

    let dir = tempfile::tempdir().unwrap();
    let wrappers = Wrappers::new(&dir.path().join("counted"));
    let mut peak_rss_kib = 0;
    println!(
        "portlocker benchmark: medians of {ROUNDS} rounds, IPv4 and IPv6, in a private network namespace"
    );
    println!();
    println!(
        "{:>9} {:>8} | {:>9} {:>9} {:>9} {:>11} | {:>7} | {:>11} | {:>13}",
        "backend",
        "services",
        "first ms",
        "same ms",
        "fetch ms",
        "first÷same",
        "RSS MiB",
        "processes",
        "writing"
    );
    let mut verdicts = Vec::new();
    let mut counted = Vec::new();
    for backend in [Backend::Iptables, Backend::Nftables] {
        let mut writes_met = true;
        let mut writes_seen = Vec::new();
        for services in [3, 30, 100] {
            let bench = Bench::new(dir.path(), services, backend, &wrappers);
            let fetch =
                median((0..ROUNDS).map(|_| bench.timed(&["check", "--source", &bench.url])));
            let first = median((0..ROUNDS).map(|_| {
                reset_firewall();
                bench.timed(&[])
            }));
            reset_firewall();
            bench.timed(&[]);
            let same = median((0..ROUNDS).map(|_| bench.timed(&[])));
            // The processes of a first run and of a no-change run.
            reset_firewall();
            let first_calls = bench.calls();
            let same_calls = bench.calls();
            let processes = format!("{} / {}", first_calls.len(), same_calls.len());
            let (first_writes, same_writes) = (writers(&first_calls), writers(&same_calls));
            writes_met &= backend.writes_met(&first_writes) && same_writes.total() == 0;
            writes_seen.push(format!(
                "{services}: {} / {}",
                first_writes.show(backend),
                same_writes.show(backend)
            ));
            let writing = format!("{} / {}", first_writes.total(), same_writes.total());
            if services == 30 {
                counted.push((backend, "a first run", first_calls));
                counted.push((backend, "a no-change run", same_calls));
            }
            // Peak RSS of a fetch, a first run and a no-change run, measured apart.
            reset_firewall();
            let rss = [
                bench.peak_rss(&["check", "--source", &bench.url]),
                bench.peak_rss(&[]),
                bench.peak_rss(&[]),
            ];
            let rss = rss.into_iter().max().unwrap();
            peak_rss_kib = peak_rss_kib.max(rss);
            let ratio = ms(first) / ms(same);
            if services == 100 {
                verdicts.push((
                    format!(
                        "{}: first run at 100 services with IPv6 {:.1} ms, {ratio:.2}× the \
                         no-change run's {:.1} ms (target ≤ {FIRST_TARGET}×)",
                        backend.name(),
                        ms(first),
                        ms(same),
                    ),
                    ratio <= FIRST_TARGET,
                ));
            }
            println!(
                "{:>9} {services:>8} | {:>9.1} {:>9.1} {:>9.1} {ratio:>11.2} | {:>7.1} | {processes:>11} | {writing:>13}",
                backend.name(),
                ms(first),
                ms(same),
                ms(fetch),
                rss as f64 / 1024.0,
            );
        }
        verdicts.push((
            format!(
                "{}: processes that write, first run / no-change run, by services: {} \
                 (target ≤ 1 {}, 0 when nothing changes)",
                backend.name(),
                writes_seen.join(", "),
                match backend {
                    Backend::Iptables => "per family",
                    Backend::Nftables => "in all",
                },
            ),
            writes_met,
        ));
    }
    reset_firewall();
    println!();
    println!("first = a first run (every port to close); same = a run that changes nothing;");
    println!("  fetch = `portlocker check --source URL`, one fetch and parse, for reference");
    println!("processes = all the processes of a first run / of a no-change run");
    println!(
        "writing = of those, the ones that write: restore tools, `nft -f`, any -A/-I/-D/-N/-X/-F"
    );

    for load in [Load::Kubernetes, Load::Nftables, Load::Ufw, Load::Docker] {
        for backend in [Backend::Iptables, Backend::Nftables] {
            println!();
            let foreign = foreign_host(dir.path(), &wrappers, backend, load);
            peak_rss_kib = peak_rss_kib.max(foreign.rss_kib);
            report_foreign(backend, load, &foreign, &mut verdicts);
            counted.push((backend, load.short(), foreign.calls));
        }
    }

    println!();
    println!("processes a run starts, at 30 services with IPv6:");
    for (backend, run, calls) in &counted {
        println!(
            "  {}, {run}: {} — {}",
            backend.name(),
            calls.len(),
            summarise(calls)
        );
    }

    let parse = parse_64k();
    let size = std::fs::metadata(BINARY).unwrap().len();
    let rss_mib = peak_rss_kib as f64 / 1024.0;
    let size_mib = size as f64 / (1024.0 * 1024.0);
    verdicts.push((
        format!(
            "peak RSS {rss_mib:.1} MiB, both backends: the largest of a run and of the \
             processes it starts, as wait4 reports it (target ≤ 6 MiB)"
        ),
        rss_mib <= 6.0,
    ));
    verdicts.push((
        format!("stripped release binary {size_mib:.2} MiB (target ≤ 4 MiB)"),
        size_mib <= 4.0,
    ));
    verdicts.push((
        format!(
            "parsing a 64 KiB control file {:.3} ms (target < 1 ms)",
            ms(parse)
        ),
        parse < Duration::from_millis(1),
    ));
    println!();
    for (verdict, met) in &verdicts {
        println!("{} {verdict}", if *met { "met:    " } else { "NOT MET:" });
    }
}

/// The firewall portlocker drives in a configuration under test.
#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Iptables,
    Nftables,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
        }
    }

    /// Whether a run's writing processes meet the target: at most one per
    /// family with iptables, at most one in all with nftables.
    fn writes_met(self, writes: &Writes) -> bool {
        match self {
            Backend::Iptables => writes.ipv4 <= 1 && writes.ipv6 <= 1 && writes.nft == 0,
            Backend::Nftables => writes.total() <= 1,
        }
    }
}

/// The processes of a run that write, by family (`nft` writes both at once).
#[derive(Default)]
struct Writes {
    ipv4: usize,
    ipv6: usize,
    nft: usize,
}

impl Writes {
    fn total(&self) -> usize {
        self.ipv4 + self.ipv6 + self.nft
    }

    fn show(&self, backend: Backend) -> String {
        match backend {
            Backend::Iptables => format!("{}+{}", self.ipv4, self.ipv6),
            Backend::Nftables => self.total().to_string(),
        }
    }
}

/// Which of the recorded calls write: the restore tools, `nft -f`, and any
/// iptables call that adds, inserts, deletes, replaces, flushes or makes or
/// removes a chain.
fn writers(calls: &[String]) -> Writes {
    let mut writes = Writes::default();
    for call in calls {
        let words: Vec<&str> = call.split(' ').collect();
        let program = words[0];
        let writes_here = program.ends_with("-restore")
            || (program == "nft" && words.contains(&"-f"))
            || words[1..].iter().any(|word| {
                ["-A", "-I", "-D", "-R", "-F", "-N", "-X", "-E", "-P", "-Z"].contains(word)
            })
            || (program == "nft"
                && words.iter().any(|word| {
                    [
                        "add", "insert", "delete", "flush", "create", "replace", "destroy",
                    ]
                    .contains(word)
                }));
        if !writes_here {
            continue;
        }
        match program {
            "nft" => writes.nft += 1,
            p if p.starts_with("ip6tables") => writes.ipv6 += 1,
            _ => writes.ipv4 += 1,
        }
    }
    writes
}

/// What the host full of other tools' rules showed.
struct Foreign {
    /// Time to load the rules, both families.
    load: Duration,
    /// How many rules of others it held, both families.
    rules: usize,
    /// Medians of a no-change run on the empty host and on the loaded one.
    empty: Duration,
    loaded: Duration,
    /// The same, in CPU time.
    empty_cpu: Duration,
    loaded_cpu: Duration,
    /// Peak RSS (KiB) of a no-change run on the loaded host.
    rss_kib: i64,
    /// The firewall calls of a no-change run on the loaded host.
    calls: Vec<String>,
    /// One whole listing on the loaded host, and its size.
    listing: Duration,
    listing_bytes: usize,
}

/// Times a no-change run (30 services, IPv6) on an empty host against the
/// same run on a host holding `load`'s rules of others, each in its own
/// network namespace, in alternating rounds.
fn foreign_host(dir: &Path, wrappers: &Wrappers, backend: Backend, load: Load) -> Foreign {
    let home = Netns::current();
    reset_firewall();
    let name = format!("{}-{}", backend.name(), load.short());
    let empty = Bench::new(
        &subdir(dir, &format!("empty-{name}")),
        30,
        backend,
        wrappers,
    );
    empty.timed(&[]);

    let other = Netns::create();
    let started = Instant::now();
    load.load();
    let loading = started.elapsed();
    let held = others();
    // Made while in the other namespace: its server listens there.
    let loaded = Bench::new(
        &subdir(dir, &format!("loaded-{name}")),
        30,
        backend,
        wrappers,
    );
    loaded.timed(&[]);

    let mut on_empty = Vec::new();
    let mut on_loaded = Vec::new();
    for round in 0..FOREIGN_ROUNDS {
        let loaded_first = round % 2 == 1;
        for here in [loaded_first, !loaded_first] {
            if here {
                other.enter();
                on_loaded.push(loaded.timed_with_cpu());
            } else {
                home.enter();
                on_empty.push(empty.timed_with_cpu());
            }
        }
    }
    other.enter();
    let rss_kib = loaded.peak_rss(&[]);
    let calls = loaded.calls();
    assert_eq!(
        writers(&calls).total(),
        0,
        "the run on the loaded host changed something: {calls:?}"
    );
    let listing = median((0..5).map(|_| whole_listing(load).0));
    let listing_bytes = whole_listing(load).1;
    assert_eq!(
        others(),
        held,
        "the rules of others changed under portlocker"
    );
    reset_firewall();
    assert_eq!(others(), 0, "rules of others left behind");
    home.enter();
    reset_firewall();
    Foreign {
        load: loading,
        rules: held,
        empty: median(on_empty.iter().map(|sample| sample.0)),
        loaded: median(on_loaded.iter().map(|sample| sample.0)),
        empty_cpu: median(on_empty.iter().map(|sample| sample.1)),
        loaded_cpu: median(on_loaded.iter().map(|sample| sample.1)),
        rss_kib,
        calls,
        listing,
        listing_bytes,
    }
}

/// Loads the rules of others as nftables tables of their own, `ip other`
/// and `ip6 other`: chains of rules as Docker or Kubernetes would write
/// them, every tenth jumped to from a base chain on the forward hook; in
/// one `nft -f` per chain, since more fails in a user namespace
/// ("Message too long").
fn load_foreign_nft() {
    for ipv6 in [false, true] {
        let family = if ipv6 { "ip6" } else { "ip" };
        // The chains first, then the base chain that jumps to some of them.
        let mut head = format!("table {family} other {{\n");
        for chain in 0..FOREIGN_CHAINS {
            head.push_str(&format!("  chain other-{chain:03} {{\n  }}\n"));
        }
        head.push_str(
            "  chain forward {\n    type filter hook forward priority 0; policy accept;\n",
        );
        for chain in (0..FOREIGN_CHAINS).step_by(FOREIGN_JUMP_EVERY) {
            head.push_str(&format!(
                "    oifname \"br-{chain:03}\" jump other-{chain:03}\n"
            ));
        }
        head.push_str("  }\n}\n");
        nft_load(&head);
        for batch in (0..FOREIGN_CHAINS).collect::<Vec<_>>().chunks(1) {
            let mut chains = format!("table {family} other {{\n");
            for &chain in batch {
                chains.push_str(&format!("  chain other-{chain:03} {{\n"));
                for rule in 0..FOREIGN_RULES_PER_CHAIN {
                    let address = match ipv6 {
                        true => format!("ip6 daddr fd00:{chain:x}::{rule:x}"),
                        false => format!("ip daddr 10.{chain}.{rule}.2"),
                    };
                    let (protocol, verdict) = match rule % 4 {
                        0 => ("tcp", "accept"),
                        1 => ("udp", "accept"),
                        2 => ("tcp", "return"),
                        _ => ("tcp", "drop"),
                    };
                    chains.push_str(&format!(
                        "    {address} iifname != \"br-{chain:03}\" oifname \"br-{chain:03}\" \
                         {protocol} dport {} ct state new,established counter {verdict} \
                         comment \"ns-{chain:03}/svc-{rule:03}:http\"\n",
                        8000 + rule
                    ));
                }
                chains.push_str("  }\n");
            }
            chains.push_str("}\n");
            nft_load(&chains);
        }
    }
    assert_eq!(
        count_foreign_nft(),
        [FOREIGN_CHAINS * FOREIGN_RULES_PER_CHAIN; 2]
    );
}

fn nft_load(script: &str) {
    let mut child = Command::new("/usr/sbin/nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft -f failed");
}

/// How many rules of others each family's nftables table holds.
fn count_foreign_nft() -> [usize; 2] {
    ["ip", "ip6"].map(|family| {
        let output = Command::new("/usr/sbin/nft")
            .args(["list", "table", family, "other"])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter(|line| line.contains("comment \"ns-"))
            .count()
    })
}

/// How long one whole listing takes (`iptables -S` of the filter table, or
/// `nft list ruleset`), and how many bytes it prints: what a run that read
/// it all would pay.
fn whole_listing(load: Load) -> (Duration, usize) {
    let argv: &[&str] = match load {
        Load::Nftables => &["/usr/sbin/nft", "list", "ruleset"],
        _ => &["/usr/sbin/iptables-save"],
    };
    let started = Instant::now();
    let output = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    let took = started.elapsed();
    assert!(output.status.success(), "{argv:?} failed");
    (took, output.stdout.len())
}

fn subdir(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir(&path).unwrap();
    path
}

/// A network namespace the main thread can step into: the processes it
/// starts from there, and the sockets it opens, live in that namespace.
struct Netns(File);

impl Netns {
    /// The main thread's network namespace now.
    fn current() -> Netns {
        Netns(File::open("/proc/thread-self/ns/net").unwrap())
    }

    /// A new network namespace with loopback up; the main thread is in it on return.
    fn create() -> Netns {
        // SAFETY: no pointers; only this thread's network namespace changes.
        let done = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(done, 0, "unshare: {}", std::io::Error::last_os_error());
        run(&["/sbin/ip", "link", "set", "lo", "up"]);
        address_host();
        Netns::current()
    }

    fn enter(&self) {
        // SAFETY: the descriptor is an open network namespace file.
        let done = unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(done, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

/// The hosts full of others' rules the benchmark runs on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Load {
    /// A Kubernetes node in kube-proxy's layout, with a CNI's and others'
    /// chains: 20,000 rules per family, most in FORWARD and KUBE-SERVICES.
    Kubernetes,
    /// The same number in nftables tables of their own, on the forward hook.
    Nftables,
    /// ufw's own ruleset, as recorded from it (tests/fixtures/managers/ufw).
    Ufw,
    /// Docker's, publishing a container's port (tests/fixtures/managers/docker_style).
    Docker,
}

impl Load {
    fn short(self) -> &'static str {
        match self {
            Load::Kubernetes => "kubernetes",
            Load::Nftables => "nftables",
            Load::Ufw => "ufw",
            Load::Docker => "docker",
        }
    }

    fn describe(self) -> String {
        match self {
            Load::Kubernetes => format!(
                "a Kubernetes-like host: kube-proxy's chains (INPUT's jumps, {KUBE_SERVICES} rules \
                 in filter KUBE-SERVICES, {KUBE_NAT} ClusterIPs in nat), a CNI's {KUBE_FORWARD} in \
                 its chain off FORWARD (cali-FORWARD) and {KUBE_OTHERS} chains of \
                 {FOREIGN_RULES_PER_CHAIN} rules off FORWARD"
            ),
            Load::Nftables => format!(
                "tables `ip other` and `ip6 other`, {FOREIGN_CHAINS} chains of \
                 {FOREIGN_RULES_PER_CHAIN} rules each, some jumped to from a forward hook"
            ),
            Load::Ufw => "ufw's ruleset (recorded from ufw 0.36.2: limit, allow, deny)".to_owned(),
            Load::Docker => {
                "Docker's ruleset (a published port, its nat and FORWARD chains)".to_owned()
            }
        }
    }

    /// Loads the rules into the current namespace.
    fn load(self) {
        match self {
            Load::Kubernetes => load_kubernetes(),
            Load::Nftables => load_foreign_nft(),
            Load::Ufw | Load::Docker => {
                let fixture = match self {
                    Load::Ufw => "ufw",
                    _ => "docker_style",
                };
                let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/managers")
                    .join(fixture);
                for (restore, file) in [
                    ("/sbin/iptables-restore", "iptables-save.v4"),
                    ("/sbin/ip6tables-restore", "iptables-save.v6"),
                ] {
                    if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                        feed(restore, &["-w", "10"], &text);
                    }
                }
            }
        }
    }
}

/// The Kubernetes-like host's parts, per family.
const KUBE_SERVICES: usize = 10_000;
const KUBE_FORWARD: usize = 5_000;
const KUBE_NAT: usize = 200;
/// Chains of others (of `FOREIGN_RULES_PER_CHAIN` rules) on the Kubernetes host.
const KUBE_OTHERS: usize = 50;

/// Prints what the host of `load` showed, and its target's verdict.
fn report_foreign(
    backend: Backend,
    load: Load,
    foreign: &Foreign,
    verdicts: &mut Vec<(String, bool)>,
) {
    println!(
        "{} on {}: {} rules of others in both families, loaded in {:.1} s:",
        backend.name(),
        load.describe(),
        foreign.rules,
        foreign.load.as_secs_f64(),
    );
    let ratio = ms(foreign.loaded) / ms(foreign.empty);
    println!(
        "  no-change run at 30 services with IPv6, medians of {FOREIGN_ROUNDS} alternating rounds: \
         empty host {:.1} ms, loaded host {:.1} ms, {ratio:.2}×; peak RSS there {:.1} MiB",
        ms(foreign.empty),
        ms(foreign.loaded),
        foreign.rss_kib as f64 / 1024.0,
    );
    println!(
        "  in CPU time (the run and its firewall calls): empty host {:.1} ms, loaded host {:.1} ms, {:.2}×",
        ms(foreign.empty_cpu),
        ms(foreign.loaded_cpu),
        ms(foreign.loaded_cpu) / ms(foreign.empty_cpu),
    );
    println!(
        "  for scale: one whole listing (`{}`) there takes {:.1} ms and prints {:.1} MiB",
        if load == Load::Nftables {
            "nft list ruleset"
        } else {
            "iptables-save"
        },
        ms(foreign.listing),
        foreign.listing_bytes as f64 / (1024.0 * 1024.0),
    );
    verdicts.push((
        format!(
            "{}: no-change run on the {} host ({} rules of others): {:.1} ms, {ratio:.2}× the \
             empty host's {:.1} ms (target ≤ {FOREIGN_TARGET}×)",
            backend.name(),
            load.short(),
            foreign.rules,
            ms(foreign.loaded),
            ms(foreign.empty),
        ),
        ratio <= FOREIGN_TARGET,
    ));
}

/// Loads the Kubernetes-like host into the current namespace, both
/// families, with `iptables-restore --noflush`: a COMMIT every 100 rules,
/// since a larger transaction fails in a user namespace ("Message too long").
fn load_kubernetes() {
    for (restore, ipv6) in [
        ("/sbin/iptables-restore", false),
        ("/sbin/ip6tables-restore", true),
    ] {
        feed(restore, &["-w", "10", "--noflush"], &kubernetes_rules(ipv6));
    }
}

/// kube-proxy's (iptables mode) chains with many services, a CNI's rules
/// in FORWARD, and chains of others jumped to from FORWARD.
fn kubernetes_rules(ipv6: bool) -> String {
    let address = |base: &str, i: usize| match ipv6 {
        true => format!("fd00:{base}::{:x}/128", i + 1),
        false => format!("10.{base}.{}.{}/32", i / 250, i % 250 + 1),
    };
    let loopback = if ipv6 { "::1/128" } else { "127.0.0.0/8" };
    let mut text = String::from("*filter\n");
    for chain in [
        "KUBE-SERVICES",
        "KUBE-FORWARD",
        "KUBE-FIREWALL",
        "KUBE-NODEPORTS",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-PROXY-FIREWALL",
        "cali-FORWARD",
    ] {
        text.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for chain in 0..KUBE_OTHERS {
        text.push_str(&format!(":OTHER-{chain:03} - [0:0]\n"));
    }
    text.push_str(&format!(
        "-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
         -A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS\n\
         -A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n\
         -A INPUT -j KUBE-FIREWALL\n\
         -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
         -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A FORWARD -m comment --comment \"cali:wUHhoiAYhphO9Mso\" -j cali-FORWARD\n\
         -A KUBE-FIREWALL ! -s {loopback} -d {loopback} -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n\
         -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n"
    ));
    for chain in 0..KUBE_OTHERS {
        text.push_str(&format!(
            "-A FORWARD -o br-{chain:03} -j OTHER-{chain:03}\n"
        ));
    }
    text.push_str("COMMIT\n");
    let mut lines = Vec::new();
    for i in 0..KUBE_SERVICES {
        lines.push(format!(
            "-A KUBE-SERVICES -d {} -p tcp -m comment --comment \"ns-{i:05}/svc:http has no endpoints\" -m tcp --dport {} -j REJECT",
            address("96", i),
            8000 + i % 1000
        ));
    }
    for i in 0..KUBE_FORWARD {
        lines.push(format!(
            "-A cali-FORWARD -d {} -o cali{:02} -m comment --comment \"cali:ns-{i:05}\" -j ACCEPT",
            address("244", i),
            i % 50
        ));
    }
    for chain in 0..KUBE_OTHERS {
        for rule in 0..FOREIGN_RULES_PER_CHAIN {
            lines.push(format!(
                "-A OTHER-{chain:03} -d {} -o br-{chain:03} -p tcp -m tcp --dport {} -m comment --comment \"ns-{chain:03}/{rule}\" -j ACCEPT",
                address("50", chain * 100 + rule),
                8000 + rule
            ));
        }
    }
    for batch in lines.chunks(100) {
        text.push_str("*filter\n");
        for line in batch {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("COMMIT\n");
    }
    text.push_str("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n\
                   -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n");
    for i in 0..KUBE_NAT {
        text.push_str(&format!(
            "-A KUBE-SERVICES -d {} -p tcp -m comment --comment \"ns-{i:05}/svc:http cluster IP\" -m tcp --dport 80 -j KUBE-NODEPORTS\n",
            address("97", i)
        ));
    }
    text.push_str("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\nCOMMIT\n");
    text
}

/// Feeds `input` to `program ARGS`, asserting success.
fn feed(program: &str, args: &[&str], input: &str) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{program} failed");
}

/// How many rules of others the current namespace holds, both families:
/// iptables' (legacy's aside) and those of nftables tables of others.
fn others() -> usize {
    let mut count = 0;
    for save in ["/sbin/iptables-save", "/sbin/ip6tables-save"] {
        let output = Command::new(save).output().unwrap();
        count += String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.starts_with("-A ") && !line.to_lowercase().contains("portlocker"))
            .count();
    }
    count + count_foreign_nft().iter().sum::<usize>()
}

/// Recording wrappers of iptables, ip6tables, their restore tools and nft:
/// each call appends its argv to a log, then becomes the real program.
struct Wrappers {
    iptables: PathBuf,
    ip6tables: PathBuf,
    iptables_restore: PathBuf,
    ip6tables_restore: PathBuf,
    nft: PathBuf,
    log: PathBuf,
}

impl Wrappers {
    fn new(dir: &Path) -> Wrappers {
        std::fs::create_dir(dir).unwrap();
        let log = dir.join("calls.log");
        let wrap = |real: &str| {
            let name = Path::new(real).file_name().unwrap().to_str().unwrap();
            let path = dir.join(name);
            std::fs::write(
                &path,
                format!("#!/bin/sh\necho \"${{0##*/}} $*\" >>{log:?}\nexec {real} \"$@\"\n"),
            )
            .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        Wrappers {
            iptables: wrap("/sbin/iptables"),
            ip6tables: wrap("/sbin/ip6tables"),
            iptables_restore: wrap("/sbin/iptables-restore"),
            ip6tables_restore: wrap("/sbin/ip6tables-restore"),
            nft: wrap("/usr/sbin/nft"),
            log,
        }
    }
}

/// Calls grouped by program, operation and chain, in order of first call:
/// "iptables -S INPUT, 30 × iptables -A PORTLOCKER, …".
fn summarise(calls: &[String]) -> String {
    let mut groups: Vec<(String, usize)> = Vec::new();
    for call in calls {
        // The program, then (past any `-w 10`) the operation and its chain.
        let mut words: Vec<&str> = call.split(' ').collect();
        if words.get(1) == Some(&"-w") {
            words.drain(1..3.min(words.len()));
        }
        let key = words.iter().take(3).copied().collect::<Vec<_>>().join(" ");
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => groups.push((key, 1)),
        }
    }
    let shown: Vec<String> = groups
        .into_iter()
        .map(|(key, n)| match n {
            1 => key,
            n => format!("{n} × {key}"),
        })
        .collect();
    shown.join(", ")
}

/// One configuration under test (both families): its config, its control
/// file on a live HTTPS server, and the rules it makes; and the same config
/// with the recording wrappers as its programs, to count the calls of a run.
struct Bench {
    config: PathBuf,
    counted: PathBuf,
    wrappers_log: PathBuf,
    url: String,
    _server: https::TlsServer,
}

impl Bench {
    fn new(dir: &Path, services: usize, backend: Backend, wrappers: &Wrappers) -> Bench {
        let control: String = (0..services).map(|i| format!("close s{i:03}\n")).collect();
        let server = https::TlsServer::start(https::Reply::Body {
            body: control.into_bytes(),
            content_type: "text/plain",
        });
        let name = format!("{}-{services}", backend.name());
        let ca = dir.join(format!("ca-{name}.pem"));
        server.write_ca(&ca);
        let state = dir.join(format!("state-{name}"));
        let url = server.url("/portlocker.txt");
        let config_text = |programs: [&Path; 5]| {
            let [
                iptables,
                ip6tables,
                iptables_restore,
                ip6tables_restore,
                nft,
            ] = programs;
            let mut text = format!(
                "source = {url:?}\nlog_file = {:?}\nstate_dir = {state:?}\n[fetch]\nca_file = {ca:?}\n\
                 [firewall]\nbackend = {:?}\niptables = {iptables:?}\nip6tables = {ip6tables:?}\n\
                 iptables_restore = {iptables_restore:?}\nip6tables_restore = {ip6tables_restore:?}\n\
                 nft = {nft:?}\nipv6 = true\n[services]\n",
                dir.join("portlocker.log"),
                backend.name(),
            );
            for i in 0..services {
                text.push_str(&format!("s{i:03} = {}\n", 2000 + i));
            }
            text
        };
        let config = dir.join(format!("config-{name}.toml"));
        let text = config_text(
            [
                "/sbin/iptables",
                "/sbin/ip6tables",
                "/sbin/iptables-restore",
                "/sbin/ip6tables-restore",
                "/usr/sbin/nft",
            ]
            .map(Path::new),
        );
        std::fs::write(&config, text).unwrap();
        let counted = dir.join(format!("counted-{name}.toml"));
        let text = config_text(
            [
                &wrappers.iptables,
                &wrappers.ip6tables,
                &wrappers.iptables_restore,
                &wrappers.ip6tables_restore,
                &wrappers.nft,
            ]
            .map(PathBuf::as_path),
        );
        std::fs::write(&counted, text).unwrap();
        Bench {
            config,
            counted,
            wrappers_log: wrappers.log.clone(),
            url,
            _server: server,
        }
    }

    /// One run through the recording wrappers; returns its iptables calls.
    fn calls(&self) -> Vec<String> {
        let _ = std::fs::remove_file(&self.wrappers_log);
        let status = Command::new(BINARY)
            .arg("-c")
            .arg(&self.counted)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "portlocker (counted) failed");
        let text = std::fs::read_to_string(&self.wrappers_log).unwrap_or_default();
        text.lines().map(str::to_owned).collect()
    }

    /// Runs portlocker with `args`; returns its wall time.
    fn timed(&self, args: &[&str]) -> Duration {
        let started = Instant::now();
        let status = Command::new(BINARY)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        let took = started.elapsed();
        assert!(status.success(), "portlocker {args:?} failed");
        took
    }

    /// A run that changes nothing: its wall time, and its CPU time with
    /// that of its iptables calls (which load on the machine barely moves).
    // The child is reaped by wait4, which std's Child cannot do, to read its rusage.
    #[allow(clippy::zombie_processes)]
    fn timed_with_cpu(&self) -> (Duration, Duration) {
        let started = Instant::now();
        let child = Command::new(BINARY)
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let usage = wait_with_rusage(child.id());
        let took = started.elapsed();
        assert_eq!(usage.code, 0, "portlocker failed");
        (took, usage.cpu)
    }

    /// The peak RSS (KiB) of one more run with `args`, through the launcher.
    fn peak_rss(&self, args: &[&str]) -> i64 {
        let output = Command::new(std::env::current_exe().unwrap())
            .env(LAUNCHER, "1")
            .arg(BINARY)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(output.status.success(), "launcher: {output:?}");
        String::from_utf8(output.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

/// The launcher: runs its arguments as a command and prints the command's
/// peak RSS in KiB. Linux charges a child with its parent's peak at fork, so
/// a child of this small fresh process is measured, not of the whole
/// benchmark with its TLS server.
// The child is reaped by wait4, which std's Child cannot do, to read its rusage.
#[allow(clippy::zombie_processes)]
fn launch_and_report() -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let child = Command::new(&args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let usage = wait_with_rusage(child.id());
    assert_eq!(usage.code, 0, "{args:?} failed");
    println!("{}", usage.peak_rss_kib);
    std::process::exit(0);
}

/// How a child ended and what it used.
struct Usage {
    code: i32,
    /// Peak resident set, KiB.
    peak_rss_kib: i64,
    /// User and system time, with that of the children it reaped (its iptables calls).
    cpu: Duration,
}

/// Waits for `pid` and returns how it ended and what it used.
fn wait_with_rusage(pid: u32) -> Usage {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet reaped; the pointers are valid.
    let reaped = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid as libc::pid_t, "wait4 failed");
    let seconds = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Usage {
        code: libc::WEXITSTATUS(status),
        peak_rss_kib: usage.ru_maxrss,
        cpu: seconds(usage.ru_utime) + seconds(usage.ru_stime),
    }
}

/// The median time to parse a 64 KiB control file, in process.
fn parse_64k() -> Duration {
    let services: BTreeSet<ServiceName> = ["ssh", "vpn", "httpd"]
        .map(|s| ServiceName::new(s).unwrap())
        .into();
    let context = Context {
        services: &services,
        host_name: "web-1",
        ipv6: true,
    };
    let lines = [
        "open ssh # from the train",
        "close vpn",
        "open httpd from 198.51.100.0/24 for 2h",
        "Close SSH on web-*",
    ];
    let mut text = String::new();
    let mut i = 0;
    while text.len() + 64 < 64 * 1024 {
        text.push_str(lines[i % lines.len()]);
        text.push('\n');
        i += 1;
    }
    median((0..200).map(|_| {
        let started = Instant::now();
        let parsed = control::parse(text.as_bytes(), context);
        let took = started.elapsed();
        assert!(parsed.is_ok());
        took
    }))
}

/// Empties the current namespace's firewall: iptables' filter table in
/// both families, and every nftables table.
fn reset_firewall() {
    for binary in ["/sbin/iptables", "/sbin/ip6tables"] {
        run(&[binary, "-w", "10", "-F"]);
        run(&[binary, "-w", "10", "-X"]);
    }
    run(&["/usr/sbin/nft", "flush", "ruleset"]);
}

/// An interface with an address of each family, as a host has: a veth
/// pair (its module is there wherever namespaces are).
fn address_host() {
    run(&[
        "/sbin/ip", "link", "add", "pl0", "type", "veth", "peer", "name", "pl1",
    ]);
    run(&["/sbin/ip", "addr", "add", "192.0.2.1/24", "dev", "pl0"]);
    run(&[
        "/sbin/ip",
        "-6",
        "addr",
        "add",
        "2001:db8::1/64",
        "dev",
        "pl0",
        "nodad",
    ]);
    run(&["/sbin/ip", "link", "set", "pl0", "up"]);
    run(&["/sbin/ip", "link", "set", "pl1", "up"]);
}

fn run(argv: &[&str]) {
    let status = Command::new(argv[0]).args(&argv[1..]).status().unwrap();
    assert!(status.success(), "{argv:?}");
}

fn median(samples: impl Iterator<Item = Duration>) -> Duration {
    let mut samples: Vec<Duration> = samples.collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
