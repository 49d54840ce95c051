//! Each run's changes to a family are one transaction: killed at any
//! moment, a run leaves each family exactly as before or exactly as after,
//! and the next run converges. Real iptables in a private network namespace.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::TestEnv;
use common::netns::{self, rules};

const IPT: &str = "/sbin/iptables";
const IP6T: &str = "/sbin/ip6tables";

/// A restore tool that takes its time before handing its input to the
/// real one, so kills land while a transaction is under way.
fn slow_restore(env: &TestEnv, real: &str) -> String {
    let name = Path::new(real).file_name().unwrap().to_string_lossy();
    let path = env.path(&format!("slow-{name}"));
    common::write_program(
        &path,
        &format!("#!/bin/sh\nsleep 0.03\nexec {real} \"$@\"\n"),
    );
    path.display().to_string()
}

/// Waits, at most `within`, until every process a killed run left behind
/// (a restore tool it started) has ended, and says whether they all did.
/// They are this process's children (it is their subreaper), so none is
/// missed, as one read from /proc in the midst of its exec could be.
fn orphans_end(within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        // SAFETY: waitpid with a null status pointer only reaps a child.
        match unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } {
            -1 => return true,
            0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            0 => return false,
            _ => {}
        }
    }
}

#[test]
fn a_run_killed_during_its_transaction_leaves_each_family_as_before_or_as_after() {
    if !netns::enter("a_run_killed_during_its_transaction_leaves_each_family_as_before_or_as_after")
    {
        return;
    }
    // What the killed runs leave behind becomes this process's to reap.
    // SAFETY: prctl with these arguments only sets a flag of this process.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
    let env = TestEnv::with_real_iptables();
    let restore = slow_restore(&env, "/sbin/iptables-restore");
    let restore6 = slow_restore(&env, "/sbin/ip6tables-restore");
    env.write_config(&env.local_config(
        "",
        &format!("iptables_restore = {restore:?}\nip6tables_restore = {restore6:?}"),
    ));
    // Two files that name the same services: each leaves one whole state.
    let files = [
        "close ssh\nclose web\nclose mosh\n",
        "open ssh\nopen web\nclose mosh\n",
    ];
    let mut whole = Vec::new();
    for file in files {
        env.control(file);
        env.run(&[]).expect(0);
        whole.push((rules(IPT), rules(IP6T)));
    }
    for round in 0..30u64 {
        env.control(files[round as usize % 2]);
        let mut child = env
            .command()
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Spread the kills over the whole run, the transactions included.
        std::thread::sleep(Duration::from_millis(round * 5 % 120));
        let _ = child.kill();
        child.wait().unwrap();
        // A restore tool started before the kill finishes on its own (a
        // generous bound: the machine may be loaded).
        assert!(
            orphans_end(Duration::from_secs(30)),
            "round {round}: a restore tool hangs"
        );
        let (v4, v6) = (rules(IPT), rules(IP6T));
        assert!(
            whole.iter().any(|(w4, _)| *w4 == v4),
            "round {round}: IPv4 neither as before nor as after:\n{v4}"
        );
        assert!(
            whole.iter().any(|(_, w6)| *w6 == v6),
            "round {round}: IPv6 neither as before nor as after:\n{v6}"
        );
    }
    for (file, (v4, v6)) in files.iter().zip(&whole) {
        env.control(file);
        env.run(&[]).expect(0);
        assert_eq!((&rules(IPT), &rules(IP6T)), (v4, v6), "no convergence");
    }
}

/// A recording wrapper at `name` in the test directory around the real `real`.
fn recording(env: &TestEnv, name: &str, real: &str) -> String {
    let path = env.path(name);
    let log = env.path("calls.log");
    common::write_program(
        &path,
        &format!(
            "#!/bin/sh\necho \"{name} $*\" >>{}\nexec {real} \"$@\"\n",
            log.display()
        ),
    );
    path.display().to_string()
}

/// One process writes per family, whatever the number of rules; a run
/// that changes nothing starts none.
#[test]
fn a_first_run_writes_with_one_process_per_family() {
    if !netns::enter("a_first_run_writes_with_one_process_per_family") {
        return;
    }
    let env = TestEnv::with_real_iptables();
    let binaries = [
        ("iptables", IPT),
        ("ip6tables", IP6T),
        ("iptables_restore", "/sbin/iptables-restore"),
        ("ip6tables_restore", "/sbin/ip6tables-restore"),
    ];
    let lines: Vec<String> = binaries
        .iter()
        .map(|(key, real)| format!("{key} = {:?}", recording(&env, key, real)))
        .collect();
    let config = env.local_config("", &lines.join("\n"));
    // The wrappers, not the real binaries, are the configured ones.
    let config = config
        .lines()
        .filter(|line| {
            !line.starts_with("iptables = \"/sbin") && !line.starts_with("ip6tables = \"/sbin")
        })
        .collect::<Vec<_>>()
        .join("\n");
    env.write_config(&config);
    env.control("close ssh\nclose web\nclose mosh\n");
    env.run(&[]).expect(0);
    let writing = |calls: &[String]| -> Vec<String> {
        calls
            .iter()
            .filter(|call| {
                call.contains("_restore")
                    || [" -A ", " -I ", " -D ", " -N ", " -X "]
                        .iter()
                        .any(|op| call.contains(op))
            })
            .cloned()
            .collect()
    };
    assert_eq!(
        writing(&env.calls()),
        [
            "iptables_restore --noflush -w 10",
            "ip6tables_restore --noflush -w 10"
        ]
    );
    env.forget_calls();
    env.run(&[]).expect(0);
    assert_eq!(writing(&env.calls()), Vec::<String>::new());
    assert!(
        !env.calls().is_empty(),
        "the second run did not read the firewall"
    );
}
