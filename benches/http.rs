//! What the HTTP client costs: this build's binary against another
//! (PORTLOCKER_BENCH_BASELINE, say a build of the commit before a client
//! change), in alternating rounds so that load on the shared machine falls
//! on both. In a private network namespace with real iptables and nft and
//! a real HTTPS server on loopback; run as root with `cargo bench --bench
//! http`. Without a baseline it measures this build alone.
//!
//! - the stripped binary's size;
//! - one fetch (`portlocker check --source URL`) and a no-change run at 3
//!   services with IPv6, per backend: wall time, CPU time, peak RSS;
//! - `watch`'s idle cost: a watcher at `every = "1s"` over a connection
//!   kept alive, each fetch a conditional GET answered 304, through a
//!   forwarder that counts the bytes both ways: bytes per 304, connections
//!   opened, the watcher's own CPU per fetch, its threads and peak RSS.
//!
//! The figures go to docs/BENCHMARKS.md under "HTTP client".

#[path = "../tests/common/https.rs"]
#[allow(dead_code)]
mod https;
#[path = "../tests/common/stream.rs"]
#[allow(dead_code)]
mod stream;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_portlocker");
const INSIDE: &str = "PORTLOCKER_BENCH_INSIDE_NETNS";
const LAUNCHER: &str = "PORTLOCKER_BENCH_LAUNCHER";
const BASELINE: &str = "PORTLOCKER_BENCH_BASELINE";
/// Rounds of each one-shot measurement, per binary.
const ROUNDS: usize = 41;
/// How long each watcher runs (PORTLOCKER_BENCH_WATCH_SECS), in how many
/// alternating turns per binary.
const WATCH_SECS: u64 = 60;
const WATCH_TURNS: usize = 2;

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
            .expect("unshare (util-linux) is needed");
        std::process::exit(status.code().unwrap_or(1));
    }
    run(&["/sbin/ip", "link", "set", "lo", "up"]);
    let mut binaries = vec![("this build", PathBuf::from(BINARY))];
    if let Some(path) = std::env::var_os(BASELINE) {
        binaries.insert(0, ("baseline", PathBuf::from(path)));
    }
    let dir = tempfile::tempdir().unwrap();

    println!("stripped binary:");
    for (name, path) in &binaries {
        let size = std::fs::metadata(path).unwrap().len();
        println!(
            "  {name:>10}: {size} bytes ({:.2} MiB)",
            size as f64 / 1048576.0
        );
    }
    for backend in ["iptables", "nftables"] {
        one_shots(dir.path(), backend, &binaries);
    }
    idle(dir.path(), &binaries);
}

/// A fetch and a no-change run with each binary, alternating.
fn one_shots(dir: &Path, backend: &str, binaries: &[(&str, PathBuf)]) {
    let server = https::TlsServer::start(https::Reply::Body {
        body: b"close s000\nclose s001\nclose s002\n".to_vec(),
        content_type: "text/plain",
    });
    let url = server.url("/portlocker.txt");
    let configs: Vec<PathBuf> = (0..binaries.len())
        .map(|i| one_shot_config(dir, &format!("{backend}-{i}"), backend, &server))
        .collect();
    reset_firewall();
    // The first run closes the ports; every later one changes nothing.
    for (i, (_, binary)) in binaries.iter().enumerate() {
        measure(binary, &configs[i], &[]);
    }
    let mut fetches = vec![Vec::new(); binaries.len()];
    let mut runs = vec![Vec::new(); binaries.len()];
    for round in 0..ROUNDS {
        for turn in 0..binaries.len() {
            let i = (turn + round) % binaries.len();
            fetches[i].push(measure(
                &binaries[i].1,
                &configs[i],
                &["check", "--source", &url],
            ));
            runs[i].push(measure(&binaries[i].1, &configs[i], &[]));
        }
    }
    println!("\n{backend}, 3 services with IPv6, medians of {ROUNDS} alternating rounds:");
    println!(
        "  {:>10} | {:>9} {:>9} {:>8} | {:>9} {:>9} {:>8}",
        "", "fetch ms", "CPU ms", "RSS KiB", "run ms", "CPU ms", "RSS KiB"
    );
    for (i, (name, _)) in binaries.iter().enumerate() {
        let (f, r) = (Usage::median(&fetches[i]), Usage::median(&runs[i]));
        println!(
            "  {name:>10} | {:>9.2} {:>9.2} {:>8} | {:>9.2} {:>9.2} {:>8}",
            ms(f.wall),
            ms(f.cpu),
            f.peak_rss_kib,
            ms(r.wall),
            ms(r.cpu),
            r.peak_rss_kib
        );
    }
    reset_firewall();
}

fn one_shot_config(dir: &Path, name: &str, backend: &str, server: &https::TlsServer) -> PathBuf {
    let ca = dir.join(format!("ca-{name}.pem"));
    server.write_ca(&ca);
    let state = dir.join(format!("state-{name}"));
    let text = format!(
        "source = {:?}\nlog_file = {:?}\nstate_dir = {state:?}\n[fetch]\nca_file = {ca:?}\n\
         [firewall]\nbackend = {backend:?}\nipv6 = true\n[services]\ns000 = 2000\n\
         s001 = 2001\ns002 = 2002\n",
        server.url("/portlocker.txt"),
        dir.join(format!("{name}.log")),
    );
    let path = dir.join(format!("config-{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A watcher per binary in turn, each against its own keep-alive server
/// behind a byte-counting forwarder.
fn idle(dir: &Path, binaries: &[(&str, PathBuf)]) {
    println!(
        "\nwatch at every = \"1s\" (nftables), a 304 over a kept-alive connection each second, \
         {WATCH_TURNS} turns of {} s per binary:",
        watch_secs()
    );
    println!(
        "  {:>10} | {:>8} {:>10} {:>11} {:>11} | {:>11} {:>7} {:>8}",
        "", "fetches", "conns", "bytes up", "bytes down", "CPU ms/fetch", "threads", "HWM KiB"
    );
    let mut totals = vec![Idle::default(); binaries.len()];
    for _ in 0..WATCH_TURNS {
        for (i, (_, binary)) in binaries.iter().enumerate() {
            totals[i].add(&watch_once(dir, binary));
        }
    }
    for (i, (name, _)) in binaries.iter().enumerate() {
        let t = &totals[i];
        let per = |n: u64| n as f64 / t.fetches as f64;
        println!(
            "  {name:>10} | {:>8} {:>10} {:>11.0} {:>11.0} | {:>11.3} {:>7} {:>8}",
            t.fetches,
            t.connections,
            per(t.up),
            per(t.down),
            t.cpu_ms / t.fetches as f64,
            t.threads,
            t.hwm_kib
        );
    }
    println!("  bytes and CPU per fetch counted after the first fetch (its TLS handshake) settled");
}

#[derive(Clone, Default)]
struct Idle {
    fetches: u64,
    connections: u64,
    up: u64,
    down: u64,
    cpu_ms: f64,
    threads: u64,
    hwm_kib: u64,
}

impl Idle {
    fn add(&mut self, other: &Idle) {
        self.fetches += other.fetches;
        self.connections += other.connections;
        self.up += other.up;
        self.down += other.down;
        self.cpu_ms += other.cpu_ms;
        self.threads = self.threads.max(other.threads);
        self.hwm_kib = self.hwm_kib.max(other.hwm_kib);
    }
}

fn watch_once(dir: &Path, binary: &Path) -> Idle {
    reset_firewall();
    let server = stream::StreamServer::start("close ssh\n");
    let forwarder = Forwarder::start(server.port);
    std::fs::write(dir.join("ca-watch.pem"), server.ca_pem()).unwrap();
    let state = dir.join("state-watch");
    let _ = std::fs::remove_dir_all(&state);
    let text = format!(
        "source = \"https://127.0.0.1:{}/portlocker.txt\"\nlog_file = {:?}\nstate_dir = {state:?}\n\
         [fetch]\nca_file = {:?}\n[firewall]\nbackend = \"nftables\"\n[watch]\nevery = \"1s\"\n\
         [services]\nssh = 22\n",
        forwarder.port,
        dir.join("watch.log"),
        dir.join("ca-watch.pem"),
    );
    let config = dir.join("config-watch.toml");
    std::fs::write(&config, text).unwrap();
    let mut watcher = Command::new(binary)
        .args(["-c", config.to_str().unwrap(), "watch"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = watcher.id();
    // Past the first fetch (the handshake, the first body) and a few 304s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.requests() < 3 {
        assert!(Instant::now() < deadline, "the watcher fetched nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (requests, up, down, cpu) = (
        server.requests(),
        forwarder.up.load(Ordering::SeqCst),
        forwarder.down.load(Ordering::SeqCst),
        own_cpu_ticks(pid),
    );
    std::thread::sleep(Duration::from_secs(watch_secs()));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf(3) with a constant name.
    let tick_ms = 1000.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let idle = Idle {
        fetches: (server.requests() - requests) as u64,
        connections: server.connections() as u64,
        up: forwarder.up.load(Ordering::SeqCst) - up,
        down: forwarder.down.load(Ordering::SeqCst) - down,
        cpu_ms: (own_cpu_ticks(pid) - cpu) as f64 * tick_ms,
        threads: field("Threads:"),
        hwm_kib: field("VmHWM:"),
    };
    stop(&mut watcher);
    idle
}

fn watch_secs() -> u64 {
    std::env::var("PORTLOCKER_BENCH_WATCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(WATCH_SECS)
}

fn stop(child: &mut Child) {
    // SAFETY: kill(2) of our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
}

/// The process's own user and system time (its threads', not its children's), in ticks.
fn own_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11..13]
        .iter()
        .map(|f| f.parse::<u64>().unwrap())
        .sum()
}

/// A TCP forwarder on loopback that counts the bytes each way.
struct Forwarder {
    port: u16,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl Forwarder {
    fn start(target: u16) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (up_count, down_count) = (up.clone(), down.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    &up_count,
                );
                pipe(server, client, &down_count);
            }
        });
        Forwarder { port, up, down }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, count: &Arc<AtomicU64>) {
    let count = count.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16384];
        while let Ok(read) = from.read(&mut buffer) {
            if read == 0 || to.write_all(&buffer[..read]).is_err() {
                break;
            }
            count.fetch_add(read as u64, Ordering::SeqCst);
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

#[derive(Clone, Copy)]
struct Usage {
    wall: Duration,
    cpu: Duration,
    peak_rss_kib: i64,
}

impl Usage {
    fn median(samples: &[Usage]) -> Usage {
        let pick = |key: fn(&Usage) -> Duration| {
            let mut values: Vec<Duration> = samples.iter().map(key).collect();
            values.sort();
            values[values.len() / 2]
        };
        let mut rss: Vec<i64> = samples.iter().map(|s| s.peak_rss_kib).collect();
        rss.sort();
        Usage {
            wall: pick(|s| s.wall),
            cpu: pick(|s| s.cpu),
            peak_rss_kib: rss[rss.len() / 2],
        }
    }
}

/// One run of `binary` with `config` and `args`, through the launcher.
fn measure(binary: &Path, config: &Path, args: &[&str]) -> Usage {
    let output = Command::new(std::env::current_exe().unwrap())
        .env(LAUNCHER, "1")
        .arg(binary)
        .arg("-c")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "launcher: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let numbers: Vec<u64> = text
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    Usage {
        wall: Duration::from_nanos(numbers[0]),
        cpu: Duration::from_nanos(numbers[1]),
        peak_rss_kib: numbers[2] as i64,
    }
}

/// The launcher: runs its arguments and prints the wall time (ns), the CPU
/// time with that of the children it reaped (ns), and the peak RSS (KiB)
/// of the command, measured from this small fresh process (Linux charges a
/// child with its parent's peak at fork).
// The child is reaped by wait4, which std's Child cannot do, to read its rusage.
#[allow(clippy::zombie_processes)]
fn launch_and_report() -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let started = Instant::now();
    let child = Command::new(&args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: our own child, not yet reaped; the pointers are valid.
    let reaped = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(reaped, child.id() as libc::pid_t, "wait4 failed");
    assert_eq!(libc::WEXITSTATUS(status), 0, "{args:?} failed");
    let seconds = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let cpu = seconds(usage.ru_utime) + seconds(usage.ru_stime);
    println!("{} {} {}", wall.as_nanos(), cpu.as_nanos(), usage.ru_maxrss);
    std::process::exit(0);
}

fn reset_firewall() {
    for binary in ["/sbin/iptables", "/sbin/ip6tables"] {
        run(&[binary, "-w", "10", "-F"]);
        run(&[binary, "-w", "10", "-X"]);
    }
    run(&["/usr/sbin/nft", "flush", "ruleset"]);
}

fn run(argv: &[&str]) {
    let status = Command::new(argv[0]).args(&argv[1..]).status().unwrap();
    assert!(status.success(), "{argv:?}");
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
