//! Streaming replies: relay the upstream's SSE with Keel's id, run the output policy over the
//! text as it streams (holding back just enough that a redaction never leaks), and hold back
//! the last chunk until the interaction is committed.
//!
//! Headers leave before the body, so `x-keel-decision` on a stream is the **input** decision
//! (also sent as `x-keel-input-decision`, the honest name). The final decision — input and
//! output together, e.g. `correct` when a stale fact was corrected mid-stream — is sent at the
//! end: as a `keel` field on the last chunk before `[DONE]` (`{"decision", "input_decision",
//! "output_decision"}`) and as the HTTP trailer `x-keel-final-decision` (announced by
//! `Trailer:`; HTTP/1.1 clients receive it when they send `TE: trailers`).

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use futures::stream::{BoxStream, StreamExt};
use http_body::Frame;
use http_body_util::StreamBody;
use keel_core::Outcome;
use keel_policy::{Decision, EvalInput, Policy, StreamGuard};
use serde_json::{json, Value};

use super::{enforce, with_headers, Pending};
use crate::error::GatewayError;
use crate::sse::{ReplyAccumulator, SseEvent, SseParser};
use crate::upstream::UpstreamResponse;

/// The output policy over one stream: a guard per choice.
pub(crate) struct PolicyStream {
    policy: Arc<Policy>,
    input: EvalInput,
    in_dec: Decision,
    guards: BTreeMap<u64, StreamGuard>,
    /// What the upstream sent, before the policy.
    original: ReplyAccumulator,
}

impl PolicyStream {
    pub(crate) fn new(policy: Arc<Policy>, input: EvalInput, in_dec: Decision) -> Self {
        Self {
            policy,
            input,
            in_dec,
            guards: BTreeMap::new(),
            original: ReplyAccumulator::default(),
        }
    }

    fn guard(&mut self, idx: u64) -> &mut StreamGuard {
        let (policy, input) = (&self.policy, &self.input);
        self.guards
            .entry(idx)
            .or_insert_with(|| StreamGuard::new(policy.clone(), input.clone(), idx as usize))
    }

    /// Rewrites one upstream chunk's deltas through the guards. Returns the chunk and, if a
    /// rule blocked, the message that ends the stream.
    fn transform(&mut self, mut chunk: Value) -> (Value, Option<String>) {
        self.original.observe_chunk(&chunk);
        let mut blocked = None;
        if let Some(choices) = chunk["choices"].as_array_mut() {
            for c in choices.iter_mut() {
                let idx = c["index"].as_u64().unwrap_or(0);
                let content = c["delta"]["content"].as_str().map(str::to_string);
                let finishing = c["finish_reason"].is_string();
                let mut emit = String::new();
                let mut block = None;
                if let Some(text) = content.as_deref().filter(|t| !t.is_empty()) {
                    let out = self.guard(idx).push(text);
                    emit.push_str(&out.emit);
                    block = out.blocked;
                }
                if finishing && block.is_none() {
                    let out = self.guard(idx).finish();
                    emit.push_str(&out.emit);
                    block = out.blocked;
                }
                if let Some(b) = block {
                    c["delta"] = json!({"content": format!("{emit}{}", b.message)});
                    c["finish_reason"] = Value::String("content_filter".into());
                    blocked = Some(b.message);
                } else if content.is_some() || !emit.is_empty() {
                    c["delta"]["content"] = Value::String(emit);
                }
            }
        }
        (chunk, blocked)
    }

    /// Flushes guards whose choice never finished (the upstream sent no finish_reason).
    fn flush(&mut self, id: &str, model: &str, created: i64) -> Vec<Value> {
        let mut out = Vec::new();
        for (idx, g) in self.guards.iter_mut() {
            let o = g.finish();
            if let Some(b) = o.blocked {
                out.push(enforce::chunk(
                    id,
                    model,
                    created,
                    *idx,
                    &format!("{}{}", o.emit, b.message),
                    Some("content_filter"),
                ));
            } else if !o.emit.is_empty() {
                out.push(enforce::chunk(id, model, created, *idx, &o.emit, None));
            }
        }
        out
    }

    fn record(&self) -> Value {
        let outputs: Vec<Decision> = self.guards.values().map(StreamGuard::decision).collect();
        enforce::record(&self.in_dec, &outputs)
    }

    /// The `keel` field of the last chunk: final, input and output decisions.
    fn final_field(&self) -> Value {
        let outputs: Vec<Decision> = self.guards.values().map(StreamGuard::decision).collect();
        let refs: Vec<&Decision> = outputs.iter().collect();
        let mut all = vec![&self.in_dec];
        all.extend(refs.iter().copied());
        json!({
            "decision": enforce::overall(&all).as_str(),
            "input_decision": self.in_dec.summary(),
            "output_decision": enforce::overall(&refs).as_str(),
        })
    }
}

/// `x-keel-input-decision`: the input phase's decision, known before the body.
pub const INPUT_DECISION_HEADER: &str = "x-keel-input-decision";
/// `x-keel-final-decision`: the HTTP trailer with the final decision of a stream.
pub const FINAL_DECISION_TRAILER: &str = "x-keel-final-decision";

/// Adds `keel` (the final decision) to an SSE `data:` chunk.
fn with_final(chunk: &Bytes, keel: &Value) -> Bytes {
    let text = String::from_utf8_lossy(chunk);
    let json = text
        .trim_end()
        .strip_prefix("data: ")
        .and_then(|t| serde_json::from_str::<Value>(t).ok());
    match json {
        Some(mut v) if v.is_object() => {
            v["keel"] = keel.clone();
            sse_data(&v)
        }
        _ => chunk.clone(),
    }
}

struct Relay {
    upstream: BoxStream<'static, reqwest::Result<Bytes>>,
    timeout: std::time::Duration,
    parser: SseParser,
    pending: Option<Pending>,
    policy: PolicyStream,
    id: String,
    model: String,
    created: i64,
    held: Option<Bytes>,
    out: VecDeque<Bytes>,
    done: bool,
    /// The final decision once the stream ended (for the trailer).
    final_decision: Option<String>,
}

fn sse_data(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

impl Relay {
    fn stamp(&mut self, p: &mut Pending) {
        let record = self.policy.record();
        self.final_decision = record["action"].as_str().map(str::to_string);
        p.decision = Some(record);
        let original = std::mem::take(&mut self.policy.original);
        if original.texts != p.acc.texts {
            p.upstream_text = Some(original.texts);
        }
    }

    /// Ends the stream with a recorded failure and an SSE error event.
    async fn fail(&mut self, outcome: Outcome, err: GatewayError) {
        if let Some(mut p) = self.pending.take() {
            self.stamp(&mut p);
            if let Err(e) = p.finish(outcome, 200, Some(err.to_string())).await {
                tracing::error!(error = %e, "recording a failed stream");
            }
        }
        if let Some(h) = self.held.take() {
            self.out.push_back(h);
        }
        self.out.push_back(sse_data(&err.body()));
        self.done = true;
    }

    /// Ends the stream successfully: commit first, then release the held chunk and `[DONE]`.
    async fn complete(&mut self) {
        let flushed = self.policy.flush(&self.id, &self.model, self.created);
        let held = self.held.take();
        for c in flushed {
            self.observe_and_hold(c);
        }
        if let Some(h) = held {
            if let Some(prev) = self.held.replace(h) {
                self.out.push_back(prev);
            }
        }
        let result = match self.pending.take() {
            Some(mut p) => {
                self.stamp(&mut p);
                p.finish(Outcome::Ok, 200, None).await
            }
            None => Ok(()),
        };
        match result {
            Ok(()) => {
                if let Some(h) = self.held.take() {
                    self.out
                        .push_back(with_final(&h, &self.policy.final_field()));
                }
                self.out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
            }
            Err(e) => self.out.push_back(sse_data(&e.body())),
        }
        self.done = true;
    }

    fn observe_and_hold(&mut self, chunk: Value) {
        if let Some(p) = self.pending.as_mut() {
            p.acc.observe_chunk(&chunk);
        }
        if let Some(h) = self.held.replace(sse_data(&chunk)) {
            self.out.push_back(h);
        }
    }

    /// Relays one upstream chunk; true when a policy block ended the stream.
    fn relay_chunk(&mut self, mut chunk: Value) -> bool {
        if chunk.get("id").is_some() {
            chunk["id"] = Value::String(self.id.clone());
        }
        let (chunk, blocked) = self.policy.transform(chunk);
        self.observe_and_hold(chunk);
        blocked.is_some()
    }

    async fn step(&mut self) {
        let next = tokio::time::timeout(self.timeout, self.upstream.next()).await;
        let bytes = match next {
            Err(_) => {
                return self
                    .fail(
                        Outcome::UpstreamTimeout,
                        GatewayError::UpstreamTimeout("the upstream stream stalled".into()),
                    )
                    .await
            }
            Ok(None) => {
                return self
                    .fail(
                        Outcome::UpstreamError,
                        GatewayError::Upstream("the upstream stream ended without [DONE]".into()),
                    )
                    .await
            }
            Ok(Some(Err(e))) => {
                return self
                    .fail(
                        Outcome::UpstreamError,
                        GatewayError::Upstream(format!("the upstream stream broke: {e}")),
                    )
                    .await
            }
            Ok(Some(Ok(b))) => b,
        };
        let events = match self.parser.push(&bytes) {
            Ok(ev) => ev,
            Err(_) => {
                return self
                    .fail(
                        Outcome::UpstreamError,
                        GatewayError::Upstream("the upstream stream is not valid UTF-8".into()),
                    )
                    .await
            }
        };
        for ev in events {
            match ev {
                SseEvent::Done => return self.complete().await,
                SseEvent::Data(text) => match serde_json::from_str::<Value>(&text) {
                    Ok(v) if v.get("error").is_some() => {
                        let msg = v["error"]["message"]
                            .as_str()
                            .unwrap_or("unknown")
                            .to_string();
                        return self
                            .fail(
                                Outcome::UpstreamError,
                                GatewayError::Upstream(format!("the upstream reported: {msg}")),
                            )
                            .await;
                    }
                    Ok(v) => {
                        if self.relay_chunk(v) {
                            // A block ends the stream cleanly; the upstream is dropped.
                            return self.complete().await;
                        }
                    }
                    Err(_) => {
                        return self
                            .fail(
                                Outcome::UpstreamError,
                                GatewayError::Upstream(
                                    "the upstream sent malformed stream data".into(),
                                ),
                            )
                            .await
                    }
                },
            }
        }
    }
}

fn sse_response(body: Body, id: &str, input_decision: &str) -> Response {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(input_decision) {
        h.insert(INPUT_DECISION_HEADER, v);
    }
    h.insert(
        header::TRAILER,
        HeaderValue::from_static(FINAL_DECISION_TRAILER),
    );
    with_headers(resp, id)
}

/// The trailers frame carrying the final decision.
fn trailers(decision: &str) -> Frame<Bytes> {
    let mut map = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(decision) {
        map.insert(HeaderName::from_static(FINAL_DECISION_TRAILER), v);
    }
    Frame::trailers(map)
}

/// Builds the streaming response.
pub(super) fn respond(
    pending: Pending,
    upstream: UpstreamResponse,
    policy: PolicyStream,
) -> Response {
    let id = pending.id().to_string();
    let relay = Relay {
        upstream: upstream.response.bytes_stream().boxed(),
        timeout: upstream.timeout,
        parser: SseParser::default(),
        model: policy.input.model.clone().unwrap_or_default(),
        pending: Some(pending),
        policy,
        id: id.clone(),
        created: 0,
        held: None,
        out: VecDeque::new(),
        done: false,
        final_decision: None,
    };
    let input_decision = relay.policy.in_dec.summary().to_string();
    let stream = futures::stream::unfold(Some(relay), |state| async move {
        let mut r = state?;
        loop {
            if let Some(b) = r.out.pop_front() {
                return Some((Ok::<_, Infallible>(Frame::data(b)), Some(r)));
            }
            if r.done {
                let decision = r
                    .final_decision
                    .take()
                    .unwrap_or_else(|| input_decision_of(&r));
                return Some((Ok(trailers(&decision)), None));
            }
            r.step().await;
        }
    });
    sse_response(Body::new(StreamBody::new(stream)), &id, &input_decision)
}

fn input_decision_of(r: &Relay) -> String {
    r.policy.in_dec.summary().to_string()
}

/// A blocked request answered as a stream: the rule's message, `content_filter`, `[DONE]`.
pub(super) fn blocked(
    id: &str,
    model: &str,
    created: i64,
    n: u64,
    message: &str,
    usage: bool,
    decision: &str,
) -> Response {
    let mut chunks = Vec::new();
    for i in 0..n.max(1) {
        let role = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]});
        chunks.push(role);
        chunks.push(enforce::chunk(
            id,
            model,
            created,
            i,
            message,
            Some("content_filter"),
        ));
    }
    if usage {
        let u = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}});
        chunks.push(u);
    }
    if let Some(last) = chunks.last_mut() {
        last["keel"] =
            json!({"decision": decision, "input_decision": decision, "output_decision": "allow"});
    }
    let mut body = String::new();
    for c in &chunks {
        body.push_str(&format!("data: {c}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from(body))),
        Ok(trailers(decision)),
    ];
    sse_response(
        Body::new(StreamBody::new(futures::stream::iter(frames))),
        id,
        decision,
    )
}
