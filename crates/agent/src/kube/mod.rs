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

/// What the render takes from the agent's settings, whatever the mode.
#[derive(Debug, Clone)]
pub struct RenderInputs {
    pub listener_id: uuid::Uuid,
    /// The listener key, from which each deployment's PostgreSQL password is derived.
    pub listener_key: String,
    pub postgres_image: String,
    pub redis_image: String,
}

impl RenderInputs {
    /// The objects of `rev` of `d`: all of them, or (`lgp`) the env Secret and one `LGP`.
    pub fn objects(
        &self,
        d: &protocol::DesiredDeployment,
        rev: &protocol::DesiredRevision,
        lgp: bool,
    ) -> Vec<render::Object> {
        let password = postgres_password(&self.listener_key, d.id);
        let ctx = render::RenderContext {
            listener_id: self.listener_id,
            postgres_password: &password,
            postgres_image: &self.postgres_image,
            redis_image: &self.redis_image,
        };
        if lgp {
            render::render_lgp(d, rev, &ctx)
        } else {
            render::render(d, rev, &ctx)
        }
    }
}
