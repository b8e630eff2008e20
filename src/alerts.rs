//! `keel alerts list|show|ack|resolve`: drift alerts and their lifecycle at a terminal. `ack`
//! and `resolve` act as the holder of `--key` (a reviewer or admin key) through the same
//! `keel_service::alerts` functions the HTTP API calls.

use std::sync::Arc;

use anyhow::Result;
use clap::Subcommand;
use keel_core::Clock;
use keel_service::alerts::{self, alert_json};
use keel_service::keys;

use crate::{cli_operator, load, open_store, ConfigArg};

#[derive(Subcommand)]
pub(crate) enum AlertsVerb {
    /// Alerts, newest first, tab-separated.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// open | acknowledged | resolved
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        metric: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One alert with its lifecycle (JSON).
    Show {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
    },
    /// Acknowledge an open alert.
    Ack {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
        /// Your reviewer or admin API key (its name is recorded).
        #[arg(long, env = "KEEL_KEY", hide_env_values = true)]
        key: String,
        #[arg(long)]
        reason: String,
    },
    /// Resolve an open or acknowledged alert, optionally linking the proposal that fixes it.
    Resolve {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
        #[arg(long, env = "KEEL_KEY", hide_env_values = true)]
        key: String,
        #[arg(long)]
        reason: String,
        /// The proposal id that addresses the alert.
        #[arg(long)]
        proposal: Option<String>,
    },
}

pub(crate) async fn run(verb: AlertsVerb, clock: Arc<dyn Clock>) -> Result<()> {
    match verb {
        AlertsVerb::List {
            config,
            status,
            metric,
            limit,
        } => {
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let rows =
                alerts::list(store.as_ref(), &cli_operator(), metric, status, None, limit).await;
            store.close().await;
            println!("ID\tSTATUS\tSEVERITY\tMETRIC\tSEGMENT\tRAISED_AT");
            for r in rows?.0 {
                let v = alert_json(&r);
                let text = |k: &str| v[k].as_str().unwrap_or("-").to_string();
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    r.id,
                    r.status,
                    text("severity"),
                    text("metric"),
                    text("segment_key"),
                    text("raised_at")
                );
            }
        }
        AlertsVerb::Show { config, id } => {
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let r = alerts::get(store.as_ref(), &cli_operator(), &id).await;
            store.close().await;
            println!("{}", serde_json::to_string_pretty(&alert_json(&r?))?);
        }
        AlertsVerb::Ack {
            config,
            id,
            key,
            reason,
        } => {
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let r = async {
                let actor = keys::actor_for_token(store.as_ref(), &key).await?;
                alerts::ack(store.as_ref(), clock.as_ref(), &actor, &id, &reason).await
            }
            .await;
            store.close().await;
            println!("{}\t{}", id, r?.status);
        }
        AlertsVerb::Resolve {
            config,
            id,
            key,
            reason,
            proposal,
        } => {
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let r = async {
                let actor = keys::actor_for_token(store.as_ref(), &key).await?;
                alerts::resolve(
                    store.as_ref(),
                    clock.as_ref(),
                    &actor,
                    &id,
                    &reason,
                    proposal.as_deref(),
                )
                .await
            }
            .await;
            store.close().await;
            println!("{}\t{}", id, r?.status);
        }
    }
    Ok(())
}
