//! Running a test inside a private network namespace, where real iptables
//! can be changed and real connections tried without touching the host.
//!
//! A test calls `enter("its_name")`: outside a namespace this runs the test
//! binary again, for that one test, under `unshare -rn`, and returns false;
//! inside it returns true and the test does its work. Where namespaces or
//! iptables are missing the test is skipped with the reason printed, unless
//! PORTLOCKER_REQUIRE_NETNS=1 (set by CI), which turns the skip into a failure.

use std::path::Path;
use std::process::Command;

const INSIDE: &str = "PORTLOCKER_TEST_INSIDE_NETNS";
const REQUIRE: &str = "PORTLOCKER_REQUIRE_NETNS";

/// Whether this process is a test re-run inside its namespace.
pub fn inside() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// True when the caller is inside its private namespace and should run.
pub fn enter(test: &str) -> bool {
    enter_unshared(test, &["--net"])
}

/// Like `enter`, with a private mount namespace as well, so the test may
/// mount (a small tmpfs, say) without the host seeing it.
pub fn enter_with_mounts(test: &str) -> bool {
    enter_unshared(test, &["--net", "--mount"])
}

fn enter_unshared(test: &str, namespaces: &[&str]) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        bring_up_loopback();
        return true;
    }
    if let Err(reason) = can_isolate(namespaces) {
        skip(test, &reason);
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("unshare")
        .args(namespaces)
        .args(["--map-root-user", "--"])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("spawn unshare");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{test} failed inside its network namespace:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("1 passed"),
        "{test} did not run inside its namespace:\n{stdout}\n{stderr}"
    );
    eprintln!("{stderr}");
    false
}

/// Like `enter`, for a test that needs both iptables backends, each of
/// which must work in a namespace of its own first.
pub fn enter_with_both_backends(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_none()
        && let Err(reason) = both_backends()
    {
        skip(test, &reason);
        return false;
    }
    enter(test)
}

/// The binaries of each backend, IPv4 then IPv6.
pub const LEGACY: [&str; 2] = ["/usr/sbin/iptables-legacy", "/usr/sbin/ip6tables-legacy"];
pub const NFT: [&str; 2] = ["/usr/sbin/iptables-nft", "/usr/sbin/ip6tables-nft"];

fn both_backends() -> Result<(), String> {
    for binary in LEGACY.into_iter().chain(NFT) {
        if !Path::new(binary).exists() {
            return Err(format!("{binary} is missing (apt-get install iptables)"));
        }
        // Each probe in a namespace of its own: listing loads a legacy table.
        let probe = Command::new("unshare")
            .args(["--net", "--map-root-user", "--", binary, "-w", "5", "-S"])
            .output()
            .map_err(|error| format!("cannot run unshare: {error}"))?;
        if !probe.status.success() {
            return Err(format!(
                "{binary} does not work in a private network namespace here: {}",
                String::from_utf8_lossy(&probe.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Says why `test` skips; a failure when CI forbids skipping.
pub fn skip(test: &str, reason: &str) {
    if std::env::var(REQUIRE).as_deref() == Ok("1") {
        panic!("{test} cannot run and {REQUIRE}=1 forbids skipping it: {reason}");
    }
    super::skipped(
        test,
        &format!("{reason} (set {REQUIRE}=1 to make this a failure)"),
    );
}

fn can_isolate(namespaces: &[&str]) -> Result<(), String> {
    for tool in ["/sbin/iptables", "/sbin/ip6tables", "/sbin/ip"] {
        if !Path::new(tool).exists() {
            return Err(format!(
                "{tool} is missing (apt-get install iptables iproute2)"
            ));
        }
    }
    let probe = Command::new("unshare")
        .args(namespaces)
        .args(["--map-root-user", "--", "/sbin/iptables", "-w", "5", "-S"])
        .output()
        .map_err(|error| format!("cannot run unshare: {error}"))?;
    if !probe.status.success() {
        return Err(format!(
            "no private network namespace with iptables here: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    }
    Ok(())
}

fn bring_up_loopback() {
    let status = Command::new("/sbin/ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(status.success(), "ip link set lo up");
}

/// `iptables -S` (or `ip6tables -S`) of the whole filter table, for snapshots.
pub fn rules(binary: &str) -> String {
    let output = Command::new(binary)
        .args(["-w", "5", "-S"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{binary} -S failed");
    String::from_utf8(output.stdout).unwrap()
}

/// Runs a real iptables command inside the namespace, asserting success.
pub fn iptables(binary: &str, args: &[&str]) {
    let status = Command::new(binary).args(args).status().unwrap();
    assert!(status.success(), "{binary} {args:?}");
}
