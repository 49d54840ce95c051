//! Where the control file comes from, and how to name that place without
//! leaking it: a share link is a secret, so only its scheme and host are shown.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use url::Url;

/// The forms a source may take, for refusals to end with.
const FORMS: &str =
    "give https://HOST/PATH, file:///ABSOLUTE/PATH, an absolute path, or - for stdin";

const PLAIN_HTTP: &str =
    "plain http:// is refused: a man in the middle could open your ports; use https://";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Https(Url),
    File(PathBuf),
    Stdin,
}

impl Source {
    /// Parses `https://…`, `file:///ABSOLUTE`, an absolute path, or `-` for
    /// stdin. A refusal never repeats the path or query of what was given
    /// (a share link is a secret); at most it names a host.
    pub fn parse(text: &str) -> Result<Source> {
        if text == "-" {
            return Ok(Source::Stdin);
        }
        if text.is_empty() {
            bail!("is empty: {FORMS}");
        }
        if text.trim() != text || text.chars().any(char::is_control) {
            bail!("starts or ends with blank space, or holds a control character: remove it");
        }
        if text.starts_with('/') {
            return Ok(Source::File(PathBuf::from(text)));
        }
        let Some(scheme) = scheme_of(text) else {
            return Err(no_scheme(text));
        };
        match scheme.to_ascii_lowercase().as_str() {
            // url's ParseError texts name what is wrong, never the input.
            "https" => {
                let url = Url::parse(text).context("not a valid URL")?;
                if url.host_str().is_none_or(str::is_empty) {
                    bail!("the URL has no host");
                }
                Ok(Source::Https(url))
            }
            "http" => bail!("{PLAIN_HTTP}"),
            "file" => {
                let url = Url::parse(text).context("not a valid file:// URL")?;
                let path = url
                    .to_file_path()
                    .ok()
                    .context("a file:// URL needs an absolute local path, like file:///etc/portlocker/control.txt")?;
                Ok(Source::File(path))
            }
            other => bail!("unsupported scheme {other:?}: {FORMS}"),
        }
    }
}

/// The scheme of `text` when it starts with one followed by `://`
/// (RFC 3986: a letter, then letters, digits, `+`, `-` and `.`).
fn scheme_of(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then_some(scheme)
}

/// Why a value with no `SCHEME://` that is not an absolute path is
/// refused: cron runs from `/`, and a link pasted without its `https://`
/// would otherwise be read as a relative file name.
fn no_scheme(text: &str) -> anyhow::Error {
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("https:") {
        return anyhow!("`https:` must be followed by `//`, as in https://HOST/PATH");
    }
    if lower.starts_with("file:") {
        return anyhow!("`file:` must be followed by `//`, as in file:///ABSOLUTE/PATH");
    }
    if lower.starts_with("http:") {
        return anyhow!("{PLAIN_HTTP}");
    }
    let first = text.split(['/', '?', '#']).next().unwrap_or_default();
    let has_more = text.len() > first.len();
    let host_like = first.contains('.')
        && !first.starts_with('.')
        && !first.ends_with('.')
        && first
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:".contains(c));
    if host_like && has_more {
        anyhow!("has no https:// in front; did you mean https://{first}/…?")
    } else {
        anyhow!("is neither a URL nor an absolute path (cron runs from /): {FORMS}")
    }
}

impl Source {
    /// The same place with `suffix` added to the file name (before any query
    /// string): where a signature sits beside its file. None for stdin.
    pub fn with_suffix(&self, suffix: &str) -> Option<Source> {
        match self {
            Source::Https(url) => {
                let mut beside = url.clone();
                beside.set_path(&format!("{}{suffix}", url.path()));
                Some(Source::Https(beside))
            }
            Source::File(path) => {
                let mut name = path.clone().into_os_string();
                name.push(suffix);
                Some(Source::File(name.into()))
            }
            Source::Stdin => None,
        }
    }

    /// The full source, to tell whether a remembered file came from it.
    /// Secret for a URL: never log it.
    pub fn key(&self) -> String {
        match self {
            Source::Https(url) => url.to_string(),
            Source::File(path) => path.display().to_string(),
            Source::Stdin => "-".to_owned(),
        }
    }
}

/// Shows only what may be logged: scheme and host for a URL.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Https(url) => write!(f, "https://{}", host_of(url)),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Stdin => f.write_str("stdin"),
        }
    }
}

/// The host of `url` (with a non-default port), never its path or query.
pub fn host_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(Source::parse("-").unwrap(), Source::Stdin);
        assert_eq!(
            Source::parse("/etc/portlocker/control.txt").unwrap(),
            Source::File("/etc/portlocker/control.txt".into())
        );
        assert_eq!(
            Source::parse("file:///srv/c.txt").unwrap(),
            Source::File("/srv/c.txt".into())
        );
        assert!(matches!(
            Source::parse("HTTPS://example.org/a").unwrap(),
            Source::Https(_)
        ));
    }

    #[test]
    fn refusals_say_why() {
        for (text, needle) in [
            ("http://example.org/x", "man in the middle"),
            ("ftp://example.org/x", "unsupported scheme"),
            ("file://host/x", "absolute local path"),
            ("https://", "not a valid URL"),
            ("", "empty"),
            (
                "www.dropbox.com/s/TOKEN/file.txt?dl=1",
                "did you mean https://www.dropbox.com/…?",
            ),
            (
                "example.org:8443/c.txt",
                "did you mean https://example.org:8443/…?",
            ),
            ("control.txt", "neither a URL nor an absolute path"),
            ("./control.txt", "neither a URL nor an absolute path"),
            (
                "etc/portlocker/control.txt",
                "neither a URL nor an absolute path",
            ),
            ("https:/example.org/x", "`https:` must be followed by `//`"),
            ("file:etc/x", "file:///ABSOLUTE/PATH"),
            ("http:example.org/x", "man in the middle"),
            (" https://example.org/x", "blank space"),
            ("/etc/portlocker/control.txt\n", "control character"),
        ] {
            let message = format!("{:#}", Source::parse(text).unwrap_err());
            assert!(message.contains(needle), "{text}: {message}");
        }
    }

    /// A share link is a secret: no refusal repeats its path or query, the
    /// place a token sits.
    #[test]
    fn refusals_never_show_the_path_or_query() {
        for text in [
            "www.dropbox.com/s/TOKEN/file.txt?dl=1",
            "dropbox.com/s/TOKEN",
            "s/TOKEN/file.txt",
            "TOKEN",
            "x.org?TOKEN",
            "user:TOKEN@example.org/x",
            "www.dropbox.com/s/x?u=https://TOKEN",
            "https:www.dropbox.com/s/TOKEN/file.txt",
            "https:/www.dropbox.com/s/TOKEN/file.txt",
            "http:www.dropbox.com/s/TOKEN",
            "http://www.dropbox.com/s/TOKEN/file.txt?dl=1",
            "HTTP://www.dropbox.com/s/TOKEN",
            "ftp://www.dropbox.com/s/TOKEN",
            "file://host/TOKEN",
            "file:TOKEN",
            "https://www.dropbox.com:99999/s/TOKEN",
            "https://exa mple.org/s/TOKEN",
            "https://[::1/s/TOKEN",
            "https://user:TOKEN@/s/x",
            "https://%zz/TOKEN",
            " https://www.dropbox.com/s/TOKEN",
            "https://www.dropbox.com/s/TOKEN?dl=1\n",
        ] {
            let message = format!("{:#}", Source::parse(text).unwrap_err());
            assert!(!message.contains("TOKEN"), "{text:?}: {message}");
        }
    }

    #[test]
    fn a_signature_sits_beside_its_file_before_the_query() {
        let source = Source::parse("https://example.org/c/portlocker.txt?x=1").unwrap();
        assert_eq!(
            source.with_suffix(".minisig").unwrap().key(),
            "https://example.org/c/portlocker.txt.minisig?x=1"
        );
        let file = Source::parse("/etc/portlocker/control.txt").unwrap();
        assert_eq!(
            file.with_suffix(".minisig").unwrap().key(),
            "/etc/portlocker/control.txt.minisig"
        );
        assert_eq!(Source::Stdin.with_suffix(".minisig"), None);
    }

    #[test]
    fn display_hides_path_and_query() {
        let source = Source::parse("https://www.dropbox.com/s/SECRET/file.txt?dl=1").unwrap();
        assert_eq!(source.to_string(), "https://www.dropbox.com");
        let source = Source::parse("https://127.0.0.1:8443/SECRET").unwrap();
        assert_eq!(source.to_string(), "https://127.0.0.1:8443");
    }
}
