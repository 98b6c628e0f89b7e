//! Kubernetes: the pure render of a desired deployment into objects ([`render`]), a
//! deterministic YAML writer ([`yaml`]) and the `render` mode's sink, which writes the
//! objects as files for GitOps tools ([`files`]), and the `native` mode's sink, which applies them to
//! a cluster and watches them roll out ([`native`]).

pub mod files;
pub mod job;
pub mod native;
pub mod plan;
pub mod render;
pub mod yaml;

pub use crate::env::postgres_password;

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
    /// The objects of `rev` of `d`: all of them, or (`lgp`) the env Secret and one `LGP`;
    /// their pods pull with the Secret `pull_secret` too when it is given.
    pub fn objects(
        &self,
        d: &protocol::DesiredDeployment,
        rev: &protocol::DesiredRevision,
        lgp: bool,
        pull_secret: Option<&str>,
    ) -> Vec<render::Object> {
        let password = postgres_password(&self.listener_key, d.id);
        let ctx = render::RenderContext {
            listener_id: self.listener_id,
            postgres_password: &password,
            postgres_image: &self.postgres_image,
            redis_image: &self.redis_image,
            pull_secret,
        };
        if lgp {
            render::render_lgp(d, rev, &ctx)
        } else {
            render::render(d, rev, &ctx)
        }
    }
}
