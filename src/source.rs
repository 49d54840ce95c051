//! Where the control file comes from, and how to name that place without
//! leaking it: a share link is a secret, so only its scheme and host are shown.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use url::Url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Https(Url),
    File(PathBuf),
    Stdin,
}

impl Source {
    /// Parses `https://…`, `file:///path`, a plain path, or `-` for stdin.
    pub fn parse(text: &str) -> Result<Source> {
        if text == "-" {
            return Ok(Source::Stdin);
        }
        let Some((scheme, _)) = text.split_once("://") else {
            if text.is_empty() {
                bail!("is empty");
            }
            return Ok(Source::File(PathBuf::from(text)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "https" => {
                let url = Url::parse(text).context("not a valid URL")?;
                if url.host_str().is_none_or(str::is_empty) {
                    bail!("the URL has no host");
                }
                Ok(Source::Https(url))
            }
            "http" => bail!(
                "plain http:// is refused: a man in the middle could open your ports; use https://"
            ),
            "file" => {
                let url = Url::parse(text).context("not a valid file:// URL")?;
                let path = url
                    .to_file_path()
                    .ok()
                    .context("a file:// URL needs an absolute local path, like file:///etc/portlocker/control.txt")?;
                Ok(Source::File(path))
            }
            other => bail!("unsupported scheme {other:?}: use https://, file://, a path or -"),
        }
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
        ] {
            let message = format!("{:#}", Source::parse(text).unwrap_err());
            assert!(message.contains(needle), "{text}: {message}");
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
