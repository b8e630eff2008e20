//! The policy history: versions, rollouts, fact changes and proposals in log order, with who,
//! why, when, outcome and links.

use std::collections::BTreeMap;

use keel_loop::update::proposal::{PROPOSAL_CREATED, PROPOSAL_DECIDED};
use keel_loop::update::rollout::ROLLOUT_CHANGED;
use keel_loop::update::GLOBAL_SCOPE;
use keel_store::Store;
use serde_json::{json, Value};

use crate::error::ServiceError;

/// Versions, rollouts, fact changes and proposals in log order, with who, why, when, outcome
/// and links (`tenant`: only what concerns that tenant and every tenant).
pub async fn history(store: &dyn Store, tenant: Option<&str>) -> Result<Vec<Value>, ServiceError> {
    let kinds_ = [
        keel_core::EventKind::POLICY_PUBLISHED,
        keel_core::EventKind::POLICY_ACTIVATED,
        ROLLOUT_CHANGED,
        keel_loop::facts::FACT_SET,
        PROPOSAL_CREATED,
        PROPOSAL_DECIDED,
    ];
    let events = store
        .events_in_range(&kinds_, None, i64::MIN, i64::MAX)
        .await?;
    let reviews: BTreeMap<String, Value> = events
        .iter()
        .filter(|e| e.kind == PROPOSAL_CREATED)
        .filter_map(|e| {
            Some((
                e.payload["id"].as_str()?.to_string(),
                e.payload["source"]["review"].clone(),
            ))
        })
        .collect();
    let mut out = Vec::new();
    for e in events {
        if tenant.is_some_and(|t| e.tenant != t && e.tenant != GLOBAL_SCOPE) {
            continue;
        }
        let p = &e.payload;
        let mut row = json!({"seq": e.seq, "at_ms": e.at_ms, "at": keel_core::clock::format_ms(e.at_ms),
                             "kind": e.kind, "actor": e.actor, "tenant": e.tenant,
                             "reason": p["reason"]});
        let proposal = match e.kind.as_str() {
            keel_core::EventKind::POLICY_PUBLISHED => {
                row["version"] = p["version"].clone();
                row["outcome"] = json!("published");
                p["proposal"].as_str()
            }
            keel_core::EventKind::POLICY_ACTIVATED => {
                row["version"] = p["version"].clone();
                row["scope"] = p["scope"].clone();
                row["outcome"] = json!("activated");
                None
            }
            ROLLOUT_CHANGED => {
                row["rollout"] = p["id"].clone();
                row["version"] = p["version"].clone();
                row["baseline"] = p["baseline"].clone();
                row["percent"] = p["percent"].clone();
                row["scope"] = p["scope"].clone();
                row["outcome"] = p["state"].clone();
                p["proposal"].as_str()
            }
            keel_core::EventKind::FACT_SET => {
                row["fact"] = json!({"key": p["fact"]["key"], "value": p["fact"]["value"],
                                     "effective_from": p["fact"]["effective_from"]});
                row["outcome"] = json!("set");
                p["proposal"].as_str()
            }
            PROPOSAL_CREATED => {
                row["outcome"] = json!("proposed");
                row["version"] = p["candidate_version"].clone();
                row["proposal_kind"] = p["kind"].clone();
                p["id"].as_str()
            }
            _ => {
                row["outcome"] = p["decision"].clone();
                row["version"] = p["version"].clone();
                p["id"].as_str()
            }
        };
        if let Some(pid) = proposal {
            row["proposal"] = json!(pid);
            if let Some(r) = reviews.get(pid).filter(|r| !r.is_null()) {
                row["review"] = r.clone();
            }
        }
        if p.is_null() {
            row["outcome"] = json!("erased");
        }
        out.push(row);
    }
    Ok(out)
}
