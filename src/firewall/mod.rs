//! The firewall: what every backend does, whichever tool it drives — the
//! one narrow trait runs, `reset`, `status`, `check` and the dry run work
//! through, what its calls report, what the backends share in running
//! their tools — and the factory that picks the configured one. Each
//! backend implements the trait in a module of its own.

pub mod eval;
#[cfg(test)]
pub(crate) mod fake;
pub(crate) mod forward;
pub mod host;
pub(crate) mod iptables;
pub(crate) mod leftovers;
pub mod model;
pub(crate) mod nft;
pub(crate) mod plan;
pub(crate) mod reasons;
pub mod ruleset;
pub(crate) mod truth;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::{BackendKind, Config, Family};
use crate::firewall::model::{Change, Holdings, Rule};
use crate::firewall::plan::{Step, Unwritable};
use crate::sys::runner::{
    Command, CommandError, Completion, Failure, Refusal, Runner, Termination,
};

/// The backend the config names, driven through `runner`.
pub fn backend_for<'a, R: Runner + 'a>(
    config: &'a Config,
    runner: R,
) -> Box<dyn FirewallBackend + 'a> {
    match config.firewall.backend {
        BackendKind::Iptables => Box::new(iptables::Firewall::new(config, runner)),
        BackendKind::Nftables => Box::new(nft::Nft::new(config, runner)),
    }
}

/// What the status page and `status --json` name the firewall backend:
/// `nftables`, or for iptables `nf_tables` or `legacy`, which iptables the
/// configured binary is (see `Backend::of`).
pub fn backend(config: &Config) -> Option<String> {
    match config.firewall.backend {
        BackendKind::Nftables => Some(BackendKind::Nftables.as_str().to_owned()),
        BackendKind::Iptables => iptables::Backend::of(&config.firewall.iptables)
            .map(|backend| backend.as_str().to_owned()),
    }
}

/// What runs, `reset`, `status`, `check` and the dry run need of the
/// firewall, whichever tool drives it. Every backend reads portlocker's part
/// into `Holdings` in iptables' listing form (INPUT, and portlocker's chain
/// jumped to from it), so the planner and the verdicts serve them all; a
/// backend only reads, applies and removes.
pub trait FirewallBackend {
    /// Each program the backend runs that cannot be run, with why and what
    /// fixes it.
    fn broken(&self) -> Vec<(PathBuf, String)>;

    /// The families this backend cannot drive at all, each with why: a
    /// program only they need cannot run (missing, not executable, or one
    /// another account could change, which is never run). The other
    /// families' work goes on without them: `observe` leaves them out.
    fn unusable(&self) -> BTreeMap<Family, String>;

    /// Why this process cannot drive the firewall at all, if it cannot: no
    /// family can be driven. (Whether it is root shows in the tool's own
    /// answer; see `CommandError::needs_root`.)
    fn preflight(&self) -> Result<(), String> {
        match self.broken().into_iter().next() {
            Some((_, problem)) => Err(problem),
            None => Ok(()),
        }
    }

    /// Reads what portlocker's part of the firewall holds; a family that
    /// could not be read is `None`, with its error, and one that cannot be
    /// driven (`unusable`) is left out. With `docker`, also what the page's
    /// notices need (whether Docker's chain exists).
    fn observe(&mut self, docker: bool) -> (Holdings, Vec<CommandError>);

    /// Reads the host's whole way in (`host.rs`), as the evaluator judges it,
    /// with what could not be read.
    fn read_host(&mut self) -> (ruleset::Host, Vec<CommandError>);

    /// Carries out the plan; every change made is recorded in `holdings`
    /// and logged.
    fn apply(&mut self, steps: &[Step], holdings: &mut Holdings) -> Applied;

    /// What a dry run prints for `steps`, planned on `holdings`: each change
    /// and what makes it, exactly as a run would; empty when a run would
    /// change nothing.
    fn dry_run(&mut self, steps: &[Step], holdings: &Holdings) -> Vec<String>;

    /// Makes the forward path of ports Docker publishes hold `mirror`,
    /// portlocker's rules matched by the port a connection was sent to
    /// (`forward.rs`); with `dry`, says what it would do instead.
    fn forward(&mut self, mirror: &forward::Mirror, dry: bool) -> forward::Forwarded;

    /// Removes everything portlocker put into the firewall.
    fn reset(&mut self) -> Reset;

    /// After a run's own changes: removes what portlocker left where it no
    /// longer looks, and tells what the owner should know of it.
    fn tidy(&mut self) -> Tidied;
}

/// What carrying out a plan did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Every change made, one per command that changed the firewall.
    pub made: Vec<Change>,
    pub errors: Vec<CommandError>,
    /// What the firewall reported holding once the changes were committed,
    /// as `observe` would read it, when the apply itself learns that (nft's
    /// echo of its transaction); None: read it again.
    pub confirmed: Option<Holdings>,
    /// portlocker's rules a commit was refused at (each refusal is in
    /// `errors` too), which a plan without them may get past: see `commit`.
    pub refused: Vec<Rule>,
    /// The backend will commit another way now (its restore tool hung):
    /// a plan made again may get further.
    pub retry: bool,
    /// Families whose commit was refused past any rule of portlocker's (its
    /// size, or a line that is no rule): a plan of closes only may get through.
    pub shrink: Vec<Family>,
}

/// What `reset` did.
#[derive(Debug, Default)]
pub struct Reset {
    /// One line per change made, for stdout.
    pub said: Vec<String>,
    /// How many changes were made.
    pub changes: usize,
    /// What could not be read or removed. When one says root is needed,
    /// nothing was changed.
    pub errors: Vec<CommandError>,
}

/// What tidying up after a run did.
#[derive(Debug, Default)]
pub struct Tidied {
    /// How many changes were made.
    pub changes: usize,
    /// For the status page (each also logged).
    pub notices: Vec<String>,
}

/// How many commits a run makes at most to get past what the firewall refuses.
const MAX_COMMITS: usize = 8;

/// From this commit on, a family refused again has every open that needs a
/// rule closed at once, rather than one rule at a time.
const CLOSE_ALL_FROM: usize = 4;

/// Makes the firewall hold what `plan` makes of `holdings`, and again while
/// a commit is refused at a rule of portlocker's: each time without what
/// was refused (`Unwritable`: a refused open closed instead, a refused close
/// left out), so that a line the firewall cannot take never leaves another
/// close undone. A kernel without a time match gets its plan without
/// deadlines instead, as before. Returns everything done, each refusal in
/// `errors`, and what could not be written.
pub fn commit(
    backend: &mut dyn FirewallBackend,
    holdings: &mut Holdings,
    mut plan: impl FnMut(&Unwritable, &Holdings) -> Vec<Step>,
) -> (Applied, Unwritable) {
    let mut unwritable = Unwritable::default();
    let mut done = Applied::default();
    for round in 1..=MAX_COMMITS {
        let steps = plan(&unwritable, holdings);
        let mut applied = backend.apply(&steps, holdings);
        let no_time_match =
            !unwritable.no_time_match && applied.errors.iter().any(CommandError::lacks_time_match);
        let refused = std::mem::take(&mut applied.refused);
        let retry = applied.retry;
        if !applied.made.is_empty() {
            done.confirmed = applied.confirmed;
        }
        done.made.extend(applied.made);
        if no_time_match {
            // Deadlines then end only when a run comes after them, as before.
            log::warn!(
                "this kernel has no xt_time match: an open that ends is closed by the first run \
                 after its deadline, not by the kernel at the deadline"
            );
            unwritable.no_time_match = true;
            // Its refusals are answered by the plan without deadlines.
            continue;
        }
        done.errors.extend(applied.errors);
        let mut learnt = false;
        for family in std::mem::take(&mut applied.shrink) {
            learnt |= unwritable.close_all(family, "the whole commit");
        }
        for rule in &refused {
            let all = round >= CLOSE_ALL_FROM
                && unwritable.close_all(rule.family, "rule after rule of theirs");
            learnt |= all || unwritable.refuse(rule);
        }
        if !learnt && !retry {
            break;
        }
    }
    (done, unwritable)
}

/// What a message can tell the owner to do about a rule that is not
/// portlocker's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remedy {
    /// This command, of the tool that owns the rule, removes it.
    Remove(Command),
    /// Another manager made it: change it through that manager.
    OwnedBy(ruleset::Manager),
    /// It decides every port no rule before it accepts (a default deny, or a
    /// chain's policy): removing it would open every other port.
    DefaultDeny,
}

/// What to do about `cited`, from the backend whose rule it is.
pub fn remedy(config: &Config, cited: &eval::Cited) -> Remedy {
    if let Some(manager) = cited.manager.filter(|m| *m != ruleset::Manager::Portlocker) {
        return Remedy::OwnedBy(manager);
    }
    let command = iptables::remedy(cited).or_else(|| nft::remedy(config, cited));
    match command {
        Some(command) => Remedy::Remove(command),
        None => Remedy::DefaultDeny,
    }
}

/// Programs that hung in this process lately, and when: a resident
/// process (watch) does not wait on one again for `HUNG_FOR`, so that one
/// family's hung tool does not hold back the other family's repairs run
/// after run (each wait is `command_timeout_secs`).
static HUNG_LATELY: std::sync::Mutex<Vec<(PathBuf, std::time::Instant)>> =
    std::sync::Mutex::new(Vec::new());

/// How long a program that hung is not run again by this process.
const HUNG_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// Whether `program` hung in this process within `HUNG_FOR`. (Unit tests
/// share one process: their fakes' hangs are their own.)
fn hung_lately(program: &Path) -> bool {
    let mut lately = HUNG_LATELY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    lately.retain(|(_, at)| at.elapsed() < HUNG_FOR);
    !cfg!(test) && lately.iter().any(|(hung, _)| hung == program)
}

fn remember_hang(program: &Path) {
    let mut lately = HUNG_LATELY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    lately.push((program.to_owned(), std::time::Instant::now()));
}

/// Runs `command` through `runner`; Ok only when it exits 0. A program in
/// `hung`, or that hung in this process lately, is not run again (each
/// further call would only wait out its own time limit); one that times
/// out is added to both.
pub(crate) fn run_command<R: Runner>(
    runner: &mut R,
    hung: &mut Vec<PathBuf>,
    command: Command,
) -> Result<Completion, CommandError> {
    if hung.contains(&command.program) || hung_lately(&command.program) {
        return Err(CommandError {
            command,
            failure: Failure::AfterHang,
        });
    }
    let completion = runner.run(&command);
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
            hung.push(command.program.clone());
            remember_hang(&command.program);
            Failure::TimedOut { after }
        }
    };
    Err(CommandError { command, failure })
}

/// A restore tool's refusal (iptables-restore, `nft -f`), named after the
/// line of its input it came from: `line_of` reads the number from what the
/// tool said, `about` describes that line.
pub fn refusal_named(
    error: CommandError,
    line_of: impl Fn(&str) -> Option<usize>,
    about: impl Fn(usize) -> String,
) -> CommandError {
    match error {
        CommandError {
            command,
            failure: Failure::Exited { code, stderr },
        } => {
            let failure = match line_of(&stderr) {
                Some(line) => Failure::Refused(Box::new(Refusal {
                    line,
                    about: about(line),
                    stderr,
                })),
                None => Failure::Exited { code, stderr },
            };
            CommandError { command, failure }
        }
        error => error,
    }
}

/// Why the program at `binary` cannot be run, if it cannot, naming the
/// Debian `package` that installs it and the config `key` that names it,
/// with `hint` after that.
pub fn program_problem(binary: &Path, package: &str, key: &str, hint: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    // Root runs it: one another account can change, or could put where it is
    // missing, is that account's root shell.
    if crate::sys::files::is_root()
        && let Err(error) = crate::sys::files::check_program(binary, key)
    {
        return Some(format!("{error:#}"));
    }
    let shown = binary.display();
    let what = match std::fs::metadata(binary) {
        Ok(meta) if !meta.is_file() => "is not a regular file",
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
            return Some(format!(
                "{shown} is not executable (`chmod 755 {shown}`, or `apt-get install --reinstall {package}`, \
                 or set {key} in the config{hint})"
            ));
        }
        Ok(_) => return None,
        Err(error) if error.kind() == io::ErrorKind::NotFound => "not found",
        Err(error) => {
            return Some(format!(
                "cannot look at {shown}: {error} (set {key} in the config{hint})"
            ));
        }
    };
    Some(format!(
        "{shown} {what} (install the {package} package with `apt-get install {package}`, or set {key} in the config{hint})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::eval::{Cited, CitedRule};
    use crate::firewall::ruleset::{Manager, Tool};

    fn cited(tool: Tool, table: &str, text: &str, handle: Option<u64>, names_ports: bool) -> Cited {
        Cited {
            family: crate::config::Family::Ipv4,
            table: table.into(),
            table_family: "inet".into(),
            tool,
            chain: "input".into(),
            rule: Some(CitedRule {
                text: text.into(),
                handle,
                comment: None,
                names_ports,
            }),
            manager: None,
        }
    }

    #[test]
    fn remedies_come_from_the_tool_that_owns_the_rule_and_never_for_another_managers() {
        let config = Config::parse("source = \"-\"\n[services]\nssh = 22\n").unwrap();
        let iptables = Tool::Iptables {
            binary: "/usr/sbin/iptables".into(),
            legacy: false,
        };
        let mut rule = cited(
            iptables.clone(),
            "filter",
            "-A input -p tcp -m tcp --dport 22 -j DROP",
            None,
            true,
        );
        let Remedy::Remove(command) = remedy(&config, &rule) else {
            panic!()
        };
        assert_eq!(
            command.to_string(),
            "/usr/sbin/iptables -w 10 -D input -p tcp -m tcp --dport 22 -j DROP"
        );
        rule.table = "nat".into();
        let Remedy::Remove(command) = remedy(&config, &rule) else {
            panic!()
        };
        assert_eq!(
            command.to_string(),
            "/usr/sbin/iptables -w 10 -t nat -D input -p tcp -m tcp --dport 22 -j DROP"
        );

        let nft = cited(Tool::Nft, "filter", "tcp dport 22 drop", Some(7), true);
        let Remedy::Remove(command) = remedy(&config, &nft) else {
            panic!()
        };
        assert_eq!(
            command.to_string(),
            "/usr/sbin/nft delete rule inet filter input handle 7"
        );

        // A default deny, or a policy: never removed.
        let deny = cited(Tool::Nft, "filter", "counter drop", Some(9), false);
        assert_eq!(remedy(&config, &deny), Remedy::DefaultDeny);
        let policy = Cited { rule: None, ..deny };
        assert_eq!(remedy(&config, &policy), Remedy::DefaultDeny);
        // Another manager's: named, never removed.
        let ufw = Cited {
            manager: Some(Manager::Ufw),
            ..nft
        };
        assert_eq!(remedy(&config, &ufw), Remedy::OwnedBy(Manager::Ufw));
    }
}
