//! The `keel policy` verbs of the update pipeline: rollout, promote, rollback, rollouts,
//! backtest, history, propose, proposals, approve, reject. Same events as the API
//! (`keel_service`); the actor is `cli:$USER`.

use std::sync::Arc;

use crate::open_store;
use anyhow::{bail, Result};
use keel_core::Clock;
use keel_loop::update::rollout::RolloutScope;
use keel_policy::Bundle;
use keel_service::proposals::{self, ProposalSource};
use keel_service::Actor;
use keel_service::{backtests, history, rollouts};
use serde_json::{json, Value};

use crate::{cli_operator, load, PolicyVerb};

fn actor() -> Actor {
    cli_operator()
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn run(verb: PolicyVerb, clock: Arc<dyn Clock>) -> Result<()> {
    let config = match &verb {
        PolicyVerb::Rollout { config, .. }
        | PolicyVerb::Promote { config, .. }
        | PolicyVerb::Rollback { config, .. }
        | PolicyVerb::Rollouts { config, .. }
        | PolicyVerb::Backtest { config, .. }
        | PolicyVerb::History { config }
        | PolicyVerb::Propose { config, .. }
        | PolicyVerb::Proposals { config }
        | PolicyVerb::Approve { config, .. }
        | PolicyVerb::Reject { config, .. } => load(config)?,
        _ => bail!("not an update verb"),
    };
    let store = open_store(&config).await?;
    let s = store.as_ref();
    let c = clock.as_ref();
    let promote = matches!(verb, PolicyVerb::Promote { .. });
    let result: Result<()> = async {
        match verb {
            PolicyVerb::Rollout {
                version,
                percent,
                tenant,
                locale,
                reason,
                allow_weaker_than_default,
                ..
            } => {
                let reason = match reason {
                    Some(r) => r,
                    None if allow_weaker_than_default => String::new(),
                    None => "rollout from the CLI".to_string(),
                };
                let request = rollouts::RolloutRequest {
                    version: &version,
                    percent,
                    scope: RolloutScope { tenant, locale },
                    reason: &reason,
                    allow_weaker_than_default,
                    id: keel_core::id::new_id("ro", c),
                };
                let r = rollouts::start(s, c, &cli_operator(), request).await?;
                eprintln!("{} {} at {}%", r.state, r.version, r.percent);
                println!("{}", r.id);
            }
            PolicyVerb::Promote {
                rollout, reason, ..
            }
            | PolicyVerb::Rollback {
                rollout, reason, ..
            } => {
                let r = rollouts::end_rollout(s, c, &rollout, promote, &reason, &cli_operator().who).await?;
                println!("{} {}", r.id, r.state);
            }
            PolicyVerb::Rollouts { json, .. } => {
                let tracker = rollouts::rollouts_catch_up(s, c, &config.update, &config.rollouts).await?;
                let now = c.now_ms();
                let rows: Vec<Value> = s
                    .rollouts()
                    .await?
                    .iter()
                    .rev()
                    .map(|r| {
                        crate::versions::without_stale_verdict(rollouts::rollout_json(
                            r,
                            &tracker,
                            &config.update,
                            &config.rollouts,
                            now,
                        ))
                    })
                    .collect();
                if json {
                    print_json(&json!(rows))?;
                } else {
                    print!("{}", crate::versions::rollouts_table(&rows));
                }
            }
            PolicyVerb::Backtest {
                candidate,
                since,
                tenant,
                ..
            } => {
                let now = c.now_ms();
                let Some(since_ms) = keel_loop::review::kpi::parse_time(&since, now) else {
                    bail!("--since: expected 7d, 24h, an RFC 3339 time or YYYY-MM-DD");
                };
                let path = std::path::Path::new(&candidate);
                let bundle = if path.is_dir() {
                    Bundle::load_dir(path)?
                } else if candidate.starts_with("pr_") {
                    backtests::candidate_bundle(s, Some(&candidate), None).await?
                } else {
                    backtests::candidate_bundle(s, None, Some(&candidate)).await?
                };
                let policy = backtests::compile_candidate(s, &bundle, None).await?;
                let report =
                    backtests::run_backtest(s, &policy, tenant.as_deref(), since_ms, i64::MAX, 100_000)
                        .await?;
                eprintln!(
                    "{} interactions replayed, {} flipped, {} erased skipped; caught {} wrong answers, {} violations",
                    report.interactions,
                    report.flipped,
                    report.skipped_erased,
                    report.caught_wrong_answers,
                    report.caught_violations
                );
                print_json(&json!(report))?;
            }
            PolicyVerb::History { .. } => {
                println!("AT\tKIND\tOUTCOME\tACTOR\tVERSION\tROLLOUT\tPROPOSAL\tREVIEW\tREASON");
                for r in history::history(s, None).await? {
                    let f = |k: &str| r[k].as_str().map(str::to_string).unwrap_or_else(|| "-".into());
                    // Fact changes name the fact (key = value) where versions go.
                    let version = match r["fact"]["key"].as_str() {
                        Some(k) => format!("fact:{k}={}", r["fact"]["value"]),
                        None => f("version"),
                    };
                    let version = if version.starts_with("fact:") {
                        version
                    } else {
                        version.get(..12).unwrap_or(&version).to_string()
                    };
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        f("at"),
                        f("kind"),
                        f("outcome"),
                        f("actor"),
                        version,
                        f("rollout"),
                        f("proposal"),
                        f("review"),
                        f("reason")
                    );
                }
            }
            PolicyVerb::Propose {
                review,
                suggestion,
                reason,
                ..
            } => {
                let source = match (review, suggestion) {
                    (Some(r), _) => ProposalSource::Review(r),
                    (None, Some(j)) => ProposalSource::Direct(serde_json::from_str(&j)?),
                    (None, None) => bail!("give --review ID or --suggestion JSON"),
                };
                let doc =
                    proposals::create_proposal(
                    s,
                    c,
                    source,
                    reason.as_deref(),
                    None,
                    &actor(),
                    keel_core::id::new_id("pr", c),
                )
                        .await?;
                eprintln!("{}", doc["diff"].as_str().unwrap_or_default());
                print_json(&doc)?;
            }
            PolicyVerb::Proposals { .. } => {
                println!("ID\tSTATUS\tKIND\tAUTHOR\tCANDIDATE\tREASON");
                for p in proposals::load_proposals(s).await?.iter().rev() {
                    let f = |k: &str| p[k].as_str().unwrap_or("-").to_string();
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        f("id"),
                        f("status"),
                        f("kind"),
                        f("author"),
                        f("candidate_version"),
                        f("reason")
                    );
                }
            }
            PolicyVerb::Approve {
                proposal, reason, ..
            } => {
                let doc =
                    proposals::approve_proposal(s, c, &config.update, &config.rollouts, &proposal, &reason, &actor())
                        .await?;
                print_json(&doc)?;
            }
            PolicyVerb::Reject {
                proposal, reason, ..
            } => {
                let doc = proposals::reject_proposal(s, c, &proposal, &reason, &actor()).await?;
                print_json(&doc)?;
            }
            _ => bail!("not an update verb"),
        }
        Ok(())
    }
    .await;
    store.close().await;
    result
}
