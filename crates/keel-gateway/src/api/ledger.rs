//! `/api/ledger/*`: the verifier key, signed checkpoints, inclusion and consistency proofs, and
//! single leaves with everything needed to recompute them (auditor and admin roles).

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use keel_core::Role;
use keel_ledger::encode_hash;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::GatewayError;
use crate::extract::{Path, Query};
use crate::routes::RouteModule;

const AUDIT: &[Role] = &[Role::Auditor, Role::Admin];

fn router() -> Router<AppState> {
    Router::new()
        .route("/api/ledger/pubkey", get(pubkey))
        .route("/api/ledger/checkpoint", get(latest).post(issue_now))
        .route("/api/ledger/proof/inclusion", get(inclusion))
        .route("/api/ledger/proof/consistency", get(consistency))
        .route("/api/ledger/leaves/{index}", get(leaf))
}

fn openapi_paths() -> Value {
    let roles = "(roles: auditor, admin)";
    json!({
        "/api/ledger/pubkey": {"get": {"summary": format!("The checkpoint verifier key `<name>+<hex key id>+<base64(0x01 || ed25519 key)>`, text {roles}."),
            "responses": {"200": {"description": "text/plain"}}}},
        "/api/ledger/checkpoint": {
            "get": {"summary": format!("The latest signed checkpoint (C2SP signed note), covering every event committed before the request {roles}."),
                "responses": {"200": {"description": "text/plain signed note"}}},
            "post": {"summary": format!("Issue a checkpoint now {roles}."),
                "responses": {"200": {"description": "text/plain signed note"}}}},
        "/api/ledger/proof/inclusion": {"get": {"summary": format!("Inclusion proof {roles}."),
            "parameters": [{"name": "index", "in": "query", "required": true, "schema": {"type": "integer"}},
                           {"name": "size", "in": "query", "description": "tree size; default: the latest checkpoint's", "schema": {"type": "integer"}}],
            "responses": {"200": {"description": "{index, size, leaf_hash, proof: [base64]}"}, "400": {"description": "index/size out of range"}}}},
        "/api/ledger/proof/consistency": {"get": {"summary": format!("Consistency proof between two tree sizes {roles}."),
            "parameters": [{"name": "from", "in": "query", "required": true, "schema": {"type": "integer"}},
                           {"name": "to", "in": "query", "required": true, "schema": {"type": "integer"}}],
            "responses": {"200": {"description": "{from, to, proof: [base64]}"}}}},
        "/api/ledger/leaves/{index}": {"get": {"summary": format!("One leaf: the event header, salt, payload hash and payload text, to recompute the leaf hash independently {roles}; other tenants' leaves are 404."),
            "parameters": [{"name": "index", "in": "path", "required": true, "schema": {"type": "integer"}}],
            "responses": {"200": {"description": "the leaf"}, "404": {"description": "no such leaf in your tenant"}}}},
    })
}

inventory::submit! {
    RouteModule { name: "ledger", router, openapi_paths }
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn pubkey(State(state): State<AppState>, caller: Caller) -> Result<Response, GatewayError> {
    caller.require(AUDIT)?;
    Ok(text(format!("{}\n", state.signer.verifier_key()?)))
}

/// Issues an on-demand checkpoint, at most once a second (waiting out the rest of the second
/// rather than returning a stale one).
async fn on_demand(state: &AppState) -> Result<String, GatewayError> {
    let mut last = state.on_demand.lock().await;
    let wait = 1_000 - (state.clock.now_ms() - *last);
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait.min(1_000) as u64)).await;
    }
    let cp =
        keel_audit::issue_checkpoint(state.store.as_ref(), &state.signer, state.clock.as_ref())
            .await?;
    *last = state.clock.now_ms();
    Ok(cp.note)
}

async fn latest(State(state): State<AppState>, caller: Caller) -> Result<Response, GatewayError> {
    caller.require(AUDIT)?;
    let size = state.store.ledger_size().await?;
    match state.store.latest_checkpoint().await? {
        Some(cp) if cp.size >= size => Ok(text(cp.note)),
        _ => Ok(text(on_demand(&state).await?)),
    }
}

async fn issue_now(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, GatewayError> {
    caller.require(AUDIT)?;
    Ok(text(on_demand(&state).await?))
}

fn parse_u64(name: &str, v: Option<&str>) -> Result<Option<u64>, GatewayError> {
    v.map(|s| {
        s.parse::<u64>().map_err(|_| {
            GatewayError::bad_param(
                name,
                format!("Invalid '{name}': expected a non-negative integer."),
            )
        })
    })
    .transpose()
}

#[derive(Debug, Deserialize)]
struct InclusionParams {
    index: Option<String>,
    size: Option<String>,
}

async fn inclusion(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<InclusionParams>,
) -> Result<Response, GatewayError> {
    caller.require(AUDIT)?;
    let index = parse_u64("index", p.index.as_deref())?
        .ok_or_else(|| GatewayError::bad_param("index", "Missing required parameter: 'index'."))?;
    let size = match parse_u64("size", p.size.as_deref())? {
        Some(s) => s,
        None => match state.store.latest_checkpoint().await? {
            Some(cp) if cp.size > index => cp.size,
            _ => state.store.ledger_size().await?,
        },
    };
    if index >= size {
        return Err(GatewayError::bad_param(
            "index",
            format!("Invalid 'index': {index} is not below the tree size {size}."),
        ));
    }
    let proof = state.store.inclusion_proof(index, size).await?;
    let leaf = state
        .store
        .leaves(index, 1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| GatewayError::NotFound(format!("No leaf at index {index}.")))?;
    Ok(Json(json!({
        "index": index,
        "size": size,
        "leaf_hash": base64_of(&leaf.leaf_hash),
        "proof": proof.iter().map(encode_hash).collect::<Vec<_>>(),
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct ConsistencyParams {
    from: Option<String>,
    to: Option<String>,
}

async fn consistency(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ConsistencyParams>,
) -> Result<Response, GatewayError> {
    caller.require(AUDIT)?;
    let from = parse_u64("from", p.from.as_deref())?
        .ok_or_else(|| GatewayError::bad_param("from", "Missing required parameter: 'from'."))?;
    let to = parse_u64("to", p.to.as_deref())?
        .ok_or_else(|| GatewayError::bad_param("to", "Missing required parameter: 'to'."))?;
    if from == 0 || from > to {
        return Err(GatewayError::bad(format!(
            "Invalid range: need 0 < from <= to, got from={from}, to={to}."
        )));
    }
    let proof = state.store.consistency_proof(from, to).await?;
    Ok(Json(json!({
        "from": from,
        "to": to,
        "proof": proof.iter().map(encode_hash).collect::<Vec<_>>(),
    }))
    .into_response())
}

fn base64_of(bytes: &[u8]) -> String {
    match <[u8; 32]>::try_from(bytes) {
        Ok(h) => encode_hash(&h),
        Err(_) => String::new(),
    }
}

async fn leaf(
    State(state): State<AppState>,
    caller: Caller,
    Path(index): Path<u64>,
) -> Result<Response, GatewayError> {
    caller.require(AUDIT)?;
    let not_found = || GatewayError::NotFound(format!("No leaf at index {index}."));
    let leaf = state
        .store
        .leaves(index, 1)
        .await?
        .into_iter()
        .next()
        .filter(|l| l.ledger_index as u64 == index)
        .ok_or_else(not_found)?;
    let event = state
        .store
        .ledger_rows(leaf.seq - 1, 1)
        .await?
        .into_iter()
        .next()
        .filter(|e| e.seq == leaf.seq)
        .ok_or_else(not_found)?;
    if !caller.sees(&event.tenant) {
        return Err(not_found());
    }
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(Json(json!({
        "ledger_index": index,
        "seq": event.seq,
        "at_unix_ms": event.at_ms,
        "kind": event.kind,
        "actor": event.actor,
        "tenant": event.tenant,
        "salt": leaf.salt.as_ref().map(|s| b64.encode(s)),
        "payload_hash": base64_of(&leaf.payload_hash),
        "leaf_hash": base64_of(&leaf.leaf_hash),
        "payload": event.payload,
        "erased": event.payload.is_none(),
    }))
    .into_response())
}
