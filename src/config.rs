//! The TOML config: serde types that mirror the file, checked once into a
//! validated `Config` whose values deeper code can trust. Pure apart from
//! `Config::load` reading the file.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use chrono::TimeDelta;
use serde::Deserialize;

use crate::intake::source::Source;
use crate::sys::files;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The text it was read from: kept by a run for a later run whose
    /// config cannot be used, and fingerprinted (`fingerprint`).
    pub text: String,
    /// Where it was loaded from (resolved), when it was.
    pub path: Option<PathBuf>,
    /// Where the control file comes from.
    pub source: Source,
    /// Append-only run log.
    pub log_file: PathBuf,
    /// The HTML status page, if the owner wants one.
    pub status_file: Option<PathBuf>,
    /// Prometheus text-format metrics for node_exporter's textfile collector, if wanted.
    pub metrics_file: Option<PathBuf>,
    /// Where portlocker keeps its own state.
    pub state_dir: PathBuf,
    /// This host's name, matched against `on` patterns in the control file.
    pub host_name: String,
    pub fetch: FetchConfig,
    pub firewall: FirewallConfig,
    /// With a key, only signed control files are accepted.
    pub signature: Option<SignatureConfig>,
    /// Every service the control file may name, with its ports.
    pub services: BTreeMap<ServiceName, Vec<PortSpec>>,
    /// The services in the order the config lists them, for the page and
    /// `status` (the owner puts ssh first). See `services_in_order`.
    pub service_order: Vec<ServiceName>,
    /// Who to tell when the firewall changes or runs fail (`[notify]`).
    pub notify: NotifyConfig,
    /// How often runs come, so the page can say when the next is due (`[status] every`).
    pub every: TimeDelta,
    /// `portlocker watch`: how often it asks the source, and what may poke it (`[watch]`).
    pub watch: WatchConfig,
}

/// `[watch]`: the resident mode's own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// How often the source is asked (a conditional GET), before jitter.
    pub every: Duration,
    /// An ntfy topic (https://) whose messages make watch fetch at once.
    /// Secret like the source: only its host is ever shown.
    pub poke: Option<url::Url>,
    /// A root-only file holding the poke's access token (`tk_…`), if the
    /// topic needs one.
    pub poke_token_file: Option<PathBuf>,
}

impl Default for WatchConfig {
    fn default() -> WatchConfig {
        WatchConfig {
            every: WatchConfig::DEFAULT_EVERY,
            poke: None,
            poke_token_file: None,
        }
    }
}

impl WatchConfig {
    /// Ten seconds: an open within seconds, 8,640 requests a day (a
    /// Dropbox link allows 100,000), nearly all of them 304s.
    pub const DEFAULT_EVERY: Duration = Duration::from_secs(10);
    /// The bounds of `every`: at least a second, at most an hour.
    pub const EVERY_RANGE: std::ops::RangeInclusive<Duration> =
        Duration::from_secs(1)..=Duration::from_secs(3600);
}

/// Who to tell, and how often a failure repeats on stderr (`[notify]`).
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// A program (absolute path) and its arguments, run with the notice on stdin.
    pub command: Option<NotifyCommand>,
    /// An https:// URL the notice is POSTed to (ntfy, Gotify, a webhook).
    /// Secret like the source: only its scheme and host are ever shown.
    pub url: Option<url::Url>,
    /// A failure that repeats unchanged is printed again at most this often.
    pub repeat_after: TimeDelta,
}

/// `[notify] command`: an argv, never a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Bound on the whole fetch: connect, headers and body together.
    pub timeout: Duration,
    /// A larger control file is rejected; reading stops at this size.
    pub max_bytes: u64,
    /// An extra trusted root certificate (PEM), e.g. for a private server.
    pub ca_file: Option<PathBuf>,
    /// Sleep a random time up to this before fetching, to spread a fleet's requests.
    pub jitter: Duration,
}

#[derive(Debug, Clone)]
pub struct SignatureConfig {
    /// The minisign public key (base64, `RW…`), checked to decode.
    pub public_key: String,
    /// Where the signature is; by default the source with `.minisig` appended to its path.
    pub url: Option<Source>,
    /// Refuse a file signed longer ago than this.
    pub max_age: Option<TimeDelta>,
}

#[derive(Debug, Clone)]
pub struct FirewallConfig {
    /// Which firewall portlocker drives (`backend`).
    pub backend: BackendKind,
    /// The nft program, for the nftables backend.
    pub nft: PathBuf,
    pub iptables: PathBuf,
    pub ip6tables: PathBuf,
    /// The restore tools that apply a family's changes as one transaction;
    /// by default beside the configured iptables (`iptables` → `iptables-restore`).
    pub iptables_restore: PathBuf,
    pub ip6tables_restore: PathBuf,
    /// Manage ip6tables as well as iptables.
    pub ipv6: bool,
    /// portlocker's own chain, or `INPUT` to put rules straight into INPUT.
    pub chain: ChainName,
    /// Drop only new connections, so a session already open survives a close.
    pub keep_established: bool,
    /// The longest any open lasts, for owners who forget to close.
    pub max_open: Option<TimeDelta>,
    /// The longest one iptables call may run; one still running then is killed.
    pub command_timeout: Duration,
    /// What a service the control file does not name gets (`default`).
    pub default: Unnamed,
}

impl FirewallConfig {}

/// The firewall portlocker drives: iptables and ip6tables (its own chain,
/// jumped to from INPUT), or nftables (its own table, `inet portlocker`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendKind {
    #[default]
    Iptables,
    Nftables,
}

impl BackendKind {
    /// The config value: `iptables` or `nftables`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Iptables => "iptables",
            BackendKind::Nftables => "nftables",
        }
    }
}

/// What happens to a configured service that no line in force names, and
/// to every service when there is no control file at all yet (`[firewall]
/// default`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Unnamed {
    /// Left as the firewall has it: the original behaviour.
    #[default]
    Keep,
    /// Closed: only what the control file opens is open. Recommended with
    /// the boot unit, so a fresh boot with no state starts closed.
    Close,
}

impl Unnamed {
    /// The config value: `keep` or `close`.
    pub fn as_str(self) -> &'static str {
        match self {
            Unnamed::Keep => "keep",
            Unnamed::Close => "close",
        }
    }
}

impl fmt::Display for Unnamed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where portlocker keeps its state when the config names no `state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/portlocker";

/// The state directory the config at `path` names, read as leniently as
/// can be (for a config that cannot be used otherwise): its `state_dir`
/// when the text says one, else the default. None when the file cannot be
/// read at all.
pub fn state_dir_of(path: &Path) -> Option<PathBuf> {
    // Not UTF-8 (a comment saved as Latin-1): its state_dir line may be.
    let bytes = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let state_dir =
        |table: toml::Table| (table.get("state_dir")).map(|dir| dir.as_str().map(PathBuf::from));
    // Not TOML: the `state_dir` line before the first section, read alone
    // (a quote left open on another line); else the default is tried (the
    // copy there says whose it is).
    let named = match text.parse::<toml::Table>() {
        Ok(table) => state_dir(table),
        Err(_) => (text.lines())
            .take_while(|line| !line.trim_start().starts_with('['))
            .filter(|line| line.trim_start().starts_with("state_dir"))
            .find_map(|line| line.parse::<toml::Table>().ok().and_then(state_dir)),
    };
    match named {
        None => Some(DEFAULT_STATE_DIR.into()),
        Some(dir) => dir.filter(|dir| dir.is_absolute()),
    }
}

/// `path` with `.` and `..` taken out as written (no links followed).
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The files portlocker keeps in `state_dir`.
const STATE_FILES: [&str; 6] = [
    "state.toml",
    "state.toml.damaged",
    "lock",
    "watch",
    "config.last-good.toml",
    "reserve",
];

impl Config {
    /// A fingerprint of its text (FNV-1a, the same in every build, unlike
    /// std's hasher): a cron run tells by it that a running watch read
    /// another config.
    pub fn fingerprint(&self) -> u64 {
        (self.text.bytes()).fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
}

/// A configuration mistake: the run stops before doing anything (exit 2).
#[derive(Debug)]
pub struct ConfigError(pub anyhow::Error);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates the config file at `path`. Run as root, it
    /// refuses a config, a CA file or a program that anyone but root could
    /// change or replace — through a link, or a directory above it (see
    /// `files`) — before reading a byte of the config.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let load = || -> Result<Config> {
            let mut text = String::new();
            files::open_trusted(path, "config")?
                .read_to_string(&mut text)
                .with_context(|| format!("cannot read config {}", path.display()))?;
            let mut config =
                Config::parse(&text).with_context(|| format!("config {}", path.display()))?;
            config.path = Some(path.canonicalize().unwrap_or_else(|_| path.to_owned()));
            config.check_outputs(path)?;
            if let Some(ca_file) = &config.fetch.ca_file {
                files::check_trusted(ca_file, "fetch.ca_file")?;
            }
            // Root runs it: a program another account can change is that
            // account's root shell. The iptables programs of each family are
            // checked by the backend, so one family's never stops the other's.
            // nft also by the iptables backend's look for leftovers there.
            let nft = &config.firewall.nft;
            if config.firewall.backend == BackendKind::Nftables || nft.exists() {
                files::check_program(nft, "firewall.nft")?;
            }
            Ok(config)
        };
        load().map_err(ConfigError)
    }

    /// Refuses a log, page or metrics file that is something a run reads or
    /// runs (the config, the local control file, a program, the CA file),
    /// another of them, or one of the state directory's own: a run would
    /// write over it, and the next run would refuse to start.
    fn check_outputs(&self, config_path: &Path) -> Result<()> {
        // Where a write lands: its directory resolved, its last component
        // as written. Root never follows a link there (another account may
        // have planted it, in a web root), so nor does this check: a link
        // planted to another file must not stop every run.
        let landing = |path: &Path| match (path.parent().map(Path::canonicalize), path.file_name())
        {
            (Some(Ok(dir)), Some(name)) => Some(dir.join(name)),
            _ => None,
        };
        let same = |output: &Path, other: &Path| {
            lexical(output) == lexical(other)
                || matches!((landing(output), other.canonicalize()), (Some(x), Ok(y)) if x == y)
        };
        let same_outputs = |a: &Path, b: &Path| {
            lexical(a) == lexical(b)
                || matches!((landing(a), landing(b)), (Some(x), Some(y)) if x == y)
        };
        let mut inputs: Vec<(&str, &Path)> = vec![("the config itself", config_path)];
        if let Source::File(source) = &self.source {
            inputs.push(("the control file (source)", source));
        }
        let program = "a program portlocker runs";
        for family in [Family::Ipv4, Family::Ipv6] {
            inputs.push((program, self.binary(family)));
            inputs.push((program, self.restore_binary(family)));
        }
        inputs.push((program, &self.firewall.nft));
        if let Some(command) = &self.notify.command {
            inputs.push((program, &command.program));
        }
        if let Some(ca_file) = &self.fetch.ca_file {
            inputs.push(("fetch.ca_file", ca_file));
        }
        let outputs = [
            ("log_file", Some(&self.log_file)),
            ("status_file", self.status_file.as_ref()),
            ("metrics_file", self.metrics_file.as_ref()),
        ];
        let state_dir = lexical(&self.state_dir);
        for (n, &(key, output)) in outputs.iter().enumerate() {
            let Some(output) = output else { continue };
            let normal = lexical(output);
            let earlier = (outputs[..n].iter())
                .find(|(_, earlier)| earlier.is_some_and(|earlier| same_outputs(earlier, output)));
            let own = normal == state_dir
                || normal.parent() == Some(state_dir.as_path())
                    && (normal.file_name())
                        .is_some_and(|name| STATE_FILES.iter().any(|f| name == *f));
            let clash = match (inputs.iter().find(|(_, path)| same(output, path)), earlier) {
                (Some((input, _)), _) => input.to_string(),
                (None, Some((earlier, _))) => format!("also {earlier}"),
                (None, None) if own => "one of the state directory's own files".to_owned(),
                (None, None) => continue,
            };
            bail!(
                "{key} {} is {clash}: a run would write over it; give it a path of its own",
                output.display()
            );
        }
        Ok(())
    }

    /// Validates config text.
    pub fn parse(text: &str) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|error| toml_error(text, error))?;
        let mut config = raw.validate()?;
        config.text = text.to_owned();
        Ok(config)
    }

    /// Every address family portlocker manages, IPv4 first.
    pub fn families(&self) -> Vec<Family> {
        if self.firewall.ipv6 {
            vec![Family::Ipv4, Family::Ipv6]
        } else {
            vec![Family::Ipv4]
        }
    }

    /// The ports that more than one service gives, each run of ports with
    /// the services that share it (`("80/tcp", [httpd, web])`), in port
    /// order, tcp first. Allowed, but worth telling: opening one of those
    /// services opens the port for the others too.
    pub fn shared_ports(&self) -> Vec<(String, Vec<ServiceName>)> {
        let mut shared: Vec<(PortSpec, Vec<ServiceName>)> = Vec::new();
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let specs: Vec<(&ServiceName, &PortSpec)> = self
                .services
                .iter()
                .flat_map(|(name, specs)| specs.iter().map(move |spec| (name, spec)))
                .filter(|(_, spec)| spec.protocol == protocol)
                .collect();
            // Every port where who covers it can change: a first, or one past a last.
            let mut edges: Vec<u32> = specs
                .iter()
                .flat_map(|(_, spec)| [u32::from(spec.first), u32::from(spec.last) + 1])
                .collect();
            edges.sort_unstable();
            edges.dedup();
            for pair in edges.windows(2) {
                let (first, last) = (pair[0] as u16, (pair[1] - 1) as u16);
                let names: Vec<ServiceName> = specs
                    .iter()
                    .filter(|(_, spec)| spec.first <= first && last <= spec.last)
                    .map(|(name, _)| (*name).clone())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                if names.len() < 2 {
                    continue;
                }
                match shared.last_mut() {
                    Some((run, run_names))
                        if run.protocol == protocol
                            && u32::from(run.last) + 1 == u32::from(first)
                            && *run_names == names =>
                    {
                        run.last = last;
                    }
                    _ => shared.push((
                        PortSpec {
                            protocol,
                            first,
                            last,
                        },
                        names,
                    )),
                }
            }
        }
        shared
            .into_iter()
            .map(|(ports, names)| (ports.to_string(), names))
            .collect()
    }

    /// Every service with its ports, in the order the config lists them;
    /// any service the order lacks (a config changed in code) after them, by name.
    pub fn services_in_order(&self) -> Vec<(&ServiceName, &Vec<PortSpec>)> {
        let mut ordered: Vec<(&ServiceName, &Vec<PortSpec>)> = self
            .service_order
            .iter()
            .filter_map(|name| self.services.get_key_value(name))
            .collect();
        for (name, specs) in &self.services {
            if !self.service_order.contains(name) {
                ordered.push((name, specs));
            }
        }
        ordered
    }

    /// Path of the binary that manages `family`.
    pub fn binary(&self, family: Family) -> &Path {
        match family {
            Family::Ipv4 => &self.firewall.iptables,
            Family::Ipv6 => &self.firewall.ip6tables,
        }
    }

    /// Path of the restore tool that applies `family`'s transactions.
    pub fn restore_binary(&self, family: Family) -> &Path {
        match family {
            Family::Ipv4 => &self.firewall.iptables_restore,
            Family::Ipv6 => &self.firewall.ip6tables_restore,
        }
    }
}

/// toml's message quotes the lines at fault. When one of them may hold the
/// secret source (a `source` or `url` key, or any `://`, as with a link
/// pasted without quotes), only the place is shown, never the line.
fn toml_error(text: &str, error: toml::de::Error) -> anyhow::Error {
    let Some(span) = error.span() else {
        return error.into();
    };
    let start = span.start.min(text.len());
    let end = span.end.clamp(start, text.len());
    let line_of = |offset: usize| {
        text.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    };
    let (first, last) = (line_of(start), line_of(end.saturating_sub(1).max(start)));
    let lines = || text.split('\n').skip(first).take(last - first + 1);
    let secret = lines().any(|line| {
        let key = line.trim_start().trim_start_matches(['"', '\'']);
        key.starts_with("source") || key.starts_with("url") || line.contains("://")
    });
    if !secret {
        return error.into();
    }
    let unquoted = lines().any(|line| {
        line.split_once('=').is_some_and(|(_, value)| {
            value
                .trim_start()
                .starts_with(|c: char| c.is_ascii_alphanumeric())
        })
    });
    let hint = if unquoted {
        "; a URL goes in double quotes"
    } else {
        ""
    };
    let line_start = text.as_bytes()[..start]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1);
    let column = String::from_utf8_lossy(&text.as_bytes()[line_start..start])
        .chars()
        .count()
        + 1;
    anyhow!(
        "TOML parse error at line {}, column {column}: {} (the line is not shown: it may hold the secret URL{hint})",
        first + 1,
        error.message().trim_end()
    )
}

/// An IP address family, each with its own iptables binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        })
    }
}

/// A service name: `[a-z][a-z0-9_-]{0,31}`. Safe on a command line and in HTML.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName(String);

impl ServiceName {
    pub fn new(name: &str) -> Result<ServiceName> {
        let mut chars = name.chars();
        let valid = name.len() <= 32
            && chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        ensure!(
            valid,
            "service name {name:?} must be a lowercase letter followed by up to 31 of a-z, 0-9, _ and -"
        );
        Ok(ServiceName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets a set of names be searched by `&str`; the order is the string's.
impl std::borrow::Borrow<str> for ServiceName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An iptables chain name for portlocker's rules: its own chain, or INPUT.
/// Never a target, another built-in chain, or a chain another manager owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainName(String);

/// iptables targets: `-j NAME` at the top of INPUT jumps to the target, not
/// to a chain of that name. Compared ignoring case: a lower-case `accept`
/// is a chain to iptables but still a mistake.
const TARGETS: &[&str] = &[
    "ACCEPT",
    "DROP",
    "RETURN",
    "REJECT",
    "QUEUE",
    "NFQUEUE",
    "LOG",
    "MASQUERADE",
    "SNAT",
    "DNAT",
    "REDIRECT",
    "MARK",
    "CONNMARK",
    "CT",
    "NOTRACK",
    "TRACE",
    "AUDIT",
    "TCPMSS",
    "TEE",
    "CLASSIFY",
    "SET",
    "ULOG",
    "NFLOG",
    "CHECKSUM",
    "TPROXY",
    "DNPT",
    "SNPT",
    "SECMARK",
    "CONNSECMARK",
    "SYNPROXY",
    "NETMAP",
    "DSCP",
    "TOS",
    "TTL",
    "HL",
    "HMARK",
    "IDLETIMER",
    "LED",
    "RATEEST",
    "CLUSTERIP",
    "ECN",
];

/// The rule for chains of other managers: a name that starts like the
/// chains a known manager creates, flushes and rewrites (compared ignoring
/// case) is refused, with the manager. Rules portlocker put there would be
/// lost at the manager's next reload, and the manager's own rules (Docker's
/// DOCKER-USER ends in `-j RETURN`) would decide first. The list is of name
/// shapes, not names: firewalld makes `IN_<zone>_allow` for every zone.
const OWNED_PREFIXES: &[(&str, &str)] = &[
    ("DOCKER", "Docker"),
    ("KUBE-", "Kubernetes"),
    ("f2b-", "fail2ban"),
    ("fail2ban-", "fail2ban"),
    ("ufw-", "ufw"),
    ("ufw6-", "ufw"),
    ("CROWDSEC", "CrowdSec"),
    ("LIBVIRT_", "libvirt"),
    ("CILIUM_", "Cilium"),
    ("OLD_CILIUM_", "Cilium"),
    ("NETAVARK", "Podman"),
    ("CNI-", "a CNI plugin"),
    ("cali-", "Calico"),
    ("FLANNEL", "flannel"),
    ("WEAVE", "Weave Net"),
    ("ANTREA", "Antrea"),
    ("KILO-", "Kilo"),
    ("SUBMARINER-", "Submariner"),
    ("ISTIO_", "Istio"),
    ("PROXY_INIT_", "Linkerd"),
    ("AWS-", "the AWS VPC CNI"),
    ("OPENSHIFT-", "OpenShift"),
    ("NOMAD-", "Nomad"),
    ("neutron-", "OpenStack Neutron"),
    ("PVEFW-", "Proxmox VE"),
    ("ts-", "Tailscale"),
    ("NETBIRD-", "NetBird"),
    ("sshguard", "sshguard"),
    ("nixos-", "the NixOS firewall"),
    ("shorewall", "Shorewall"),
    // firewalld: its own chains, and one set per zone (IN_public_allow, …).
    ("INPUT_direct", "firewalld"),
    ("INPUT_ZONES", "firewalld"),
    ("FORWARD_direct", "firewalld"),
    ("FORWARD_IN_ZONES", "firewalld"),
    ("FORWARD_OUT_ZONES", "firewalld"),
    ("OUTPUT_direct", "firewalld"),
    ("IN_", "firewalld (a zone's chains) or FireHOL"),
    ("FWD_", "firewalld (a zone's chains)"),
    ("FWDI_", "firewalld (a zone's chains)"),
    ("FWDO_", "firewalld (a zone's chains)"),
    ("OUT_", "firewalld (a zone's chains) or FireHOL"),
    ("PRE_", "firewalld (a zone's chains)"),
    ("POST_", "firewalld (a zone's chains)"),
    // ConfigServer Firewall (csf/lfd).
    ("LOCALINPUT", "csf"),
    ("LOCALOUTPUT", "csf"),
    ("ALLOWIN", "csf"),
    ("ALLOWOUT", "csf"),
    ("DENYIN", "csf"),
    ("DENYOUT", "csf"),
    ("LOGDROP", "csf"),
    ("INVDROP", "csf"),
    ("SYNFLOOD", "csf"),
    ("PORTFLOOD", "csf"),
    ("CC_", "csf"),
    ("GALLOW", "csf"),
    ("GDENY", "csf"),
];

/// How the mirror's chain name ends (`PORTLOCKER-FWD`).
const MIRROR_SUFFIX: &str = "-FWD";

/// The mirror's chain for chain `name`: `NAME-FWD`, or where that would
/// pass iptables' 28 characters, the name's first 19, `-`, four hex digits
/// of a hash of the whole name, and `-FWD` — so two long names that begin
/// alike keep mirrors of their own.
fn mirror_name(name: &str) -> String {
    if name.len() + MIRROR_SUFFIX.len() <= 28 {
        return format!("{name}{MIRROR_SUFFIX}");
    }
    // FNV-1a, folded to 16 bits: stable from one release to the next.
    let hash = name.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    let short = (hash >> 16) ^ (hash & 0xffff);
    format!("{}-{short:04X}{MIRROR_SUFFIX}", &name[..19])
}

/// The manager whose chains start like `name`, with that start.
fn owned_by(name: &str) -> Option<(&'static str, &'static str)> {
    let lower = name.to_ascii_lowercase();
    OWNED_PREFIXES
        .iter()
        .find(|(prefix, _)| lower.starts_with(&prefix.to_ascii_lowercase()))
        .copied()
}

impl ChainName {
    /// Checks the form, and refuses a name that can never be right, saying
    /// what it would do.
    pub fn new(name: &str) -> Result<ChainName> {
        const USE: &str = "use the default PORTLOCKER or INPUT";
        let valid = !name.is_empty()
            && name.len() <= 28
            && !name.starts_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        ensure!(
            valid,
            "chain {name:?} must be 1 to 28 of A-Z, a-z, 0-9, _ and - (not starting with -)"
        );
        if let Some(target) = TARGETS.iter().find(|t| t.eq_ignore_ascii_case(name)) {
            let effect = match *target {
                "ACCEPT" => "open every port",
                "DROP" | "REJECT" => "cut every connection, your SSH session too",
                "RETURN" => "skip every later rule of INPUT, your own firewall too",
                _ => "act on every packet, whatever the control file says",
            };
            bail!(
                "chain {name:?} is the iptables target {target}, not a chain: `-j {target}` first in INPUT would {effect}; {USE}"
            );
        }
        if name != "INPUT" && name.eq_ignore_ascii_case("INPUT") {
            bail!(
                "chain {name:?}: chain names are case-sensitive, so this would be a new chain that nothing jumps to, not INPUT; write INPUT, or leave out chain for the default PORTLOCKER"
            );
        }
        let builtin = ["OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"];
        if let Some(chain) = builtin.iter().find(|c| c.eq_ignore_ascii_case(name)) {
            bail!(
                "chain {name:?} is the built-in chain {chain}, not the one connections to this host pass; {USE}"
            );
        }
        if let Some((prefix, owner)) = owned_by(name) {
            let why = if owner == "Docker" {
                "DOCKER-USER ends in `-j RETURN`, so a close added after it is never reached, and Docker rewrites its chains when it restarts"
            } else {
                "it creates, flushes and rewrites its chains, so portlocker's rules there would be lost or overruled"
            };
            bail!(
                "chain {name:?} belongs to {owner} (its chains start with {prefix}): {why}; {USE}"
            );
        }
        if name.to_ascii_uppercase().ends_with(MIRROR_SUFFIX) {
            bail!(
                "chain {name:?} ends in {MIRROR_SUFFIX}, which names the chain portlocker keeps \
                 where Docker forwards the ports it publishes (a chain's name and \
                 {MIRROR_SUFFIX}): that chain could be this one; {USE}"
            );
        }
        let mirror = mirror_name(name);
        if let Some((prefix, owner)) = owned_by(&mirror) {
            bail!(
                "chain {name:?}: the chain portlocker keeps beside it where Docker forwards would \
                 be {mirror:?}, and that belongs to {owner} (its chains start with {prefix}), \
                 which flushes and rewrites them; {USE}"
            );
        }
        Ok(ChainName(name.to_owned()))
    }

    /// The chain portlocker keeps beside this one where Docker forwards the
    /// ports it publishes (`firewall/forward.rs`).
    pub fn mirror(&self) -> String {
        mirror_name(match self.is_input() {
            true => "PORTLOCKER",
            false => &self.0,
        })
    }

    /// True when rules go straight into INPUT, with no chain of our own.
    pub fn is_input(&self) -> bool {
        self.0 == "INPUT"
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One port or an inclusive range of ports, with its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpec {
    pub protocol: Protocol,
    pub first: u16,
    pub last: u16,
}

impl PortSpec {
    /// Parses `PORT[/tcp|udp]` or `LO-HI[/tcp|udp]`; tcp when no protocol is given.
    pub fn parse(text: &str) -> Result<PortSpec> {
        let (ports, protocol) = match text.split_once('/') {
            None => (text, Protocol::Tcp),
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some((_, other)) => bail!("unknown protocol {other:?} (use tcp or udp)"),
        };
        let (first, last) = match ports.split_once('-') {
            None => (parse_port(ports)?, parse_port(ports)?),
            Some((lo, hi)) => (parse_port(lo)?, parse_port(hi)?),
        };
        ensure!(first <= last, "range {first}-{last} runs backwards");
        Ok(PortSpec {
            protocol,
            first,
            last,
        })
    }

    /// Whether the two share a port of the same protocol.
    pub fn overlaps(&self, other: &PortSpec) -> bool {
        self.protocol == other.protocol && self.first <= other.last && other.first <= self.last
    }

    /// The `--dport` argument: `22` or `60000:61000`.
    pub fn dport(&self) -> String {
        if self.first == self.last {
            self.first.to_string()
        } else {
            format!("{}:{}", self.first, self.last)
        }
    }
}

fn parse_port(text: &str) -> Result<u16> {
    // u16::from_str accepts a leading '+'; a port is digits only.
    let port = text
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse::<u16>().ok())
        .flatten()
        .filter(|&p| p != 0);
    port.ok_or_else(|| anyhow!("{text:?} is not a port number from 1 to 65535"))
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}/{}", self.first, self.protocol.as_str())
        } else {
            write!(f, "{}-{}/{}", self.first, self.last, self.protocol.as_str())
        }
    }
}

// ---- the file as written -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    source: String,
    log_file: Option<PathBuf>,
    status_file: Option<PathBuf>,
    metrics_file: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    host_name: Option<String>,
    #[serde(default)]
    fetch: RawFetch,
    #[serde(default)]
    firewall: RawFirewall,
    signature: Option<RawSignature>,
    #[serde(default)]
    notify: RawNotify,
    #[serde(default)]
    status: RawStatus,
    #[serde(default)]
    watch: RawWatch,
    /// Keys with where they stand in the file: toml keeps a table sorted by
    /// name, and the owner's order is the order of the page.
    services: BTreeMap<toml::Spanned<String>, toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    command: Option<Vec<String>>,
    url: Option<String>,
    repeat_after: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    every: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    every: Option<String>,
    poke: Option<String>,
    poke_token_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignature {
    public_key: String,
    url: Option<String>,
    max_age: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFetch {
    timeout_secs: Option<u64>,
    max_bytes: Option<u64>,
    ca_file: Option<PathBuf>,
    jitter_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFirewall {
    backend: Option<String>,
    nft: Option<PathBuf>,
    iptables: Option<PathBuf>,
    ip6tables: Option<PathBuf>,
    iptables_restore: Option<PathBuf>,
    ip6tables_restore: Option<PathBuf>,
    ipv6: Option<bool>,
    chain: Option<String>,
    keep_established: Option<bool>,
    max_open: Option<String>,
    command_timeout_secs: Option<u64>,
    default: Option<String>,
}

impl RawConfig {
    fn validate(self) -> Result<Config> {
        let source = Source::parse(&self.source).context("source")?;
        let fetch = self.fetch.validate()?;
        let firewall = self.firewall.validate()?;
        let signature = self.signature.map(RawSignature::validate).transpose()?;
        let output = |key: &str, path: Option<PathBuf>| {
            path.map(|path| absolute(key, Some(path), "")).transpose()
        };
        Ok(Config {
            text: String::new(),
            path: None,
            source,
            log_file: absolute("log_file", self.log_file, "/var/log/portlocker.log")?,
            status_file: output("status_file", self.status_file)?,
            metrics_file: output("metrics_file", self.metrics_file)?,
            state_dir: absolute("state_dir", self.state_dir, DEFAULT_STATE_DIR)?,
            host_name: host_name(self.host_name)?,
            fetch,
            firewall,
            signature,
            notify: self.notify.validate()?,
            every: self
                .status
                .every
                .map(|text| duration("status.every", &text))
                .transpose()?
                .unwrap_or(TimeDelta::minutes(5)),
            watch: self.watch.validate()?,
            service_order: service_order(&self.services)?,
            services: services(self.services)?,
        })
    }
}

/// `host_name` as given (a host name's characters only), else the system's.
fn host_name(given: Option<String>) -> Result<String> {
    let Some(name) = given else {
        return Ok(system_host_name());
    };
    ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "host_name = {name:?}: must be a host name (letters, digits, - _ .)"
    );
    Ok(name)
}

impl RawFetch {
    fn validate(self) -> Result<FetchConfig> {
        let timeout_secs = self.timeout_secs.unwrap_or(20);
        ensure!(
            (1..=600).contains(&timeout_secs),
            "fetch.timeout_secs = {timeout_secs}: must be 1 to 600"
        );
        let max_bytes = self.max_bytes.unwrap_or(65536);
        ensure!(
            (1..=16 << 20).contains(&max_bytes),
            "fetch.max_bytes = {max_bytes}: must be 1 to 16777216"
        );
        let jitter_secs = self.jitter_secs.unwrap_or(0);
        ensure!(
            jitter_secs <= 3600,
            "fetch.jitter_secs = {jitter_secs}: must be 0 to 3600"
        );
        Ok(FetchConfig {
            timeout: Duration::from_secs(timeout_secs),
            max_bytes,
            ca_file: (self.ca_file)
                .map(|path| absolute("fetch.ca_file", Some(path), ""))
                .transpose()?,
            jitter: Duration::from_secs(jitter_secs),
        })
    }
}

impl RawFirewall {
    fn validate(self) -> Result<FirewallConfig> {
        let command_timeout_secs = self.command_timeout_secs.unwrap_or(30);
        ensure!(
            (1..=600).contains(&command_timeout_secs),
            "firewall.command_timeout_secs = {command_timeout_secs}: must be 1 to 600"
        );
        let iptables = absolute("firewall.iptables", self.iptables, "/sbin/iptables")?;
        let ip6tables = absolute("firewall.ip6tables", self.ip6tables, "/sbin/ip6tables")?;
        let restore_beside = |key: &str, given: Option<PathBuf>, binary: &Path| match given {
            Some(path) => absolute(key, Some(path), ""),
            None => Ok(restore_beside(binary)),
        };
        ensure!(
            iptables != ip6tables,
            "firewall.iptables and firewall.ip6tables are both {:?}: one family would go unmanaged \
             while status read the other twice (ip6tables is usually /sbin/ip6tables)",
            iptables.display().to_string()
        );
        let iptables_restore = restore_beside(
            "firewall.iptables_restore",
            self.iptables_restore,
            &iptables,
        )?;
        let ip6tables_restore = restore_beside(
            "firewall.ip6tables_restore",
            self.ip6tables_restore,
            &ip6tables,
        )?;
        for (key, path, family) in [
            ("firewall.iptables", &iptables, Family::Ipv4),
            ("firewall.ip6tables", &ip6tables, Family::Ipv6),
            ("firewall.iptables_restore", &iptables_restore, Family::Ipv4),
            (
                "firewall.ip6tables_restore",
                &ip6tables_restore,
                Family::Ipv6,
            ),
        ] {
            not_of_the_other_family(key, path, family)?;
        }
        let backend = match self.backend.as_deref() {
            None | Some("iptables") => BackendKind::Iptables,
            Some("nftables") => BackendKind::Nftables,
            Some(other) => bail!(
                "firewall.backend = {other:?}: must be \"iptables\" (portlocker's own chain in \
                 iptables and ip6tables) or \"nftables\" (portlocker's own nftables table)"
            ),
        };
        let chain = ChainName::new(self.chain.as_deref().unwrap_or("PORTLOCKER"))
            .context("firewall.chain")?;
        ensure!(
            !(backend == BackendKind::Nftables && chain.is_input()),
            "firewall.chain = \"INPUT\" is for the iptables backend: with backend = \"nftables\" \
             portlocker keeps its rules in a table of its own (inet portlocker); remove the chain line"
        );
        Ok(FirewallConfig {
            backend,
            nft: absolute("firewall.nft", self.nft, "/usr/sbin/nft")?,
            iptables_restore,
            ip6tables_restore,
            iptables,
            ip6tables,
            ipv6: self.ipv6.unwrap_or(true),
            chain,
            keep_established: self.keep_established.unwrap_or(true),
            max_open: (self.max_open)
                .map(|text| duration("firewall.max_open", &text))
                .transpose()?,
            command_timeout: Duration::from_secs(command_timeout_secs),
            default: match self.default.as_deref() {
                None | Some("keep") => Unnamed::Keep,
                Some("close") => Unnamed::Close,
                Some(other) => bail!(
                    "firewall.default = {other:?}: must be \"keep\" (a service the control file does not name keeps its state) \
                     or \"close\" (it is closed)"
                ),
            },
        })
    }
}

impl RawNotify {
    fn validate(self) -> Result<NotifyConfig> {
        let command = match self.command {
            None => None,
            Some(argv) => {
                let Some((program, args)) = argv.split_first() else {
                    bail!(
                        "notify.command is empty: give the program and its arguments, like [\"/usr/local/bin/tell-owner\"]"
                    );
                };
                let program = absolute("notify.command", Some(PathBuf::from(program)), "")
                    .context("it is run without a shell, with no PATH to search")?;
                Some(NotifyCommand {
                    program,
                    args: args.to_vec(),
                })
            }
        };
        let url = self
            .url
            .map(|text| notify_url(&text).context("notify.url"))
            .transpose()?;
        let repeat_after = self
            .repeat_after
            .map(|text| duration("notify.repeat_after", &text))
            .transpose()?
            .unwrap_or(TimeDelta::hours(1));
        Ok(NotifyConfig {
            command,
            url,
            repeat_after,
        })
    }
}

/// An https:// URL with a host; anything else is refused without repeating
/// it (a ntfy topic is as secret as the source).
fn notify_url(text: &str) -> Result<url::Url> {
    if text
        .get(..7)
        .is_some_and(|head| head.eq_ignore_ascii_case("http://"))
    {
        bail!(
            "plain http:// is refused: anyone on the way could read and forge the notices; use https://"
        );
    }
    match Source::parse(text)? {
        Source::Https(url) => Ok(url),
        _ => bail!("must be an https:// URL, like https://ntfy.sh/TOPIC"),
    }
}

impl RawWatch {
    fn validate(self) -> Result<WatchConfig> {
        let every = match self.every {
            None => WatchConfig::DEFAULT_EVERY,
            Some(text) => watch_every(&text).context("watch.every")?,
        };
        let poke = self
            .poke
            .map(|text| notify_url(&text).context("watch.poke"))
            .transpose()?;
        let poke_token_file = self
            .poke_token_file
            .map(|path| absolute("watch.poke_token_file", Some(path), ""))
            .transpose()?;
        ensure!(
            poke.is_some() || poke_token_file.is_none(),
            "watch.poke_token_file is set but watch.poke is not: the token is for the poke's topic"
        );
        Ok(WatchConfig {
            every,
            poke,
            poke_token_file,
        })
    }
}

/// `every` of `[watch]` (or `--every`): `30s`, or a duration like `2m`,
/// from one second to an hour.
pub fn watch_every(text: &str) -> Result<Duration> {
    let every = match text.strip_suffix('s') {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            Duration::from_secs(digits.parse().unwrap_or(u64::MAX))
        }
        _ => crate::sys::clock::parse_duration(text)
            .map_err(|_| anyhow!("`{text}` is not a period like 10s, 2m or 1h"))?
            .to_std()
            .unwrap_or(Duration::MAX),
    };
    ensure!(
        WatchConfig::EVERY_RANGE.contains(&every),
        "`{text}` must be from 1s to 1h"
    );
    Ok(every)
}

impl RawSignature {
    fn validate(self) -> Result<SignatureConfig> {
        minisign_verify::PublicKey::from_base64(&self.public_key).map_err(|error| {
            anyhow!(
                "signature.public_key = {:?} is not a minisign public key ({error}); copy the second line of minisign.pub",
                self.public_key
            )
        })?;
        Ok(SignatureConfig {
            public_key: self.public_key,
            url: self
                .url
                .map(|url| Source::parse(&url).context("signature.url"))
                .transpose()?,
            max_age: self
                .max_age
                .map(|text| duration("signature.max_age", &text))
                .transpose()?,
        })
    }
}

fn duration(key: &str, text: &str) -> Result<TimeDelta> {
    crate::sys::clock::parse_duration(text).map_err(|reason| anyhow!("{key}: {reason}"))
}

/// The kernel's host name, as `hostname` prints it.
fn system_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// The restore tool beside an iptables binary, as the iptables package
/// installs them: `iptables` → `iptables-restore`, `iptables-legacy` →
/// `iptables-legacy-restore`.
pub fn restore_beside(binary: &Path) -> PathBuf {
    let name = binary.file_name().unwrap_or_default().to_string_lossy();
    binary.with_file_name(format!("{name}-restore"))
}

/// The xtables tools act by the file name they are run under: a path for
/// `family` named for the other family would manage that one in its place
/// (hostile tester 8: ip6tables = iptables-legacy wrote the IPv6 rules into
/// IPv4). A name that says neither (a wrapper, a fake) is left alone.
fn not_of_the_other_family(key: &str, path: &Path, family: Family) -> Result<()> {
    let (own, other, other_family) = match family {
        Family::Ipv4 => ("iptables", "ip6tables", Family::Ipv6),
        Family::Ipv6 => ("ip6tables", "iptables", Family::Ipv4),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    if let Some(rest) = name.strip_prefix(other) {
        bail!(
            "{key} = {:?} is the {other_family} tool ({other} tools act by their file name): \
             {family} would go unmanaged while its rules went into {other_family}; \
             set it to {:?}",
            path.display().to_string(),
            path.with_file_name(format!("{own}{rest}"))
                .display()
                .to_string()
        );
    }
    Ok(())
}

/// Cron runs with a bare environment: every path must be absolute.
fn absolute(key: &str, path: Option<PathBuf>, default: &str) -> Result<PathBuf> {
    let path = path.unwrap_or_else(|| PathBuf::from(default));
    ensure!(
        path.is_absolute(),
        "{key} = {:?}: must be an absolute path",
        path.display().to_string()
    );
    Ok(path)
}

/// The service names in the order the file gives them.
fn service_order(table: &BTreeMap<toml::Spanned<String>, toml::Value>) -> Result<Vec<ServiceName>> {
    let mut keys: Vec<&toml::Spanned<String>> = table.keys().collect();
    keys.sort_by_key(|key| key.span().start);
    keys.into_iter()
        .map(|key| {
            ServiceName::new(key.get_ref()).with_context(|| format!("services.{}", key.get_ref()))
        })
        .collect()
}

fn services(
    table: BTreeMap<toml::Spanned<String>, toml::Value>,
) -> Result<BTreeMap<ServiceName, Vec<PortSpec>>> {
    let mut services = BTreeMap::new();
    for (key, value) in table {
        let key = key.into_inner();
        let name = ServiceName::new(&key).with_context(|| format!("services.{key}"))?;
        let items = match value {
            toml::Value::Array(items) => items,
            single => vec![single],
        };
        let mut specs: Vec<(String, PortSpec)> = Vec::with_capacity(items.len());
        for item in items {
            let written = item.to_string();
            let spec = port_spec(item).with_context(|| format!("services.{key}"))?;
            // The same port twice asks for the same rule twice: the planner
            // would add two copies, then delete both as duplicates the next
            // run, so the port would be closed only one run in two.
            // Overlapping ranges are only redundant, but as sure a slip.
            if let Some((earlier, other)) = specs.iter().find(|(_, other)| other.overlaps(&spec)) {
                let shared = PortSpec {
                    protocol: spec.protocol,
                    first: spec.first.max(other.first),
                    last: spec.last.min(other.last),
                };
                bail!(
                    "services.{key}: {earlier} and {written} both give {shared}; list each port once"
                );
            }
            specs.push((written, spec));
        }
        ensure!(
            !specs.is_empty(),
            "services.{key}: the list of ports is empty"
        );
        services.insert(name, specs.into_iter().map(|(_, spec)| spec).collect());
    }
    ensure!(
        !services.is_empty(),
        "[services] is empty: a control file could name nothing; add one, like ssh = 22"
    );
    Ok(services)
}

fn port_spec(value: toml::Value) -> Result<PortSpec> {
    match value {
        toml::Value::Integer(n) => u16::try_from(n)
            .ok()
            .filter(|&p| p != 0)
            .map(|port| PortSpec {
                protocol: Protocol::Tcp,
                first: port,
                last: port,
            })
            .ok_or_else(|| anyhow!("{n} is not a port number from 1 to 65535")),
        toml::Value::String(text) => {
            PortSpec::parse(&text).with_context(|| format!("bad port spec {text:?}"))
        }
        other => bail!(
            "{other} is not a port spec (a number, \"PORT[/tcp|udp]\", \"LO-HI[/tcp|udp]\" or a list of these)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "source = \"https://example.org/x\"\n[services]\nssh = 22\n";

    fn error_of(text: &str) -> String {
        format!("{:#}", Config::parse(text).unwrap_err())
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = Config::parse(MINIMAL).unwrap();
        assert_eq!(config.log_file, Path::new("/var/log/portlocker.log"));
        assert_eq!(config.state_dir, Path::new("/var/lib/portlocker"));
        assert_eq!(config.status_file, None);
        assert_eq!(config.fetch.timeout, Duration::from_secs(20));
        assert_eq!(config.fetch.max_bytes, 65536);
        assert_eq!(config.firewall.iptables, Path::new("/sbin/iptables"));
        assert_eq!(config.firewall.ip6tables, Path::new("/sbin/ip6tables"));
        assert!(config.firewall.ipv6 && config.firewall.keep_established);
        assert_eq!(config.firewall.chain.as_str(), "PORTLOCKER");
        assert_eq!(config.firewall.command_timeout, Duration::from_secs(30));
        assert_eq!(config.firewall.default, Unnamed::Keep);
        assert_eq!(config.families(), [Family::Ipv4, Family::Ipv6]);
        assert_eq!(config.firewall.backend, BackendKind::Iptables);
        assert_eq!(config.firewall.nft, Path::new("/usr/sbin/nft"));
        let nft = Config::parse(&MINIMAL.replace(
            "[services]",
            "[firewall]\nbackend = \"nftables\"\nnft = \"/sbin/nft\"\n[services]",
        ))
        .unwrap();
        assert_eq!(nft.firewall.backend, BackendKind::Nftables);
        assert_eq!(nft.firewall.nft, Path::new("/sbin/nft"));
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../config.example.toml");
        let config = Config::parse(text).unwrap();
        let names: Vec<&str> = config.services.keys().map(|s| s.as_str()).collect();
        assert!(names.contains(&"ssh"), "{names:?}");
        assert_eq!(config.firewall.default, Unnamed::Keep);
    }

    #[test]
    fn port_specs_in_every_form() {
        let text = "source = \"-\"\n[services]\nssh = 22\nwg = \"51820/udp\"\n\
                    web = [80, \"443/tcp\"]\nmosh = \"60000-61000/udp\"\n";
        let config = Config::parse(text).unwrap();
        let shown = |name: &str| {
            config.services[&ServiceName::new(name).unwrap()]
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(shown("ssh"), "22/tcp");
        assert_eq!(shown("wg"), "51820/udp");
        assert_eq!(shown("web"), "80/tcp 443/tcp");
        assert_eq!(shown("mosh"), "60000-61000/udp");
    }

    #[test]
    fn errors_name_the_key_and_the_value() {
        let cases = [
            (
                "source = \"-\"\n[services]\nssh = 0\n",
                &["services.ssh", "0"][..],
            ),
            (
                "source = \"-\"\n[services]\nssh = 70000\n",
                &["services.ssh", "70000"],
            ),
            (
                "source = \"-\"\n[services]\nweb = [80, \"443/sctp\"]\n",
                &["services.web", "443/sctp", "sctp"],
            ),
            (
                "source = \"-\"\n[services]\nm = \"61000-60000/udp\"\n",
                &["services.m", "backwards"],
            ),
            (
                "source = \"-\"\n[services]\nm = \"+22\"\n",
                &["services.m", "+22"],
            ),
            (
                "source = \"-\"\n[services]\nSSH = 22\n",
                &["services.SSH", "lowercase"],
            ),
            (
                "source = \"-\"\n[services]\nx = []\n",
                &["services.x", "empty"],
            ),
            (
                "source = \"-\"\n[services]\nx = 1.5\n",
                &["services.x", "1.5"],
            ),
            (
                "source = \"-\"\nlog_fiel = \"/x\"\n[services]\nssh = 22\n",
                &["log_fiel"],
            ),
            (
                "source = \"-\"\n[firewall]\nipv4 = true\n[services]\nssh = 22\n",
                &["ipv4"],
            ),
            (
                "source = \"-\"\n[firewall]\niptables = \"iptables\"\n[services]\nssh = 22\n",
                &["firewall.iptables", "absolute"],
            ),
            (
                "source = \"-\"\n[firewall]\nbackend = \"pf\"\n[services]\nssh = 22\n",
                &["firewall.backend", "pf", "nftables"],
            ),
            (
                "source = \"-\"\n[firewall]\nnft = \"nft\"\n[services]\nssh = 22\n",
                &["firewall.nft", "absolute"],
            ),
            (
                "source = \"-\"\n[firewall]\nbackend = \"nftables\"\nchain = \"INPUT\"\n[services]\nssh = 22\n",
                &["firewall.chain", "INPUT", "inet portlocker"],
            ),
            (
                "source = \"-\"\n[firewall]\nchain = \"OUTPUT\"\n[services]\nssh = 22\n",
                &["firewall.chain", "OUTPUT"],
            ),
            (
                "source = \"-\"\n[firewall]\nchain = \"a b\"\n[services]\nssh = 22\n",
                &["firewall.chain", "a b"],
            ),
            (
                "source = \"-\"\n[firewall]\nchain = \"ACCEPT\"\n[services]\nssh = 22\n",
                &["firewall.chain", "ACCEPT", "open every port"],
            ),
            (
                "source = \"-\"\n[firewall]\ndefault = \"open\"\n[services]\nssh = 22\n",
                &["firewall.default", "open"],
            ),
            (
                "source = \"-\"\n[services]\nssh = [22, \"22/tcp\"]\n",
                &["services.ssh", "22", "\"22/tcp\""],
            ),
            (
                "source = \"-\"\n[fetch]\ntimeout_secs = 0\n[services]\nssh = 22\n",
                &["fetch.timeout_secs", "0"],
            ),
            (
                "source = \"-\"\n[firewall]\ncommand_timeout_secs = 601\n[services]\nssh = 22\n",
                &["firewall.command_timeout_secs", "601", "1 to 600"],
            ),
            (
                "source = \"http://example.org/x\"\n[services]\nssh = 22\n",
                &["source", "http://"],
            ),
            ("[services]\nssh = 22\n", &["source"]),
            ("source = \"-\"\n", &["services"]),
            (
                "source = \"-\"\n[services]\n",
                &["[services] is empty", "ssh = 22"],
            ),
        ];
        for (text, needles) in cases {
            let message = error_of(text);
            for needle in needles {
                assert!(message.contains(needle), "{message:?} lacks {needle:?}");
            }
        }
    }

    #[test]
    fn a_tool_named_for_the_other_family_is_refused_naming_the_right_one() {
        let cases = [
            (
                "ip6tables = \"/usr/sbin/iptables-legacy\"",
                "firewall.ip6tables = \"/usr/sbin/iptables-legacy\" is the IPv4 tool",
                "set it to \"/usr/sbin/ip6tables-legacy\"",
            ),
            (
                "ip6tables = \"/sbin/iptables\"\niptables = \"/sbin/iptables-nft\"",
                "firewall.ip6tables = \"/sbin/iptables\" is the IPv4 tool",
                "set it to \"/sbin/ip6tables\"",
            ),
            (
                "iptables = \"/usr/sbin/ip6tables-nft\"",
                "firewall.iptables = \"/usr/sbin/ip6tables-nft\" is the IPv6 tool",
                "set it to \"/usr/sbin/iptables-nft\"",
            ),
            (
                "ip6tables_restore = \"/sbin/iptables-restore\"",
                "firewall.ip6tables_restore = \"/sbin/iptables-restore\" is the IPv4 tool",
                "set it to \"/sbin/ip6tables-restore\"",
            ),
            (
                "iptables_restore = \"/sbin/ip6tables-legacy-restore\"",
                "firewall.iptables_restore = \"/sbin/ip6tables-legacy-restore\" is the IPv6",
                "set it to \"/sbin/iptables-legacy-restore\"",
            ),
        ];
        for (firewall, refused, instead) in cases {
            let message = error_of(&with_firewall(firewall));
            assert!(message.contains(refused), "{message}");
            assert!(message.contains(instead), "{message}");
        }
        // A name that says neither family is the owner's to choose.
        for firewall in [
            "iptables = \"/opt/fw/v4\"\nip6tables = \"/opt/fw/v6\"",
            "ip6tables = \"/usr/sbin/ip6tables-legacy\"\niptables = \"/usr/sbin/iptables-legacy\"",
            "ip6tables = \"/tmp/t/hung-ip6tables\"",
        ] {
            Config::parse(&with_firewall(firewall)).unwrap();
        }
    }

    /// A config with `firewall` lines in its [firewall] section.
    fn with_firewall(firewall: &str) -> String {
        format!("source = \"-\"\n[firewall]\n{firewall}\n[services]\nssh = 22\n")
    }

    #[test]
    fn each_chain_keeps_a_mirror_of_its_own_within_iptables_length() {
        let mirror = |name: &str| ChainName::new(name).unwrap().mirror();
        assert_eq!(mirror("PORTLOCKER"), "PORTLOCKER-FWD");
        assert_eq!(mirror("INPUT"), "PORTLOCKER-FWD");
        assert_eq!(
            mirror("P-2345678901234567890123"),
            "P-2345678901234567890123-FWD"
        );
        // Two long names that begin alike: two mirrors, neither of them one of the names.
        let (a, b) = (
            mirror("P-23456789012345678901234567"),
            mirror("P-23456789012345678901234568"),
        );
        assert!(a.len() <= 28 && b.len() <= 28, "{a} {b}");
        assert_ne!(a, b);
        assert!(
            a.starts_with("P-23456789012345678-") && a.ends_with("-FWD"),
            "{a}"
        );
    }

    #[test]
    fn chains_that_can_never_be_right_are_refused_saying_why() {
        let cases = [
            ("ACCEPT", "`-j ACCEPT` first in INPUT would open every port"),
            ("accept", "the iptables target ACCEPT"),
            ("DROP", "cut every connection, your SSH session too"),
            ("Reject", "cut every connection"),
            ("RETURN", "skip every later rule of INPUT"),
            ("NFQUEUE", "`-j NFQUEUE`"),
            ("LOG", "`-j LOG`"),
            ("ct", "the iptables target CT"),
            ("MASQUERADE", "target MASQUERADE"),
            ("TPROXY", "target TPROXY"),
            ("OUTPUT", "the built-in chain OUTPUT"),
            ("forward", "the built-in chain FORWARD"),
            ("PREROUTING", "built-in"),
            ("POSTROUTING", "built-in"),
            ("input", "case-sensitive"),
            ("DOCKER", "belongs to Docker"),
            ("DOCKER-USER", "DOCKER-USER ends in `-j RETURN`"),
            ("DOCKER-ISOLATION-STAGE-1", "belongs to Docker"),
            ("docker-user", "belongs to Docker"),
            ("KUBE-SERVICES", "belongs to Kubernetes"),
            ("f2b-sshd", "belongs to fail2ban"),
            ("ufw-user-input", "belongs to ufw"),
            ("ufw6-user-input", "belongs to ufw"),
            ("CROWDSEC_CHAIN", "belongs to CrowdSec"),
            ("LIBVIRT_INP", "belongs to libvirt"),
            ("CILIUM_INPUT", "belongs to Cilium"),
            ("ts-input", "belongs to Tailscale"),
            ("INPUT_direct", "belongs to firewalld"),
            ("nixos-fw", "belongs to the NixOS firewall"),
            ("nixos-fw-accept", "belongs to the NixOS firewall"),
            ("IN_public_allow", "belongs to firewalld (a zone's chains)"),
            ("IN_internal", "its chains start with IN_"),
            ("FWD_public_allow", "belongs to firewalld"),
            ("FWDI_public", "belongs to firewalld"),
            ("OUT_public_deny", "belongs to firewalld"),
            ("PRE_public", "belongs to firewalld"),
            ("POST_public_allow", "belongs to firewalld"),
            ("FORWARD_direct", "belongs to firewalld"),
            ("in_eth0", "FireHOL"),
            ("KUBE-FIREWALL", "belongs to Kubernetes"),
            ("cali-INPUT", "belongs to Calico"),
            ("FLANNEL-FWD", "belongs to flannel"),
            ("WEAVE-NPC", "belongs to Weave Net"),
            ("PVEFW-INPUT", "belongs to Proxmox VE"),
            ("ISTIO_INBOUND", "belongs to Istio"),
            ("neutron-filter-top", "belongs to OpenStack Neutron"),
            ("LOCALINPUT", "belongs to csf"),
            ("ALLOWIN", "belongs to csf"),
            // The chain beside it where Docker forwards (hostile tester 11).
            ("ABCDEFGHIJKLMNOPQRSTUVWX-FWD", "ends in -FWD"),
            ("mine-fwd", "that chain could be this one"),
            ("cali", "would be \"cali-FWD\", and that belongs to Calico"),
            ("KUBE", "belongs to Kubernetes"),
            ("f2b", "would be \"f2b-FWD\", and that belongs to fail2ban"),
        ];
        for (chain, needle) in cases {
            let message = error_of(&with_firewall(&format!("chain = \"{chain}\"")));
            for needle in [
                "firewall.chain",
                &format!("{chain:?}"),
                needle,
                "use the default PORTLOCKER or INPUT",
            ] {
                if chain == "input" && needle.starts_with("use the default") {
                    continue;
                }
                assert!(
                    message.contains(needle),
                    "{chain}: {message:?} lacks {needle:?}"
                );
            }
        }
        for chain in [
            "PORTLOCKER",
            "INPUT",
            "portlocker",
            "PL-SSH",
            "MY_INPUT",
            "ACCEPTED",
            "DROPS",
        ] {
            let config = Config::parse(&with_firewall(&format!("chain = \"{chain}\"")));
            assert!(config.is_ok(), "{chain}: {config:?}");
        }
    }

    #[test]
    fn a_port_twice_within_a_service_is_refused_naming_both() {
        let cases = [
            (
                "ssh = [22, \"22/tcp\"]",
                "services.ssh: 22 and \"22/tcp\" both give 22/tcp",
            ),
            ("ssh = [22, 22]", "services.ssh: 22 and 22 both give 22/tcp"),
            (
                "m = [\"60000-61000/udp\", \"60500/udp\"]",
                "services.m: \"60000-61000/udp\" and \"60500/udp\" both give 60500/udp",
            ),
            (
                "m = [\"60000-61000/udp\", 1, \"60900-62000/udp\"]",
                "\"60000-61000/udp\" and \"60900-62000/udp\" both give 60900-61000/udp",
            ),
            (
                "web = [\"80-90\", \"70-80\"]",
                "\"80-90\" and \"70-80\" both give 80/tcp",
            ),
        ];
        for (service, needle) in cases {
            let message = error_of(&format!("source = \"-\"\n[services]\n{service}\n"));
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
            assert!(message.contains("list each port once"), "{message:?}");
        }
        let fine = "source = \"-\"\n[services]\ndns = [\"53/udp\", \"53/tcp\"]\n\
                    m = [\"60000-60999/udp\", \"61000/udp\"]\nweb = [80, 443]\nhttpd = 80\n";
        Config::parse(fine).unwrap();
    }

    #[test]
    fn ports_shared_between_services_are_listed() {
        let config = Config::parse(
            "source = \"-\"\n[services]\nweb = [80, 443]\nhttpd = 80\nssh = 22\n\
             dns = [\"53/udp\", \"53/tcp\"]\nresolver = \"53/udp\"\n\
             mosh = \"60000-61000/udp\"\nother = \"60500-62000/udp\"\n\
             a = \"1-10\"\nb = \"5-15\"\nc = [\"8-20\", 443]\n",
        )
        .unwrap();
        let shared: Vec<(String, Vec<String>)> = config
            .shared_ports()
            .into_iter()
            .map(|(ports, names)| (ports, names.iter().map(|n| n.to_string()).collect()))
            .collect();
        let expected: Vec<(String, Vec<String>)> = [
            ("5-7/tcp", &["a", "b"][..]),
            ("8-10/tcp", &["a", "b", "c"]),
            ("11-15/tcp", &["b", "c"]),
            ("80/tcp", &["httpd", "web"]),
            ("443/tcp", &["c", "web"]),
            ("53/udp", &["dns", "resolver"]),
            ("60500-61000/udp", &["mosh", "other"]),
        ]
        .into_iter()
        .map(|(ports, names)| {
            (
                ports.to_owned(),
                names.iter().map(|n| n.to_string()).collect(),
            )
        })
        .collect();
        assert_eq!(shared, expected);
        assert_eq!(Config::parse(MINIMAL).unwrap().shared_ports(), []);
        let edge =
            Config::parse("source = \"-\"\n[services]\na = \"65000-65535\"\nb = 65535\n").unwrap();
        assert_eq!(edge.shared_ports().len(), 1);
        assert_eq!(edge.shared_ports()[0].0, "65535/tcp");
    }

    #[test]
    fn default_for_unnamed_services_is_keep_or_close() {
        assert_eq!(
            Config::parse(MINIMAL).unwrap().firewall.default,
            Unnamed::Keep
        );
        for (value, expected) in [("keep", Unnamed::Keep), ("close", Unnamed::Close)] {
            let config = Config::parse(&with_firewall(&format!("default = \"{value}\""))).unwrap();
            assert_eq!(config.firewall.default, expected);
            assert_eq!(expected.to_string(), value);
        }
        for (value, needles) in [
            (
                "\"open\"",
                &["firewall.default", "\"open\"", "\"keep\"", "\"close\""][..],
            ),
            ("\"Close\"", &["firewall.default", "\"Close\""]),
            ("\"\"", &["firewall.default", "\"keep\""]),
            ("true", &["default", "string"]),
        ] {
            let message = error_of(&with_firewall(&format!("default = {value}")));
            for needle in needles {
                assert!(
                    message.contains(needle),
                    "{value}: {message:?} lacks {needle:?}"
                );
            }
        }
    }

    /// The source is a secret: a refused one never reaches a message with
    /// its path or query, whichever check refuses it.
    #[test]
    fn a_refused_source_never_shows_its_token() {
        let cases = [
            (
                "source = \"www.dropbox.com/s/TOKEN/file.txt?dl=1\"\n",
                "did you mean https://www.dropbox.com/…?",
            ),
            (
                "source = \"s/TOKEN/control.txt\"\n",
                "source: is neither a URL nor an absolute path",
            ),
            (
                "source = \"http://www.dropbox.com/s/TOKEN/f?dl=1\"\n",
                "source: plain http://",
            ),
            (
                "source = \"https://www.dropbox.com:0x/s/TOKEN\"\n",
                "source: not a valid URL",
            ),
            (
                "source = \"https://www.dropbox.com/s/TOKEN/f?dl=1\"\n[signature]\n\
                 public_key = \"RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\"\n\
                 url = \"www.dropbox.com/s/TOKEN/f.minisig?dl=1\"\n",
                "signature.url: has no https:// in front",
            ),
        ];
        for (head, needle) in cases {
            let message = error_of(&format!("{head}[services]\nssh = 22\n"));
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
            assert!(!message.contains("TOKEN"), "{message:?}");
        }
    }

    #[test]
    fn a_toml_error_on_the_source_line_shows_only_its_place() {
        for (line, needle) in [
            (
                "source = https://www.dropbox.com/s/TOKEN/file.txt?dl=1",
                "line 1, column 53: unexpected key or value",
            ),
            (
                "source = www.dropbox.com/s/TOKEN/file.txt?dl=1",
                "a URL goes in double quotes",
            ),
            (
                "source = 'https://www.dropbox.com/s/TOKEN/file.txt?dl=1",
                "line 1",
            ),
            (
                "source = [\"https://www.dropbox.com/s/TOKEN\"]",
                "expected a string",
            ),
            (
                "sourc = \"https://www.dropbox.com/s/TOKEN\"",
                "unknown field `sourc`",
            ),
            (
                "source = \"-\"\nsource = \"https://www.dropbox.com/s/TOKEN\"",
                "line 2, column 1: duplicate key",
            ),
        ] {
            let message = error_of(&format!("{line}\n[services]\nssh = 22\n"));
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
            assert!(message.contains("not shown"), "{message:?}");
            assert!(!message.contains("TOKEN"), "{message:?}");
        }
        // Elsewhere toml's own message, which quotes the line, stays.
        let message = error_of(&with_firewall("ipv6 = \"yes\""));
        assert!(message.contains("ipv6 = \"yes\""), "{message:?}");
    }

    #[test]
    fn services_keep_the_order_of_the_file() {
        let config = Config::parse(
            "source = \"-\"\n[services]\nssh = 22\nweb = 80\nbackup = 873\nadmin = 8443\n",
        )
        .unwrap();
        let order: Vec<&str> = config
            .services_in_order()
            .into_iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(order, ["ssh", "web", "backup", "admin"]);
        // Inline and dotted tables keep it too.
        for text in [
            "source = \"-\"\nservices = { web = 80, ssh = 22 }\n",
            "source = \"-\"\nservices.web = 80\nservices.ssh = 22\n",
        ] {
            let config = Config::parse(text).unwrap();
            let order: Vec<&str> = config
                .services_in_order()
                .into_iter()
                .map(|(name, _)| name.as_str())
                .collect();
            assert_eq!(order, ["web", "ssh"], "{text}");
        }
        // A service added in code, not in the file, comes after, by name.
        let mut config =
            Config::parse("source = \"-\"\nservices = { web = 80, ssh = 22 }\n").unwrap();
        config
            .services
            .insert(ServiceName::new("aaa").unwrap(), vec![]);
        let order: Vec<&str> = config
            .services_in_order()
            .into_iter()
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(order, ["web", "ssh", "aaa"]);
    }

    #[test]
    fn notify_and_status_settings() {
        let config = Config::parse(MINIMAL).unwrap();
        assert_eq!(config.notify.command, None);
        assert_eq!(config.notify.url, None);
        assert_eq!(config.notify.repeat_after, TimeDelta::hours(1));
        assert_eq!(config.every, TimeDelta::minutes(5));
        let config = Config::parse(
            "source = \"-\"\n[notify]\ncommand = [\"/usr/local/bin/tell-owner\", \"--to\", \"me\"]\n\
             url = \"https://ntfy.sh/SECRET-topic\"\nrepeat_after = \"3h\"\n\
             [status]\nevery = \"10m\"\n[services]\nssh = 22\n",
        )
        .unwrap();
        assert_eq!(
            config.notify.command,
            Some(NotifyCommand {
                program: "/usr/local/bin/tell-owner".into(),
                args: vec!["--to".into(), "me".into()],
            })
        );
        assert_eq!(
            config.notify.url.unwrap().as_str(),
            "https://ntfy.sh/SECRET-topic"
        );
        assert_eq!(config.notify.repeat_after, TimeDelta::hours(3));
        assert_eq!(config.every, TimeDelta::minutes(10));
        let notify = |lines: &str| {
            error_of(&format!(
                "source = \"-\"\n[notify]\n{lines}\n[services]\nssh = 22\n"
            ))
        };
        for (lines, needles) in [
            ("command = []", &["notify.command is empty"][..]),
            (
                "command = [\"tell-owner\"]",
                &["notify.command", "absolute", "without a shell"],
            ),
            (
                "command = \"/bin/tell-owner arg\"",
                &["command", "sequence"],
            ),
            (
                "url = \"http://ntfy.sh/SECRET\"",
                &["notify.url", "plain http:// is refused"],
            ),
            (
                "url = \"/var/SECRET\"",
                &["notify.url", "must be an https:// URL"],
            ),
            (
                "url = \"ntfy.sh/SECRET\"",
                &["notify.url", "did you mean https://ntfy.sh/…?"],
            ),
            ("repeat_after = \"1 hour\"", &["notify.repeat_after", "90m"]),
            ("colour = \"red\"", &["colour"]),
        ] {
            let message = notify(lines);
            for needle in needles {
                assert!(
                    message.contains(needle),
                    "{lines}: {message:?} lacks {needle:?}"
                );
            }
            assert!(!message.contains("SECRET"), "{message:?}");
        }
        let message = error_of("source = \"-\"\n[status]\nevery = \"5\"\n[services]\nssh = 22\n");
        assert!(message.contains("status.every"), "{message}");
    }

    #[test]
    fn watch_settings_have_defaults_bounds_and_keep_the_poke_secret() {
        let config = Config::parse(MINIMAL).unwrap();
        assert_eq!(config.watch, WatchConfig::default());
        assert_eq!(config.watch.every, Duration::from_secs(10));
        let with =
            |watch: &str| MINIMAL.replace("[services]", &format!("[watch]\n{watch}\n[services]"));
        for (text, seconds) in [("1s", 1), ("90s", 90), ("2m", 120), ("1h", 3600)] {
            let config = Config::parse(&with(&format!("every = {text:?}"))).unwrap();
            assert_eq!(config.watch.every, Duration::from_secs(seconds), "{text}");
        }
        for (text, says) in [
            ("0s", "must be from 1s to 1h"),
            ("2h", "must be from 1s to 1h"),
            ("99999999999999999999s", "must be from 1s to 1h"),
            ("10", "not a period like 10s"),
            ("s", "not a period like 10s"),
            ("-5s", "not a period like 10s"),
        ] {
            let message = error_of(&with(&format!("every = {text:?}")));
            assert!(
                message.contains("watch.every") && message.contains(says),
                "{text}: {message}"
            );
        }
        let poked = Config::parse(&with(
            "poke = \"https://ntfy.example/SECRET-TOPIC\"\npoke_token_file = \"/etc/portlocker/poke.token\"",
        ))
        .unwrap();
        assert_eq!(
            poked.watch.poke.unwrap().as_str(),
            "https://ntfy.example/SECRET-TOPIC"
        );
        assert_eq!(
            poked.watch.poke_token_file.unwrap(),
            Path::new("/etc/portlocker/poke.token")
        );
        let message = error_of(&with("poke = \"http://ntfy.example/SECRET-TOPIC\""));
        assert!(
            message.contains("watch.poke") && !message.contains("SECRET"),
            "{message}"
        );
        let message = error_of(&with("poke_token_file = \"/etc/portlocker/poke.token\""));
        assert!(message.contains("watch.poke is not"), "{message}");
        let message = error_of(&with(
            "poke = \"https://ntfy.example/t\"\npoke_token_file = \"poke.token\"",
        ));
        assert!(message.contains("absolute"), "{message}");
    }

    #[test]
    fn service_names() {
        for good in ["ssh", "a", "web-2", "my_vpn", &"x".repeat(32)] {
            assert!(ServiceName::new(good).is_ok(), "{good}");
        }
        for bad in ["", "1ssh", "-x", "Ssh", "s sh", "sš", &"x".repeat(33)] {
            assert!(ServiceName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn input_chain_is_allowed_as_the_original_behaviour() {
        assert!(ChainName::new("INPUT").unwrap().is_input());
        assert!(!ChainName::new("PORTLOCKER").unwrap().is_input());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn near_valid_line() -> impl Strategy<Value = String> {
            let key = prop::sample::select(vec![
                "source",
                "log_file",
                "state_dir",
                "timeout_secs",
                "max_bytes",
                "ipv6",
                "chain",
                "ssh",
                "web",
                "[services]",
                "[fetch]",
                "[firewall]",
            ]);
            let value = prop_oneof![
                Just("22".to_owned()),
                Just("\"443/udp\"".to_owned()),
                Just("[80, \"1-2/tcp\"]".to_owned()),
                Just("true".to_owned()),
                "-?[0-9]{1,7}",
                "\"[ -~]{0,12}\"",
            ];
            prop_oneof![
                (key.clone(), value).prop_map(|(k, v)| format!("{k} = {v}")),
                key.prop_map(String::from),
                ".{0,20}",
            ]
        }

        proptest! {
            #[test]
            fn never_panics_on_any_text(text in ".{0,300}") {
                let _ = Config::parse(&text);
            }

            #[test]
            fn never_panics_on_near_valid_configs(
                lines in prop::collection::vec(near_valid_line(), 0..20),
            ) {
                let _ = Config::parse(&lines.join("\n"));
            }
        }
    }
}
