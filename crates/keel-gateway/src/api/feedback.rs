//! `POST /v1/feedback` and `POST /v1/handoffs` (app role): what users felt and when a human
//! took over, as `FeedbackReceived` and `HandoffRecorded` events. An `Idempotency-Key` header
//! makes retries safe: the key is unique per tenant in the event's own transaction, so a retry
//! (even a concurrent one) answers with the first event and never appends a second; the same
//! key with a different body is a 409.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use keel_core::clock::format_ms;
use keel_core::{NewEvent, StoredEvent};
use keel_loop::review::{feedback_payload, kinds, Feedback, Handoff, Invalid};
use keel_store::{InteractionQuery, InteractionRow};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{Caller, APP};
use crate::error::GatewayError;
use crate::extract::{parse_json_value, read_body};
use crate::routes::RouteModule;

fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/feedback", post(feedback))
        .route("/v1/handoffs", post(handoff))
}

fn openapi_paths() -> Value {
    json!({})
}

inventory::submit! {
    RouteModule { name: "feedback", router, openapi_paths }
}

/// A validation failure as a 400 naming the field.
pub(crate) fn bad(e: Invalid) -> GatewayError {
    GatewayError::bad_param(e.field, e.to_string())
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, GatewayError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .map(|k| Some(k.to_string()))
        .ok_or_else(|| {
            GatewayError::bad_param(
                "Idempotency-Key",
                "Invalid Idempotency-Key header: 1 to 255 visible ASCII characters.",
            )
        })
}

/// The interaction feedback is about: by id, else the conversation's latest. Another tenant's
/// is a 404, like an unknown one.
async fn resolve(
    state: &AppState,
    caller: &Caller,
    interaction_id: Option<&str>,
    conversation_id: Option<&str>,
) -> Result<InteractionRow, GatewayError> {
    if let Some(id) = interaction_id {
        let row = state
            .store
            .interaction(id)
            .await?
            .filter(|r| caller.sees(&r.tenant))
            .filter(|r| {
                conversation_id.is_none()
                    || r.record["context"]["conversation_id"].as_str() == conversation_id
            });
        return row.ok_or_else(|| GatewayError::NotFound(format!("No interaction `{id}`.")));
    }
    let conv = conversation_id.unwrap_or_default();
    latest_in_conversation(state, caller, conv)
        .await?
        .ok_or_else(|| GatewayError::NotFound(format!("No conversation `{conv}`.")))
}

async fn latest_in_conversation(
    state: &AppState,
    caller: &Caller,
    conversation_id: &str,
) -> Result<Option<InteractionRow>, GatewayError> {
    let rows = state
        .store
        .list_interactions(&InteractionQuery {
            tenant: caller.tenant_filter(),
            conversation_id: Some(conversation_id.to_string()),
            limit: 1,
            ..InteractionQuery::default()
        })
        .await?;
    Ok(rows.into_iter().next())
}

/// Appends `event`; if an idempotency key collided meanwhile, answers with the first event.
async fn append_once(
    state: &AppState,
    event: NewEvent,
    scope: &str,
    key: Option<&str>,
) -> Result<(StoredEvent, bool), GatewayError> {
    let tenant = event.tenant.clone();
    match state.store.append(vec![event]).await {
        Ok(mut stored) => match stored.pop() {
            Some(ev) => Ok((ev, false)),
            None => Err(GatewayError::Internal("append returned nothing".into())),
        },
        Err(e) => {
            if let Some(k) = key {
                if let Some(ev) = state.store.idempotent_event(&tenant, scope, k).await? {
                    return Ok((ev, true));
                }
            }
            Err(e.into())
        }
    }
}

/// The first event for an idempotency key, if any; a 409 if it was sent with another body.
async fn replay(
    state: &AppState,
    tenant: &str,
    scope: &str,
    key: Option<&str>,
    body_sha256: &str,
) -> Result<Option<StoredEvent>, GatewayError> {
    let Some(k) = key else { return Ok(None) };
    let Some(ev) = state.store.idempotent_event(tenant, scope, k).await? else {
        return Ok(None);
    };
    if ev.payload["request_sha256"].as_str() != Some(body_sha256) {
        return Err(GatewayError::Conflict(format!(
            "Idempotency-Key `{k}` was already used with a different request body."
        )));
    }
    Ok(Some(ev))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn created(body: Value, replayed: bool) -> Response {
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

fn feedback_body(ev: &StoredEvent) -> Value {
    let p = &ev.payload;
    json!({
        "id": p["id"],
        "object": "feedback",
        "interaction_id": p["interaction_id"],
        "conversation_id": p["conversation_id"],
        "created_at": format_ms(ev.at_ms),
        "review_item": if p["report"].as_bool() == Some(true) {
            p["interaction_id"].as_str().map(|i| format!("rv_user_report_{i}"))
        } else {
            None
        },
    })
}

async fn feedback(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, GatewayError> {
    caller.require(APP)?;
    let key = idempotency_key(&headers)?;
    let bytes = read_body(req.into_body(), state.config.server.max_body_bytes).await?;
    let f = Feedback::parse(&parse_json_value(&bytes)?).map_err(bad)?;
    let ix = resolve(
        &state,
        &caller,
        f.interaction_id.as_deref(),
        f.conversation_id.as_deref(),
    )
    .await?;
    let body_sha = sha256_hex(&bytes);
    if let Some(ev) = replay(&state, &ix.tenant, "feedback", key.as_deref(), &body_sha).await? {
        return Ok(created(feedback_body(&ev), true));
    }
    let id = state.new_id("fb", &bytes);
    let conv = ix.record["context"]["conversation_id"].as_str();
    let mut payload = feedback_payload(&id, &f, &ix.id, conv, &ix.record, key.as_deref());
    payload["request_sha256"] = json!(body_sha);
    let event = NewEvent {
        kind: kinds::FEEDBACK.to_string(),
        actor: caller.0.actor(),
        tenant: ix.tenant.clone(),
        at_ms: state.clock.now_ms(),
        payload,
    };
    let (ev, replayed) = append_once(&state, event, "feedback", key.as_deref()).await?;
    if replayed && ev.payload["request_sha256"].as_str() != Some(body_sha.as_str()) {
        return Err(GatewayError::Conflict(
            "This Idempotency-Key was already used with a different request body.".into(),
        ));
    }
    Ok(created(feedback_body(&ev), replayed))
}

fn handoff_body(ev: &StoredEvent) -> Value {
    let p = &ev.payload;
    json!({
        "id": p["id"],
        "object": "handoff",
        "conversation_id": p["conversation_id"],
        "event": p["event"],
        "at": p["at_ms"].as_i64().map(format_ms),
        "interaction_id": p["interaction_id"],
    })
}

async fn handoff(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, GatewayError> {
    caller.require(APP)?;
    let key = idempotency_key(&headers)?;
    let bytes = read_body(req.into_body(), state.config.server.max_body_bytes).await?;
    let h = Handoff::parse(&parse_json_value(&bytes)?).map_err(bad)?;
    let ix = latest_in_conversation(&state, &caller, &h.conversation_id)
        .await?
        .ok_or_else(|| {
            GatewayError::NotFound(format!("No conversation `{}`.", h.conversation_id))
        })?;
    let body_sha = sha256_hex(&bytes);
    if let Some(ev) = replay(&state, &ix.tenant, "handoff", key.as_deref(), &body_sha).await? {
        return Ok(created(handoff_body(&ev), true));
    }
    let now = state.clock.now_ms();
    let event = NewEvent {
        kind: kinds::HANDOFF.to_string(),
        actor: caller.0.actor(),
        tenant: ix.tenant.clone(),
        at_ms: now,
        payload: json!({
            "id": state.new_id("ho", &bytes),
            "conversation_id": h.conversation_id,
            "event": h.event,
            "at_ms": h.at_ms.unwrap_or(now),
            "interaction_id": ix.id,
            "context": keel_loop::review::segment_context(&ix.record["context"]),
            "policy_version": ix.record["policy_version"],
            "answer_cluster": ix.record["answer_cluster"],
            "idempotency_key": key,
            "request_sha256": body_sha,
        }),
    };
    let (ev, replayed) = append_once(&state, event, "handoff", key.as_deref()).await?;
    if replayed && ev.payload["request_sha256"].as_str() != Some(body_sha.as_str()) {
        return Err(GatewayError::Conflict(
            "This Idempotency-Key was already used with a different request body.".into(),
        ));
    }
    Ok(created(handoff_body(&ev), replayed))
}
