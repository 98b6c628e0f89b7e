//! API key values: generated with 256 bits of entropy, stored only as a SHA-256 hash.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A new key: `hp_` followed by 32 random bytes in URL-safe base64.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "hp_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The hex SHA-256 of a key, the only form a key is stored in.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
