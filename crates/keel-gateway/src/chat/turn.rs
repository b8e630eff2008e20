//! One chat completion's steps, in order: validate the request, decide on the input, route it
//! to an upstream, relay the reply (or its stream), decide on the output and record the
//! interaction. `chat_completions` strings them together; each step that can end the turn
//! (a block, an upstream failure) answers itself, with the interaction recorded.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_core::Outcome;
use keel_policy::{ActionKind, Decision, EvalInput, Phase, Policy};
use serde_json::Value;

use super::{decision_header, enforce, stream, with_headers, ChatRequest, Pending, WithId};
use crate::app::AppState;
use crate::auth::{Caller, APP};
use crate::error::GatewayError;
use crate::extract::{parse_json_value, read_body};
use crate::sse::ReplyAccumulator;
use crate::upstream::UpstreamResponse;

/// An early answer (a block or an upstream failure), already recorded.
type Answered = Response;

/// A step's result: the turn goes on with `T`, or it was answered.
pub(super) type Step<T> = Result<Result<(Turn, T), Answered>, GatewayError>;

/// Validate: an app key, a body within the limit, a valid request for a served model.
pub(super) async fn validate(
    state: &AppState,
    caller: &Caller,
    req: Request,
) -> Result<ChatRequest, GatewayError> {
    caller.require(APP)?;
    let bytes = read_body(req.into_body(), state.config.server.max_body_bytes).await?;
    let value = parse_json_value(&bytes)?;
    let chat = super::validate_chat_request(value, &caller.0.tenant)?;
    if !state.upstreams.serves(&chat.model) {
        return Err(GatewayError::ModelNotFound(chat.model));
    }
    Ok(chat)
}

/// A completion in flight: the request, its interaction (recorded on every path), the policy
/// version it runs under, and what the policy sees.
pub(super) struct Turn {
    state: AppState,
    pub(super) chat: ChatRequest,
    pending: Pending,
    id: String,
    policy: Arc<Policy>,
    input: EvalInput,
}

impl Turn {
    /// Starts the interaction and takes the policy (and rollout arm) for the whole turn.
    pub(super) fn begin(state: &AppState, caller: &Caller, chat: ChatRequest) -> Self {
        let mut pending = Pending::start(state, caller, &chat);
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
        Self {
            state: state.clone(),
            chat,
            pending,
            id,
            policy,
            input,
        }
    }

    fn created(&self) -> i64 {
        self.state.clock.now_ms() / 1000
    }

    /// Decide input: evaluates the request; a block is answered (and recorded) here.
    pub(super) async fn decide_input(mut self) -> Step<Decision> {
        let in_dec = self.policy.evaluate(Phase::Input, &self.input);
        if !in_dec.is_blocking() {
            return Ok(Ok((self, in_dec)));
        }
        let (id, chat, created) = (&self.id, &self.chat, self.created());
        let message = in_dec
            .message
            .clone()
            .unwrap_or_else(|| "This request was blocked by policy.".into());
        let body = enforce::blocked_completion(id, &chat.model, created, chat.n, &message);
        let mut acc = ReplyAccumulator::default();
        acc.observe_completion(&body);
        self.pending.acc = acc;
        self.pending.decision = Some(enforce::record(&in_dec, &[]));
        self.pending.finish(Outcome::Ok, 200, None).await?;
        let resp = if chat.stream {
            let usage = chat.include_usage;
            let summary = in_dec.summary();
            stream::blocked(id, &chat.model, created, chat.n, &message, usage, summary)
        } else {
            Json(body).into_response()
        };
        Ok(Err(decision_header(
            with_headers(resp, id),
            in_dec.summary(),
        )))
    }

    /// Route: the transformed request to the upstream the policy routes to (else the model's),
    /// with retries and fallback; a failure is answered (and recorded) here.
    pub(super) async fn route(mut self, in_dec: &Decision) -> Step<UpstreamResponse> {
        let mut forward = self.chat.forward.clone();
        enforce::apply_transforms(&mut forward, in_dec);
        let route = (in_dec.action == ActionKind::Route)
            .then(|| in_dec.upstream.clone())
            .flatten();
        let sent = self
            .state
            .upstreams
            .send_routed(&self.chat.model, &forward, route.as_deref())
            .await;
        let upstream = match sent {
            Ok(u) => u,
            Err(failure) => {
                self.pending.attempts = failure.attempts;
                self.pending.upstream = failure.upstream;
                self.pending.decision = Some(enforce::record(in_dec, &[]));
                let outcome = match failure.error {
                    GatewayError::UpstreamTimeout(_) => Outcome::UpstreamTimeout,
                    _ => Outcome::UpstreamError,
                };
                let (status, text) = (failure.error.http_status(), failure.error.to_string());
                self.pending.finish(outcome, status, Some(text)).await?;
                return Ok(Err(WithId(failure.error, self.id.clone()).into_response()));
            }
        };
        self.pending.attempts = upstream.attempts;
        self.pending.upstream = Some(upstream.upstream.clone());
        Ok(Ok((self, upstream)))
    }

    /// Relay a stream: the policy guards it chunk by chunk; the stream records at its end.
    pub(super) fn relay_stream(self, upstream: UpstreamResponse, in_dec: Decision) -> Response {
        let header_action = in_dec.summary().to_string();
        let guard = stream::PolicyStream::new(self.policy, self.input, in_dec);
        decision_header(
            stream::respond(self.pending, upstream, guard),
            &header_action,
        )
    }

    /// Records an upstream failure and answers it.
    async fn failed(
        self,
        err: GatewayError,
        outcome: Outcome,
        status: u16,
    ) -> Result<Answered, GatewayError> {
        self.pending
            .finish(outcome, status, Some(err.to_string()))
            .await?;
        Ok(WithId(err, self.id.clone()).into_response())
    }

    /// Relay: reads the whole reply in time; an upstream 4xx passes through, anything that is
    /// not a chat completion is a 502 (each recorded here).
    pub(super) async fn relay(self, upstream: UpstreamResponse) -> Step<Value> {
        let status = upstream.response.status();
        let body = match tokio::time::timeout(upstream.timeout, upstream.response.bytes()).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                let err = GatewayError::Upstream(format!("reading the upstream reply failed: {e}"));
                return Ok(Err(self.failed(err, Outcome::UpstreamError, 502).await?));
            }
            Err(_) => {
                let err = GatewayError::UpstreamTimeout(
                    "the upstream reply did not complete in time".into(),
                );
                return Ok(Err(self.failed(err, Outcome::UpstreamTimeout, 504).await?));
            }
        };
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            // A 4xx from the upstream (bad parameters for that model, …): pass it through.
            let body = match parsed {
                Some(v) if v.get("error").is_some() => v,
                _ => {
                    GatewayError::Upstream(format!("upstream answered {}", status.as_u16())).body()
                }
            };
            let msg = body["error"]["message"].as_str().map(str::to_string);
            self.pending
                .finish(Outcome::UpstreamError, status.as_u16(), msg)
                .await?;
            let code = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            return Ok(Err(with_headers(
                (code, Json(body)).into_response(),
                &self.id,
            )));
        }
        match parsed.filter(|v| v.get("choices").is_some()) {
            Some(completion) => Ok(Ok((self, completion))),
            None => {
                let err =
                    GatewayError::Upstream("the upstream reply is not a chat completion".into());
                Ok(Err(self.failed(err, Outcome::UpstreamError, 502).await?))
            }
        }
    }

    /// Decide output, then record: the reply's decision applied (block or transforms), what
    /// the upstream said kept when the policy changed it, the interaction committed before the
    /// reply is released.
    pub(super) async fn decide_output_and_record(
        mut self,
        in_dec: &Decision,
        mut completion: Value,
    ) -> Result<Response, GatewayError> {
        completion["id"] = Value::String(self.id.clone());
        let input = self.input.with_openai_response(&completion);
        let out_dec = self.policy.evaluate(Phase::Output, &input);
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
            self.pending.upstream_text = Some(original.texts);
        }
        self.pending.acc = acc;
        let action = enforce::overall(&[in_dec, &out_dec]).as_str();
        self.pending.decision = Some(enforce::record(in_dec, std::slice::from_ref(&out_dec)));
        self.pending.finish(Outcome::Ok, 200, None).await?;
        Ok(decision_header(
            with_headers(Json(completion).into_response(), &self.id),
            action,
        ))
    }
}
