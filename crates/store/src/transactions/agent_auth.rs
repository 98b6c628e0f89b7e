//! Agent Auth: OAuth providers, tokens, sign-ins under way and agent connections. Every
//! statement names the workspace, so one workspace never reads or changes another's rows.

use crate::records::*;
use crate::rows::{
    agent_connection, auth_request, oauth_provider, oauth_token, AUTH_REQUEST_COLUMNS,
    PROVIDER_COLUMNS, TOKEN_SELECT,
};
use crate::sql::{query, work, Backend, Conn, Query};
use crate::{now_micros, AgentAuthStore, Result, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

fn scopes_text(scopes: &[String]) -> String {
    serde_json::Value::from(scopes.to_vec()).to_string()
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The owner's other tokens of that provider stop being the default.
fn undefault_others(t: &OAuthToken) -> Query {
    query(
        "UPDATE oauth_tokens SET is_default = FALSE \
         WHERE provider_row = $1 AND owner = $2 AND id <> $3 AND is_default",
    )
    .bind(t.provider_row)
    .bind(&t.owner)
    .bind(t.id)
}

async fn token_by_id<C: Conn>(c: &mut C, workspace: Uuid, id: Uuid) -> Result<Option<OAuthToken>> {
    let q = query(format!(
        "{TOKEN_SELECT} WHERE t.id = $1 AND t.workspace_id = $2"
    ))
    .bind(id)
    .bind(workspace);
    c.fetch_optional(q)
        .await?
        .map(|r| oauth_token(&r))
        .transpose()
}

async fn insert_token<C: Conn>(c: &mut C, t: &OAuthToken) -> Result<()> {
    if t.is_default {
        c.execute(undefault_others(t)).await?;
    }
    let q = query(
        "INSERT INTO oauth_tokens (id, workspace_id, provider_row, owner, access_token, \
         refresh_token, scopes, expires_at, provider_account_label, is_default, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
    )
    .bind(t.id)
    .bind(t.workspace_id)
    .bind(t.provider_row)
    .bind(&t.owner)
    .bind(&t.access_token)
    .bind(&t.refresh_token)
    .bind(scopes_text(&t.scopes))
    .bind(t.expires_at.map(micros))
    .bind(&t.provider_account_label)
    .bind(t.is_default)
    .bind(now_micros());
    c.execute(q).await?;
    Ok(())
}

/// Binds, in this order, the provider fields a `PATCH` may change: `name`, `client_id`,
/// `client_secret`, `auth_url`, `token_url`, `uses_pkce`, `code_challenge_method`.
fn bind_changeable(q: Query, p: &OAuthProvider) -> Query {
    q.bind(&p.name)
        .bind(&p.client_id)
        .bind(&p.client_secret)
        .bind(&p.auth_url)
        .bind(&p.token_url)
        .bind(p.uses_pkce)
        .bind(&p.code_challenge_method)
}

#[async_trait]
impl<B: Backend> AgentAuthStore for B {
    async fn create_provider(&self, new: OAuthProvider) -> Result<OAuthProvider> {
        let q = query(format!(
            "INSERT INTO oauth_providers ({PROVIDER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, \
             $7, $8, $9, $10, $11, $12, $13, $14, $15, $15) RETURNING {PROVIDER_COLUMNS}"
        ))
        .bind(new.id)
        .bind(new.workspace_id)
        .bind(&new.provider_id);
        let q = bind_changeable(q, &new)
            .bind(&new.provider_type)
            .bind(&new.mcp_server_url)
            .bind(&new.token_endpoint_auth_method)
            .bind(new.is_dynamic_client)
            .bind(now_micros());
        self.transaction(work(move |c: &mut B::Conn| {
            Box::pin(async move { oauth_provider(&c.fetch_one(q).await?) })
        }))
        .await
    }

    async fn list_providers(&self, workspace: Uuid) -> Result<Vec<OAuthProvider>> {
        let q = query(format!(
            "SELECT {PROVIDER_COLUMNS} FROM oauth_providers WHERE workspace_id = $1 \
             ORDER BY created_at, id"
        ));
        self.read(q.bind(workspace), oauth_provider).await
    }

    async fn get_provider(
        &self,
        workspace: Uuid,
        provider_id: &str,
    ) -> Result<Option<OAuthProvider>> {
        let q = query(format!(
            "SELECT {PROVIDER_COLUMNS} FROM oauth_providers \
             WHERE workspace_id = $1 AND provider_id = $2"
        ));
        self.read_one(q.bind(workspace).bind(provider_id), oauth_provider)
            .await
    }

    async fn update_provider(&self, p: OAuthProvider) -> Result<OAuthProvider> {
        let q = query(format!(
            "UPDATE oauth_providers SET name = $1, client_id = $2, client_secret = $3, \
             auth_url = $4, token_url = $5, uses_pkce = $6, code_challenge_method = $7, \
             {} WHERE id = $9 AND workspace_id = $10 RETURNING {PROVIDER_COLUMNS}",
            B::Conn::DIALECT.advance("updated_at", "$8")
        ));
        let q = bind_changeable(q, &p)
            .bind(now_micros())
            .bind(p.id)
            .bind(p.workspace_id);
        self.transaction(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                match c.fetch_optional(q).await? {
                    Some(r) => oauth_provider(&r),
                    None => Err(StoreError::NotFound),
                }
            })
        }))
        .await
    }

    async fn delete_provider(&self, workspace: Uuid, provider_id: &str) -> Result<bool> {
        let q = query("DELETE FROM oauth_providers WHERE workspace_id = $1 AND provider_id = $2")
            .bind(workspace)
            .bind(provider_id);
        Ok(self.execute(q).await? > 0)
    }

    async fn list_tokens(&self, workspace: Uuid, f: &TokenFilter) -> Result<Vec<OAuthToken>> {
        let q = query(format!(
            "{TOKEN_SELECT} WHERE t.workspace_id = $1 AND ($2 IS NULL OR p.provider_id = $2) \
             AND ($3 IS NULL OR t.owner = $3) AND ($4 IS NULL OR p.provider_type = $4) \
             ORDER BY t.created_at, t.id"
        ))
        .bind(workspace)
        .bind(&f.provider_id)
        .bind(&f.owner)
        .bind(&f.provider_type);
        self.read(q, oauth_token).await
    }

    async fn get_token(&self, workspace: Uuid, id: Uuid) -> Result<Option<OAuthToken>> {
        let q = query(format!(
            "{TOKEN_SELECT} WHERE t.id = $1 AND t.workspace_id = $2"
        ));
        self.read_one(q.bind(id).bind(workspace), oauth_token).await
    }

    async fn update_token(&self, t: OAuthToken) -> Result<OAuthToken> {
        self.transaction(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                if t.is_default {
                    c.execute(undefault_others(&t)).await?;
                }
                let q = query(format!(
                    "UPDATE oauth_tokens SET access_token = $1, refresh_token = $2, \
                     scopes = $3, expires_at = $4, provider_account_label = $5, \
                     is_default = $6, {} WHERE id = $8 AND workspace_id = $9",
                    B::Conn::DIALECT.advance("updated_at", "$7")
                ))
                .bind(&t.access_token)
                .bind(&t.refresh_token)
                .bind(scopes_text(&t.scopes))
                .bind(t.expires_at.map(micros))
                .bind(&t.provider_account_label)
                .bind(t.is_default)
                .bind(now_micros())
                .bind(t.id)
                .bind(t.workspace_id);
                if c.execute(q).await? == 0 {
                    return Err(StoreError::NotFound);
                }
                token_by_id(c, t.workspace_id, t.id)
                    .await?
                    .ok_or(StoreError::NotFound)
            })
        }))
        .await
    }

    async fn delete_tokens(&self, workspace: Uuid, ids: &[Uuid]) -> Result<u64> {
        let q = query(format!(
            "DELETE FROM oauth_tokens WHERE workspace_id = $1 AND id {}",
            B::Conn::DIALECT.any("$2")
        ))
        .bind(workspace)
        .bind(ids);
        self.execute(q).await
    }

    async fn create_auth_request(&self, r: AuthRequest) -> Result<()> {
        let q = query(format!(
            "INSERT INTO auth_requests ({AUTH_REQUEST_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(r.id)
        .bind(r.workspace_id)
        .bind(r.provider_row)
        .bind(&r.state_hash)
        .bind(&r.verifier)
        .bind(&r.owner)
        .bind(&r.agent_id)
        .bind(scopes_text(&r.scopes))
        .bind(r.is_default)
        .bind(r.status.as_str())
        .bind(r.token_id)
        .bind(&r.error)
        .bind(micros(r.expires_at))
        .bind(micros(r.created_at));
        self.execute(q).await?;
        Ok(())
    }

    async fn pending_auth_requests(&self, workspace: Uuid) -> Result<i64> {
        let q = query(
            "SELECT COUNT(*) AS n FROM auth_requests \
             WHERE workspace_id = $1 AND status = 'pending' AND expires_at > $2",
        )
        .bind(workspace)
        .bind(now_micros());
        let n = self.read_one(q, |r| r.int("n")).await?;
        Ok(n.unwrap_or(0))
    }

    async fn get_auth_request(&self, workspace: Uuid, id: Uuid) -> Result<Option<AuthRequest>> {
        let q = query(format!(
            "SELECT {AUTH_REQUEST_COLUMNS} FROM auth_requests WHERE id = $1 AND workspace_id = $2"
        ));
        self.read_one(q.bind(id).bind(workspace), auth_request)
            .await
    }

    async fn take_auth_request(
        &self,
        state_hash: &str,
        workspace: Option<Uuid>,
    ) -> Result<Option<AuthRequest>> {
        let q = query(format!(
            "UPDATE auth_requests SET status = 'exchanging' \
             WHERE state_hash = $1 AND status = 'pending' AND expires_at > $2 \
             AND ($3 IS NULL OR workspace_id = $3) RETURNING {AUTH_REQUEST_COLUMNS}"
        ))
        .bind(state_hash)
        .bind(now_micros())
        .bind(workspace);
        self.transaction(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                c.fetch_optional(q)
                    .await?
                    .map(|r| auth_request(&r))
                    .transpose()
            })
        }))
        .await
    }

    async fn finish_auth_request(&self, id: Uuid, outcome: AuthOutcome) -> Result<()> {
        self.write(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                let (status, token_id, error) = match &outcome {
                    AuthOutcome::Completed(t) => {
                        insert_token(c, t).await?;
                        (AuthRequestStatus::Completed, Some(t.id), None)
                    }
                    AuthOutcome::Failed(why) => (AuthRequestStatus::Failed, None, Some(why)),
                };
                // The verifier has done its work: it is not kept.
                let q = query(
                    "UPDATE auth_requests SET status = $1, token_id = $2, error = $3, \
                     verifier = NULL WHERE id = $4 AND status = 'exchanging'",
                )
                .bind(status.as_str())
                .bind(token_id)
                .bind(error.cloned())
                .bind(id);
                if c.execute(q).await? == 0 {
                    return Err(StoreError::NotFound);
                }
                if let Some(announce) = c.dialect().announce_one(id, 1) {
                    c.fetch_all(announce).await?;
                }
                Ok(((), vec![(id, 1)]))
            })
        }))
        .await
    }

    fn watch_auth_request(&self, id: Uuid) -> tokio::sync::watch::Receiver<i64> {
        self.changes().subscribe(id)
    }

    async fn sweep_auth_requests(&self, before: DateTime<Utc>) -> Result<u64> {
        self.execute(query("DELETE FROM auth_requests WHERE expires_at < $1").bind(micros(before)))
            .await
    }

    async fn list_connections(
        &self,
        workspace: Uuid,
        agent_id: &str,
    ) -> Result<Vec<AgentConnection>> {
        let q = query(connection_select(
            "c.workspace_id = $1 AND c.agent_id = $2 ORDER BY c.created_at, c.id",
        ))
        .bind(workspace)
        .bind(agent_id);
        self.read(q, agent_connection).await
    }

    async fn create_connection(&self, new: NewConnection) -> Result<AgentConnection> {
        self.transaction(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                if token_by_id(c, new.workspace_id, new.token_id)
                    .await?
                    .is_none()
                {
                    return Err(StoreError::NotFound);
                }
                let q = query(
                    "INSERT INTO agent_connections (id, workspace_id, agent_id, token_id, \
                     created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(new.id)
                .bind(new.workspace_id)
                .bind(&new.agent_id)
                .bind(new.token_id)
                .bind(&new.created_by)
                .bind(now_micros());
                c.execute(q).await?;
                let q = query(connection_select("c.id = $1")).bind(new.id);
                agent_connection(&c.fetch_one(q).await?)
            })
        }))
        .await
    }

    async fn delete_connection(&self, workspace: Uuid, agent_id: &str, id: Uuid) -> Result<bool> {
        let q = query(
            "DELETE FROM agent_connections WHERE id = $1 AND workspace_id = $2 AND agent_id = $3",
        )
        .bind(id)
        .bind(workspace)
        .bind(agent_id);
        Ok(self.execute(q).await? > 0)
    }
}

/// Connections joined with their tokens, `WHERE` `condition`.
fn connection_select(condition: &str) -> String {
    let tokens = TOKEN_SELECT.replacen(
        "SELECT ",
        "SELECT c.id AS conn_id, c.agent_id AS conn_agent_id, \
         c.created_by AS conn_created_by, c.created_at AS conn_created_at, ",
        1,
    );
    format!("{tokens} JOIN agent_connections c ON c.token_id = t.id WHERE {condition}")
}
