//! `/api/alerts`: drift alerts raised by the monitors (list, get: reviewer, admin, auditor;
//! own tenant) and their lifecycle (ack, resolve: reviewer, admin; open → acknowledged →
//! resolved, or open → resolved; acting on a resolved alert is a 409).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keel_service::alerts::{self, alert_json, STATUSES};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::GatewayError;
use crate::extract::{JsonBody, Path, Query};
use crate::routes::RouteModule;

fn router() -> Router<AppState> {
    Router::new()
        .route("/api/alerts", get(list))
        .route("/api/alerts/{id}", get(one))
        .route("/api/alerts/{id}/ack", post(ack))
        .route("/api/alerts/{id}/resolve", post(resolve))
}

fn openapi_paths() -> Value {
    let id = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
    let errors = json!({
        "400": {"description": "empty reason, unknown proposal"},
        "403": {"description": "not a reviewer or admin key"},
        "404": {"description": "unknown alert (or another tenant's)"},
        "409": {"description": "the alert is not in a state that allows this (e.g. resolved)"}
    });
    let with_ok = |desc: &str| {
        let mut r = errors.clone();
        r["200"] = json!({"description": desc});
        r
    };
    json!({
        "/api/alerts": {"get": {
            "summary": "Drift alerts, newest first (roles: reviewer, admin, auditor; own tenant). Each has `status` (open, acknowledged, resolved).",
            "parameters": [
                {"name": "metric", "in": "query", "schema": {"type": "string"}},
                {"name": "status", "in": "query", "schema": {"type": "string", "enum": STATUSES}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"}}
            ],
            "responses": {"200": {"description": "{data: [alert], next_cursor}"}, "400": {"description": "unknown status"}}
        }},
        "/api/alerts/{id}": {"get": {
            "summary": "One alert with its lifecycle: status, acknowledged {by, at, reason}, resolved {by, at, reason, proposal} (reviewer, admin, auditor; own tenant).",
            "parameters": id,
            "responses": {"200": {"description": "alert"}, "404": {"description": "unknown alert (or another tenant's)"}}
        }},
        "/api/alerts/{id}/ack": {"post": {
            "summary": "Acknowledge an open alert: {reason} (reviewer, admin). Appends AlertAcknowledged.",
            "parameters": id,
            "responses": with_ok("alert")
        }},
        "/api/alerts/{id}/resolve": {"post": {
            "summary": "Resolve an open or acknowledged alert: {reason, proposal?: proposal id} (reviewer, admin). Appends AlertResolved.",
            "parameters": id,
            "responses": with_ok("alert")
        }},
    })
}

inventory::submit! {
    RouteModule { name: "alerts", router, openapi_paths }
}

#[derive(Debug, Deserialize)]
struct Params {
    metric: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<Params>,
) -> Result<Response, GatewayError> {
    let limit = crate::extract::page_limit(p.limit.as_deref())?;
    let before_seq = crate::extract::page_cursor(p.cursor.as_deref())?;
    let (rows, more) = alerts::list(
        state.store.as_ref(),
        &caller.actor(),
        p.metric,
        p.status.filter(|s| !s.is_empty()),
        before_seq,
        limit,
    )
    .await?;
    let next_cursor = if more {
        rows.last().map(|r| r.seq.to_string())
    } else {
        None
    };
    let data: Vec<Value> = rows.iter().map(alert_json).collect();
    Ok(Json(json!({"object": "list", "data": data, "next_cursor": next_cursor})).into_response())
}

async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    let a = alerts::get(state.store.as_ref(), &caller.actor(), &id).await?;
    Ok(Json(alert_json(&a)).into_response())
}

/// `reason` (a string, required) and `proposal` (a string or null) of a lifecycle body.
fn fields(body: &Value) -> Result<(String, Option<String>), GatewayError> {
    if !body.is_object() {
        return Err(GatewayError::bad_param("body", "expected a JSON object"));
    }
    let reason = match &body["reason"] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        _ => return Err(GatewayError::bad_param("reason", "must be a string")),
    };
    let proposal = match &body["proposal"] {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        _ => return Err(GatewayError::bad_param("proposal", "must be a string")),
    };
    Ok((reason, proposal))
}

async fn ack(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, GatewayError> {
    let (reason, _) = fields(&body)?;
    let (store, clock) = (state.store.as_ref(), state.clock.as_ref());
    let a = alerts::ack(store, clock, &caller.actor(), &id, &reason).await?;
    Ok(Json(alert_json(&a)).into_response())
}

async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, GatewayError> {
    let (reason, proposal) = fields(&body)?;
    let (store, clock) = (state.store.as_ref(), state.clock.as_ref());
    let a = alerts::resolve(
        store,
        clock,
        &caller.actor(),
        &id,
        &reason,
        proposal.as_deref(),
    )
    .await?;
    Ok(Json(alert_json(&a)).into_response())
}
