"""OAuth 2.0 servers for Agent Auth's tests, on 127.0.0.1. Both are libraries' own
servers; only the in-memory storage and a consent that needs no form are ours.

Usage:
  oauth_servers.py authlib CALLBACK_PREFIX
      Authlib's AuthorizationServer (Flask): authorization code with PKCE (S256,
      required), refresh tokens, client_secret_post / client_secret_basic / none.
      Clients: "hp-post" / "hp-basic" (secret "hp-secret") and "hp-public" (no secret);
      redirect URIs must start with CALLBACK_PREFIX.
      GET /authorize?...&user=NAME signs NAME in and consents; &deny=1 refuses.
      POST /control {"expires_in": N, "token_mode": "ok" | "slow"} changes what the token
      endpoint does next; GET /stats counts its requests.
  oauth_servers.py mcp
      The MCP Python SDK's authorization-server routes (metadata, dynamic registration,
      authorize, token) and protected-resource metadata for the resource /mcp, with an
      in-memory provider that consents at once.
Prints "<mode> listening on PORT".
"""

import secrets
import sys
import threading
import time

MODE = sys.argv[1]


def authlib_server():
    from authlib.integrations.flask_oauth2 import AuthorizationServer
    from authlib.oauth2.rfc6749 import grants
    from authlib.oauth2.rfc6750 import BearerTokenGenerator
    from authlib.oauth2.rfc7636 import CodeChallenge
    from flask import Flask, jsonify, request
    from werkzeug.serving import make_server

    prefix = sys.argv[2]
    lock = threading.Lock()
    state = {"expires_in": 3600, "token_mode": "ok"}
    stats = {"token_requests": 0, "refreshes": 0, "codes_issued": 0}
    codes, tokens = {}, {}

    class Client:
        def __init__(self, client_id, secret, method):
            self.client_id, self.secret, self.method = client_id, secret, method

        def get_client_id(self):
            return self.client_id

        def get_default_redirect_uri(self):
            return None

        def get_allowed_scope(self, scope):
            return scope or ""

        def check_redirect_uri(self, uri):
            return uri.startswith(prefix)

        def check_client_secret(self, secret):
            return self.secret is not None and secrets.compare_digest(secret, self.secret)

        def check_endpoint_auth_method(self, method, endpoint):
            return endpoint != "token" or method == self.method

        def check_response_type(self, response_type):
            return response_type == "code"

        def check_grant_type(self, grant_type):
            return grant_type in ("authorization_code", "refresh_token")

    clients = {
        "hp-post": Client("hp-post", "hp-secret", "client_secret_post"),
        "hp-basic": Client("hp-basic", "hp-secret", "client_secret_basic"),
        "hp-public": Client("hp-public", None, "none"),
    }

    class Code:
        def __init__(self, **kw):
            self.__dict__.update(kw)

        def get_redirect_uri(self):
            return self.redirect_uri

        def get_scope(self):
            return self.scope

    class Token:
        def __init__(self, client_id, user, data):
            self.client_id, self.user, self.data = client_id, user, data
            self.revoked = False

        def check_client(self, client):
            return client.client_id == self.client_id

        def get_scope(self):
            return self.data.get("scope", "")

        def get_expires_in(self):
            return self.data.get("expires_in", 0)

        def is_revoked(self):
            return self.revoked

        def is_expired(self):
            return False

        def get_user(self):
            return self.user

    class CodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

        def save_authorization_code(self, code, req):
            with lock:
                stats["codes_issued"] += 1
                codes[code] = Code(
                    code=code,
                    client_id=req.client.client_id,
                    redirect_uri=req.payload.redirect_uri,
                    scope=req.scope,
                    user=req.user,
                    code_challenge=req.payload.data.get("code_challenge"),
                    code_challenge_method=req.payload.data.get("code_challenge_method"),
                )

        def query_authorization_code(self, code, client):
            item = codes.get(code)
            if item and item.client_id == client.client_id:
                return item
            return None

        def delete_authorization_code(self, authorization_code):
            codes.pop(authorization_code.code, None)

        def authenticate_user(self, authorization_code):
            return authorization_code.user

    class RefreshGrant(grants.RefreshTokenGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]
        INCLUDE_NEW_REFRESH_TOKEN = True

        def authenticate_refresh_token(self, refresh_token):
            t = tokens.get(refresh_token)
            return t if t and not t.revoked else None

        def authenticate_user(self, credential):
            with lock:
                stats["refreshes"] += 1
            return credential.user

        def revoke_old_credential(self, credential):
            credential.revoked = True

    def save_token(token, req):
        user = req.user
        if "refresh_token" in token:
            tokens[token["refresh_token"]] = Token(req.client.client_id, user, token)

    app = Flask("oauth")
    server = AuthorizationServer(
        app, query_client=lambda cid: clients.get(cid), save_token=save_token
    )
    server.register_token_generator(
        "default",
        BearerTokenGenerator(
            access_token_generator=lambda **kw: "at-" + secrets.token_urlsafe(24),
            refresh_token_generator=lambda **kw: "rt-" + secrets.token_urlsafe(24),
            expires_generator=lambda client, grant_type: state["expires_in"],
        ),
    )
    server.register_grant(CodeGrant, [CodeChallenge(required=True)])
    server.register_grant(RefreshGrant)

    @app.get("/authorize")
    def authorize():
        try:
            grant = server.get_consent_grant(end_user=request.args.get("user"))
        except Exception as e:  # an invalid request is Authlib's error page
            return server.handle_error_response(request, e)
        user = None if request.args.get("deny") else request.args["user"]
        return server.create_authorization_response(grant=grant, grant_user=user)

    @app.post("/token")
    def token():
        with lock:
            stats["token_requests"] += 1
            mode = state["token_mode"]
        if mode == "slow":
            time.sleep(5)
        return server.create_token_response()

    @app.post("/control")
    def control():
        with lock:
            state.update(request.get_json())
        return jsonify(state)

    @app.get("/stats")
    def get_stats():
        with lock:
            return jsonify(stats)

    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    print(f"authlib listening on {httpd.port}", flush=True)
    httpd.serve_forever()


def mcp_server():
    import socket

    import uvicorn
    from pydantic import AnyHttpUrl
    from starlette.applications import Starlette

    from mcp.server.auth.provider import (
        AccessToken,
        AuthorizationCode,
        RefreshToken,
        construct_redirect_uri,
    )
    from mcp.server.auth.routes import create_auth_routes, create_protected_resource_routes
    from mcp.server.auth.settings import ClientRegistrationOptions
    from mcp.shared.auth import OAuthToken

    class Provider:
        """In memory; consents at once (the SDK's handlers do every check)."""

        def __init__(self):
            self.clients, self.codes, self.refresh, self.access = {}, {}, {}, {}

        async def get_client(self, client_id):
            return self.clients.get(client_id)

        async def register_client(self, client_info):
            self.clients[client_info.client_id] = client_info

        async def authorize(self, client, params):
            code = secrets.token_urlsafe(24)
            self.codes[code] = AuthorizationCode(
                code=code,
                scopes=params.scopes or [],
                expires_at=time.time() + 300,
                client_id=client.client_id,
                code_challenge=params.code_challenge,
                redirect_uri=params.redirect_uri,
                redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
                resource=params.resource,
                subject="mcp-user",
            )
            return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

        async def load_authorization_code(self, client, authorization_code):
            return self.codes.get(authorization_code)

        def _issue(self, client_id, scopes, resource):
            access = "mcp-at-" + secrets.token_urlsafe(24)
            refresh = "mcp-rt-" + secrets.token_urlsafe(24)
            self.access[access] = AccessToken(token=access, client_id=client_id, scopes=scopes, resource=resource)
            self.refresh[refresh] = RefreshToken(token=refresh, client_id=client_id, scopes=scopes, resource=resource)
            return OAuthToken(
                access_token=access, expires_in=3600, scope=" ".join(scopes), refresh_token=refresh
            )

        async def exchange_authorization_code(self, client, authorization_code):
            self.codes.pop(authorization_code.code, None)
            return self._issue(client.client_id, authorization_code.scopes, authorization_code.resource)

        async def load_refresh_token(self, client, refresh_token):
            return self.refresh.get(refresh_token)

        async def exchange_refresh_token(self, client, refresh_token, scopes):
            self.refresh.pop(refresh_token.token, None)
            return self._issue(client.client_id, scopes or refresh_token.scopes, refresh_token.resource)

        async def load_access_token(self, token):
            return self.access.get(token)

        async def revoke_token(self, token):
            self.access.pop(token.token, None)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    routes = create_auth_routes(
        Provider(),
        issuer_url=AnyHttpUrl(base),
        client_registration_options=ClientRegistrationOptions(enabled=True),
    )
    routes += create_protected_resource_routes(
        resource_url=AnyHttpUrl(f"{base}/mcp"), authorization_servers=[AnyHttpUrl(base)]
    )
    config = uvicorn.Config(Starlette(routes=routes), log_level="warning")
    print(f"mcp listening on {port}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if MODE == "authlib":
    authlib_server()
else:
    mcp_server()
