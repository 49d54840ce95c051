//! Which control file is in force: a fresh one — fetched conditionally, its
//! signature checked, validated — or the last good one, when the fetch fails
//! or `--offline` asks. Keeps the last good copy in the state.

use std::collections::BTreeSet;

use anyhow::{Context, Result, anyhow};
use chrono::{Local, Utc};

use crate::config::{Config, FetchConfig, ServiceName};
use crate::control::{self, ControlFile};
use crate::fetch::{self, Fetched};
use crate::signature;
use crate::state::{LastGood, State};

/// The names of the configured services, which a control file may use.
fn service_names(config: &Config) -> BTreeSet<ServiceName> {
    config.services.keys().cloned().collect()
}

/// Validates control file bytes from `origin` against the config.
fn validate(config: &Config, bytes: &[u8], origin: &str) -> Result<ControlFile> {
    let services = service_names(config);
    let context = control::Context {
        services: &services,
        host_name: &config.host_name,
        ipv6: config.firewall.ipv6,
    };
    let control =
        control::parse(bytes, context).with_context(|| format!("control file from {origin}"))?;
    for warning in &control.warnings {
        log::warn!("control file from {origin}: {warning}");
    }
    Ok(control)
}

/// Fetches, checks the signature of, and validates the control file,
/// unconditionally, for a look that keeps nothing (dry run, check).
pub fn fetch_control(config: &Config, state: &State) -> Result<ControlFile> {
    let Fetched::Body(bytes, _) = fetch::fetch(&config.source, &config.fetch, None)? else {
        unreachable!("no validators were sent");
    };
    let last_signed = state.last_good.as_ref().and_then(|good| good.signed_at);
    check_signature(config, &bytes, last_signed)?;
    validate(config, &bytes, &config.source.to_string())
}

/// With a key configured: fetches the signature of `body` and checks it.
/// Returns the signing time; None when no key is configured.
fn check_signature(config: &Config, body: &[u8], last_signed: Option<i64>) -> Result<Option<i64>> {
    let Some(signature) = &config.signature else {
        return Ok(None);
    };
    let place = match &signature.url {
        Some(url) => url.clone(),
        None => config
            .source
            .with_suffix(".minisig")
            .context("signature.url must be set when the control file comes from stdin")?,
    };
    let limits = FetchConfig {
        max_bytes: MAX_SIGNATURE_BYTES,
        ..config.fetch.clone()
    };
    let text = match fetch::fetch(&place, &limits, None).context("fetching the signature")? {
        Fetched::Body(bytes, _) => String::from_utf8(bytes).context("the signature is not text")?,
        Fetched::NotModified => unreachable!("no validators were sent"),
    };
    let signed_at = signature::verify(
        body,
        &text,
        &signature.public_key,
        last_signed,
        signature.max_age,
        Utc::now(),
    )
    .map_err(|reason| anyhow!("control file from {}: {reason}", config.source))?;
    Ok(Some(signed_at))
}

/// A minisign signature is a few hundred bytes; anything bigger is not one.
const MAX_SIGNATURE_BYTES: u64 = 4096;

/// The control file a run enforces, and why it is not a fresh one, if not.
pub struct Chosen {
    pub control: Option<ControlFile>,
    /// Why the fetched file could not be used; the run fails even when the
    /// last good file is enforced in its place.
    pub problem: Option<String>,
}

/// Fetches and validates the control file, falling back to the last good
/// one (and remembering a new good one in `state`).
pub fn choose_control(config: &Config, state: &mut State, offline: bool) -> Chosen {
    if offline {
        return match last_good(config, state, log::Level::Info) {
            Ok(control) => Chosen {
                control: Some(control),
                problem: None,
            },
            Err(why) => Chosen {
                control: None,
                problem: Some(why),
            },
        };
    }
    match fetch_fresh(config, state) {
        Ok(control) => Chosen {
            control: Some(control),
            problem: None,
        },
        Err(error) => {
            let problem = format!("{error:#}");
            match last_good(config, state, log::Level::Warn) {
                Ok(control) => Chosen {
                    control: Some(control),
                    problem: Some(problem),
                },
                Err(why) => Chosen {
                    control: None,
                    problem: Some(format!("{problem}; {why}")),
                },
            }
        }
    }
}

/// Fetches the control file, conditionally when its validators are known.
fn fetch_fresh(config: &Config, state: &mut State) -> Result<ControlFile> {
    let key = config.source.key();
    let last = state.last_good.as_ref();
    let validators = last.and_then(|good| good.validators_for(&key));
    let last_signed = last.and_then(|good| good.signed_at);
    let now = Local::now().fixed_offset();
    match fetch::fetch(&config.source, &config.fetch, validators.as_ref())? {
        Fetched::NotModified => {
            let good = state
                .last_good
                .as_mut()
                .context("a 304 without a last good control file")?;
            if let Some(max_age) = config.signature.as_ref().and_then(|s| s.max_age) {
                let signed_at = good
                    .signed_at
                    .context("the kept control file was never signed")?;
                signature::check_age(signed_at, max_age, Utc::now())
                    .map_err(|reason| anyhow!(reason))?;
            }
            let control = validate(
                config,
                good.body.as_bytes(),
                "the last good copy (unchanged at the source)",
            )?;
            good.fetched_at = now;
            log::info!("the control file has not changed (304)");
            Ok(control)
        }
        Fetched::Body(bytes, validators) => {
            let signed_at = check_signature(config, &bytes, last_signed)?;
            let control = validate(config, &bytes, &config.source.to_string())?;
            let body = String::from_utf8(bytes).context("validated text is UTF-8")?;
            let unchanged = state.last_good.as_ref().filter(|good| good.body == body);
            let changed_at = unchanged.map_or(Some(now), |good| good.changed_at);
            state.last_good = Some(LastGood {
                source: key,
                fetched_at: now,
                changed_at,
                etag: validators.etag,
                last_modified: validators.last_modified,
                signed_at,
                body,
            });
            Ok(control)
        }
    }
}

/// The last good control file, checked again against today's config.
/// `level` is how loudly to say it is used: a warning when it stands in for
/// a fetch that failed, news when `--offline` asked for it.
pub fn last_good(config: &Config, state: &State, level: log::Level) -> Result<ControlFile, String> {
    let Some(good) = &state.last_good else {
        return Err("there is no last good control file yet".into());
    };
    let when = good.fetched_at.format("%Y-%m-%d %H:%M:%S");
    let control =
        validate(config, good.body.as_bytes(), "the last good copy").map_err(|error| {
            format!("the last good control file from {when} no longer fits the config: {error:#}")
        })?;
    log::log!(level, "using last good control file from {when}");
    Ok(control)
}
