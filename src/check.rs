//! `portlocker check`: what would make every run fail or mislead — the
//! iptables programs, the directories runs write to, the kept state, the
//! control file, rules of others in the firewall — each told in one line
//! with what fixes it. Read-only: never changes the firewall, never writes
//! state, page or log.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::config::{Config, Family, PortSpec, ServiceName};
use crate::firewall::eval::Cited;
use crate::firewall::host;
use crate::firewall::model::Holdings;
use crate::firewall::plan::{self, SourcesSeen};
use crate::firewall::ruleset::{Host, InputPath, Manager, Tool};
use crate::firewall::truth::{self, Mismatch};
use crate::firewall::{self, Remedy};
use crate::intake;
use crate::intake::control::ControlFile;
use crate::intake::fetch;
use crate::intake::intent::Want;
use crate::intake::source::Source;
use crate::intake::state::{self, Loaded, State};
use crate::sys::clock;
use crate::sys::files::{self, is_root};
use crate::sys::runner::SystemRunner;

/// How much a finding matters; the worst one found is check's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing; runs work as the owner would expect.
    Note,
    /// Runs would fail, or leave a port other than the control file says.
    Problem,
    /// Runs would refuse to start, as for a config error.
    Refused,
}

/// One thing check found.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Finding {
    severity: Severity,
    /// One line: what is wrong, where, and the command or setting that fixes it.
    text: String,
}

impl Finding {
    fn note(text: String) -> Finding {
        Finding {
            severity: Severity::Note,
            text,
        }
    }

    fn problem(text: String) -> Finding {
        Finding {
            severity: Severity::Problem,
            text,
        }
    }
}

/// Checks everything and prints it: the config's line, the control file's
/// (with `fetch`) and the notes on stdout, each problem on stderr. Returns
/// the worst severity found; None when all is well.
pub fn check(config_path: &Path, config: &Config, fetch: bool) -> Result<Option<Severity>> {
    let mut out = io::stdout().lock();
    // In the config's order, as the page and `status` list them.
    let names: Vec<&str> = config
        .services_in_order()
        .into_iter()
        .map(|(name, _)| name.as_str())
        .collect();
    writeln!(
        out,
        "config {}: ok ({} services: {})",
        config_path.display(),
        names.len(),
        names.join(", ")
    )?;
    let mut findings = binaries(config);
    findings.extend(exposed_secrets(config_path, config));
    findings.extend(placeholder(config));
    findings.extend(trust_store(config, fetch::system_roots()));
    findings.extend(directories(config));
    findings.extend(notify_command(config));
    let trusted = state::check_trust(&config.state_dir);
    let state = match &trusted {
        Ok(()) => read_state(config, &mut findings),
        Err(error) => {
            findings.push(Finding {
                severity: Severity::Refused,
                text: format!("{error:#}"),
            });
            State::default()
        }
    };
    if fetch {
        match intake::fetch_control(config, &state) {
            Ok(control) => writeln!(
                out,
                "control file from {}: ok ({})",
                config.source,
                asks(&control)
            )?,
            Err(error) => findings.push(Finding::problem(format!("{error:#}"))),
        }
    }
    findings.extend(shared_ports(config));
    if trusted.is_ok() {
        findings.extend(read_firewall(config, &state));
    } else {
        // As every command that reads the state: a refused one stops it before the firewall.
        findings.push(Finding::note(
            "the firewall was not read: state_dir is refused (see above)".to_owned(),
        ));
    }

    for finding in &findings {
        match finding.severity {
            Severity::Note => writeln!(out, "note: {}", finding.text)?,
            _ => log::error!("{}", finding.text),
        }
    }
    Ok(findings.iter().map(|finding| finding.severity).max())
}

/// What a control file asks, in a few words.
fn asks(control: &ControlFile) -> String {
    let mut lines: Vec<String> = control
        .directives
        .values()
        .flatten()
        .map(|d| d.render())
        .collect();
    if control.other_hosts > 0 {
        lines.push(format!("{} lines for other hosts", control.other_hosts));
    }
    if lines.is_empty() {
        "changes nothing".to_owned()
    } else {
        lines.join(", ")
    }
}

/// The packaged config's example source, which every run would fetch in vain.
fn placeholder(config: &Config) -> Option<Finding> {
    if config.source == Source::Stdin {
        return Some(Finding::problem(
            "source = \"-\" reads the control file from standard input, which cron and the \
             boot unit do not give: each of their runs would read nothing and change nothing; \
             set source to your link (`--source -` is for trying a file by hand)"
                .to_owned(),
        ));
    }
    let Source::Https(url) = &config.source else {
        return None;
    };
    url.path().contains("/XXXX/").then(|| {
        Finding::problem(format!(
            "source is still the example's placeholder ({}{}): set source to your link",
            config.source,
            url.path()
        ))
    })
}

/// Whether HTTPS can work: the system's CA certificates (`roots`, as the
/// client would load them), or `fetch.ca_file`. A minimal system without
/// the ca-certificates package fails every fetch.
fn trust_store(config: &Config, roots: Result<usize, String>) -> Option<Finding> {
    let https = matches!(config.source, Source::Https(_)) || config.notify.url.is_some();
    if !https || config.fetch.ca_file.is_some() {
        return None;
    }
    let why = match roots {
        Ok(0) => "holds no CA certificate".to_owned(),
        Ok(_) => return None,
        Err(error) => format!("cannot be read ({error})"),
    };
    Some(Finding::problem(format!(
        "the system's trust store {why}, so every HTTPS fetch fails: install the \
         ca-certificates package (`apt-get install ca-certificates`), or set fetch.ca_file \
         to the CA that signed your server's certificate"
    )))
}

/// The firewall programs a run calls, each that cannot run.
fn binaries(config: &Config) -> Vec<Finding> {
    firewall::backend_for(config, SystemRunner::new(config))
        .broken()
        .into_iter()
        .map(|(_, problem)| Finding::problem(problem))
        .collect()
}

/// The notify command, when it cannot be run: each notice would be a
/// warning instead. One another account could change is never run.
fn notify_command(config: &Config) -> Option<Finding> {
    use std::os::unix::fs::PermissionsExt;
    let program = &config.notify.command.as_ref()?.program;
    if let Err(error) = files::check_program(program, "notify.command") {
        return Some(Finding::problem(format!(
            "{error:#}; until then runs never start it, and every notice is only a warning"
        )));
    }
    let why = match fs::metadata(program) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => return None,
        Ok(meta) if meta.is_file() => {
            format!("is not executable: `chmod +x {}`", program.display())
        }
        Ok(_) => "is not a file".to_owned(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => "does not exist".to_owned(),
        Err(error) => format!("cannot be looked at: {error}"),
    };
    Some(Finding::note(format!(
        "notify.command {} {why}; until it can run, every notice is only a warning",
        program.display()
    )))
}

/// The log, the status page and the metrics file, each whose directory is
/// missing: every run would warn that it could not write there.
fn directories(config: &Config) -> Vec<Finding> {
    let files = [
        ("log_file", Some(&config.log_file)),
        ("status_file", config.status_file.as_ref()),
        ("metrics_file", config.metrics_file.as_ref()),
    ];
    files
        .into_iter()
        .filter_map(|(key, path)| {
            let path = path?;
            directory_problem(key, path).or_else(|| {
                // A link on the way that runs would refuse to write through.
                let error = files::check_way(path).err()?;
                Some(format!("{key} {}: {error:#}", path.display()))
            })
        })
        .map(Finding::problem)
        .collect()
}

/// The config, when every account on this machine can read it and it
/// holds a secret URL (see `secret_urls`): that account could read the
/// control file, or read and forge the notices. A note: runs work all the
/// same, and the secret may be out already; the owner decides.
fn exposed_secrets(config_path: &Path, config: &Config) -> Option<Finding> {
    let secrets = secret_urls(config);
    if secrets.is_empty() {
        return None;
    }
    let mode = readable_by_everyone(config_path)?;
    let shown = config_path.display();
    Some(Finding::note(format!(
        "config {shown} is readable by every account on this machine (mode {mode:o}), and {} \
         a secret: whoever has the source URL can read what you open, whoever has notify.url \
         can read and forge the notices; fix with `chmod o-r {shown}` (600, or 640 for a group \
         that may read it)",
        match secrets.as_slice() {
            [one] => format!("{one} holds"),
            many => format!("{} hold", and_list(many)),
        }
    )))
}

/// The config keys whose URL is a secret: an https:// URL with a path
/// (other than `/`), a query or a user name — a share link, a ntfy topic,
/// a token. A bare host, a local path and stdin are not.
fn secret_urls(config: &Config) -> Vec<&'static str> {
    let secret = |url: &url::Url| {
        !matches!(url.path(), "" | "/") || url.query().is_some() || !url.username().is_empty()
    };
    let source = |source: &Source| matches!(source, Source::Https(url) if secret(url));
    let mut keys = Vec::new();
    if source(&config.source) {
        keys.push("source");
    }
    let signature = config.signature.as_ref().and_then(|key| key.url.as_ref());
    if signature.is_some_and(source) {
        keys.push("signature.url");
    }
    if config.notify.url.as_ref().is_some_and(secret) {
        keys.push("notify.url");
    }
    keys
}

/// The mode of the file at `path` when every account can read it: it is
/// readable by others and every directory above it searchable by them.
fn readable_by_everyone(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let path = fs::canonicalize(path).ok()?;
    let mode = fs::metadata(&path).ok()?.mode() & 0o7777;
    let searchable = path
        .ancestors()
        .skip(1)
        .all(|dir| fs::metadata(dir).is_ok_and(|meta| meta.mode() & 0o001 != 0));
    (mode & 0o004 != 0 && searchable).then_some(mode)
}

fn directory_problem(key: &str, path: &Path) -> Option<String> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (file, shown) = (path.display(), dir.display());
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => None,
        Ok(_) => Some(format!(
            "{key} {file}: {shown} is not a directory: set {key} to a file in a directory"
        )),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Some(format!(
            "{key} {file}: the directory {shown} does not exist: create it with `mkdir -p {shown}`, \
             or set {key} to a file in another directory"
        )),
        Err(error) => Some(format!("{key} {file}: cannot look at {shown}: {error}")),
    }
}

/// The kept state as a run would read it, with what is wrong with it in
/// `findings`; empty when there is none or it cannot be used.
fn read_state(config: &Config, findings: &mut Vec<Finding>) -> State {
    let path = State::path(&config.state_dir);
    if !is_root()
        && fs::File::open(&path).is_err_and(|error| error.kind() == io::ErrorKind::PermissionDenied)
    {
        findings.push(Finding::note(format!(
            "not root, so the kept state {} was not read: run `portlocker check` as root to check it too",
            path.display()
        )));
        return State::default();
    }
    let loaded = State::peek(&config.state_dir);
    findings.extend(kept_state(config, &loaded, &path, clock::now_utc()));
    match loaded {
        Loaded::Kept(state) => state,
        Loaded::Legacy(mut state) => {
            intake::migrate(config, &mut state);
            state
        }
        Loaded::Damaged(_) => State::default(),
    }
}

/// What in the kept state (at `path`) no longer fits the config at `now`:
/// a damaged file, lines the next run drops, a kept copy not in force.
fn kept_state(config: &Config, loaded: &Loaded, path: &Path, now: DateTime<Utc>) -> Vec<Finding> {
    let mut state = match loaded {
        Loaded::Kept(state) | Loaded::Legacy(state) => state.clone(),
        Loaded::Damaged(reason) => {
            return vec![Finding::problem(format!(
                "{reason}: the next run moves it aside, goes on without it and fails; \
                 to start afresh now, remove it with `rm {}`",
                path.display()
            ))];
        }
    };
    if matches!(loaded, Loaded::Legacy(_)) {
        intake::migrate(config, &mut state);
    }
    let mut findings = Vec::new();
    let (_, dropped) = intake::kept_wanted(config, &state);
    for line in dropped {
        let service = line.split_whitespace().nth(1).unwrap_or_default();
        let text = if config.services.keys().any(|name| name.as_str() == service) {
            let why = intake::unfit(config, &line).unwrap_or_default();
            format!(
                "state: the kept `{line}` no longer fits the config, so runs no longer enforce it: {why}"
            )
        } else {
            format!(
                "state: the kept `{line}` names {service}, which is no longer in [services]: the next \
                 run forgets it and removes any rule it made for {service}; add {service} back to \
                 [services] to keep it managed"
            )
        };
        findings.push(Finding::problem(text));
    }
    if let Some(reason) = intake::kept_not_in_force(config, &state, now) {
        findings.push(Finding::problem(format!(
            "state: the kept control file is not in force ({reason}), so runs close what it \
             opened until they fetch a file signed by signature.public_key: sign it with \
             `minisign -S -m FILE`"
        )));
    }
    findings
}

/// Ports that more than one service gives: a note each.
fn shared_ports(config: &Config) -> Vec<Finding> {
    config
        .shared_ports()
        .into_iter()
        .map(|(ports, names)| {
            let (either, both) = match names.len() {
                2 => ("either", "both"),
                _ => ("any of them", "all"),
            };
            let names: Vec<&str> = names.iter().map(ServiceName::as_str).collect();
            Finding::note(format!(
                "{ports} is in {}: closing {either} closes it for {both}",
                and_list(&names)
            ))
        })
        .collect()
}

/// As root, reads the firewall as a run does and tells what rules of
/// others do to the managed ports.
fn read_firewall(config: &Config, state: &State) -> Vec<Finding> {
    if !is_root() {
        return vec![Finding::note(
            "not root, so the firewall was not read: run `portlocker check` as root to have \
             its rules checked too"
                .to_owned(),
        )];
    }
    let mut backend = firewall::backend_for(config, SystemRunner::new(config));
    let broken: Vec<PathBuf> = backend
        .broken()
        .into_iter()
        .map(|(program, _)| program)
        .collect();
    let (holdings, errors) = backend.observe(false);
    if !broken.is_empty() && holdings.families.values().all(Option::is_none) {
        let tool = config.firewall.backend.as_str();
        return vec![Finding::note(format!(
            "the firewall was not read: {tool} cannot run (see above)"
        ))];
    }
    // A program that cannot run is told above, once.
    let mut findings: Vec<Finding> = errors
        .iter()
        .filter(|error| !broken.contains(&error.command.program))
        .map(|error| Finding::problem(format!("cannot read the firewall: {error}")))
        .collect();
    let (host, _) = backend.read_host();
    // A family portlocker's own part could not be read in is told above.
    for (family, unread) in &host.families {
        if let (Err(why), Some(_)) = (unread, holdings.family(*family)) {
            findings.push(Finding::problem(format!(
                "{family}: cannot read the firewall: {why}"
            )));
        }
    }
    findings.extend(crate::run::firewalld_warning(config, &host).map(Finding::problem));
    findings.extend(firewall_findings(config, &holdings, &host));
    findings.extend(closes_missing(config, state, &host, &holdings));
    findings
}

/// The ports the kept control file closes that the firewall lets through
/// with nothing in the way: portlocker's rules are missing (wiped by a
/// manager's reload, say) until the next run puts them back.
fn closes_missing(
    config: &Config,
    state: &State,
    host: &Host,
    holdings: &Holdings,
) -> Vec<Finding> {
    let now = clock::now_local();
    // What a run would log of the kept state is told by check's own lines.
    crate::report::logging::hold();
    let wanted = intake::asked(config, state, now);
    let wants = crate::run::resolve(config, &wanted, &state.opens, now).wants();
    crate::report::logging::discard();
    let mut findings = Vec::new();
    for path in host.families.values().flatten() {
        let family = path.family;
        let Some(held) = holdings.family(family) else {
            continue;
        };
        let gone = crate::report::wiped::gone(config, held)
            .map_or(String::new(), |what| format!(" ({what})"));
        for mismatch in truth::mismatches(config, &wants, path, now.to_utc()) {
            // Closed more than the kept file asks: every run fails on it.
            if let Some(lockout) = lockout(config, family, &mismatch) {
                findings.push(Finding::problem(lockout));
                continue;
            }
            // Nothing of others lets it through: a chain's policy does, or
            // Docker publishes it where portlocker's mirror should be.
            if let Mismatch::TooOpen {
                service,
                ports,
                state,
                passed_by,
                ..
            } = mismatch
            {
                let published = passed_by.as_ref().is_some_and(|by| mirrored(path, by));
                let by_policy = passed_by.as_ref().is_none_or(|by| by.rule.is_none());
                let missing = match (published, by_policy) {
                    (true, _) => " where Docker forwards (Docker publishes it)".to_owned(),
                    (false, true) => gone.clone(),
                    (false, false) => continue,
                };
                let asked = match wants[&service] {
                    Want::Closed => "closes it",
                    _ => "opens it to some sources only",
                };
                findings.push(Finding::problem(format!(
                    "{family}: {service} {ports} is {} though the control file {asked}: \
                     portlocker's rules are missing{missing}; the next run puts them back \
                     (`portlocker` now, or `portlocker --offline`)",
                    state.as_str()
                )));
            }
        }
    }
    findings
}

/// A port the kept control file opens that the firewall keeps closed, as
/// every run will say it (and fail on it), with what to do.
fn lockout(config: &Config, family: Family, mismatch: &Mismatch) -> Option<String> {
    use crate::firewall::reasons::{advice, named};
    let each = |by: &[crate::firewall::eval::Cited], ports| {
        let each: Vec<String> = (by.iter())
            .map(|by| format!("{} closes it: {}", named(by), advice(config, by, ports)))
            .collect();
        each.join("; ")
    };
    let said = match mismatch {
        Mismatch::ClosedByOthers { service, ports, by } => format!(
            "{service} {ports} is closed, but the control file opens it: {}",
            each(by, *ports)
        ),
        Mismatch::SourceShut {
            service,
            ports,
            source,
            by,
        } => format!(
            "{service} {ports} is closed to {source}, which the control file opens it to: {}",
            each(by, *ports)
        ),
        Mismatch::ClosedBySharer {
            service,
            ports,
            other,
        } => format!(
            "{service} {ports} stays closed: it shares the port with {other}, which the control \
             file closes"
        ),
        Mismatch::TooOpen { .. } => return None,
    };
    Some(format!("{family}: {said}"))
}

/// What rules of others do to the managed ports, in the firewall as runs
/// would leave it: after a run that closes every service, a rule that lets
/// a port through before portlocker's DROP; after one that opens every
/// service, a rule (or a chain's policy) that still closes it. Each once.
fn firewall_findings(config: &Config, holdings: &Holdings, host: &Host) -> Vec<Finding> {
    let now = clock::now_utc();
    let mut culprits: Vec<Culprit> = Vec::new();
    for want in [Want::Closed, Want::Open(None)] {
        let wants = config
            .services
            .keys()
            .map(|service| (service.clone(), want.clone()))
            .collect();
        let mut after = holdings.clone();
        for step in plan::plan(config, &wants, holdings, &SourcesSeen::new()) {
            after.record(config, &step.change);
        }
        let judged = host::with_ours(config, host, &after);
        for path in judged.families.values().flatten() {
            for mismatch in truth::mismatches(config, &wants, path, now) {
                let (by, lets_through, service, ports) = match mismatch {
                    Mismatch::TooOpen {
                        service,
                        ports,
                        passed_by: Some(by),
                        ..
                    } if by.tag().is_none() && !mirrored(path, &by) => {
                        (vec![by], true, service, ports)
                    }
                    Mismatch::ClosedByOthers { service, ports, by } => (by, false, service, ports),
                    // Shared ports are noted apart (shared_ports).
                    _ => continue,
                };
                for by in by {
                    blame(
                        &mut culprits,
                        path.family,
                        by,
                        lets_through,
                        (service.clone(), ports),
                    );
                }
            }
        }
    }
    culprits
        .iter()
        .map(|culprit| culprit.finding(config))
        .collect()
}

/// Whether `by` is Docker publishing a port on a host where its DOCKER-USER
/// chain is: a run closes that port there too (`firewall/forward.rs`), so
/// Docker's rule does not keep a close from closing it.
fn mirrored(path: &InputPath, by: &Cited) -> bool {
    let docker_user = path
        .tables
        .iter()
        .any(|table| table.chains.contains_key("DOCKER-USER"));
    by.manager == Some(Manager::Docker) && by.table == "nat" && docker_user
}

/// Adds `port` to what `by` is found doing, once.
fn blame(
    culprits: &mut Vec<Culprit>,
    family: Family,
    by: Cited,
    lets_through: bool,
    port: (ServiceName, PortSpec),
) {
    let index = match culprits.iter().position(|culprit| {
        (culprit.family, &culprit.by, culprit.lets_through) == (family, &by, lets_through)
    }) {
        Some(index) => index,
        None => {
            culprits.push(Culprit {
                family,
                by,
                lets_through,
                ports: Vec::new(),
            });
            culprits.len() - 1
        }
    };
    if !culprits[index].ports.contains(&port) {
        culprits[index].ports.push(port);
    }
}

/// A rule of others (or a chain's policy), and the managed ports it lets
/// through before portlocker's DROP, or closes for everyone.
struct Culprit {
    family: Family,
    by: Cited,
    lets_through: bool,
    ports: Vec<(ServiceName, PortSpec)>,
}

impl Culprit {
    fn finding(&self, config: &Config) -> Finding {
        let family = self.family;
        let listed: Vec<String> = self
            .ports
            .iter()
            .map(|(service, ports)| format!("{service} {ports}"))
            .collect();
        let listed = and_list(&listed);
        let mut names: Vec<&str> = self.ports.iter().map(|(s, _)| s.as_str()).collect();
        names.dedup();
        let asking = |action: &str| {
            let each: Vec<String> = names.iter().map(|n| format!("`{action} {n}`")).collect();
            each.join(" or ")
        };
        let it = if self.ports.len() == 1 { "it" } else { "them" };
        let Some(rule) = &self.by.rule else {
            let policy = match self.by.tool {
                Tool::Iptables { .. } => format!("{}'s policy is DROP", self.by.chain),
                Tool::Nft => format!(
                    "chain {} of table {} drops what it does not accept (policy drop)",
                    self.by.chain,
                    self.by.table_named()
                ),
            };
            return Finding::note(format!(
                "{family}: {policy}, so {} would leave {listed} closed unless a rule of yours \
                 accepts {it}",
                asking("open")
            ));
        };
        let shown = format!("`{}`", rule.text);
        let remedy = firewall::remedy(config, &self.by);
        if self.lets_through {
            let input_mode = config.firewall.chain.is_input();
            let mut fix = match (&remedy, input_mode) {
                (Remedy::Remove(command), _) => format!("remove it with `{command}`"),
                (Remedy::OwnedBy(manager), _) => {
                    format!("it is {manager}'s: change it through {manager}")
                }
                (Remedy::DefaultDeny, false) => {
                    format!("take it out of portlocker's chain {}", self.by.chain)
                }
                (Remedy::DefaultDeny, true) => String::new(),
            };
            if input_mode {
                if !fix.is_empty() {
                    fix.push_str(", or ");
                }
                fix.push_str(
                    "set firewall.chain = \"PORTLOCKER\" so portlocker's rules come first",
                );
            }
            return Finding::problem(format!(
                "{family}: {shown} is not portlocker's and lets {listed} through before \
                 portlocker's DROP, so {} would not close {it} for everyone: {fix}",
                asking("close")
            ));
        }
        match remedy {
            Remedy::Remove(command) => Finding::problem(format!(
                "{family}: {shown} is not portlocker's and closes {listed} for everyone, so {} \
                 would leave {it} unreachable: remove it with `{command}`",
                asking("open")
            )),
            Remedy::OwnedBy(manager) => Finding::problem(format!(
                "{family}: {shown} is {manager}'s and closes {listed} for everyone, so {} \
                 would leave {it} unreachable: let {it} in through {manager}",
                asking("open")
            )),
            // A default deny: deleting it would open every other port.
            Remedy::DefaultDeny => Finding::note(format!(
                "{family}: {shown} is not portlocker's and drops every port no rule before it \
                 accepts, so {} would leave {listed} closed unless a rule of yours accepts {it} \
                 before it",
                asking("open")
            )),
        }
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list<S: AsRef<str>>(items: &[S]) -> String {
    match items {
        [] => String::new(),
        [only] => only.as_ref().to_owned(),
        [rest @ .., last] => {
            let rest: Vec<&str> = rest.iter().map(AsRef::as_ref).collect();
            format!("{} and {}", rest.join(", "), last.as_ref())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::model::{ChainRules, FamilyHoldings, Listed, split_listed};
    use std::collections::BTreeMap;

    fn config(firewall: &str, services: &str) -> Config {
        Config::parse(&format!(
            "source = \"-\"\n[firewall]\niptables = \"/sbin/iptables\"\nipv6 = false\n{firewall}\n\
             [services]\n{services}"
        ))
        .unwrap()
    }

    const SERVICES: &str = "ssh = 22\nweb = [80, 443]\n";

    fn chain(policy: Option<&str>, lines: &[&str]) -> ChainRules {
        ChainRules {
            policy: policy.map(String::from),
            rules: lines
                .iter()
                .map(|line| Listed::new(split_listed(line)))
                .collect(),
        }
    }

    /// IPv4 holdings: INPUT's policy and rules, and portlocker's chain's.
    fn holdings(policy: &str, input: &[&str], ours: Option<&[&str]>) -> Holdings {
        let held = FamilyHoldings {
            input: chain(Some(policy), input),
            chain: ours.map(|rules| chain(None, rules)),
            docker_user: false,
        };
        Holdings {
            families: BTreeMap::from([(Family::Ipv4, Some(held))]),
        }
    }

    /// What check finds in `holdings`, portlocker's part alone hooked.
    fn findings(config: &Config, holdings: Holdings) -> Vec<Finding> {
        let host = host::of_holdings(config, &holdings);
        firewall_findings(config, &holdings, &host)
    }

    fn texts(findings: &[Finding]) -> Vec<(Severity, &str)> {
        findings
            .iter()
            .map(|finding| (finding.severity, finding.text.as_str()))
            .collect()
    }

    const JUMP: &str = "-m comment --comment portlocker:jump.a -j PORTLOCKER";
    const SSH_DROP: &str = "-p tcp -m tcp --dport 22 --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment portlocker:ssh -j DROP";

    #[test]
    fn a_leftover_drop_is_named_once_with_the_command_that_removes_it() {
        let c = config("", SERVICES);
        let leftover = "-p tcp -m tcp --dport 22 -j DROP";
        // Whether portlocker closes ssh now or not: an open would leave it closed.
        for (input, ours) in [
            (vec![leftover], None),
            (vec![JUMP, leftover], Some(&[SSH_DROP][..])),
        ] {
            let found = findings(&c, holdings("ACCEPT", &input, ours));
            assert_eq!(
                texts(&found),
                [(
                    Severity::Problem,
                    "IPv4: `-A INPUT -p tcp -m tcp --dport 22 -j DROP` is not portlocker's and \
                     closes ssh 22/tcp for everyone, so `open ssh` would leave it unreachable: \
                     remove it with `/sbin/iptables -w 10 -D INPUT -p tcp -m tcp --dport 22 -j DROP`"
                )]
            );
        }
    }

    #[test]
    fn one_rule_over_several_ports_is_one_finding() {
        let c = config("", SERVICES);
        let rule = "-p tcp -m multiport --dports 22,80,443 -j DROP";
        let found = findings(&c, holdings("ACCEPT", &[rule], None));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].text.contains(
                "closes ssh 22/tcp, web 80/tcp and web 443/tcp for everyone, so `open ssh` or \
                 `open web` would leave them unreachable"
            ),
            "{}",
            found[0].text
        );
    }

    #[test]
    fn a_default_deny_is_a_note_never_a_removal() {
        let c = config("", SERVICES);
        let accept = "-p tcp -m tcp --dport 22 -j ACCEPT";
        let found = findings(&c, holdings("ACCEPT", &[accept, "-j DROP"], None));
        assert_eq!(
            texts(&found),
            [(
                Severity::Note,
                "IPv4: `-A INPUT -j DROP` is not portlocker's and drops every port no rule before \
                 it accepts, so `open web` would leave web 80/tcp and web 443/tcp closed unless a \
                 rule of yours accepts them before it"
            )]
        );
        let found = findings(&c, holdings("DROP", &[accept], None));
        assert_eq!(
            texts(&found),
            [(
                Severity::Note,
                "IPv4: INPUT's policy is DROP, so `open web` would leave web 80/tcp and web \
                 443/tcp closed unless a rule of yours accepts them"
            )]
        );
    }

    #[test]
    fn a_rule_that_lets_a_port_through_before_portlockers_drop_is_named() {
        let accept = "-p tcp -m tcp --dport 22 -j ACCEPT";
        // In INPUT mode portlocker's DROPs go after what INPUT holds.
        let c = config("chain = \"INPUT\"", SERVICES);
        let found = findings(&c, holdings("ACCEPT", &[accept], None));
        assert_eq!(
            texts(&found),
            [(
                Severity::Problem,
                "IPv4: `-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT` is not portlocker's and lets \
                 ssh 22/tcp through before portlocker's DROP, so `close ssh` would not close it \
                 for everyone: remove it with `/sbin/iptables -w 10 -D INPUT -p tcp -m tcp --dport 22 -j ACCEPT`, \
                 or set firewall.chain = \"PORTLOCKER\" so portlocker's rules come first"
            )]
        );
        // The owner's rule inside portlocker's chain.
        let c = config("", SERVICES);
        let found = findings(&c, holdings("ACCEPT", &[JUMP], Some(&["-j ACCEPT"])));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].text.starts_with(
                "IPv4: `-A PORTLOCKER -j ACCEPT` is not portlocker's and lets ssh 22/tcp, \
                 web 80/tcp and web 443/tcp through before portlocker's DROP, so `close ssh` or \
                 `close web` would not close them for everyone: take it out of portlocker's chain"
            ),
            "{}",
            found[0].text
        );
        // The same ACCEPT in INPUT, below the jump, changes nothing a run does.
        let found = findings(&c, holdings("ACCEPT", &[JUMP, accept], Some(&[])));
        assert_eq!(found, []);
        // Above the jump too: every run moves the jump back to the top.
        let found = findings(&c, holdings("ACCEPT", &[accept, JUMP], Some(&[])));
        assert_eq!(found, []);
    }

    #[test]
    fn portlockers_own_rules_and_other_ports_are_no_finding() {
        let c = config("", SERVICES);
        let input = [JUMP, "-p tcp -m tcp --dport 25 -j DROP", "-p udp -j DROP"];
        let ours = [
            "-s 203.0.113.7/32 -p tcp -m tcp --dport 22 -m comment --comment portlocker:ssh -j RETURN",
            SSH_DROP,
        ];
        let found = findings(&c, holdings("ACCEPT", &input, Some(&ours)));
        assert_eq!(found, []);
    }

    #[test]
    fn shared_ports_are_a_note() {
        let c = config("", "web = [80, 443]\nhttpd = 80\nalt = \"79-81\"\n");
        assert_eq!(
            texts(&shared_ports(&c)),
            [(
                Severity::Note,
                "80/tcp is in alt, httpd and web: closing any of them closes it for all"
            )]
        );
        let c = config("", "web = [80, 443]\nhttpd = 80\n");
        assert_eq!(
            texts(&shared_ports(&c)),
            [(
                Severity::Note,
                "80/tcp is in httpd and web: closing either closes it for both"
            )]
        );
        assert_eq!(shared_ports(&config("", SERVICES)), []);
    }

    fn state_with(wanted: &[(&str, &str)]) -> State {
        State {
            wanted: wanted
                .iter()
                .map(|(service, line)| (service.to_string(), vec![line.to_string()]))
                .collect(),
            ..State::default()
        }
    }

    #[test]
    fn kept_lines_that_no_longer_fit_are_named() {
        let c = config("", SERVICES);
        let path = Path::new("/var/lib/portlocker/state.toml");
        let now = clock::now_utc();
        let fits = state_with(&[("ssh", "close ssh"), ("web", "open web")]);
        assert_eq!(kept_state(&c, &Loaded::Kept(fits), path, now), []);
        let kept = state_with(&[("ssh", "close ssh"), ("vpn", "close vpn")]);
        assert_eq!(
            texts(&kept_state(&c, &Loaded::Kept(kept), path, now)),
            [(
                Severity::Problem,
                "state: the kept `close vpn` names vpn, which is no longer in [services]: the next \
                 run forgets it and removes any rule it made for vpn; add vpn back to [services] \
                 to keep it managed"
            )]
        );
        let c = config("", "ssh = 22\n");
        let kept = state_with(&[("ssh", "open ssh from 2001:db8::/48")]);
        let found = kept_state(&c, &Loaded::Kept(kept), path, now);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].text.starts_with(
                "state: the kept `open ssh from 2001:db8::/48` no longer fits the config, so runs \
                 no longer enforce it: `from 2001:db8::/48` is an IPv6 network, but this host \
                 manages IPv4 only"
            ),
            "{}",
            found[0].text
        );
    }

    #[test]
    fn a_damaged_state_says_what_the_next_run_does_and_the_fix() {
        let c = config("", SERVICES);
        let path = Path::new("/var/lib/portlocker/state.toml");
        let damaged = Loaded::Damaged(format!("{} is damaged (truncated)", path.display()));
        assert_eq!(
            texts(&kept_state(&c, &damaged, path, clock::now_utc())),
            [(
                Severity::Problem,
                "/var/lib/portlocker/state.toml is damaged (truncated): the next run moves it \
                 aside, goes on without it and fails; to start afresh now, remove it with \
                 `rm /var/lib/portlocker/state.toml`"
            )]
        );
    }

    #[test]
    fn with_a_key_an_unsigned_kept_copy_is_not_in_force() {
        use crate::intake::state::LastGood;
        let key = "[signature]\npublic_key = \"RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\"\n";
        let text = format!("source = \"-\"\n[firewall]\nipv6 = false\n{key}[services]\nssh = 22\n");
        let c = Config::parse(&text).unwrap();
        let path = Path::new("/state.toml");
        let now = clock::now_utc();
        assert_eq!(
            kept_state(&c, &Loaded::Kept(State::default()), path, now),
            []
        );
        let mut state = state_with(&[("ssh", "open ssh")]);
        state.last_good = Some(LastGood {
            source: "-".into(),
            fetched_at: now.fixed_offset(),
            changed_at: None,
            etag: None,
            last_modified: None,
            signed_at: None,
            signature: None,
            body: "open ssh\n".into(),
        });
        let found = kept_state(&c, &Loaded::Kept(state.clone()), path, now);
        assert_eq!(
            texts(&found),
            [(
                Severity::Problem,
                "state: the kept control file is not in force (it was accepted without a \
                 signature), so runs close what it opened until they fetch a file signed by \
                 signature.public_key: sign it with `minisign -S -m FILE`"
            )]
        );
        // Without a key the same copy stands.
        let c = config("", "ssh = 22\n");
        assert_eq!(kept_state(&c, &Loaded::Kept(state), path, now), []);
    }

    #[test]
    fn missing_directories_and_binaries_are_named_with_their_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        let page = file.join("status.html");
        let log = dir.path().join("gone/portlocker.log");
        let text = format!(
            "source = \"-\"\nlog_file = {log:?}\nstatus_file = {page:?}\nmetrics_file = {metrics:?}\n\
             [firewall]\niptables = {file:?}\nipv6 = false\n[services]\nssh = 22\n",
            metrics = dir.path().join("portlocker.prom"),
        );
        let c = Config::parse(&text).unwrap();
        let (log, page, shown_dir) = (log.display(), page.display(), file.display());
        assert_eq!(
            texts(&directories(&c)),
            [
                (
                    Severity::Problem,
                    format!(
                        "log_file {log}: the directory {}/gone does not exist: create it with \
                         `mkdir -p {}/gone`, or set log_file to a file in another directory",
                        dir.path().display(),
                        dir.path().display()
                    )
                    .as_str()
                ),
                (
                    Severity::Problem,
                    format!(
                        "status_file {page}: {shown_dir} is not a directory: set status_file to a \
                         file in a directory"
                    )
                    .as_str()
                ),
            ]
        );
        let problems = || -> Vec<(Severity, String)> {
            binaries(&c)
                .into_iter()
                .map(|finding| (finding.severity, finding.text))
                .collect()
        };
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            problems(),
            [(
                Severity::Problem,
                format!(
                    "{shown_dir} is not executable (`chmod 755 {shown_dir}`, or `apt-get install \
                     --reinstall iptables`, or set firewall.iptables in the config)"
                )
            )]
        );
        fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(problems(), []);
        fs::remove_file(&file).unwrap();
        assert_eq!(
            problems(),
            [(
                Severity::Problem,
                format!(
                    "{shown_dir} not found (install the iptables package with `apt-get install \
                     iptables`, or set firewall.iptables in the config)"
                )
            )]
        );
        fs::create_dir(&file).unwrap();
        assert_eq!(
            problems()[0].1,
            format!(
                "{shown_dir} is not a regular file (install the iptables package with `apt-get \
                 install iptables`, or set firewall.iptables in the config)"
            )
        );
    }

    #[test]
    fn secret_urls_are_those_with_a_path_a_query_or_a_user() {
        let cases = [
            ("source = \"-\"", &[][..]),
            ("source = \"/etc/portlocker/control.txt\"", &[]),
            ("source = \"https://example.org\"", &[]),
            ("source = \"https://example.org/\"", &[]),
            ("source = \"https://example.org/c.txt\"", &["source"]),
            ("source = \"https://example.org/?key=1\"", &["source"]),
            ("source = \"https://me@example.org/\"", &["source"]),
            (
                "source = \"https://www.dropbox.com/s/TOKEN/p.txt?dl=1\"\n\
                 [notify]\nurl = \"https://ntfy.sh/topic\"",
                &["source", "notify.url"],
            ),
            (
                "source = \"-\"\n[signature]\n\
                 public_key = \"RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\"\n\
                 url = \"https://example.org/p.txt.minisig\"",
                &["signature.url"],
            ),
        ];
        for (head, expected) in cases {
            let config = Config::parse(&format!("{head}\n[services]\nssh = 22\n")).unwrap();
            assert_eq!(secret_urls(&config), expected, "{head}");
        }
    }

    #[test]
    fn a_file_is_readable_by_everyone_only_if_every_directory_lets_them_through() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let chmod = |path: &Path, mode| {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        };
        let etc = dir.path().join("etc");
        fs::create_dir(&etc).unwrap();
        let config = etc.join("config.toml");
        fs::write(&config, "").unwrap();
        chmod(dir.path(), 0o755);
        chmod(&etc, 0o755);
        for (mode, expected) in [(0o644, Some(0o644)), (0o640, None), (0o604, Some(0o604))] {
            chmod(&config, mode);
            assert_eq!(readable_by_everyone(&config), expected, "{mode:o}");
        }
        chmod(&config, 0o644);
        chmod(&etc, 0o750);
        assert_eq!(readable_by_everyone(&config), None);
        assert_eq!(readable_by_everyone(&etc.join("missing")), None);
    }

    #[test]
    fn the_packaged_placeholder_source_is_a_problem() {
        let example =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
                .unwrap();
        let packaged = Config::parse(&example).unwrap();
        assert_eq!(
            texts(&placeholder(&packaged).into_iter().collect::<Vec<_>>()),
            [(
                Severity::Problem,
                "source is still the example's placeholder \
                 (https://www.dropbox.com/s/XXXX/portlocker.txt): set source to your link"
            )]
        );
        let mine = example.replace("/s/XXXX/", "/s/a1b2c3/");
        assert_eq!(placeholder(&Config::parse(&mine).unwrap()), None);
        // Standard input: what cron gives is nothing.
        let found = placeholder(&config("", SERVICES)).unwrap();
        assert!(
            found
                .text
                .starts_with("source = \"-\" reads the control file from standard input")
        );
    }

    /// A minimal Debian without ca-certificates: every fetch fails, and
    /// `check` says so, unless ca_file names the CA.
    #[test]
    fn an_empty_trust_store_is_a_problem_unless_ca_file_is_set() {
        let https = |extra: &str| {
            Config::parse(&format!(
                "source = \"https://example.org/f.txt\"\n[fetch]\n{extra}\n[firewall]\n\
                 ipv6 = false\n[services]\nssh = 22\n"
            ))
            .unwrap()
        };
        let found = trust_store(&https(""), Ok(0)).unwrap();
        assert_eq!(found.severity, Severity::Problem);
        assert!(
            found.text.starts_with(
                "the system's trust store holds no CA certificate, so every HTTPS fetch fails: \
                 install the ca-certificates package"
            ),
            "{}",
            found.text
        );
        assert!(
            trust_store(&https(""), Err("no such file".into()))
                .unwrap()
                .text
                .contains("cannot be read (no such file)")
        );
        assert_eq!(trust_store(&https(""), Ok(140)), None);
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        fs::write(&ca, "").unwrap();
        let with_ca = https(&format!("ca_file = {ca:?}"));
        assert_eq!(trust_store(&with_ca, Ok(0)), None);
        // A local file fetches nothing over HTTPS.
        assert_eq!(trust_store(&config("", SERVICES), Ok(0)), None);
    }

    #[test]
    fn lists_read_as_english() {
        assert_eq!(and_list::<&str>(&[]), "");
        assert_eq!(and_list(&["a"]), "a");
        assert_eq!(and_list(&["a", "b"]), "a and b");
        assert_eq!(and_list(&["a", "b", "c"]), "a, b and c");
    }
}
