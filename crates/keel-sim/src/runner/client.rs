//! The HTTP side of a run: the API keys, the client with its error mapping, one chat request
//! (JSON or SSE) read back as the user saw it, and simulated time through the sim endpoints.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::SimError;

pub(super) struct Keys {
    pub(super) app: String,
    pub(super) admin: String,
    pub(super) reviewers: Vec<String>,
}

/// The HTTP side of a run.
#[derive(Clone)]
pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
}

impl Client {
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), SimError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, v))
    }

    /// A call that must succeed.
    pub(super) async fn ok(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<&Value>,
    ) -> Result<Value, SimError> {
        let (status, v) = self.call(method.clone(), path, key, body).await?;
        if !status.is_success() {
            return Err(SimError::Gateway(format!(
                "{method} {path} → {status}: {}",
                v["error"]["message"].as_str().unwrap_or("")
            )));
        }
        Ok(v)
    }
}

/// The reply as the client received it.
pub(super) struct Reply {
    pub(super) id: String,
    pub(super) text: String,
    pub(super) withheld: bool,
}

/// Sends one chat request (JSON or SSE) and reads the reply.
pub(super) async fn chat(
    c: &Client,
    key: &str,
    body: &Value,
    stream: bool,
) -> Result<Reply, SimError> {
    let resp = c
        .http
        .post(format!("{}/v1/chat/completions", c.base))
        .bearer_auth(key)
        .json(body)
        .send()
        .await?;
    let status = resp.status();
    let decision = resp
        .headers()
        .get("x-keel-decision")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let header_id = resp
        .headers()
        .get("x-keel-interaction-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = resp.bytes().await?;
    if !status.is_success() {
        return Err(SimError::Gateway(format!(
            "chat → {status}: {}",
            String::from_utf8_lossy(&bytes)
        )));
    }
    let input_withheld = matches!(decision.as_str(), "block" | "escalate");
    if !stream {
        let v: Value = serde_json::from_slice(&bytes)?;
        let choice = &v["choices"][0];
        return Ok(Reply {
            id: v["id"].as_str().unwrap_or(&header_id).to_string(),
            text: choice["message"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            withheld: input_withheld || choice["finish_reason"] == "content_filter",
        });
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut out = String::new();
    let mut withheld = input_withheld;
    let mut id = header_id;
    for ev in text.split("\n\n") {
        let Some(data) = ev.trim().strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if let Some(i) = v["id"].as_str() {
            id = i.to_string();
        }
        let ch = &v["choices"][0];
        if let Some(t) = ch["delta"]["content"].as_str() {
            out.push_str(t);
        }
        if ch["finish_reason"] == "content_filter" {
            withheld = true;
        }
    }
    Ok(Reply {
        id,
        text: out,
        withheld,
    })
}

/// Simulated time through the gateway's sim endpoints (`[sim] manual_clock = true`).
pub(super) struct TimeControl;

impl TimeControl {
    pub(super) async fn set(&self, c: &Client, admin: &str, now_ms: i64) -> Result<(), SimError> {
        c.ok(
            Method::POST,
            "/api/sim/clock",
            admin,
            Some(&json!({"now_ms": now_ms})),
        )
        .await?;
        Ok(())
    }

    /// Returns once monitors, the review queue and rollouts have processed everything.
    pub(super) async fn barrier(&self, c: &Client, admin: &str) -> Result<(), SimError> {
        c.ok(Method::GET, "/api/sim/barrier", admin, None).await?;
        Ok(())
    }
}
