//! Getting the control file's bytes from its source, bounded in size and time,
//! and posting a notice. The only module that touches the network. Knows
//! bytes, not the grammar; never lets a secret URL into an error message.

use std::fs::{FileType, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{
    CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, RETRY_AFTER,
};
use reqwest::redirect;
use url::Url;

use crate::config::FetchConfig;
use crate::intake::source::{Source, host_of};

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 10;

/// Linux's `O_NONBLOCK` (std has no constant; a test checks it against libc):
/// opening a FIFO with it returns at once instead of waiting for a writer,
/// so the open descriptor can be looked at and refused.
const O_NONBLOCK: i32 = 0o4000;

/// Linux's `O_NOCTTY`: a terminal named as the source never becomes the
/// controlling terminal of a run started without one (cron).
const O_NOCTTY: i32 = 0o400;

/// Why an answer labelled `text/html` is refused: a login or preview page
/// stands where the file should be.
const HTML_PAGE: &str = "the server sent Content-Type text/html: \
     the control file is an HTML page, not plain text \
     (a Dropbox share link must end in dl=1 to get the file itself)";

/// HTTP validators of a fetched file, sent back to ask "has it changed?".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// What a fetch brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The file, with the validators to send next time.
    Body(Vec<u8>, Validators),
    /// 304: the file has not changed since the validators were given.
    NotModified,
}

/// Reads the whole control file from `source`, refusing more than
/// `max_bytes`. With `validators`, an unchanged HTTPS file is `NotModified`.
pub fn fetch(
    source: &Source,
    config: &FetchConfig,
    validators: Option<&Validators>,
) -> Result<Fetched> {
    Fetcher::new(config).fetch(source, validators)
}

/// Fetches with one HTTPS client for as long as it lives: a run makes one
/// and drops it; `watch` keeps one, so each conditional GET goes over the
/// connection kept alive from the last (a 304 is a few hundred bytes, not
/// a TLS handshake).
pub struct Fetcher {
    config: FetchConfig,
    client: OnceLock<Client>,
    /// How the last fetch went: whether it failed, and what the source
    /// asked of the next request (`Retry-After`).
    last: Mutex<(bool, Option<Duration>)>,
}

/// The longest `Retry-After` honoured: a source asking for more (by mistake
/// or otherwise) would keep every open the owner types away for as long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl Fetcher {
    pub fn new(config: &FetchConfig) -> Fetcher {
        Fetcher {
            config: config.clone(),
            client: OnceLock::new(),
            last: Mutex::new((false, None)),
        }
    }

    /// As `fetch`, over this fetcher's client.
    pub fn fetch(&self, source: &Source, validators: Option<&Validators>) -> Result<Fetched> {
        self.fetch_at_most(source, validators, self.config.max_bytes)
    }

    /// As `fetch`, refusing more than `max_bytes` (a signature is small).
    pub fn fetch_at_most(
        &self,
        source: &Source,
        validators: Option<&Validators>,
        max_bytes: u64,
    ) -> Result<Fetched> {
        let config = &FetchConfig {
            max_bytes,
            ..self.config.clone()
        };
        let plain = |bytes| Fetched::Body(bytes, Validators::default());
        let (result, retry_after) = match source {
            Source::Stdin => (
                read_local(None, config)
                    .map(plain)
                    .context("reading the control file from stdin"),
                None,
            ),
            Source::File(path) => (read_local(Some(path), config).map(plain), None),
            Source::Https(url) => match self.client() {
                Ok(client) => fetch_https(client, url, config, validators.cloned()),
                Err(error) => (Err(error), None),
            },
        };
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = (result.is_err(), retry_after);
        result
    }

    /// Whether the last fetch failed.
    pub fn failed(&self) -> bool {
        self.last.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    /// How long the source asked to be left alone by its last answer (a 429
    /// or 503 with `Retry-After`), at most `MAX_RETRY_AFTER`.
    pub fn retry_after(&self) -> Option<Duration> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner).1
    }

    fn client(&self) -> Result<Client> {
        if let Some(client) = self.client.get() {
            return Ok(client.clone());
        }
        let client = client(&self.config, true)?;
        Ok(self.client.get_or_init(|| client).clone())
    }
}

/// Reads a local file, or stdin for `None`, within fetch.timeout_secs.
fn read_local(path: Option<&Path>, config: &FetchConfig) -> Result<Vec<u8>> {
    let timeout = config.timeout;
    let max_bytes = config.max_bytes;
    let deadline = Instant::now() + timeout;
    // Even an O_NONBLOCK open blocks on a hung NFS mount, and stdin may be a
    // pipe nobody writes to: this thread is abandoned at the deadline.
    let (sender, receiver) = mpsc::channel();
    let owned = path.map(Path::to_path_buf);
    std::thread::spawn(move || {
        let result = match owned {
            Some(path) => read_file(&path, max_bytes, deadline),
            None => read_limited(std::io::stdin().lock(), max_bytes, Some(deadline)),
        };
        let _ = sender.send(result);
    });
    receiver.recv_timeout(timeout).unwrap_or_else(|_| {
        let error = anyhow!(
            "the read did not finish within fetch.timeout_secs ({} s)",
            timeout.as_secs()
        );
        Err(match path {
            Some(path) => error.context(format!("reading control file {}", path.display())),
            None => error,
        })
    })
}

/// Reads the regular file at `path`; anything else (a FIFO, a directory,
/// a device) is refused before a byte is read.
fn read_file(path: &Path, max_bytes: u64, deadline: Instant) -> Result<Vec<u8>> {
    let shown = path.display();
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK | O_NOCTTY)
        .open(path)
        .with_context(|| format!("cannot open control file {shown}"))?;
    let file_type = file
        .metadata()
        .with_context(|| format!("cannot inspect control file {shown}"))?
        .file_type();
    if !file_type.is_file() {
        bail!(
            "control file {shown} is {}, not a regular file",
            kind_of(file_type)
        );
    }
    read_limited(file, max_bytes, Some(deadline))
        .with_context(|| format!("reading control file {shown}"))
}

/// What a file that is not a regular file is, for a message.
fn kind_of(file_type: FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "something else"
    }
}

/// A Dropbox share link with `dl=0` serves an HTML preview; `dl=1` the file.
pub fn dropbox_direct(url: &Url) -> Option<Url> {
    let host = url.host_str()?;
    if !(host == "www.dropbox.com" || host == "dropbox.com") {
        return None;
    }
    if !url
        .query_pairs()
        .any(|(key, value)| key == "dl" && value == "0")
    {
        return None;
    }
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(key, value)| {
            let value = if key == "dl" { "1".into() } else { value };
            (key.into_owned(), value.into_owned())
        })
        .collect();
    let mut direct = url.clone();
    direct.query_pairs_mut().clear().extend_pairs(pairs);
    Some(direct)
}

/// The fetch, and the `Retry-After` of a refusal.
fn fetch_https(
    client: Client,
    url: &Url,
    config: &FetchConfig,
    validators: Option<Validators>,
) -> (Result<Fetched>, Option<Duration>) {
    let url = match dropbox_direct(url) {
        Some(direct) => {
            log::info!("the Dropbox link ends in dl=0 (a preview page); fetching it with dl=1");
            direct
        }
        None => url.clone(),
    };
    let shown = format!("https://{}", host_of(&url));
    let timeout = config.timeout;
    let max_bytes = config.max_bytes;
    let deadline = Instant::now() + timeout;

    // reqwest's blocking timeout restarts on every read of the body, so a
    // server that drips bytes could hold a run open for ever; this thread
    // is abandoned at the deadline instead.
    let (sender, receiver) = mpsc::channel();
    let request_url = url.clone();
    std::thread::spawn(move || {
        let result = get(&client, request_url, validators, max_bytes, deadline);
        let _ = sender.send(result);
    });
    let result = match receiver.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => Err(timed_out(timeout)),
    };
    let retry_after = result.as_ref().err().and_then(|error| {
        error
            .downcast_ref::<Refused>()
            .and_then(|refused| refused.retry_after)
    });
    let result = result
        .map_err(|error| anyhow!("{}", redact(&format!("{error:#}"), &url)))
        .with_context(|| format!("fetching the control file from {shown}"));
    (result, retry_after)
}

/// An answer other than the file, with what it asked of the next request.
#[derive(Debug)]
struct Refused {
    text: String,
    retry_after: Option<Duration>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Refused {}

/// `Retry-After` in seconds or as an HTTP date, from `now`, at most
/// `MAX_RETRY_AFTER`; None when absent or unreadable.
fn retry_after(value: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (when.to_utc() - now).to_std().unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// POSTs `text` as a plain text body to `url` (a notice for ntfy, Gotify or
/// a webhook), all of it within fetch.timeout_secs, following no redirect:
/// any 2xx answer is success. An error shows the URL's host only (a ntfy
/// topic is a secret like the source).
pub fn post(url: &Url, text: &str, config: &FetchConfig) -> Result<()> {
    let shown = format!("https://{}", host_of(url));
    let request = client(config, false)?
        .post(url.clone())
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(text.to_owned());
    let timeout = config.timeout;
    // As for a fetch: the thread is abandoned at the deadline.
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(send_post(request));
    });
    let result = match receiver.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => Err(timed_out(timeout)),
    };
    result
        .map_err(|error| anyhow!("{}", redact(&format!("{error:#}"), url)))
        .with_context(|| format!("posting the notice to {shown}"))
}

/// Opens `url` (a poke's ntfy topic stream) for reading, with `token` as
/// its bearer, following no redirect; each read waits at most `idle` (the
/// stream's keepalives come more often). An error shows the host only.
pub fn subscribe(
    url: &Url,
    token: Option<&str>,
    config: &FetchConfig,
    idle: Duration,
) -> Result<Box<dyn Read + Send>> {
    let shown = format!("https://{}", host_of(url));
    // Connecting is bounded as for a fetch; each read of the stream by `idle`.
    let mut request = client(config, false)?.get(url.clone()).timeout(idle);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let opened = (|| -> Result<Response> {
        let response = request
            .send()
            .map_err(|error| anyhow::Error::new(error.without_url()))?;
        let status = response.status();
        if status != StatusCode::OK {
            bail!("the server answered {status}");
        }
        Ok(response)
    })();
    let response = opened
        .map_err(|error| anyhow!("{}", redact(&format!("{error:#}"), url)))
        .with_context(|| format!("subscribing to the poke at {shown}"))?;
    Ok(Box::new(response))
}

fn send_post(request: RequestBuilder) -> Result<()> {
    let response = request
        .send()
        .map_err(|error| anyhow::Error::new(error.without_url()))?;
    let status = response.status();
    if !status.is_success() {
        // A redirect would turn the POST into a GET without the notice.
        let why = if status.is_redirection() {
            ": notify.url must be the final address, redirects are not followed"
        } else {
            ""
        };
        bail!("the server answered {status}{why}");
    }
    Ok(())
}

/// The HTTPS client, following redirects (to https only) when `follow`.
fn client(config: &FetchConfig, follow: bool) -> Result<Client> {
    let follow_https = redirect::Policy::custom(|attempt| {
        if attempt.url().scheme() != "https" {
            attempt.error("refused a redirect from https to plain http")
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    });
    let policy = match follow {
        true => follow_https,
        false => redirect::Policy::none(),
    };
    let mut builder = Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .redirect(policy)
        .user_agent(concat!("portlocker/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read fetch.ca_file {}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
            format!(
                "fetch.ca_file {} holds no usable PEM certificate",
                path.display()
            )
        })?;
        builder = builder.tls_certs_merge(certificates);
    }
    builder.build().context("cannot set up the HTTPS client")
}

fn get(
    client: &Client,
    url: Url,
    validators: Option<Validators>,
    max_bytes: u64,
    deadline: Instant,
) -> Result<Fetched> {
    let mut request = client.get(url);
    if let Some(validators) = &validators {
        if let Some(etag) = &validators.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        if let Some(date) = &validators.last_modified {
            request = request.header(IF_MODIFIED_SINCE, date);
        }
    }
    let response = request
        .send()
        .map_err(|error| anyhow::Error::new(error.without_url()))?;
    let status = response.status();
    if status == StatusCode::NOT_MODIFIED && validators.is_some() {
        return Ok(Fetched::NotModified);
    }
    if status != StatusCode::OK {
        let asked = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok());
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                retry_after(asked, chrono::Utc::now())
            }
            _ => None,
        };
        return Err(Refused {
            text: refusal(status, validators.is_some()),
            retry_after,
        }
        .into());
    }
    refuse_html(&response)?;
    if let Some(length) = response
        .content_length()
        .filter(|&length| length > max_bytes)
    {
        bail!("the control file is {length} bytes, more than fetch.max_bytes ({max_bytes})");
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(String::from)
    };
    let validators = Validators {
        etag: header(ETAG),
        last_modified: header(LAST_MODIFIED),
    };
    let body = read_limited(response, max_bytes, Some(deadline))?;
    Ok(Fetched::Body(body, validators))
}

/// Why an answer other than 200 (or a 304 to a conditional request) is
/// not the file. A 204 or 206 (portlocker never asks for a range) is a
/// success, but carries no whole file.
fn refusal(status: StatusCode, conditional: bool) -> String {
    let why = if status.is_success() {
        ": not a file"
    } else if status == StatusCode::NOT_MODIFIED && !conditional {
        " to a request that was not conditional"
    } else {
        ""
    };
    format!("the server answered {status}{why}")
}

fn refuse_html(response: &Response) -> Result<()> {
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("text/html")
    {
        bail!(HTML_PAGE);
    }
    Ok(())
}

/// Reads at most `max_bytes`; more is an error, not a silent truncation.
fn read_limited(reader: impl Read, max_bytes: u64, deadline: Option<Instant>) -> Result<Vec<u8>> {
    let mut limited = reader.take(max_bytes + 1);
    let mut body = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let read = limited.read(&mut chunk).map_err(|error| {
            // The error may carry the URL inside; keep only its kind.
            anyhow!(
                "the connection failed while reading the body ({})",
                error.kind()
            )
        })?;
        if read == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..read]);
        if body.len() as u64 > max_bytes {
            bail!("the control file is larger than fetch.max_bytes ({max_bytes} bytes)");
        }
        if deadline.is_some_and(|deadline| Instant::now() > deadline) {
            bail!("the body did not arrive within fetch.timeout_secs");
        }
    }
}

fn timed_out(timeout: Duration) -> anyhow::Error {
    anyhow!(
        "no complete answer within fetch.timeout_secs ({} s)",
        timeout.as_secs()
    )
}

/// Replaces the full URL (and its path) with its scheme and host, wherever it appears.
fn redact(message: &str, url: &Url) -> String {
    let shown = format!("https://{}", host_of(url));
    let mut redacted = message.replace(url.as_str(), &shown);
    let path = url.path();
    if path.len() > 1 {
        redacted = redacted.replace(path, "/…");
    }
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropbox_preview_links_become_direct_downloads() {
        let url =
            Url::parse("https://www.dropbox.com/scl/fi/abc/portlocker.txt?rlkey=k&dl=0").unwrap();
        assert_eq!(
            dropbox_direct(&url).unwrap().as_str(),
            "https://www.dropbox.com/scl/fi/abc/portlocker.txt?rlkey=k&dl=1"
        );
        for unchanged in [
            "https://www.dropbox.com/s/abc/file?dl=1",
            "https://www.dropbox.com/s/abc/file",
            "https://example.org/file?dl=0",
        ] {
            assert_eq!(
                dropbox_direct(&Url::parse(unchanged).unwrap()),
                None,
                "{unchanged}"
            );
        }
    }

    #[test]
    fn limits_are_exact() {
        let at_limit = read_limited(&b"open ssh\n"[..], 9, None).unwrap();
        assert_eq!(at_limit, b"open ssh\n");
        let over = read_limited(&b"open ssh\n"[..], 8, None).unwrap_err();
        assert!(
            over.to_string()
                .contains("larger than fetch.max_bytes (8 bytes)")
        );
    }

    #[test]
    fn only_a_200_is_a_file() {
        let shown =
            |code: u16, conditional| refusal(StatusCode::from_u16(code).unwrap(), conditional);
        for (code, conditional, message) in [
            (204, false, "the server answered 204 No Content: not a file"),
            (
                206,
                true,
                "the server answered 206 Partial Content: not a file",
            ),
            (
                299,
                false,
                "the server answered 299 <unknown status code>: not a file",
            ),
            (
                304,
                false,
                "the server answered 304 Not Modified to a request that was not conditional",
            ),
            (404, false, "the server answered 404 Not Found"),
            (503, true, "the server answered 503 Service Unavailable"),
        ] {
            assert_eq!(shown(code, conditional), message);
        }
    }

    #[test]
    fn retry_after_is_seconds_or_a_date_and_bounded() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .to_utc();
        for (value, wait) in [
            (Some("120"), Some(120)),
            (Some(" 0 "), Some(0)),
            (Some("Wed, 25 Nov 2026 12:01:30 GMT"), Some(90)),
            (Some("Wed, 25 Nov 2026 11:00:00 GMT"), Some(0)),
            (Some("86400"), Some(3600)),
            (Some("soon"), None),
            (None, None),
        ] {
            assert_eq!(
                retry_after(value, now),
                wait.map(Duration::from_secs),
                "{value:?}"
            );
        }
    }

    #[test]
    fn open_flags_are_linux_values() {
        assert_eq!(O_NONBLOCK, libc::O_NONBLOCK);
        assert_eq!(O_NOCTTY, libc::O_NOCTTY);
    }

    #[test]
    fn redaction_hides_the_secret_path() {
        let url = Url::parse("https://www.dropbox.com/s/SECRET/file?dl=1").unwrap();
        let message = format!("error for url ({url}): path /s/SECRET/file");
        let redacted = redact(&message, &url);
        assert!(!redacted.contains("SECRET"), "{redacted}");
        assert!(redacted.contains("https://www.dropbox.com"));
    }
}
