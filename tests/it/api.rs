//! Keel's own API: reading interactions, tenant isolation, paging, OpenAPI, operations.

use std::collections::BTreeSet;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn tenants_only_see_their_own_interactions() {
    let p = Pair::start(Script::new()).await;
    let other_reviewer = p.gw.key("globex", "reviewer", None).await;
    let operator = p.gw.key("*", "auditor", Some("olga")).await;
    let resp = p
        .chat(json!({"model": "m", "messages": user("secret")}))
        .await;
    let id = resp.headers()["x-keel-interaction-id"]
        .to_str()
        .unwrap()
        .to_string();

    let (s, _) = p.api(&format!("/api/interactions/{id}")).await;
    assert_eq!(s, 200);
    let (s, body) = get_json(&p.url(&format!("/api/interactions/{id}")), &other_reviewer).await;
    assert_eq!(s, 404, "another tenant's object is a 404: {body}");
    let (s, body) = get_json(&p.url("/api/interactions"), &other_reviewer).await;
    assert_eq!(s, 200);
    assert_eq!(body["data"], json!([]));
    let (s, body) = get_json(&p.url(&format!("/api/interactions/{id}")), &operator).await;
    assert_eq!(s, 200, "an all-tenant key sees everything: {body}");
}

#[tokio::test]
async fn listing_pages_newest_first_and_filters() {
    let p = Pair::start(Script::new()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let conv = if i % 2 == 0 { "even" } else { "odd" };
        let resp = p.chat(json!({"model": "m", "messages": user(&format!("m{i}")), "metadata": {"conversation_id": conv}})).await;
        ids.push(
            resp.headers()["x-keel-interaction-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/interactions?limit=2&cursor={c}"),
            None => "/api/interactions?limit=2".to_string(),
        };
        let (s, page) = p.api(&path).await;
        assert_eq!(s, 200);
        for r in page["data"].as_array().unwrap() {
            seen.push(r["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let (_, odd) = p.api("/api/interactions?conversation_id=odd").await;
    assert_eq!(odd["data"].as_array().unwrap().len(), 2);
    let (_, future) = p.api("/api/interactions?since=2999-01-01T00:00:00Z").await;
    assert_eq!(future["data"], json!([]));
}

/// Every `/api/` route registered in the gateway's source is described in `/api/openapi.json`.
#[tokio::test]
async fn openapi_lists_every_api_route() {
    let p = Pair::start(Script::new()).await;
    let (s, doc) = get_json(&p.url("/api/openapi.json"), "").await;
    assert_eq!(s, 200);
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let mut routed = BTreeSet::new();
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/keel-gateway/src");
    let mut stack = vec![std::path::PathBuf::from(src)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split(".route(\"").skip(1) {
                    let route = piece.split('"').next().unwrap();
                    if route.starts_with("/api/") {
                        routed.insert(route.to_string());
                    }
                }
            }
        }
    }
    assert!(routed.len() >= 3, "found routes {routed:?}");
    let missing: Vec<_> = routed.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from openapi.json: {missing:?}"
    );
    for path in &documented {
        for method in doc["paths"][path].as_object().unwrap().keys() {
            let url = p.url(
                &path
                    .replace("{id}", "x")
                    .replace("{version}", "x")
                    .replace("{index}", "0"),
            );
            let r = client()
                .request(method.to_uppercase().parse().unwrap(), url)
                .bearer_auth(&p.reviewer)
                .send()
                .await
                .unwrap();
            assert_ne!(r.status(), 405, "{method} {path} documented but not routed");
        }
    }
}

/// The value of the Prometheus sample `name{...}` whose labels include every one of `labels`
/// (0 when absent).
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

async fn metrics_text(p: &Pair) -> String {
    client()
        .get(p.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    // The recorder is process-wide: this test's upstream has a name no other test uses, and
    // shared series are compared as deltas.
    let upstream = "metrics-probe-upstream";
    let p = Pair::start_with(Script::new().then(Reply::error(500, "boom")), |o| {
        o.upstreams[0].0 = upstream.into();
    })
    .await;
    for path in ["/healthz", "/readyz"] {
        let r = client().get(p.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let before = metrics_text(&p).await;
    let chat_ok = [r#"route="/v1/chat/completions""#, r#"status="200""#];
    let resp = p
        .chat(json!({"model": "m", "messages": user("count me")}))
        .await;
    assert_eq!(resp.status(), 200);
    // Counters recorded after the reply is released: poll (bounded) until they show it.
    let grew = |text: &str| {
        sample(text, "keel_interactions_total", &[r#"outcome="ok""#])
            > sample(&before, "keel_interactions_total", &[r#"outcome="ok""#])
    };
    let mut text = metrics_text(&p).await;
    for _ in 0..200 {
        if grew(&text) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        text = metrics_text(&p).await;
    }
    let up = format!(r#"upstream="{upstream}""#);
    for (name, labels, want) in [
        (
            "keel_upstream_attempts_total",
            vec![up.as_str(), r#"result="status_5xx""#],
            1.0,
        ),
        (
            "keel_upstream_attempts_total",
            vec![up.as_str(), r#"result="ok""#],
            1.0,
        ),
        (
            "keel_upstream_errors_total",
            vec![up.as_str(), r#"kind="status_5xx""#],
            1.0,
        ),
        (
            "keel_upstream_duration_seconds_count",
            vec![up.as_str()],
            2.0,
        ),
    ] {
        assert_eq!(
            sample(&text, name, &labels),
            want,
            "{name} {labels:?}\n{text}"
        );
    }
    for (name, labels) in [
        ("keel_http_requests_total", chat_ok.to_vec()),
        ("keel_interactions_total", vec![r#"outcome="ok""#]),
    ] {
        let delta = sample(&text, name, &labels) - sample(&before, name, &labels);
        assert!(delta >= 1.0, "{name} {labels:?} grew by {delta}\n{text}");
    }
    for name in [
        "keel_http_request_duration_seconds_bucket",
        "keel_store_batch_events_bucket",
    ] {
        assert!(text.contains(name), "metric {name} missing from /metrics");
    }
}
