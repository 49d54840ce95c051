//! The iptables layer: changes as argv vectors, the one seam where
//! iptables runs, and reading and changing portlocker's part of the
//! firewall. The only module that spawns processes; no shell is ever involved.

use std::fmt;
use std::io::{self, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::{ChainName, Config, Family};
use crate::model::{ChainRules, Change, FamilyHoldings, Holdings, Rule};
use crate::plan::Step;

/// Seconds every iptables call waits for the xtables lock before giving up,
/// so a run never hangs behind another firewall tool.
pub const XTABLES_WAIT_SECS: u32 = 10;

/// How many copies of one rule a blind removal takes away before it gives up.
const MAX_DUPLICATES: usize = 64;

/// The arguments that make `change`.
pub fn args(change: &Change) -> Vec<String> {
    match change {
        Change::NewChain { chain, .. } => vec!["-N".into(), chain.to_string()],
        Change::InsertJump { chain, tag, .. } => {
            let mut args = vec!["-I".to_owned(), "INPUT".to_owned(), "1".to_owned()];
            args.extend(tag.spec(chain));
            args
        }
        Change::DeleteJump { spec, .. } => listed_args("-D", "INPUT", spec),
        Change::DeleteChain { chain, .. } => vec!["-X".into(), chain.to_string()],
        // A source rule must come before the DROP of its port: first in the chain.
        Change::Append(rule) if rule.source.is_some() => {
            let mut args = vec!["-I".to_owned(), rule.chain.to_string(), "1".to_owned()];
            args.extend(rule.spec());
            args
        }
        Change::Append(rule) => rule_args("-A", rule),
        Change::Delete(rule) => rule_args("-D", rule),
        Change::DeleteListed { chain, spec, .. } => listed_args("-D", chain.as_str(), spec),
    }
}

/// The read-only arguments whose success means the thing `change` is
/// about is present.
pub fn check_args(change: &Change) -> Vec<String> {
    match change {
        Change::NewChain { chain, .. } | Change::DeleteChain { chain, .. } => {
            vec!["-S".into(), chain.to_string()]
        }
        Change::InsertJump { chain, tag, .. } => listed_args("-C", "INPUT", &tag.spec(chain)),
        Change::DeleteJump { spec, .. } => listed_args("-C", "INPUT", spec),
        Change::Append(rule) | Change::Delete(rule) => rule_args("-C", rule),
        Change::DeleteListed { chain, spec, .. } => listed_args("-C", chain.as_str(), spec),
    }
}

fn rule_args(operation: &str, rule: &Rule) -> Vec<String> {
    listed_args(operation, rule.chain.as_str(), &rule.spec())
}

fn listed_args(operation: &str, chain: &str, spec: &[String]) -> Vec<String> {
    let mut args = vec![operation.to_owned(), chain.to_owned()];
    args.extend_from_slice(spec);
    args
}

/// A command to run: an absolute program path and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Command {
    /// An iptables command for `family` that waits a bounded time for the xtables lock.
    pub fn iptables(config: &Config, family: Family, args: Vec<String>) -> Command {
        let mut all = vec!["-w".to_owned(), XTABLES_WAIT_SECS.to_string()];
        all.extend(args);
        Command {
            program: config.binary(family).to_owned(),
            args: all,
        }
    }
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

/// Runs commands as real processes, with a minimal fixed environment, and
/// kills any that outlives its time limit.
#[derive(Debug, Clone)]
pub struct SystemRunner {
    limit: Duration,
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
        SystemRunner {
            limit: config.firewall.command_timeout,
        }
    }
}

impl Runner for SystemRunner {
    fn run(&mut self, command: &Command) -> io::Result<Completion> {
        let mut child = std::process::Command::new(&command.program)
            .args(&command.args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + self.limit;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        // The pipes close when the child exits, so waiting for them first
        // costs a quick command nothing; try_wait then only confirms.
        let collect = |pipe: mpsc::Receiver<Vec<u8>>| {
            let output = pipe.recv_timeout(deadline.saturating_duration_since(Instant::now()));
            output
                .ok()
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
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
    /// Not started: an earlier call of the same program hung this run.
    AfterHang,
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
    fn chain_is_missing(&self) -> bool {
        match &self.failure {
            Failure::Exited { code: 1, stderr } => {
                stderr.contains("No chain/target/match by that name")
                    || stderr.contains("is incompatible, use 'nft' tool")
            }
            _ => false,
        }
    }

    /// Whether the command was not run because its program hung before:
    /// the hang is what to tell, once.
    pub fn after_hang(&self) -> bool {
        matches!(self.failure, Failure::AfterHang)
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

/// The firewall as portlocker sees it, through a `Runner`.
pub struct Firewall<'a, R: Runner> {
    pub runner: R,
    config: &'a Config,
    /// Programs that hung this run: each further call would only wait out
    /// its own time limit, so none is made.
    hung: Vec<PathBuf>,
}

impl<'a, R: Runner> Firewall<'a, R> {
    pub fn new(config: &'a Config, runner: R) -> Self {
        Firewall {
            runner,
            config,
            hung: Vec::new(),
        }
    }

    /// Runs `command`; Ok only when it exits 0.
    fn run(&mut self, command: Command) -> Result<Completion, CommandError> {
        if self.hung.contains(&command.program) {
            return Err(CommandError {
                command,
                failure: Failure::AfterHang,
            });
        }
        let completion = self.runner.run(&command);
        let failure = match completion {
            Err(error) => Failure::Spawn(error),
            Ok(done) if done.termination == Termination::Code(0) => return Ok(done),
            Ok(Completion {
                termination: Termination::Code(code),
                stderr,
                ..
            }) => Failure::Exited { code, stderr },
            Ok(Completion {
                termination: Termination::Signal(signal),
                stderr,
                ..
            }) => Failure::Killed { signal, stderr },
            Ok(Completion {
                termination: Termination::TimedOut { after },
                ..
            }) => {
                self.hung.push(command.program.clone());
                Failure::TimedOut { after }
            }
        };
        Err(CommandError { command, failure })
    }

    /// A read-only check: exit 0 is present, exit 1 is absent, anything else an error.
    fn check(&mut self, family: Family, args: Vec<String>) -> Result<bool, CommandError> {
        match self.run(Command::iptables(self.config, family, args)) {
            Ok(_) => Ok(true),
            Err(CommandError {
                failure: Failure::Exited { code: 1, .. },
                ..
            }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Lists one chain; None when it does not exist.
    fn list(&mut self, family: Family, chain: &str) -> Result<Option<ChainRules>, CommandError> {
        let command = Command::iptables(self.config, family, vec!["-S".into(), chain.into()]);
        match self.run(command) {
            Ok(done) => Ok(Some(ChainRules::from_listing(&done.stdout, chain))),
            Err(error) if error.chain_is_missing() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Reads what portlocker's part of the firewall holds: INPUT and
    /// portlocker's chain, one `iptables -S CHAIN` each per family — never
    /// the whole table, which on a host with Docker or Kubernetes holds
    /// thousands of rules of others. With `docker`, also whether Docker's
    /// chain exists (for the page's notice). A family that could not be
    /// read is `None`, with its error.
    pub fn observe(&mut self, docker: bool) -> (Holdings, Vec<CommandError>) {
        let mut errors = Vec::new();
        let mut holdings = Holdings::unknown(self.config);
        let chain = self.config.firewall.chain.clone();
        for (&family, held) in holdings.families.iter_mut() {
            match self.observe_family(family, &chain, docker) {
                Ok(observed) => *held = Some(observed),
                Err(error) => errors.push(error),
            }
        }
        (holdings, errors)
    }

    fn observe_family(
        &mut self,
        family: Family,
        chain: &ChainName,
        docker: bool,
    ) -> Result<FamilyHoldings, CommandError> {
        let Some(input) = self.list(family, "INPUT")? else {
            return Err(CommandError {
                command: Command::iptables(self.config, family, vec!["-S".into(), "INPUT".into()]),
                failure: Failure::Exited {
                    code: 1,
                    stderr: "no INPUT chain".into(),
                },
            });
        };
        let chain = match chain.is_input() {
            true => None,
            false => self.list(family, chain.as_str())?,
        };
        let docker_user = docker
            && family == Family::Ipv4
            && self.check(family, vec!["-S".into(), "DOCKER-USER".into()])?;
        Ok(FamilyHoldings {
            input,
            chain,
            docker_user,
        })
    }

    /// Carries out the plan. A failed step does not stop the others; every
    /// change made is recorded in `holdings` and logged. An unchecked step
    /// is checked first, so a plan made blind never duplicates a rule.
    pub fn apply(&mut self, steps: &[Step], holdings: &mut Holdings) -> Applied {
        let mut applied = Applied::default();
        for step in steps {
            let made = match step.checked {
                true => self.make(&step.change),
                false => self.make_if_needed(&step.change),
            };
            match made {
                Ok(commands) => {
                    for _ in 0..commands {
                        holdings.record(self.config, &step.change);
                        applied.made.push(step.change.clone());
                    }
                }
                Err(error) => applied.errors.push(error),
            }
        }
        applied
    }

    /// Checks before each command, as a plan made blind requires: `-A`
    /// when absent; a removal while present.
    fn make_if_needed(&mut self, change: &Change) -> Result<usize, CommandError> {
        let family = change.family();
        let mut commands = 0;
        while commands < MAX_DUPLICATES {
            let present = self.check(family, check_args(change))?;
            if present != change.removes() {
                break;
            }
            commands += self.make(change)?;
        }
        Ok(commands)
    }

    /// Makes one change with one command.
    fn make(&mut self, change: &Change) -> Result<usize, CommandError> {
        let command = Command::iptables(self.config, change.family(), args(change));
        let shown = command.to_string();
        self.run(command)?;
        log::info!("{change}: {shown}");
        Ok(1)
    }
}

/// What carrying out a plan did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Every change made, one per command that changed the firewall.
    pub made: Vec<Change>,
    pub errors: Vec<CommandError>,
}

/// `nf_tables` or `legacy`: which iptables the configured binary is, read
/// from where its links lead (`iptables-nft` → `xtables-nft-multi`), so
/// telling costs no process. None when the name does not say.
pub fn backend(config: &Config) -> Option<String> {
    let target = std::fs::canonicalize(&config.firewall.iptables).ok()?;
    let name = target.file_name()?.to_string_lossy().into_owned();
    if name.contains("nft") {
        Some("nf_tables".to_owned())
    } else if name.contains("legacy") {
        Some("legacy".to_owned())
    } else {
        None
    }
}

/// Why this process cannot run iptables at all, if it cannot. (Whether it
/// is root shows in iptables' own answer; see `CommandError::needs_root`.)
pub fn preflight(config: &Config) -> Result<(), String> {
    for family in config.families() {
        let binary = config.binary(family);
        if !binary.is_file() {
            let (key, hint) = match family {
                Family::Ipv4 => ("firewall.iptables", ""),
                Family::Ipv6 => ("firewall.ip6tables", ", or firewall.ipv6 = false"),
            };
            return Err(format!(
                "{} not found (install the iptables package, or set {key} in the config{hint})",
                binary.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PortSpec, ServiceName};
    use crate::fake::FakeIptables;
    use crate::model::PortState;
    use crate::plan::plan;
    use crate::verdict::service_state;

    fn config() -> Config {
        Config::parse("source = \"-\"\n[services]\nssh = 22\nmosh = \"60000-61000/udp\"\n").unwrap()
    }

    fn run_once(config: &Config, fake: &mut FakeIptables, text: &str) -> (Holdings, Vec<String>) {
        let wants = crate::intent::wants_of(config, text);
        let mut firewall = Firewall::new(config, fake);
        let (mut holdings, errors) = firewall.observe(false);
        assert!(errors.is_empty(), "{errors:?}");
        let steps = plan(config, &wants, &holdings, &Default::default());
        let applied = firewall.apply(&steps, &mut holdings);
        (
            holdings,
            applied.errors.iter().map(ToString::to_string).collect(),
        )
    }

    #[test]
    fn rule_argv_with_and_without_keeping_sessions() {
        let ssh = Rule {
            family: Family::Ipv4,
            chain: ChainName::new("PORTLOCKER").unwrap(),
            service: ServiceName::new("ssh").unwrap(),
            ports: PortSpec::parse("22").unwrap(),
            keep_established: true,
            source: None,
        };
        assert_eq!(
            ssh.spec().join(" "),
            "-p tcp -m tcp --dport 22 --syn -m comment --comment portlocker:ssh -j DROP"
        );
        let mosh = Rule {
            service: ServiceName::new("mosh").unwrap(),
            ports: PortSpec::parse("60000-61000/udp").unwrap(),
            ..ssh.clone()
        };
        assert_eq!(
            mosh.spec().join(" "),
            "-p udp -m udp --dport 60000:61000 -m conntrack --ctstate NEW -m comment --comment portlocker:mosh -j DROP"
        );
        let plain = Rule {
            keep_established: false,
            ..ssh
        };
        let letting = plain.letting("203.0.113.7/32".parse().unwrap());
        // In portlocker's chain a source returns to INPUT, where bans still apply.
        assert_eq!(
            args(&Change::Append(letting.clone())).join(" "),
            "-I PORTLOCKER 1 -s 203.0.113.7/32 -p tcp -m tcp --dport 22 -m comment --comment portlocker:ssh -j RETURN"
        );
        assert_eq!(
            args(&Change::Delete(letting.clone())).join(" "),
            "-D PORTLOCKER -s 203.0.113.7/32 -p tcp -m tcp --dport 22 -m comment --comment portlocker:ssh -j RETURN"
        );
        let in_input = Rule {
            chain: ChainName::new("INPUT").unwrap(),
            ..letting
        };
        assert_eq!(
            args(&Change::Append(in_input)).join(" "),
            "-I INPUT 1 -s 203.0.113.7/32 -p tcp -m tcp --dport 22 -m comment --comment portlocker:ssh -j ACCEPT"
        );
        assert_eq!(
            args(&Change::Append(plain)).join(" "),
            "-A PORTLOCKER -p tcp -m tcp --dport 22 -m comment --comment portlocker:ssh -j DROP"
        );
    }

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
        };
        assert_eq!(
            command.to_string(),
            r"/sbin/iptables -C 'it'\''s' '' 'a b' 60000:61000"
        );
    }

    #[test]
    fn close_then_rerun_is_idempotent_and_open_removes_duplicates() {
        let config = config();
        let mut fake = FakeIptables::default();
        let (holdings, errors) = run_once(&config, &mut fake, "close ssh\nclose mosh\n");
        assert!(errors.is_empty(), "{errors:?}");
        let ssh = ServiceName::new("ssh").unwrap();
        let state = |holdings: &Holdings, family| {
            service_state(&config, holdings.family(family).unwrap(), family, &ssh)
        };
        assert_eq!(state(&holdings, Family::Ipv6), PortState::Closed);
        // Two jumps and four rules.
        assert_eq!(fake.rules().len(), 6, "{:?}", fake.rules());

        fake.calls.clear();
        let (again, _) = run_once(&config, &mut fake, "close ssh\nclose mosh\n");
        assert_eq!(again, holdings);
        assert!(
            fake.calls.iter().all(|call| call.contains(" -S ")),
            "{:?}",
            fake.calls
        );
        assert_eq!(
            fake.calls.len(),
            4,
            "INPUT and the chain, per family: {:?}",
            fake.calls
        );

        // A duplicate someone added by hand goes too.
        let listing = fake.listing("iptables", "PORTLOCKER").unwrap();
        let duplicate = listing.lines().find(|r| r.contains("--dport 22")).unwrap();
        let added = fake.admin("iptables", duplicate);
        assert_eq!(added.termination, Termination::Code(0), "{}", added.stderr);
        let (holdings, _) = run_once(&config, &mut fake, "open ssh\n");
        assert_eq!(state(&holdings, Family::Ipv4), PortState::Open);
        let rules = fake.rules();
        assert!(
            rules.iter().all(|r| !r.contains("portlocker:ssh")),
            "{rules:?}"
        );
        assert!(rules.iter().any(|r| r.contains("portlocker:mosh")));
    }

    #[test]
    fn a_failed_rule_does_not_stop_the_others_and_is_reported() {
        let config = config();
        let mut fake = FakeIptables::default();
        fake.fail_appends = true;
        let (holdings, errors) = run_once(&config, &mut fake, "close ssh\nclose mosh\n");
        assert_eq!(errors.len(), 4, "{errors:?}");
        let ssh_append = "-A PORTLOCKER -p tcp -m tcp --dport 22 --syn -m comment --comment portlocker:ssh -j DROP` exited with 4: iptables: Bad rule.";
        assert!(errors.iter().any(|e| e.ends_with(ssh_append)), "{errors:?}");
        let appends = fake.calls.iter().filter(|c| c.contains(" -A ")).count();
        assert_eq!(appends, 4);
        let ssh = ServiceName::new("ssh").unwrap();
        let held = holdings.family(Family::Ipv4).unwrap();
        assert_eq!(
            service_state(&config, held, Family::Ipv4, &ssh),
            PortState::Open
        );
    }

    #[test]
    fn errors_tell_exit_code_signal_and_spawn_failure_apart() {
        let command = Command {
            program: "/sbin/iptables".into(),
            args: vec!["-C".into(), "INPUT".into()],
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
        }
    }

    fn runner(limit: Duration) -> SystemRunner {
        SystemRunner { limit }
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
    fn a_child_that_closes_its_output_but_runs_on_is_killed() {
        let limit = Duration::from_millis(200);
        let done = runner(limit)
            .run(&script("exec >&- 2>&-; exec sleep 600"))
            .unwrap();
        assert_eq!(done.termination, Termination::TimedOut { after: limit });
    }
}
