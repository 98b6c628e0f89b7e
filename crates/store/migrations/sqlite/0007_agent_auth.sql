-- Agent Auth: the OAuth providers a workspace's agents sign users in with, the tokens
-- they obtained, the sign-ins under way, and the tokens connected to agents.
-- Client secrets, tokens and PKCE verifiers are sealed by the server before they reach
-- the store (bound to their row's id) and never leave it unsealed.
CREATE TABLE oauth_providers (
    id                          TEXT PRIMARY KEY,
    workspace_id                TEXT NOT NULL REFERENCES workspaces(id),
    provider_id                 TEXT NOT NULL,
    name                        TEXT NOT NULL,
    client_id                   TEXT NOT NULL,
    client_secret               TEXT,
    auth_url                    TEXT NOT NULL,
    token_url                   TEXT NOT NULL,
    uses_pkce                   BOOLEAN NOT NULL,
    code_challenge_method       TEXT,
    provider_type               TEXT,
    mcp_server_url              TEXT,
    token_endpoint_auth_method  TEXT NOT NULL,
    is_dynamic_client           BOOLEAN NOT NULL,
    created_at                  BIGINT NOT NULL,
    updated_at                  BIGINT NOT NULL,
    UNIQUE (workspace_id, provider_id)
);

-- `owner` is the end user the token was obtained for (`user_id`, else `ls_user_id`).
CREATE TABLE oauth_tokens (
    id                      TEXT PRIMARY KEY,
    workspace_id            TEXT NOT NULL REFERENCES workspaces(id),
    provider_row            TEXT NOT NULL REFERENCES oauth_providers(id) ON DELETE CASCADE,
    owner                   TEXT NOT NULL,
    access_token            TEXT NOT NULL,
    refresh_token           TEXT,
    scopes                  TEXT NOT NULL,
    expires_at              BIGINT,
    provider_account_label  TEXT,
    is_default              BOOLEAN NOT NULL,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);
CREATE INDEX oauth_tokens_owner ON oauth_tokens(workspace_id, provider_row, owner);

-- A sign-in under way: found by the hash of its `state`, used once.
CREATE TABLE auth_requests (
    id              TEXT PRIMARY KEY,
    workspace_id    TEXT NOT NULL REFERENCES workspaces(id),
    provider_row    TEXT NOT NULL REFERENCES oauth_providers(id) ON DELETE CASCADE,
    state_hash      TEXT NOT NULL UNIQUE,
    verifier        TEXT,
    owner           TEXT NOT NULL,
    agent_id        TEXT,
    scopes          TEXT NOT NULL,
    is_default      BOOLEAN NOT NULL,
    status          TEXT NOT NULL,
    token_id        TEXT REFERENCES oauth_tokens(id) ON DELETE SET NULL,
    error           TEXT,
    expires_at      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX auth_requests_expiry ON auth_requests(expires_at);

CREATE TABLE agent_connections (
    id              TEXT PRIMARY KEY,
    workspace_id    TEXT NOT NULL REFERENCES workspaces(id),
    agent_id        TEXT NOT NULL,
    token_id        TEXT NOT NULL REFERENCES oauth_tokens(id) ON DELETE CASCADE,
    created_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    UNIQUE (workspace_id, agent_id, token_id)
);
