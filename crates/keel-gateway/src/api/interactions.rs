//! `GET /api/interactions/{id}` and `GET /api/interactions`: the recorded interactions.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use keel_core::clock::format_ms;
use keel_store::{InteractionQuery, InteractionRow};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{Caller, READERS};
use crate::error::GatewayError;
use crate::extract::{Path, Query};
use crate::routes::RouteModule;

fn router() -> Router<AppState> {
    Router::new()
        .route("/api/interactions", get(list))
        .route("/api/interactions/{id}", get(one))
}

fn openapi_paths() -> Value {
    json!({
        "/api/interactions": {"get": {
            "summary": "List recorded interactions, newest first (roles: reviewer, admin, auditor).",
            "parameters": [
                {"name": "conversation_id", "in": "query", "schema": {"type": "string"}},
                {"name": "since", "in": "query", "description": "RFC 3339 time or Unix milliseconds", "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
                {"name": "cursor", "in": "query", "description": "next_cursor of the previous page", "schema": {"type": "string"}}
            ],
            "responses": {"200": {"description": "A page: {data: [...], next_cursor}"}, "400": {"description": "Bad parameter"}, "401": {"description": "No or unknown key"}, "403": {"description": "Wrong role"}}
        }},
        "/api/interactions/{id}": {"get": {
            "summary": "One interaction (roles: reviewer, admin, auditor; own tenant).",
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The interaction"}, "404": {"description": "No such interaction in your tenant"}}
        }}
    })
}

inventory::submit! {
    RouteModule { name: "interactions", router, openapi_paths }
}

fn render(row: InteractionRow) -> Value {
    let mut out = json!({
        "id": row.id,
        "seq": row.seq,
        "ledger_index": row.ledger_index,
        "tenant": row.tenant,
        "recorded_at": format_ms(row.at_ms),
    });
    match row.record {
        Value::Object(rec) => {
            for (k, v) in rec {
                if k != "id" {
                    out[k.as_str()] = v;
                }
            }
            for k in ["started_ms", "finished_ms"] {
                if let Some(ms) = out[k].as_i64() {
                    out[k.replace("_ms", "_at").as_str()] = Value::String(format_ms(ms));
                }
            }
        }
        _ => out["erased"] = Value::Bool(true),
    }
    out
}

async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    caller.require(READERS)?;
    let not_found = || GatewayError::NotFound(format!("No interaction with id `{id}`."));
    let row = state.store.interaction(&id).await?.ok_or_else(not_found)?;
    if !caller.sees(&row.tenant) {
        return Err(not_found());
    }
    Ok(Json(render(row)).into_response())
}

#[derive(Debug, Deserialize)]
struct ListParams {
    conversation_id: Option<String>,
    since: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Parses `since`: RFC 3339 or Unix milliseconds.
fn parse_since(s: &str) -> Result<i64, GatewayError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            GatewayError::bad_param(
                "since",
                format!("Invalid 'since': `{s}` is neither RFC 3339 nor Unix milliseconds."),
            )
        })
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> Result<Response, GatewayError> {
    caller.require(READERS)?;
    let limit = crate::extract::page_limit(p.limit.as_deref())?;
    let before_seq = crate::extract::page_cursor(p.cursor.as_deref())?;
    let since_ms = p.since.as_deref().map(parse_since).transpose()?;
    let q = InteractionQuery {
        tenant: caller.tenant_filter(),
        conversation_id: p.conversation_id,
        since_ms,
        before_seq,
        limit: limit + 1,
    };
    let mut rows = state.store.list_interactions(&q).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| r.seq.to_string())
    } else {
        None
    };
    let data: Vec<Value> = rows.into_iter().map(render).collect();
    Ok(Json(json!({"object": "list", "data": data, "next_cursor": next_cursor})).into_response())
}
