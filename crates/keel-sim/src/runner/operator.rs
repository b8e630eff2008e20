//! The simulated operator: reads alerts, turns reviewers' suggestions into proposals and
//! rollouts (or publishes directly), follows canaries, and publishes announced updates.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::client::{Client, Keys};
use super::humans::Staff;
use super::RunState;
use crate::metrics::Alert;
use crate::scenario::Scenario;
use crate::update;
use crate::SimError;

/// A slice value as the alert gives it: absent, null, empty, `-` or `*` = not named.
fn named(v: &Value) -> Option<String> {
    v.as_str()
        .filter(|s| !s.is_empty() && *s != "-" && *s != "*")
        .map(str::to_string)
}

/// An alert row of `GET /api/alerts` as the metrics read it: the slice from `slice` (or the
/// older `segment`), the interactions it names from `evidence` and `first_interaction`.
pub(super) fn alert_of(a: &Value, now: i64, served_before: usize) -> Alert {
    let slice = if a["slice"].is_object() {
        &a["slice"]
    } else {
        &a["segment"]
    };
    let mut evidence: Vec<String> = a["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().or(e["id"].as_str()).map(str::to_string))
        .collect();
    if let Some(f) = a["first_interaction"].as_str() {
        if !evidence.iter().any(|e| e == f) {
            evidence.push(f.to_string());
        }
    }
    Alert {
        seq: a["seq"].as_i64().unwrap_or(0),
        id: a["id"].as_str().unwrap_or("").to_string(),
        metric: a["metric"].as_str().unwrap_or("").to_string(),
        locale: named(&slice["locale"]),
        jurisdiction: named(&slice["jurisdiction"]),
        topic: named(&slice["topic"]),
        cluster: named(&slice["cluster"]),
        evidence,
        at_ms: now,
        served_before,
    }
}

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
        .map(|a| alert_of(a, now, st.served.len()))
        .collect();
    new.sort_by_key(|a| a.seq);
    if let Some(last) = new.last() {
        st.last_alert_seq = last.seq;
    }
    for a in &new {
        if !a.id.is_empty() {
            st.op.alerts.push((a.id.clone(), now));
        }
    }
    st.alerts.extend(new);
    Ok(())
}

/// A suggestion waiting for the operator.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) review: String,
    pub(super) suggestion: Value,
    pub(super) change: usize,
    pub(super) at_ms: i64,
}

/// The operator's desk: suggestions and alerts waiting, and what the gateway turned out to
/// support.
#[derive(Debug, Default)]
pub(super) struct Desk {
    pub(super) inbox: Vec<Pending>,
    /// Alerts not yet acknowledged: (id, seen at).
    pub(super) alerts: Vec<(String, i64)>,
    /// Approved policy proposals whose canary could not start yet: (proposal, version, changes).
    pub(super) awaiting: Vec<(String, String, Vec<usize>)>,
    /// `POST /api/proposals {from_reviews}` works (`None`: not tried yet).
    pub(super) batches: Option<bool>,
    /// The alert lifecycle API (`POST /api/alerts/{id}/ack`) exists.
    pub(super) alert_api: Option<bool>,
}

/// A reviewer's suggestion reaches the operator's desk (once per distinct suggestion).
pub(super) fn receive(
    st: &mut RunState,
    change: usize,
    review: &str,
    suggestion: &Value,
    now: i64,
) {
    let canon = suggestion.to_string();
    if st.acted.contains_key(&canon) || st.op.inbox.iter().any(|p| p.suggestion == *suggestion) {
        return;
    }
    st.op.inbox.push(Pending {
        review: review.to_string(),
        suggestion: suggestion.clone(),
        change,
        at_ms: now,
    });
}

/// The operator's pass in a tick: within working hours, every suggestion and alert past the
/// latency is acted on. Fact updates go through their own proposals; policy suggestions are
/// drafted together (`from_reviews`) when the gateway batches, else one proposal at a time
/// on top of the last promoted version. The operator never promotes a canary.
pub(super) async fn operator_works(
    staff: &Staff<'_>,
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
    let op = &s.operator;
    if !op.on_duty(now) {
        return Ok(());
    }
    let due = |at: i64| at + op.latency_ms <= now;
    // Alerts: acknowledged once read (when the gateway has the lifecycle API).
    if st.op.alert_api != Some(false) {
        let ready: Vec<String> = st
            .op
            .alerts
            .iter()
            .filter(|(_, at)| due(*at))
            .map(|(id, _)| id.clone())
            .collect();
        st.op.alerts.retain(|(_, at)| !due(*at));
        for id in ready {
            let (status, _) = c
                .call(
                    Method::POST,
                    &format!("/api/alerts/{id}/ack"),
                    &keys.admin,
                    Some(&json!({"reason": "operator: read, evidence sent to review"})),
                )
                .await?;
            if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
                st.op.alert_api = Some(false);
                st.op.alerts.clear();
                break;
            }
            st.op.alert_api = Some(true);
        }
    } else {
        st.op.alerts.clear();
    }
    if update_api {
        let waiting = std::mem::take(&mut st.op.awaiting);
        for (pid, version, changes) in waiting {
            start_canary(staff, &pid, &version, changes, now, st).await?;
        }
    }
    let (ready, later): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut st.op.inbox)
        .into_iter()
        .partition(|p| due(p.at_ms));
    st.op.inbox = later;
    let (facts, policy): (Vec<Pending>, Vec<Pending>) = ready
        .into_iter()
        .partition(|p| s.changes[p.change].update.kind == "fact_update");
    // Fact updates touch no policy bundle: each goes at once.
    for p in facts {
        act_alone(staff, p, now, st).await?;
    }
    if policy.is_empty() {
        return Ok(());
    }
    if !update_api {
        for p in policy {
            act_alone(staff, p, now, st).await?;
        }
        return Ok(());
    }
    let in_flight = !st.rollouts.is_empty() || !st.op.awaiting.is_empty();
    if in_flight && st.op.batches != Some(true) {
        // One canary at a time: the next proposal builds on the promoted version.
        st.op.inbox.extend(policy);
        return Ok(());
    }
    if policy.len() > 1 && st.op.batches != Some(false) {
        let reviews: Vec<&str> = policy.iter().map(|p| p.review.as_str()).collect();
        let (status, p) = c
            .call(
                Method::POST,
                "/api/proposals",
                &keys.admin,
                Some(&json!({"from_reviews": reviews, "reason": "reviewers' suggestions"})),
            )
            .await?;
        if status.is_success() {
            st.op.batches = Some(true);
            let changes: Vec<usize> = policy.iter().map(|p| p.change).collect();
            for p in &policy {
                st.acted.insert(p.suggestion.to_string(), p.change);
            }
            st.proposals += 1;
            return approve_and_roll(staff, &p, changes, now, st).await;
        }
        if status == StatusCode::CONFLICT {
            // A live change overlaps: try again on a later pass.
            st.op.inbox.extend(policy);
            return Ok(());
        }
        if st.op.batches.is_none() {
            st.op.batches = Some(false);
        }
    }
    // Without batches: the first now, the rest after its canary concluded.
    let mut rest = policy.into_iter();
    if let Some(first) = rest.next() {
        st.op.inbox.extend(rest);
        act_alone(staff, first, now, st).await?;
    }
    Ok(())
}

/// One suggestion as its own proposal (or, without the update pipeline, a direct publish).
async fn act_alone(
    staff: &Staff<'_>,
    p: Pending,
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
    let canon = p.suggestion.to_string();
    if st.acted.contains_key(&canon) {
        return Ok(());
    }
    st.acted.insert(canon, p.change);
    st.proposals += 1;
    if !update_api {
        publish(c, keys, s, p.change, st, "reviewer suggestion").await?;
        st.mitigated.entry(p.change).or_insert(now + 1);
        st.canary.entry(p.change).or_insert(now + 1);
        return Ok(());
    }
    let (status, prop) = c
        .call(
            Method::POST,
            "/api/proposals",
            &keys.admin,
            Some(&json!({"from_review": p.review, "reason": "reviewer suggestion"})),
        )
        .await?;
    if status == StatusCode::CONFLICT {
        st.acted.retain(|_, ch| *ch != p.change);
        st.op.inbox.push(p);
        return Ok(());
    }
    if !status.is_success() {
        return Err(SimError::Gateway(format!(
            "POST /api/proposals → {status}: {}",
            prop["error"]["message"].as_str().unwrap_or("")
        )));
    }
    approve_and_roll(staff, &prop, vec![p.change], now, st).await
}

/// Approves a drafted proposal; a policy one is backtested and rolled out as a canary, a fact
/// one is in force once approved (or follows its own canary when the gateway gives one).
async fn approve_and_roll(
    staff: &Staff<'_>,
    p: &Value,
    changes: Vec<usize>,
    now: i64,
    st: &mut RunState,
) -> Result<(), SimError> {
    let Staff { c, keys, .. } = *staff;
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
        for &ch in &changes {
            st.canary.entry(ch).or_insert(now + 1);
        }
        let rollout = approved["rollout"]["id"]
            .as_str()
            .or(approved["rollout"].as_str())
            .or(approved["rollout_id"].as_str());
        let state = approved["rollout"]["state"].as_str().unwrap_or("canary");
        match rollout {
            Some(id) if state == "canary" => {
                st.rollouts.insert(id.to_string(), changes);
            }
            _ => {
                for &ch in &changes {
                    st.mitigated.entry(ch).or_insert(now + 1);
                }
            }
        }
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
    start_canary(staff, &pid, &version, changes, now, st).await
}

/// Starts a proposal's canary; a live canary on the same scope (409) leaves it waiting.
async fn start_canary(
    staff: &Staff<'_>,
    pid: &str,
    version: &str,
    changes: Vec<usize>,
    now: i64,
    st: &mut RunState,
) -> Result<(), SimError> {
    let Staff { c, keys, spec, .. } = *staff;
    let s: &Scenario = &spec.scenario;
    let (status, r) = c
        .call(
            Method::POST,
            "/api/rollouts",
            &keys.admin,
            Some(
                &json!({"version": version, "percent": s.gateway.canary_percent, "tenant": s.tenant,
                         "reason": format!("canary for proposal {pid}")}),
            ),
        )
        .await?;
    if status == StatusCode::CONFLICT {
        st.op
            .awaiting
            .push((pid.to_string(), version.to_string(), changes));
        return Ok(());
    }
    if !status.is_success() {
        return Err(SimError::Gateway(format!(
            "POST /api/rollouts → {status}: {}",
            r["error"]["message"].as_str().unwrap_or("")
        )));
    }
    for &ch in &changes {
        st.canary.entry(ch).or_insert(now + 1);
    }
    if matches!(r["state"].as_str(), Some("active") | Some("promoted")) {
        for &ch in &changes {
            st.mitigated.entry(ch).or_insert(now + 1);
        }
    } else if let Some(id) = r["id"].as_str() {
        st.rollouts.insert(id.to_string(), changes);
    }
    Ok(())
}

/// Canaries in flight, as the operator reads them every tick (they never promote one):
/// promoted (by the rollout worker) → mitigated; rolled back → the suggestions may come again.
/// A promotion whose `promoted_by` names a person counts as manual.
pub(super) async fn follow_rollouts(
    c: &Client,
    keys: &Keys,
    now: i64,
    st: &mut RunState,
) -> Result<(), SimError> {
    let mut ids: Vec<(String, Vec<usize>)> = st
        .rollouts
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    ids.sort();
    for (id, changes) in ids {
        let (status, r) = c
            .call(
                Method::GET,
                &format!("/api/rollouts/{id}"),
                &keys.admin,
                None,
            )
            .await?;
        if !status.is_success() {
            continue;
        }
        match r["state"].as_str().unwrap_or("") {
            "promoted" | "active" => {
                if r["promoted_by"]
                    .as_str()
                    .is_some_and(|by| !by.is_empty() && by != "worker")
                {
                    st.manual_promotions += 1;
                }
                for &ch in &changes {
                    st.mitigated.entry(ch).or_insert(now + 1);
                }
                st.rollouts.remove(&id);
            }
            "rolled_back" | "superseded" => {
                st.rollouts.remove(&id);
                st.acted.retain(|_, ch| !changes.contains(ch));
                for ch in &changes {
                    st.canary.remove(ch);
                }
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
            Some(
                &json!({"facts": update::tenant_facts(&ch.update.facts, &s.tenant),
                         "reason": format!("{why}: {}", ch.id)}),
            ),
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
