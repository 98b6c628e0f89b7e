//! `hostplane admin`: identity management straight on the database.

use crate::DbArgs;
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::process::ExitCode;
use store::{IntegrationKind, KeyScope, Plan, StoreError};
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
    /// Git hosts a workspace deploys `github` deployments from (credentials sealed with
    /// the server's secret key, which these commands need too).
    #[command(subcommand)]
    Integration(Box<IntegrationCommand>),
}

/// Where the server's secret key is: the same options as `serve`.
#[derive(Args)]
struct KeyArgs {
    #[command(flatten)]
    secret: crate::SecretArgs,
    /// The server's storage folder (where its generated secret key is kept).
    #[arg(long, env = "HOSTPLANE_STORAGE_DIR", default_value = "hostplane-data")]
    storage_dir: std::path::PathBuf,
}

#[derive(Subcommand)]
enum IntegrationCommand {
    /// Add a git host to a workspace, with a token (GitHub, GitHub Enterprise, GitLab,
    /// Gitea) or a GitHub App installation.
    Create {
        #[arg(long)]
        workspace: Uuid,
        #[arg(long)]
        name: String,
        /// Where repositories live, e.g. https://github.com; `repo_url`s must start with it.
        #[arg(long)]
        base_url: String,
        /// The host's GitHub-compatible REST API (https://api.github.com,
        /// https://HOST/api/v3, Gitea's https://HOST/api/v1), for repository lists and
        /// GitHub App tokens.
        #[arg(long)]
        api_url: Option<String>,
        /// A file holding the access token.
        #[arg(long, group = "credential")]
        token_file: Option<std::path::PathBuf>,
        /// A file holding the GitHub App's private key (PEM); needs --app-id. Without
        /// --installation-id, the installation is recorded when the App is installed
        /// through its install link (`integration install-link`).
        #[arg(long, group = "credential", requires = "app_id")]
        private_key_file: Option<std::path::PathBuf>,
        #[arg(long)]
        app_id: Option<i64>,
        #[arg(long)]
        installation_id: Option<i64>,
        /// A file holding the secret push events are signed with.
        #[arg(long)]
        webhook_secret_file: Option<std::path::PathBuf>,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// List integrations (never their credentials), optionally of one workspace.
    List {
        #[arg(long)]
        workspace: Option<Uuid>,
    },
    /// Replace an integration's credential and/or webhook secret.
    Rotate {
        integration_id: Uuid,
        /// The new token, or the GitHub App's new private key.
        #[arg(long)]
        credential_file: Option<std::path::PathBuf>,
        #[arg(long)]
        webhook_secret_file: Option<std::path::PathBuf>,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Delete an integration no deployment uses.
    Delete { integration_id: Uuid },
    /// What a GitHub App integration's installation needs: the `state` to add to the
    /// App's install page URL (https://github.com/apps/APP/installations/new?state=...)
    /// and the path of this server to set as the App's Setup URL; GitHub then sends the
    /// new installation there and it is recorded on the integration.
    InstallLink {
        integration_id: Uuid,
        #[command(flatten)]
        key: KeyArgs,
    },
}

fn read_secret(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .with_context(|| format!("reading {}", path.display()))
}

fn integration_line(i: &store::Integration) -> String {
    format!(
        "{}\t{}\t{}\t{}\tworkspace {}",
        i.id,
        i.name,
        i.kind.as_str(),
        i.base_url,
        i.workspace_id
    )
}

async fn integration(
    store: &dyn store::Store,
    j: bool,
    command: IntegrationCommand,
) -> anyhow::Result<ExitCode> {
    use api::operations::integrations::{self as ops, AdminError};
    let done = match command {
        IntegrationCommand::Create {
            workspace,
            name,
            base_url,
            api_url,
            token_file,
            private_key_file,
            app_id,
            installation_id,
            webhook_secret_file,
            key,
        } => {
            let (kind, file) = match (token_file, private_key_file) {
                (Some(f), None) => (IntegrationKind::Token, f),
                (None, Some(f)) => (IntegrationKind::GithubApp, f),
                _ => return usage("give --token-file or --private-key-file".into()),
            };
            let secrets = key.secret.secret_box(&key.storage_dir, false)?;
            let new = ops::NewIntegration {
                workspace_id: workspace,
                name,
                kind,
                base_url,
                api_url,
                app_id,
                installation_id,
                credential: read_secret(&file)?,
                webhook_secret: webhook_secret_file
                    .as_deref()
                    .map(read_secret)
                    .transpose()?,
            };
            ops::create(store, &secrets, new).await.map(|i| {
                print(j, json!(i), integration_line(&i));
            })
        }
        IntegrationCommand::List { workspace } => {
            let all = store.list_integrations(workspace).await?;
            let text = all.iter().map(integration_line).collect::<Vec<_>>();
            print(j, json!(all), text.join("\n"));
            Ok(())
        }
        IntegrationCommand::Rotate {
            integration_id,
            credential_file,
            webhook_secret_file,
            key,
        } => {
            let secrets = key.secret.secret_box(&key.storage_dir, false)?;
            let credential = credential_file.as_deref().map(read_secret).transpose()?;
            let webhook = webhook_secret_file
                .as_deref()
                .map(read_secret)
                .transpose()?;
            ops::rotate(store, &secrets, integration_id, credential, webhook)
                .await
                .map(|i| print(j, json!(i), format!("rotated {}", i.id)))
        }
        IntegrationCommand::InstallLink {
            integration_id,
            key,
        } => {
            let secrets = key.secret.secret_box(&key.storage_dir, false)?;
            ops::install_link(store, &secrets, integration_id)
                .await
                .map(|(state, path)| {
                    print(
                        j,
                        json!({ "integration_id": integration_id, "state": state, "setup_path": path }),
                        format!("state\t{state}\nsetup URL\t<public URL>{path}"),
                    )
                })
        }
        IntegrationCommand::Delete { integration_id } => {
            ops::delete(store, integration_id).await.map(|()| {
                print(
                    j,
                    json!({ "id": integration_id, "deleted": true }),
                    format!("deleted {integration_id}"),
                )
            })
        }
    };
    match done {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(AdminError::Refused(msg)) => usage(msg),
        Err(AdminError::Store(e)) => Err(e.into()),
    }
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
        AdminCommand::Integration(command) => return integration(&*store, j, *command).await,
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
