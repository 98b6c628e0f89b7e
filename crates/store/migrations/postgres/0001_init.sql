-- Identity, tenancy and listeners. Timestamps are microseconds since the Unix epoch
-- (UTC), the same representation as the SQLite schema.
CREATE TABLE organizations (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    plan        TEXT NOT NULL CHECK (plan IN ('enterprise', 'standard')),
    created_at  BIGINT NOT NULL
);

CREATE TABLE workspaces (
    id          UUID PRIMARY KEY,
    org_id      UUID NOT NULL REFERENCES organizations(id),
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX workspaces_org ON workspaces(org_id);

CREATE TABLE api_keys (
    id            UUID PRIMARY KEY,
    key_hash      TEXT NOT NULL UNIQUE,
    org_id        UUID NOT NULL REFERENCES organizations(id),
    workspace_id  UUID REFERENCES workspaces(id),
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);

CREATE TABLE listeners (
    id              UUID PRIMARY KEY,
    workspace_id    UUID NOT NULL REFERENCES workspaces(id),
    compute_type    TEXT NOT NULL,
    compute_id      TEXT NOT NULL,
    version         TEXT,
    k8s_namespaces  TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (workspace_id, compute_id)
);
CREATE INDEX listeners_page ON listeners(workspace_id, created_at, id);
