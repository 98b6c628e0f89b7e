//! Sealing deployment secrets at rest: XChaCha20-Poly1305 with a key from configuration.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "v1:";

#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// A box keyed by any passphrase or key text (hashed to 256 bits).
    pub fn new(key_material: &str) -> Self {
        let key = Sha256::digest(key_material.as_bytes());
        SecretBox {
            cipher: XChaCha20Poly1305::new(&key),
        }
    }

    /// A fresh random key, as text suitable for `HOSTPLANE_SECRET_KEY`.
    pub fn generate_key() -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    pub fn seal(&self, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce cannot fail.
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    }

    /// `None` when the text was not sealed with this key (or was altered).
    pub fn open(&self, sealed: &str) -> Option<Vec<u8>> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed.strip_prefix(PREFIX)?)
            .ok()?;
        if raw.len() < 24 {
            return None;
        }
        let (nonce, body) = raw.split_at(24);
        self.cipher.decrypt(XNonce::from_slice(nonce), body).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let b = SecretBox::new("k");
        let s = b.seal(b"[{\"name\":\"A\",\"value\":\"1\"}]");
        assert!(!s.contains("value"));
        assert_eq!(b.open(&s).unwrap(), b"[{\"name\":\"A\",\"value\":\"1\"}]");
        assert!(SecretBox::new("other").open(&s).is_none());
        assert_ne!(b.seal(b"x"), b.seal(b"x"));
    }
}
