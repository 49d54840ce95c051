//! Signing control files as minisign does, for tests: a `.minisig` beside
//! the file, the same carried inside it as `#minisig` lines, and the legacy
//! format of `minisign -S -l` (built by hand: the crate signs prehashed only).

use std::io::Cursor;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

pub struct Signer {
    keys: minisign::KeyPair,
}

impl Signer {
    pub fn new() -> Signer {
        Signer {
            keys: minisign::KeyPair::generate_unencrypted_keypair().unwrap(),
        }
    }

    /// The key as `[signature] public_key` takes it.
    pub fn public_key(&self) -> String {
        self.keys.pk.to_base64()
    }

    /// A signature as `minisign -S` writes it, signed `ago` seconds ago.
    pub fn sign(&self, body: &str, ago: i64) -> String {
        minisign::sign(
            Some(&self.keys.pk),
            &self.keys.sk,
            Cursor::new(body),
            Some(&format!("{}\thashed", trusted_comment(ago))),
            None,
        )
        .unwrap()
        .to_string()
    }

    /// `body` signed `ago` seconds ago, its signature appended as
    /// `minisign -S -m f && sed 's/^/#minisig /' f.minisig >> f` does.
    pub fn inline(&self, body: &str, ago: i64) -> String {
        inline(body, &self.sign(body, ago))
    }

    /// A legacy signature (algorithm `Ed`): Ed25519 over the body itself
    /// rather than over its BLAKE2b hash.
    pub fn sign_legacy(&self, body: &str, ago: i64) -> String {
        // A minisign secret key: algorithms, KDF salt and limits (54 bytes),
        // then the key ID (8), then the Ed25519 seed and public key (32 + 32).
        let secret = self.keys.sk.to_bytes();
        let (key_id, seed, public) = (&secret[54..62], &secret[62..94], &secret[94..126]);
        assert_eq!(key_id, self.keys.pk.keynum());
        let pair = ring::signature::Ed25519KeyPair::from_seed_and_public_key(seed, public)
            .expect("the key pair of a minisign secret key");
        let signature = pair.sign(body.as_bytes());
        let comment = trusted_comment(ago);
        let global = pair.sign(&[signature.as_ref(), comment.as_bytes()].concat());
        let line = [b"Ed".as_slice(), key_id, signature.as_ref()].concat();
        format!(
            "untrusted comment: signature from minisign secret key\n{}\ntrusted comment: {comment}\n{}\n",
            STANDARD.encode(line),
            STANDARD.encode(global.as_ref())
        )
    }
}

/// `body` with `signature` appended, each of its lines after `#minisig `.
pub fn inline(body: &str, signature: &str) -> String {
    let mut file = body.to_owned();
    for line in signature.lines() {
        file.push_str(&format!("#minisig {line}\n"));
    }
    file
}

/// What `minisign -S` writes as the trusted comment, `ago` seconds ago
/// (with `\thashed` after it for a prehashed signature).
fn trusted_comment(ago: i64) -> String {
    let at = chrono::Utc::now().timestamp() - ago;
    format!("timestamp:{at}\tfile:portlocker.txt")
}
