//! `/api/reviews`: the review queue (list, get: reviewer, admin, auditor; claim, label:
//! reviewer; own tenant). Claims are leases on the injected clock; every action is an event
//! carrying the reviewer's name.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keel_core::clock::format_ms;
use keel_core::Role;
use keel_loop::review::{claim_event, label_event, ClaimState, ItemRef, Label, SOURCES};
use keel_store::{ReviewItemRow, ReviewQuery};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{Caller, READERS};
use crate::error::GatewayError;
use crate::extract::{JsonBody, Path, Query};
use crate::routes::RouteModule;

const REVIEWERS: &[Role] = &[Role::Reviewer];

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

fn claim_state(r: &ReviewItemRow) -> ClaimState<'_> {
    ClaimState {
        status: &r.status,
        claimed_by: r.claimed_by.as_deref(),
        lease_until_ms: r.lease_until_ms,
    }
}

pub(crate) fn item_ref(r: &ReviewItemRow) -> ItemRef<'_> {
    ItemRef {
        id: &r.id,
        interaction_id: &r.interaction_id,
        tenant: &r.tenant,
        source: &r.source,
    }
}

/// An item as the API shows it at `now`.
pub(crate) fn item_json(r: &ReviewItemRow, now_ms: i64) -> Value {
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
    let after_id = match p.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => {
            visible(&state, &caller, c).await.map_err(|_| {
                GatewayError::bad_param(
                    "cursor",
                    "Invalid 'cursor': use next_cursor from a previous page.",
                )
            })?;
            Some(c.to_string())
        }
    };
    let now = state.clock.now_ms();
    let rows = state
        .store
        .review_items(&ReviewQuery {
            tenant: caller.tenant_filter(),
            status: p.status,
            source: p.source,
            now_ms: now,
            after_id,
            limit,
            ..ReviewQuery::default()
        })
        .await?;
    let data: Vec<Value> = rows.iter().map(|r| item_json(r, now)).collect();
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    Ok(Json(json!({"object": "list", "data": data, "next_cursor": next})).into_response())
}

/// The item, if it exists and the caller may see it (else a 404).
async fn visible(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<ReviewItemRow, GatewayError> {
    state
        .store
        .review_item(id)
        .await?
        .filter(|r| caller.sees(&r.tenant))
        .ok_or_else(|| GatewayError::NotFound(format!("No review item `{id}`.")))
}

async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    caller.require(READERS)?;
    let item = visible(&state, &caller, &id).await?;
    let now = state.clock.now_ms();
    let mut body = item_json(&item, now);
    // The reports (comment, correct answer, CSAT), conversation, decision with spans and facts.
    let detail = crate::review_view::detail(state.store.as_ref(), &item, now).await?;
    for k in ["interaction", "reports", "label_events"] {
        body[k] = detail[k].clone();
    }
    Ok(Json(body).into_response())
}

fn reviewer_name(caller: &Caller) -> String {
    caller
        .0
        .name
        .clone()
        .unwrap_or_else(|| caller.0.key_id.clone())
}

async fn claim(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    caller.require(REVIEWERS)?;
    let item = visible(&state, &caller, &id).await?;
    let now = state.clock.now_ms();
    let actor = caller.0.actor();
    let conflict = |r: &ReviewItemRow| match claim_state(r).effective_status(now) {
        "done" => GatewayError::Conflict(format!("Review item `{}` is done.", r.id)),
        _ => GatewayError::Conflict(format!(
            "Review item `{}` is claimed by someone else, or you have labelled it already.",
            r.id
        )),
    };
    if !claim_state(&item).claimable_by(&actor, now) {
        return Err(conflict(&item));
    }
    let event = claim_event(
        item_ref(&item),
        &actor,
        &reviewer_name(&caller),
        now,
        state.config.review.lease_ms,
    );
    if let Err(e) = state.store.append(vec![event]).await {
        // The SQL guard refused the claim (a race, or a label by this reviewer): say so.
        if let Some(now_item) = state.store.review_item(&id).await? {
            if now_item.claimed_by.as_deref() != Some(actor.as_str())
                || claim_state(&now_item).effective_status(now) != "claimed"
            {
                return Err(conflict(&now_item));
            }
        }
        return Err(e.into());
    }
    let item = visible(&state, &caller, &id).await?;
    Ok(Json(item_json(&item, now)).into_response())
}

async fn label(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, GatewayError> {
    caller.require(REVIEWERS)?;
    let item = visible(&state, &caller, &id).await?;
    let label = Label::parse(&body).map_err(super::feedback::bad)?;
    let now = state.clock.now_ms();
    let actor = caller.0.actor();
    let no_claim = || {
        GatewayError::Conflict(format!(
            "Claim review item `{id}` first (or your claim expired and the item went back to the queue)."
        ))
    };
    if !claim_state(&item).held_by(&actor, now) {
        return Err(no_claim());
    }
    let ix = state.store.interaction(&item.interaction_id).await?;
    let record = ix.map(|r| r.record).unwrap_or(Value::Null);
    let event = label_event(
        item_ref(&item),
        &actor,
        &reviewer_name(&caller),
        &label,
        state.config.review.reviewers_per_item,
        &record,
        now,
    );
    let payload = event.payload.clone();
    if let Err(e) = state.store.append(vec![event]).await {
        if let Some(now_item) = state.store.review_item(&id).await? {
            if !claim_state(&now_item).held_by(&actor, now) {
                return Err(no_claim());
            }
        }
        return Err(e.into());
    }
    let item = visible(&state, &caller, &id).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"item": item_json(&item, now), "label": payload})),
    )
        .into_response())
}
