//! `/api/facts`: facts with effective dates. Admins set versions (`FactSet` events, the same as
//! `keel facts set|import`); reviewers, admins and auditors list the versions in force at a
//! time and a key's history. A tenant key sees facts for every tenant and its own.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use keel_core::clock::format_ms;
use keel_core::{Role, StoredEvent};
use keel_loop::facts::{fact_from_value, fact_set_events, fact_tenant};
use keel_policy::Fact;
use keel_store::{FactRow, Store};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{Caller, READERS};
use crate::error::GatewayError;
use crate::extract::{JsonBody, Path, Query};
use crate::routes::RouteModule;

const ADMIN: &[Role] = &[Role::Admin];

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

/// Every `FactSet` event (or one key's) with its parsed fact; erased payloads are skipped.
pub async fn load(
    store: &dyn Store,
    key: Option<&str>,
) -> Result<Vec<(FactRow, Fact)>, GatewayError> {
    Ok(store
        .fact_events(key)
        .await?
        .into_iter()
        .filter_map(|r| fact_from_value(&r.fact).map(|f| (r, f)))
        .collect())
}

/// Validates `facts` against the registry and appends their `FactSet` events.
pub async fn set_facts(
    store: &dyn Store,
    facts: &[Fact],
    reason: &str,
    actor: &str,
    at_ms: i64,
) -> Result<Vec<StoredEvent>, GatewayError> {
    let existing: Vec<Fact> = load(store, None)
        .await?
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    let events = fact_set_events(facts, &existing, reason, actor, at_ms)
        .map_err(|e| GatewayError::bad_param("fact", e.to_string()))?;
    Ok(store.append(events).await?)
}

#[derive(Debug, Deserialize)]
struct ListParams {
    at: Option<String>,
    key: Option<String>,
}

fn visible(caller: &Caller, tenant: &str) -> bool {
    tenant == keel_loop::update::GLOBAL_SCOPE || caller.sees(tenant)
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> Result<Response, GatewayError> {
    caller.require(READERS)?;
    let at = match p.at.as_deref() {
        Some(s) => {
            keel_policy::facts::parse_instant(s).map_err(|e| GatewayError::bad_param("at", e))?
        }
        None => state.clock.now(),
    };
    let facts: Vec<Fact> = load(state.store.as_ref(), p.key.as_deref())
        .await?
        .into_iter()
        .filter(|(r, _)| visible(&caller, &r.tenant))
        .map(|(_, f)| f)
        .collect();
    let data: Vec<Value> = keel_policy::in_force_at(&facts, at)
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
    caller.require(READERS)?;
    let data: Vec<Value> = load(state.store.as_ref(), Some(&key))
        .await?
        .into_iter()
        .filter(|(r, _)| visible(&caller, &r.tenant))
        .map(|(r, f)| {
            json!({"seq": r.seq, "set_at": format_ms(r.at_ms), "actor": r.actor,
                   "reason": r.reason, "fact": f})
        })
        .collect();
    if data.is_empty() {
        return Err(GatewayError::NotFound(format!("No fact `{key}`.")));
    }
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
    caller.require(ADMIN)?;
    let mut facts = body.facts;
    facts.extend(body.fact);
    if facts.is_empty() {
        return Err(GatewayError::bad_param("fact", "give `fact` or `facts`"));
    }
    for f in &facts {
        let t = fact_tenant(f);
        if caller.tenant_filter().is_some() && !caller.sees(t) {
            return Err(GatewayError::Forbidden(format!(
                "fact `{}`: a key of tenant {} can only set facts scoped to `tenants: [{}]`",
                f.key, caller.0.tenant, caller.0.tenant
            )));
        }
    }
    let stored = set_facts(
        state.store.as_ref(),
        &facts,
        &body.reason,
        &caller.0.actor(),
        state.clock.now_ms(),
    )
    .await?;
    state.policies.refresh_facts(state.store.as_ref()).await?;
    let seqs: Vec<i64> = stored.iter().map(|e| e.seq).collect();
    Ok((axum::http::StatusCode::CREATED, Json(json!({"seqs": seqs}))).into_response())
}
