//! Streaming replies: relay the upstream's SSE with Keel's id, holding back the last chunk until
//! the interaction is committed.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use futures::stream::{BoxStream, StreamExt};
use keel_core::Outcome;
use serde_json::Value;

use super::{with_headers, Pending};
use crate::error::GatewayError;
use crate::sse::{SseEvent, SseParser};
use crate::upstream::UpstreamResponse;

struct Relay {
    upstream: BoxStream<'static, reqwest::Result<Bytes>>,
    timeout: std::time::Duration,
    parser: SseParser,
    pending: Option<Pending>,
    id: String,
    held: Option<Bytes>,
    out: VecDeque<Bytes>,
    done: bool,
}

fn sse_data(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

impl Relay {
    /// Ends the stream with a recorded failure and an SSE error event.
    async fn fail(&mut self, outcome: Outcome, err: GatewayError) {
        if let Some(p) = self.pending.take() {
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
        let result = match self.pending.take() {
            Some(p) => p.finish(Outcome::Ok, 200, None).await,
            None => Ok(()),
        };
        match result {
            Ok(()) => {
                if let Some(h) = self.held.take() {
                    self.out.push_back(h);
                }
                self.out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
            }
            Err(e) => self.out.push_back(sse_data(&e.body())),
        }
        self.done = true;
    }

    fn relay_chunk(&mut self, mut chunk: Value) {
        if chunk.get("id").is_some() {
            chunk["id"] = Value::String(self.id.clone());
        }
        if let Some(p) = self.pending.as_mut() {
            p.acc.observe_chunk(&chunk);
        }
        if let Some(h) = self.held.replace(sse_data(&chunk)) {
            self.out.push_back(h);
        }
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
                    Ok(v) => self.relay_chunk(v),
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

/// Builds the streaming response.
pub(super) fn respond(pending: Pending, upstream: UpstreamResponse) -> Response {
    let id = pending.id().to_string();
    let relay = Relay {
        upstream: upstream.response.bytes_stream().boxed(),
        timeout: upstream.timeout,
        parser: SseParser::default(),
        pending: Some(pending),
        id: id.clone(),
        held: None,
        out: VecDeque::new(),
        done: false,
    };
    let stream = futures::stream::unfold(relay, |mut r| async move {
        loop {
            if let Some(b) = r.out.pop_front() {
                return Some((Ok::<Bytes, Infallible>(b), r));
            }
            if r.done {
                return None;
            }
            r.step().await;
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    with_headers(resp, &id)
}
