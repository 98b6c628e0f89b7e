-- Identity, tenancy and listeners. Ids are lower-case hyphenated UUID text;
-- timestamps are microseconds since the Unix epoch (UTC).
CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    plan        TEXT NOT NULL CHECK (plan IN ('enterprise', 'standard')),
    created_at  INTEGER NOT NULL
);

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX workspaces_org ON workspaces(org_id);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    key_hash      TEXT NOT NULL UNIQUE,
    org_id        TEXT NOT NULL REFERENCES organizations(id),
    workspace_id  TEXT REFERENCES workspaces(id),
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);

CREATE TABLE listeners (
    id              TEXT PRIMARY KEY,
    workspace_id    TEXT NOT NULL REFERENCES workspaces(id),
    compute_type    TEXT NOT NULL,
    compute_id      TEXT NOT NULL,
    version         TEXT,
    k8s_namespaces  TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (workspace_id, compute_id)
);
CREATE INDEX listeners_page ON listeners(workspace_id, created_at, id);
