//! The web console's sign-in sessions and what agents report of their listeners.

use crate::records::AgentState;
use crate::rows::Columns;
use crate::sql::{query, work, Backend, Conn};
use crate::{now_micros, ConsoleStore, Result};
use async_trait::async_trait;
use uuid::Uuid;

fn key_hash(r: &dyn Columns) -> Result<String> {
    r.text("key_hash")
}

#[async_trait]
impl<B: Backend> ConsoleStore for B {
    async fn create_session(
        &self,
        token_hash: &str,
        key_hash: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        // Each statement stands alone: a session is only usable once inserted.
        let now = now_micros();
        let expired = query("DELETE FROM console_sessions WHERE expires_at <= $1").bind(now);
        let insert = query(
            "INSERT INTO console_sessions (token_hash, key_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(key_hash)
        .bind(now)
        .bind(expires_at.timestamp_micros());
        self.run(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                c.execute(expired).await?;
                c.execute(insert).await?;
                Ok(())
            })
        }))
        .await
    }

    async fn session_key(&self, token_hash: &str) -> Result<Option<String>> {
        let q = query(
            "SELECT key_hash FROM console_sessions WHERE token_hash = $1 AND expires_at > $2",
        );
        self.read_one(q.bind(token_hash).bind(now_micros()), key_hash)
            .await
    }

    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        let q = query("DELETE FROM console_sessions WHERE token_hash = $1").bind(token_hash);
        Backend::execute(self, q).await?;
        Ok(())
    }

    async fn agent_states(&self, workspace: Uuid) -> Result<Vec<AgentState>> {
        let q = query(
            "SELECT id, last_seen_at, agent FROM listeners \
             WHERE workspace_id = $1 AND last_seen_at IS NOT NULL",
        );
        self.read(q.bind(workspace), crate::rows::agent_state).await
    }
}
