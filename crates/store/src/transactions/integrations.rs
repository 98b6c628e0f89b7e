//! Integrations: the git hosts a workspace deploys from, and the push deliveries already
//! acted on.

use crate::records::*;
use crate::rows::{deployment, integration, Columns, DEPLOYMENT_COLUMNS, INTEGRATION_COLUMNS};
use crate::sql::{query, work, Backend, Conn};
use crate::{now_micros, IntegrationStore, Result, SourceConfig, StoreError};
use async_trait::async_trait;
use uuid::Uuid;

/// The `github` deployments (of one workspace, or of all).
fn github_deployments_query(workspace: Option<Uuid>) -> crate::sql::Query {
    match workspace {
        Some(ws) => query(format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments \
             WHERE source = 'github' AND workspace_id = $1 ORDER BY created_at, id"
        ))
        .bind(ws),
        None => query(format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE source = 'github' \
             ORDER BY created_at, id"
        )),
    }
}

fn uses(d: &Deployment, integration: Uuid) -> bool {
    SourceConfig::of(&d.source_config).integration_id.as_deref()
        == Some(integration.to_string().as_str())
}

#[async_trait]
impl<B: Backend> IntegrationStore for B {
    async fn create_integration(&self, new: Integration) -> Result<Integration> {
        let q = query(format!(
            "INSERT INTO integrations ({INTEGRATION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
             RETURNING {INTEGRATION_COLUMNS}"
        ))
        .bind(new.id)
        .bind(new.workspace_id)
        .bind(&new.name)
        .bind(new.kind.as_str())
        .bind(&new.base_url)
        .bind(&new.api_url)
        .bind(new.app_id)
        .bind(new.installation_id)
        .bind(&new.credential)
        .bind(&new.webhook_secret)
        .bind(now_micros());
        self.transaction(work(move |c: &mut B::Conn| {
            Box::pin(async move { integration(&c.fetch_one(q).await?) })
        }))
        .await
    }

    async fn list_integrations(&self, workspace: Option<Uuid>) -> Result<Vec<Integration>> {
        let q = match workspace {
            Some(ws) => query(format!(
                "SELECT {INTEGRATION_COLUMNS} FROM integrations WHERE workspace_id = $1 \
                 ORDER BY created_at, id"
            ))
            .bind(ws),
            None => query(format!(
                "SELECT {INTEGRATION_COLUMNS} FROM integrations ORDER BY created_at, id"
            )),
        };
        self.read(q, integration).await
    }

    async fn get_integration(&self, id: Uuid) -> Result<Option<Integration>> {
        let q = query(format!(
            "SELECT {INTEGRATION_COLUMNS} FROM integrations WHERE id = $1"
        ));
        self.read_one(q.bind(id), integration).await
    }

    async fn update_integration(&self, changed: Integration) -> Result<()> {
        let q = query(
            "UPDATE integrations SET name = $1, base_url = $2, api_url = $3, app_id = $4, \
             installation_id = $5, credential = $6, webhook_secret = $7, updated_at = $8 \
             WHERE id = $9",
        )
        .bind(&changed.name)
        .bind(&changed.base_url)
        .bind(&changed.api_url)
        .bind(changed.app_id)
        .bind(changed.installation_id)
        .bind(&changed.credential)
        .bind(&changed.webhook_secret)
        .bind(now_micros())
        .bind(changed.id);
        match self.execute(q).await? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn delete_integration(&self, id: Uuid) -> Result<IntegrationDeleted> {
        self.transaction(work(move |c: &mut B::Conn| {
            Box::pin(async move {
                let lock = c.dialect().for_update();
                let sql = format!("SELECT workspace_id FROM integrations WHERE id = $1{lock}");
                let Some(row) = c.fetch_optional(query(sql).bind(id)).await? else {
                    return Ok(IntegrationDeleted::NotFound);
                };
                let ws = row.uuid("workspace_id")?;
                let users = c
                    .fetch_all(github_deployments_query(Some(ws)))
                    .await?
                    .iter()
                    .map(|r| deployment(r))
                    .collect::<Result<Vec<_>>>()?
                    .into_iter()
                    .filter(|d| uses(d, id))
                    .map(|d| d.id)
                    .collect::<Vec<_>>();
                if !users.is_empty() {
                    return Ok(IntegrationDeleted::InUse(users));
                }
                c.execute(query("DELETE FROM integrations WHERE id = $1").bind(id))
                    .await?;
                Ok(IntegrationDeleted::Deleted)
            })
        }))
        .await
    }

    async fn github_deployments(&self, workspace: Option<Uuid>) -> Result<Vec<Deployment>> {
        self.read(github_deployments_query(workspace), deployment)
            .await
    }

    async fn record_delivery(&self, integration: Uuid, delivery: &str) -> Result<bool> {
        let q = query(
            "INSERT INTO webhook_deliveries (integration_id, delivery_id, received_at) \
             VALUES ($1, $2, $3)",
        )
        .bind(integration)
        .bind(delivery)
        .bind(now_micros());
        match self.execute(q).await {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn forget_delivery(&self, integration: Uuid, delivery: &str) -> Result<()> {
        let q =
            query("DELETE FROM webhook_deliveries WHERE integration_id = $1 AND delivery_id = $2")
                .bind(integration)
                .bind(delivery);
        self.execute(q).await?;
        Ok(())
    }
}
