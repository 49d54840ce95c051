//! Signed control files: a minisign signature by the configured key, whose
//! signing time never goes backwards, is not from the future, and (with
//! `max_age`) is recent. Pure: the time is a parameter.

use chrono::{DateTime, TimeDelta, Utc};
use minisign_verify::{PublicKey, Signature};

/// How far ahead of this server's clock a signing time may be.
const ALLOWED_SKEW: TimeDelta = TimeDelta::minutes(5);

/// Checks `signature` over `body`; returns its signing time (Unix seconds).
/// `last_accepted` is the signing time of the last file accepted.
pub fn verify(
    body: &[u8],
    signature: &str,
    public_key: &str,
    last_accepted: Option<i64>,
    max_age: Option<TimeDelta>,
    now: DateTime<Utc>,
) -> Result<i64, String> {
    let key = PublicKey::from_base64(public_key)
        .map_err(|e| format!("the public key is unusable: {e}"))?;
    let signature = Signature::decode(signature)
        .map_err(|e| format!("the signature is not a minisign signature ({e})"))?;
    key.verify(body, &signature, false).map_err(|_| {
        "the signature does not match: the file was changed after signing, or signed with another key".to_owned()
    })?;
    let signed_at = timestamp(signature.trusted_comment()).ok_or_else(|| {
        "the signature's trusted comment has no timestamp:N (minisign writes one unless -t replaces it)".to_owned()
    })?;
    let signed =
        DateTime::from_timestamp(signed_at, 0).ok_or("the signing time is out of range")?;
    if signed > now + ALLOWED_SKEW {
        return Err(format!(
            "the file was signed {} in the future: the clock of the signing machine or of this server is wrong",
            span(signed - now)
        ));
    }
    if let Some(last) = last_accepted.filter(|&last| signed_at < last) {
        return Err(format!(
            "the file was signed at {}, before the file accepted last (signed at {}): an old file sent again?",
            moment(signed_at),
            moment(last)
        ));
    }
    if let Some(max_age) = max_age.filter(|&max_age| now - signed > max_age) {
        return Err(format!(
            "the file was signed {} ago, longer than signature.max_age ({}): sign it again",
            span(now - signed),
            span(max_age)
        ));
    }
    Ok(signed_at)
}

/// Whether a file signed at `signed_at` is still young enough.
pub fn check_age(signed_at: i64, max_age: TimeDelta, now: DateTime<Utc>) -> Result<(), String> {
    let age = now.timestamp() - signed_at;
    if age > max_age.num_seconds() {
        return Err(format!(
            "the control file was signed {} ago, longer than signature.max_age ({}): sign it again",
            span(TimeDelta::seconds(age)),
            span(max_age)
        ));
    }
    Ok(())
}

/// The `timestamp:N` field of a trusted comment (minisign separates fields with tabs).
fn timestamp(trusted_comment: &str) -> Option<i64> {
    trusted_comment
        .split(['\t', ' '])
        .find_map(|field| field.strip_prefix("timestamp:"))
        .and_then(|n| n.parse().ok())
}

fn moment(unix: i64) -> String {
    DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| unix.to_string())
}

/// A span in plain words: `3 days 4 hours`, `12 minutes`.
fn span(span: TimeDelta) -> String {
    let minutes = span.num_minutes().max(0);
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    let parts: Vec<String> = [(days, "day"), (hours, "hour"), (minutes, "minute")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n} {unit}{}", if n == 1 { "" } else { "s" }))
        .collect();
    if parts.is_empty() {
        "less than a minute".to_owned()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    struct Signer {
        keys: minisign::KeyPair,
    }

    impl Signer {
        fn new() -> Signer {
            Signer {
                keys: minisign::KeyPair::generate_unencrypted_keypair().unwrap(),
            }
        }

        fn public_key(&self) -> String {
            self.keys.pk.to_base64()
        }

        fn sign(&self, body: &[u8], signed_at: i64) -> String {
            let comment = format!("timestamp:{signed_at}\tfile:portlocker.txt\thashed");
            minisign::sign(
                Some(&self.keys.pk),
                &self.keys.sk,
                Cursor::new(body),
                Some(&comment),
                None,
            )
            .unwrap()
            .to_string()
        }
    }

    const NOW: i64 = 1_795_000_000;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(NOW, 0).unwrap()
    }

    #[test]
    fn a_good_signature_gives_its_signing_time() {
        let signer = Signer::new();
        let body = b"open ssh\n";
        let signature = signer.sign(body, NOW - 60);
        assert_eq!(
            verify(body, &signature, &signer.public_key(), None, None, now()),
            Ok(NOW - 60)
        );
        // The same file again is fine: it is fetched on every run.
        assert_eq!(
            verify(
                body,
                &signature,
                &signer.public_key(),
                Some(NOW - 60),
                None,
                now()
            ),
            Ok(NOW - 60)
        );
    }

    #[test]
    fn every_bad_signature_is_refused_with_its_reason() {
        let signer = Signer::new();
        let other = Signer::new();
        let body = b"close ssh\n";
        let good = signer.sign(body, NOW - 60);
        let key = signer.public_key();
        let week = Some(TimeDelta::days(7));
        let cases = [
            (
                verify(b"open ssh\n", &good, &key, None, None, now()),
                "does not match",
            ),
            (
                verify(body, &other.sign(body, NOW), &key, None, None, now()),
                "does not match",
            ),
            (
                verify(body, "not a signature", &key, None, None, now()),
                "not a minisign signature",
            ),
            (
                verify(body, "", &key, None, None, now()),
                "not a minisign signature",
            ),
            (
                verify(body, &good, &key, Some(NOW), None, now()),
                "before the file accepted last",
            ),
            (
                verify(
                    body,
                    &signer.sign(body, NOW + 3600),
                    &key,
                    None,
                    None,
                    now(),
                ),
                "signed 1 hour in the future",
            ),
            (
                verify(
                    body,
                    &signer.sign(body, NOW - 8 * 86400),
                    &key,
                    None,
                    week,
                    now(),
                ),
                "signed 8 days ago, longer than signature.max_age (7 days)",
            ),
        ];
        for (result, needle) in cases {
            let error = result.unwrap_err();
            assert!(error.contains(needle), "{error:?} lacks {needle:?}");
        }
        let untimed = minisign::sign(
            Some(&signer.keys.pk),
            &signer.keys.sk,
            Cursor::new(body),
            Some("no time here"),
            None,
        )
        .unwrap()
        .to_string();
        assert!(
            verify(body, &untimed, &key, None, None, now())
                .unwrap_err()
                .contains("no timestamp")
        );
    }

    #[test]
    fn a_little_clock_skew_is_tolerated() {
        let signer = Signer::new();
        let body = b"open ssh\n";
        let signature = signer.sign(body, NOW + 120);
        assert_eq!(
            verify(body, &signature, &signer.public_key(), None, None, now()),
            Ok(NOW + 120)
        );
    }

    #[test]
    fn age_of_a_kept_file() {
        assert!(check_age(NOW - 3600, TimeDelta::hours(2), now()).is_ok());
        let error = check_age(NOW - 3 * 3600, TimeDelta::hours(2), now()).unwrap_err();
        assert!(error.contains("signed 3 hours ago"), "{error}");
    }
}
