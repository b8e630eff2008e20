//! Upstream faults: retries with backoff, fallback to the next upstream, then 502/504.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn a_5xx_is_retried_then_succeeds() {
    let p = Pair::start(Script::new().then(Reply::error(500, "boom"))).await;
    let resp = p
        .chat(json!({"model": "m", "messages": user("retry me")}))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(p.mock.request_count(), 2);
    let rec = p
        .wait_interaction(body["id"].as_str().unwrap(), |_| true)
        .await;
    assert_eq!(rec["attempts"], 2);
    assert_eq!(rec["outcome"], "ok");
}

#[tokio::test]
async fn failing_upstream_falls_back_to_the_next() {
    let bad = MockUpstream::start(Script::new().default_reply(Reply::error(503, "down")))
        .await
        .unwrap();
    let good = MockUpstream::start(Script::new()).await.unwrap();
    let opts = GatewayOptions {
        upstreams: vec![
            ("bad".into(), bad.base_url()),
            ("good".into(), good.base_url()),
        ],
        ..GatewayOptions::default()
    };
    let gw = TestGateway::start(opts).await;
    let app = gw.key("acme", "app", None).await;
    let reviewer = gw.key("acme", "reviewer", None).await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(&app)
        .json(&json!({"model": "m", "messages": user("hi")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-keel-interaction-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        bad.request_count(),
        2,
        "1 try + 1 retry on the failing upstream"
    );
    assert_eq!(good.request_count(), 1);
    let (_, rec) = get_json(&format!("{}/api/interactions/{id}", gw.url()), &reviewer).await;
    assert_eq!(rec["upstream"], "good");
    assert_eq!(rec["attempts"], 3);
}

#[tokio::test]
async fn unreachable_upstream_falls_back() {
    // A port nothing listens on: bind, note it, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let good = MockUpstream::start(Script::new()).await.unwrap();
    let opts = GatewayOptions {
        upstreams: vec![
            ("dead".into(), format!("http://{dead}/v1")),
            ("good".into(), good.base_url()),
        ],
        ..GatewayOptions::default()
    };
    let gw = TestGateway::start(opts).await;
    let app = gw.key("acme", "app", None).await;
    let reviewer = gw.key("acme", "reviewer", None).await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(&app)
        .json(&json!({"model": "m", "messages": user("hi")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-keel-interaction-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(good.request_count(), 1, "the second upstream served");
    let (_, rec) = get_json(&format!("{}/api/interactions/{id}", gw.url()), &reviewer).await;
    assert_eq!(rec["upstream"], "good", "{rec}");
    assert_eq!(
        rec["attempts"], 3,
        "2 connect failures (1 + 1 retry), then 1: {rec}"
    );
}

/// One fault → the status the client gets, the error code, and the recorded outcome.
async fn check(fault: Reply, stream: bool, status: u16, code: &str, outcome: &str) {
    let p = Pair::start_with(Script::new().default_reply(fault), |o| {
        o.timeout_ms = 300;
        o.retries = 1;
    })
    .await;
    let resp = p
        .chat(json!({"model": "m", "messages": user("x"), "stream": stream}))
        .await;
    assert_eq!(resp.status().as_u16(), status, "fault status");
    let id = resp.headers()["x-keel-interaction-id"]
        .to_str()
        .unwrap()
        .to_string();
    let text = resp.text().await.unwrap();
    let err: Value = if stream && status == 200 {
        let data = sse_data(&text);
        assert!(
            !data.contains(&"[DONE]".to_string()),
            "a broken stream must not end with [DONE]: {text}"
        );
        serde_json::from_str(data.last().unwrap()).unwrap()
    } else {
        serde_json::from_str(&text).unwrap()
    };
    assert_eq!(assert_error_shape(&err)["code"], code, "{err}");
    let rec = p.wait_interaction(&id, |_| true).await;
    assert_eq!(rec["outcome"], outcome, "{rec}");
}

#[tokio::test]
async fn each_fault_gets_a_clear_error_and_is_recorded() {
    check(
        Reply::error(500, "boom"),
        false,
        502,
        "upstream_error",
        "upstream_error",
    )
    .await;
    check(
        Reply::Hang,
        false,
        504,
        "upstream_timeout",
        "upstream_timeout",
    )
    .await;
    check(Reply::Reset, false, 502, "upstream_error", "upstream_error").await;
    check(
        Reply::MalformedSse,
        true,
        200,
        "upstream_error",
        "upstream_error",
    )
    .await;
    check(
        Reply::stream_cutoff(["a", "b"]),
        true,
        200,
        "upstream_error",
        "upstream_error",
    )
    .await;
    check(
        Reply::delay(Duration::from_secs(5), Reply::Echo),
        true,
        504,
        "upstream_timeout",
        "upstream_timeout",
    )
    .await;
}

#[tokio::test]
async fn an_upstream_4xx_passes_through() {
    let p = Pair::start(Script::new().then(Reply::error(400, "max_tokens is too large"))).await;
    let resp = p.chat(json!({"model": "m", "messages": user("x")})).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        assert_error_shape(&body)["message"],
        "max_tokens is too large"
    );
    assert_eq!(p.mock.request_count(), 1, "4xx is not retried");
}

#[tokio::test]
async fn a_stalled_stream_times_out() {
    let p = Pair::start_with(
        Script::new().then(Reply::stream(["a", "b"], Duration::from_secs(3))),
        |o| o.timeout_ms = 300,
    )
    .await;
    let resp = p
        .chat(json!({"model": "m", "messages": user("x"), "stream": true}))
        .await;
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-keel-interaction-id"]
        .to_str()
        .unwrap()
        .to_string();
    let text = resp.text().await.unwrap();
    assert!(text.contains("upstream_timeout"), "{text}");
    let rec = p.wait_interaction(&id, |_| true).await;
    assert_eq!(rec["outcome"], "upstream_timeout");
}
