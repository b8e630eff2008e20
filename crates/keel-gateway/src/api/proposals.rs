//! `/api/proposals`: candidate changes drafted from a review's suggestion, an alert or a direct
//! suggestion (reviewer, admin), listed (reviewer, admin, auditor; own tenant), approved or
//! rejected with a reason (admin; the two-person rule when configured). Every step is an
//! event with its actor.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keel_core::Role;
use keel_loop::review::Suggestion;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{Caller, READERS};
use crate::error::GatewayError;
use crate::extract::{page_cursor, page_limit, JsonBody, Path, Query};
use crate::routes::RouteModule;
use keel_service::proposals::{self, ProposalSource};
use keel_service::Actor;

const AUTHORS: &[Role] = &[Role::Reviewer, Role::Admin];
const ADMIN: &[Role] = &[Role::Admin];

fn router() -> Router<AppState> {
    Router::new()
        .route("/api/proposals", get(list).post(create))
        .route("/api/proposals/{id}", get(one))
        .route("/api/proposals/{id}/approve", post(approve))
        .route("/api/proposals/{id}/reject", post(reject))
}

fn openapi_paths() -> Value {
    let id = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
    json!({
        "/api/proposals": {
            "get": {"summary": "Proposals, newest first (reviewer, admin, auditor; own tenant).",
                    "parameters": [
                        {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["pending", "approved", "rejected"]}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "{data: [proposal], next_cursor?}"}}},
            "post": {"summary": "Draft a proposal: {from_review} | {from_reviews: [..]} (a batch: suggestions merged, provenance kept, one candidate bundle or one fact set) | {from_alert, suggestion} | {suggestion, tenant?}, reason? (reviewer, admin). The candidate bundle must load and pass its tests; a change touching the same term or fact key as a live canary in an overlapping scope is a 409.",
                     "responses": {"201": {"description": "proposal {id, status, kind, author, reason, created_ms, base_version?, candidate_version?, diff, source, fact?}"},
                                   "404": {"description": "unknown review or alert"},
                                   "409": {"description": "conflicts with a live change (both named)"},
                                   "422": {"description": "no usable suggestion, or the candidate does not load"}}}},
        "/api/proposals/{id}": {"get": {
            "summary": "One proposal (reviewer, admin, auditor; own tenant).",
            "parameters": id,
            "responses": {"200": {"description": "proposal"}, "404": {"description": "unknown id"}}}},
        "/api/proposals/{id}/approve": {"post": {
            "summary": "Approve: {reason} (admin). A policy proposal publishes its candidate (not activated); a fact proposal sets the fact. Two-person rule: 403 if the approver wrote it.",
            "parameters": id,
            "responses": {"200": {"description": "proposal with status approved and version"}, "403": {"description": "two-person rule"},
                          "404": {"description": "unknown id"}, "409": {"description": "already decided"}}}},
        "/api/proposals/{id}/reject": {"post": {
            "summary": "Reject: {reason} (admin).",
            "parameters": id,
            "responses": {"200": {"description": "proposal with status rejected"}, "404": {"description": "unknown id"}, "409": {"description": "already decided"}}}},
    })
}

inventory::submit! {
    RouteModule { name: "proposals", router, openapi_paths }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    from_review: Option<String>,
    /// A batch: several review items' suggestions merged into one proposal.
    from_reviews: Option<Vec<String>>,
    from_alert: Option<String>,
    suggestion: Option<Suggestion>,
    reason: Option<String>,
    tenant: Option<String>,
}

fn visible(caller: &Caller, p: &Value) -> bool {
    let t = p["tenant"].as_str().unwrap_or_default();
    caller.tenant_filter().is_none() || caller.sees(t)
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Response, GatewayError> {
    caller.require(AUTHORS)?;
    let source = match (body.from_review, body.from_alert, body.suggestion) {
        (None, None, None) if body.from_reviews.is_some() => {
            ProposalSource::Reviews(body.from_reviews.unwrap_or_default())
        }
        _ if body.from_reviews.is_some() => {
            return Err(GatewayError::bad_param(
                "from_reviews",
                "a batch takes only `from_reviews` (and `reason`, `tenant`)",
            ))
        }
        (Some(r), None, None) => ProposalSource::Review(r),
        (None, Some(a), Some(s)) => ProposalSource::Alert(a, s),
        (None, Some(_), None) => {
            return Err(GatewayError::bad_param(
                "suggestion",
                "a proposal from an alert needs the `suggestion` to draft",
            ))
        }
        (None, None, Some(s)) => ProposalSource::Direct(s),
        _ => {
            return Err(GatewayError::bad(
                "give one of {from_review}, {from_alert, suggestion} or {suggestion, reason}",
            ))
        }
    };
    let id = state.new_id("pr", format!("{source:?}|{:?}", body.reason).as_bytes());
    let doc = proposals::create_proposal(
        state.store.as_ref(),
        state.clock.as_ref(),
        source,
        body.reason.as_deref(),
        body.tenant.as_deref(),
        &caller.actor(),
        id,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(doc)).into_response())
}

#[derive(Debug, Deserialize)]
struct ListParams {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> Result<Response, GatewayError> {
    caller.require(READERS)?;
    crate::extract::one_of(
        "status",
        p.status.as_deref(),
        &["pending", "approved", "rejected"],
    )?;
    let limit = page_limit(p.limit.as_deref())? as usize;
    let before = page_cursor(p.cursor.as_deref())?;
    let mut all: Vec<Value> = proposals::load_proposals(state.store.as_ref())
        .await?
        .into_iter()
        .filter(|d| visible(&caller, d))
        .filter(|d| p.status.as_deref().is_none_or(|s| d["status"] == s))
        .filter(|d| before.is_none_or(|b| d["seq"].as_i64().unwrap_or(0) < b))
        .collect();
    all.reverse();
    let next = (all.len() > limit)
        .then(|| all[limit - 1]["seq"].as_i64())
        .flatten();
    all.truncate(limit);
    let mut body = json!({"object": "list", "data": all});
    if let Some(n) = next {
        body["next_cursor"] = json!(n.to_string());
    }
    Ok(Json(body).into_response())
}

async fn visible_one(state: &AppState, caller: &Caller, id: &str) -> Result<Value, GatewayError> {
    let doc = proposals::proposal_by_id(state.store.as_ref(), id, false).await?;
    if !visible(caller, &doc) {
        return Err(GatewayError::NotFound(format!("No proposal `{id}`.")));
    }
    Ok(doc)
}

async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    caller.require(READERS)?;
    Ok(Json(visible_one(&state, &caller, &id).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    reason: String,
}

async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DecideBody>,
) -> Result<Response, GatewayError> {
    caller.require(ADMIN)?;
    visible_one(&state, &caller, &id).await?;
    let doc = proposals::approve_proposal(
        state.store.as_ref(),
        state.clock.as_ref(),
        &state.config.update,
        &state.config.rollouts,
        &id,
        &body.reason,
        &Actor::from_key(&caller.0),
    )
    .await?;
    if doc["kind"] == "fact" {
        state.policies.refresh_facts(state.store.as_ref()).await?;
        state.policies.refresh(state.store.as_ref()).await?;
    }
    Ok(Json(doc).into_response())
}

async fn reject(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DecideBody>,
) -> Result<Response, GatewayError> {
    caller.require(ADMIN)?;
    visible_one(&state, &caller, &id).await?;
    let doc = proposals::reject_proposal(
        state.store.as_ref(),
        state.clock.as_ref(),
        &id,
        &body.reason,
        &Actor::from_key(&caller.0),
    )
    .await?;
    Ok(Json(doc).into_response())
}
