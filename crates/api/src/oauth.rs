//! Agent Auth's calls out to OAuth providers and MCP servers: the code exchange and
//! refresh (the `oauth2` crate's requests, sent through our own client), the
//! authorization URL a user signs in at, and MCP discovery (RFC 9728 protected-resource
//! metadata, RFC 8414 authorization-server metadata, RFC 7591 dynamic registration).
//!
//! Every URL here is user input, so every call goes through [`Outbound`]: http(s) only,
//! no redirects, no proxy, a time limit, a size limit, and an address policy checked on
//! the addresses a name resolves to (the connection is made to those very addresses):
//! link-local addresses (cloud metadata services) and non-unicast ones never; loopback,
//! private and shared ranges only when the operator allows them.

use oauth2::basic::{BasicClient, BasicErrorResponse, BasicTokenResponse};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    Scope, TokenResponse, TokenUrl,
};
use reqwest::Url;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Limits of calls to providers.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Whether loopback, private (RFC 1918, unique-local) and shared (100.64/10)
    /// addresses may be reached.
    pub allow_private: bool,
    pub timeout: Duration,
    /// Largest answer read.
    pub max_bytes: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            allow_private: false,
            timeout: Duration::from_secs(10),
            max_bytes: 1024 * 1024,
        }
    }
}

/// Why an address may not be reached, or `None` when it may.
pub fn forbidden(ip: IpAddr, allow_private: bool) -> Option<&'static str> {
    let v4 = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => {
            if let Some(mapped) = v6.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(mapped), allow_private);
            }
            let first = v6.segments()[0];
            return if v6.is_unspecified() || v6.is_multicast() {
                Some("not a unicast address")
            } else if first & 0xffc0 == 0xfe80 {
                Some("a link-local address (where cloud metadata services answer)")
            } else if allow_private {
                None
            } else if v6.is_loopback() {
                Some("a loopback address")
            } else if first & 0xfe00 == 0xfc00 {
                Some("a private (unique-local) address")
            } else {
                None
            };
        }
    };
    let shared = v4.octets()[0] == 100 && v4.octets()[1] & 0xc0 == 64;
    if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() {
        Some("not a unicast address")
    } else if v4.is_link_local() {
        Some("a link-local address (where cloud metadata services answer)")
    } else if allow_private {
        None
    } else if v4.is_loopback() {
        Some("a loopback address")
    } else if v4.is_private() {
        Some("a private address")
    } else if shared {
        Some("a shared (carrier-grade NAT) address")
    } else {
        None
    }
}

/// Resolves names and keeps only the addresses [`forbidden`] allows.
struct Guard {
    allow_private: bool,
}

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut why = "it has no address";
            let allowed: Vec<SocketAddr> = all
                .into_iter()
                .filter(|a| match forbidden(a.ip(), allow_private) {
                    Some(reason) => {
                        why = reason;
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host} may not be reached: {why}").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Something went wrong talking to a provider; the text says what, for a person.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundError(pub String);

impl std::fmt::Display for OutboundError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OutboundError {}

fn fail<T>(msg: impl Into<String>) -> Result<T, OutboundError> {
    Err(OutboundError(msg.into()))
}

/// The innermost cause of a reqwest error, which says what really happened.
fn cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// The client every call to a provider goes through.
pub struct Outbound {
    http: reqwest::Client,
    config: OutboundConfig,
}

/// What the token endpoint is asked for.
pub enum Grant {
    /// The code a sign-in came back with, and its PKCE verifier.
    Code {
        code: String,
        verifier: Option<String>,
    },
    /// A new access token for this refresh token.
    Refresh(String),
}

/// A token answer of a provider.
#[derive(Debug, Clone)]
pub struct Obtained {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<Duration>,
    /// The scopes granted, when the provider says.
    pub scopes: Option<Vec<String>>,
}

/// What the authorization and token endpoints need of a provider.
pub struct Endpoints<'a> {
    pub client_id: &'a str,
    pub client_secret: Option<String>,
    pub auth_url: &'a str,
    pub token_url: &'a str,
    /// `none`, `client_secret_basic` or `client_secret_post`.
    pub auth_method: &'a str,
    pub redirect_uri: String,
    /// An MCP server's URL, sent as the RFC 8707 `resource`.
    pub resource: Option<&'a str>,
}

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

impl Endpoints<'_> {
    fn client(&self) -> Result<Client, OutboundError> {
        let auth = AuthUrl::new(self.auth_url.to_owned())
            .or_else(|_| fail("the provider's auth_url is not a URL"))?;
        let token = TokenUrl::new(self.token_url.to_owned())
            .or_else(|_| fail("the provider's token_url is not a URL"))?;
        let redirect = RedirectUrl::new(self.redirect_uri.clone())
            .or_else(|_| fail("the callback URL is not a URL (check --public-url)"))?;
        let mut client = BasicClient::new(ClientId::new(self.client_id.to_owned()))
            .set_auth_uri(auth)
            .set_token_uri(token)
            .set_redirect_uri(redirect)
            .set_auth_type(if self.auth_method == "client_secret_basic" {
                AuthType::BasicAuth
            } else {
                AuthType::RequestBody
            });
        if self.auth_method != "none" {
            if let Some(secret) = &self.client_secret {
                client = client.set_client_secret(ClientSecret::new(secret.clone()));
            }
        }
        Ok(client)
    }

    /// Where the user signs in: the provider's authorization URL with our client, the
    /// scopes, `state` and the PKCE challenge of `verifier`.
    pub fn authorization_url(
        &self,
        scopes: &[String],
        state: &str,
        verifier: Option<&str>,
    ) -> Result<String, OutboundError> {
        let client = self.client()?;
        let state = state.to_owned();
        let mut req = client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(scopes.iter().cloned().map(Scope::new));
        if let Some(v) = verifier {
            let v = PkceCodeVerifier::new(v.to_owned());
            req = req.set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(&v));
        }
        if let Some(resource) = self.resource {
            req = req.add_extra_param("resource", resource);
        }
        let (url, _) = req.url();
        if !matches!(url.scheme(), "http" | "https") {
            return fail("the provider's auth_url is not an http or https URL");
        }
        Ok(url.to_string())
    }
}

/// A new PKCE verifier (43 characters of a URL-safe alphabet, from 32 random bytes).
pub fn new_verifier() -> String {
    PkceCodeChallenge::new_random_sha256().1.secret().clone()
}

/// What a provider's token endpoint said, in words that carry no secret.
fn token_error(e: RequestTokenError<OutboundError, BasicErrorResponse>) -> OutboundError {
    OutboundError(match e {
        RequestTokenError::ServerResponse(r) => match r.error_description() {
            Some(d) => format!("the provider refused: {} ({d})", r.error()),
            None => format!("the provider refused: {}", r.error()),
        },
        RequestTokenError::Request(e) => e.0,
        RequestTokenError::Parse(_, _) => "the provider's answer is not a token response".into(),
        RequestTokenError::Other(o) => format!("the provider's answer is not usable: {o}"),
    })
}

fn obtained(t: &BasicTokenResponse) -> Obtained {
    Obtained {
        access_token: t.access_token().secret().clone(),
        refresh_token: t.refresh_token().map(|r| r.secret().clone()),
        expires_in: t.expires_in(),
        // An empty `scope` ("") grants no scope, not one named "".
        scopes: t.scopes().map(|s| {
            s.iter()
                .map(|x| x.as_str().to_owned())
                .filter(|x| !x.is_empty())
                .collect()
        }),
    }
}

/// MCP discovery's result: a provider's endpoints and the client registered there.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub auth_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub auth_method: String,
    pub uses_pkce: bool,
}

impl Outbound {
    pub fn new(config: OutboundConfig) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .dns_resolver(Arc::new(Guard {
                allow_private: config.allow_private,
            }))
            .user_agent(concat!("hostplane/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the TLS backend initializes");
        Outbound { http, config }
    }

    /// `raw` as a URL this client may call: http(s), with a host, and an address
    /// literal only when [`forbidden`] allows it (names are checked as they resolve).
    pub fn check_url(&self, raw: &str) -> Result<Url, OutboundError> {
        let url = Url::parse(raw).or_else(|_| fail(format!("{raw} is not a URL")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return fail(format!("{raw} is not an http or https URL"));
        }
        let ip = match url.host() {
            None => return fail(format!("{raw} has no host")),
            Some(url::Host::Domain(_)) => None,
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        };
        if let Some(why) = ip.and_then(|ip| forbidden(ip, self.config.allow_private)) {
            return fail(format!("{raw} may not be reached: {why}"));
        }
        Ok(url)
    }

    /// Sends `req` and reads its answer, up to the size limit.
    async fn send(&self, req: reqwest::Request) -> Result<http::Response<Vec<u8>>, OutboundError> {
        let url = req.url().to_string();
        self.check_url(&url)?;
        let mut res = self.http.execute(req).await.map_err(|e| {
            OutboundError(if e.is_timeout() {
                format!(
                    "{url} did not answer within {} s",
                    self.config.timeout.as_secs()
                )
            } else {
                format!("{url} cannot be reached: {}", cause(&e))
            })
        })?;
        let mut out = http::Response::builder().status(res.status());
        if let Some(h) = out.headers_mut() {
            *h = res.headers().clone();
        }
        let mut body = Vec::new();
        loop {
            let chunk = res
                .chunk()
                .await
                .map_err(|e| OutboundError(format!("{url} broke off its answer: {}", cause(&e))))?;
            let Some(chunk) = chunk else { break };
            if body.len() + chunk.len() > self.config.max_bytes {
                return fail(format!(
                    "{url} answered with more than {} bytes",
                    self.config.max_bytes
                ));
            }
            body.extend_from_slice(&chunk);
        }
        out.body(body)
            .or_else(|e| fail(format!("{url} gave an unusable answer: {e}")))
    }

    /// A token from the token endpoint for `grant` (RFC 6749 §4.1.3, §6), with the
    /// provider's client authentication and, for an MCP server, its `resource`.
    pub async fn token(&self, p: &Endpoints<'_>, grant: Grant) -> Result<Obtained, OutboundError> {
        self.check_url(p.token_url)?;
        let client = p.client()?;
        let sender = Sender(self);
        let answer = match grant {
            Grant::Code { code, verifier } => {
                let mut req = client.exchange_code(AuthorizationCode::new(code));
                if let Some(v) = verifier {
                    req = req.set_pkce_verifier(PkceCodeVerifier::new(v));
                }
                if let Some(resource) = p.resource {
                    req = req.add_extra_param("resource", resource);
                }
                req.request_async(&sender).await
            }
            Grant::Refresh(refresh) => {
                let refresh = RefreshToken::new(refresh);
                let mut req = client.exchange_refresh_token(&refresh);
                if let Some(resource) = p.resource {
                    req = req.add_extra_param("resource", resource);
                }
                req.request_async(&sender).await
            }
        };
        Ok(obtained(&answer.map_err(token_error)?))
    }

    /// A JSON object fetched with GET; `None` on a 404 (a document that is not there).
    async fn json_document(&self, url: &Url) -> Result<Option<Value>, OutboundError> {
        let req = self
            .http
            .get(url.clone())
            .header("Accept", "application/json")
            .build();
        let req = req.or_else(|e| fail(format!("the request cannot be built: {e}")))?;
        let res = self.send(req).await?;
        if res.status() == http::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !res.status().is_success() {
            return fail(format!("{url} answered {}", res.status()));
        }
        match serde_json::from_slice::<Value>(res.body()) {
            Ok(v @ Value::Object(_)) => Ok(Some(v)),
            _ => fail(format!("{url} did not answer with a JSON object")),
        }
    }

    /// The first of `candidates` that answers with a document.
    async fn first_document(
        &self,
        candidates: &[Url],
    ) -> Result<Option<(Url, Value)>, OutboundError> {
        for url in candidates {
            if let Some(doc) = self.json_document(url).await? {
                return Ok(Some((url.clone(), doc)));
            }
        }
        Ok(None)
    }

    /// Discovers an MCP server's authorization server and registers a client there
    /// whose redirect URI is `redirect_uri`.
    pub async fn discover_mcp(
        &self,
        mcp_url: &str,
        redirect_uri: &str,
        client_name: &str,
    ) -> Result<Discovered, OutboundError> {
        let step =
            |name: &'static str| move |e: OutboundError| OutboundError(format!("{name}: {e}"));
        let server = self.check_url(mcp_url)?;
        let resource = self
            .protected_resource(&server)
            .await
            .map_err(step("protected-resource metadata (RFC 9728)"))?;
        let issuer = resource
            .get("authorization_servers")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_owned);
        let issuer = issuer.ok_or_else(|| {
            OutboundError(
                "protected-resource metadata (RFC 9728): it names no authorization server".into(),
            )
        })?;
        let meta = self
            .authorization_server(&issuer)
            .await
            .map_err(step("authorization-server metadata (RFC 8414)"))?;
        let field = |name: &str| meta.get(name).and_then(Value::as_str).map(str::to_owned);
        let (Some(auth_url), Some(token_url)) =
            (field("authorization_endpoint"), field("token_endpoint"))
        else {
            return fail(
                "authorization-server metadata (RFC 8414): it lacks authorization_endpoint or token_endpoint",
            );
        };
        let listed = |name: &str, value: &str| {
            meta.get(name)
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|m| m.as_str() == Some(value)))
        };
        let uses_pkce = listed("code_challenge_methods_supported", "S256");
        let Some(registration) = field("registration_endpoint") else {
            return fail(
                "dynamic client registration (RFC 7591): the authorization server offers none; \
                 create the provider with a client of your own instead",
            );
        };
        let method = if listed(
            "token_endpoint_auth_methods_supported",
            "client_secret_post",
        ) {
            "client_secret_post"
        } else {
            "none"
        };
        let client = self
            .register(&registration, redirect_uri, client_name, method)
            .await
            .map_err(step("dynamic client registration (RFC 7591)"))?;
        let client_id = client.get("client_id").and_then(Value::as_str);
        let Some(client_id) = client_id else {
            return fail("dynamic client registration (RFC 7591): the answer has no client_id");
        };
        let secret = client.get("client_secret").and_then(Value::as_str);
        let auth_method = client
            .get("token_endpoint_auth_method")
            .and_then(Value::as_str)
            .unwrap_or(if secret.is_some() { method } else { "none" });
        Ok(Discovered {
            auth_url,
            token_url,
            client_id: client_id.to_owned(),
            client_secret: secret.map(str::to_owned),
            auth_method: auth_method.to_owned(),
            uses_pkce,
        })
    }

    /// RFC 9728: the metadata at the well-known URL of the server's path, then of its
    /// root, then where a 401's `WWW-Authenticate` points.
    async fn protected_resource(&self, server: &Url) -> Result<Value, OutboundError> {
        let candidates = well_known(server, "oauth-protected-resource");
        if let Some((_, doc)) = self.first_document(&candidates).await? {
            return Ok(doc);
        }
        let req = self.http.get(server.clone()).build();
        let req = req.or_else(|e| fail(format!("the request cannot be built: {e}")))?;
        let res = self.send(req).await?;
        let pointed = res
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(resource_metadata_param);
        let Some(pointed) = pointed else {
            return fail(format!("{server} publishes none"));
        };
        let url = self.check_url(&pointed)?;
        match self.json_document(&url).await? {
            Some(doc) => Ok(doc),
            None => fail(format!("{url} answered 404")),
        }
    }

    /// RFC 8414 (and OpenID Connect discovery, which many servers offer instead).
    async fn authorization_server(&self, issuer: &str) -> Result<Value, OutboundError> {
        let issuer = self.check_url(issuer)?;
        let mut candidates = well_known(&issuer, "oauth-authorization-server");
        candidates.extend(well_known(&issuer, "openid-configuration"));
        if let Ok(appended) = Url::parse(&format!(
            "{}/.well-known/openid-configuration",
            issuer.as_str().trim_end_matches('/')
        )) {
            candidates.push(appended);
        }
        candidates.dedup();
        match self.first_document(&candidates).await? {
            Some((_, doc)) => Ok(doc),
            None => fail(format!("{issuer} publishes none")),
        }
    }

    async fn register(
        &self,
        endpoint: &str,
        redirect_uri: &str,
        client_name: &str,
        method: &str,
    ) -> Result<Value, OutboundError> {
        let url = self.check_url(endpoint)?;
        let body = serde_json::json!({
            "client_name": client_name,
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": method,
        });
        let req = self.http.post(url.clone()).json(&body).build();
        let req = req.or_else(|e| fail(format!("the request cannot be built: {e}")))?;
        let res = self.send(req).await?;
        let doc = serde_json::from_slice::<Value>(res.body()).ok();
        if !res.status().is_success() {
            let said = doc
                .as_ref()
                .and_then(|d| d.get("error_description").or_else(|| d.get("error")))
                .and_then(Value::as_str)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            return fail(format!("{url} answered {}{said}", res.status()));
        }
        match doc {
            Some(v @ Value::Object(_)) => Ok(v),
            _ => fail(format!("{url} did not answer with a JSON object")),
        }
    }
}

/// The `oauth2` crate's requests, sent by [`Outbound::send`].
struct Sender<'a>(&'a Outbound);

type SendFuture<'c> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, OutboundError>> + Send + 'c>,
>;

impl<'c> oauth2::AsyncHttpClient<'c> for Sender<'_> {
    type Error = OutboundError;
    type Future = SendFuture<'c>;

    fn call(&'c self, req: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let req = reqwest::Request::try_from(req)
                .or_else(|e| fail(format!("the request cannot be built: {e}")))?;
            self.0.send(req).await
        })
    }
}

/// The well-known URLs of `name` for `base`: inserted before the path (RFC 8414 and
/// RFC 9728 style), then at the root.
fn well_known(base: &Url, name: &str) -> Vec<Url> {
    let path = base.path().trim_end_matches('/');
    let mut out = Vec::new();
    for p in [
        format!("/.well-known/{name}{path}"),
        format!("/.well-known/{name}"),
    ] {
        let mut u = base.clone();
        u.set_path(&p);
        u.set_query(None);
        u.set_fragment(None);
        if !out.contains(&u) {
            out.push(u);
        }
    }
    out
}

/// `resource_metadata="..."` of a `WWW-Authenticate: Bearer ...` header.
fn resource_metadata_param(header: &str) -> Option<String> {
    let at = header.find("resource_metadata=")? + "resource_metadata=".len();
    let rest = &header[at..];
    let value = match rest.strip_prefix('"') {
        Some(quoted) => &quoted[..quoted.find('"')?],
        None => rest.split([',', ' ']).next()?,
    };
    Some(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_policy() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for metadata in ["169.254.169.254", "fe80::1", "::ffff:169.254.169.254"] {
            assert!(forbidden(ip(metadata), true).is_some(), "{metadata}");
        }
        for never in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "::", "ff02::1"] {
            assert!(forbidden(ip(never), true).is_some(), "{never}");
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
        ] {
            assert!(forbidden(ip(private), false).is_some(), "{private}");
            assert_eq!(forbidden(ip(private), true), None, "{private}");
        }
        for public in ["93.184.216.34", "2606:4700::1", "100.128.0.1", "172.32.0.1"] {
            assert_eq!(forbidden(ip(public), false), None, "{public}");
        }
    }

    #[test]
    fn well_known_urls_and_the_resource_metadata_pointer() {
        let u = Url::parse("https://mcp.example.com/tools/mcp?x=1").unwrap();
        let got: Vec<String> = well_known(&u, "oauth-protected-resource")
            .iter()
            .map(Url::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "https://mcp.example.com/.well-known/oauth-protected-resource/tools/mcp",
                "https://mcp.example.com/.well-known/oauth-protected-resource"
            ]
        );
        assert_eq!(
            resource_metadata_param(
                r#"Bearer error="invalid_token", resource_metadata="https://a.example/.well-known/oauth-protected-resource""#
            )
            .as_deref(),
            Some("https://a.example/.well-known/oauth-protected-resource")
        );
        assert_eq!(resource_metadata_param("Bearer realm=x"), None);
    }

    #[tokio::test]
    async fn refused_addresses_are_never_contacted() {
        let out = Outbound::new(OutboundConfig::default());
        let e = out.check_url("http://169.254.169.254/latest").unwrap_err();
        assert!(e.0.contains("link-local"), "{e}");
        let e = out.check_url("file:///etc/passwd").unwrap_err();
        assert!(e.0.contains("not an http or https URL"), "{e}");
        // A name that resolves to loopback is refused at resolution.
        let req = out.http.get("http://localhost:9/x").build().unwrap();
        let e = out.send(req).await.unwrap_err();
        assert!(
            e.0.contains("may not be reached: a loopback address"),
            "{e}"
        );
    }
}
