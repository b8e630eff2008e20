//! Alerts raised by the drift monitors: a page of them, newest first, as the actor may see; one
//! alert; and its lifecycle (open → acknowledged → resolved, or open → resolved) as
//! `AlertAcknowledged` / `AlertResolved` events with who and why (and the linked proposal).

use keel_core::{Clock, EventKind, NewEvent};
use keel_store::{AlertQuery, AlertRow, Store};
use serde_json::json;

use crate::actor::{Actor, READERS};
use crate::error::ServiceError;

/// The statuses an alert can have, in lifecycle order.
pub const STATUSES: [&str; 3] = ["open", "acknowledged", "resolved"];

/// Roles that acknowledge and resolve alerts.
pub const RESPONDERS: &[keel_core::Role] = &[keel_core::Role::Reviewer, keel_core::Role::Admin];

/// Up to `limit` alerts (of `metric`, with `status`, or all) raised before `before_seq`, newest
/// first, and whether there are more. An unknown status is a 400.
pub async fn list(
    store: &dyn Store,
    actor: &Actor,
    metric: Option<String>,
    status: Option<String>,
    before_seq: Option<i64>,
    limit: u32,
) -> Result<(Vec<AlertRow>, bool), ServiceError> {
    actor.require(READERS)?;
    if let Some(s) = &status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(ServiceError::bad_param(
                "status",
                format!("`{s}` is not one of {}", STATUSES.join(", ")),
            ));
        }
    }
    let mut rows = store
        .list_alerts(&AlertQuery {
            tenant: actor.tenant_filter().map(str::to_string),
            metric,
            status,
            before_seq,
            limit: limit + 1,
        })
        .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok((rows, more))
}

/// One alert the actor may see (404 for an unknown id and for another tenant's).
pub async fn get(store: &dyn Store, actor: &Actor, id: &str) -> Result<AlertRow, ServiceError> {
    actor.require(READERS)?;
    match store.alert(id).await? {
        Some(a) if actor.sees(&a.tenant) => Ok(a),
        _ => Err(ServiceError::NotFound(format!("No alert `{id}`."))),
    }
}

fn reason_of(reason: &str) -> Result<String, ServiceError> {
    let r = reason.trim();
    if r.is_empty() {
        return Err(ServiceError::bad_param(
            "reason",
            "say why (a non-empty reason is required)",
        ));
    }
    if r.chars().count() > 2_000 {
        return Err(ServiceError::bad_param("reason", "at most 2000 characters"));
    }
    Ok(r.to_string())
}

fn conflict(a: &AlertRow, verb: &str) -> ServiceError {
    ServiceError::Conflict(format!(
        "Alert `{}` is {}; it cannot be {verb}.",
        a.id, a.status
    ))
}

async fn transition(
    store: &dyn Store,
    actor: &Actor,
    alert: &AlertRow,
    event: NewEvent,
    verb: &str,
) -> Result<AlertRow, ServiceError> {
    if let Err(e) = store.append(vec![event]).await {
        // The store's guard refused the transition (another actor moved the alert first).
        if let Some(now) = store.alert(&alert.id).await? {
            if now.status != alert.status {
                return Err(conflict(&now, verb));
            }
        }
        return Err(e.into());
    }
    get(store, actor, &alert.id).await
}

/// Acknowledges an open alert (reviewer or admin; 409 unless it is open).
pub async fn ack(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    id: &str,
    reason: &str,
) -> Result<AlertRow, ServiceError> {
    actor.require(RESPONDERS)?;
    let alert = get(store, actor, id).await?;
    let reason = reason_of(reason)?;
    if alert.status != "open" {
        return Err(conflict(&alert, "acknowledged"));
    }
    let event = NewEvent {
        kind: EventKind::ALERT_ACKNOWLEDGED.to_string(),
        actor: actor.who.clone(),
        tenant: alert.tenant.clone(),
        at_ms: clock.now_ms(),
        payload: json!({"id": alert.id, "reason": reason}),
    };
    transition(store, actor, &alert, event, "acknowledged").await
}

/// Resolves an open or acknowledged alert (reviewer or admin; 409 when already resolved),
/// optionally naming the proposal that addresses it (which must exist; else a 400).
pub async fn resolve(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    id: &str,
    reason: &str,
    proposal: Option<&str>,
) -> Result<AlertRow, ServiceError> {
    actor.require(RESPONDERS)?;
    let alert = get(store, actor, id).await?;
    let reason = reason_of(reason)?;
    let proposal = proposal.map(str::trim).filter(|p| !p.is_empty());
    if let Some(p) = proposal {
        if crate::proposals::proposal_by_id(store, p, false)
            .await
            .is_err()
        {
            return Err(ServiceError::bad_param(
                "proposal",
                format!("there is no proposal `{p}`"),
            ));
        }
    }
    if alert.status == "resolved" {
        return Err(conflict(&alert, "resolved again"));
    }
    let event = NewEvent {
        kind: EventKind::ALERT_RESOLVED.to_string(),
        actor: actor.who.clone(),
        tenant: alert.tenant.clone(),
        at_ms: clock.now_ms(),
        payload: json!({"id": alert.id, "reason": reason, "proposal": proposal}),
    };
    transition(store, actor, &alert, event, "resolved").await
}

/// An alert as the API and the CLI show it: the `AlertRaised` payload plus `raised_at`, `seq`,
/// `status` and, once they happened, `acknowledged` / `resolved` (`{by, at, reason,
/// proposal?}`).
pub fn alert_json(r: &AlertRow) -> serde_json::Value {
    use keel_core::clock::format_ms;
    let mut v = match &r.alert {
        serde_json::Value::Object(_) => r.alert.clone(),
        _ => json!({"id": r.id}),
    };
    let action = |a: &keel_store::AlertAction| {
        let mut o = json!({"by": a.by, "at": format_ms(a.at_ms), "reason": a.reason});
        if let Some(p) = &a.proposal {
            o["proposal"] = json!(p);
        }
        o
    };
    v["tenant"] = json!(r.tenant);
    v["raised_at"] = json!(format_ms(r.at_ms));
    v["seq"] = json!(r.seq);
    v["status"] = json!(r.status);
    v["acknowledged"] = r.acknowledged.as_ref().map(action).into();
    v["resolved"] = r.resolved.as_ref().map(action).into();
    v
}
