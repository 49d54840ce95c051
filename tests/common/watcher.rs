//! A `portlocker watch` started by a test: killed when the test ends,
//! however it ends; signals; and waiting on what it does, never on a clock.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::TestEnv;

/// How long any wait for the watcher's effect may last before the test
/// fails: generous, the bounds themselves are measured in benches/.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct Watcher {
    child: Child,
    pub pid: u32,
}

impl Watcher {
    /// Starts `portlocker -c CONFIG watch ARGS`, its stderr in `watch.err`.
    pub fn start(env: &TestEnv, args: &[&str]) -> Watcher {
        let stderr = std::fs::File::create(env.path("watch.err")).unwrap();
        let child = env
            .command()
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Watcher {
            pid: child.id(),
            child,
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) of our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(self.pid as i32, signal) }, 0);
    }

    /// Its exit code, waiting at most PATIENCE for it to end.
    pub fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "watch did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Its resident memory (kB) and open descriptors now.
    pub fn footprint(&self) -> (u64, usize) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap();
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .unwrap()
            .count();
        (rss, fds)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `done` holds, failing the test (saying `what`) after PATIENCE.
#[track_caller]
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
