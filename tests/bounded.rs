//! Every run ends: a local source that would never deliver (a FIFO, stdin
//! nobody writes to) and an iptables that hangs are cut off by their limits.
//! No test times the run; each only fails if it has not ended after a minute.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Run, TestEnv};

/// How long a run may take before the test gives up on it: far beyond
/// every limit these tests configure.
const GUARD: Duration = Duration::from_secs(60);

/// Runs `command` to its end, or fails the test (killing the run) once
/// `GUARD` has passed. Its stdin is left as the caller set it.
fn run_guarded(mut command: Command) -> Run {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.unwrap().read_to_string(&mut text).unwrap();
            text
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > GUARD {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the run had not ended after {GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// A plain run of `env`'s config, stdin closed.
fn run(env: &TestEnv) -> Run {
    let mut command = env.command();
    command.stdin(Stdio::null());
    run_guarded(command)
}

#[test]
fn a_fifo_as_source_is_refused_without_waiting_for_a_writer() {
    let env = TestEnv::with_fake_iptables();
    let fifo = env.path("control.txt");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // No writer ever opens it: a blocking open would wait for ever.
    let run = run(&env);
    run.expect(1)
        .says(&format!(
            "control file {} is a FIFO, not a regular file",
            fifo.display()
        ))
        .says("nothing was changed");
    assert_eq!(env.calls(), Vec::<String>::new());
}

#[test]
fn a_directory_as_source_is_refused() {
    let env = TestEnv::with_fake_iptables();
    let dir = env.path("control.d");
    std::fs::create_dir(&dir).unwrap();
    env.write_config(&env.config_text(dir.to_str().unwrap(), "", ""));
    let run = run(&env);
    run.expect(1).says(&format!(
        "control file {} is a directory, not a regular file",
        dir.display()
    ));
    assert_eq!(env.calls(), Vec::<String>::new());
}

#[test]
fn a_regular_file_is_still_read() {
    let env = TestEnv::with_fake_iptables();
    env.control("close ssh\n");
    run(&env).expect(0);
    assert!(
        env.fake_table("iptables").contains("portlocker:ssh"),
        "{:?}",
        env.calls()
    );
}

#[test]
fn stdin_that_never_ends_is_cut_off_by_the_fetch_timeout() {
    let env = TestEnv::with_fake_iptables();
    env.write_config(&env.local_config("timeout_secs = 1", ""));
    let mut command = env.command();
    // The write end stays open in this process and nothing is written.
    command.args(["--source", "-"]).stdin(Stdio::piped());
    let run = run_guarded(command);
    run.expect(1)
        .says("reading the control file from stdin")
        .says("did not finish within fetch.timeout_secs (1 s)");
    assert_eq!(env.calls(), Vec::<String>::new());
}

/// An iptables that never answers: it notes its pid, then becomes `sleep 600`.
const HUNG_IPTABLES: &str =
    "#!/bin/sh\necho $$ >>\"$(dirname \"$0\")/../hung.pids\"\nexec sleep 600\n";

#[test]
fn a_hung_iptables_is_killed_after_command_timeout_secs_and_the_run_ends() {
    let env = TestEnv::with_fake_iptables();
    common::write_program(&env.iptables, HUNG_IPTABLES);
    env.write_config(&env.local_config("", "ipv6 = false\ncommand_timeout_secs = 1"));
    env.control("close ssh\n");
    let run = run(&env);
    run.expect(1).says(&format!(
        "`{} -w 10 -S INPUT` did not finish within 1 s and was killed",
        env.iptables.display()
    ));
    // A program that hung gets no further call this run: each would only
    // wait out its own limit.
    let pids = std::fs::read_to_string(env.path("hung.pids")).unwrap();
    assert_eq!(pids.lines().count(), 1, "{}", run.stderr);
    for pid in pids.lines() {
        // Killed and reaped: no process, not even a zombie, under that pid
        // (unless the number was reused by something that is not our sleep).
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert_ne!(cmdline, b"sleep\x00600\x00", "sleep {pid} was left behind");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(
            !status.contains("State:\tZ"),
            "{pid} was left a zombie: {status}"
        );
    }
}
