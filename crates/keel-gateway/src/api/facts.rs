//! `/api/facts`: facts with effective dates. Admins set versions (`FactSet` events, the same as
//! `keel facts set|import`); reviewers, admins and auditors list the versions in force at a
//! time and a key's history. A tenant key sees facts for every tenant and its own.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use keel_core::clock::format_ms;
use keel_policy::Fact;
use keel_service::facts;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::GatewayError;
use crate::extract::{JsonBody, Path, Query};
use crate::routes::RouteModule;

fn router() -> Router<AppState> {
    Router::new()
        .route("/api/facts", get(list).post(set))
        .route("/api/facts/{key}/history", get(history))
}

fn openapi_paths() -> Value {
    json!({
        "/api/facts": {
            "get": {"summary": "Fact versions in force at `at` (RFC 3339 or YYYY-MM-DD; default now), one per key and scope (reviewer, admin, auditor; own tenant).",
                    "parameters": [{"name": "at", "in": "query", "schema": {"type": "string"}},
                                   {"name": "key", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "{data: [{fact, effective_end}]}"}}},
            "post": {"summary": "Set fact versions: {fact | facts: [...], reason} (admin). Wrong types, unknown units and overlapping validity for the same key and scope are 400.",
                     "responses": {"201": {"description": "{seqs}"}, "400": {"description": "invalid fact"}}}},
        "/api/facts/{key}/history": {"get": {
            "summary": "Every version of a fact, oldest first, with actor and reason (reviewer, admin, auditor; own tenant).",
            "parameters": [{"name": "key", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "{data: [...]}"}, "404": {"description": "unknown key"}}}},
    })
}

inventory::submit! {
    RouteModule { name: "facts", router, openapi_paths }
}

#[derive(Debug, Deserialize)]
struct ListParams {
    at: Option<String>,
    key: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> Result<Response, GatewayError> {
    let at = match p.at.as_deref() {
        Some(s) => {
            keel_policy::facts::parse_instant(s).map_err(|e| GatewayError::bad_param("at", e))?
        }
        None => state.clock.now(),
    };
    let facts =
        facts::in_force(state.store.as_ref(), &caller.actor(), p.key.as_deref(), at).await?;
    let data: Vec<Value> = facts
        .into_iter()
        .map(|(f, end)| json!({"fact": f, "effective_end": end.map(|e| e.to_rfc3339())}))
        .collect();
    Ok(Json(json!({"object": "list", "at": at.to_rfc3339(), "data": data})).into_response())
}

async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Response, GatewayError> {
    let data: Vec<Value> = facts::history(state.store.as_ref(), &caller.actor(), &key)
        .await?
        .into_iter()
        .map(|(r, f)| {
            json!({"seq": r.seq, "set_at": format_ms(r.at_ms), "actor": r.actor,
                   "reason": r.reason, "fact": f})
        })
        .collect();
    Ok(Json(json!({"object": "list", "key": key, "data": data})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    fact: Option<Fact>,
    #[serde(default)]
    facts: Vec<Fact>,
    reason: String,
}

async fn set(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<SetBody>,
) -> Result<Response, GatewayError> {
    let mut all = body.facts;
    all.extend(body.fact);
    if all.is_empty() {
        return Err(GatewayError::bad_param("fact", "give `fact` or `facts`"));
    }
    let now = state.clock.now_ms();
    let stored = facts::set(
        state.store.as_ref(),
        &caller.actor(),
        &all,
        &body.reason,
        now,
    )
    .await?;
    state.policies.refresh_facts(state.store.as_ref()).await?;
    let seqs: Vec<i64> = stored.iter().map(|e| e.seq).collect();
    Ok((axum::http::StatusCode::CREATED, Json(json!({"seqs": seqs}))).into_response())
}
