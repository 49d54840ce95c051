//! The one seam where commands run: a command as an absolute program, its
//! argv and what it reads on stdin — never a shell — and the real runner,
//! which gives every child a time limit and kills it past that.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use crate::config::Config;

/// A command to run: an absolute program path, its arguments, and what it
/// reads on stdin (a restore tool's transaction), if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub stdin: Option<String>,
}

/// The command as a POSIX shell would read it back.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shell_word(&self.program.to_string_lossy()))?;
        for arg in &self.args {
            write!(f, " {}", shell_word(arg))?;
        }
        Ok(())
    }
}

fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=,@%+".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// How a finished command ended: its exit code, the signal that ended it,
/// or `TimedOut` when it outlived its time limit and the runner killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    Code(i32),
    Signal(i32),
    TimedOut { after: Duration },
}

/// What a finished command left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub termination: Termination,
    pub stdout: String,
    pub stderr: String,
}

/// The seam at the iptables command: real processes, or a recording fake in tests.
pub trait Runner {
    /// Runs `command` to completion. An error means it could not be started.
    fn run(&mut self, command: &Command) -> io::Result<Completion>;
}

/// A runner lent for a while: a backend that must hand its runner on (to
/// the sweep of another iptables backend) runs through `&mut`.
impl<R: Runner + ?Sized> Runner for &mut R {
    fn run(&mut self, command: &Command) -> io::Result<Completion> {
        (**self).run(command)
    }
}

/// Runs commands as real processes, with a minimal fixed environment, and
/// kills any that outlives its time limit.
#[derive(Debug, Clone)]
pub struct SystemRunner {
    limit: Duration,
    /// Programs found trusted already, as root (see `trust`).
    trusted: Vec<PathBuf>,
}

/// The first pause between looks at a running child: a 2 ms iptables is
/// seen to end almost at once.
const FIRST_PAUSE: Duration = Duration::from_micros(50);

/// The longest pause between looks, however long the child runs.
const LONGEST_PAUSE: Duration = Duration::from_millis(5);

/// How long a child killed with SIGKILL may take to be reaped before the run
/// goes on without it (a process stuck in the kernel dies only when it leaves).
const REAP_GRACE: Duration = Duration::from_secs(1);

impl SystemRunner {
    /// A runner that kills every command after firewall.command_timeout_secs.
    pub fn new(config: &Config) -> SystemRunner {
        SystemRunner::with_limit(config.firewall.command_timeout)
    }

    /// A runner that kills every command after `limit`.
    pub fn with_limit(limit: Duration) -> SystemRunner {
        SystemRunner {
            limit,
            trusted: Vec::new(),
        }
    }

    /// Starts `command` with its fixed environment and `env`.
    fn spawn(&self, command: &Command, env: &[(&str, &str)]) -> io::Result<Child> {
        std::process::Command::new(&command.program)
            .args(&command.args)
            // Its own process group, so a kill takes whatever it started too.
            .process_group(0)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            // nft and iptables read and print times in the zone they run in:
            // always UTC, as a POSIX rule that no zone file can change (`UTC`
            // is looked up as a file in /usr/share/zoneinfo first).
            .env("TZ", "UTC0")
            .envs(env.iter().copied())
            .stdin(match &command.stdin {
                Some(input) => Stdio::from(stdin_file(input)?),
                None => Stdio::null(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    }

    /// Runs `command` as `run` does, with `env` added to its fixed environment.
    pub fn run_with_env(
        &mut self,
        command: &Command,
        env: &[(&str, &str)],
    ) -> io::Result<Completion> {
        self.trust(&command.program)?;
        let mut child = self.spawn(command, env)?;
        remember_child(child.id());
        let deadline = Instant::now() + self.limit;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        // The pipes close when the child exits, so waiting for them first
        // costs a quick command nothing; try_wait then only confirms.
        let collect = |pipe: mpsc::Receiver<Vec<u8>>| {
            let output = pipe.recv_timeout(deadline.saturating_duration_since(Instant::now()));
            output
                .ok()
                // Not copied when it is UTF-8, as a listing is.
                .map(|bytes| {
                    String::from_utf8(bytes).unwrap_or_else(|error| {
                        String::from_utf8_lossy(error.as_bytes()).into_owned()
                    })
                })
        };
        let (stdout, stderr) = (collect(stdout), collect(stderr));
        let status = match (&stdout, &stderr) {
            (Some(_), Some(_)) => wait_until(&mut child, deadline)?,
            // A pipe still open at the deadline: the command has not finished.
            _ => None,
        };
        let Some(status) = status else {
            kill(&mut child)?;
            return Ok(Completion {
                termination: Termination::TimedOut { after: self.limit },
                stdout: String::new(),
                stderr: String::new(),
            });
        };
        let termination = match (status.code(), status.signal()) {
            (Some(code), _) => Termination::Code(code),
            (None, Some(signal)) => Termination::Signal(signal),
            (None, None) => Termination::Code(-1),
        };
        Ok(Completion {
            termination,
            stdout: stdout.unwrap_or_default(),
            stderr: stderr.unwrap_or_default(),
        })
    }
}

impl SystemRunner {
    /// As root, refuses to run a program another account could change, or
    /// put where it is missing (`files::check_program`): that would be that
    /// account's root shell. Every program root runs passes here, whatever
    /// asked for it; a refusal is a spawn failure (permission denied).
    fn trust(&mut self, program: &Path) -> io::Result<()> {
        if !crate::sys::files::is_root() || self.trusted.iter().any(|p| p == program) {
            return Ok(());
        }
        crate::sys::files::check_program(program, "a program to run").map_err(|error| {
            io::Error::new(io::ErrorKind::PermissionDenied, format!("{error:#}"))
        })?;
        self.trusted.push(program.to_owned());
        Ok(())
    }
}

impl Runner for SystemRunner {
    fn run(&mut self, command: &Command) -> io::Result<Completion> {
        self.run_with_env(command, &[])
    }
}

/// The pids of the latest children, newest last: `watch` tells its own
/// commits to the firewall from others' by the committing pid.
static CHILDREN: Mutex<VecDeque<u32>> = Mutex::new(VecDeque::new());

/// How many children are remembered: far more than one run starts.
const CHILDREN_KEPT: usize = 256;

fn remember_child(pid: u32) {
    let mut children = CHILDREN.lock().unwrap_or_else(PoisonError::into_inner);
    if children.len() == CHILDREN_KEPT {
        children.pop_front();
    }
    children.push_back(pid);
}

/// Whether `pid` is one of the latest children this process started.
pub fn started_lately(pid: u32) -> bool {
    CHILDREN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&pid)
}

/// What a child reads on stdin: `input` in an anonymous file in memory, from
/// its start. A file, not a pipe: `nft -j -f -` opens /dev/stdin twice (a
/// JSON parse first, then nft's own syntax), and from a pipe the first read
/// takes what the second needs, so nft applies nothing, or a torn script,
/// and says it succeeded. Writing it cannot block on a child that never reads.
fn stdin_file(input: &str) -> io::Result<File> {
    // SAFETY: memfd_create(2) with a NUL-terminated name and flags; no memory is shared.
    let fd = unsafe { libc::memfd_create(c"portlocker-stdin".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor, owned by nothing else.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(input.as_bytes())?;
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

/// Reads a child's pipe to its end on a thread of its own, so a child that
/// fills one pipe while nobody reads it cannot block; the bytes arrive on
/// the channel when the pipe closes.
fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = sender.send(bytes);
    });
    receiver
}

/// Waits for `child` to exit until `deadline`, looking with a pause that
/// starts short and grows. None when it is still running.
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    let mut pause = FIRST_PAUSE;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// Kills `child` with SIGKILL and reaps it, so no process or zombie is left.
fn kill(child: &mut Child) -> io::Result<()> {
    // The whole group the child leads: a wrapper's own children (a script
    // that runs the real iptables) go with it. Not yet reaped, the child's
    // pid is still its own, so the group cannot be another's.
    if let Ok(group) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
    // Fails only when the child has already exited; reaping follows either way.
    let _ = child.kill();
    if wait_until(child, Instant::now() + REAP_GRACE)?.is_none() {
        log::warn!(
            "process {} did not end after SIGKILL; it is left for init to reap",
            child.id()
        );
    }
    Ok(())
}

/// An iptables command that could not be run or did not succeed.
#[derive(Debug)]
pub struct CommandError {
    pub command: Command,
    pub failure: Failure,
}

/// How a command failed; `TimedOut`: it outlived firewall.command_timeout_secs and was killed.
#[derive(Debug)]
pub enum Failure {
    Spawn(io::Error),
    Exited {
        code: i32,
        stderr: String,
    },
    Killed {
        signal: i32,
        stderr: String,
    },
    TimedOut {
        after: Duration,
    },
    /// A restore tool refused its input; it applied none of it.
    Refused(Box<Refusal>),
    /// It succeeded, but printed what portlocker cannot read: why.
    Unreadable(String),
    /// It showed what portlocker will not change: whose it is, and why.
    NotOurs(String),
    /// Not started: an earlier call of the same program hung this run.
    AfterHang,
}

/// Where a restore tool refused its input: the line, what that line is
/// about, and what the tool said.
#[derive(Debug)]
pub struct Refusal {
    pub line: usize,
    pub about: String,
    pub stderr: String,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let command = &self.command;
        match &self.failure {
            Failure::Spawn(error) => write!(f, "could not run `{command}`: {error}"),
            Failure::Exited { code, stderr } => {
                write!(f, "`{command}` exited with {code}")?;
                write_stderr(f, stderr)
            }
            Failure::Refused(refusal) => {
                let Refusal {
                    line,
                    about,
                    stderr,
                } = refusal.as_ref();
                write!(
                    f,
                    "`{command}` refused line {line} of its input ({about}), so it changed nothing"
                )?;
                write_stderr(f, stderr)
            }
            Failure::Unreadable(why) => {
                write!(f, "`{command}` printed what portlocker cannot read: {why}")
            }
            Failure::NotOurs(why) => write!(f, "`{command}` shows {why}"),
            Failure::Killed { signal, stderr } => {
                write!(f, "`{command}` was killed by signal {signal}")?;
                write_stderr(f, stderr)
            }
            Failure::TimedOut { after } => write!(
                f,
                "`{command}` did not finish within {} and was killed",
                shown_limit(*after)
            ),
            Failure::AfterHang => write!(
                f,
                "`{command}` was not run: an earlier call of {} did not finish",
                command.program.display()
            ),
        }
    }
}

/// A time limit as the config spells it, in whole seconds (tests use less).
fn shown_limit(limit: Duration) -> String {
    if limit.subsec_nanos() == 0 {
        format!("{} s", limit.as_secs())
    } else {
        format!("{} ms", limit.as_millis())
    }
}

fn write_stderr(f: &mut fmt::Formatter<'_>, stderr: &str) -> fmt::Result {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        Ok(())
    } else {
        write!(f, ": {}", stderr.replace('\n', " / "))
    }
}

impl std::error::Error for CommandError {}

impl CommandError {
    /// Whether `iptables -S CHAIN` failed only because the chain does not
    /// exist (iptables-nft 1.8.9 words this "incompatible").
    pub(crate) fn chain_is_missing(&self) -> bool {
        match &self.failure {
            Failure::Exited { code: 1, stderr } => {
                stderr.contains("No chain/target/match by that name")
                    || stderr.contains("is incompatible, use 'nft' tool")
            }
            _ => false,
        }
    }

    /// Whether iptables-nft stopped at a rule it cannot print, one only nft
    /// made (`Parsing nftables rule failed`).
    pub(crate) fn only_nft_can_print(&self) -> bool {
        match &self.failure {
            Failure::Exited { stderr, .. } => stderr.contains("Parsing nftables rule failed"),
            _ => false,
        }
    }

    /// Whether the command was not run because its program hung before:
    /// the hang is what to tell, once.
    pub fn after_hang(&self) -> bool {
        matches!(self.failure, Failure::AfterHang)
    }

    /// Whether iptables refused a rule for want of the kernel's xt_time.
    pub fn lacks_time_match(&self) -> bool {
        let stderr = match &self.failure {
            Failure::Exited { stderr, .. } | Failure::Killed { stderr, .. } => stderr,
            Failure::Refused(refusal) => &refusal.stderr,
            _ => return false,
        };
        stderr.contains("match `time'")
    }

    /// Whether iptables refused because this process is not root.
    pub fn needs_root(&self) -> bool {
        match &self.failure {
            Failure::Exited { stderr, .. } => {
                stderr.contains("you must be root") || stderr.contains("Permission denied")
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_print_as_a_shell_reads_them() {
        let command = Command {
            program: "/sbin/iptables".into(),
            args: vec![
                "-C".into(),
                "it's".into(),
                "".into(),
                "a b".into(),
                "60000:61000".into(),
            ],
            stdin: None,
        };
        assert_eq!(
            command.to_string(),
            r"/sbin/iptables -C 'it'\''s' '' 'a b' 60000:61000"
        );
    }

    #[test]
    fn errors_tell_exit_code_signal_and_spawn_failure_apart() {
        let command = Command {
            program: "/sbin/iptables".into(),
            args: vec!["-C".into(), "INPUT".into()],
            stdin: None,
        };
        let shown = |failure| {
            CommandError {
                command: command.clone(),
                failure,
            }
            .to_string()
        };
        assert_eq!(
            shown(Failure::Exited {
                code: 2,
                stderr: "bad\nworse\n".into()
            }),
            "`/sbin/iptables -C INPUT` exited with 2: bad / worse"
        );
        assert_eq!(
            shown(Failure::Killed {
                signal: 9,
                stderr: String::new()
            }),
            "`/sbin/iptables -C INPUT` was killed by signal 9"
        );
        assert_eq!(
            shown(Failure::TimedOut {
                after: Duration::from_secs(30)
            }),
            "`/sbin/iptables -C INPUT` did not finish within 30 s and was killed"
        );
        let spawn = shown(Failure::Spawn(io::Error::from(io::ErrorKind::NotFound)));
        assert!(
            spawn.starts_with("could not run `/sbin/iptables -C INPUT`: "),
            "{spawn}"
        );
    }

    /// A shell script as a command: only tests run a shell.
    fn script(text: &str) -> Command {
        Command {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), text.into()],
            stdin: None,
        }
    }

    fn runner(limit: Duration) -> SystemRunner {
        SystemRunner::with_limit(limit)
    }

    #[test]
    fn the_system_runner_reports_code_and_both_streams() {
        let done = runner(Duration::from_secs(30))
            .run(&script("echo out; echo err >&2; exit 3"))
            .unwrap();
        assert_eq!(done.termination, Termination::Code(3));
        assert_eq!(
            (done.stdout.as_str(), done.stderr.as_str()),
            ("out\n", "err\n")
        );
    }

    #[test]
    fn output_that_is_not_utf8_is_read_with_replacement_characters() {
        let done = runner(Duration::from_secs(30))
            .run(&script("printf 'a\\377b'; printf 'c\\376' >&2"))
            .unwrap();
        assert_eq!(
            (done.stdout.as_str(), done.stderr.as_str()),
            ("a\u{FFFD}b", "c\u{FFFD}")
        );
    }

    #[test]
    fn a_chatty_child_cannot_block_on_a_full_pipe() {
        // Far more than a pipe holds, on both streams, stderr first.
        let done = runner(Duration::from_secs(30))
            .run(&script(
                "head -c 1000000 /dev/zero >&2; head -c 1000000 /dev/zero",
            ))
            .unwrap();
        assert_eq!(done.termination, Termination::Code(0));
        assert_eq!(
            (done.stdout.len(), done.stderr.len()),
            (1_000_000, 1_000_000)
        );
    }

    #[test]
    fn a_child_that_outlives_its_limit_is_killed_and_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let limit = Duration::from_millis(200);
        let command = script(&format!("echo $$ >{}; exec sleep 600", pid_file.display()));
        let done = runner(limit).run(&command).unwrap();
        assert_eq!(done.termination, Termination::TimedOut { after: limit });
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        // Reaped: not even a zombie is left under that number.
        let proc = std::path::Path::new("/proc").join(pid.trim());
        assert!(!proc.exists(), "process {} is still there", pid.trim());
    }

    #[test]
    fn a_child_killed_at_its_limit_takes_what_it_started_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild");
        // Long enough for the shell to start its child on a loaded machine.
        let limit = Duration::from_secs(2);
        // A wrapper that starts a child of its own and waits for it.
        let command = script(&format!(
            "sleep 600 & echo $! >{}; wait",
            pid_file.display()
        ));
        let done = runner(limit).run(&command).unwrap();
        assert_eq!(done.termination, Termination::TimedOut { after: limit });
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let read =
            || std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        let dead = |stat: &str| stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z");
        // SIGKILL goes to the group at once but lands when the kernel next
        // runs the grandchild: wait for that, within a generous bound.
        for _ in 0..500 {
            if dead(&read()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let stat = read();
        // Gone, or at most a zombie waiting for init.
        assert!(
            dead(&stat),
            "the grandchild {} lives on: {stat}",
            pid.trim()
        );
    }

    #[test]
    fn a_child_that_closes_its_output_but_runs_on_is_killed() {
        let limit = Duration::from_millis(200);
        let done = runner(limit)
            .run(&script("exec >&- 2>&-; exec sleep 600"))
            .unwrap();
        assert_eq!(done.termination, Termination::TimedOut { after: limit });
    }
}

#[cfg(test)]
mod stdin_tests {
    use super::*;

    #[test]
    fn a_command_reads_its_stdin_and_a_child_that_ignores_it_does_not_block() {
        let mut runner = SystemRunner::with_limit(Duration::from_secs(20));
        let cat = Command {
            program: "/bin/cat".into(),
            args: Vec::new(),
            stdin: Some("*filter\nCOMMIT\n".into()),
        };
        let done = runner.run(&cat).unwrap();
        assert_eq!(done.termination, Termination::Code(0));
        assert_eq!(done.stdout, "*filter\nCOMMIT\n");
        // Far more than a pipe holds, to a child that never reads it.
        let deaf = Command {
            program: "/bin/true".into(),
            args: Vec::new(),
            stdin: Some("x".repeat(1 << 20)),
        };
        assert_eq!(runner.run(&deaf).unwrap().termination, Termination::Code(0));
    }

    /// `nft -j -f -` reads its input twice: it opens /dev/stdin for a JSON
    /// parse, then again for nft's own syntax. Each open must start at the
    /// beginning (from a pipe, the first read takes what the second needs,
    /// and nft applies nothing yet says it succeeded).
    #[test]
    fn a_child_that_opens_its_stdin_twice_reads_it_whole_each_time() {
        let mut runner = SystemRunner::with_limit(Duration::from_secs(20));
        let input = "table inet portlocker\n".repeat(500);
        let twice = Command {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "head -c 5 /dev/stdin; cat /dev/stdin".into()],
            stdin: Some(input.clone()),
        };
        let done = runner.run(&twice).unwrap();
        assert_eq!(done.termination, Termination::Code(0));
        assert_eq!(done.stdout, format!("table{input}"));
    }

    /// Root runs nothing another account can change, whoever asked for it:
    /// the host's reader as much as a backend's commit or a notify command.
    #[test]
    fn as_root_a_program_another_account_can_change_is_never_run() {
        use std::os::unix::fs::PermissionsExt;
        if !crate::sys::files::is_root() {
            eprintln!("SKIPPED: needs root to make a directory another account owns");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        let marker = dir.path().join("ran");
        let program = theirs.join("nft");
        std::fs::write(&program, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        // nobody owns the directory: it can swap the program at will.
        rustix::fs::chown(&theirs, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();
        let mut runner = SystemRunner::with_limit(Duration::from_secs(20));
        let command = Command {
            program: program.clone(),
            args: vec!["-j".into(), "list".into(), "chains".into()],
            stdin: None,
        };
        let error = runner.run(&command).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied, "{error}");
        assert!(!marker.exists(), "the program ran");
        // Root's own, in root's directory, runs.
        rustix::fs::chown(&theirs, Some(rustix::fs::Uid::ROOT), None).unwrap();
        assert_eq!(
            runner.run(&command).unwrap().termination,
            Termination::Code(0)
        );
        assert!(marker.exists());
    }
}
