//! Shared helpers: a mock + gateway pair, an HTTP client, SSE parsing, the `keel` binary.

use std::time::Duration;

pub use keel_testkit::gateway::{GatewayOptions, TestGateway};
pub use keel_testkit::mock::{MockHandle, MockUpstream, Reply, Script};
use serde_json::{json, Value};

/// A mock upstream with `script` and a gateway in front of it, plus an app and a reviewer key.
pub struct Pair {
    pub mock: MockHandle,
    pub gw: TestGateway,
    pub app: String,
    pub reviewer: String,
}

impl Pair {
    pub async fn start(script: Script) -> Self {
        Self::start_with(script, |_| {}).await
    }

    pub async fn start_with(script: Script, tweak: impl FnOnce(&mut GatewayOptions)) -> Self {
        let mock = MockUpstream::start(script).await.expect("mock");
        let mut opts = GatewayOptions::with_upstream(&mock.base_url());
        tweak(&mut opts);
        let gw = TestGateway::start(opts).await;
        let app = gw.key("acme", "app", Some("acme-app")).await;
        let reviewer = gw.key("acme", "reviewer", Some("rita")).await;
        Self {
            mock,
            gw,
            app,
            reviewer,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.url())
    }

    /// POST /v1/chat/completions with the app key.
    pub async fn chat(&self, body: Value) -> reqwest::Response {
        client()
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(&self.app)
            .json(&body)
            .send()
            .await
            .expect("send")
    }

    /// GET an /api path with the reviewer key, returning status and JSON.
    pub async fn api(&self, path: &str) -> (u16, Value) {
        get_json(&self.url(path), &self.reviewer).await
    }

    /// Polls an interaction until `pred` holds (bounded), returning it.
    pub async fn wait_interaction(&self, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..100 {
            let (status, v) = self.api(&format!("/api/interactions/{id}")).await;
            if status == 200 && pred(&v) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("interaction {id} never reached the expected state");
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

pub async fn get_json(url: &str, key: &str) -> (u16, Value) {
    let resp = client()
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

pub fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

/// Splits an SSE body into its `data:` payloads.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| ev.trim().strip_prefix("data: ").map(str::to_string))
        .collect()
}

/// Asserts OpenAI's error shape and returns the error object.
pub fn assert_error_shape(body: &Value) -> &Value {
    let e = &body["error"];
    assert!(e["message"].is_string(), "no error.message in {body}");
    assert!(e["type"].is_string(), "no error.type in {body}");
    assert!(e.get("code").is_some(), "no error.code in {body}");
    e
}

/// The `keel` binary built for these tests.
pub fn keel_bin() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keel"));
    cmd.env_remove("KEEL_CONFIG").env("KEEL_LOG", "warn");
    cmd
}
