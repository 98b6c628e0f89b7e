//! Pushing images to the operator's container registry, one workspace at a time.
//!
//! hostplane is the token service of a registry that uses the Docker Registry token
//! flow (Docker Distribution's `auth: token`, Debian's `docker-registry`):
//! - `push-token` hands a client a short-lived login credential for its workspace and
//!   the repository prefix it may push under (`REGISTRY/<workspace id>`);
//! - the client's `docker login` / `docker push` present that credential to the
//!   registry, which sends them to `GET /registry/token` on hostplane;
//! - hostplane answers with a registry token (an ES256 JWT carrying the signing
//!   certificate in `x5c`) that grants `pull`/`push` only on repositories under that
//!   workspace's prefix; the registry checks it against the certificate it trusts;
//! - a listener's agent asks the data plane for a pull-only login ([`pull_login`]): the
//!   same flow, but its tokens grant `pull` alone, under its own workspace's prefix.
//!
//! The signing key and its self-signed certificate are kept in two files created on
//! first start; the registry's `rootcertbundle` names the certificate.

use crate::error::{json_response, ApiError, ApiResult};
use crate::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// Who signs: the `iss` of every token, which the registry's `issuer` must name.
pub const ISSUER: &str = "hostplane";
/// The audience of login credentials: never a registry's service name, so a registry
/// refuses a login credential presented as a registry token.
const LOGIN_AUDIENCE: &str = "hostplane:registry-login";
/// How long a `push-token` credential lets a client log in.
const LOGIN_TTL_SECS: i64 = 3600;
/// How long a registry token lasts (the client asks again when it runs out).
const TOKEN_TTL_SECS: i64 = 300;

/// The registry `push-token` points clients at, and the key that signs its tokens.
#[derive(Clone)]
pub struct Registry {
    /// Host (and port) clients push to, with an optional path prefix, e.g.
    /// `registry.example.com` or `127.0.0.1:5000/agents`.
    pub url: String,
    /// The registry's `auth.token.service`; the audience of registry tokens.
    pub service: String,
    signing: SigningKey,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.url)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The certificate, base64 DER, as the `x5c` header carries it.
    certificate: String,
}

impl Registry {
    /// Loads the signing key at `key_file` (PKCS#8 PEM) and its certificate at
    /// `key_file` with the extension `crt`, creating both (owner-only key) when the key
    /// file does not exist.
    pub fn load_or_create(url: String, service: String, key_file: &Path) -> Result<Self, String> {
        let cert_file = certificate_path(key_file);
        let key_pem = match std::fs::read_to_string(key_file) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key(key_file, &cert_file)?,
            Err(e) => return Err(format!("cannot read {}: {e}", key_file.display())),
        };
        let cert_pem = std::fs::read_to_string(&cert_file)
            .map_err(|e| format!("cannot read {}: {e}", cert_file.display()))?;
        let pair = rcgen::KeyPair::from_pem(&key_pem)
            .map_err(|e| format!("{} is not a PEM private key: {e}", key_file.display()))?;
        let bad = |e: jsonwebtoken::errors::Error| format!("{}: {e}", key_file.display());
        let signing = SigningKey {
            encoding: EncodingKey::from_ec_pem(key_pem.as_bytes()).map_err(bad)?,
            decoding: DecodingKey::from_ec_pem(pair.public_key_pem().as_bytes()).map_err(bad)?,
            certificate: cert_pem
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect(),
        };
        Ok(Registry {
            url: url.trim_end_matches('/').to_owned(),
            service,
            signing,
        })
    }

    /// The repository prefix of a workspace: the registry URL's path, then the id.
    fn prefix(&self, workspace: Uuid) -> String {
        match self.url.split_once('/') {
            Some((_, path)) => format!("{path}/{workspace}/"),
            None => format!("{workspace}/"),
        }
    }

    fn sign<T: Serialize>(&self, claims: &T) -> ApiResult<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("JWT".into());
        header.x5c = Some(vec![self.signing.certificate.clone()]);
        jsonwebtoken::encode(&header, claims, &self.signing.encoding)
            .map_err(|e| ApiError::Internal(format!("cannot sign a registry token: {e}")))
    }
}

/// Where the certificate of a signing key is kept.
fn certificate_path(key_file: &Path) -> PathBuf {
    key_file.with_extension("crt")
}

fn create_key(key_file: &Path, cert_file: &Path) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot generate a signing key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| format!("certificate: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hostplane registry token signer");
    let cert = params
        .self_signed(&pair)
        .map_err(|e| format!("certificate: {e}"))?;
    let pem = pair.serialize_pem();
    let write = |path: &Path, text: &str, mode: u32| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .map_err(|e| format!("cannot create {}: {e}", path.display()))
    };
    write(cert_file, &cert.pem(), 0o644)?;
    write(key_file, &pem, 0o600)?;
    tracing::warn!(
        key = %key_file.display(),
        certificate = %cert_file.display(),
        "created the key that signs registry tokens: point the registry's \
         auth.token.rootcertbundle at the certificate, \
         and give every replica the same key file"
    );
    Ok(pem)
}

#[derive(Serialize, Deserialize)]
struct LoginClaims {
    iss: String,
    aud: String,
    sub: String,
    /// The id of the API key that asked for it: a revoked key's logins stop working.
    key: Uuid,
    /// A listener's login: it may pull, never push.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pull_only: bool,
    exp: i64,
    iat: i64,
}

#[derive(Serialize)]
struct Access {
    r#type: &'static str,
    name: String,
    actions: Vec<&'static str>,
}

#[derive(Serialize)]
struct TokenClaims {
    iss: &'static str,
    sub: String,
    aud: String,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: String,
    access: Vec<Access>,
}

/// `POST /v2/deployments/{id}/push-token`: a login credential for the registry, good
/// for an hour, for the deployment's workspace only, and while the API key `key` that
/// asked for it is not revoked.
pub fn push_token(app: &AppState, workspace: Uuid, key: Uuid) -> ApiResult<Response> {
    let registry = app.config.registry.as_ref().ok_or_else(|| {
        ApiError::BadRequest(
            "push token is unavailable: this control plane has no container registry configured \
             (HOSTPLANE_REGISTRY_URL)"
                .into(),
        )
    })?;
    let credential = login(app, workspace, key, false)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "token": credential.password,
            "registry_url": format!("{}/{workspace}", registry.url),
            "username": credential.username,
        }),
    ))
}

/// A login to the registry for a listener's agent or its build Job.
pub struct RegistryLogin {
    pub registry: String,
    pub prefix: String,
    pub username: String,
    pub password: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// A login that may pull the images under `workspace`'s prefix and nothing else, good
/// for an hour and while the listener key `key` is not revoked.
pub fn pull_login(app: &AppState, workspace: Uuid, key: Uuid) -> ApiResult<RegistryLogin> {
    login(app, workspace, key, true)
}

/// A login for `workspace`'s prefix (pull-only, or pull and push), good for an hour and
/// while the key `key` is not revoked.
fn login(app: &AppState, workspace: Uuid, key: Uuid, pull_only: bool) -> ApiResult<RegistryLogin> {
    let registry = configured(app)?;
    let now = chrono::Utc::now();
    let expires_at = now + chrono::Duration::seconds(LOGIN_TTL_SECS);
    let password = registry.sign(&LoginClaims {
        iss: ISSUER.into(),
        aud: LOGIN_AUDIENCE.into(),
        sub: workspace.to_string(),
        key,
        pull_only,
        exp: expires_at.timestamp(),
        iat: now.timestamp(),
    })?;
    let host = registry
        .url
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok(RegistryLogin {
        registry: host,
        prefix: registry.prefix(workspace),
        username: "hostplane".into(),
        password,
        expires_at,
    })
}

/// The audience of a build's source credential: only the build-source route takes it.
const SOURCE_AUDIENCE: &str = "hostplane:build-source";

#[derive(Serialize, Deserialize)]
struct SourceClaims {
    iss: String,
    aud: String,
    /// The revision whose source it fetches.
    sub: Uuid,
    listener: Uuid,
    exp: i64,
}

/// What a build Job needs: a push login for the workspace's prefix and a credential
/// that fetches one revision's source.
pub struct BuildLogin {
    pub push: RegistryLogin,
    pub source_token: String,
}

/// A push login for `workspace`'s prefix (an hour, while listener key `key` lives) and
/// a credential for the source of `revision` of `listener`, for a build Job.
pub fn build_login(
    app: &AppState,
    workspace: Uuid,
    key: Uuid,
    listener: Uuid,
    revision: Uuid,
) -> ApiResult<BuildLogin> {
    let registry = configured(app)?;
    let push = login(app, workspace, key, false)?;
    let source_token = registry.sign(&SourceClaims {
        iss: ISSUER.into(),
        aud: SOURCE_AUDIENCE.into(),
        sub: revision,
        listener,
        exp: push.expires_at.timestamp(),
    })?;
    Ok(BuildLogin { push, source_token })
}

/// The listener whose build of `revision` `token` fetches the source of, when the
/// token is genuine, current and for that revision.
pub fn source_listener(app: &AppState, revision: Uuid, token: &str) -> Option<Uuid> {
    let registry = app.config.registry.as_ref()?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[SOURCE_AUDIENCE]);
    validation.set_issuer(&[ISSUER]);
    validation.leeway = 0;
    let claims =
        jsonwebtoken::decode::<SourceClaims>(token, &registry.signing.decoding, &validation)
            .ok()?
            .claims;
    (claims.sub == revision).then_some(claims.listener)
}

fn configured(app: &AppState) -> ApiResult<&Registry> {
    app.config
        .registry
        .as_ref()
        .ok_or_else(|| ApiError::NotFound(protocol::NO_REGISTRY.into()))
}

/// The login a credential carries, when the credential is genuine and current.
fn login_of(registry: &Registry, credential: &str) -> Option<LoginClaims> {
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[LOGIN_AUDIENCE]);
    validation.set_issuer(&[ISSUER]);
    validation.leeway = 0;
    jsonwebtoken::decode::<LoginClaims>(credential, &registry.signing.decoding, &validation)
        .ok()
        .map(|data| data.claims)
}

/// The password of a `Basic` authorization (the user name is not used).
fn basic_password(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split_once(':')?.1.to_owned())
}

/// `GET /registry/token?service=...&scope=repository:NAME:ACTIONS`: the registry's
/// token endpoint. Each requested scope is granted the actions (`pull`, `push`) on
/// repositories under the workspace's prefix, and nothing elsewhere.
pub async fn token(
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let registry = app
        .config
        .registry
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("Not Found".into()))?;
    let unauthorized = || {
        ApiError::Unauthorized(
            "The registry login is invalid or expired: ask for a new push token.".into(),
        )
    };
    let login = basic_password(&headers)
        .and_then(|p| login_of(registry, &p))
        .ok_or_else(unauthorized)?;
    let workspace = Uuid::parse_str(&login.sub).map_err(|_| unauthorized())?;
    let key = login.key;
    // A listener's login pulls; only a push-token pushes.
    let allowed: &[&'static str] = if login.pull_only {
        &["pull"]
    } else {
        &["pull", "push"]
    };
    // Checked on every token: a key revoked since the login was issued ends it.
    let live = app.store.get_api_key(key).await?;
    if live.is_none_or(|k| k.revoked_at.is_some()) {
        return Err(unauthorized());
    }
    let query = compat::query::Query::parse(raw.as_deref());
    if let Some(service) = query.get("service") {
        if service != registry.service {
            return Err(ApiError::BadRequest(format!(
                "This token service serves '{}', not '{service}'.",
                registry.service
            )));
        }
    }
    let prefix = registry.prefix(workspace);
    let access = query
        .get_all("scope")
        .flat_map(str::split_whitespace)
        .filter_map(|scope| {
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            if kind != "repository" || !name.starts_with(&prefix) {
                return None;
            }
            let granted: Vec<&'static str> = allowed
                .iter()
                .copied()
                .filter(|a| actions.split(',').any(|x| x == *a))
                .collect();
            (!granted.is_empty()).then(|| Access {
                r#type: "repository",
                name: name.to_owned(),
                actions: granted,
            })
        })
        .collect();
    let now = chrono::Utc::now();
    let token = registry.sign(&TokenClaims {
        iss: ISSUER,
        sub: format!("workspace:{workspace}"),
        aud: registry.service.clone(),
        exp: now.timestamp() + TOKEN_TTL_SECS,
        nbf: now.timestamp(),
        iat: now.timestamp(),
        jti: Uuid::new_v4().to_string(),
        access,
    })?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "token": token,
            "access_token": token,
            "expires_in": TOKEN_TTL_SECS,
            "issued_at": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }),
    ))
}
