//! Tests of the mock OpenAI upstream, driven over HTTP with reqwest.

// Test helpers outside `#[test]` functions may fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use keel_testkit::mock::{fixture, try_fixture, MockHandle, MockUpstream, Reply, Script};
use serde_json::{json, Value};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn start(script: Script) -> MockHandle {
    MockUpstream::start(script).await.expect("mock starts")
}

async fn post(mock: &MockHandle, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(body)
        .send()
        .await
        .expect("request succeeds")
}

fn chat(text: &str) -> Value {
    json!({"model": "gpt-test", "messages": [{"role": "user", "content": text}]})
}

fn streaming(text: &str, include_usage: bool) -> Value {
    json!({
        "model": "gpt-test",
        "messages": [{"role": "user", "content": text}],
        "stream": true,
        "stream_options": {"include_usage": include_usage},
    })
}

/// Splits an SSE body into its `data:` payloads, checking the framing.
fn sse_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                .to_owned()
        })
        .collect()
}

/// The JSON chunks of a complete stream; asserts it ends with exactly one `[DONE]`.
fn stream_chunks(body: &str) -> Vec<Value> {
    let events = sse_events(body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{body}");
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk is JSON"))
        .collect()
}

fn content_of(chunks: &[Value], index: u64) -> String {
    chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["index"] == index)
        .filter_map(|c| c["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn expected_usage(prompt: u64, completion: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

#[tokio::test]
async fn non_stream_reply_has_openai_shape() {
    let mock = start(Script::new()).await;
    assert!(mock.base_url().starts_with("http://127.0.0.1:"));
    assert!(mock.base_url().ends_with("/v1"));
    assert_eq!(
        mock.addr().port(),
        mock.base_url()[17..]
            .trim_end_matches("/v1")
            .parse::<u16>()
            .unwrap()
    );

    let body = json!({
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "hello world"}
        ]
    });
    let response = post(&mock, &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let value: Value = response.json().await.unwrap();

    let object = value.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "choices",
            "created",
            "id",
            "model",
            "object",
            "service_tier",
            "system_fingerprint",
            "usage"
        ]
    );
    let id = value["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-") && id.len() > 20, "{id}");
    assert_eq!(value["object"], "chat.completion");
    let created = value["created"].as_u64().unwrap();
    assert!(created.abs_diff(now()) < 60);
    assert_eq!(value["model"], "gpt-test");
    assert_eq!(
        value["choices"],
        json!([{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "echo: hello world",
                "refusal": null,
                "annotations": []
            },
            "logprobs": null,
            "finish_reason": "stop"
        }])
    );
    // prompt: "be nice" + "hello world"; completion: "echo: hello world".
    assert_eq!(value["usage"], expected_usage(4, 3));
    assert_eq!(value["service_tier"], "default");
    assert_eq!(value["system_fingerprint"], "fp_mock");

    // Ids differ between replies.
    let again: Value = post(&mock, &body).await.json().await.unwrap();
    assert_ne!(again["id"], value["id"]);
}

#[tokio::test]
async fn stream_reply_has_openai_shape_with_usage_and_done() {
    let mock = start(Script::new()).await;
    let response = post(&mock, &streaming("hello big world", true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = response.text().await.unwrap();
    let chunks = stream_chunks(&body);
    assert!(chunks.len() >= 4, "{body}");

    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    for chunk in &chunks {
        assert_eq!(chunk["id"], id);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gpt-test");
        assert_eq!(chunk["system_fingerprint"], "fp_mock");
        assert_eq!(chunk["service_tier"], "default");
        assert!(chunk["created"].as_u64().unwrap().abs_diff(now()) < 60);
        assert!(chunk.as_object().unwrap().contains_key("usage"));
    }
    assert_eq!(
        chunks[0]["choices"],
        json!([{
            "index": 0,
            "delta": {"role": "assistant", "content": "", "refusal": null},
            "logprobs": null,
            "finish_reason": null
        }])
    );
    let (usage_chunk, rest) = chunks.split_last().unwrap();
    let (finish, middle) = rest.split_last().unwrap();
    for chunk in &middle[1..] {
        let choice = &chunk["choices"][0];
        assert_eq!(chunk["choices"].as_array().unwrap().len(), 1);
        assert_eq!(choice["finish_reason"], Value::Null);
        assert_eq!(choice["delta"].as_object().unwrap().len(), 1, "{chunk}");
        assert!(choice["delta"]["content"].is_string());
        assert_eq!(chunk["usage"], Value::Null);
    }
    assert_eq!(content_of(&chunks, 0), "echo: hello big world");
    assert!(middle.len() > 2, "content arrives in several chunks");
    assert_eq!(
        finish["choices"],
        json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}])
    );
    assert_eq!(finish["usage"], Value::Null);
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], expected_usage(3, 4));
    assert!(body.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn stream_without_include_usage_has_no_usage() {
    let mock = start(Script::new()).await;
    let body = post(&mock, &streaming("hi", false))
        .await
        .text()
        .await
        .unwrap();
    let chunks = stream_chunks(&body);
    for chunk in &chunks {
        assert!(!chunk.as_object().unwrap().contains_key("usage"), "{chunk}");
        assert_eq!(chunk["choices"].as_array().unwrap().len(), 1);
    }
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    assert_eq!(content_of(&chunks, 0), "echo: hi");
}

#[tokio::test]
async fn n_two_gives_two_choices() {
    let mock = start(Script::new()).await;
    let mut body = chat("hi there");
    body["n"] = json!(2);
    let value: Value = post(&mock, &body).await.json().await.unwrap();
    let choices = value["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["message"]["content"], "echo[0]: hi there");
    assert_eq!(choices[1]["index"], 1);
    assert_eq!(choices[1]["message"]["content"], "echo[1]: hi there");
    assert_eq!(value["usage"]["completion_tokens"], 6);

    let mut body = streaming("hi there", true);
    body["n"] = json!(2);
    let text = post(&mock, &body).await.text().await.unwrap();
    let chunks = stream_chunks(&text);
    assert_eq!(content_of(&chunks, 0), "echo[0]: hi there");
    assert_eq!(content_of(&chunks, 1), "echo[1]: hi there");
    let finishes: Vec<u64> = chunks
        .iter()
        .filter(|c| c["choices"][0]["finish_reason"] == "stop")
        .map(|c| c["choices"][0]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(finishes, [0, 1]);
    let roles = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["role"] == "assistant")
        .count();
    assert_eq!(roles, 2);
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 6);
}

#[tokio::test]
async fn text_reply_json_and_stream() {
    let mock = start(Script::new().replies([
        Reply::text("fixed answer here"),
        Reply::text("fixed answer here"),
        Reply::text("two"),
    ]))
    .await;
    let value: Value = post(&mock, &chat("ignored")).await.json().await.unwrap();
    assert_eq!(
        value["choices"][0]["message"]["content"],
        "fixed answer here"
    );
    assert_eq!(value["usage"]["completion_tokens"], 3);

    let text = post(&mock, &streaming("ignored", true))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(content_of(&stream_chunks(&text), 0), "fixed answer here");

    let mut body = chat("x");
    body["n"] = json!(2);
    let value: Value = post(&mock, &body).await.json().await.unwrap();
    assert_eq!(value["choices"][0]["message"]["content"], "two [0]");
    assert_eq!(value["choices"][1]["message"]["content"], "two [1]");
}

#[tokio::test]
async fn stream_reply_sends_given_chunks_with_delay() {
    let delay = Duration::from_millis(60);
    let mock = start(Script::new().replies([
        Reply::stream(["Hel", "lo", " there"], delay),
        Reply::stream(["Hel", "lo"], delay),
    ]))
    .await;
    let started = Instant::now();
    let response = post(&mock, &streaming("x", true)).await;
    let mut stream = response.bytes_stream();
    let mut arrivals = Vec::new();
    let mut body = Vec::new();
    while let Some(bytes) = stream.next().await {
        body.extend_from_slice(&bytes.unwrap());
        arrivals.push(started.elapsed());
    }
    // Lower bounds only: a pause never ends early, however loaded the machine.
    assert!(started.elapsed() >= delay * 2);
    assert!(arrivals.len() >= 3, "{arrivals:?}");
    let chunks = stream_chunks(std::str::from_utf8(&body).unwrap());
    let pieces: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(pieces, ["Hel", "lo", " there"]);
    assert!(chunks.last().unwrap()["usage"].is_object());

    // Without `stream: true` the pieces come back joined as a JSON completion.
    let started = Instant::now();
    let value: Value = post(&mock, &chat("x")).await.json().await.unwrap();
    assert!(started.elapsed() >= delay);
    assert_eq!(value["choices"][0]["message"]["content"], "Hello");
}

#[tokio::test]
async fn stream_headers_and_first_chunk_come_before_the_first_pause() {
    // An hour between chunks: the headers and the first piece can only arrive if they are sent
    // before the pause (a generous deadline turns a regression into a failure, not a hang).
    let mock =
        start(Script::new().then(Reply::stream(["Hel", "lo"], Duration::from_secs(3600)))).await;
    let first = tokio::time::timeout(Duration::from_secs(60), async {
        let response = post(&mock, &streaming("x", true)).await;
        assert_eq!(response.status(), 200);
        let mut stream = response.bytes_stream();
        let mut body = String::new();
        while !body.contains("Hel") {
            let bytes = stream.next().await.unwrap().unwrap();
            body.push_str(std::str::from_utf8(&bytes).unwrap());
        }
        body
    })
    .await
    .expect("headers and the first chunk arrived before the pause");
    assert!(!first.contains("\"lo\""), "{first}");
}

#[tokio::test]
async fn tool_call_json_and_stream() {
    let arguments = json!({"location": "Paris, France", "unit": "celsius"});
    let mock = start(Script::new().replies([
        Reply::tool_call("get_weather", arguments.clone()),
        Reply::tool_call("get_weather", arguments.clone()),
    ]))
    .await;
    let value: Value = post(&mock, &chat("weather?")).await.json().await.unwrap();
    let choice = &value["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let message = &choice["message"];
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["refusal"], Value::Null);
    assert_eq!(message["annotations"], json!([]));
    let call = &message["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let parsed: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(parsed, arguments);

    let text = post(&mock, &streaming("weather?", false))
        .await
        .text()
        .await
        .unwrap();
    let chunks = stream_chunks(&text);
    let first = &chunks[0]["choices"][0]["delta"];
    assert_eq!(first["role"], "assistant");
    assert_eq!(first["content"], Value::Null);
    assert_eq!(first["refusal"], Value::Null);
    let first_call = &first["tool_calls"][0];
    assert_eq!(first_call["index"], 0);
    assert!(first_call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(first_call["type"], "function");
    assert_eq!(
        first_call["function"],
        json!({"name": "get_weather", "arguments": ""})
    );
    let mut joined = String::new();
    for chunk in &chunks[1..chunks.len() - 1] {
        let call = &chunk["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(call["index"], 0);
        assert!(call.get("id").is_none());
        joined.push_str(call["function"]["arguments"].as_str().unwrap());
    }
    assert!(chunks.len() > 4, "arguments arrive in several deltas");
    assert_eq!(serde_json::from_str::<Value>(&joined).unwrap(), arguments);
    assert_eq!(
        chunks.last().unwrap()["choices"][0],
        json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"})
    );
}

#[tokio::test]
async fn status_reply_sends_status_and_body() {
    let custom = json!({"error": {"message": "overloaded", "type": "server_error", "param": null, "code": "overloaded"}});
    let mock = start(Script::new().replies([
        Reply::error(500, "boom"),
        Reply::Status(429, custom.clone()),
    ]))
    .await;
    let response = post(&mock, &chat("hi")).await;
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": {"message": "boom", "type": "server_error", "param": null, "code": null}})
    );
    let response = post(&mock, &chat("hi")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.json::<Value>().await.unwrap(), custom);
    // Queue exhausted: back to echo.
    let value: Value = post(&mock, &chat("hi")).await.json().await.unwrap();
    assert_eq!(value["choices"][0]["message"]["content"], "echo: hi");
}

#[tokio::test]
async fn delay_and_hang_trigger_client_timeouts() {
    let mock = start(Script::new().replies([
        Reply::delay(Duration::from_secs(5), Reply::Echo),
        Reply::Hang,
        Reply::delay(Duration::from_millis(100), Reply::text("late")),
    ]))
    .await;
    let timeout_client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let url = format!("{}/chat/completions", mock.base_url());
    for _ in 0..2 {
        let started = Instant::now();
        let error = timeout_client
            .post(&url)
            .json(&chat("hi"))
            .send()
            .await
            .unwrap_err();
        assert!(error.is_timeout(), "{error:?}");
        // A lower bound only: the client gave up no earlier than its timeout.
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
    // The delayed reply, with a client that waits generously (a tight timeout would turn a
    // loaded machine into a failure).
    let started = Instant::now();
    let value: Value = client()
        .post(&url)
        .json(&chat("hi"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(value["choices"][0]["message"]["content"], "late");
    assert_eq!(mock.request_count(), 3);
}

#[tokio::test]
async fn reset_is_a_connection_error_not_a_status() {
    let mock = start(Script::new()).await;
    let client = client();
    let url = format!("{}/chat/completions", mock.base_url());
    let ok = client.post(&url).json(&chat("warm")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    ok.bytes().await.unwrap();

    mock.push(Reply::Reset);
    let error = client
        .post(&url)
        .json(&chat("boom"))
        .send()
        .await
        .unwrap_err();
    assert!(error.status().is_none(), "{error:?}");
    assert!(!error.is_timeout(), "{error:?}");
    assert!(error.is_request() || error.is_connect(), "{error:?}");
    // The request was read before the connection closed.
    assert_eq!(mock.request_count(), 2);
    assert_eq!(
        mock.last_request().unwrap()["messages"][0]["content"],
        "boom"
    );

    // A fresh client on a new connection is answered again.
    let value: Value = post(&mock, &chat("after")).await.json().await.unwrap();
    assert_eq!(value["choices"][0]["message"]["content"], "echo: after");
}

#[tokio::test]
async fn malformed_sse_is_garbage_without_done() {
    let mock = start(Script::new().then(Reply::MalformedSse)).await;
    let response = post(&mock, &streaming("hi", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = response.text().await.unwrap();
    let events = sse_events(&body);
    assert!(events.len() >= 3, "{body}");
    let (last, valid) = events.split_last().unwrap();
    for event in valid {
        serde_json::from_str::<Value>(event).expect("leading chunks are valid");
    }
    assert!(last.contains("\"choices\": ["), "{last}");
    assert!(serde_json::from_str::<Value>(last).is_err());
    assert!(!body.contains("[DONE]"));
}

#[tokio::test]
async fn stream_cutoff_drops_the_connection_mid_stream() {
    let mock = start(Script::new().then(Reply::stream_cutoff(["partial", " answer"]))).await;
    let response = post(&mock, &streaming("hi", true)).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut received = Vec::new();
    let mut failed = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body ends in an error, not a clean end");
    let text = String::from_utf8(received).unwrap();
    assert!(!text.contains("[DONE]"));
    let chunks: Vec<Value> = sse_events(&text)
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(content_of(&chunks, 0), "partial answer");
    assert!(chunks
        .iter()
        .all(|c| c["choices"][0]["finish_reason"].is_null()));
}

#[tokio::test]
async fn content_part_arrays_are_echoed() {
    let mock = start(Script::new()).await;
    let body = json!({
        "model": "gpt-test",
        "messages": [
            {"role": "user", "content": "old question"},
            {"role": "assistant", "content": "old answer"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": "this?"}
            ]}
        ]
    });
    let value: Value = post(&mock, &body).await.json().await.unwrap();
    assert_eq!(
        value["choices"][0]["message"]["content"],
        "echo: what is this?"
    );
    assert_eq!(value["usage"]["prompt_tokens"], 7);
}

#[tokio::test]
async fn requests_are_recorded_and_replies_pushed_at_runtime() {
    let mock = start(Script::new().then(Reply::text("first"))).await;
    assert_eq!(mock.request_count(), 0);
    assert_eq!(mock.pending_replies(), 1);
    let body = json!({
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"purpose": "kept"},
        "custom_field": 7
    });
    let value: Value = post(&mock, &body).await.json().await.unwrap();
    assert_eq!(value["choices"][0]["message"]["content"], "first");
    assert_eq!(mock.requests(), vec![body.clone()]);

    mock.push(Reply::text("second"));
    mock.push(Reply::text("third"));
    let contents = [
        post(&mock, &chat("a")).await.json::<Value>().await.unwrap(),
        post(&mock, &chat("b")).await.json::<Value>().await.unwrap(),
        post(&mock, &chat("c")).await.json::<Value>().await.unwrap(),
    ]
    .map(|v| {
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    });
    assert_eq!(contents, ["second", "third", "echo: c"]);

    mock.set_default(Reply::error(503, "down"));
    assert_eq!(post(&mock, &chat("d")).await.status(), 503);

    let requests = mock.requests();
    assert_eq!(mock.request_count(), 5);
    assert_eq!(requests.len(), 5);
    assert_eq!(requests[0], body);
    assert_eq!(requests[4], chat("d"));
    assert_eq!(mock.last_request(), Some(chat("d")));
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let mock = start(Script::new().then(Reply::text("kept for later"))).await;
    let url = format!("{}/chat/completions", mock.base_url());
    let response = client()
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let value: Value = response.json().await.unwrap();
    assert_eq!(value["error"]["type"], "invalid_request_error");
    assert!(value["error"]["message"].is_string());
    assert!(value["error"].as_object().unwrap().contains_key("param"));
    assert!(value["error"].as_object().unwrap().contains_key("code"));
    assert_eq!(mock.request_count(), 0);
    assert!(mock.requests().is_empty());

    let response = post(&mock, &json!({"model": "m"})).await;
    assert_eq!(response.status(), 400);
    let value: Value = response.json().await.unwrap();
    assert_eq!(value["error"]["param"], "messages");

    // Neither consumed the scripted reply.
    let value: Value = post(&mock, &chat("x")).await.json().await.unwrap();
    assert_eq!(value["choices"][0]["message"]["content"], "kept for later");

    let response = client()
        .post(format!("{}/embeddings", mock.base_url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let value: Value = response.json().await.unwrap();
    assert_eq!(
        value["error"]["message"],
        "Invalid URL (POST /v1/embeddings)"
    );
}

#[tokio::test]
async fn models_are_listed() {
    let mock = start(Script::new()).await;
    let value: Value = client()
        .get(format!("{}/models", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(value["object"], "list");
    let data = value["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], "mock-model");
    assert_eq!(data[0]["object"], "model");
    assert_eq!(data[0]["owned_by"], "mock");
    assert!(data[0]["created"].as_u64().unwrap().abs_diff(now()) < 60);

    let mock = start(Script::new().models(["alpha", "beta"])).await;
    let value: Value = client()
        .get(format!("{}/models", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = value["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alpha", "beta"]);
    let one = client()
        .get(format!("{}/models/beta", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    assert_eq!(one.json::<Value>().await.unwrap()["id"], "beta");
    let missing = client()
        .get(format!("{}/models/gamma", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // A request without a model is answered as the first configured model.
    let value: Value = post(
        &mock,
        &json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(value["model"], "alpha");
}

#[tokio::test]
async fn fixtures_are_realistic_and_served_verbatim() {
    for name in [
        "chat_stream_usage.sse",
        "chat_stream_tool_call",
        "chat_stream_comments",
    ] {
        assert!(!fixture(name).is_empty(), "{name}");
    }
    assert!(try_fixture("no_such_fixture").is_err());

    let usage = fixture("chat_stream_usage.sse");
    let chunks = stream_chunks(&usage);
    let id = &chunks[0]["id"];
    assert!(chunks.iter().all(|c| &c["id"] == id));
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(content_of(&chunks, 0), "Hello! How can I assist you today?");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["total_tokens"], 29);

    let tools = fixture("chat_stream_tool_call.sse");
    let chunks = stream_chunks(&tools);
    let arguments: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"location": "Paris, France"})
    );
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    let comments = fixture("chat_stream_comments");
    assert!(comments.contains("\r\n\r\n") && comments.starts_with(": "));

    let mock =
        start(Script::new().replies([Reply::RawSse(usage.clone()), Reply::RawSse(tools.clone())]))
            .await;
    let response = post(&mock, &streaming("hi", true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.text().await.unwrap(), usage);
    assert_eq!(post(&mock, &chat("hi")).await.text().await.unwrap(), tools);
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let mock = start(Script::new()).await;
    let url = format!("{}/chat/completions", mock.base_url());
    assert_eq!(post(&mock, &chat("hi")).await.status(), 200);
    mock.shutdown().await;
    let error = reqwest::Client::new()
        .post(&url)
        .json(&chat("hi"))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_connect() || error.is_request(), "{error:?}");

    let mock = start(Script::new()).await;
    let url = format!("{}/chat/completions", mock.base_url());
    drop(mock);
    // Dropping stops the server in the background: poll until connections are refused.
    let mut refused = None;
    for _ in 0..600 {
        match reqwest::Client::new()
            .post(&url)
            .json(&chat("hi"))
            .send()
            .await
        {
            Err(e) if e.is_connect() || e.is_request() => {
                refused = Some(e);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(refused.is_some(), "still served after drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_all_answered() {
    let mock = start(Script::new().without_recording()).await;
    let client = client();
    let url = format!("{}/chat/completions", mock.base_url());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let value: Value = client
                    .post(&url)
                    .json(&chat(&format!("n{i}")))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(
                    value["choices"][0]["message"]["content"],
                    format!("echo: n{i}")
                );
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(mock.request_count(), 200);
    assert!(mock.requests().is_empty());
}

#[test]
fn binary_prints_base_url_and_serves_echo() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-upstream"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--delay-ms",
            "1",
            "--model",
            "bin-model",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base_url = line.trim().to_owned();
    assert!(
        base_url.starts_with("http://127.0.0.1:") && base_url.ends_with("/v1"),
        "{line}"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (value, models) = runtime.block_on(async {
        let value: Value = client()
            .post(format!("{base_url}/chat/completions"))
            .json(&chat("from bin"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let models: Value = client()
            .get(format!("{base_url}/models"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (value, models)
    });
    assert_eq!(value["choices"][0]["message"]["content"], "echo: from bin");
    assert_eq!(models["data"][0]["id"], "bin-model");

    // SIGTERM ends it cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}
