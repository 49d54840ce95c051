//! The poke: a subscription to an ntfy topic's JSON stream
//! (`https://HOST/TOPIC/json`), where each message only makes `watch`
//! fetch the control file now. A message carries no authority — the file,
//! and its signature, still decide — and its text is never read. Resumed
//! with `since=` the last message's id after a reconnect, so a poke sent
//! meanwhile is not lost; reconnects back off.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use url::Url;

use crate::config::{Config, FetchConfig};
use crate::intake::fetch;
use crate::sys::files;
use crate::watch::inbox::Inbox;

/// ntfy sends a keepalive every 45 s: a stream silent for longer is dead.
const IDLE: Duration = Duration::from_secs(120);
/// Reconnects wait from a second, doubling, up to a minute.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(60);
/// The longest line read: an ntfy event is a few hundred bytes.
const MAX_LINE: u64 = 16 << 10;

/// What the poke thread needs, as the config gives it.
#[derive(Debug, Clone)]
pub struct Poke {
    pub stream: Url,
    pub token: Option<String>,
    pub fetch: FetchConfig,
}

/// The poke `config` asks for, with its token read; None when it asks for none.
pub fn of(config: &Config) -> Result<Option<Poke>> {
    let Some(topic) = &config.watch.poke else {
        return Ok(None);
    };
    let mut stream = topic.clone();
    let path = format!("{}/json", topic.path().trim_end_matches('/'));
    stream.set_path(&path);
    let token = match &config.watch.poke_token_file {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    Ok(Some(Poke {
        stream,
        token,
        fetch: config.fetch.clone(),
    }))
}

/// The token in `path`: root's own file, readable by nobody else.
fn read_token(path: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    if files::is_root() {
        files::check_trusted(path, "watch.poke_token_file")?;
        let mode = std::fs::metadata(path)?.mode();
        if mode & 0o044 != 0 {
            bail!(
                "watch.poke_token_file {shown} is readable by others (mode {:o}): \
                 fix with `chmod 600 {shown}`",
                mode & 0o777
            );
        }
    }
    let mut text = String::new();
    files::open_trusted(path, "watch.poke_token_file")?
        .read_to_string(&mut text)
        .map_err(|error| anyhow::anyhow!("cannot read watch.poke_token_file {shown}: {error}"))?;
    let token = text.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("watch.poke_token_file {shown} does not hold a token (one word, like tk_…)");
    }
    Ok(token.to_owned())
}

/// Starts the thread that listens to `poke` while `generation` stays `mine`.
pub fn start(poke: Poke, inbox: Arc<Inbox>, generation: Arc<AtomicU64>, mine: u64) {
    let spawned = std::thread::Builder::new()
        .name("poke".into())
        .spawn(move || listen(&poke, &inbox, &generation, mine));
    if let Err(error) = spawned {
        log::error!("the poke could not be started: {error}");
    }
}

fn listen(poke: &Poke, inbox: &Inbox, generation: &AtomicU64, mine: u64) {
    let current = || generation.load(Ordering::SeqCst) == mine && !inbox.stopping();
    let mut since: Option<String> = None;
    let mut retry = FIRST_RETRY;
    let mut told = false;
    while current() {
        let mut url = poke.stream.clone();
        if let Some(id) = &since {
            url.query_pairs_mut().append_pair("since", id);
        }
        match fetch::subscribe(&url, poke.token.as_deref(), &poke.fetch, IDLE) {
            Ok(stream) => {
                if told {
                    log::info!("the poke is connected again");
                    told = false;
                }
                retry = FIRST_RETRY;
                read_events(stream, inbox, &mut since, &current);
            }
            Err(error) if !told => {
                // Once until it works again: the fetches at `every` go on.
                log::warn!("{error:#}; retrying, fetches go on every watch.every meanwhile");
                told = true;
            }
            Err(_) => {}
        }
        if !current() {
            return;
        }
        std::thread::sleep(retry);
        retry = (retry * 2).min(LAST_RETRY);
    }
}

/// Reads the stream's events until it ends; each message pokes.
fn read_events(
    stream: Box<dyn Read + Send>,
    inbox: &Inbox,
    since: &mut Option<String>,
    current: &dyn Fn() -> bool,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while current() {
        line.clear();
        match reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Some(id) = message_id(&line) {
            *since = Some(id);
            inbox.poke();
        }
    }
}

/// The id of an ntfy `message` event; None for keepalives, the opening
/// event, anything else, or what is not one.
pub fn message_id(line: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Event {
        id: Option<String>,
        event: Option<String>,
    }
    let event: Event = serde_json::from_slice(line).ok()?;
    let id = event.id.filter(|id| {
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
    })?;
    (event.event.as_deref() == Some("message")).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_messages_poke_and_their_ids_are_kept_plain() {
        let id = |line: &str| message_id(line.as_bytes());
        assert_eq!(
            id(
                r#"{"id":"hwQ2YpKdmg","time":1635528741,"event":"message","topic":"t","message":"x"}"#
            ),
            Some("hwQ2YpKdmg".into())
        );
        assert_eq!(
            id(r#"{"id":"a1","time":1,"event":"keepalive","topic":"t"}"#),
            None
        );
        assert_eq!(
            id(r#"{"id":"a1","time":1,"event":"open","topic":"t"}"#),
            None
        );
        assert_eq!(id(r#"{"id":"a&b=c","event":"message"}"#), None);
        assert_eq!(id(r#"{"event":"message"}"#), None);
        assert_eq!(id("not json"), None);
        assert_eq!(id(""), None);
    }

    #[test]
    fn the_token_file_must_be_roots_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("poke.token");
        std::fs::write(&path, "tk_abc123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_token(&path).unwrap(), "tk_abc123");
        if files::is_root() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let message = format!("{:#}", read_token(&path).unwrap_err());
            assert!(message.contains("chmod 600"), "{message}");
            assert!(!message.contains("tk_abc123"), "{message}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(&path, "two words\n").unwrap();
        let message = format!("{:#}", read_token(&path).unwrap_err());
        assert!(
            message.contains("does not hold a token") && !message.contains("two"),
            "{message}"
        );
    }

    #[test]
    fn the_stream_is_the_topic_with_json_appended() {
        let config = Config::parse(
            "source = \"-\"\n[watch]\npoke = \"https://ntfy.example/topic\"\n[services]\nssh = 22\n",
        )
        .unwrap();
        let poke = of(&config).unwrap().unwrap();
        assert_eq!(poke.stream.as_str(), "https://ntfy.example/topic/json");
        assert_eq!(poke.token, None);
    }
}
