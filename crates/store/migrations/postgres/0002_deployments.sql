-- Deployments and their revisions. JSON documents are stored as text (the same
-- representation as SQLite); `secrets` is sealed by the API before it reaches the store.
CREATE TABLE deployments (
    id                      UUID PRIMARY KEY,
    workspace_id            UUID NOT NULL REFERENCES workspaces(id),
    name                    TEXT NOT NULL,
    source                  TEXT NOT NULL,
    source_config           TEXT NOT NULL,
    source_revision_config  TEXT NOT NULL,
    secrets                 TEXT NOT NULL,
    secret_references       TEXT,
    tracked_packages        TEXT,
    deployment_type         TEXT,
    listener_id             UUID REFERENCES listeners(id) ON DELETE RESTRICT,
    status                  TEXT NOT NULL,
    latest_revision_id      UUID,
    active_revision_id      UUID,
    image_version           TEXT,
    remote_reconciled       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL,
    UNIQUE (workspace_id, name)
);
CREATE INDEX deployments_page ON deployments(workspace_id, created_at, id);
CREATE INDEX deployments_listener ON deployments(listener_id);

CREATE TABLE revisions (
    id                      UUID PRIMARY KEY,
    deployment_id           UUID NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    source                  TEXT NOT NULL,
    source_revision_config  TEXT NOT NULL,
    status                  TEXT NOT NULL,
    remote_reconciled       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL
);
CREATE INDEX revisions_page ON revisions(deployment_id, created_at, id);

-- Tarball uploads issued by upload-url: single use, expiring.
CREATE TABLE uploads (
    token_hash      TEXT PRIMARY KEY,
    deployment_id   UUID NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    object_path     TEXT NOT NULL UNIQUE,
    expires_at      BIGINT NOT NULL,
    completed_at    BIGINT,
    size_bytes      BIGINT
);
