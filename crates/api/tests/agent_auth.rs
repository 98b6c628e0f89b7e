//! Agent Auth's decisions where the reference is silent (docs/compatibility.md), with
//! exact bodies, through the real router on both backends. The sign-in with real OAuth
//! servers and the official SDK is `crates/hostplane/tests/agent_auth.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, TestApp};
use serde_json::{json, Value};

fn provider(id: &str) -> Value {
    json!({
        "provider_id": id, "name": "Acme", "client_id": "cid", "client_secret": "s3cret",
        "auth_url": "https://auth.example.com/authorize?prompt=consent",
        "token_url": "https://auth.example.com/token", "uses_pkce": true,
    })
}

fn detail(text: &str) -> Value {
    json!({ "detail": text })
}

async fn providers_and_sign_ins(backend: Backend) {
    let app = TestApp::new(backend).await;
    let created = app
        .call("POST", "/v2/auth/providers", Some(provider("acme")))
        .await;
    assert_eq!(created.status, 200);
    let body = created.json();
    assert!(body.get("client_secret").is_none());
    assert_eq!(body["organization_id"], app.org.to_string());
    // A second provider with the same id: 409; an unknown one: 404.
    let again = app
        .call("POST", "/v2/auth/providers", Some(provider("acme")))
        .await;
    assert_eq!(
        (again.status.as_u16(), again.json()),
        (409, detail("OAuth provider 'acme' already exists"))
    );
    for (method, body) in [
        ("GET", None),
        ("PATCH", Some(json!({"name": "x"}))),
        ("DELETE", None),
    ] {
        let res = app.call(method, "/v2/auth/providers/nope", body).await;
        assert_eq!(
            (res.status.as_u16(), res.json()),
            (404, detail("OAuth provider 'nope' not found")),
            "{method}"
        );
    }
    // POST to a provider other than mcp-discover is a 405, before auth.
    let res = app
        .send("POST", "/v2/auth/providers/acme", &[], Some(b"{}".to_vec()))
        .await;
    assert_eq!(res.status.as_u16(), 405);

    // authenticate: someone must own the token.
    let res = app
        .call(
            "POST",
            "/v2/auth/authenticate",
            Some(json!({"provider": "acme", "scopes": ["read"]})),
        )
        .await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (400, detail("user_id or ls_user_id is required"))
    );
    let res = app
        .call(
            "POST",
            "/v2/auth/authenticate",
            Some(json!({"provider": "acme", "scopes": ["read", "write"], "ls_user_id": "ls-1"})),
        )
        .await;
    assert_eq!(res.status.as_u16(), 200);
    let started = res.json();
    assert_eq!(started["status"], "pending");
    assert_eq!(started["user_id"], "ls-1");
    assert_eq!(
        (started["token"].clone(), started["metadata"].clone()),
        (Value::Null, Value::Null)
    );
    let url = parse_url(started["url"].as_str().unwrap());
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let names: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "prompt",
            "response_type",
            "client_id",
            "state",
            "code_challenge",
            "code_challenge_method",
            "redirect_uri",
            "scope"
        ]
    );
    let get = |n: &str| query.iter().find(|(k, _)| k == n).unwrap().1.clone();
    assert_eq!(
        get("prompt"),
        "consent",
        "the provider's own parameters are kept"
    );
    assert_eq!(get("client_id"), "cid");
    assert_eq!(get("code_challenge_method"), "S256");
    assert_eq!(get("code_challenge").len(), 43);
    assert_eq!(get("state").len(), 43);
    assert_eq!(
        get("redirect_uri"),
        "http://127.0.0.1:1985/auth/callback/acme"
    );
    assert_eq!(get("scope"), "read write");
    // Another sign-in has another state.
    let second = app
        .call(
            "POST",
            "/v2/auth/authenticate",
            Some(json!({"provider": "acme", "scopes": [], "user_id": "u", "force_new": true})),
        )
        .await
        .json();
    assert_ne!(
        parse_url(second["url"].as_str().unwrap()).query(),
        url.query()
    );

    // wait: pending answers timeout (a negative timeout is 0), unknown ids not_found.
    let auth_id = started["auth_id"].as_str().unwrap();
    let res = app
        .call("GET", &format!("/v2/auth/wait/{auth_id}?timeout=-5"), None)
        .await;
    assert_eq!(res.json(), json!({"status": "timeout", "token": null}));
    for id in ["not-a-uuid", "0b6e6e0a-58c2-4d0c-9f5d-3a1f1f5b8e01"] {
        let res = app
            .call("GET", &format!("/v2/auth/wait/{id}?timeout=0"), None)
            .await;
        assert_eq!(res.json(), json!({"status": "not_found", "token": null}));
    }

    // Callbacks with a state nobody issued change nothing.
    let invalid = detail("This sign-in link is not valid: it is unknown, expired or already used.");
    let res = app
        .call(
            "POST",
            "/v2/auth/callback/acme",
            Some(json!({"code": "c", "state": "nope"})),
        )
        .await;
    assert_eq!((res.status.as_u16(), res.json()), (400, invalid.clone()));
    let res = app.call("GET", "/v2/auth/callback/acme?code=c", None).await;
    assert_eq!((res.status.as_u16(), res.json()), (400, invalid));
    let page = app
        .send("GET", "/auth/callback/acme?code=c&state=nope", &[], None)
        .await;
    assert_eq!(page.status.as_u16(), 400);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let text = String::from_utf8(page.body).unwrap();
    assert!(
        text.contains(
            "<p>This sign-in link is not valid: it is unknown, expired or already used.</p>"
        ),
        "{text}"
    );
    let res = app
        .call("GET", &format!("/v2/auth/wait/{auth_id}?timeout=0"), None)
        .await;
    assert_eq!(res.json(), json!({"status": "timeout", "token": null}));

    // A code_challenge_method hostplane does not speak.
    let res = app
        .call(
            "PATCH",
            "/v2/auth/providers/acme",
            Some(json!({"code_challenge_method": "plain"})),
        )
        .await;
    assert_eq!(res.json()["code_challenge_method"], "plain");
    let res = app
        .call(
            "POST",
            "/v2/auth/authenticate",
            Some(json!({"provider": "acme", "scopes": [], "user_id": "u"})),
        )
        .await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (400, detail("OAuth provider 'acme' uses the code_challenge_method 'plain'; only S256 is supported"))
    );

    // Tokens and connections that do not exist.
    let token = "0b6e6e0a-58c2-4d0c-9f5d-3a1f1f5b8e01";
    let res = app
        .call(
            "POST",
            "/v2/auth/authenticate",
            Some(json!({"provider": "acme", "scopes": [], "user_id": "u", "token_id": token})),
        )
        .await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (404, detail(&format!("OAuth token '{token}' not found")))
    );
    for id in [token, "exists", "x"] {
        let res = app
            .call("DELETE", &format!("/v2/auth/tokens/{id}"), None)
            .await;
        assert_eq!(
            (res.status.as_u16(), res.json()),
            (404, detail(&format!("OAuth token '{id}' not found")))
        );
    }
    let res = app
        .call(
            "POST",
            "/v2/auth/agents/a/connections",
            Some(json!({"oauth_token_id": "x"})),
        )
        .await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (404, detail("OAuth token 'x' not found"))
    );
    let res = app
        .call("DELETE", "/v2/auth/agents/a/connections/x", None)
        .await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (404, detail("Connection 'x' not found"))
    );

    // MCP discovery may not reach private addresses by default.
    let res = app
        .call(
            "POST",
            "/v2/auth/providers/mcp-discover",
            Some(json!({"provider_id": "m", "name": "M", "mcp_server_url": "http://10.0.0.1/mcp"})),
        )
        .await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (
            400,
            detail(
                "MCP discovery failed: http://10.0.0.1/mcp may not be reached: a private address"
            )
        )
    );
    let res = app
        .call(
            "POST",
            "/v2/auth/providers/mcp-discover",
            Some(json!({"provider_id": "acme", "name": "M", "mcp_server_url": "http://10.0.0.1/mcp"})),
        )
        .await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (409, detail("OAuth provider 'acme' already exists"))
    );

    // Deleting a provider ends its sign-ins.
    let res = app.call("DELETE", "/v2/auth/providers/acme", None).await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (200, json!({"message": "OAuth provider 'acme' deleted"}))
    );
    let res = app
        .call("GET", &format!("/v2/auth/wait/{auth_id}?timeout=0"), None)
        .await;
    assert_eq!(res.json(), json!({"status": "not_found", "token": null}));
    let res = app.call("GET", "/v2/auth/providers", None).await;
    assert_eq!(res.json(), json!([]));
}

fn parse_url(s: &str) -> url::Url {
    url::Url::parse(s).unwrap()
}

/// A server on 127.0.0.1 that accepts connections and never answers: its port.
async fn silent_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    port
}

/// Calls to providers that do not answer: MCP discovery as a whole stays within the
/// request's time limit (a 400 that says so, not the 503), and a sign-in whose callback
/// request is cut off by the time limit still ends (failed) instead of hanging.
async fn providers_that_never_answer(backend: Backend) {
    let config = hostplane_api::ApiConfig {
        request_timeout: std::time::Duration::from_secs(3),
        outbound: hostplane_api::oauth::OutboundConfig {
            allow_private: true,
            timeout: std::time::Duration::from_secs(5),
            ..Default::default()
        },
        ..Default::default()
    };
    let app = TestApp::with_config(backend, config).await;
    let port = silent_server().await;

    let res = app
        .call(
            "POST",
            "/v2/auth/providers/mcp-discover",
            Some(json!({"provider_id": "m", "name": "M",
                        "mcp_server_url": format!("http://127.0.0.1:{port}/mcp")})),
        )
        .await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (400, detail("MCP discovery failed: it took longer than 2 s"))
    );

    let mut acme = provider("acme");
    acme["token_url"] = json!(format!("http://127.0.0.1:{port}/token"));
    assert_eq!(
        app.call("POST", "/v2/auth/providers", Some(acme))
            .await
            .status,
        200
    );
    let started = app
        .call(
            "POST",
            "/v2/auth/authenticate",
            Some(json!({"provider": "acme", "scopes": [], "user_id": "u"})),
        )
        .await
        .json();
    let url = parse_url(started["url"].as_str().unwrap());
    let state = url
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let res = app
        .send(
            "GET",
            &format!("/auth/callback/acme?code=c&state={state}"),
            &[],
            None,
        )
        .await;
    assert_eq!(
        res.status.as_u16(),
        503,
        "the request's time limit cut it off"
    );
    let auth_id = started["auth_id"].as_str().unwrap();
    let res = app
        .call("GET", &format!("/v2/auth/wait/{auth_id}?timeout=10"), None)
        .await;
    assert_eq!(res.status.as_u16(), 400);
    let text = res.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        text.starts_with("The sign-in failed: http://127.0.0.1:")
            && text.ends_with("/token did not answer within 5 s"),
        "{text}"
    );
    assert_eq!(
        app.call("GET", "/v2/auth/tokens", None).await.json(),
        json!([])
    );
}

/// A workspace has at most 1,000 sign-ins pending; another workspace is not affected.
async fn pending_sign_ins_are_bounded(backend: Backend) {
    let app = TestApp::new(backend).await;
    assert_eq!(
        app.call("POST", "/v2/auth/providers", Some(provider("acme")))
            .await
            .status,
        200
    );
    let start = json!({"provider": "acme", "scopes": [], "user_id": "u"});
    for _ in 0..hostplane_api::operations::agent_auth::MAX_PENDING_SIGN_INS {
        let res = app
            .call("POST", "/v2/auth/authenticate", Some(start.clone()))
            .await;
        assert_eq!(res.status.as_u16(), 200);
    }
    let res = app
        .call("POST", "/v2/auth/authenticate", Some(start.clone()))
        .await;
    assert_eq!(
        (res.status.as_u16(), res.json()),
        (429, detail("The workspace has 1000 sign-ins pending; wait for some to finish or expire (after 10 minutes)."))
    );
    let (_, other) = app.other_workspace(store::Plan::Enterprise).await;
    assert_eq!(
        app.call_as(&other, "POST", "/v2/auth/providers", Some(provider("acme")))
            .await
            .status,
        200
    );
    let res = app
        .call_as(&other, "POST", "/v2/auth/authenticate", Some(start))
        .await;
    assert_eq!(res.status.as_u16(), 200);
}

on_both_backends!(
    providers_and_sign_ins,
    providers_that_never_answer,
    pending_sign_ins_are_bounded
);
