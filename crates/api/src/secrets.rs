//! Sealing deployment secrets at rest: XChaCha20-Poly1305 under a key derived with
//! HKDF-SHA256 from the configured key text, each ciphertext bound to its deployment
//! (the deployment id is associated data, so rows cannot be swapped).
//!
//! Formats: `v2:` (current) and `v1:` (sealed by older versions with SHA-256 of the key
//! text and no associated data; still opened, never written). A previous key can be
//! configured beside the current one so that secrets sealed before a key rotation stay
//! readable; everything new is sealed with the current key.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

const V1: &str = "v1:";
const V2: &str = "v2:";
const NONCE: usize = 24;

/// Shortest key text accepted: 32 characters, the length of 24 random bytes in base64.
pub const MIN_KEY_CHARS: usize = 32;

/// The ciphers one key text gives.
#[derive(Clone)]
struct Keys {
    v2: XChaCha20Poly1305,
    v1: XChaCha20Poly1305,
}

impl Keys {
    fn new(text: &str) -> Self {
        let mut key = [0u8; 32];
        hkdf::Hkdf::<Sha256>::new(Some(b"hostplane"), text.as_bytes())
            .expand(b"deployment secrets v2", &mut key)
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 length"));
        Keys {
            v2: XChaCha20Poly1305::new(&key.into()),
            v1: XChaCha20Poly1305::new(&Sha256::digest(text.as_bytes())),
        }
    }

    fn open(&self, sealed: &str, deployment: Uuid) -> Option<Vec<u8>> {
        let (cipher, text, aad): (_, _, &[u8]) = if let Some(t) = sealed.strip_prefix(V2) {
            (&self.v2, t, deployment.as_bytes())
        } else {
            (&self.v1, sealed.strip_prefix(V1)?, b"")
        };
        let raw = B64.decode(text).ok()?;
        if raw.len() < NONCE {
            return None;
        }
        let (nonce, msg) = raw.split_at(NONCE);
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg, aad })
            .ok()
    }
}

#[derive(Clone)]
pub struct SecretBox {
    current: Keys,
    previous: Option<Keys>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// A box sealing with `key` and opening with `key` or `previous`. The key must be
    /// at least [`MIN_KEY_CHARS`] characters: an empty or short key would seal secrets
    /// with a key anyone can guess.
    pub fn new(key: &str, previous: Option<&str>) -> Result<Self, String> {
        if key.trim().chars().count() < MIN_KEY_CHARS {
            return Err(format!(
                "the secret key must be at least {MIN_KEY_CHARS} characters \
                 (generate one with `openssl rand -base64 32`)"
            ));
        }
        Ok(SecretBox {
            current: Keys::new(key),
            previous: previous.filter(|p| !p.is_empty()).map(Keys::new),
        })
    }

    /// A box with a fresh random key (tests and defaults).
    pub fn generate() -> Self {
        Self::new(&Self::generate_key(), None)
            .unwrap_or_else(|_| unreachable!("a generated key is long enough"))
    }

    /// A fresh random key, as text suitable for `HOSTPLANE_SECRET_KEY`.
    pub fn generate_key() -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        B64.encode(bytes)
    }

    /// Seals `plaintext` for one deployment.
    pub fn seal(&self, plaintext: &[u8], deployment: Uuid) -> String {
        let mut nonce = [0u8; NONCE];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext,
            aad: deployment.as_bytes(),
        };
        // Encryption with a valid key and nonce cannot fail.
        let sealed = self
            .current
            .v2
            .encrypt(XNonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!("{V2}{}", B64.encode(out))
    }

    /// `None` when the text was not sealed for this deployment with the current or the
    /// previous key (or was altered).
    pub fn open(&self, sealed: &str, deployment: Uuid) -> Option<Vec<u8>> {
        self.current
            .open(sealed, deployment)
            .or_else(|| self.previous.as_ref()?.open(sealed, deployment))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";
    const PLAIN: &[u8] = b"[{\"name\":\"A\",\"value\":\"1\"}]";

    #[test]
    fn round_trip_and_tamper() {
        let b = SecretBox::new(KEY, None).unwrap();
        let d = Uuid::new_v4();
        let s = b.seal(PLAIN, d);
        assert!(s.starts_with("v2:") && !s.contains("value"));
        assert_eq!(b.open(&s, d).unwrap(), PLAIN);
        let other_key = SecretBox::new(&KEY.replace('0', "x"), None).unwrap();
        assert!(other_key.open(&s, d).is_none());
        assert_ne!(b.seal(b"x", d), b.seal(b"x", d));
        let mut altered = s.into_bytes();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(b.open(std::str::from_utf8(&altered).unwrap(), d).is_none());
    }

    /// A ciphertext copied to another deployment's row does not open there.
    #[test]
    fn bound_to_its_deployment() {
        let b = SecretBox::new(KEY, None).unwrap();
        let s = b.seal(PLAIN, Uuid::new_v4());
        assert!(b.open(&s, Uuid::new_v4()).is_none());
    }

    #[test]
    fn empty_and_short_keys_are_refused() {
        for key in ["", "   ", "short", &"k".repeat(MIN_KEY_CHARS - 1)] {
            let err = SecretBox::new(key, None).unwrap_err();
            assert!(err.contains("at least 32 characters"), "{key:?}: {err}");
        }
        assert!(SecretBox::new(&SecretBox::generate_key(), None).is_ok());
    }

    /// What older versions sealed (`v1:`, SHA-256 of the key text, no associated data)
    /// still opens, with the current key or a previous one.
    #[test]
    fn older_formats_and_previous_keys_open() {
        let legacy = |key: &str| {
            let cipher = XChaCha20Poly1305::new(&Sha256::digest(key.as_bytes()));
            let nonce = [7u8; NONCE];
            let mut out = nonce.to_vec();
            out.extend(cipher.encrypt(XNonce::from_slice(&nonce), PLAIN).unwrap());
            format!("v1:{}", B64.encode(out))
        };
        let d = Uuid::new_v4();
        let b = SecretBox::new(KEY, None).unwrap();
        assert_eq!(b.open(&legacy(KEY), d).unwrap(), PLAIN);
        // Rotation: the old key (even a short one from before) stays readable.
        let rotated = SecretBox::new(&SecretBox::generate_key(), Some("old")).unwrap();
        assert_eq!(rotated.open(&legacy("old"), d).unwrap(), PLAIN);
        let sealed_before = SecretBox::new(KEY, None).unwrap().seal(PLAIN, d);
        let rotated = SecretBox::new(&SecretBox::generate_key(), Some(KEY)).unwrap();
        assert_eq!(rotated.open(&sealed_before, d).unwrap(), PLAIN);
        assert!(rotated.seal(PLAIN, d).starts_with("v2:"));
    }
}
