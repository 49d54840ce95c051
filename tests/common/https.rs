//! A real HTTPS server on loopback, with a CA and a leaf certificate made
//! for the test, answering every request the same scripted way and keeping
//! what each sent (a POST's body too).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// How the server answers.
#[derive(Clone)]
pub enum Reply {
    /// 200 with this body and Content-Type, with a Content-Length.
    Body {
        body: Vec<u8>,
        content_type: &'static str,
    },
    /// 200 with this body and no Content-Length: the body ends when the connection closes.
    Unsized(Vec<u8>),
    /// As `Unsized`, but the connection then closes without TLS's
    /// close_notify, as when a FIN or reset is forged on the path.
    Cut(Vec<u8>),
    /// 200 with this body and an ETag, or 304 to a request that sends that ETag back.
    Etagged { body: Vec<u8>, etag: &'static str },
    /// This status line and an empty body.
    Status(&'static str),
    /// 204 as a server sends it: no Content-Length, no body.
    NoContent,
    /// This status line, these extra header lines (each ending in CRLF), and
    /// this body as text/plain with its Content-Length.
    StatusBody {
        status: &'static str,
        headers: &'static str,
        body: Vec<u8>,
    },
    /// A 302 to this location.
    Redirect(String),
    /// A 302 to `path` on this server for any other path; `then` at `path`.
    RedirectUnless {
        path: &'static str,
        then: Box<Reply>,
    },
    /// Accept the connection, then say nothing at all.
    Hang,
    /// 200 with this body and its Content-Length, sent one byte a second:
    /// the head too when `head`, else the head at once and the body so.
    Drip { body: Vec<u8>, head: bool },
}

pub struct TlsServer {
    pub port: u16,
    /// Requests answered so far.
    pub requests: Arc<AtomicUsize>,
    /// The head of every request, oldest first.
    pub heads: Arc<Mutex<Vec<String>>>,
    /// The body of every request that sent one (a POST), oldest first.
    pub bodies: Arc<Mutex<Vec<String>>>,
    reply: Arc<Mutex<Reply>>,
    ca_pem: String,
}

impl TlsServer {
    /// Starts a server on 127.0.0.1 that answers every request with `reply`.
    pub fn start(reply: Reply) -> TlsServer {
        rustls::crypto::ring::default_provider()
            .install_default()
            .ok();
        let (ca_pem, config) = certificates();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let reply = Arc::new(Mutex::new(reply));
        let (counter, seen, script) = (requests.clone(), heads.clone(), reply.clone());
        let posted = bodies.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let reply = script.lock().unwrap().clone();
                if let Reply::Hang = reply {
                    // Keep the socket open and never answer.
                    held.push(stream);
                    continue;
                }
                let (config, seen, posted) = (config.clone(), seen.clone(), posted.clone());
                std::thread::spawn(move || {
                    let _ = answer(stream, config, &reply, &seen, &posted);
                });
            }
        });
        TlsServer {
            port,
            requests,
            heads,
            bodies,
            reply,
            ca_pem,
        }
    }

    /// Changes how the server answers from the next request on.
    pub fn set_reply(&self, reply: Reply) {
        *self.reply.lock().unwrap() = reply;
    }

    /// The head of the latest request, lowercased.
    pub fn last_head(&self) -> String {
        self.heads
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }

    /// The bodies of the requests so far, as text.
    pub fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// Writes the CA certificate that signed the server's certificate to `path`.
    pub fn write_ca(&self, path: &Path) {
        std::fs::write(path, &self.ca_pem).unwrap();
    }

    /// The CA certificate that signed the server's certificate, as PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}

pub fn certificates() -> (String, Arc<ServerConfig>) {
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "portlocker test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let names = vec![
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        "localhost".to_owned(),
    ];
    let mut leaf_params = CertificateParams::new(names).unwrap();
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let chain = vec![CertificateDer::from(leaf_cert.der().to_vec())];
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
    (ca_cert.pem(), Arc::new(config))
}

fn answer(
    stream: TcpStream,
    config: Arc<ServerConfig>,
    reply: &Reply,
    heads: &Mutex<Vec<String>>,
    bodies: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let connection = ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = StreamOwned::new(connection, stream);
    // Read the request head; only the path of its first line matters.
    let mut reader = BufReader::new(&mut tls);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut head = request_line.clone();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let head = head.to_lowercase();
    heads.lock().unwrap().push(head.clone());
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse::<usize>().ok());
    if let Some(length) = length {
        let mut body = vec![0; length];
        std::io::Read::read_exact(&mut reader, &mut body)?;
        bodies
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&body).into_owned());
    }
    let requested = request_line.split_whitespace().nth(1).unwrap_or("/");
    let reply = match reply {
        Reply::RedirectUnless { path, then } if requested == *path => then.as_ref(),
        Reply::RedirectUnless { path, .. } => &Reply::Redirect(path.to_string()),
        other => other,
    };
    let mut response = Vec::new();
    match reply {
        Reply::Body { body, content_type } => {
            write!(
                response,
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            response.extend_from_slice(body);
        }
        Reply::Etagged { etag, .. } if head.contains(&format!("if-none-match: {etag}\r\n")) => {
            write!(
                response,
                "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n"
            )?;
        }
        Reply::Etagged { body, etag } => {
            write!(
                response,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nETag: {etag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            response.extend_from_slice(body);
        }
        Reply::Unsized(body) | Reply::Cut(body) => {
            write!(
                response,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
            )?;
            response.extend_from_slice(body);
        }
        Reply::Status(status) => write!(
            response,
            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
        Reply::NoContent => write!(
            response,
            "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
        )?,
        Reply::StatusBody {
            status,
            headers,
            body,
        } => {
            write!(
                response,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            response.extend_from_slice(body);
        }
        Reply::Redirect(location) => write!(
            response,
            "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?,
        Reply::Drip { body, head } => {
            write!(
                response,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            let at_once = if *head { 0 } else { response.len() };
            response.extend_from_slice(body);
            tls.write_all(&response[..at_once])?;
            tls.flush()?;
            for byte in &response[at_once..] {
                std::thread::sleep(std::time::Duration::from_secs(1));
                tls.write_all(std::slice::from_ref(byte))?;
                tls.flush()?;
            }
            return Ok(());
        }
        Reply::Hang | Reply::RedirectUnless { .. } => unreachable!("handled above"),
    }
    tls.write_all(&response)?;
    if !matches!(reply, Reply::Cut(_)) {
        tls.conn.send_close_notify();
    }
    tls.flush()
}
