//! `POST /v1/chat/completions` and `GET /v1/models`: validate, forward, rewrite ids, record.
//!
//! Every call that reaches an upstream becomes one `InteractionRecorded` event. In `durable`
//! mode it is committed before the reply (or the stream's last chunk) is released. A client that
//! goes away drops the handler or the body stream; [`Pending`]'s drop guard then records the
//! interaction as `client_cancelled`, and dropping the upstream body cancels the upstream call.

mod enforce;
mod pending;
mod request;
mod stream;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keel_core::Outcome;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{Caller, APP};
use crate::error::GatewayError;
use crate::extract::{parse_json_value, read_body};
use crate::routes::RouteModule;
use crate::sse::ReplyAccumulator;
use keel_policy::{ActionKind, EvalInput, Phase};

pub use pending::Pending;
pub use request::{validate_chat_request, ChatRequest};

/// Header carrying Keel's interaction id.
pub const INTERACTION_HEADER: &str = "x-keel-interaction-id";
/// Header carrying the policy decision (input phase on streams).
pub const DECISION_HEADER: &str = "x-keel-decision";

fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
}

inventory::submit! {
    RouteModule { name: "chat", router, openapi_paths: || json!({}) }
}

async fn list_models(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, GatewayError> {
    caller.require(APP)?;
    let created = state.clock.now_ms() / 1000;
    let mut models = state.upstreams.named_models();
    for m in state.upstreams.discovered_models().await {
        if !models.iter().any(|(n, _)| n == &m.0) {
            models.push(m);
        }
    }
    let data: Vec<Value> = models
        .into_iter()
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": created, "owned_by": owner}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

async fn chat_completions(
    State(state): State<AppState>,
    caller: Caller,
    req: Request,
) -> Result<Response, GatewayError> {
    caller.require(APP)?;
    let bytes = read_body(req.into_body(), state.config.server.max_body_bytes).await?;
    let value = parse_json_value(&bytes)?;
    let chat = validate_chat_request(value, &caller.0.tenant)?;
    if !state.upstreams.serves(&chat.model) {
        return Err(GatewayError::ModelNotFound(chat.model));
    }
    let mut pending = Pending::start(&state, &caller, &chat);
    let id = pending.id().to_string();
    let split_key = chat.context.conversation_id.as_deref().unwrap_or(&id);
    let (policy, arm) =
        state
            .policies
            .for_request(&caller.0.tenant, chat.context.locale.as_deref(), split_key);
    pending.policy_version = Some(policy.version().to_string());
    pending.rollout = arm.map(|(rollout, arm)| serde_json::json!({"id": rollout, "arm": arm}));
    let input = EvalInput::from_openai_request(
        &chat.forward,
        enforce::eval_context(&chat.context, state.clock.now()),
    );
    let in_dec = policy.evaluate(Phase::Input, &input);
    let created = state.clock.now_ms() / 1000;
    if in_dec.is_blocking() {
        let message = in_dec
            .message
            .clone()
            .unwrap_or_else(|| "This request was blocked by policy.".into());
        let body = enforce::blocked_completion(&id, &chat.model, created, chat.n, &message);
        let mut acc = ReplyAccumulator::default();
        acc.observe_completion(&body);
        pending.acc = acc;
        pending.decision = Some(enforce::record(&in_dec, &[]));
        pending.finish(Outcome::Ok, 200, None).await?;
        let resp = if chat.stream {
            stream::blocked(
                &id,
                &chat.model,
                created,
                chat.n,
                &message,
                chat.include_usage,
                in_dec.summary(),
            )
        } else {
            Json(body).into_response()
        };
        return Ok(decision_header(with_headers(resp, &id), in_dec.summary()));
    }
    let mut forward = chat.forward.clone();
    enforce::apply_transforms(&mut forward, &in_dec);
    let route = (in_dec.action == ActionKind::Route)
        .then(|| in_dec.upstream.clone())
        .flatten();
    let sent = state
        .upstreams
        .send_routed(&chat.model, &forward, route.as_deref())
        .await;
    let upstream = match sent {
        Ok(u) => u,
        Err(failure) => {
            pending.attempts = failure.attempts;
            pending.upstream = failure.upstream;
            pending.decision = Some(enforce::record(&in_dec, &[]));
            let outcome = match failure.error {
                GatewayError::UpstreamTimeout(_) => Outcome::UpstreamTimeout,
                _ => Outcome::UpstreamError,
            };
            pending
                .finish(
                    outcome,
                    failure.error.http_status(),
                    Some(failure.error.to_string()),
                )
                .await?;
            return Ok(WithId(failure.error, id).into_response());
        }
    };
    pending.attempts = upstream.attempts;
    pending.upstream = Some(upstream.upstream.clone());
    let status = upstream.response.status();
    let header_action = in_dec.summary().to_string();
    if chat.stream && status.is_success() {
        let guard = stream::PolicyStream::new(policy, input, in_dec);
        return Ok(decision_header(
            stream::respond(pending, upstream, guard),
            &header_action,
        ));
    }
    let body = match tokio::time::timeout(upstream.timeout, upstream.response.bytes()).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let err = GatewayError::Upstream(format!("reading the upstream reply failed: {e}"));
            pending
                .finish(Outcome::UpstreamError, 502, Some(err.to_string()))
                .await?;
            return Ok(WithId(err, id).into_response());
        }
        Err(_) => {
            let err =
                GatewayError::UpstreamTimeout("the upstream reply did not complete in time".into());
            pending
                .finish(Outcome::UpstreamTimeout, 504, Some(err.to_string()))
                .await?;
            return Ok(WithId(err, id).into_response());
        }
    };
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    if !status.is_success() {
        // A 4xx from the upstream (bad parameters for that model, …): pass it through.
        let body = match parsed {
            Some(v) if v.get("error").is_some() => v,
            _ => GatewayError::Upstream(format!("upstream answered {}", status.as_u16())).body(),
        };
        let msg = body["error"]["message"].as_str().map(str::to_string);
        pending
            .finish(Outcome::UpstreamError, status.as_u16(), msg)
            .await?;
        let code = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        return Ok(with_headers((code, Json(body)).into_response(), &id));
    }
    let Some(mut completion) = parsed.filter(|v| v.get("choices").is_some()) else {
        let err = GatewayError::Upstream("the upstream reply is not a chat completion".into());
        pending
            .finish(Outcome::UpstreamError, 502, Some(err.to_string()))
            .await?;
        return Ok(WithId(err, id).into_response());
    };
    completion["id"] = Value::String(id.clone());
    let out_dec = policy.evaluate(Phase::Output, &input.with_openai_response(&completion));
    let mut original = ReplyAccumulator::default();
    original.observe_completion(&completion);
    if out_dec.is_blocking() {
        let message = out_dec
            .message
            .clone()
            .unwrap_or_else(|| "This reply was blocked by policy.".into());
        enforce::block_completion(&mut completion, &message);
    } else {
        enforce::apply_transforms(&mut completion, &out_dec);
    }
    let mut acc = ReplyAccumulator::default();
    acc.observe_completion(&completion);
    if acc.texts != original.texts {
        pending.upstream_text = Some(original.texts);
    }
    pending.acc = acc;
    let action = enforce::overall(&[&in_dec, &out_dec]).as_str();
    pending.decision = Some(enforce::record(&in_dec, std::slice::from_ref(&out_dec)));
    pending.finish(Outcome::Ok, 200, None).await?;
    Ok(decision_header(
        with_headers(Json(completion).into_response(), &id),
        action,
    ))
}

/// Adds Keel's headers to a reply.
pub(crate) fn with_headers(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(INTERACTION_HEADER, v);
    }
    resp.headers_mut()
        .insert(DECISION_HEADER, HeaderValue::from_static("allow"));
    resp.headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// Sets `x-keel-decision`.
pub(crate) fn decision_header(mut resp: Response, action: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(action) {
        resp.headers_mut().insert(DECISION_HEADER, v);
    }
    resp
}

/// An error reply that still names the interaction it was recorded as.
struct WithId(GatewayError, String);

impl IntoResponse for WithId {
    fn into_response(self) -> Response {
        with_headers(self.0.into_response(), &self.1)
    }
}
