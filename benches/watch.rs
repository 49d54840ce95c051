//! How fast `portlocker watch` opens and repairs, and what it costs idle,
//! against issue 17's targets. In a private network namespace with real
//! iptables (nf_tables and legacy), nft, real connections to port 22 and a
//! keep-alive HTTPS server on loopback with an ntfy-style stream; run as
//! root with `cargo bench` (with benches/run.rs, in one invocation).
//!
//! - Open latency: from the control file's change on the server to a new
//!   connection to :22 accepted, median and 95th percentile, with `every`
//!   at its default (10 s), at 2 s, and at an hour with a poke sent with
//!   the change.
//! - Repair latency: from the end of a wipe command to the kernel's commit
//!   of the repair (netfilter's NEWGEN, heard on the same netlink group
//!   watch reads; for iptables-legacy, which tells nothing, to the rules
//!   listed back whole), per wipe and per backend (a watcher restarted every
//!   two wipes, so no run of repairs looks like a fight).
//! - Idle cost: CPU per hour, peak RSS, and requests per hour at the
//!   source, over PORTLOCKER_BENCH_IDLE_SECS (600 by default) of a watcher
//!   at its default period with nothing to do.
//!
//! Each target is printed with "met" or "NOT MET" and its numbers; the
//! figures go to docs/BENCHMARKS.md under "watch". PORTLOCKER_BENCH_PARTS
//! (`open,repair,idle` by default) picks the parts.

#[path = "../tests/common/https.rs"]
#[allow(dead_code)]
mod https;
#[path = "../tests/common/stream.rs"]
#[allow(dead_code)]
mod stream;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use portlocker::watch::netlink::{self, Listener, News, Place};
use stream::StreamServer;

const BINARY: &str = env!("CARGO_BIN_EXE_portlocker");
const INSIDE: &str = "PORTLOCKER_BENCH_INSIDE_NETNS";
const NFT: &str = "/usr/sbin/nft";
const OPEN_SAMPLES: usize = 10;
const REPAIR_SAMPLES: usize = 10;

fn main() {
    if std::env::var_os(INSIDE).is_none() {
        let status = Command::new("unshare")
            .args(["--net", "--map-root-user", "--"])
            .arg(std::env::current_exe().unwrap())
            .env(INSIDE, "1")
            .status()
            .expect("unshare (util-linux) is needed");
        std::process::exit(status.code().unwrap_or(1));
    }
    run(&["/sbin/ip", "link", "set", "lo", "up"]);
    let ssh: SocketAddr = "127.0.0.1:22".parse().unwrap();
    let listener = TcpListener::bind(ssh).unwrap();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let dir = tempfile::tempdir().unwrap();
    println!("portlocker watch benchmark, in a private network namespace");
    let mut verdicts = Vec::new();

    let parts = std::env::var("PORTLOCKER_BENCH_PARTS").unwrap_or("open,repair,idle".into());
    let part = |name: &str| parts.split(',').any(|p| p == name);
    if part("open") {
        open_part(dir.path(), ssh, &mut verdicts);
    }
    if part("repair") {
        repair_part(dir.path(), &mut verdicts);
    }
    if part("idle") {
        idle_part(dir.path(), &mut verdicts);
    }
    println!();
    for line in &verdicts {
        println!("{line}");
    }
}

fn open_part(dir: &Path, ssh: SocketAddr, verdicts: &mut Vec<String>) {
    println!("\nopen latency: control file changed on the server → :22 accepts a new connection");
    println!("{:>26} | {:>9} {:>9} {:>8}", "", "median", "p95", "samples");
    for (name, every, poke, bound) in [
        ("every = 10s (default)", "10s", false, 11_000),
        ("every = 2s", "2s", false, 3_000),
        ("every = 1h, with a poke", "1h", true, 2_000),
    ] {
        let samples = open_latency(dir, ssh, every, poke);
        let (median, p95) = (percentile(&samples, 50), percentile(&samples, 95));
        println!(
            "{name:>26} | {median:>7} ms {p95:>6} ms {:>8}",
            samples.len()
        );
        verdicts.push(verdict(
            &format!("open within `every` + 1 s ({name}): p95 {p95} ms ≤ {bound} ms"),
            p95 <= bound,
        ));
    }
}

fn repair_part(dir: &Path, verdicts: &mut Vec<String>) {
    println!(
        "\nrepair latency: end of the wipe → the repair committed (legacy: the rules listed back)"
    );
    println!(
        "{:>12} {:>40} | {:>9} {:>9}",
        "backend", "wipe", "median", "p95"
    );
    for backend in [
        Backend::Nftables,
        Backend::IptablesNft,
        Backend::IptablesLegacy,
    ] {
        for wipe in backend.wipes() {
            let samples = repair_latency(dir, backend, wipe);
            let (median, p95) = (percentile(&samples, 50), percentile(&samples, 95));
            println!(
                "{:>12} {:>40} | {median:>6} ms {p95:>6} ms",
                backend.name(),
                wipe.name()
            );
            let (target, bound) = match backend {
                Backend::IptablesLegacy => ("p95 ≤ 2 s (looked at every second)", 2000),
                _ => ("median < 100 ms, p95 < 1 s", 1000),
            };
            let met = p95 < bound && (backend == Backend::IptablesLegacy || median < 100);
            verdicts.push(verdict(
                &format!(
                    "{} after {}: {target} ({median} / {p95} ms)",
                    backend.name(),
                    wipe.name()
                ),
                met,
            ));
        }
    }
}

fn idle_part(dir: &Path, verdicts: &mut Vec<String>) {
    let idle_secs: u64 = std::env::var("PORTLOCKER_BENCH_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    println!("\nidle cost over {idle_secs} s at every = 10s (nftables, nothing to change)");
    let idle = idle_cost(dir, Duration::from_secs(idle_secs));
    println!(
        "CPU {:.1} s per hour ({:.3} % of one core), peak RSS {:.1} MiB, {:.0} requests per hour \
         ({} connections)",
        idle.cpu_per_hour,
        idle.cpu_per_hour / 36.0,
        idle.peak_rss_kib as f64 / 1024.0,
        idle.requests_per_hour,
        idle.connections
    );
    verdicts.push(verdict(
        &format!(
            "requests per hour ≤ 360 × 1.25 ({:.0})",
            idle.requests_per_hour
        ),
        idle.requests_per_hour <= 450.0,
    ));
    verdicts.push(verdict(
        &format!("one kept-alive connection ({} opened)", idle.connections),
        idle.connections <= 2,
    ));
}

fn verdict(what: &str, met: bool) -> String {
    format!("{} {what}", if met { "met    " } else { "NOT MET" })
}

/// A config in `dir` for `backend` with `source`, `fetch` and `[watch]` lines.
fn write_config(dir: &Path, backend: Backend, source: &str, fetch: &str, watch: &str) -> PathBuf {
    let firewall = match backend {
        Backend::Nftables => "backend = \"nftables\"\n".to_owned(),
        Backend::IptablesNft => String::new(),
        Backend::IptablesLegacy => "iptables = \"/usr/sbin/iptables-legacy\"\n\
                                     ip6tables = \"/usr/sbin/ip6tables-legacy\"\n"
            .to_owned(),
    };
    let state = dir.join("state");
    let _ = std::fs::remove_dir_all(&state);
    let text = format!(
        "source = {source:?}\nlog_file = {:?}\nstate_dir = {state:?}\n[fetch]\n{fetch}\n\
         [firewall]\n{firewall}\n[watch]\n{watch}\n[services]\nssh = 22\n",
        dir.join("portlocker.log"),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Watcher(Child);

impl Watcher {
    fn start(config: &Path) -> Watcher {
        Watcher(
            Command::new(BINARY)
                .args(["-c", config.to_str().unwrap(), "watch"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn reachable(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_millis(50)).is_ok()
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Milliseconds from each change of the file to the first accepted connection.
fn open_latency(dir: &Path, ssh: SocketAddr, every: &str, poke: bool) -> Vec<u64> {
    let server = StreamServer::start("close ssh\n");
    std::fs::write(dir.join("ca.pem"), server.ca_pem()).unwrap();
    let fetch = format!("ca_file = {:?}", dir.join("ca.pem"));
    let mut watch = format!("every = {every:?}\n");
    if poke {
        watch.push_str(&format!("poke = {:?}\n", server.url("/topic")));
    }
    let source = server.url("/portlocker.txt");
    let config = write_config(dir, Backend::Nftables, &source, &fetch, &watch);
    let _watcher = Watcher::start(&config);
    wait("ssh closed", || !reachable(ssh));
    if poke {
        wait("the stream", || server.subscribers() == 1);
    }
    let mut samples = Vec::new();
    // With a poke, past the poke's own limit (a fetch at most every 2 s).
    let (after, period) = match every {
        "10s" => (0, 10_000),
        "2s" => (0, 2_000),
        _ => (2_000, 1_000),
    };
    for _ in 0..OPEN_SAMPLES {
        // Changes come at any moment of the period (the wait for the close
        // before ends just after a fetch).
        std::thread::sleep(Duration::from_millis(after + random() % period));
        let changed = Instant::now();
        server.set_body("open ssh\n");
        if poke {
            server.poke();
        }
        wait("ssh open", || reachable(ssh));
        samples.push(changed.elapsed().as_millis() as u64);
        server.set_body("close ssh\n");
        if poke {
            server.poke();
        }
        wait("ssh closed", || !reachable(ssh));
    }
    samples
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Nftables,
    IptablesNft,
    IptablesLegacy,
}

#[derive(Clone, Copy)]
enum Wipe {
    FlushRuleset,
    IptablesFlush,
    RestoreWithoutNoflush,
    Deleted,
}

impl Wipe {
    fn name(self) -> &'static str {
        match self {
            Wipe::FlushRuleset => "nft flush ruleset",
            Wipe::IptablesFlush => "iptables -F (both families)",
            Wipe::RestoreWithoutNoflush => "iptables-restore without --noflush",
            Wipe::Deleted => "its table / chain deleted",
        }
    }
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::IptablesNft => "iptables-nft",
            Backend::IptablesLegacy => "legacy",
        }
    }

    fn wipes(self) -> Vec<Wipe> {
        match self {
            Backend::Nftables => vec![Wipe::FlushRuleset, Wipe::Deleted],
            Backend::IptablesNft => vec![
                Wipe::FlushRuleset,
                Wipe::IptablesFlush,
                Wipe::RestoreWithoutNoflush,
                Wipe::Deleted,
            ],
            Backend::IptablesLegacy => vec![
                Wipe::IptablesFlush,
                Wipe::RestoreWithoutNoflush,
                Wipe::Deleted,
            ],
        }
    }

    fn tools(self) -> [&'static str; 2] {
        match self {
            Backend::IptablesLegacy => ["/usr/sbin/iptables-legacy", "/usr/sbin/ip6tables-legacy"],
            _ => ["/usr/sbin/iptables-nft", "/usr/sbin/ip6tables-nft"],
        }
    }

    /// What the firewall holds of portlocker's, as one text.
    fn listing(self) -> String {
        match self {
            Backend::Nftables => output(NFT, &["list", "table", "inet", "portlocker"]),
            _ => self
                .tools()
                .iter()
                .map(|tool| output(tool, &["-w", "5", "-S"]))
                .collect(),
        }
    }

    fn wipe(self, wipe: Wipe) {
        let [ip4, ip6] = self.tools();
        match wipe {
            Wipe::FlushRuleset => run(&[NFT, "flush", "ruleset"]),
            Wipe::IptablesFlush => {
                run(&[ip4, "-w", "5", "-F"]);
                run(&[ip6, "-w", "5", "-F"]);
            }
            Wipe::RestoreWithoutNoflush => {
                let dump = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
                for tool in [ip4, ip6] {
                    feed(&format!("{tool}-restore"), &["-w", "5"], dump);
                }
            }
            Wipe::Deleted => match self {
                Backend::Nftables => run(&[NFT, "delete", "table", "inet", "portlocker"]),
                _ => {
                    for tool in [ip4, ip6] {
                        run(&[tool, "-w", "5", "-F"]);
                        run(&[tool, "-w", "5", "-X", "PORTLOCKER"]);
                    }
                }
            },
        }
    }
}

/// When each commit to portlocker's place was heard, for the repair's time.
fn hear_commits(backend: Backend) -> Arc<Mutex<Vec<Instant>>> {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let place = match backend {
        Backend::Nftables => Place {
            tables: vec![(netlink::NFPROTO_INET, "portlocker".into())],
            chains: Vec::new(),
        },
        _ => Place {
            tables: vec![
                (netlink::NFPROTO_IPV4, "filter".into()),
                (netlink::NFPROTO_IPV6, "filter".into()),
            ],
            chains: vec!["INPUT".into(), "PORTLOCKER".into()],
        },
    };
    let mut listener = Listener::subscribe(place).unwrap();
    let record = heard.clone();
    std::thread::spawn(move || {
        while let Ok(news) = listener.wait() {
            if let News::Generation(generation) = news
                && generation.touched
            {
                record.lock().unwrap().push(Instant::now());
            }
        }
    });
    heard
}

/// Milliseconds from the end of each wipe to the repair's last commit
/// (legacy: to the rules listed back whole).
fn repair_latency(dir: &Path, backend: Backend, wipe: Wipe) -> Vec<u64> {
    let heard = (backend != Backend::IptablesLegacy).then(|| hear_commits(backend));
    std::fs::write(dir.join("control.txt"), "close ssh\n").unwrap();
    let source = dir.join("control.txt");
    let config = write_config(
        dir,
        backend,
        source.to_str().unwrap(),
        "",
        "every = \"1h\"\n",
    );
    let mut samples = Vec::new();
    while samples.len() < REPAIR_SAMPLES {
        // Two wipes per watcher: a wipe of both families may be two repairs,
        // and a sixth repair within 30 s would be a fight.
        let watcher = Watcher::start(&config);
        wait("portlocker's rules", || {
            backend.listing().contains("portlocker:ssh")
        });
        let whole = backend.listing();
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(300));
            backend.wipe(wipe);
            let wiped = Instant::now();
            wait("the repair", || backend.listing() == whole);
            let listed = wiped.elapsed();
            // The last commit heard after the wipe ended is the repair's.
            let committed = heard.as_ref().and_then(|heard| {
                let heard = heard.lock().unwrap();
                heard
                    .iter()
                    .rev()
                    .find(|&&at| at > wiped)
                    .map(|&at| at - wiped)
            });
            samples.push(committed.unwrap_or(listed).as_millis() as u64);
        }
        drop(watcher);
        for tool in backend.tools() {
            let _ = Command::new(tool).args(["-w", "5", "-F"]).status();
        }
        let _ = Command::new(NFT).args(["flush", "ruleset"]).status();
    }
    samples
}

struct Idle {
    cpu_per_hour: f64,
    peak_rss_kib: u64,
    requests_per_hour: f64,
    connections: usize,
}

fn idle_cost(dir: &Path, span: Duration) -> Idle {
    let server = StreamServer::start("close ssh\n");
    std::fs::write(dir.join("ca.pem"), server.ca_pem()).unwrap();
    let fetch = format!("ca_file = {:?}", dir.join("ca.pem"));
    let source = server.url("/portlocker.txt");
    let config = write_config(dir, Backend::Nftables, &source, &fetch, "");
    let watcher = Watcher::start(&config);
    wait("portlocker's table", || {
        Backend::Nftables.listing().contains("portlocker:ssh")
    });
    let (cpu0, requests0, started) = (cpu_ticks(watcher.pid()), server.requests(), Instant::now());
    std::thread::sleep(span);
    let ticks = cpu_ticks(watcher.pid()) - cpu0;
    let hours = started.elapsed().as_secs_f64() / 3600.0;
    // SAFETY: sysconf(3) with a constant name.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{}/status", watcher.pid())).unwrap();
    let peak_rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0);
    Idle {
        cpu_per_hour: ticks as f64 / per_second / hours,
        peak_rss_kib,
        requests_per_hour: (server.requests() - requests0) as f64 / hours,
        connections: server.connections(),
    }
}

/// The process's user and system time, and its reaped children's, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime, stime, cutime, cstime: fields 14–17, 12–15 after the name.
    fields[11..15]
        .iter()
        .map(|f| f.parse::<u64>().unwrap())
        .sum()
}

fn percentile(samples: &[u64], at: usize) -> u64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    sorted[((sorted.len() - 1) * at).div_ceil(100)]
}

fn run(argv: &[&str]) {
    let status = Command::new(argv[0]).args(&argv[1..]).status().unwrap();
    assert!(status.success(), "{argv:?}");
}

fn feed(program: &str, args: &[&str], input: &str) {
    use std::io::Write;
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
    assert!(child.wait().unwrap().success(), "{program} {args:?}");
}

fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("TZ", "UTC0")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
