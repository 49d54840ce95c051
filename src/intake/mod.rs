//! What the owner wants: the kept wanted state, checked again against
//! today's config and key, and a fresh control file — fetched
//! conditionally, its signature checked, validated whole — merged into it.

pub mod control;
pub(crate) mod fetch;
pub(crate) mod intent;
mod proxy;
pub mod signature;
pub(crate) mod source;
pub mod state;
mod uncut;

use std::collections::BTreeSet;

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, FixedOffset, Utc};

use crate::config::{Config, ServiceName, SignatureConfig, Unnamed};
use crate::sys::clock;
use control::ControlFile;
use fetch::{Fetched, Fetcher, Validators};
use intent::Wanted;
use source::Source;
use state::{LastGood, State};

/// The names of the configured services, which a control file may use.
fn service_names(config: &Config) -> BTreeSet<ServiceName> {
    config.services.keys().cloned().collect()
}

fn parse(config: &Config, bytes: &[u8]) -> Result<ControlFile, control::Rejection> {
    let services = service_names(config);
    let context = control::Context {
        services: &services,
        host_name: &config.host_name,
        ipv6: config.firewall.ipv6,
    };
    control::parse(bytes, context)
}

/// Validates control file bytes from `origin` against the config.
fn validate(config: &Config, bytes: &[u8], origin: &str) -> Result<ControlFile> {
    let control = parse(config, bytes)
        .map_err(|rejection| match rejection {
            control::Rejection::Html => {
                anyhow!("{rejection} {}", fetch::html_hint(&config.source))
            }
            other => anyhow::Error::new(other),
        })
        .with_context(|| format!("control file from {origin}"))?;
    for warning in &control.warnings {
        log::warn!("control file from {origin}: {warning}");
    }
    Ok(control)
}

/// The wanted state kept in `state`, as today's config reads it. A line
/// that no longer fits (its service taken out of the config, a source it
/// can no longer honour) is dropped and named in the second value; a
/// service left with no line is closed, never opened.
pub fn kept_wanted(config: &Config, state: &State) -> (Wanted, Vec<String>) {
    let mut wanted = Wanted::new();
    let mut dropped = Vec::new();
    for (service, lines) in &state.wanted {
        let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
        match parse(config, text.as_bytes()) {
            Ok(control) => intent::merge(&mut wanted, &control),
            Err(_) => {
                // Line by line, to keep what still fits.
                let mut kept = ControlFile::default();
                for line in lines {
                    match parse(config, line.as_bytes()) {
                        Ok(control) => {
                            for (name, directives) in control.directives {
                                kept.directives.entry(name).or_default().extend(directives);
                            }
                        }
                        Err(_) => dropped.push(line.clone()),
                    }
                }
                let configured = config.services.keys().any(|s| s.as_str() == service);
                if configured && kept.directives.is_empty() {
                    kept = parse(config, format!("close {service}\n").as_bytes())
                        .expect("a close of a configured service is valid");
                }
                intent::merge(&mut wanted, &kept);
            }
        }
    }
    (wanted, dropped)
}

/// Why a kept `line` no longer fits the config (as `kept_wanted` finds
/// it), for `check`; None when it fits.
pub(crate) fn unfit(config: &Config, line: &str) -> Option<String> {
    match parse(config, line.as_bytes()) {
        Ok(_) => None,
        Err(control::Rejection::BadLines(errors)) => errors.into_iter().next().map(|e| e.reason),
        Err(other) => Some(other.to_string()),
    }
}

/// Why the kept copy of the control file is not in force at `now`, when
/// it is not and the state keeps anything it could stand for; for `check`.
pub(crate) fn kept_not_in_force(
    config: &Config,
    state: &State,
    now: DateTime<Utc>,
) -> Option<String> {
    if state.last_good.is_none() && state.wanted.is_empty() {
        return None;
    }
    check_kept(config, state.last_good.as_ref(), now).err()
}

/// The ports of `service` as the config has them: `80/tcp,443/tcp`.
fn ports_of(config: &Config, service: &str) -> Option<String> {
    let (_, ports) = config
        .services
        .iter()
        .find(|(s, _)| s.as_str() == service)?;
    Some(
        ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// Records the ports of every service in the wanted state, for
/// `carry_renames` after a config edit.
pub fn remember_ports(config: &Config, state: &mut State) {
    state.ports = (state.wanted.keys())
        .filter_map(|service| Some((service.clone(), ports_of(config, service)?)))
        .collect();
}

/// A service the config no longer has, whose ports one it has now and no
/// line has named had: renamed, it keeps what was asked of it (`close
/// ssh` becomes `close sshd`), or its close would end with a config edit.
/// What was carried over, in words.
pub fn carry_renames(config: &Config, state: &mut State) -> Vec<String> {
    let mut said = Vec::new();
    let gone: Vec<String> = (state.wanted.keys())
        .filter(|service| ports_of(config, service).is_none())
        .cloned()
        .collect();
    for old in gone {
        let Some(ports) = state.ports.get(&old).cloned() else {
            continue;
        };
        let heirs: Vec<String> = (config.services.keys())
            .map(ToString::to_string)
            .filter(|new| {
                !state.wanted.contains_key(new) && ports_of(config, new).as_ref() == Some(&ports)
            })
            .collect();
        let [new] = &heirs[..] else { continue };
        let lines: Vec<String> = (state.wanted.remove(&old).unwrap_or_default().iter())
            .map(|line| {
                let mut words: Vec<&str> = line.split(' ').collect();
                if words.get(1) == Some(&old.as_str()) {
                    words[1] = new;
                }
                words.join(" ")
            })
            .collect();
        said.push(format!(
            "{new} has the ports {old} had ({ports}): it keeps what was asked of {old} ({})",
            lines.join("; ")
        ));
        state.ports.remove(&old);
        state.ports.insert(new.clone(), ports);
        state.wanted.insert(new.clone(), lines);
    }
    said
}

/// The wanted state as the state file keeps it.
pub fn keep_wanted(state: &mut State, wanted: &Wanted) {
    state.wanted = wanted
        .iter()
        .map(|(service, lines)| {
            let lines = lines.iter().map(|d| d.render()).collect();
            (service.to_string(), lines)
        })
        .collect();
    intent::retain_starts(&mut state.opens, wanted);
}

/// Whether the kept copy may stand for the owner's word: with a key
/// configured, it must carry a signature by that key that is not too old.
fn check_kept(config: &Config, good: Option<&LastGood>, now: DateTime<Utc>) -> Result<(), String> {
    let Some(key) = &config.signature else {
        return Ok(());
    };
    let good = good.ok_or("there is no kept control file")?;
    let signature = good
        .signature
        .as_deref()
        .ok_or("it was accepted without a signature")?;
    signature::verify(
        good.body.as_bytes(),
        signature,
        &key.public_key,
        None,
        key.max_age,
        now,
    )
    .map(|_| ())
}

/// The validators a run's fetch would send now (see `fetch_fresh`), for a
/// fetch made ahead of the run.
pub fn validators_now(
    config: &Config,
    state: &State,
    now: DateTime<FixedOffset>,
) -> Option<Validators> {
    let good = state.last_good.as_ref()?;
    check_kept(config, Some(good), now.to_utc()).ok()?;
    good.validators_for(&config.source.key())
}

/// What the kept state asks now, as a run would enforce it before any
/// fetch: for `status`, which changes nothing.
pub fn asked(config: &Config, state: &State, now: DateTime<FixedOffset>) -> Wanted {
    in_force(config, state, now)
}

/// The kept wanted state that may be enforced now. When the kept copy of
/// the file does not stand — a key configured and the copy not signed by
/// it — whatever it opened is closed (and a fetch does not rely on it:
/// `validators_now`).
fn in_force(config: &Config, state: &State, now: DateTime<FixedOffset>) -> Wanted {
    let (mut wanted, dropped) = kept_wanted(config, state);
    for line in &dropped {
        log::info!("`{line}` no longer fits the config and is no longer in force");
    }
    put_back(config, state.last_good.as_ref(), &mut wanted);
    match check_kept(config, state.last_good.as_ref(), now.to_utc()) {
        Ok(()) => wanted,
        Err(reason) => {
            let closed = intent::close_opens(&mut wanted);
            if !closed.is_empty() {
                let names: Vec<&str> = closed.iter().map(ServiceName::as_str).collect();
                log::warn!(
                    "the kept control file is not in force ({reason}), so what it opened is closed: {}",
                    names.join(", ")
                );
            }
            wanted
        }
    }
}

/// A service the kept copy names but the kept wanted state lacks (taken out
/// of the config, then put back) gets what the copy says of it again, which
/// a 304 confirms; what it opened stays closed, since when its count began
/// went with it.
fn put_back(config: &Config, good: Option<&LastGood>, wanted: &mut Wanted) {
    let Some(Ok(control)) = good.map(|good| parse(config, good.body.as_bytes())) else {
        return;
    };
    let mut back: Wanted = control
        .directives
        .into_iter()
        .filter(|(service, _)| !wanted.contains_key(service))
        .collect();
    let closed = intent::close_opens(&mut back);
    if !closed.is_empty() {
        let names: Vec<&str> = closed.iter().map(ServiceName::as_str).collect();
        log::warn!(
            "back in the config, {} stays closed, though the kept control file opened it, \
             until a new control file names it",
            names.join(", ")
        );
    }
    wanted.extend(back);
}

/// What a run would want now, for a look that keeps nothing (dry run):
/// the kept state, and unless `offline` a fresh file fetched
/// unconditionally and merged in. A file that cannot be used is an error.
pub fn look(
    config: &Config,
    state: &State,
    offline: bool,
    now: DateTime<FixedOffset>,
) -> Result<Wanted> {
    let mut wanted = in_force(config, state, now);
    if !offline {
        intent::merge(&mut wanted, &fetch_control(config, state)?);
    }
    Ok(wanted)
}

/// A state from before wanted states were kept: its last good file, read
/// again, is what the owner asked.
pub fn migrate(config: &Config, state: &mut State) {
    let Some(good) = &state.last_good else { return };
    if let Ok(control) = parse(config, good.body.as_bytes()) {
        let mut wanted = Wanted::new();
        intent::merge(&mut wanted, &control);
        keep_wanted(state, &wanted);
    }
}

/// What the owner wants this run, and why a fresh file could not be used.
pub struct Intake {
    pub wanted: Wanted,
    /// Why the fetched file could not be used; the run fails, and the kept
    /// wanted state stays in force.
    pub problem: Option<String>,
}

/// Fetches (through `fetcher`) and validates the control file and merges
/// it into the kept wanted state, which `state` then holds; offline, the
/// kept state alone.
pub fn take(
    config: &Config,
    fetcher: &Fetcher,
    state: &mut State,
    offline: bool,
    now: DateTime<FixedOffset>,
) -> Intake {
    let mut wanted = in_force(config, state, now);
    let problem = if offline {
        match &state.last_good {
            Some(good) => {
                log::info!(
                    "using last good control file from {}",
                    good.fetched_at.format("%Y-%m-%d %H:%M:%S")
                );
                None
            }
            // With default = "close" there is something to enforce all the same.
            None if state.wanted.is_empty() && config.firewall.default == Unnamed::Keep => {
                Some("there is no last good control file yet".to_owned())
            }
            None => None,
        }
    } else {
        match fetch_fresh(config, fetcher, state, now) {
            Ok(Some(fresh)) => {
                intent::merge(&mut wanted, &fresh);
                None
            }
            Ok(None) => None,
            Err(error) => {
                let problem = format!("{error:#}");
                // After a list of bad lines, on a line of its own.
                let then = if problem.contains('\n') { "\n" } else { "; " };
                Some(match &state.last_good {
                    Some(good) => {
                        let when = good.fetched_at.format("%Y-%m-%d %H:%M:%S");
                        log::warn!("using last good control file from {when}");
                        format!("{problem}{then}enforced the last good control file instead")
                    }
                    None => format!("{problem}{then}there is no last good control file yet"),
                })
            }
        }
    };
    keep_wanted(state, &wanted);
    Intake { wanted, problem }
}

/// Fetches, checks the signature of, and validates the control file,
/// unconditionally, for a look that keeps nothing (dry run, check).
pub fn fetch_control(config: &Config, state: &State) -> Result<ControlFile> {
    let Fetched::Body(bytes, _) = fetch::fetch(&config.source, &config.fetch, None)? else {
        unreachable!("no validators were sent");
    };
    let last_signed = state.last_good.as_ref().and_then(|good| good.signed_at);
    let fetcher = Fetcher::new(&config.fetch);
    let checked = check_signature(config, &fetcher, &bytes, last_signed)?;
    validate(config, checked.message, &config.source.to_string())
}

/// A fetched file whose signature, when a key is configured, was checked.
struct Checked<'a> {
    /// What is obeyed: the whole file, or the part above its `#minisig`
    /// lines when it carries its signature.
    message: &'a [u8],
    /// The signing time and the signature; None when no key is configured.
    signed: Option<(i64, String)>,
}

/// With a key configured: checks the signature `file` carries, or else
/// fetches its detached signature and checks that. Without one, a file
/// that carries a signature is obeyed whole, with a warning that nothing
/// checks it.
fn check_signature<'a>(
    config: &Config,
    fetcher: &Fetcher,
    file: &'a [u8],
    last_signed: Option<i64>,
) -> Result<Checked<'a>> {
    let origin = &config.source;
    let Some(signature) = &config.signature else {
        if signature::carries_inline(file) {
            log::warn!(
                "control file from {origin}: it is signed (#minisig lines), but nothing checks \
                 the signature: set [signature] public_key in the config to the signer's key"
            );
        }
        return Ok(Checked {
            message: file,
            signed: None,
        });
    };
    let inline = signature::split_inline(file)
        .map_err(|reason| anyhow!("control file from {origin}: {reason}"))?;
    let (message, text) = match inline {
        Some(inline) => (inline.message, inline.signature),
        None => (file, fetch_detached(config, fetcher, signature)?),
    };
    let signed_at = signature::verify(
        message,
        &text,
        &signature.public_key,
        last_signed,
        signature.max_age,
        clock::now_utc(),
    )
    .map_err(|reason| anyhow!("control file from {origin}: {reason}"))?;
    Ok(Checked {
        message,
        signed: Some((signed_at, text)),
    })
}

/// The signature beside the control file: at `signature.url`, or at the
/// source with `.minisig` appended.
fn fetch_detached(config: &Config, fetcher: &Fetcher, key: &SignatureConfig) -> Result<String> {
    let place = match &key.url {
        Some(url) => url.clone(),
        None => config.source.with_suffix(".minisig").context(
            "signature.url must be set when the control file comes from stdin \
             (or the file must carry its signature as #minisig lines)",
        )?,
    };
    let bytes = fetcher
        .fetch_signature(&place, MAX_SIGNATURE_BYTES)
        .map_err(|error| {
            let missing = fetch::answered(&error, fetch::StatusCode::NOT_FOUND)
                || error.chain().any(|cause| {
                    cause
                        .downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
                });
            match missing {
                // Most often an unsigned file, or one whose #minisig lines were lost.
                true => anyhow!(
                    "control file from {}: this file carries no #minisig lines, and its detached \
                 signature at {} {}: \
                 sign the file on the signer page (which puts the signature inside it), or \
                 put its .minisig where signature.url says",
                    config.source,
                    shown_place(&place),
                    match place {
                        Source::Https(_) => "answered 404 Not Found",
                        _ => "does not exist",
                    }
                ),
                false => error,
            }
        })?;
    String::from_utf8(bytes).context("the signature is not text")
}

/// Where a detached signature is, without the secret path of a URL.
fn shown_place(place: &Source) -> String {
    match place {
        Source::Https(url) => format!("https://{}/…", source::host_of(url)),
        other => other.to_string(),
    }
}

/// A minisign signature is a few hundred bytes; anything bigger is not one.
const MAX_SIGNATURE_BYTES: u64 = 4096;

/// Fetches the control file, conditionally when the kept copy is in force
/// and its validators are known. A fresh file is validated whole and kept
/// as the last good copy; None when the source says it has not changed.
fn fetch_fresh(
    config: &Config,
    fetcher: &Fetcher,
    state: &mut State,
    now: DateTime<FixedOffset>,
) -> Result<Option<ControlFile>> {
    let key = config.source.key();
    let validators = validators_now(config, state, now);
    let last_signed = state.last_good.as_ref().and_then(|good| good.signed_at);
    match fetcher.fetch(&config.source, validators.as_ref())? {
        Fetched::NotModified => {
            let good = state
                .last_good
                .as_mut()
                .context("a 304 without a last good control file")?;
            good.fetched_at = now;
            log::info!("the control file has not changed (304)");
            Ok(None)
        }
        Fetched::Body(bytes, validators) => {
            let checked = check_signature(config, fetcher, &bytes, last_signed)?;
            let control = validate(config, checked.message, &config.source.to_string())?;
            // What is kept is what was signed, so the kept copy can be checked again.
            let body =
                String::from_utf8(checked.message.to_vec()).context("validated text is UTF-8")?;
            let unchanged = state.last_good.as_ref().filter(|good| good.body == body);
            let changed_at = unchanged.map_or(Some(now), |good| good.changed_at);
            let (signed_at, signature) = checked.signed.unzip();
            state.last_good = Some(LastGood {
                source: key,
                fetched_at: now,
                changed_at,
                etag: validators.etag,
                last_modified: validators.last_modified,
                signed_at,
                signature,
                body,
            });
            Ok(Some(control))
        }
    }
}
