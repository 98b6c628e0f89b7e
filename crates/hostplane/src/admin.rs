//! `hostplane admin`: identity management straight on the database.

use crate::DbArgs;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::process::ExitCode;
use store::{KeyScope, Plan, StoreError};
use uuid::Uuid;

#[derive(Args)]
pub struct AdminArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(KeyCommand),
}

#[derive(Clone, Copy, ValueEnum)]
enum PlanArg {
    Enterprise,
    Standard,
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Create an organization.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value = "enterprise")]
        plan: PlanArg,
    },
    /// List organizations.
    List,
}

#[derive(Subcommand)]
enum WorkspaceCommand {
    /// Create a workspace in an organization.
    Create {
        #[arg(long)]
        org: Uuid,
        #[arg(long)]
        name: String,
    },
    /// List workspaces, optionally of one organization.
    List {
        #[arg(long)]
        org: Option<Uuid>,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create a key scoped to one workspace, a whole organization, or one listener's
    /// data-plane routes (for its agent); prints its value once.
    Create {
        #[arg(long, group = "scope")]
        workspace: Option<Uuid>,
        #[arg(long, group = "scope")]
        org: Option<Uuid>,
        #[arg(long, group = "scope")]
        listener: Option<Uuid>,
    },
    /// List keys (never their values).
    List,
    /// Revoke a key; it stops working at once.
    Revoke { key_id: Uuid },
}

/// A usage mistake: message and exit code 2, like clap's own.
fn usage(msg: String) -> anyhow::Result<ExitCode> {
    eprintln!("hostplane: {msg}");
    Ok(ExitCode::from(2))
}

fn print(json_out: bool, value: serde_json::Value, text: String) {
    if json_out {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

pub async fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let store = args.db.open().await?;
    let j = args.json;
    match args.command {
        AdminCommand::Org(OrgCommand::Create { name, plan }) => {
            let plan = match plan {
                PlanArg::Enterprise => Plan::Enterprise,
                PlanArg::Standard => Plan::Standard,
            };
            let org = store.create_org(&name, plan).await?;
            print(
                j,
                json!(org),
                format!("{}\t{}\t{}", org.id, org.name, org.plan.as_str()),
            );
        }
        AdminCommand::Org(OrgCommand::List) => {
            let orgs = store.list_orgs().await?;
            let text = orgs
                .iter()
                .map(|o| format!("{}\t{}\t{}", o.id, o.name, o.plan.as_str()))
                .collect::<Vec<_>>();
            print(j, json!(orgs), text.join("\n"));
        }
        AdminCommand::Workspace(WorkspaceCommand::Create { org, name }) => match store
            .create_workspace(org, &name)
            .await
        {
            Ok(ws) => print(
                j,
                json!(ws),
                format!("{}\t{}\t{}", ws.id, ws.name, ws.org_id),
            ),
            Err(StoreError::NotFound) => return usage(format!("no organization with id {org}")),
            Err(e) => return Err(e.into()),
        },
        AdminCommand::Workspace(WorkspaceCommand::List { org }) => {
            let list = store.list_workspaces(org).await?;
            let text = list
                .iter()
                .map(|w| format!("{}\t{}\t{}", w.id, w.name, w.org_id))
                .collect::<Vec<_>>();
            print(j, json!(list), text.join("\n"));
        }
        AdminCommand::ApiKey(KeyCommand::Create {
            workspace,
            org,
            listener,
        }) => {
            let scope = match (workspace, org, listener) {
                (_, _, Some(id)) => match store.find_listener(id).await? {
                    Some(l) => {
                        let (w, _) = store
                            .get_workspace(l.workspace_id)
                            .await?
                            .ok_or_else(|| anyhow::anyhow!("listener {id} has no workspace"))?;
                        KeyScope::Listener {
                            org_id: w.org_id,
                            workspace_id: w.id,
                            listener_id: id,
                        }
                    }
                    None => return usage(format!("no listener with id {id}")),
                },
                (Some(ws), _, _) => match store.get_workspace(ws).await? {
                    Some((w, _)) => KeyScope::Workspace {
                        org_id: w.org_id,
                        workspace_id: ws,
                    },
                    None => return usage(format!("no workspace with id {ws}")),
                },
                (None, Some(org_id), None) => {
                    if !store.list_orgs().await?.iter().any(|o| o.id == org_id) {
                        return usage(format!("no organization with id {org_id}"));
                    }
                    KeyScope::Org { org_id }
                }
                (None, None, None) => return usage("give --workspace, --org or --listener".into()),
            };
            let value = store::generate_key();
            let key = store
                .create_api_key(scope, &store::hash_key(&value))
                .await?;
            print(
                j,
                json!({
                    "id": key.id, "key": value,
                    "org_id": key.org_id, "workspace_id": key.workspace_id,
                    "listener_id": key.listener_id,
                }),
                format!("id:  {}\nkey: {value}\n(the key is shown only now)", key.id),
            );
        }
        AdminCommand::ApiKey(KeyCommand::List) => {
            let keys = store.list_api_keys().await?;
            let text = keys
                .iter()
                .map(|k| {
                    let scope = match k.scope() {
                        KeyScope::Org { org_id } => format!("org {org_id}"),
                        KeyScope::Workspace { workspace_id, .. } => {
                            format!("workspace {workspace_id}")
                        }
                        KeyScope::Listener { listener_id, .. } => {
                            format!("listener {listener_id}")
                        }
                    };
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    format!("{}\t{scope}\t{state}", k.id)
                })
                .collect::<Vec<_>>();
            print(j, json!(keys), text.join("\n"));
        }
        AdminCommand::ApiKey(KeyCommand::Revoke { key_id }) => {
            match store.revoke_api_key(key_id).await {
                Ok(()) => print(
                    j,
                    json!({ "id": key_id, "revoked": true }),
                    format!("revoked {key_id}"),
                ),
                Err(StoreError::NotFound) => return usage(format!("no API key with id {key_id}")),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
