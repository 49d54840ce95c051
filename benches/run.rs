//! How fast and small a run is, against the floor of the iptables calls the
//! same work needs. In a private network namespace with real iptables and a
//! real HTTPS server on loopback; run as root with `cargo bench`.
//!
//! For 3, 30 and 100 services, IPv4 only and both families, it times a
//! first run (every port to close) and a no-change run, and the floor: the
//! bare `iptables -C` (and `-A`) calls of the same work spawned back to back,
//! plus one fetch (`portlocker check --source URL`). It prints medians, the
//! ratio to the floor, the peak RSS of the binary, its size, and how long
//! parsing a 64 KiB control file takes.

#[path = "../tests/common/https.rs"]
#[allow(dead_code)]
mod https;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portlocker::config::ServiceName;
use portlocker::control::{self, Context};

const BINARY: &str = env!("CARGO_BIN_EXE_portlocker");
const INSIDE: &str = "PORTLOCKER_BENCH_INSIDE_NETNS";
const LAUNCHER: &str = "PORTLOCKER_BENCH_LAUNCHER";
const ROUNDS: usize = 11;

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

    let dir = tempfile::tempdir().unwrap();
    let mut peak_rss_kib = 0;
    println!("portlocker benchmark: medians of {ROUNDS} rounds, in a private network namespace");
    println!();
    println!(
        "{:>8} {:>5} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>9} {:>6} | {:>6}",
        "services",
        "ipv6",
        "first ms",
        "floor ms",
        "ratio",
        "same ms",
        "floor ms",
        "fetch ms",
        "ratio",
        "target"
    );
    let mut verdicts = Vec::new();
    for services in [3, 30, 100] {
        for ipv6 in [false, true] {
            let bench = Bench::new(dir.path(), services, ipv6);
            let fetch =
                median((0..ROUNDS).map(|_| bench.timed(&["check", "--source", &bench.url])));
            let first = median((0..ROUNDS).map(|_| {
                reset_firewall();
                bench.timed(&[])
            }));
            let first_floor = median((0..ROUNDS).map(|_| {
                reset_firewall();
                bench.floor(true)
            }));
            reset_firewall();
            bench.timed(&[]);
            let same = median((0..ROUNDS).map(|_| bench.timed(&[])));
            let same_floor = median((0..ROUNDS).map(|_| bench.floor(false)));
            let ratio = ms(same) / (ms(same_floor) + ms(fetch));
            // Peak RSS of a fetch, a first run and a no-change run, measured apart.
            reset_firewall();
            let rss = [
                bench.peak_rss(&["check", "--source", &bench.url]),
                bench.peak_rss(&[]),
                bench.peak_rss(&[]),
            ];
            let rss = rss.into_iter().max().unwrap();
            peak_rss_kib = peak_rss_kib.max(rss);
            let target = if services == 30 {
                let met = ratio <= 1.15;
                verdicts.push((format!("no-change run at 30 services, ipv6 = {ipv6}: {ratio:.2}× floor + fetch (target ≤ 1.15×)"), met));
                if met { "met" } else { "MISSED" }
            } else {
                ""
            };
            println!(
                "{services:>8} {ipv6:>5} | {:>9.1} {:>9.1} {:>6.2} | {:>9.1} {:>9.1} {:>9.1} {:>6.2} | {:>7.1} | {target:>6}",
                ms(first),
                ms(first_floor),
                ms(first) / (ms(first_floor) + ms(fetch)),
                ms(same),
                ms(same_floor),
                ms(fetch),
                ratio,
                rss as f64 / 1024.0,
            );
        }
    }
    reset_firewall();

    let parse = parse_64k();
    let size = std::fs::metadata(BINARY).unwrap().len();
    let rss_mib = peak_rss_kib as f64 / 1024.0;
    let size_mib = size as f64 / (1024.0 * 1024.0);
    verdicts.push((
        format!("peak RSS {rss_mib:.1} MiB (target ≤ 6 MiB)"),
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
    println!("first ratio = first run / (floor + fetch); same = a run that changes nothing");
    println!("floor = the bare iptables -C (and -A) calls of the same work, spawned back to back");
    println!(
        "the original Python script, measured here on the same work: 60 ms at 3 services, 134 ms at 30,"
    );
    println!("  against floors of 8 and 69 ms; peak RSS 12.6 MiB (curl)");
    println!();
    for (verdict, met) in &verdicts {
        println!("{} {verdict}", if *met { "met:   " } else { "MISSED:" });
    }
}

/// One configuration under test: its config, its control file on a live
/// HTTPS server, and the rules it makes.
struct Bench {
    config: PathBuf,
    url: String,
    services: usize,
    ipv6: bool,
    _server: https::TlsServer,
}

impl Bench {
    fn new(dir: &Path, services: usize, ipv6: bool) -> Bench {
        let control: String = (0..services).map(|i| format!("close s{i:03}\n")).collect();
        let server = https::TlsServer::start(https::Reply::Body {
            body: control.into_bytes(),
            content_type: "text/plain",
        });
        let ca = dir.join("ca.pem");
        server.write_ca(&ca);
        let state = dir.join(format!("state-{services}-{ipv6}"));
        let url = server.url("/portlocker.txt");
        let mut text = format!(
            "source = {url:?}\nlog_file = {:?}\nstate_dir = {state:?}\n[fetch]\nca_file = {ca:?}\n\
             [firewall]\niptables = \"/sbin/iptables\"\nip6tables = \"/sbin/ip6tables\"\nipv6 = {ipv6}\n[services]\n",
            dir.join("portlocker.log"),
        );
        for i in 0..services {
            text.push_str(&format!("s{i:03} = {}\n", 2000 + i));
        }
        let config = dir.join(format!("config-{services}-{ipv6}.toml"));
        std::fs::write(&config, text).unwrap();
        Bench {
            config,
            url,
            services,
            ipv6,
            _server: server,
        }
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

    /// The bare iptables calls of a first run (`-N`, `-I`, then `-C` and `-A`
    /// per rule) or of a no-change run (`-C` of the jump and of every rule).
    fn floor(&self, first: bool) -> Duration {
        let binaries: &[&str] = if self.ipv6 {
            &["/sbin/iptables", "/sbin/ip6tables"]
        } else {
            &["/sbin/iptables"]
        };
        let started = Instant::now();
        for binary in binaries {
            let iptables = |args: &[&str]| {
                Command::new(binary)
                    .args(["-w", "10"])
                    .args(args)
                    .stderr(Stdio::null())
                    .status()
                    .unwrap()
            };
            if first {
                iptables(&["-N", "PORTLOCKER"]);
                iptables(&["-I", "INPUT", "1", "-j", "PORTLOCKER"]);
            } else {
                iptables(&["-C", "INPUT", "-j", "PORTLOCKER"]);
            }
            for i in 0..self.services {
                let port = (2000 + i).to_string();
                let tag = format!("portlocker:s{i:03}");
                let spec = [
                    "-p",
                    "tcp",
                    "-m",
                    "tcp",
                    "--dport",
                    &port,
                    "--syn",
                    "-m",
                    "comment",
                    "--comment",
                    &tag,
                    "-j",
                    "DROP",
                ];
                let check: Vec<&str> = ["-C", "PORTLOCKER"].into_iter().chain(spec).collect();
                let present = iptables(&check).success();
                if first && !present {
                    let append: Vec<&str> = ["-A", "PORTLOCKER"].into_iter().chain(spec).collect();
                    assert!(iptables(&append).success());
                }
            }
        }
        started.elapsed()
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
    let (code, rss) = wait_with_rusage(child.id());
    assert_eq!(code, 0, "{args:?} failed");
    println!("{rss}");
    std::process::exit(0);
}

/// Waits for `pid` and returns its exit code and peak resident set (KiB).
fn wait_with_rusage(pid: u32) -> (i32, i64) {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet reaped; the pointers are valid.
    let reaped = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid as libc::pid_t, "wait4 failed");
    (libc::WEXITSTATUS(status), usage.ru_maxrss)
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

fn reset_firewall() {
    for binary in ["/sbin/iptables", "/sbin/ip6tables"] {
        run(&[binary, "-w", "10", "-F"]);
        run(&[binary, "-w", "10", "-X"]);
    }
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
