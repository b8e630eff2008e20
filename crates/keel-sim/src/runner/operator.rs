//! The simulated operator: reads alerts, turns reviewers' suggestions into proposals and
//! rollouts (or publishes directly), follows canaries, and publishes announced updates.

use reqwest::Method;
use serde_json::{json, Value};

use super::client::{Client, Keys};
use super::humans::Staff;
use super::RunState;
use crate::metrics::Alert;
use crate::scenario::Scenario;
use crate::update;
use crate::SimError;

pub(super) async fn read_alerts(
    c: &Client,
    keys: &Keys,
    now: i64,
    st: &mut RunState,
) -> Result<(), SimError> {
    let v = c
        .ok(Method::GET, "/api/alerts?limit=500", &keys.admin, None)
        .await?;
    let mut new: Vec<Alert> = v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["seq"].as_i64().unwrap_or(0) > st.last_alert_seq)
        .map(|a| Alert {
            seq: a["seq"].as_i64().unwrap_or(0),
            metric: a["metric"].as_str().unwrap_or("").to_string(),
            locale: a["segment"]["locale"].as_str().unwrap_or("-").to_string(),
            jurisdiction: a["segment"]["jurisdiction"]
                .as_str()
                .unwrap_or("-")
                .to_string(),
            topic: a["segment"]["topic"].as_str().unwrap_or("-").to_string(),
            at_ms: now,
            served_before: st.served.len(),
        })
        .collect();
    new.sort_by_key(|a| a.seq);
    if let Some(last) = new.last() {
        st.last_alert_seq = last.seq;
    }
    st.alerts.extend(new);
    Ok(())
}

/// The operator acts on a reviewer's suggestion: a proposal through the update pipeline (or,
/// without it, a direct publish), once per distinct suggestion.
pub(super) async fn operator_acts(
    staff: &Staff<'_>,
    change: usize,
    review_id: &str,
    suggestion: &Value,
    now: i64,
    st: &mut RunState,
) -> Result<(), SimError> {
    let Staff {
        c,
        keys,
        spec,
        update_api,
        ..
    } = *staff;
    let s: &Scenario = &spec.scenario;
    // People act after the tick's traffic: their changes count from the next request on.
    let canon = suggestion.to_string();
    if st.acted.contains_key(&canon) {
        return Ok(());
    }
    if update_api && !st.rollouts.is_empty() {
        // One canary at a time: the next proposal builds on the promoted version.
        if !st.queued.iter().any(|(_, q, _)| q == suggestion) {
            st.queued
                .push((review_id.to_string(), suggestion.clone(), change));
        }
        return Ok(());
    }
    st.acted.insert(canon, change);
    st.proposals += 1;
    if !update_api {
        publish(c, keys, s, change, st, "reviewer suggestion").await?;
        st.mitigated.entry(change).or_insert(now + 1);
        st.canary.entry(change).or_insert(now + 1);
        return Ok(());
    }
    let p = c
        .ok(
            Method::POST,
            "/api/proposals",
            &keys.admin,
            Some(&json!({"from_review": review_id, "reason": "reviewer suggestion"})),
        )
        .await?;
    let pid = p["id"].as_str().unwrap_or("").to_string();
    let approved = c
        .ok(
            Method::POST,
            &format!("/api/proposals/{pid}/approve"),
            &keys.admin,
            Some(&json!({"reason": "reviewed: the old answer is no longer right"})),
        )
        .await?;
    if p["kind"] == "fact" {
        st.mitigated.entry(change).or_insert(now + 1);
        st.canary.entry(change).or_insert(now + 1);
        return Ok(());
    }
    let _ = c
        .call(
            Method::POST,
            "/api/backtests",
            &keys.admin,
            Some(&json!({"proposal": pid})),
        )
        .await?;
    let version = approved["version"]
        .as_str()
        .or(p["candidate_version"].as_str())
        .unwrap_or("")
        .to_string();
    let r = c
        .ok(
            Method::POST,
            "/api/rollouts",
            &keys.admin,
            Some(
                &json!({"version": version, "percent": s.gateway.canary_percent, "tenant": s.tenant,
                         "reason": format!("canary for proposal {pid}")}),
            ),
        )
        .await?;
    st.canary.entry(change).or_insert(now + 1);
    if matches!(r["state"].as_str(), Some("active") | Some("promoted")) {
        st.mitigated.entry(change).or_insert(now + 1);
    } else if let Some(id) = r["id"].as_str() {
        st.rollouts.insert(id.to_string(), change);
    }
    Ok(())
}

/// How long the operator watches a canary before promoting it by hand when no guard objects.
pub(super) const CANARY_WATCH_MS: i64 = 6 * 3_600_000;

/// Canaries in flight: promoted (by the worker, or by the operator once the canary has run a
/// while with enough traffic and no guard inferior) → mitigated; rolled back → the suggestion
/// may come again.
pub(super) async fn follow_rollouts(
    c: &Client,
    keys: &Keys,
    now: i64,
    st: &mut RunState,
) -> Result<(), SimError> {
    let ids: Vec<(String, usize)> = st.rollouts.iter().map(|(k, v)| (k.clone(), *v)).collect();
    for (id, change) in ids {
        let r = c
            .ok(
                Method::GET,
                &format!("/api/rollouts/{id}"),
                &keys.admin,
                None,
            )
            .await?;
        let mut state = r["state"].as_str().unwrap_or("").to_string();
        if state == "canary" {
            let started = r["started_ms"].as_i64().unwrap_or(now);
            let enough = r["arms"]["canary"]["interactions"].as_u64().unwrap_or(0) >= 40;
            let objection = r["guards"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|g| g["enabled"] != false && g["verdict"] == "inferior");
            if enough && !objection && now - started >= CANARY_WATCH_MS {
                let (status, v) = c
                    .call(
                        Method::POST,
                        &format!("/api/rollouts/{id}/promote"),
                        &keys.admin,
                        Some(&json!({"reason": "canary watched: no guard inferior"})),
                    )
                    .await?;
                if status.is_success() {
                    state = v["state"].as_str().unwrap_or("promoted").to_string();
                }
            }
        }
        match state.as_str() {
            "promoted" | "active" => {
                st.mitigated.entry(change).or_insert(now + 1);
                st.rollouts.remove(&id);
            }
            "rolled_back" | "superseded" => {
                st.rollouts.remove(&id);
                st.acted.retain(|_, ch| *ch != change);
                st.canary.remove(&change);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Publishes and activates the default pack plus every update in force (or sets facts).
pub(super) async fn publish(
    c: &Client,
    keys: &Keys,
    s: &Scenario,
    change: usize,
    st: &mut RunState,
    why: &str,
) -> Result<(), SimError> {
    let ch = &s.changes[change];
    if ch.update.kind == "fact_update" {
        c.ok(
            Method::POST,
            "/api/facts",
            &keys.admin,
            Some(&json!({"facts": ch.update.facts, "reason": format!("{why}: {}", ch.id)})),
        )
        .await?;
        return Ok(());
    }
    st.rules.insert(change, update::rules_for(ch));
    let extra: Vec<_> = st.rules.values().cloned().collect();
    let files = update::bundle_files(&extra)?;
    let v = c
        .ok(
            Method::POST,
            "/api/policies",
            &keys.admin,
            Some(&json!({"files": files, "reason": format!("{why}: {}", ch.id)})),
        )
        .await?;
    let version = v["version"].as_str().unwrap_or("").to_string();
    c.ok(
        Method::POST,
        &format!("/api/policies/{version}/activate"),
        &keys.admin,
        Some(&json!({"tenant": s.tenant})),
    )
    .await?;
    Ok(())
}
