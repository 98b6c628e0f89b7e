//! Kubernetes: the pure render of a desired deployment into objects ([`render`]), a
//! deterministic YAML writer ([`yaml`]) and the `render` mode's sink, which writes the
//! objects as files for GitOps tools ([`files`]), and the `native` mode's sink, which applies them to
//! a cluster and watches them roll out ([`native`]).

pub mod files;
pub mod native;
pub mod render;
pub mod yaml;

/// The password of a deployment's own PostgreSQL: derived from the listener key, so it
/// is the same on every run and every agent replica without being stored anywhere.
pub fn postgres_password(listener_key: &str, deployment: uuid::Uuid) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(listener_key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(format!("postgres-password:{deployment}").as_bytes());
    let bytes = mac.finalize().into_bytes();
    bytes.iter().take(16).map(|b| format!("{b:02x}")).collect()
}
