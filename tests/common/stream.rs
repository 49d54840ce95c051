//! A keep-alive HTTPS server on loopback for `watch`: the control file at
//! any path, with an ETag and 304s over connections kept open (it counts
//! connections apart from requests), and an ntfy-compatible JSON stream at
//! `/TOPIC/json` that the test pokes.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

#[derive(Default)]
struct Shared {
    body: String,
    /// Bumped with each new body: the ETag.
    version: u64,
    connections: usize,
    requests: usize,
    /// The request line of every request, oldest first.
    lines: Vec<String>,
    subscribers: Vec<Sender<String>>,
    messages: u64,
    /// Ends each stream after its first message (a dropped connection).
    drop_after_message: bool,
    /// Extra status to answer the control file with, once each.
    refusals: Vec<String>,
}

pub struct StreamServer {
    pub port: u16,
    shared: Arc<Mutex<Shared>>,
    ca_pem: String,
}

impl StreamServer {
    pub fn start(body: &str) -> StreamServer {
        rustls::crypto::ring::default_provider()
            .install_default()
            .ok();
        let (ca_pem, config) = super::https::certificates();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Mutex::new(Shared {
            body: body.to_owned(),
            version: 1,
            ..Shared::default()
        }));
        let state = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                state.lock().unwrap().connections += 1;
                let (config, state) = (config.clone(), state.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, config, &state);
                });
            }
        });
        StreamServer {
            port,
            shared,
            ca_pem,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Serves `body` from now on, with a new ETag.
    pub fn set_body(&self, body: &str) {
        let mut shared = self.shared.lock().unwrap();
        shared.body = body.to_owned();
        shared.version += 1;
    }

    /// Sends a message to every open stream; how many got it.
    pub fn poke(&self) -> usize {
        let mut shared = self.shared.lock().unwrap();
        shared.messages += 1;
        let id = format!("m{}", shared.messages);
        let line = format!(
            "{{\"id\":\"{id}\",\"time\":1,\"event\":\"message\",\"topic\":\"topic\",\"message\":\"go\"}}\n"
        );
        shared
            .subscribers
            .retain(|subscriber| subscriber.send(line.clone()).is_ok());
        shared.subscribers.len()
    }

    pub fn drop_streams_after_a_message(&self) {
        self.shared.lock().unwrap().drop_after_message = true;
    }

    /// Answers the next requests for the control file with `status` lines.
    pub fn refuse_next(&self, status: &str) {
        self.shared.lock().unwrap().refusals.push(status.to_owned());
    }

    pub fn connections(&self) -> usize {
        self.shared.lock().unwrap().connections
    }

    pub fn requests(&self) -> usize {
        self.shared.lock().unwrap().requests
    }

    pub fn request_lines(&self) -> Vec<String> {
        self.shared.lock().unwrap().lines.clone()
    }

    /// How many streams are open now.
    pub fn subscribers(&self) -> usize {
        self.shared.lock().unwrap().subscribers.len()
    }
}

fn serve(
    stream: TcpStream,
    config: Arc<ServerConfig>,
    shared: &Mutex<Shared>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    let connection = ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut reader = BufReader::new(StreamOwned::new(connection, stream));
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut head = String::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header == "\r\n" {
                break;
            }
            head.push_str(&header.to_lowercase());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        {
            let mut state = shared.lock().unwrap();
            state.requests += 1;
            state.lines.push(line.trim_end().to_owned());
        }
        if path.contains("/json") {
            return stream_events(reader.get_mut(), shared);
        }
        let response = control_file(&head, shared);
        reader.get_mut().write_all(response.as_bytes())?;
        reader.get_mut().flush()?;
    }
}

/// The control file's answer: 304 when the request's ETag is current.
fn control_file(head: &str, shared: &Mutex<Shared>) -> String {
    let mut state = shared.lock().unwrap();
    if !state.refusals.is_empty() {
        let status = state.refusals.remove(0);
        return format!("HTTP/1.1 {status}\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n");
    }
    let etag = format!("\"v{}\"", state.version);
    if head.contains(&format!("if-none-match: {etag}\r\n")) {
        return format!("HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\n\r\n");
    }
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nETag: {etag}\r\nContent-Length: {}\r\n\r\n{}",
        state.body.len(),
        state.body
    )
}

/// An ntfy stream: an `open` event, then each message sent, one JSON line each.
fn stream_events(tls: &mut impl Write, shared: &Mutex<Shared>) -> std::io::Result<()> {
    let (sender, receiver): (Sender<String>, Receiver<String>) = channel();
    shared.lock().unwrap().subscribers.push(sender);
    write!(
        tls,
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n\
         {{\"id\":\"o1\",\"time\":1,\"event\":\"open\",\"topic\":\"topic\"}}\n"
    )?;
    tls.flush()?;
    for line in receiver {
        tls.write_all(line.as_bytes())?;
        tls.flush()?;
        if shared.lock().unwrap().drop_after_message {
            return Ok(());
        }
    }
    Ok(())
}
