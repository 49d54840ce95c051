//! The control file: `open ssh` / `close vpn` lines, validated all or nothing.
//! Pure: never touches the network or the firewall.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::config::ServiceName;

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

/// One valid line of the control file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// 1-based line number, for messages.
    pub line: usize,
    pub action: Action,
    pub service: ServiceName,
}

/// A control file that passed validation: the winning line per service.
/// Services it does not name keep whatever state they have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlFile {
    pub directives: BTreeMap<ServiceName, Directive>,
    /// Things worth telling the owner that do not make the file invalid.
    pub warnings: Vec<String>,
}

impl ControlFile {
    /// The file in its plainest form: one `ACTION SERVICE` line per service.
    pub fn render(&self) -> String {
        self.directives
            .values()
            .map(|d| format!("{} {}\n", d.action.as_str(), d.service))
            .collect()
    }
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
            Rejection::Html => f.write_str(
                "the control file is an HTML page, not plain text \
                 (a Dropbox share link must end in dl=1 to get the file itself)",
            ),
            Rejection::BadLines(errors) => {
                let plural = if errors.len() == 1 { "" } else { "s" };
                write!(f, "{} invalid line{plural}: ", errors.len())?;
                for (i, error) in errors.iter().take(LISTED_LINE_ERRORS).enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "line {}: {}", error.line, error.reason)?;
                }
                if errors.len() > LISTED_LINE_ERRORS {
                    write!(f, "; and {} more", errors.len() - LISTED_LINE_ERRORS)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Rejection {}

/// Parses and validates a whole control file against the configured services.
pub fn parse(bytes: &[u8], services: &BTreeSet<ServiceName>) -> Result<ControlFile, Rejection> {
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
    for (index, raw_line) in text.split('\n').enumerate() {
        let line = index + 1;
        match parse_line(line, raw_line, services) {
            Ok(None) => {}
            Ok(Some(directive)) => {
                if let Some(earlier) = control.directives.get(&directive.service) {
                    control.warnings.push(format!(
                        "line {line}: {} is also named on line {}; line {line} wins",
                        directive.service, earlier.line
                    ));
                }
                control
                    .directives
                    .insert(directive.service.clone(), directive);
            }
            Err(reason) => errors.push(LineError { line, reason }),
        }
    }
    if errors.is_empty() {
        Ok(control)
    } else {
        Err(Rejection::BadLines(errors))
    }
}

/// An HTML error or preview page starts with `<` (after blank space);
/// no valid control line can.
fn looks_like_html(text: &str) -> bool {
    text.trim_start().starts_with('<')
}

fn parse_line(
    line: usize,
    raw: &str,
    services: &BTreeSet<ServiceName>,
) -> Result<Option<Directive>, String> {
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
        return Ok(None);
    };
    let action = match action.to_lowercase().as_str() {
        "open" => Action::Open,
        "close" => Action::Close,
        _ => {
            return Err(format!(
                "unknown action {} (use open or close)",
                quoted(action)
            ));
        }
    };
    let Some(service) = words.next() else {
        return Err(format!("{} needs a service name", action.as_str()));
    };
    let service = service.to_lowercase();
    let Some(service) = services.iter().find(|known| known.as_str() == service) else {
        let known: Vec<&str> = services.iter().map(ServiceName::as_str).collect();
        return Err(format!(
            "unknown service {} (known: {})",
            quoted(&service),
            known.join(", ")
        ));
    };
    if let Some(extra) = words.next() {
        return Err(format!(
            "unexpected {} after the service (a line is ACTION SERVICE)",
            quoted(extra)
        ));
    }
    Ok(Some(Directive {
        line,
        action,
        service: service.clone(),
    }))
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

    fn services() -> BTreeSet<ServiceName> {
        ["ssh", "vpn", "httpd"]
            .into_iter()
            .map(|name| ServiceName::new(name).unwrap())
            .collect()
    }

    /// The file as `service action` pairs, in service order.
    fn accepted(text: &str) -> Vec<(String, Action)> {
        parse(text.as_bytes(), &services())
            .unwrap_or_else(|error| panic!("{text:?} rejected: {error}"))
            .directives
            .into_iter()
            .map(|(service, directive)| (service.to_string(), directive.action))
            .collect()
    }

    fn rejected(text: &[u8]) -> Rejection {
        match parse(text, &services()) {
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
        ];
        for (text, expected) in cases {
            assert_eq!(&accepted(text), expected, "{text:?}");
        }
    }

    #[test]
    fn last_line_wins_with_a_warning() {
        let control = parse(b"open ssh\nclose vpn\nclose ssh\n", &services()).unwrap();
        let ssh = &control.directives[&ServiceName::new("ssh").unwrap()];
        assert_eq!((ssh.action, ssh.line), (Action::Close, 3));
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
        assert!(Rejection::Html.to_string().contains("dl=1"));
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
    fn a_long_list_of_errors_is_summarised() {
        let text = "bad\n".repeat(25);
        let message = rejected(text.as_bytes()).to_string();
        assert!(
            message.starts_with("25 invalid lines: line 1: "),
            "{message}"
        );
        assert!(message.ends_with("and 15 more"), "{message}");
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
            let order = (
                "[ \t]{0,2}",
                action,
                "[ \t\u{a0}]{1,3}",
                service,
                "[ \t]{0,2}",
                prop::option::of("#[^\r\n\x00-\x1f\x7f-\u{9f}]{0,20}"),
            )
                .prop_map(|(a, b, c, d, e, f)| format!("{a}{b}{c}{d}{e}{}", f.unwrap_or_default()));
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

        fn actions(control: &ControlFile) -> Vec<(ServiceName, Action)> {
            control
                .directives
                .iter()
                .map(|(s, d)| (s.clone(), d.action))
                .collect()
        }

        proptest! {
            #[test]
            fn never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
                let _ = parse(&bytes, &services());
            }

            #[test]
            fn never_panics_on_near_valid_text(
                lines in prop::collection::vec(prop_oneof![valid_line(), bad_line(), ".{0,30}"], 0..30),
            ) {
                let _ = parse(file(&lines, false).as_bytes(), &services());
            }

            #[test]
            fn an_accepted_file_reparses_to_the_same_directives(
                lines in prop::collection::vec(valid_line(), 0..30),
                crlf in any::<bool>(),
                bom in any::<bool>(),
            ) {
                let text = format!("{}{}", if bom { "\u{feff}" } else { "" }, file(&lines, crlf));
                let control = parse(text.as_bytes(), &services()).unwrap();
                let again = parse(control.render().as_bytes(), &services()).unwrap();
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
                match parse(file(&lines, false).as_bytes(), &services()) {
                    Err(Rejection::BadLines(errors)) => {
                        let numbers: Vec<usize> = errors.iter().map(|e| e.line).collect();
                        prop_assert_eq!(numbers, vec![index + 1]);
                    }
                    other => prop_assert!(false, "expected one bad line, got {:?}", other),
                }
            }
        }
    }
}
