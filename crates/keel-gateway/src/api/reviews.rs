//! `/api/reviews`: the review queue (list, get: reviewer, admin, auditor; claim, label:
//! reviewer; own tenant). Claims are leases on the injected clock; every action is an event
//! carrying the reviewer's name.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keel_core::clock::format_ms;
use keel_loop::review::{Label, SOURCES};
use keel_service::reviews::{self, claim_state, ListRequest};
use keel_store::ReviewItemRow;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{Caller, READERS};
use crate::error::GatewayError;
use crate::extract::{JsonBody, Path, Query};
use crate::routes::RouteModule;

fn router() -> Router<AppState> {
    Router::new()
        .route("/api/reviews", get(list))
        .route("/api/reviews/{id}", get(one))
        .route("/api/reviews/{id}/claim", post(claim))
        .route("/api/reviews/{id}/label", post(label))
}

fn openapi_paths() -> Value {
    let id = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
    json!({
        "/api/reviews": {"get": {
            "summary": "The review queue by priority (severity, then age) (reviewer, admin, auditor; own tenant).",
            "parameters": [
                {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["open", "claimed", "done"]}},
                {"name": "source", "in": "query", "schema": {"type": "string", "enum": SOURCES}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"}, "description": "next_cursor of the previous page (queue order: severity, then age)"}
            ],
            "responses": {"200": {"description": "{data: [review item]}"}}}},
        "/api/reviews/{id}": {"get": {
            "summary": "One item with everything a reviewer needs (reviewer, admin, auditor; own tenant): interaction {request_messages, response_text, upstream_text, decision, decision_detail {input, output: rules, spans, signals, facts}, facts, context, policy_version}, reports [{comment, correct_answer, csat, thumbs, wrong_answer, category, received_at}], label_events.",
            "parameters": id,
            "responses": {"200": {"description": "review item"}, "404": {"description": "unknown id"}}}},
        "/api/reviews/{id}/claim": {"post": {
            "summary": "Claim an item: a lease that expires (reviewer). 409 if someone else holds it.",
            "parameters": id,
            "responses": {"200": {"description": "review item"}, "404": {"description": "unknown id"}, "409": {"description": "held by another reviewer, done, or already labelled by you"}}}},
        "/api/reviews/{id}/label": {"post": {
            "summary": "Label a claimed item: {verdict: ok|violation|wrong_answer|outdated, category?, corrected_response?, notes?, suggestion?: {kind: rewrite|lexicon_term|fact_update|escalate, from, to, fact, value, effective_from, scope: {tenants, locales, jurisdictions, topic}}} (reviewer).",
            "parameters": id,
            "responses": {"201": {"description": "{item, label}"}, "400": {"description": "invalid label"}, "404": {"description": "unknown id"}, "409": {"description": "no live claim"}}}},
    })
}

inventory::submit! {
    RouteModule { name: "reviews", router, openapi_paths }
}

/// An item as the API shows it at `now`.
fn item_json(r: &ReviewItemRow, now_ms: i64) -> Value {
    let status = claim_state(r).effective_status(now_ms);
    let claimed = status == "claimed";
    json!({
        "id": r.id,
        "object": "review_item",
        "tenant": r.tenant,
        "interaction_id": r.interaction_id,
        "source": r.source,
        "severity": r.severity,
        "reason": r.reason,
        "created_at": format_ms(r.created_ms),
        "age_ms": (now_ms - r.created_ms).max(0),
        "status": status,
        "claimed_by": if claimed { r.claimed_by.clone() } else { None },
        "lease_expires_at": if claimed { r.lease_until_ms.map(format_ms) } else { None },
        "labels": r.labels,
        "required_labels": r.required,
        "done_at": r.done_ms.map(format_ms),
        "context": r.context,
        "policy_version": r.policy_version,
    })
}

#[derive(Debug, Deserialize)]
struct Params {
    status: Option<String>,
    source: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<Params>,
) -> Result<Response, GatewayError> {
    caller.require(READERS)?;
    crate::extract::one_of("status", p.status.as_deref(), &["open", "claimed", "done"])?;
    crate::extract::one_of("source", p.source.as_deref(), &SOURCES)?;
    let limit = crate::extract::page_limit(p.limit.as_deref())?;
    let req = ListRequest {
        tenant: None,
        status: p.status,
        source: p.source,
        after_id: p.cursor.filter(|c| !c.is_empty()),
        limit,
    };
    let now = state.clock.now_ms();
    let rows = reviews::list(state.store.as_ref(), &caller.actor(), req, now).await?;
    let data: Vec<Value> = rows.iter().map(|r| item_json(r, now)).collect();
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    Ok(Json(json!({"object": "list", "data": data, "next_cursor": next})).into_response())
}

async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    let now = state.clock.now_ms();
    // The reports (comment, correct answer, CSAT), conversation, decision with spans and facts.
    let d = reviews::detail(state.store.as_ref(), &caller.actor(), &id, now).await?;
    let mut body = item_json(&d.item, now);
    for k in ["interaction", "reports", "label_events"] {
        body[k] = d.view[k].clone();
    }
    Ok(Json(body).into_response())
}

async fn claim(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    let lease_ms = state.config.review.lease_ms;
    let (store, clock) = (state.store.as_ref(), state.clock.as_ref());
    let item = reviews::claim(store, clock, &caller.actor(), &id, lease_ms).await?;
    Ok(Json(item_json(&item, clock.now_ms())).into_response())
}

async fn label(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, GatewayError> {
    let actor = caller.actor();
    actor.require(keel_service::actor::REVIEWERS)?;
    let label = Label::parse(&body).map_err(super::feedback::bad)?;
    let quorum = state.config.review.reviewers_per_item;
    let (store, clock) = (state.store.as_ref(), state.clock.as_ref());
    let (item, payload) = reviews::label(store, clock, &actor, &id, &label, quorum).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"item": item_json(&item, clock.now_ms()), "label": payload})),
    )
        .into_response())
}
