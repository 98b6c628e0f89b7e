-- The data plane: listener keys, desired-state generations, agent facts, claims with
-- leases, what builds produced, failure reasons, and the log lines agents send.
ALTER TABLE api_keys ADD COLUMN listener_id UUID;

ALTER TABLE listeners ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE listeners ADD COLUMN last_seen_at BIGINT;
ALTER TABLE listeners ADD COLUMN agent TEXT;

ALTER TABLE revisions ADD COLUMN lease_holder TEXT;
ALTER TABLE revisions ADD COLUMN lease_expires_at BIGINT;
ALTER TABLE revisions ADD COLUMN image TEXT;
ALTER TABLE revisions ADD COLUMN status_reason TEXT;
ALTER TABLE revisions ADD COLUMN status_message TEXT;
CREATE INDEX revisions_leases ON revisions(lease_expires_at) WHERE lease_holder IS NOT NULL;

CREATE TABLE logs (
    seq            BIGSERIAL PRIMARY KEY,
    deployment_id  UUID NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    revision_id    UUID NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('deploy', 'build')),
    at             BIGINT NOT NULL,
    level          TEXT NOT NULL,
    message        TEXT NOT NULL
);
CREATE INDEX logs_deployment ON logs(deployment_id, kind, at, seq);
CREATE INDEX logs_revision ON logs(revision_id, kind, at, seq);
CREATE INDEX logs_retention ON logs(deployment_id, kind, seq);
