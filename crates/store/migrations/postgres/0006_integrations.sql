-- Git hosts a workspace deploys from (GitHub, GitHub Enterprise Server, GitLab, Gitea...).
-- `credential` (a token, or a GitHub App's private key) and `webhook_secret` are sealed
-- by the server before they reach the store, and never leave it unsealed.
CREATE TABLE integrations (
    id              UUID PRIMARY KEY,
    workspace_id    UUID NOT NULL REFERENCES workspaces(id),
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    base_url        TEXT NOT NULL,
    api_url         TEXT,
    app_id          BIGINT,
    installation_id BIGINT,
    credential      TEXT NOT NULL,
    webhook_secret  TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);
CREATE INDEX integrations_page ON integrations(workspace_id, created_at, id);

-- Push events already acted on, by the forge's delivery id: a redelivery creates nothing.
CREATE TABLE webhook_deliveries (
    integration_id  UUID NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    delivery_id     TEXT NOT NULL,
    received_at     BIGINT NOT NULL,
    PRIMARY KEY (integration_id, delivery_id)
);
