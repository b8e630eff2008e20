//! `GET /api/alerts`: drift alerts raised by the monitors (reviewer, admin, auditor; own tenant).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use keel_core::clock::format_ms;
use keel_service::alerts;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::GatewayError;
use crate::extract::Query;
use crate::routes::RouteModule;

fn router() -> Router<AppState> {
    Router::new().route("/api/alerts", get(list))
}

fn openapi_paths() -> Value {
    json!({"/api/alerts": {"get": {
        "summary": "Drift alerts, newest first (roles: reviewer, admin, auditor; own tenant).",
        "parameters": [
            {"name": "metric", "in": "query", "schema": {"type": "string"}},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
            {"name": "cursor", "in": "query", "schema": {"type": "string"}}
        ],
        "responses": {"200": {"description": "{data: [alert], next_cursor}"}}
    }}})
}

inventory::submit! {
    RouteModule { name: "alerts", router, openapi_paths }
}

#[derive(Debug, Deserialize)]
struct Params {
    metric: Option<String>,
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
        before_seq,
        limit,
    )
    .await?;
    let next_cursor = if more {
        rows.last().map(|r| r.seq.to_string())
    } else {
        None
    };
    let data: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let mut v = r.alert;
            if v.is_object() {
                v["raised_at"] = Value::String(format_ms(r.at_ms));
                v["seq"] = json!(r.seq);
            }
            v
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data, "next_cursor": next_cursor})).into_response())
}
