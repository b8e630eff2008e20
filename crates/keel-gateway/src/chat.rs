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
mod turn;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{Caller, APP};
use crate::error::GatewayError;
use crate::routes::RouteModule;

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

/// The steps of one completion: validate, decide input, route, relay, decide output, record.
/// Each step either hands the turn on or answers (a block, an upstream failure) itself.
async fn chat_completions(
    State(state): State<AppState>,
    caller: Caller,
    req: Request,
) -> Result<Response, GatewayError> {
    let chat = turn::validate(&state, &caller, req).await?;
    let turn = turn::Turn::begin(&state, &caller, chat);
    let (turn, in_dec) = match turn.decide_input().await? {
        Ok(next) => next,
        Err(blocked) => return Ok(blocked),
    };
    let (turn, upstream) = match turn.route(&in_dec).await? {
        Ok(next) => next,
        Err(failed) => return Ok(failed),
    };
    if turn.chat.stream && upstream.response.status().is_success() {
        return Ok(turn.relay_stream(upstream, in_dec));
    }
    let (turn, completion) = match turn.relay(upstream).await? {
        Ok(next) => next,
        Err(failed) => return Ok(failed),
    };
    turn.decide_output_and_record(&in_dec, completion).await
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
