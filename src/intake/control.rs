//! The control file: `open ssh` / `close vpn` lines, with optional `from`,
//! `until`, `for` and `on` clauses, validated all or nothing.
//! Pure: never touches the network or the firewall.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, FixedOffset, Local, TimeDelta, Timelike};
use ipnet::IpNet;

use crate::config::ServiceName;
use crate::sys::clock;

/// What the owner wants for a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Open,
    Close,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Open => "open",
            Action::Close => "close",
        }
    }
}

/// When an open ends by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// At this moment.
    Until(DateTime<FixedOffset>),
    /// This long after the first run that applied the line.
    For(TimeDelta),
}

/// One valid line of the control file, meant for this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// 1-based line number, for messages.
    pub line: usize,
    pub action: Action,
    pub service: ServiceName,
    /// Open to this network only (`from`).
    pub source: Option<IpNet>,
    pub expiry: Option<Expiry>,
}

impl Directive {
    /// The line in canonical form; it also names the line in the state.
    pub fn render(&self) -> String {
        let mut line = format!("{} {}", self.action.as_str(), self.service);
        if let Some(source) = self.source {
            line.push_str(&format!(" from {source}"));
        }
        match self.expiry {
            Some(Expiry::Until(deadline)) => {
                line.push_str(&format!(" until {}", deadline.to_rfc3339()))
            }
            Some(Expiry::For(duration)) => {
                line.push_str(&format!(" for {}", clock::show_duration(duration)))
            }
            None => {}
        }
        line
    }
}

/// A control file that passed validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlFile {
    /// Per service, the lines in force: the last plain line, or the `from`
    /// lines that add up. Services it does not name keep their state.
    pub directives: BTreeMap<ServiceName, Vec<Directive>>,
    /// Things worth telling the owner that do not make the file invalid.
    pub warnings: Vec<String>,
    /// Lines meant for other hosts: checked for form, otherwise ignored.
    pub other_hosts: usize,
}

impl ControlFile {
    /// The file in its plainest form: the lines in force, one per line.
    pub fn render(&self) -> String {
        self.directives
            .values()
            .flatten()
            .map(|d| format!("{}\n", d.render()))
            .collect()
    }
}

/// What a control file is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The services of this host's config.
    pub services: &'a BTreeSet<ServiceName>,
    /// This host's name, for `on` patterns.
    pub host_name: &'a str,
    /// Whether this host manages IPv6 (`firewall.ipv6`); without it a
    /// `from` an IPv6 network can never be honoured.
    pub ipv6: bool,
}

/// Why a whole control file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    NotUtf8 { line: usize },
    Html,
    BadLines(Vec<LineError>),
}

/// One invalid line, by number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

/// How many bad lines a message lists before it summarises the rest.
const LISTED_LINE_ERRORS: usize = 10;

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NotUtf8 { line } => write!(
                f,
                "the control file is not UTF-8 text (invalid bytes on line {line})"
            ),
            // Where to get the file itself depends on the source: `intake` says.
            Rejection::Html => f.write_str("the control file is an HTML page, not plain text"),
            Rejection::BadLines(errors) => {
                // One line alone, as it is; several one per line, for a mail read on a phone.
                if let [only] = &errors[..] {
                    return write!(f, "1 invalid line: line {}: {}", only.line, only.reason);
                }
                write!(f, "{} invalid lines:", errors.len())?;
                for error in errors.iter().take(LISTED_LINE_ERRORS) {
                    write!(f, "\n  line {}: {}", error.line, error.reason)?;
                }
                if errors.len() > LISTED_LINE_ERRORS {
                    write!(f, "\n  and {} more", errors.len() - LISTED_LINE_ERRORS)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Rejection {}

/// Parses and validates a whole control file.
pub fn parse(bytes: &[u8], context: Context) -> Result<ControlFile, Rejection> {
    let text = std::str::from_utf8(bytes).map_err(|error| Rejection::NotUtf8 {
        line: 1 + bytes[..error.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if looks_like_html(text) {
        return Err(Rejection::Html);
    }

    let mut control = ControlFile::default();
    let mut errors = Vec::new();
    let mut named_again = 0;
    for (index, raw_line) in text.split('\n').enumerate() {
        let line = index + 1;
        match parse_line(line, raw_line, context) {
            Ok(Parsed::Nothing) => {}
            Ok(Parsed::OtherHost) => control.other_hosts += 1,
            Ok(Parsed::Directive(directive)) => {
                control.warnings.extend(never_seen(&directive));
                add(&mut control, directive, &mut named_again)
            }
            Err(reason) => errors.push(LineError { line, reason }),
        }
    }
    if named_again > LISTED_WARNINGS {
        control.warnings.push(format!(
            "and {} more lines name a service again; the last line for each wins",
            named_again - LISTED_WARNINGS
        ));
    }
    if errors.is_empty() {
        Ok(control)
    } else {
        Err(Rejection::BadLines(errors))
    }
}

/// Adds a line: `from` lines add up; any other line replaces what came
/// before, which is counted in `named_again` and, for the first few, told.
fn add(control: &mut ControlFile, directive: Directive, named_again: &mut usize) {
    let Some(lines) = control.directives.get_mut(&directive.service) else {
        control
            .directives
            .insert(directive.service.clone(), vec![directive]);
        return;
    };
    // The lines in force are one plain line, or `from` lines only.
    let adds_up = directive.source.is_some() && lines.first().is_some_and(|d| d.source.is_some());
    if !adds_up {
        if let Some(earlier) = lines.last() {
            *named_again += 1;
            if *named_again <= LISTED_WARNINGS {
                let line = directive.line;
                control.warnings.push(format!(
                    "line {line}: {} is also named on line {}; line {line} wins",
                    directive.service, earlier.line
                ));
            }
        }
        lines.clear();
    }
    lines.push(directive);
}

/// How many "named again" warnings a file gets before they are summarised.
const LISTED_WARNINGS: usize = 10;

/// An HTML error or preview page starts with `<` (after blank space);
/// no valid control line can.
fn looks_like_html(text: &str) -> bool {
    text.trim_start().starts_with('<')
}

enum Parsed {
    Nothing,
    OtherHost,
    Directive(Directive),
}

fn parse_line(line: usize, raw: &str, context: Context) -> Result<Parsed, String> {
    let raw = raw.strip_suffix('\r').unwrap_or(raw);
    if let Some(bad) = raw.chars().find(|&c| c.is_control() && c != '\t') {
        return Err(format!(
            "contains the control character {:?}; is this a text file?",
            bad
        ));
    }
    let content = raw.split_once('#').map_or(raw, |(before, _)| before);
    let mut words = content.split_whitespace();
    let Some(action) = words.next() else {
        return Ok(Parsed::Nothing);
    };
    let action = if action.eq_ignore_ascii_case("open") {
        Action::Open
    } else if action.eq_ignore_ascii_case("close") {
        Action::Close
    } else {
        return Err(format!(
            "unknown action {} (use open or close)",
            quoted(action)
        ));
    };
    let Some(service) = words.next() else {
        return Err(format!("{} needs a service name", action.as_str()));
    };
    let service: std::borrow::Cow<str> = if service.bytes().any(|b| !b.is_ascii_lowercase()) {
        service.to_lowercase().into()
    } else {
        service.into()
    };

    let Qualifiers {
        source,
        expiry,
        hosts,
    } = qualifiers(words, &service)?;
    if action == Action::Close && (source.is_some() || expiry.is_some()) {
        return Err("`from`, `until` and `for` go with open only".into());
    }

    let for_this_host = hosts.is_none_or(|patterns: Vec<&str>| {
        patterns
            .iter()
            .any(|pattern| glob_match(pattern, context.host_name))
    });
    if !for_this_host {
        // Its service may exist only on the hosts it is meant for.
        ServiceName::new(&service)
            .map_err(|_| format!("{} is not a service name", quoted(&service)))?;
        return Ok(Parsed::OtherHost);
    }
    if let Some(IpNet::V6(net)) = source
        && !context.ipv6
    {
        return Err(unmanaged_v6(net));
    }
    let Some(service) = context.services.get(service.as_ref()) else {
        let known: Vec<&str> = context.services.iter().map(ServiceName::as_str).collect();
        return Err(format!(
            "unknown service {} (known: {})",
            quoted(&service),
            known.join(", ")
        ));
    };
    Ok(Parsed::Directive(Directive {
        line,
        action,
        service: service.clone(),
        source,
        expiry,
    }))
}

/// What a line says after its service: `from`, `until` or `for`, and `on`.
#[derive(Default)]
struct Qualifiers<'a> {
    source: Option<IpNet>,
    expiry: Option<Expiry>,
    hosts: Option<Vec<&'a str>>,
}

/// Reads the words after `service`, each qualifier at most once.
fn qualifiers<'a>(
    mut words: impl Iterator<Item = &'a str>,
    service: &str,
) -> Result<Qualifiers<'a>, String> {
    let mut said = Qualifiers::default();
    while let Some(word) = words.next() {
        let keyword = word.to_lowercase();
        if said.hosts.is_some() {
            return Err(format!(
                "unexpected {} after `on` (it ends the line)",
                quoted(word)
            ));
        }
        let mut value = |what: &str| {
            words
                .next()
                .ok_or_else(|| format!("`{keyword}` needs {what}"))
        };
        match keyword.as_str() {
            "from" if said.source.is_some() => return Err("`from` is given twice".into()),
            "from" => {
                said.source = Some(parse_source(value("an address or network")?, service)?);
            }
            "until" | "for" if said.expiry.is_some() => {
                return Err("give one of `until` and `for`, once".into());
            }
            "until" => {
                let first = value("a time like 2026-11-25 18:00")?;
                let deadline = if clock::is_bare_date(first) {
                    let time = value("a time after the date, like 18:00")?;
                    clock::parse_deadline(&[first, time], &Local)?
                } else {
                    clock::parse_deadline(&[first], &Local)?
                };
                said.expiry = Some(Expiry::Until(to_the_second(deadline)));
            }
            "for" => {
                // A phone may capitalise the unit too.
                let duration = value("a duration like 2h")?.to_lowercase();
                said.expiry = Some(Expiry::For(clock::parse_duration(&duration)?));
            }
            "on" => said.hosts = Some(parse_hosts(value("host name patterns, like web-*")?)?),
            _ => {
                return Err(format!(
                    "unexpected {} after the service (a line is ACTION SERVICE, then optionally from, until or for, and on)",
                    quoted(word)
                ));
            }
        }
    }
    Ok(said)
}

/// Why `from NET`, an IPv6 network, cannot be honoured with IPv6 unmanaged.
fn unmanaged_v6(net: ipnet::Ipv6Net) -> String {
    // ip6tables is never run: the open could never happen, while the
    // service stays closed to everyone else, locking the owner out.
    let mapped = (net.prefix_len() == 128)
        .then(|| net.addr().to_ipv4_mapped())
        .flatten()
        .map(|v4| format!(" (an IPv4 client is seen as {v4}: write `from {v4}`)"))
        .unwrap_or_default();
    format!(
        "`from {net}` is an IPv6 network, but this host manages IPv4 only (firewall.ipv6 = false){mapped}; \
             give an IPv4 address, or set firewall.ipv6 = true"
    )
}

/// A deadline to the whole second, never later than written: the kernel
/// keeps deadlines in whole seconds, and a leap second (`23:59:60`, valid
/// RFC 3339, which iptables refuses and nft rounds up) is the second before
/// the next minute. Every backend can then write it as it is shown. An
/// offset of odd seconds (a zone's local mean time before 1900) has no
/// RFC 3339 form, so the line kept in the state could not be read back:
/// such a deadline is kept in UTC.
fn to_the_second(deadline: DateTime<FixedOffset>) -> DateTime<FixedOffset> {
    // A leap second is second 59 with a nanosecond count past a billion.
    let whole = deadline.with_nanosecond(0).unwrap_or(deadline);
    match whole.offset().local_minus_utc() % 60 {
        0 => whole,
        _ => whole.to_utc().fixed_offset(),
    }
}

/// Why the source of `directive` lets no one in, when it is an IPv4
/// address written the IPv6 way (`::ffff:203.0.113.7`, as a dual-stack
/// program logs an IPv4 client): the kernel drops IPv6 packets from such
/// an address, and the client's own packets are IPv4. Valid, and closed to
/// everyone else all the same, but worth a word.
fn never_seen(directive: &Directive) -> Option<String> {
    let Some(IpNet::V6(net)) = directive.source else {
        return None;
    };
    let v4 = net.addr().to_ipv4_mapped()?;
    let (shown, write) = match net.prefix_len() {
        128 => (v4.to_string(), format!("`from {v4}`")),
        // Every IPv4 address: `from 0.0.0.0/0` is refused for that.
        96 => (
            "0.0.0.0/0".to_owned(),
            "the line without `from` to open it to everyone".to_owned(),
        ),
        bits @ 97.. => {
            let shown = format!("{v4}/{}", bits - 96);
            (shown.clone(), format!("`from {shown}`"))
        }
        _ => return None,
    };
    Some(format!(
        "line {}: `from {net}` is an IPv4 address written the IPv6 way, which no packet comes \
         from, so it lets no one in (an IPv4 client is seen as {shown}): write {write}",
        directive.line
    ))
}

/// An address (a host) or a network in CIDR form, host bits cleared; no
/// host names, and not everyone (`/0`). An IPv4-mapped `::ffff:a.b.c.d`
/// stays IPv6, as ip6tables lists it.
fn parse_source(word: &str, service: &str) -> Result<IpNet, String> {
    let net = match word.parse::<IpAddr>() {
        Ok(address) => IpNet::from(address),
        Err(_) => {
            word.parse::<IpNet>().map_err(|_| {
                format!(
                    "{} is not an address or network (like 203.0.113.7, 198.51.100.0/24 or 2001:db8::/48; no host names)",
                    quoted(word)
                )
            })?
        }
    };
    if net.prefix_len() == 0 {
        let family = match net {
            IpNet::V4(_) => "IPv4",
            IpNet::V6(_) => "IPv6",
        };
        return Err(format!(
            "{} is every {family} address ({}); to open to everyone, use {}",
            quoted(&format!("from {word}")),
            net.trunc(),
            quoted(&format!("open {service}"))
        ));
    }
    // `203.0.113.7/2` is a typo for /32 far more often than a wish to
    // open a quarter of the internet: never widen it silently.
    if net.trunc() != net {
        return Err(format!(
            "{} has address bits past its /{}: write the network itself ({}), or the address alone",
            quoted(word),
            net.prefix_len(),
            net.trunc()
        ));
    }

    Ok(net)
}

fn parse_hosts(word: &str) -> Result<Vec<&str>, String> {
    let patterns: Vec<&str> = word.split(',').collect();
    let valid = |p: &&str| {
        !p.is_empty()
            && p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.*?[]!".contains(&c))
    };
    if !patterns.iter().all(valid) {
        return Err(format!(
            "{} is not a list of host name patterns like web-*,db1",
            quoted(word)
        ));
    }
    for pattern in &patterns {
        check_classes(pattern).map_err(|problem| {
            format!(
                "host name pattern {} {problem}, so it matches no host",
                quoted(pattern)
            )
        })?;
    }
    Ok(patterns)
}

/// Finds what would make a pattern match no host at all: a `[` never
/// closed, an empty `[]`, and `]` or `!` outside a class (host names hold
/// neither).
fn check_classes(pattern: &str) -> Result<(), &'static str> {
    let bytes = pattern.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'[' => {
                let start = if bytes.get(i + 1) == Some(&b'!') {
                    i + 2
                } else {
                    i + 1
                };
                match bytes[start..].iter().position(|&c| c == b']') {
                    None => return Err("has a `[` that is never closed"),
                    Some(0) => return Err("has an empty class `[]`"),
                    Some(width) => i = start + width + 1,
                }
            }
            b']' => return Err("has a `]` with no `[` before it"),
            b'!' => return Err("has a `!` outside `[…]` (it negates a class: `[!0-4]`)"),
            _ => i += 1,
        }
    }
    Ok(())
}

/// Shell-style matching of a host name: `*`, `?` and `[a-z]` / `[!0-9]`,
/// ignoring ASCII case (host names are ASCII). Linear in practice: one star
/// is backtracked at a time, so no pattern can make it explode.
fn glob_match(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.as_bytes(), name.as_bytes());
    let (mut p, mut n) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        if pattern.get(p) == Some(&b'*') {
            backtrack = Some((p, n));
            p += 1;
        } else if let Some(width) = match_one(&pattern[p..], name[n].to_ascii_lowercase()) {
            p += width;
            n += 1;
        } else if let Some((star, from)) = backtrack {
            // Let the last star swallow one more character.
            backtrack = Some((star, from + 1));
            p = star + 1;
            n = from + 1;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whether the pattern's first token matches lowercase `c`; its width if so.
fn match_one(pattern: &[u8], c: u8) -> Option<usize> {
    match pattern.first()? {
        b'?' => Some(1),
        b'[' => {
            let negated = pattern.get(1) == Some(&b'!');
            let start = if negated { 2 } else { 1 };
            // A `]` right after the opening bracket is a member, as in the shell.
            let close = start + 1 + pattern.get(start + 1..)?.iter().position(|&x| x == b']')?;
            let set: Vec<u8> = pattern[start..close]
                .iter()
                .map(u8::to_ascii_lowercase)
                .collect();
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            (hit != negated).then_some(close + 1)
        }
        literal => (literal.to_ascii_lowercase() == c).then_some(1),
    }
}

/// A word from the file as it may appear in a message: backquoted, escaped,
/// and cut short, so hostile input cannot flood or forge a log line.
fn quoted(word: &str) -> String {
    const LIMIT: usize = 40;
    let mut shown: String = word
        .chars()
        .take(LIMIT)
        .flat_map(char::escape_debug)
        .collect();
    if word.chars().count() > LIMIT {
        shown.push('…');
    }
    format!("`{shown}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    static SERVICES: std::sync::LazyLock<BTreeSet<ServiceName>> = std::sync::LazyLock::new(|| {
        ["ssh", "vpn", "httpd"]
            .into_iter()
            .map(|name| ServiceName::new(name).unwrap())
            .collect()
    });

    /// The context of the tests: a host called web-1.
    fn services() -> Context<'static> {
        Context {
            services: &SERVICES,
            host_name: "web-1",
            ipv6: true,
        }
    }

    /// The file as `service action` pairs, in service order.
    fn accepted(text: &str) -> Vec<(String, Action)> {
        parse(text.as_bytes(), services())
            .unwrap_or_else(|error| panic!("{text:?} rejected: {error}"))
            .directives
            .into_values()
            .flatten()
            .map(|directive| (directive.service.to_string(), directive.action))
            .collect()
    }

    fn rejected(text: &[u8]) -> Rejection {
        match parse(text, services()) {
            Ok(control) => panic!("{text:?} accepted as {control:?}"),
            Err(rejection) => rejection,
        }
    }

    fn bad_lines(text: &str) -> Vec<(usize, String)> {
        match rejected(text.as_bytes()) {
            Rejection::BadLines(errors) => errors.into_iter().map(|e| (e.line, e.reason)).collect(),
            other => panic!("{text:?}: expected bad lines, got {other:?}"),
        }
    }

    #[test]
    fn the_original_example_file() {
        use Action::*;
        assert_eq!(
            accepted("open ssh\nclose vpn\nopen  httpd\n"),
            [
                ("httpd".into(), Open),
                ("ssh".into(), Open),
                ("vpn".into(), Close)
            ]
        );
    }

    #[test]
    fn accepted_forms() {
        use Action::*;
        let ssh = |action| vec![("ssh".to_string(), action)];
        let cases: &[(&str, Vec<(String, Action)>)] = &[
            ("", vec![]),
            ("\n\n   \n\t\n", vec![]),
            ("# only a comment\n  # indented comment", vec![]),
            ("close ssh", ssh(Close)),
            ("close ssh\n", ssh(Close)),
            ("\u{feff}close ssh\n", ssh(Close)),
            ("close ssh\r\n", ssh(Close)),
            ("open ssh\r\nclose ssh\r\n", ssh(Close)),
            ("Close Ssh\n", ssh(Close)),
            ("CLOSE SSH\n", ssh(Close)),
            ("\tclose\t\tssh\t\n", ssh(Close)),
            ("   close    ssh   \n", ssh(Close)),
            ("close\u{a0}ssh\n", ssh(Close)),
            ("close ssh # back tonight\n", ssh(Close)),
            ("close ssh#no space before the comment\n", ssh(Close)),
            // A signature carried in the file is comments to the parser;
            // intake checks it, and hands the parser only what it signs.
            (
                "close ssh\n#minisig untrusted comment: x\n#minisig RUR=\n\
                 #minisig trusted comment: timestamp:1\n#minisig AA==\n",
                ssh(Close),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(&accepted(text), expected, "{text:?}");
        }
    }

    #[test]
    fn last_line_wins_with_a_warning() {
        let control = parse(b"open ssh\nclose vpn\nclose ssh\n", services()).unwrap();
        let ssh = &control.directives[&ServiceName::new("ssh").unwrap()];
        assert_eq!(ssh.len(), 1);
        assert_eq!((ssh[0].action, ssh[0].line), (Action::Close, 3));
        assert_eq!(
            control.warnings,
            ["line 3: ssh is also named on line 1; line 3 wins"]
        );
    }

    #[test]
    fn every_bad_line_is_named_with_its_number() {
        let text = "open ssh\nopen vnp\nclose\nopen ssh now\nshut vpn\n# fine\nopen httpd\n";
        let errors = bad_lines(text);
        let lines: Vec<usize> = errors.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [2, 3, 4, 5]);
        assert!(
            errors[0]
                .1
                .contains("unknown service `vnp` (known: httpd, ssh, vpn)")
        );
        assert!(errors[1].1.contains("close needs a service name"));
        assert!(errors[2].1.contains("unexpected `now`"));
        assert!(errors[3].1.contains("unknown action `shut`"));
    }

    #[test]
    fn single_bad_lines() {
        let cases = [
            ("ssh\n", "unknown action `ssh`"),
            ("open\n", "open needs a service name"),
            ("open ssh vpn\n", "unexpected `vpn`"),
            ("opn ssh\n", "unknown action `opn`"),
            ("open ssh\u{0}\n", "control character"),
            ("open ssh\u{1b}[2J\n", "control character"),
            ("open ssh\rclose ssh\n", "control character"),
            ("-open ssh\n", "unknown action"),
        ];
        for (text, needle) in cases {
            let errors = bad_lines(text);
            assert_eq!(errors.len(), 1, "{text:?}: {errors:?}");
            assert_eq!(errors[0].0, 1);
            assert!(errors[0].1.contains(needle), "{text:?}: {errors:?}");
        }
    }

    #[test]
    fn html_pages_are_refused_whole() {
        for page in [
            "<!DOCTYPE html><html><body>open ssh</body></html>",
            "\n  <html>",
            "\u{feff}<!doctype html>",
            "<?xml version=\"1.0\"?>",
        ] {
            assert_eq!(rejected(page.as_bytes()), Rejection::Html, "{page:?}");
        }
        assert_eq!(
            Rejection::Html.to_string(),
            "the control file is an HTML page, not plain text"
        );
    }

    #[test]
    fn invalid_utf8_names_its_line() {
        assert_eq!(
            rejected(b"open ssh\nclose \xff\xfe vpn\n"),
            Rejection::NotUtf8 { line: 2 }
        );
    }

    #[test]
    fn messages_escape_and_shorten_hostile_words() {
        let long = "x".repeat(500);
        let errors = bad_lines(&format!("open {long}\n"));
        assert!(errors[0].1.len() < 200, "{}", errors[0].1);
        assert!(errors[0].1.contains('…'));
        let rejection = rejected("open ss\u{202e}h\n".as_bytes());
        assert!(rejection.to_string().contains("\\u{202e}"), "{rejection}");
    }

    #[test]
    fn many_repeated_lines_give_a_few_warnings_and_a_count() {
        let control = parse("close ssh\n".repeat(100).as_bytes(), services()).unwrap();
        assert_eq!(control.warnings.len(), 11);
        assert_eq!(
            control.warnings[0],
            "line 2: ssh is also named on line 1; line 2 wins"
        );
        assert_eq!(
            control.warnings[10],
            "and 89 more lines name a service again; the last line for each wins"
        );
    }

    #[test]
    fn a_long_list_of_errors_is_summarised() {
        let text = "bad\n".repeat(25);
        let message = rejected(text.as_bytes()).to_string();
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(lines[0], "25 invalid lines:", "{message}");
        assert!(lines[1].starts_with("  line 1: "), "{message}");
        assert!(lines[10].starts_with("  line 10: "), "{message}");
        assert_eq!(lines[11], "  and 15 more", "{message}");
        assert_eq!(lines.len(), 12, "{message}");
        let one = rejected(b"close ssh\nbad\n").to_string();
        assert!(one.starts_with("1 invalid line: line 2: "), "{one}");
    }

    /// Each line alone, as the directives it gives (canonical form).
    fn rendered(text: &str) -> Vec<String> {
        parse(text.as_bytes(), services())
            .unwrap_or_else(|error| panic!("{text:?} rejected: {error}"))
            .directives
            .values()
            .flatten()
            .map(Directive::render)
            .collect()
    }

    fn local(date: &str, time: &str) -> String {
        clock::parse_deadline(&[date, time], &Local)
            .unwrap()
            .to_rfc3339()
    }

    /// Deadlines are kept to the whole second, never later than written: a
    /// leap second (`:60`, which iptables refuses and nft rounds up) is the
    /// second before the next minute, and a fraction goes.
    #[test]
    fn deadlines_are_whole_seconds_every_backend_can_write() {
        for (written, kept) in [
            ("2030-06-30T23:59:60Z", "2030-06-30T23:59:59+00:00"),
            ("2030-06-30t23:59:60z", "2030-06-30T23:59:59+00:00"),
            ("2026-12-08T00:00:60Z", "2026-12-08T00:00:59+00:00"),
            ("2026-12-08T00:00:60.999+01:00", "2026-12-08T00:00:59+01:00"),
            (
                "2026-12-08T00:00:00.999999999-05:30",
                "2026-12-08T00:00:00-05:30",
            ),
            ("2038-01-19T03:14:07.5Z", "2038-01-19T03:14:07+00:00"),
            ("9999-12-31T23:59:60+14:00", "9999-12-31T23:59:59+14:00"),
        ] {
            let line = format!("open ssh until {written}");
            assert_eq!(
                rendered(&line),
                [format!("open ssh until {kept}")],
                "{written}"
            );
            let Some(Expiry::Until(deadline)) = parse(line.as_bytes(), services())
                .unwrap()
                .directives[&ServiceName::new("ssh").unwrap()][0]
                .expiry
            else {
                panic!("{line}: no deadline");
            };
            assert_eq!(deadline.timestamp_subsec_nanos(), 0, "{written}");
            // What is rendered reads back the same.
            assert_eq!(rendered(&rendered(&line)[0]), rendered(&line));
        }
        // Berlin's local mean time, +00:53:28, as a bare 1890 date there gets.
        use chrono::TimeZone;
        let lmt = FixedOffset::east_opt(3208).unwrap();
        let old = lmt.with_ymd_and_hms(1890, 1, 1, 0, 0, 0).unwrap();
        let kept = to_the_second(old).to_rfc3339();
        assert_eq!(kept, "1889-12-31T23:06:32+00:00");
        assert_eq!(
            rendered(&format!("open ssh until {kept}")),
            [format!("open ssh until {kept}")]
        );
    }

    #[test]
    fn time_boxed_and_per_source_forms() {
        let cases: Vec<(&str, Vec<String>)> = vec![
            (
                "open ssh until 2026-11-25 18:00",
                vec![format!("open ssh until {}", local("2026-11-25", "18:00"))],
            ),
            (
                "open ssh until 2026-11-25T18:00:00+01:00",
                vec!["open ssh until 2026-11-25T18:00:00+01:00".into()],
            ),
            ("open ssh for 2h", vec!["open ssh for 2h".into()]),
            ("Open ssh For 90M # phone", vec!["open ssh for 90m".into()]),
            ("open ssh for 7d", vec!["open ssh for 7d".into()]),
            (
                "open ssh from 203.0.113.7",
                vec!["open ssh from 203.0.113.7/32".into()],
            ),
            (
                "open ssh FROM 198.51.100.0/24",
                vec!["open ssh from 198.51.100.0/24".into()],
            ),
            (
                "open ssh from 198.51.100.0/24",
                vec!["open ssh from 198.51.100.0/24".into()],
            ),
            (
                "open ssh from 2001:db8::/48",
                vec!["open ssh from 2001:db8::/48".into()],
            ),
            ("open ssh from ::1", vec!["open ssh from ::1/128".into()]),
            (
                "open ssh from 203.0.113.7 for 1h",
                vec!["open ssh from 203.0.113.7/32 for 1h".into()],
            ),
            (
                "open ssh for 1h from 203.0.113.7",
                vec!["open ssh from 203.0.113.7/32 for 1h".into()],
            ),
            ("close ssh on web-*", vec!["close ssh".into()]),
            ("close ssh on db-*,WEB-?", vec!["close ssh".into()]),
            (
                "open ssh from 203.0.113.7 for 1h on web-1",
                vec!["open ssh from 203.0.113.7/32 for 1h".into()],
            ),
            ("close ssh on db-*", vec![]),
            ("close nosuch on db-*", vec![]),
            (
                "open ssh from 203.0.113.7\nopen ssh from 198.51.100.0/24",
                vec![
                    "open ssh from 203.0.113.7/32".into(),
                    "open ssh from 198.51.100.0/24".into(),
                ],
            ),
            (
                "open ssh from 203.0.113.7\nopen ssh",
                vec!["open ssh".into()],
            ),
            (
                "open ssh from 203.0.113.7\nclose ssh",
                vec!["close ssh".into()],
            ),
            (
                "close ssh\nopen ssh from 203.0.113.7",
                vec!["open ssh from 203.0.113.7/32".into()],
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(rendered(text), expected, "{text:?}");
        }
    }

    #[test]
    fn from_lines_add_up_without_a_warning_and_other_hosts_are_counted() {
        let text = "open ssh from 203.0.113.7\nopen ssh from 198.51.100.0/24\nclose vpn on db-*\n";
        let control = parse(text.as_bytes(), services()).unwrap();
        assert_eq!(control.warnings, Vec::<String>::new());
        assert_eq!(control.other_hosts, 1);
        let control = parse(b"open ssh from 203.0.113.7\nopen ssh\n", services()).unwrap();
        assert_eq!(
            control.warnings,
            ["line 2: ssh is also named on line 1; line 2 wins"]
        );
    }

    #[test]
    fn malformed_clauses_reject_the_line() {
        let cases = [
            ("open ssh until tomorrow", "`tomorrow` is not a time"),
            ("open ssh until 2026-11-25", "a time after the date"),
            ("open ssh until 2026-11-25 8:00", "is not a time like"),
            ("open ssh until 2026-13-01 18:00", "is not a time like"),
            ("open ssh until", "`until` needs"),
            ("open ssh for 2", "not a duration"),
            ("open ssh for 0h", "more than 0"),
            ("open ssh for two hours", "not a duration"),
            ("open ssh for", "`for` needs"),
            ("open ssh from", "`from` needs"),
            ("open ssh from example.com", "no host names"),
            ("open ssh from 203.0.113.300", "not an address"),
            ("open ssh from 203.0.113.0/33", "not an address"),
            (
                "open ssh from 203.0.113.7 from 203.0.113.8",
                "`from` is given twice",
            ),
            (
                "open ssh until 2026-11-25 18:00 for 2h",
                "one of `until` and `for`",
            ),
            ("open ssh for 2h for 3h", "one of `until` and `for`"),
            ("close ssh from 203.0.113.7", "go with open only"),
            ("close ssh for 1h", "go with open only"),
            ("close ssh until 2026-11-25 18:00", "go with open only"),
            ("open ssh on web-* for 1h", "after `on` (it ends the line)"),
            ("open ssh on", "`on` needs"),
            ("open ssh on web/1", "host name patterns"),
            ("open ssh on web-*,", "host name patterns"),
            ("close Bad!Name on db-*", "is not a service name"),
            ("close ssh now", "unexpected `now`"),
        ];
        for (text, needle) in cases {
            let errors = bad_lines(text);
            assert_eq!(errors.len(), 1, "{text:?}: {errors:?}");
            assert!(
                errors[0].1.contains(needle),
                "{text:?}: {:?} lacks {needle:?}",
                errors[0].1
            );
        }
        // A line for another host is still checked for form.
        assert!(bad_lines("open ssh for 2x on db-*").len() == 1);
        assert!(bad_lines("close ssh from 203.0.113.7 on db-*").len() == 1);
    }

    /// The tests' context on a host that manages IPv4 only.
    fn ipv4_only() -> Context<'static> {
        Context {
            ipv6: false,
            ..services()
        }
    }

    /// Lines that can never be honoured, each after a good line or two so
    /// the number in the error is the line's own.
    #[test]
    fn lines_that_can_never_be_honoured_are_invalid() {
        let cases = [
            (
                services(),
                "open ssh from 0.0.0.0/0",
                "`from 0.0.0.0/0` is every IPv4 address (0.0.0.0/0); to open to everyone, use `open ssh`",
            ),
            (
                services(),
                "open SSH from 1.2.3.4/0",
                "`from 1.2.3.4/0` is every IPv4 address (0.0.0.0/0); to open to everyone, use `open ssh`",
            ),
            (
                services(),
                "open ssh from ::/0",
                "`from ::/0` is every IPv6 address (::/0); to open to everyone, use `open ssh`",
            ),
            (
                services(),
                "open vpn from 2001:db8::1/0 for 1h",
                "is every IPv6 address (::/0); to open to everyone, use `open vpn`",
            ),
            (
                services(),
                "open ssh from 0.0.0.0/0 on db-*",
                "is every IPv4 address",
            ),
            (
                ipv4_only(),
                "open ssh from 2001:db8::/48",
                "`from 2001:db8::/48` is an IPv6 network, but this host manages IPv4 only (firewall.ipv6 = false); give an IPv4 address, or set firewall.ipv6 = true",
            ),
            (
                ipv4_only(),
                "open ssh from ::1 on web-*",
                "`from ::1/128` is an IPv6 network",
            ),
            (
                ipv4_only(),
                "open ssh from ::ffff:203.0.113.7",
                "(an IPv4 client is seen as 203.0.113.7: write `from 203.0.113.7`)",
            ),
            (
                services(),
                "open ssh on web-[12",
                "host name pattern `web-[12` has a `[` that is never closed, so it matches no host",
            ),
            (
                services(),
                "close ssh on db-1,web-[!12",
                "`web-[!12` has a `[` that is never closed",
            ),
            (
                services(),
                "close ssh on web-[]",
                "`web-[]` has an empty class `[]`",
            ),
            (
                services(),
                "close ssh on web-[!]1",
                "`web-[!]1` has an empty class",
            ),
            (services(), "close ssh on web-1]", "has a `]` with no `[`"),
            (services(), "close ssh on !web-1", "has a `!` outside `[…]`"),
        ];
        for (at, (context, line, needle)) in cases.into_iter().enumerate() {
            // The bad line is line 1, 2 or 3.
            let text = format!("{}{line}\n", "close vpn\n".repeat(at % 3));
            let errors = match parse(text.as_bytes(), context) {
                Err(Rejection::BadLines(errors)) => errors,
                other => panic!("{line:?}: expected a bad line, got {other:?}"),
            };
            assert_eq!(errors.len(), 1, "{line:?}: {errors:?}");
            assert_eq!(errors[0].line, at % 3 + 1, "{line:?}: {errors:?}");
            assert!(
                errors[0].reason.contains(needle),
                "{line:?}: {:?} lacks {needle:?}",
                errors[0].reason
            );
        }
    }

    #[test]
    fn what_ipv4_only_hosts_and_other_hosts_still_accept() {
        for (context, text, expected) in [
            (
                ipv4_only(),
                "open ssh from 203.0.113.7",
                vec!["open ssh from 203.0.113.7/32"],
            ),
            // Meant for a host that may manage IPv6: checked for form only.
            (ipv4_only(), "open ssh from 2001:db8::/48 on db-*", vec![]),
            (
                services(),
                "open ssh from 128.0.0.0/1",
                vec!["open ssh from 128.0.0.0/1"],
            ),
            (services(), "open ssh from ::/1", vec!["open ssh from ::/1"]),
            (services(), "close ssh on web-[0-9]", vec!["close ssh"]),
            (services(), "close ssh on web-[!2-9]", vec!["close ssh"]),
        ] {
            let control = parse(text.as_bytes(), context)
                .unwrap_or_else(|error| panic!("{text:?} rejected: {error}"));
            let lines: Vec<String> = control
                .directives
                .values()
                .flatten()
                .map(Directive::render)
                .collect();
            assert_eq!(lines, expected, "{text:?}");
        }
    }

    /// Sources are stored the way ip6tables and iptables list them, so the
    /// rendered line, the rule and the listing agree.
    #[test]
    fn sources_render_canonically() {
        for (written, shown) in [
            ("203.0.113.7", "203.0.113.7/32"),
            ("203.0.113.7/32", "203.0.113.7/32"),
            ("198.51.100.0/24", "198.51.100.0/24"),
            ("2001:DB8:0000::7", "2001:db8::7/128"),
            ("2001:db8::/64", "2001:db8::/64"),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4/128"),
            ("::FFFF:1.2.3.4/128", "::ffff:1.2.3.4/128"),
            ("::ffff:1.2.3.0/120", "::ffff:1.2.3.0/120"),
            ("::1.2.3.4", "::102:304/128"),
            ("::1", "::1/128"),
        ] {
            let net = parse_source(written, "ssh").unwrap();
            assert_eq!(net.to_string(), shown, "{written}");
            assert!(
                matches!(
                    (written.contains(':'), net),
                    (true, IpNet::V6(_)) | (false, IpNet::V4(_))
                ),
                "{written}: {net:?}"
            );
            assert_eq!(
                rendered(&format!("open ssh from {written}")),
                [format!("open ssh from {shown}")]
            );
        }
    }

    #[test]
    fn an_ipv4_address_written_the_ipv6_way_is_valid_and_told() {
        let text = "close vpn\nopen ssh from ::ffff:203.0.113.7\nopen httpd from ::ffff:198.51.100.0/120\n";
        let warnings = parse(text.as_bytes(), services()).unwrap().warnings;
        assert_eq!(
            warnings,
            [
                "line 2: `from ::ffff:203.0.113.7/128` is an IPv4 address written the IPv6 way, \
                 which no packet comes from, so it lets no one in (an IPv4 client is seen as \
                 203.0.113.7): write `from 203.0.113.7`",
                "line 3: `from ::ffff:198.51.100.0/120` is an IPv4 address written the IPv6 way, \
                 which no packet comes from, so it lets no one in (an IPv4 client is seen as \
                 198.51.100.0/24): write `from 198.51.100.0/24`",
            ]
        );
        // Every IPv4 address: the advice is never a line that is refused.
        let every = parse(b"open ssh from ::ffff:0.0.0.0/96\n", services()).unwrap();
        assert!(
            every.warnings[0].ends_with("write the line without `from` to open it to everyone"),
            "{:?}",
            every.warnings
        );
        let fine = "open ssh from ::1.2.3.4\nopen ssh from 2001:db8::/32\nopen ssh from ::/1\n";
        assert!(
            parse(fine.as_bytes(), services())
                .unwrap()
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn host_patterns_match_like_a_shell() {
        let cases = [
            ("web-1", "web-1", true),
            ("web-*", "web-1", true),
            ("web-*", "WEB-12", true),
            ("web-?", "web-12", false),
            ("web-??", "web-12", true),
            ("*", "anything", true),
            ("*-1", "web-1", true),
            ("*-1", "web-2", false),
            ("web-[0-4]", "web-3", true),
            ("web-[0-4]", "web-5", false),
            ("web-[!0-4]", "web-5", true),
            ("web-[!0-4]", "web-3", false),
            ("web-[13]", "web-3", true),
            ("db", "db1", false),
            ("[", "[", false),
            (
                "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(
                glob_match(pattern, name),
                expected,
                "{pattern:?} ~ {name:?}"
            );
        }
    }

    /// Properties over generated files: the parser never panics, what it
    /// accepts survives a round trip, and one bad line sinks the whole file.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn blank() -> impl Strategy<Value = String> {
            "[ \t]{0,3}(#[^\r\n\x00-\x1f\x7f-\u{9f}]{0,20})?"
        }

        fn valid_line() -> impl Strategy<Value = String> {
            let action = prop::sample::select(vec!["open", "close", "Open", "CLOSE", "oPeN"]);
            let service = prop::sample::select(vec!["ssh", "SSH", "vpn", "Httpd", "httpd"]);
            let clause = prop::sample::select(vec![
                "",
                " for 2h",
                " for 90m",
                " until 2026-11-25 18:00",
                " until 2030-01-01T00:00:00Z",
                " from 203.0.113.7",
                " from 198.51.100.0/24 for 1d",
                " from 2001:db8::/48",
                " on web-*",
                " on db-*",
            ]);
            let order = (
                "[ \t]{0,2}",
                action,
                "[ \t\u{a0}]{1,3}",
                service,
                clause,
                "[ \t]{0,2}",
                prop::option::of("#[^\r\n\x00-\x1f\x7f-\u{9f}]{0,20}"),
            )
                .prop_map(|(a, b, c, d, clause, e, f)| {
                    // `from`, `for` and `until` go with open only.
                    let clause = if b.eq_ignore_ascii_case("close") && !clause.starts_with(" on") {
                        ""
                    } else {
                        clause
                    };
                    format!("{a}{b}{c}{d}{clause}{e}{}", f.unwrap_or_default())
                });
            prop_oneof![3 => order, 1 => blank()]
        }

        fn bad_line() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z]{1,8}"
                    .prop_filter("not an action", |w| w != "open" && w != "close")
                    .prop_map(|w| format!("{w} ssh")),
                "[a-z]{1,8}"
                    .prop_filter("not a service", |w| !["ssh", "vpn", "httpd"]
                        .contains(&w.as_str()))
                    .prop_map(|w| format!("open {w}")),
                "[a-z]{1,8}".prop_map(|w| format!("close ssh {w}")),
                Just("close".to_owned()),
                "[\x00-\x08\x0b\x0c\x0e-\x1f]".prop_map(|c| format!("open ssh{c}")),
            ]
        }

        fn file(lines: &[String], crlf: bool) -> String {
            let newline = if crlf { "\r\n" } else { "\n" };
            lines
                .iter()
                .map(|line| format!("{line}{newline}"))
                .collect()
        }

        fn actions(control: &ControlFile) -> Vec<String> {
            control
                .directives
                .values()
                .flatten()
                .map(Directive::render)
                .collect()
        }

        proptest! {
            #[test]
            fn never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
                let _ = parse(&bytes, services());
            }

            #[test]
            fn never_panics_on_near_valid_text(
                lines in prop::collection::vec(prop_oneof![valid_line(), bad_line(), ".{0,30}"], 0..30),
            ) {
                let _ = parse(file(&lines, false).as_bytes(), services());
            }

            #[test]
            fn an_accepted_file_reparses_to_the_same_directives(
                lines in prop::collection::vec(valid_line(), 0..30),
                crlf in any::<bool>(),
                bom in any::<bool>(),
            ) {
                let text = format!("{}{}", if bom { "\u{feff}" } else { "" }, file(&lines, crlf));
                let control = parse(text.as_bytes(), services()).unwrap();
                let again = parse(control.render().as_bytes(), services()).unwrap();
                prop_assert_eq!(actions(&again), actions(&control));
            }

            #[test]
            fn one_bad_line_rejects_the_file_and_is_named(
                mut lines in prop::collection::vec(valid_line(), 0..30),
                bad in bad_line(),
                at in any::<prop::sample::Index>(),
            ) {
                let index = at.index(lines.len() + 1);
                lines.insert(index, bad);
                match parse(file(&lines, false).as_bytes(), services()) {
                    Err(Rejection::BadLines(errors)) => {
                        let numbers: Vec<usize> = errors.iter().map(|e| e.line).collect();
                        prop_assert_eq!(numbers, vec![index + 1]);
                    }
                    other => prop_assert!(false, "expected one bad line, got {:?}", other),
                }
            }
        }
    }

    #[test]
    fn a_network_with_address_bits_past_its_length_is_refused_not_widened() {
        let services = services();
        for (text, needle) in [
            (
                "open ssh from 203.0.113.7/2",
                "write the network itself (192.0.0.0/2)",
            ),
            ("open ssh from 198.51.100.77/24", "(198.51.100.0/24)"),
            ("open ssh from 2001:db8::1/64", "(2001:db8::/64)"),
        ] {
            let error = parse(text.as_bytes(), services).unwrap_err().to_string();
            assert!(
                error.contains("line 1:") && error.contains(needle),
                "{text}: {error}"
            );
        }
    }
}
