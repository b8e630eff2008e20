//! The frozen scenario model: an OpenAI-compatible upstream (JSON and SSE) on 127.0.0.1 that
//! answers from the scenario, fixed at its cut-off.
//!
//! Like a real model it sees only the prompt: it recognises the sub-topic and language from the
//! last user message (the scenario's prompt templates; unknown prompts go to the sub-topic whose
//! prompts share the most words) and gives that sub-topic's frozen answer. Deterministic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::scenario::{by_locale, Scenario};
use crate::SimError;

/// The answer the model gives when it recognises nothing.
pub const FALLBACK: &str = "I'm not sure I understand; could you rephrase?";

/// What the model knows: prompt → (topic, sub-topic, language key).
#[derive(Debug)]
pub struct ModelIndex {
    model: String,
    created: i64,
    exact: HashMap<String, (usize, usize, String)>,
    /// (words of a prompt, where it points)
    bags: Vec<(Vec<String>, (usize, usize, String))>,
    answers: Vec<Vec<std::collections::BTreeMap<String, String>>>,
    /// The scenario and its `[judge]`, when it has one.
    judge: Option<(Arc<Scenario>, crate::judge::JudgeSpec)>,
}

fn norm(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn words(s: &str) -> Vec<String> {
    // Japanese has no spaces: use character bigrams for non-ASCII text.
    let lower = s.to_lowercase();
    let mut out: Vec<String> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2 && w.is_ascii())
        .map(str::to_string)
        .collect();
    let chars: Vec<char> = lower.chars().filter(|c| !c.is_ascii()).collect();
    out.extend(chars.windows(2).map(|w| w.iter().collect::<String>()));
    out.sort();
    out.dedup();
    out
}

impl ModelIndex {
    pub fn new(s: &Scenario) -> Self {
        let mut exact = HashMap::new();
        let mut bags = Vec::new();
        for (ti, t) in s.topics.iter().enumerate() {
            for (si, st) in t.subtopics.iter().enumerate() {
                for (lang, prompts) in &st.prompts {
                    for p in prompts {
                        let at = (ti, si, lang.clone());
                        exact.entry(norm(p)).or_insert_with(|| at.clone());
                        bags.push((words(p), at));
                    }
                }
            }
        }
        ModelIndex {
            model: s.model.clone(),
            created: s.start_ms / 1000,
            exact,
            bags,
            answers: s
                .topics
                .iter()
                .map(|t| t.subtopics.iter().map(|st| st.answers.clone()).collect())
                .collect(),
            judge: s.judge.clone().map(|j| (Arc::new(s.clone()), j)),
        }
    }

    /// The frozen answer to a prompt.
    pub fn answer(&self, prompt: &str) -> &str {
        self.locate(prompt)
            .and_then(|(t, s, lang)| {
                self.answers
                    .get(*t)
                    .and_then(|v| v.get(*s))
                    .and_then(|a| by_locale(a, lang))
            })
            .map(String::as_str)
            .unwrap_or(FALLBACK)
    }

    /// (topic, sub-topic, language) a prompt is about.
    fn locate(&self, prompt: &str) -> Option<&(usize, usize, String)> {
        self.exact.get(&norm(prompt)).or_else(|| {
            let w = words(prompt);
            self.bags
                .iter()
                .map(|(b, at)| (b.iter().filter(|x| w.contains(x)).count(), at))
                .filter(|(n, _)| *n > 0)
                .max_by_key(|(n, _)| *n)
                .map(|(_, at)| at)
        })
    }

    /// The simulated judge's answer to a judge request, when the scenario has a judge and
    /// `body` is a judge request.
    async fn judge(&self, body: &Value) -> Option<Response> {
        let (s, spec) = self.judge.as_ref()?;
        let q = keel_loop::judge::question_of_request(body)?;
        let subtopic = self
            .locate(&q.question)
            .and_then(|(t, st, _)| s.topics.get(*t)?.subtopics.get(*st))
            .map(|st| st.id.as_str());
        let verdict = crate::judge::verdict(s, spec, &q, subtopic);
        if spec.latency_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(spec.latency_ms as u64)).await;
        }
        let content = verdict.to_string();
        let usage = json!({"prompt_tokens": tokens(&q.reply), "completion_tokens": tokens(&content),
                           "total_tokens": tokens(&q.reply) + tokens(&content)});
        Some(
            Json(json!({
                "id": format!("chatcmpl-judge{:x}", fnv(&q.interaction_id)), "object": "chat.completion",
                "created": self.created, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null},
                             "logprobs": null, "finish_reason": "stop"}],
                "usage": usage, "system_fingerprint": null,
            }))
            .into_response(),
        )
    }
}

/// The text of the last user message (string or content parts).
fn last_user_text(body: &Value) -> Option<String> {
    let msgs = body["messages"].as_array()?;
    let m = msgs.iter().rev().find(|m| m["role"] == "user")?;
    match &m["content"] {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

fn tokens(s: &str) -> u64 {
    (s.chars().count() as u64).div_ceil(4).max(1)
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": "invalid_request_error", "code": null}})),
    )
        .into_response()
}

async fn completions(State(ix): State<Arc<ModelIndex>>, body: bytes::Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "invalid JSON body");
    };
    if let Some(r) = ix.judge(&body).await {
        return r;
    }
    let Some(prompt) = last_user_text(&body) else {
        return error(StatusCode::BAD_REQUEST, "no user message");
    };
    let answer = ix.answer(&prompt);
    let model = body["model"].as_str().unwrap_or(&ix.model).to_string();
    let id = format!("chatcmpl-sim{:x}", fnv(&prompt));
    let usage = json!({"prompt_tokens": tokens(&prompt), "completion_tokens": tokens(answer),
                       "total_tokens": tokens(&prompt) + tokens(answer)});
    if body["stream"].as_bool() != Some(true) {
        return Json(json!({
            "id": id, "object": "chat.completion", "created": ix.created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer, "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": usage, "system_fingerprint": null,
        }))
        .into_response();
    }
    let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": ix.created,
                           "model": model, "system_fingerprint": null,
                           "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        format!("data: {c}\n\n")
    };
    let mut out = chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    );
    // A few pieces, split on character boundaries.
    let chars: Vec<char> = answer.chars().collect();
    for piece in chars.chunks(chars.len().div_ceil(4).max(1)) {
        out.push_str(&chunk(
            json!({"content": piece.iter().collect::<String>()}),
            Value::Null,
        ));
    }
    out.push_str(&chunk(json!({}), json!("stop")));
    if include_usage {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": ix.created,
                       "model": model, "system_fingerprint": null, "choices": [], "usage": usage});
        out.push_str(&format!("data: {c}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    ([(header::CONTENT_TYPE, "text/event-stream")], out).into_response()
}

async fn models(State(ix): State<Arc<ModelIndex>>) -> Response {
    Json(json!({"object": "list", "data": [
        {"id": ix.model, "object": "model", "created": ix.created, "owned_by": "keel-sim"}]}))
    .into_response()
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The model's router (`/v1/chat/completions`, `/v1/models`).
pub fn router(s: &Scenario) -> Router {
    let ix = Arc::new(ModelIndex::new(s));
    Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", get(models))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "unknown path") })
        .with_state(ix)
}

/// A running scenario model.
pub struct ModelServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ModelServer {
    /// Serves the scenario's model on `listen` (use port 0 for any free port).
    pub async fn start(s: &Scenario, listen: SocketAddr) -> Result<Self, SimError> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let app = router(s);
        let task = tokio::spawn(async move {
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "scenario model stopped");
            }
        });
        Ok(Self { addr, task })
    }

    /// `http://ADDR/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Runs until the process ends (`keel sim-model`).
    pub async fn wait(mut self) {
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = task.await;
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_model_answers_from_the_prompt() {
        let s = Scenario::load("leveraged-products").unwrap();
        let ix = ModelIndex::new(&s);
        let lev = &s.topics[0].subtopics[0];
        for (lang, prompts) in &lev.prompts {
            for p in prompts {
                assert_eq!(ix.answer(p), lev.answers[lang], "{p}");
                assert_eq!(
                    ix.answer(&format!("  {}  ", p.to_uppercase())),
                    lev.answers[lang]
                );
            }
        }
        // Paraphrases go to the closest sub-topic; nonsense gets the fallback.
        assert_eq!(
            ix.answer("password reset please"),
            s.topics[1].subtopics[0].answers["en"]
        );
        assert_eq!(ix.answer("zz"), FALLBACK);
    }

    #[tokio::test]
    async fn json_and_sse_shapes() {
        let s = Scenario::load("recall").unwrap();
        let server = ModelServer::start(&s, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let url = format!("{}/chat/completions", server.base_url());
        let c = reqwest::Client::new();
        let prompt = &s.topics[0].subtopics[0].prompts["en"][0];
        let want = &s.topics[0].subtopics[0].answers["en"];
        let body = json!({"model": "m", "messages": [{"role": "user", "content": prompt}]});
        let v: Value = c
            .post(&url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["content"], want.as_str());
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);
        // Content parts work too.
        let parts = json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
                           "stream": true, "stream_options": {"include_usage": true}});
        let r = c.post(&url).json(&parts).send().await.unwrap();
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let text = r.text().await.unwrap();
        let events: Vec<&str> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .collect();
        assert_eq!(events.last(), Some(&"[DONE]"));
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(&content, want);
        assert!(chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"));
        assert_eq!(
            chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
            "stop"
        );
        assert!(chunks.last().unwrap()["usage"]["total_tokens"]
            .as_u64()
            .is_some());
        let models: Value = c
            .get(format!("{}/models", server.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(models["data"][0]["id"], s.model.as_str());
        let bad = c.post(&url).body("{").send().await.unwrap();
        assert_eq!(bad.status(), 400);
    }
}
