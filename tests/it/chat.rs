//! Round trips through the gateway: JSON and SSE, ids, metadata, recording, models.

use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn json_round_trip_records_the_interaction() {
    let p = Pair::start(Script::new()).await;
    let resp = p
        .chat(json!({
            "model": "mock-model",
            "messages": user("hello there"),
            "temperature": 0.2,
            "seed": 7,
            "metadata": {"conversation_id": "conv-1", "locale": "ja-JP", "jurisdiction": "JP",
                         "user": "u-9", "topic": "tax", "app_trace": "t-1"}
        }))
        .await;
    assert_eq!(resp.status(), 200);
    let header_id = resp.headers()["x-keel-interaction-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(resp.headers()["x-keel-decision"], "allow");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], header_id);
    assert!(header_id.starts_with("ix_"));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "echo: hello there"
    );

    // Keel's own metadata keys are stripped, everything else passes through untouched.
    let sent = p.mock.last_request().unwrap();
    assert_eq!(sent["metadata"], json!({"app_trace": "t-1"}));
    assert_eq!(sent["seed"], 7);
    assert_eq!(sent["temperature"], 0.2);

    // Read after write: the interaction is there as soon as the reply is.
    let (status, rec) = p.api(&format!("/api/interactions/{header_id}")).await;
    assert_eq!(status, 200, "{rec}");
    assert_eq!(rec["outcome"], "ok");
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["tenant"], "acme");
    assert_eq!(rec["model"], "mock-model");
    assert_eq!(rec["upstream"], "mock");
    assert_eq!(rec["response_text"], json!(["echo: hello there"]));
    assert_eq!(rec["context"]["conversation_id"], "conv-1");
    assert_eq!(rec["context"]["locale"], "ja-JP");
    assert_eq!(rec["context"]["topic"], "tax");
    assert_eq!(rec["request_messages"], user("hello there"));
    assert!(rec["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert!(rec["latency_ms"].as_i64().unwrap() >= 0);
}

#[tokio::test]
async fn stream_round_trip_uses_keel_id_in_every_chunk() {
    let p = Pair::start(Script::new()).await;
    let resp = p
        .chat(json!({
            "model": "mock-model", "messages": user("one two three"), "stream": true,
            "stream_options": {"include_usage": true}, "metadata": {"conversation_id": "c-s"}
        }))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let id = resp.headers()["x-keel-interaction-id"]
        .to_str()
        .unwrap()
        .to_string();
    let text = resp.text().await.unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.len() >= 3);
    for c in &chunks {
        assert_eq!(c["id"], id, "chunk {c}");
        assert_eq!(c["object"], "chat.completion.chunk");
    }
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(usage_chunk["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "echo: one two three");

    let (status, rec) = p.api(&format!("/api/interactions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(rec["stream"], true);
    assert_eq!(rec["outcome"], "ok");
    assert_eq!(rec["response_text"], json!(["echo: one two three"]));
    assert_eq!(rec["finish_reason"], "stop");
}

#[tokio::test]
async fn n_choices_and_content_parts_are_recorded() {
    let p = Pair::start(Script::new()).await;
    let resp = p
        .chat(json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": [{"type": "text", "text": "parts"}]}]}))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"].as_array().unwrap().len(), 2);
    let rec = p
        .wait_interaction(body["id"].as_str().unwrap(), |_| true)
        .await;
    assert_eq!(rec["response_text"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn tool_calls_are_relayed_and_recorded() {
    let p = Pair::start(Script::new().then(Reply::tool_call("get_rate", json!({"country": "JP"}))))
        .await;
    let resp = p.chat(json!({"model": "m", "messages": user("rate?"), "tools": [{"type": "function", "function": {"name": "get_rate"}}]})).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_rate");
    let rec = p
        .wait_interaction(body["id"].as_str().unwrap(), |_| true)
        .await;
    assert_eq!(rec["tool_calls"][0]["function"]["name"], "get_rate");
}

#[tokio::test]
async fn models_lists_configured_names() {
    let p = Pair::start_with(Script::new(), |o| {
        o.models = vec!["mock-model".into(), "gpt-*".into()]
    })
    .await;
    let (status, body) = get_json(&p.url("/v1/models"), &p.app).await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&"mock-model"), "{body}");
}

#[tokio::test]
async fn client_disconnect_mid_stream_is_recorded_as_cancelled() {
    use futures::StreamExt;
    let slow = Reply::stream(
        ["a ", "b ", "c ", "d ", "e "],
        std::time::Duration::from_millis(400),
    );
    let p = Pair::start(Script::new().then(slow)).await;
    let resp = p
        .chat(json!({"model": "m", "messages": user("x"), "stream": true, "metadata": {"conversation_id": "cancel-me"}}))
        .await;
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-keel-interaction-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(body);
    let rec = p
        .wait_interaction(&id, |v| v["outcome"] == "client_cancelled")
        .await;
    assert_eq!(rec["status"], 499);
    assert_eq!(rec["context"]["conversation_id"], "cancel-me");
}
