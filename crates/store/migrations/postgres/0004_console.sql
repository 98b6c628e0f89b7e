-- Web console sign-ins. A session is kept as the hash of its cookie and names the API key
-- that signed in by that key's hash, so revoking the key ends its sessions too.
CREATE TABLE console_sessions (
    token_hash  TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions(expires_at);
