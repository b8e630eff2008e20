//! `keel interactions list|show`: recorded interactions from the store (what
//! `GET /api/interactions` serves to reviewer, admin and auditor keys), newest first.

use crate::open_store;
use anyhow::{bail, Result};
use clap::Subcommand;
use keel_core::clock::format_ms;
use keel_store::InteractionQuery;

use crate::{load, ConfigArg};

#[derive(Subcommand)]
pub(crate) enum InteractionsVerb {
    /// Newest first: id, time, tenant, outcome, decision, policy version, the user's last text.
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        conversation: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One interaction as recorded (JSON): request, reply, decision with spans, facts.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        id: String,
    },
}

pub(crate) async fn run(verb: InteractionsVerb) -> Result<()> {
    match verb {
        InteractionsVerb::List {
            config,
            tenant,
            conversation,
            limit,
        } => {
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let rows = store
                .list_interactions(&InteractionQuery {
                    tenant,
                    conversation_id: conversation,
                    since_ms: None,
                    before_seq: None,
                    limit: limit.clamp(1, 1000),
                })
                .await;
            store.close().await;
            println!("ID\tAT\tTENANT\tOUTCOME\tDECISION\tPOLICY\tUSER_TEXT");
            for r in rows? {
                let rec = &r.record;
                let last_user = rec["request_messages"]
                    .as_array()
                    .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
                    .map(|m| match &m["content"] {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .unwrap_or_default();
                let short: String = last_user.chars().take(60).collect();
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    r.id,
                    format_ms(r.at_ms),
                    r.tenant,
                    rec["outcome"].as_str().unwrap_or("erased"),
                    rec["decision"]["action"].as_str().unwrap_or("-"),
                    keel_policy::version::short(rec["policy_version"].as_str().unwrap_or("-")),
                    short.replace(['\t', '\n'], " ")
                );
            }
        }
        InteractionsVerb::Show { config, id } => {
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let row = store.interaction(&id).await;
            store.close().await;
            let Some(r) = row? else {
                bail!("no interaction `{id}`");
            };
            let out = serde_json::json!({"id": r.id, "tenant": r.tenant, "at": format_ms(r.at_ms),
                "ledger_index": r.ledger_index, "record": r.record});
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}
