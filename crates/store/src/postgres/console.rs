//! The web console's side of the PostgreSQL backend.

use super::PgStore;
use crate::records::AgentState;
use crate::{now_micros, ConsoleStore, Result};
use async_trait::async_trait;
use uuid::Uuid;

#[async_trait]
impl ConsoleStore for PgStore {
    async fn create_session(
        &self,
        token_hash: &str,
        key_hash: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        // Each statement stands alone: a session is only usable once inserted.
        let now = now_micros();
        sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO console_sessions (token_hash, key_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(key_hash)
        .bind(now)
        .bind(expires_at.timestamp_micros())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session_key(&self, token_hash: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT key_hash FROM console_sessions WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now_micros())
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn agent_states(&self, workspace: Uuid) -> Result<Vec<AgentState>> {
        let rows = sqlx::query(
            "SELECT id, last_seen_at, agent FROM listeners \
             WHERE workspace_id = $1 AND last_seen_at IS NOT NULL",
        )
        .bind(workspace)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(crate::rows::agent_state).collect()
    }
}
