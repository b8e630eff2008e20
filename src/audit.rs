//! The `keel audit` verbs: verify, checkpoint, prove, pubkey, erase.

use std::sync::Arc;

use crate::open_store;
use anyhow::{bail, Context, Result};
use keel_audit::{EraseTarget, LedgerSigner};
use keel_core::Clock;
use keel_gateway::Config;
use keel_ledger::encode_hash;
use keel_service::audit;

use crate::{cli_operator, load, AuditVerb};

fn signer(config: &Config) -> Result<LedgerSigner> {
    Ok(LedgerSigner::load_or_create(
        &config.data_dir,
        &config.ledger.key_name,
        &config.ledger.origin,
    )?)
}

/// Parses `--before`: RFC 3339 or a date (midnight UTC).
fn parse_before(s: &str) -> Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("--before `{s}` is neither RFC 3339 nor YYYY-MM-DD"))?;
    Ok(d.and_hms_opt(0, 0, 0)
        .context("invalid date")?
        .and_utc()
        .timestamp_millis())
}

pub async fn run(verb: AuditVerb, clock: Arc<dyn Clock>) -> Result<()> {
    match verb {
        AuditVerb::Pubkey { config } => {
            let config = load(&config)?;
            println!("{}", signer(&config)?.verifier_key()?);
        }
        AuditVerb::Checkpoint { config } => {
            let config = load(&config)?;
            let signer = signer(&config)?;
            let store = open_store(&config).await?;
            let cp =
                audit::checkpoint(store.as_ref(), clock.as_ref(), &cli_operator(), &signer).await;
            store.close().await;
            print!("{}", cp?.note);
        }
        AuditVerb::Prove {
            config,
            index,
            size,
        } => {
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let result = async {
                let size = match size {
                    Some(s) => s,
                    None => match store.latest_checkpoint().await? {
                        Some(cp) if cp.size > index => cp.size,
                        _ => store.ledger_size().await?,
                    },
                };
                if index >= size {
                    bail!("index {index} is not below the tree size {size}");
                }
                let proof = store.inclusion_proof(index, size).await?;
                let leaf = store
                    .leaves(index, 1)
                    .await?
                    .into_iter()
                    .next()
                    .context("no such leaf")?;
                let leaf_hash: [u8; 32] = leaf
                    .leaf_hash
                    .as_slice()
                    .try_into()
                    .context("corrupt leaf hash")?;
                Ok(serde_json::json!({
                    "index": index, "size": size, "leaf_hash": encode_hash(&leaf_hash),
                    "proof": proof.iter().map(encode_hash).collect::<Vec<_>>(),
                }))
            }
            .await;
            store.close().await;
            println!("{}", serde_json::to_string_pretty(&result?)?);
        }
        AuditVerb::Verify { config } => {
            let config = load(&config)?;
            let verifier = keel_ledger::VerifierKey::parse(&signer(&config)?.verifier_key()?)?;
            let store = open_store(&config).await?;
            let bar = indicatif::ProgressBar::new(0);
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "verifying {bar:40} {pos}/{len} events ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let started = std::time::Instant::now();
            let report =
                audit::verify(store.as_ref(), &cli_operator(), &verifier, |done, total| {
                    bar.set_length(total);
                    bar.set_position(done);
                })
                .await;
            bar.finish_and_clear();
            store.close().await;
            let report = report?;
            eprintln!(
                "verified {} events, {} leaves, {} erased payloads, {} checkpoints in {:.2}s; root {}",
                report.events,
                report.leaves,
                report.erased,
                report.checkpoints,
                started.elapsed().as_secs_f64(),
                encode_hash(&report.root)
            );
            if let Some(first) = report.first() {
                for f in report.findings.iter().take(20) {
                    eprintln!(
                        "  {}: {:?}: {}",
                        f.index
                            .map(|i| format!("index {i}"))
                            .unwrap_or_else(|| "tree".into()),
                        f.kind,
                        f.detail
                    );
                }
                println!("FAILED");
                bail!(
                    "verification failed at {}: {:?}: {} ({} problems in all)",
                    first
                        .index
                        .map(|i| format!("index {i}"))
                        .unwrap_or_else(|| "the tree".into()),
                    first.kind,
                    first.detail,
                    report.findings.len()
                );
            }
            println!("OK");
        }
        AuditVerb::Erase {
            config,
            index,
            conversation,
            user,
            before,
            reason,
        } => {
            let target = match (index, conversation, user, before) {
                (Some(i), None, None, None) => EraseTarget::Index(i),
                (None, Some(c), None, None) => EraseTarget::Conversation(c),
                (None, None, Some(u), None) => EraseTarget::User(u),
                (None, None, None, Some(b)) => EraseTarget::Before(parse_before(&b)?),
                _ => bail!("give exactly one of --index, --conversation, --user, --before"),
            };
            let config = load(&config)?;
            let store = open_store(&config).await?;
            let n = audit::erase(
                store.as_ref(),
                clock.as_ref(),
                &cli_operator(),
                &target,
                &reason,
            )
            .await;
            store.close().await;
            println!("{}", n?);
        }
    }
    Ok(())
}
