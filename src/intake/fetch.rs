//! Getting the control file's bytes from its source, bounded in size and time,
//! and posting a notice. The only module that touches the network (through
//! ureq, whose one deadline bounds a whole exchange). Knows bytes, not the
//! grammar; asks for the file as it is (`identity`) and decodes gzip or
//! deflate when a server sends it anyway, bounded by its decoded size;
//! never lets a secret URL into an error message.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use ureq::http::HeaderMap;
use ureq::http::header::{
    ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, LAST_MODIFIED, RETRY_AFTER,
};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{Connector, DefaultConnector};
use ureq::{Agent, RequestBuilder};
use url::Url;

pub use ureq::http::StatusCode;

use crate::config::FetchConfig;
use crate::intake::source::{Source, host_of};
use crate::intake::{proxy, uncut};
use crate::sys::clock;
use crate::sys::files;

/// Redirects followed before giving up.
const MAX_REDIRECTS: u32 = 10;

/// What ureq reads into and writes from, each way (its default is 128 KiB,
/// a peak RSS of its own in every run): a TLS record is at most 16 KiB,
/// and the input grows when a response head needs more.
const BUFFER: usize = 16 * 1024;

/// How long a connection stays open for the next request: `watch`'s next
/// conditional GET reuses it within this (as reqwest's pool kept it).
const KEEP_ALIVE: Duration = Duration::from_secs(90);

/// How many bytes a compressed body may take on the wire beyond
/// `fetch.max_bytes`: incompressible text grows a little in gzip.
const COMPRESSED_SLACK: u64 = 16 * 1024;

/// What to do when an HTML page stands where the control file should be,
/// for a file from `source`: where the host is Dropbox, its `dl=1`.
pub fn html_hint(source: &Source) -> &'static str {
    match source {
        Source::Https(url) if is_dropbox(url) => {
            "(a Dropbox share link must end in dl=1 to get the file itself)"
        }
        Source::Https(_) => {
            "(use the link that gives the file itself, often called a raw or download link, \
             not the page that shows it)"
        }
        Source::File(_) | Source::Stdin => "(save the control file itself, as plain text)",
    }
}

fn is_dropbox(url: &Url) -> bool {
    matches!(
        url.host_str(),
        Some("www.dropbox.com" | "dropbox.com" | "dl.dropboxusercontent.com")
    )
}

/// An answer that was not the file, by its status: a caller tells a
/// missing signature (404) from a server that fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub status: StatusCode,
    message: String,
    /// What a 429 or 503 asked of the next request (`Retry-After`).
    retry_after: Option<Duration>,
}

impl fmt::Display for Answered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Answered {}

/// Whether `error` is an answer with `status`.
pub fn answered(error: &anyhow::Error, status: StatusCode) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<Answered>()
            .is_some_and(|a| a.status == status)
    })
}

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
    client: OnceLock<Agent>,
    /// How the last fetch went: whether it failed, and what the source
    /// asked of the next request (`Retry-After`).
    last: Mutex<(bool, Option<Duration>)>,
    /// A fetch made ahead of its run (`fetch_ahead`), for it to take.
    ahead: Mutex<Option<Ahead>>,
}

/// A fetch of the control file made ahead of its run: what it asked, when
/// it ended, and the answer.
struct Ahead {
    source: String,
    validators: Option<Validators>,
    ended: Instant,
    answer: Result<Fetched>,
}

/// How long a fetch made ahead answers its run: one that waited longer
/// (for the run lock) is made again.
const AHEAD_SERVES: Duration = Duration::from_secs(60);

/// The longest `Retry-After` honoured: a source asking for more (by mistake
/// or otherwise) would keep every open the owner types away for as long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl Fetcher {
    pub fn new(config: &FetchConfig) -> Fetcher {
        Fetcher {
            config: config.clone(),
            client: OnceLock::new(),
            last: Mutex::new((false, None)),
            ahead: Mutex::new(None),
        }
    }

    /// As `fetch`, over this fetcher's client; the answer of a fetch made
    /// ahead (`fetch_ahead`) of the same with the same validators, if there
    /// is one, fresh.
    pub fn fetch(&self, source: &Source, validators: Option<&Validators>) -> Result<Fetched> {
        let ahead = self.lock_ahead().take();
        if let Some(ahead) = ahead.filter(|ahead| {
            ahead.source == source.to_string()
                && ahead.validators.as_ref() == validators
                && ahead.ended.elapsed() < AHEAD_SERVES
        }) {
            return ahead.answer;
        }
        self.fetch_what(
            source,
            validators,
            self.config.max_bytes,
            "the control file",
        )
    }

    /// Fetches the control file now, for the next `fetch` to take: `watch`
    /// fetches in a thread of its own, so that a slow source never holds up
    /// a repair.
    pub fn fetch_ahead(&self, source: &Source, validators: Option<&Validators>) {
        let max_bytes = self.config.max_bytes;
        let answer = self.fetch_what(source, validators, max_bytes, "the control file");
        *self.lock_ahead() = Some(Ahead {
            source: source.to_string(),
            validators: validators.cloned(),
            ended: Instant::now(),
            answer,
        });
    }

    /// Whether a fetch made ahead waits to be taken.
    pub fn has_ahead(&self) -> bool {
        self.lock_ahead().is_some()
    }

    fn lock_ahead(&self) -> std::sync::MutexGuard<'_, Option<Ahead>> {
        self.ahead.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads a detached signature from `source`, as `fetch` reads a file,
    /// refusing more than `max_bytes` (a signature is small).
    pub fn fetch_signature(&self, source: &Source, max_bytes: u64) -> Result<Vec<u8>> {
        match self.fetch_what(source, None, max_bytes, "the signature")? {
            Fetched::Body(bytes, _) => Ok(bytes),
            Fetched::NotModified => unreachable!("no validators were sent"),
        }
    }

    /// `fetch` of at most `max_bytes`, with errors that say what was fetched (`what`).
    fn fetch_what(
        &self,
        source: &Source,
        validators: Option<&Validators>,
        max_bytes: u64,
        what: &str,
    ) -> Result<Fetched> {
        let config = &FetchConfig {
            max_bytes,
            ..self.config.clone()
        };
        let plain = |bytes| Fetched::Body(bytes, Validators::default());
        let (result, retry_after) = match source {
            Source::Stdin => (
                read_local(None, config, what)
                    .map(plain)
                    .with_context(|| format!("reading {what} from stdin")),
                None,
            ),
            Source::File(path) => (read_local(Some(path), config, what).map(plain), None),
            Source::Https(url) => match self.client() {
                Ok(client) => fetch_https(&client, url, config, validators, what),
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

    fn client(&self) -> Result<Agent> {
        if let Some(client) = self.client.get() {
            return Ok(client.clone());
        }
        let client = client(&self.config, Exchange::Fetch)?;
        Ok(self.client.get_or_init(|| client).clone())
    }
}

/// Reads a local file, or stdin for `None`, within fetch.timeout_secs.
fn read_local(path: Option<&Path>, config: &FetchConfig, what: &str) -> Result<Vec<u8>> {
    let timeout = config.timeout;
    let max_bytes = config.max_bytes;
    let deadline = Instant::now() + timeout;
    // Even an O_NONBLOCK open blocks on a hung NFS mount, and stdin may be a
    // pipe nobody writes to: this thread is abandoned at the deadline.
    let (sender, receiver) = mpsc::channel();
    let owned = path.map(Path::to_path_buf);
    // The file's name for messages: `control file` or `signature`.
    let name = what.trim_start_matches("the ").to_owned();
    std::thread::spawn(move || {
        let result = match owned {
            Some(path) => read_file(&path, max_bytes, deadline, &name),
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
            Some(path) => error.context(format!(
                "reading {} {}",
                what.trim_start_matches("the "),
                path.display()
            )),
            None => error,
        })
    })
}

/// Reads the regular file at `path`, the `name` it is known by in messages.
/// Anything else (a FIFO, a directory, a device), a link another account
/// owns, or — run as root — a file another account could have changed or
/// replaced, is refused before a byte is read (`files::open_trusted`):
/// whoever chooses what root reads here chooses what it quotes back in its
/// messages, and which ports it opens.
fn read_file(path: &Path, max_bytes: u64, deadline: Instant, name: &str) -> Result<Vec<u8>> {
    let file = files::open_trusted(path, name)?;
    read_limited(file, max_bytes, Some(deadline))
        .with_context(|| format!("reading {name} {}", path.display()))
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

/// The fetch, and the `Retry-After` of a refusal. The client's deadline
/// (fetch.timeout_secs) bounds it all: connecting, the head, every byte of
/// the body, however slowly a server sends them.
fn fetch_https(
    client: &Agent,
    url: &Url,
    config: &FetchConfig,
    validators: Option<&Validators>,
    what: &str,
) -> (Result<Fetched>, Option<Duration>) {
    let url = match dropbox_direct(url) {
        Some(direct) => {
            log::info!("the Dropbox link ends in dl=0 (a preview page); fetching it with dl=1");
            direct
        }
        None => url.clone(),
    };
    let shown = format!("https://{}", host_of(&url));
    let deadline = Instant::now() + config.timeout;
    let result = get(client, &url, validators, config, deadline);
    let retry_after = result
        .as_ref()
        .err()
        .and_then(|error| error.downcast_ref::<Answered>())
        .and_then(|answered| answered.retry_after);
    let result = result
        .map_err(|error| match error.downcast::<Answered>() {
            // Its own words hold no URL; kept whole, a caller can read its status.
            Ok(answered) => anyhow::Error::new(answered),
            Err(error) => anyhow!("{}", redact(&format!("{error:#}"), &url)),
        })
        .with_context(|| format!("fetching {what} from {shown}"));
    (result, retry_after)
}

/// How many CA certificates the system's trust store holds, as the HTTPS
/// client loads them (SSL_CERT_FILE and SSL_CERT_DIR first, then the usual
/// places); an error says why none could be read.
pub fn system_roots() -> Result<usize, String> {
    let found = rustls_native_certs::load_native_certs();
    match (found.certs.len(), found.errors.first()) {
        (0, Some(error)) => Err(error.to_string()),
        (count, _) => Ok(count),
    }
}

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
    let sent = (|| -> Result<()> {
        let request = client(config, Exchange::Post)?
            .post(url.as_str())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8");
        let response = through_proxy(request, url)
            .send(text)
            .map_err(|error| failure(error, config.timeout))?;
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
    })();
    sent.map_err(|error| anyhow!("{}", redact(&format!("{error:#}"), url)))
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
    let opened = (|| -> Result<ureq::Body> {
        let mut request = client(config, Exchange::Stream { idle })?.get(url.as_str());
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = through_proxy(request, url)
            .call()
            .map_err(|error| failure(error, config.timeout))?;
        let status = response.status();
        if status != StatusCode::OK {
            bail!("the server answered {status}");
        }
        Ok(response.into_body())
    })();
    let body = opened
        .map_err(|error| anyhow!("{}", redact(&format!("{error:#}"), url)))
        .with_context(|| format!("subscribing to the poke at {shown}"))?;
    Ok(Box::new(body.into_reader()))
}

/// What a client is made for.
#[derive(Debug, Clone, Copy)]
enum Exchange {
    /// A GET of a file: redirects followed (to https only), the whole
    /// exchange within fetch.timeout_secs.
    Fetch,
    /// A POST: no redirect followed, the whole exchange within fetch.timeout_secs.
    Post,
    /// A stream: no redirect followed, opened within fetch.timeout_secs
    /// (each step of it), then each read waits at most `idle`.
    Stream { idle: Duration },
}

/// The HTTPS client for `exchange`: https only, every status an answer to
/// read (not an error), no decoding of its own, the system's roots and
/// fetch.ca_file's, ring for the cryptography.
fn client(config: &FetchConfig, exchange: Exchange) -> Result<Agent> {
    let timeout = Some(config.timeout);
    let builder = Agent::config_builder()
        .tls_config(tls(config)?)
        .https_only(true)
        .http_status_as_error(false)
        .user_agent(concat!("portlocker/", env!("CARGO_PKG_VERSION")))
        // Not ureq's reading of the environment: `through_proxy` chooses per request.
        .proxy(None)
        .max_idle_age(KEEP_ALIVE)
        .input_buffer_size(BUFFER)
        .output_buffer_size(BUFFER);
    let builder = match exchange {
        Exchange::Fetch => builder
            .max_redirects(MAX_REDIRECTS)
            .max_redirects_will_error(true)
            .timeout_global(timeout),
        Exchange::Post => builder.max_redirects(0).timeout_global(timeout),
        Exchange::Stream { idle } => builder
            .max_redirects(0)
            .timeout_resolve(timeout)
            .timeout_connect(timeout)
            .timeout_send_request(timeout)
            .timeout_recv_response(timeout)
            .timeout_per_read(Some(idle)),
    };
    // ureq's own connectors (proxy, TCP, TLS), each connection then wrapped
    // so that only the server's close_notify ends a body with no length.
    let connector = DefaultConnector::default().chain(uncut::EndOnlyWhenSaid);
    Ok(Agent::with_parts(
        builder.build(),
        connector,
        DefaultResolver::default(),
    ))
}

/// The certificates a server's is checked against: the system's (as
/// `system_roots` counts them) and fetch.ca_file's.
fn tls(config: &FetchConfig) -> Result<TlsConfig> {
    let mut roots: Vec<Certificate<'static>> = rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|der| Certificate::from_der(der).to_owned())
        .collect();
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read fetch.ca_file {}", path.display()))?;
        let unusable = || {
            format!(
                "fetch.ca_file {} holds no usable PEM certificate",
                path.display()
            )
        };
        let mut found = 0;
        for item in ureq::tls::parse_pem(&pem) {
            if let PemItem::Certificate(certificate) = item.with_context(unusable)? {
                roots.push(certificate);
                found += 1;
            }
        }
        if found == 0 {
            bail!(unusable());
        }
    }
    let ring = rustls::crypto::ring::default_provider();
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .unversioned_rustls_crypto_provider(Arc::new(ring))
        .build())
}

/// `request` through the proxy the environment names for its host, if any.
fn through_proxy<B>(request: RequestBuilder<B>, url: &Url) -> RequestBuilder<B> {
    let Some(address) = url.host_str().and_then(proxy::for_host) else {
        return request;
    };
    match ureq::Proxy::new(&address) {
        Ok(chosen) => request.config().proxy(Some(chosen)).build(),
        Err(_) => {
            log::warn!("the proxy the environment names cannot be used: fetching directly");
            request
        }
    }
}

/// What went wrong in an exchange, in words that hold no URL (ureq's own
/// for a refused redirect hold the address it led to).
fn failure(error: ureq::Error, timeout: Duration) -> anyhow::Error {
    match error {
        ureq::Error::Timeout(_) => timed_out(timeout),
        ureq::Error::RequireHttpsOnly(_) => anyhow!("refused a redirect from https to plain http"),
        ureq::Error::TooManyRedirects => anyhow!("more than {MAX_REDIRECTS} redirects"),
        ureq::Error::BadUri(_) | ureq::Error::RedirectFailed => {
            anyhow!("the server redirected to an address that cannot be followed")
        }
        ureq::Error::HostNotFound => anyhow!("the host name could not be resolved"),
        ureq::Error::Io(error) => anyhow!("{error}"),
        other => anyhow!("{other}"),
    }
}

fn get(
    client: &Agent,
    url: &Url,
    validators: Option<&Validators>,
    config: &FetchConfig,
    deadline: Instant,
) -> Result<Fetched> {
    let max_bytes = config.max_bytes;
    // The file as it is: a body portlocker must decode is a body to trust less.
    let mut request = client.get(url.as_str()).header(ACCEPT_ENCODING, "identity");
    if let Some(validators) = validators {
        if let Some(etag) = &validators.etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        if let Some(date) = &validators.last_modified {
            request = request.header(IF_MODIFIED_SINCE, date);
        }
    }
    let response = through_proxy(request, url)
        .call()
        .map_err(|error| failure(error, config.timeout))?;
    let status = response.status();
    if status == StatusCode::NOT_MODIFIED && validators.is_some() {
        return Ok(Fetched::NotModified);
    }
    let headers = response.headers();
    let header = |name| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(String::from)
    };
    if status != StatusCode::OK {
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                retry_after(header(RETRY_AFTER).as_deref(), clock::now_utc())
            }
            _ => None,
        };
        return Err(Answered {
            status,
            message: refusal(status, validators.is_some()),
            retry_after,
        }
        .into());
    }
    refuse_html(headers, url)?;
    let validators = Validators {
        etag: header(ETAG),
        last_modified: header(LAST_MODIFIED),
    };
    let encoding = Encoding::of(header(CONTENT_ENCODING).as_deref())?;
    let wire_limit = encoding.wire_limit(max_bytes);
    if let Some(length) = response
        .body()
        .content_length()
        .filter(|&length| length > wire_limit)
    {
        bail!("the control file is {length} bytes, more than fetch.max_bytes ({max_bytes})");
    }
    let body = response.into_body().into_reader();
    let body = encoding.read(body, max_bytes, deadline)?;
    Ok(Fetched::Body(body, validators))
}

/// How the body of an answer is encoded (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    /// zlib-wrapped as HTTP says, or raw deflate as some servers send it.
    Deflate,
}

impl Encoding {
    /// The encoding a `Content-Encoding` value names; one portlocker cannot
    /// decode is refused by name.
    fn of(header: Option<&str>) -> Result<Encoding> {
        let Some(value) = header.map(str::trim).filter(|value| !value.is_empty()) else {
            return Ok(Encoding::Identity);
        };
        match value.to_ascii_lowercase().as_str() {
            "identity" => Ok(Encoding::Identity),
            "gzip" | "x-gzip" => Ok(Encoding::Gzip),
            "deflate" => Ok(Encoding::Deflate),
            _ => bail!(
                "the server sent the file encoded as {:?} (Content-Encoding), which portlocker \
                 cannot decode: it asks for the file as it is, and decodes only gzip and \
                 deflate; have the server send it plain",
                value.chars().take(40).collect::<String>()
            ),
        }
    }

    /// The most bytes the body may take on the wire.
    fn wire_limit(self, max_bytes: u64) -> u64 {
        match self {
            Encoding::Identity => max_bytes,
            _ => max_bytes.saturating_add(COMPRESSED_SLACK),
        }
    }

    /// The body decoded, at most `max_bytes` of it (a bomb is refused as
    /// soon as it decodes past them), read by `deadline`.
    fn read<'a>(self, body: impl Read + 'a, max_bytes: u64, deadline: Instant) -> Result<Vec<u8>> {
        if self == Encoding::Identity {
            return read_limited(body, max_bytes, Some(deadline));
        }
        let wire = Capped {
            inner: body,
            left: self.wire_limit(max_bytes),
        };
        let decoded: Box<dyn Read + 'a> = match self {
            Encoding::Identity => unreachable!("read above"),
            Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(wire)),
            Encoding::Deflate => {
                let mut wire = io::BufReader::new(wire);
                let zlib = io::BufRead::fill_buf(&mut wire)
                    .map(is_zlib)
                    .unwrap_or(false);
                match zlib {
                    true => Box::new(flate2::bufread::ZlibDecoder::new(wire)),
                    false => Box::new(flate2::bufread::DeflateDecoder::new(wire)),
                }
            }
        };
        let name = match self {
            Encoding::Gzip => "gzip",
            _ => "deflate",
        };
        read_limited(Decoding(decoded), max_bytes, Some(deadline))
            .with_context(|| format!("decoding the {name} body the server sent"))
    }
}

/// Whether `start` opens a zlib stream (RFC 1950: method 8, a header checksum).
fn is_zlib(start: &[u8]) -> bool {
    match start {
        [first, second, ..] => {
            first & 0x0f == 8 && (u16::from(*first) << 8 | u16::from(*second)) % 31 == 0
        }
        _ => false,
    }
}

/// A compressed body that may not pass `left` bytes: the decoder stops
/// reading, with a clear error, before a flood of input that decodes to
/// nothing can keep it busy.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte past the cap tells a longer body from one that ends here.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the compressed body is larger than fetch.max_bytes allows",
                )),
            };
        }
        let most = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let read = self.inner.read(&mut buf[..most])?;
        self.left -= read as u64;
        Ok(read)
    }
}

/// A decoder whose corrupt input is told as such, not as a broken connection.
struct Decoding<'a>(Box<dyn Read + 'a>);

impl Read for Decoding<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|error| match error.kind() {
            io::ErrorKind::InvalidData if error.to_string().contains("fetch.max_bytes") => error,
            io::ErrorKind::InvalidInput
            | io::ErrorKind::InvalidData
            | io::ErrorKind::UnexpectedEof => {
                io::Error::new(io::ErrorKind::InvalidData, "the compressed body is damaged")
            }
            _ => error,
        })
    }
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

fn refuse_html(headers: &HeaderMap, url: &Url) -> Result<()> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("text/html")
    {
        bail!(
            "the server sent Content-Type text/html: the control file is an HTML page, not \
             plain text {}",
            html_hint(&Source::Https(url.clone()))
        );
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
            if error.kind() == io::ErrorKind::InvalidData {
                return anyhow!("{error}");
            }
            if out_of_time(&error) {
                return anyhow!("the body did not arrive within fetch.timeout_secs");
            }
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

/// Whether a read of the body failed at the client's deadline.
fn out_of_time(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::TimedOut
        || error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<ureq::Error>())
            .is_some_and(|inner| matches!(inner, ureq::Error::Timeout(_)))
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

    fn compressed(encoding: Encoding, body: &[u8]) -> Vec<u8> {
        use flate2::Compression;
        use std::io::Write;
        let mut out = Vec::new();
        match encoding {
            Encoding::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(&mut out, Compression::best());
                encoder.write_all(body).unwrap();
                encoder.finish().unwrap();
            }
            Encoding::Deflate => {
                let mut encoder = flate2::write::ZlibEncoder::new(&mut out, Compression::best());
                encoder.write_all(body).unwrap();
                encoder.finish().unwrap();
            }
            Encoding::Identity => out.extend_from_slice(body),
        }
        out
    }

    fn decode(encoding: Encoding, wire: &[u8], max_bytes: u64) -> Result<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        encoding.read(wire, max_bytes, deadline)
    }

    #[test]
    fn gzip_and_deflate_bodies_are_decoded_and_bounded_by_their_decoded_size() {
        let file = b"open ssh for 2h\nclose web\n".repeat(10);
        for encoding in [Encoding::Gzip, Encoding::Deflate, Encoding::Identity] {
            let wire = compressed(encoding, &file);
            assert_eq!(decode(encoding, &wire, 1000).unwrap(), file, "{encoding:?}");
            // max_bytes is the decoded size: a bomb is refused, however small on the wire.
            let error = decode(encoding, &wire, file.len() as u64 - 1).unwrap_err();
            assert!(
                format!("{error:#}").contains("larger than fetch.max_bytes"),
                "{encoding:?}: {error:#}"
            );
        }
        let bomb = compressed(Encoding::Gzip, &vec![b'#'; 10_000_000]);
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        let error = decode(Encoding::Gzip, &bomb, 65536).unwrap_err();
        assert!(
            format!("{error:#}")
                .contains("decoding the gzip body the server sent: the control file is larger"),
            "{error:#}"
        );
        // Raw deflate, as some servers send it, and gzip in two members.
        let mut raw = Vec::new();
        {
            use std::io::Write;
            let mut encoder =
                flate2::write::DeflateEncoder::new(&mut raw, flate2::Compression::fast());
            encoder.write_all(&file).unwrap();
            encoder.finish().unwrap();
        }
        assert_eq!(decode(Encoding::Deflate, &raw, 1000).unwrap(), file);
        let mut two = compressed(Encoding::Gzip, b"close ssh\n");
        two.extend(compressed(Encoding::Gzip, b"close web\n"));
        assert_eq!(
            decode(Encoding::Gzip, &two, 1000).unwrap(),
            b"close ssh\nclose web\n"
        );
    }

    #[test]
    fn a_damaged_or_overlong_compressed_body_says_so() {
        let wire = compressed(Encoding::Gzip, b"close ssh\n");
        let error = decode(Encoding::Gzip, &wire[..wire.len() - 6], 1000).unwrap_err();
        assert!(
            format!("{error:#}").contains("the compressed body is damaged"),
            "{error:#}"
        );
        let error = decode(Encoding::Gzip, b"not gzip at all", 1000).unwrap_err();
        assert!(format!("{error:#}").contains("damaged"), "{error:#}");
        // More on the wire than max_bytes and its slack: refused before it is all read.
        let noise: Vec<u8> = (0..200_000u32).map(|n| (n * 7919 % 251) as u8).collect();
        let wire = compressed(Encoding::Gzip, &noise);
        let error = decode(Encoding::Gzip, &wire, 1000).unwrap_err();
        assert!(
            format!("{error:#}").contains("larger than fetch.max_bytes"),
            "{error:#}"
        );
    }

    #[test]
    fn an_encoding_portlocker_cannot_decode_is_named() {
        assert_eq!(Encoding::of(None).unwrap(), Encoding::Identity);
        assert_eq!(Encoding::of(Some(" GZIP ")).unwrap(), Encoding::Gzip);
        assert_eq!(Encoding::of(Some("x-gzip")).unwrap(), Encoding::Gzip);
        assert_eq!(Encoding::of(Some("deflate")).unwrap(), Encoding::Deflate);
        assert_eq!(Encoding::of(Some("identity")).unwrap(), Encoding::Identity);
        for name in ["br", "zstd", "gzip, br"] {
            let error = Encoding::of(Some(name)).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("the server sent the file encoded as {name:?}")),
                "{error}"
            );
        }
        assert!(is_zlib(&compressed(Encoding::Deflate, b"x")));
        assert!(!is_zlib(&compressed(Encoding::Gzip, b"x")));
    }

    #[test]
    fn the_html_hint_names_dl_1_only_for_dropbox() {
        let https = |url: &str| Source::Https(Url::parse(url).unwrap());
        assert!(html_hint(&https("https://www.dropbox.com/s/x/f?dl=0")).contains("dl=1"));
        for other in ["https://example.org/f.txt", "https://gist.github.com/u/1"] {
            let hint = html_hint(&https(other));
            assert!(!hint.contains("dl=1"), "{hint}");
            assert!(hint.contains("raw or download link"), "{hint}");
        }
        assert!(!html_hint(&Source::Stdin).contains("dl=1"));
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
    fn redaction_hides_the_secret_path() {
        let url = Url::parse("https://www.dropbox.com/s/SECRET/file?dl=1").unwrap();
        let message = format!("error for url ({url}): path /s/SECRET/file");
        let redacted = redact(&message, &url);
        assert!(!redacted.contains("SECRET"), "{redacted}");
        assert!(redacted.contains("https://www.dropbox.com"));
    }
}
