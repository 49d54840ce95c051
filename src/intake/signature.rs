//! Signed control files: a minisign signature by the configured key, whose
//! signing time never goes backwards, is not from the future, and (with
//! `max_age`) is recent; beside the file, or inside it as `#minisig` lines.
//! Pure: the time is a parameter.

use chrono::{DateTime, TimeDelta, Utc};
use minisign_verify::{Error, PublicKey, Signature};

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
    key.verify(body, &signature, false)
        .map_err(|error| mismatch(error, body, &key, &signature))?;
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

/// Why a signature did not verify against the configured key. A file
/// whose line ends were changed after signing (an editor, an upload in
/// text mode) is named as such.
fn mismatch(error: Error, body: &[u8], key: &PublicKey, signature: &Signature) -> String {
    if matches!(error, Error::InvalidSignature)
        && let Some(found) = line_ends_changed(body, key, signature)
    {
        return found;
    }
    match error {
        Error::UnexpectedAlgorithm => "the signature is in minisign's legacy format (algorithm \
            Ed, made with `minisign -S -l`), which is not accepted: sign again without -l \
            (`minisign -S -m FILE`), or with the signer page (sign.html)"
            .to_owned(),
        Error::UnexpectedKeyId => {
            "the signature does not match: it was made with another key than signature.public_key"
                .to_owned()
        }
        _ => "the signature does not match: the file was changed after signing, or the \
              signature was not made by signature.public_key"
            .to_owned(),
    }
}

/// When `body` verifies with its line ends turned the other way: what changed.
fn line_ends_changed(body: &[u8], key: &PublicKey, signature: &Signature) -> Option<String> {
    let crlf = body.windows(2).any(|pair| pair == b"\r\n");
    let other: Vec<u8> = if crlf {
        String::from_utf8_lossy(body)
            .replace("\r\n", "\n")
            .into_bytes()
    } else if body.contains(&b'\n') {
        String::from_utf8_lossy(body)
            .replace('\n', "\r\n")
            .into_bytes()
    } else {
        return None;
    };
    key.verify(&other, signature, false).ok()?;
    Some(match crlf {
        true => "the signature does not match: the file's lines end in CRLF (Windows line \
                 ends), but it was signed with LF ends; an editor or an upload in text mode \
                 changed them after signing: save it with LF (Unix) line ends, or sign it again \
                 as it is"
            .to_owned(),
        false => "the signature does not match: the file's lines end in LF, but it was signed \
                  with CRLF (Windows) line ends, which something changed after signing: sign it \
                  again as it is"
            .to_owned(),
    })
}

/// What each line of a signature inside the control file starts with.
pub const INLINE_PREFIX: &str = "#minisig ";

/// A control file that carries its signature: its last lines are the four
/// lines of a `.minisig` file, each after `#minisig `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inline<'a> {
    /// What was signed: every byte before the first `#minisig ` line.
    pub message: &'a [u8],
    /// The four lines without their prefix, as a `.minisig` file holds them.
    pub signature: String,
}

/// Whether any line of `file` starts with `#minisig `.
pub fn carries_inline(file: &[u8]) -> bool {
    file.split(|&b| b == b'\n')
        .any(|line| line.starts_with(INLINE_PREFIX.as_bytes()))
}

/// Splits a control file at the signature it carries; None when no line
/// starts with `#minisig `. The block must be four such lines, and only
/// blank lines may follow it: nothing after it is signed, so a line there
/// (someone else's `open ssh`) refuses the file.
pub fn split_inline(file: &[u8]) -> Result<Option<Inline<'_>>, String> {
    let prefix = INLINE_PREFIX.as_bytes();
    let mut lines = Vec::new();
    let mut offset = 0;
    for line in file.split(|&b| b == b'\n') {
        lines.push((offset, line));
        offset += line.len() + 1;
    }
    let Some(first) = lines.iter().position(|(_, line)| line.starts_with(prefix)) else {
        return Ok(None);
    };
    // 1-based, for messages.
    let number = |index: usize| first + index + 1;
    let block = &lines[first..];
    let mut signature = String::new();
    for index in 0..4 {
        let Some(rest) = block
            .get(index)
            .and_then(|(_, line)| line.strip_prefix(prefix))
        else {
            let joined = first > 0 && contains(lines[first - 1].1, prefix);
            let hint = if joined {
                format!(
                    "; line {first} runs into it: the file did not end with a newline \
                     when the signature was appended"
                )
            } else {
                String::new()
            };
            return Err(format!(
                "the signature at line {} is {index} #minisig line{}, not four (untrusted \
                 comment, signature, trusted comment, global signature){hint}",
                number(0),
                if index == 1 { "" } else { "s" }
            ));
        };
        let rest = rest.strip_suffix(b"\r").unwrap_or(rest);
        let text = std::str::from_utf8(rest)
            .map_err(|_| format!("line {}: the signature is not text", number(index)))?;
        signature.push_str(text);
        signature.push('\n');
    }
    for (index, (_, line)) in block.iter().enumerate().skip(4) {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        return Err(if line.starts_with(prefix) {
            format!(
                "line {}: a fifth #minisig line (a signature is four)",
                number(index)
            )
        } else {
            format!(
                "line {} comes after the signature, so it is not signed: put every line \
                 above the #minisig lines and sign again",
                number(index)
            )
        });
    }
    Ok(Some(Inline {
        message: &file[..block[0].0],
        signature,
    }))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
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

        /// `body` with its signature appended as `#minisig` lines.
        fn inline(&self, body: &str, signed_at: i64) -> String {
            let mut file = body.to_owned();
            for line in self.sign(body.as_bytes(), signed_at).lines() {
                file.push_str(&format!("{INLINE_PREFIX}{line}\n"));
            }
            file
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

    /// Made with Debian's minisign 0.11: `minisign -G -W`, then
    /// `minisign -S -l -t timestamp:1795000000 -m f` over "open ssh\n".
    const LEGACY_KEY: &str = "RWRV/can/Xs3AYpo/CKv9984VK6XR6qoUFzNkYC0TN/iPdW5dYV2UL2G";
    const LEGACY: &str = "untrusted comment: signature from minisign secret key
RWRV/can/Xs3AU64JGBZogR0EDGCeP+bdWsInh1YV7alMYS2r0FYYT4NST7qvhvmVeBX7DH0K4mFp7Wppw4aGpWPfi+eNCkzwgI=
trusted comment: timestamp:1795000000
sr0t+x7hAeteEtLvcrrvOBylAmZ3Ptxm4uzdwq8Biu4CVegcSo3+1UlvJUoAyI17suaxjSmJsgebKpfA7jFqAw==
";

    #[test]
    fn a_legacy_signature_is_refused_with_how_to_sign_instead() {
        // Genuine: it verifies where legacy signatures are allowed.
        let key = PublicKey::from_base64(LEGACY_KEY).unwrap();
        let legacy = Signature::decode(LEGACY).unwrap();
        key.verify(b"open ssh\n", &legacy, true).unwrap();

        let error = verify(b"open ssh\n", LEGACY, LEGACY_KEY, None, None, now()).unwrap_err();
        assert!(error.contains("legacy format (algorithm Ed"), "{error}");
        assert!(error.contains("sign again without -l"), "{error}");
        assert!(!error.contains("changed after signing"), "{error}");
        // Carried inside the file, the same.
        let file: String = LEGACY
            .lines()
            .map(|line| format!("{INLINE_PREFIX}{line}\n"))
            .collect();
        let file = format!("open ssh\n{file}");
        let inline = split_inline(file.as_bytes()).unwrap().unwrap();
        let error = verify(
            inline.message,
            &inline.signature,
            LEGACY_KEY,
            None,
            None,
            now(),
        )
        .unwrap_err();
        assert!(error.contains("legacy format"), "{error}");
    }

    #[test]
    fn another_key_and_a_changed_file_are_told_apart() {
        let signer = Signer::new();
        let body = b"open ssh\n";
        let by_other = Signer::new().sign(body, NOW);
        let error = verify(body, &by_other, &signer.public_key(), None, None, now()).unwrap_err();
        assert!(error.contains("made with another key"), "{error}");
        let good = signer.sign(body, NOW);
        let error = verify(
            b"open ssh \n",
            &good,
            &signer.public_key(),
            None,
            None,
            now(),
        )
        .unwrap_err();
        assert!(error.contains("changed after signing"), "{error}");
    }

    /// A file signed with LF ends, then saved with CRLF (or the other way
    /// round): named for what it is, not "changed after signing" alone.
    #[test]
    fn changed_line_ends_are_named() {
        let signer = Signer::new();
        let key = signer.public_key();
        let lf = "# my server\nopen ssh for 2h\nclose web\n";
        let crlf = lf.replace('\n', "\r\n");
        let signed_lf = signer.sign(lf.as_bytes(), NOW - 60);
        let error = verify(crlf.as_bytes(), &signed_lf, &key, None, None, now()).unwrap_err();
        assert!(
            error.contains(
                "the file's lines end in CRLF (Windows line ends), but it was signed with LF ends"
            ),
            "{error}"
        );
        let signed_crlf = signer.sign(crlf.as_bytes(), NOW - 60);
        let error = verify(lf.as_bytes(), &signed_crlf, &key, None, None, now()).unwrap_err();
        assert!(
            error.contains("lines end in LF, but it was signed with CRLF"),
            "{error}"
        );
        // Signed as it is, CRLF verifies; a change besides the line ends is no line-end story.
        assert!(verify(crlf.as_bytes(), &signed_crlf, &key, None, None, now()).is_ok());
        let changed = crlf.replace("2h", "3h");
        let error = verify(changed.as_bytes(), &signed_lf, &key, None, None, now()).unwrap_err();
        assert!(error.contains("changed after signing"), "{error}");
        assert!(!error.contains("CRLF"), "{error}");
        // Inline, the same.
        let file = signer.inline(lf, NOW - 60).replace('\n', "\r\n");
        let inline = split_inline(file.as_bytes()).unwrap().unwrap();
        let error = verify(inline.message, &inline.signature, &key, None, None, now()).unwrap_err();
        assert!(error.contains("CRLF (Windows line ends)"), "{error}");
    }

    #[test]
    fn an_inline_signature_signs_every_byte_above_it() {
        let signer = Signer::new();
        let key = signer.public_key();
        let body = "# my server\r\nopen ssh for 2h\n\nclose web\n";
        let detached = signer.sign(body.as_bytes(), NOW - 60);
        let mut file = body.to_owned();
        for line in detached.lines() {
            file.push_str(&format!("#minisig {line}\n"));
        }
        let inline = split_inline(file.as_bytes()).unwrap().unwrap();
        assert_eq!(inline.message, body.as_bytes());
        assert_eq!(
            inline.signature.lines().collect::<Vec<_>>(),
            detached.lines().collect::<Vec<_>>()
        );
        assert_eq!(
            verify(inline.message, &inline.signature, &key, None, None, now()),
            Ok(NOW - 60)
        );
        // Blank lines after it, CRLF ends on its lines, no final newline: all fine.
        let block: Vec<String> = detached
            .lines()
            .map(|line| format!("{INLINE_PREFIX}{line}"))
            .collect();
        for variant in [
            format!("{file}\n  \r\n\t\n"),
            format!("{body}{}", block.join("\n")),
            format!("{body}{}\r\n", block.join("\r\n")),
        ] {
            let inline = split_inline(variant.as_bytes()).unwrap().unwrap();
            assert_eq!(
                verify(inline.message, &inline.signature, &key, None, None, now()),
                Ok(NOW - 60),
                "{variant:?}"
            );
        }
        // An empty file can be signed too.
        let empty = signer.inline("", NOW);
        let inline = split_inline(empty.as_bytes()).unwrap().unwrap();
        assert_eq!(inline.message, b"");
        assert!(verify(b"", &inline.signature, &key, None, None, now()).is_ok());
    }

    #[test]
    fn every_rule_of_detached_signatures_holds_inline() {
        let signer = Signer::new();
        let key = signer.public_key();
        let week = Some(TimeDelta::days(7));
        let check = |file: String, last: Option<i64>| {
            let inline = split_inline(file.as_bytes()).unwrap().unwrap();
            verify(inline.message, &inline.signature, &key, last, week, now()).unwrap_err()
        };
        let tampered = signer
            .inline("close ssh\n", NOW)
            .replacen("close", "open", 1);
        let cases = [
            (check(tampered, None), "changed after signing"),
            (
                check(Signer::new().inline("open ssh\n", NOW), None),
                "another key",
            ),
            (
                check(signer.inline("open ssh\n", NOW - 60), Some(NOW)),
                "before the file accepted last",
            ),
            (
                check(signer.inline("open ssh\n", NOW + 3600), None),
                "in the future",
            ),
            (
                check(signer.inline("open ssh\n", NOW - 8 * 86400), None),
                "longer than signature.max_age",
            ),
        ];
        for (error, needle) in cases {
            assert!(error.contains(needle), "{error:?} lacks {needle:?}");
        }
        // A trusted comment changed after signing is refused too.
        let file = signer.inline("open ssh\n", NOW - 60).replace(
            &format!("timestamp:{}", NOW - 60),
            &format!("timestamp:{NOW}"),
        );
        let inline = split_inline(file.as_bytes()).unwrap().unwrap();
        assert!(verify(inline.message, &inline.signature, &key, None, None, now()).is_err());
    }

    #[test]
    fn a_block_that_is_not_four_lines_or_has_lines_after_it_is_refused() {
        let signer = Signer::new();
        let file = signer.inline("close ssh\n", NOW);
        let lines: Vec<&str> = file.lines().collect();
        let cases = [
            (
                format!("{file}open ssh\n"),
                "line 6 comes after the signature, so it is not signed",
            ),
            (
                format!("{file}\n# a comment\n"),
                "line 7 comes after the signature",
            ),
            (
                format!("{file}#minisig again\n"),
                "line 6: a fifth #minisig line",
            ),
            (
                format!("{}\n", lines[..4].join("\n")),
                "the signature at line 2 is 3 #minisig lines, not four",
            ),
            (
                format!("{}\nopen ssh\n{}\n", lines[..3].join("\n"), lines[3]),
                "the signature at line 2 is 2 #minisig lines",
            ),
            // `minisign -S` over a file without a final newline, then appended.
            (
                file.replacen("\n#minisig", "#minisig", 1),
                "the signature at line 2 is 3 #minisig lines, not four (untrusted comment, \
                 signature, trusted comment, global signature); line 1 runs into it: the file \
                 did not end with a newline",
            ),
        ];
        for (text, needle) in cases {
            let error = split_inline(text.as_bytes()).unwrap_err();
            assert!(error.contains(needle), "{error:?} lacks {needle:?}");
        }
        let mut bytes = file.into_bytes();
        let at = bytes.len() - 3;
        bytes[at] = 0xff;
        assert_eq!(
            split_inline(&bytes).unwrap_err(),
            "line 5: the signature is not text"
        );
    }

    #[test]
    fn a_file_without_a_block_is_left_whole() {
        for text in [
            "open ssh\n",
            "",
            "# minisig is not the prefix\n #minisig indented is a comment\n#minisigx\n",
        ] {
            assert_eq!(split_inline(text.as_bytes()), Ok(None), "{text:?}");
            assert!(!carries_inline(text.as_bytes()), "{text:?}");
        }
        assert!(carries_inline(b"open ssh\n#minisig x\n"));
    }
}
