//! `push-token` against a real Docker Distribution registry (Debian's
//! `docker-registry`) configured with hostplane as its token service: a workspace can
//! push under its own prefix, and nowhere else.
//!
//! Needs the `docker-registry` binary (see `support::registry`).

#![allow(clippy::unwrap_used)]

mod support;

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::sqlite_db;

/// One HTTP/1.1 exchange: status, headers (lower-cased names) and body.
fn exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: \
                           close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// A registry token for `scope`, asked for with a `push-token` login.
fn registry_token(hostplane: u16, login: &str, scope: &str) -> String {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("hostplane:{login}"));
    let (status, _, body) = exchange(
        hostplane,
        "GET",
        &format!("/registry/token?service=hp-test-registry&scope={scope}"),
        &[("Authorization", &format!("Basic {basic}"))],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Pushes one blob to `repository` with `token` (start an upload, then finish it with
/// the bytes): the registry's last status, 201 when the blob was stored.
fn push_blob(registry: u16, repository: &str, token: &str, blob: &[u8]) -> u16 {
    let auth = format!("Bearer {token}");
    let (status, headers, _) = exchange(
        registry,
        "POST",
        &format!("/v2/{repository}/blobs/uploads/"),
        &[("Authorization", &auth)],
        b"",
    );
    if status != 202 {
        return status;
    }
    let location = header(&headers, "location");
    let path = location
        .split_once(&format!("127.0.0.1:{registry}"))
        .map_or(location, |(_, p)| p);
    let digest = format!("sha256:{:x}", Sha256::digest(blob));
    let sep = if path.contains('?') { '&' } else { '?' };
    let (status, _, body) = exchange(
        registry,
        "PUT",
        &format!("{path}{sep}digest={digest}"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/octet-stream"),
        ],
        blob,
    );
    assert!(status == 201 || status == 401, "{status}: {body}");
    status
}

#[test]
fn push_tokens_against_a_real_registry() {
    let db = sqlite_db();
    let (server, registry) = support::registry::start(&db, "registry-test-key");
    let registry_port = registry.port;

    // The registry sends clients to hostplane for tokens.
    let (status, headers, _) = exchange(registry_port, "GET", "/v2/", &[], b"");
    assert_eq!(status, 401);
    assert_eq!(
        header(&headers, "www-authenticate"),
        format!(
            "Bearer realm=\"{}/registry/token\",service=\"hp-test-registry\"",
            server.url()
        )
    );

    let deployment = json!({"name": "dock", "source": "internal_docker", "source_config": {},
                            "source_revision_config": {}, "secrets": []});
    let push_token = |key: &str| {
        let headers = [("X-Api-Key", key), ("Content-Type", "application/json")];
        let (status, body) = support::http(
            server.port,
            "POST",
            "/v2/deployments",
            &headers,
            &deployment.to_string(),
        );
        assert_eq!(status, 201, "{body}");
        let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (status, body) = support::http(
            server.port,
            "POST",
            &format!("/v2/deployments/{id}/push-token"),
            &headers,
            "{}",
        );
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let mine = push_token(&server.key);
    let prefix = mine["registry_url"]
        .as_str()
        .unwrap()
        .strip_prefix(&format!("127.0.0.1:{registry_port}/"))
        .unwrap()
        .to_owned();
    let login = mine["token"].as_str().unwrap();

    // A second organization's workspace.
    let (_, other_key) = support::other_workspace(&db);
    let theirs = push_token(&other_key);
    let their_prefix = theirs["registry_url"]
        .as_str()
        .unwrap()
        .split_once('/')
        .unwrap()
        .1
        .to_owned();
    assert_ne!(prefix, their_prefix);
    let their_login = theirs["token"].as_str().unwrap();

    let blob = b"layer bytes";
    let mine_repo = format!("{prefix}/app");
    let their_repo = format!("{their_prefix}/app");
    // Pushing under one's own prefix works, and the blob is there.
    let token = registry_token(
        server.port,
        login,
        &format!("repository:{mine_repo}:pull,push"),
    );
    assert_eq!(push_blob(registry_port, &mine_repo, &token, blob), 201);
    let digest = format!("sha256:{:x}", Sha256::digest(blob));
    let (status, _, _) = exchange(
        registry_port,
        "HEAD",
        &format!("/v2/{mine_repo}/blobs/{digest}"),
        &[("Authorization", &format!("Bearer {token}"))],
        b"",
    );
    assert_eq!(status, 200);
    // That token is no good under the other workspace's prefix.
    assert_eq!(push_blob(registry_port, &their_repo, &token, blob), 401);
    // Nor is a token the other workspace asked for, for this workspace's repository.
    let stolen = registry_token(
        server.port,
        their_login,
        &format!("repository:{mine_repo}:pull,push"),
    );
    assert_eq!(push_blob(registry_port, &mine_repo, &stolen, blob), 401);
    let (status, _, _) = exchange(
        registry_port,
        "HEAD",
        &format!("/v2/{mine_repo}/blobs/{digest}"),
        &[("Authorization", &format!("Bearer {stolen}"))],
        b"",
    );
    assert_eq!(status, 401);
    // A repository outside every workspace prefix is refused too.
    let outside = registry_token(server.port, login, "repository:app:pull,push");
    assert_eq!(push_blob(registry_port, "app", &outside, blob), 401);
    // The login credential itself is not a registry token.
    assert_eq!(push_blob(registry_port, &mine_repo, login, blob), 401);

    // A listener's login (the data-plane call) pulls its own workspace's images and
    // nothing else, and never pushes.
    let (listener, listener_key) = support::agent::listener_with_key(&server, &db, "puller");
    let agent = support::agent::Agent::new(server.port, &listener, &listener_key, "puller-1");
    let ask = || {
        agent.call(
            "POST",
            "/registry-credential",
            Some(json!({"protocol_version": 1, "agent_id": "puller-1"})),
        )
    };
    let (status, pull) = ask();
    assert_eq!(status, 200, "{pull}");
    assert_eq!(pull["registry"], format!("127.0.0.1:{registry_port}"));
    assert_eq!(pull["repository_prefix"], format!("{prefix}/"));
    assert_eq!(pull["username"], "hostplane");
    let password = pull["password"].as_str().unwrap();
    let head = |repo: &str, token: &str| {
        exchange(
            registry_port,
            "HEAD",
            &format!("/v2/{repo}/blobs/{digest}"),
            &[("Authorization", &format!("Bearer {token}"))],
            b"",
        )
        .0
    };
    let token = registry_token(
        server.port,
        password,
        &format!("repository:{mine_repo}:pull,push"),
    );
    assert_eq!(head(&mine_repo, &token), 200);
    assert_eq!(push_blob(registry_port, &mine_repo, &token, b"more"), 401);
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["access"],
        json!([{"type": "repository", "name": mine_repo, "actions": ["pull"]}])
    );
    // The other workspace's image is there, and this login cannot read it.
    let theirs = registry_token(
        server.port,
        their_login,
        &format!("repository:{their_repo}:pull,push"),
    );
    assert_eq!(push_blob(registry_port, &their_repo, &theirs, blob), 201);
    assert_eq!(head(&their_repo, &theirs), 200);
    let token = registry_token(
        server.port,
        password,
        &format!("repository:{their_repo}:pull"),
    );
    assert_eq!(head(&their_repo, &token), 401);
    // Revoking the listener key ends its login.
    let keys = support::admin(&db, &["api-key", "list"]);
    let key_id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["listener_id"] == listener.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    support::admin(&db, &["api-key", "revoke", &key_id]);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("hostplane:{password}"));
    let (status, _, _) = exchange(
        server.port,
        "GET",
        &format!("/registry/token?service=hp-test-registry&scope=repository:{mine_repo}:pull"),
        &[("Authorization", &format!("Basic {basic}"))],
        b"",
    );
    assert_eq!(status, 401);
}
