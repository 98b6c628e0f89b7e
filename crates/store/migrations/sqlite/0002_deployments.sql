-- Deployments and their revisions. JSON documents are stored as text; `secrets` is
-- sealed (encrypted) by the API before it reaches the store.
CREATE TABLE deployments (
    id                      TEXT PRIMARY KEY,
    workspace_id            TEXT NOT NULL REFERENCES workspaces(id),
    name                    TEXT NOT NULL,
    source                  TEXT NOT NULL,
    source_config           TEXT NOT NULL,
    source_revision_config  TEXT NOT NULL,
    secrets                 TEXT NOT NULL,
    secret_references       TEXT,
    tracked_packages        TEXT,
    deployment_type         TEXT,
    listener_id             TEXT REFERENCES listeners(id) ON DELETE RESTRICT,
    status                  TEXT NOT NULL,
    latest_revision_id      TEXT,
    active_revision_id      TEXT,
    image_version           TEXT,
    remote_reconciled       INTEGER NOT NULL DEFAULT 0,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL,
    UNIQUE (workspace_id, name)
);
CREATE INDEX deployments_page ON deployments(workspace_id, created_at, id);
CREATE INDEX deployments_listener ON deployments(listener_id);

CREATE TABLE revisions (
    id                      TEXT PRIMARY KEY,
    deployment_id           TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    source                  TEXT NOT NULL,
    source_revision_config  TEXT NOT NULL,
    status                  TEXT NOT NULL,
    remote_reconciled       INTEGER NOT NULL DEFAULT 0,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL
);
CREATE INDEX revisions_page ON revisions(deployment_id, created_at, id);

-- Tarball uploads issued by upload-url: single use, expiring.
CREATE TABLE uploads (
    token_hash      TEXT PRIMARY KEY,
    deployment_id   TEXT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    object_path     TEXT NOT NULL UNIQUE,
    expires_at      INTEGER NOT NULL,
    completed_at    INTEGER,
    size_bytes      INTEGER
);
