//! The environment of a deployment's server and queue containers, built once for every
//! mode: each mode only turns the [`Value`]s into what it writes (a Kubernetes env entry,
//! a reference to a Secret, or a Docker `NAME=value`).
//!
//! hostplane's own variables (the port, the ids, where the stores are) come last, and a
//! deployment variable or secret reference of one of their names is left out: the server
//! must listen on 8000 and reach the stores it was given, and no container gets a name
//! twice.

use protocol::{DesiredDeployment, DesiredRevision};
use serde_json::Value as Json;

/// Which process a container runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The API server, which also runs the background jobs.
    Combined,
    /// The API server of a deployment with a separate queue worker (`prod`).
    Server,
    /// The queue worker of a `prod` deployment.
    Queue,
}

/// Where a variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Literal(String),
    /// The deployment's own variable of this name (one of its secrets).
    Given(&'a str),
    /// A key of a Secret the user keeps in the cluster (`secret_references`).
    SecretRef {
        secret: &'a str,
        key: &'a str,
    },
    /// The URI of the PostgreSQL hostplane runs for the deployment.
    OwnPostgres,
    /// The URI of the Redis hostplane runs for the deployment.
    OwnRedis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var<'a> {
    pub name: &'a str,
    pub value: Value<'a>,
}

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

/// The user's secret references that name a variable, a Secret and a key.
pub fn secret_references(d: &DesiredDeployment) -> impl Iterator<Item = Var<'_>> {
    d.secret_references
        .as_ref()
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| {
            let text = |k| r.get(k).and_then(Json::as_str);
            Some(Var {
                name: text("name")?,
                value: Value::SecretRef {
                    secret: text("secret_name")?,
                    key: text("secret_key")?,
                },
            })
        })
}

/// Every variable of a container of `rev` of `d` in `role`, in order.
pub fn container_env<'a>(
    d: &'a DesiredDeployment,
    rev: &DesiredRevision,
    role: Role,
) -> Vec<Var<'a>> {
    let given = |name: &str| d.env.iter().any(|e| e.name == name);
    let literal = |name, value: String| Var {
        name,
        value: Value::Literal(value),
    };
    let mut own = vec![
        literal("PORT", "8000".into()),
        literal("LANGSMITH_HOST_PROJECT_ID", d.id.to_string()),
        literal("LANGSMITH_HOST_REVISION_ID", rev.id.to_string()),
        literal("LANGGRAPH_HOST_DEPLOYMENT_NAME", d.name.clone()),
    ];
    match role {
        Role::Combined => {}
        Role::Server => own.push(literal("N_JOBS_PER_WORKER", "0".into())),
        Role::Queue => own.push(literal("N_JOBS_PER_WORKER", "10".into())),
    }
    // A store the deployment brings (`*_URI_CUSTOM`), else the one hostplane runs.
    let store = |name, custom, ours| Var {
        name,
        value: if given(custom) {
            Value::Given(custom)
        } else {
            ours
        },
    };
    own.push(store(
        "POSTGRES_URI",
        "POSTGRES_URI_CUSTOM",
        Value::OwnPostgres,
    ));
    own.push(store("REDIS_URI", "REDIS_URI_CUSTOM", Value::OwnRedis));
    let mut names: Vec<&str> = d.env.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut env: Vec<Var> = names
        .into_iter()
        .map(|name| Var {
            name,
            value: Value::Given(name),
        })
        .chain(secret_references(d))
        .filter(|v| own.iter().all(|o| o.name != v.name))
        .collect();
    env.extend(own);
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::EnvVar;

    fn deployment(env: &[(&str, &str)]) -> (DesiredDeployment, DesiredRevision) {
        let d: DesiredDeployment = serde_json::from_value(serde_json::json!({
            "id": "11111111-0000-0000-0000-000000000000", "name": "d", "namespace": null,
            "deployment_type": "prod", "status": "READY", "deleting": false,
            "active_revision_id": null, "revision": null, "resource_spec": null,
            "secret_references": [{"name": "TOKEN", "secret_name": "s", "secret_key": "k"},
                                  {"name": "BROKEN"}],
            "env": [],
        }))
        .unwrap();
        let rev: DesiredRevision = serde_json::from_value(serde_json::json!({
            "id": "22222222-0000-0000-0000-000000000000", "status": "AWAITING_DEPLOY",
            "image": "i", "build": null, "lease_holder": null,
            "created_at": "2026-01-01T00:00:00Z",
        }))
        .unwrap();
        let env = env
            .iter()
            .map(|(n, v)| EnvVar {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect();
        (DesiredDeployment { env, ..d }, rev)
    }

    /// The value of a name, which no container gets twice.
    fn seen<'a>(env: &'a [Var<'a>], name: &str) -> Option<&'a Value<'a>> {
        let mut all = env.iter().filter(|v| v.name == name);
        let first = all.next().map(|v| &v.value);
        assert!(all.next().is_none(), "{name} twice");
        first
    }

    #[test]
    fn hostplane_values_win_and_stores_follow_the_custom_uris() {
        let (d, rev) = deployment(&[("PORT", "9000"), ("A", "1"), ("A", "1")]);
        let env = container_env(&d, &rev, Role::Combined);
        let lit = |s: &str| Value::Literal(s.into());
        assert_eq!(seen(&env, "PORT"), Some(&lit("8000")));
        assert_eq!(seen(&env, "A"), Some(&Value::Given("A")));
        let revision = lit("22222222-0000-0000-0000-000000000000");
        assert_eq!(seen(&env, "LANGSMITH_HOST_REVISION_ID"), Some(&revision));
        assert_eq!(
            seen(&env, "LANGGRAPH_HOST_DEPLOYMENT_NAME"),
            Some(&lit("d"))
        );
        assert_eq!(seen(&env, "N_JOBS_PER_WORKER"), None);
        assert_eq!(seen(&env, "POSTGRES_URI"), Some(&Value::OwnPostgres));
        assert_eq!(seen(&env, "REDIS_URI"), Some(&Value::OwnRedis));
        let token = Value::SecretRef {
            secret: "s",
            key: "k",
        };
        assert_eq!(seen(&env, "TOKEN"), Some(&token));
        assert_eq!(seen(&env, "BROKEN"), None);

        let (d, rev) = deployment(&[("POSTGRES_URI_CUSTOM", "p"), ("REDIS_URI_CUSTOM", "r")]);
        let env = container_env(&d, &rev, Role::Queue);
        let custom = Value::Given("POSTGRES_URI_CUSTOM");
        assert_eq!(seen(&env, "POSTGRES_URI"), Some(&custom));
        assert_eq!(
            seen(&env, "REDIS_URI"),
            Some(&Value::Given("REDIS_URI_CUSTOM"))
        );
        assert_eq!(seen(&env, "N_JOBS_PER_WORKER"), Some(&lit("10")));
        let env = container_env(&d, &rev, Role::Server);
        assert_eq!(seen(&env, "N_JOBS_PER_WORKER"), Some(&lit("0")));
    }
}
