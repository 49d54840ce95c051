//! The command line. The doc comments here are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Keeps this server's ports shut until its owner opens them by editing a
/// plain text file that portlocker pulls over HTTPS (lines like `open ssh`).
///
/// Without a subcommand: one run — fetch the control file, validate all of
/// it, make the firewall match, append to the log, write the status page.
/// A successful run prints nothing.
#[derive(Debug, Parser)]
#[command(name = "portlocker", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub global: GlobalArgs,

    /// Fetch and validate, then print every iptables command the run would
    /// execute. Changes nothing: no firewall, status page or log file.
    #[arg(short = 'n', long)]
    pub dry_run: bool,

    /// Enforce the last good control file without fetching: for boot,
    /// before the network is up.
    #[arg(long)]
    pub offline: bool,

    /// Sleep a random 0..SECONDS before fetching (overrides fetch.jitter_secs),
    /// so many servers on one cron minute do not fetch at once. Never with
    /// --dry-run or --offline.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub jitter: Option<u64>,
}

/// Options that work before or after a subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The config file.
    #[arg(
        short = 'c',
        long = "config",
        env = "PORTLOCKER_CONFIG",
        default_value = "/etc/portlocker/config.toml",
        global = true,
        value_name = "PATH"
    )]
    pub config: PathBuf,

    /// Where to read the control file instead of the config's `source`:
    /// an https:// URL, file:///path, a plain path, or `-` for stdin.
    #[arg(long, global = true, value_name = "SRC")]
    pub source: Option<String>,

    /// Also print what the run does (info messages) to stderr.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Print errors only; no warnings.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Find what would make every run fail: the config, the iptables
    /// programs, the directories of the log, page and metrics, the kept
    /// state, and as root rules of others in the firewall that would undo
    /// an open or a close. Changes nothing; needs root only for the
    /// state and the firewall. Exit 0: all well; 1: a run would fail or
    /// mislead; 2: runs would refuse to start.
    Check {
        /// Also fetch and validate the configured source (and its
        /// signature), as a run does; --source SRC checks SRC instead.
        #[arg(long)]
        fetch: bool,
    },
    /// Show each managed service, its ports, and whether each address family
    /// is closed right now (read-only).
    Status {
        /// One JSON document: each service's state per family now, and the
        /// last run's outcome and times from the state.
        #[arg(long)]
        json: bool,
    },
    /// Remove every rule portlocker made, in both families, then its jump and
    /// chain (kept, with a warning, if they hold rules of your own). The
    /// uninstall, and the emergency "open everything I closed". Refused
    /// while `portlocker watch` runs (it would put them back): stop it first.
    Reset,
    /// Stay running, instead of a run every five minutes: ask the source
    /// every watch.every (a conditional GET over a kept-alive connection),
    /// and put portlocker's rules back within a second when another program
    /// removes them. Each fetch or repair is a run as cron's are, with the
    /// same lock, state, log, page, metrics and notices. SIGTERM or SIGINT
    /// end it (the rules stay); SIGHUP reads the config again (one that does
    /// not validate is refused, and the old one kept). While it runs, a run
    /// from cron or the timer leaves the work to it. Listens on no socket.
    Watch {
        /// How often to ask the source (overrides watch.every): 10s, 2m, 1h.
        #[arg(long, value_name = "PERIOD")]
        every: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_work_after_a_subcommand() {
        let cli = Cli::try_parse_from(["portlocker", "status", "-c", "/x.toml", "-q"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Status { json: false })));
        assert_eq!(cli.global.config, PathBuf::from("/x.toml"));
        assert!(cli.global.quiet);
    }

    #[test]
    fn check_fetches_only_when_asked() {
        let cli = Cli::try_parse_from(["portlocker", "check"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Check { fetch: false })));
        let cli = Cli::try_parse_from(["portlocker", "check", "--fetch"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Check { fetch: true })));
    }

    #[test]
    fn watch_takes_its_period() {
        let cli = Cli::try_parse_from(["portlocker", "watch", "--every", "2s"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Watch { every: Some(e) }) if e == "2s"));
        let cli = Cli::try_parse_from(["portlocker", "-c", "/x.toml", "watch"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Watch { every: None })));
    }

    #[test]
    fn verbose_and_quiet_conflict() {
        assert!(Cli::try_parse_from(["portlocker", "-v", "-q"]).is_err());
    }
}
