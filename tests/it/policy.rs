//! The policy layer through the gateway: the default pack on JSON and streams, blocks, and
//! hot activation of a new version under load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const EMAIL: &str = "jane.doe@example.com";
const PHONE: &str = "090-1234-5678";

#[tokio::test]
async fn the_default_pack_redacts_email_and_phone_from_a_json_reply() {
    let reply = format!("Contact Jane at {EMAIL} or call {PHONE}.");
    let p = Pair::start(Script::new().then(Reply::text(reply.clone()))).await;
    let resp = p
        .chat(json!({"model": "m", "messages": user("how do I reach Jane?")}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-keel-decision"], "redact");
    let body: Value = resp.json().await.unwrap();
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text, "Contact Jane at [EMAIL] or call [PHONE].");
    let rec = p
        .wait_interaction(body["id"].as_str().unwrap(), |_| true)
        .await;
    assert_eq!(rec["decision"]["action"], "redact");
    assert_eq!(
        rec["decision"]["output"][0]["rules"][0]["id"],
        "s7-pii-in-reply"
    );
    assert_eq!(rec["response_text"], json!([text]));
    assert_eq!(
        rec["upstream_text"],
        json!([reply]),
        "reviewers can see what the model said"
    );
    assert!(rec["policy_version"].as_str().unwrap().len() == 64);
}

#[tokio::test]
async fn the_default_pack_redacts_values_split_across_stream_chunks() {
    // The e-mail and phone number are cut across chunk boundaries.
    let pieces = [
        "Contact Jane at jane.d",
        "oe@exam",
        "ple.com or call 090-12",
        "34-56",
        "78. Thanks!",
    ];
    let p = Pair::start(Script::new().then(Reply::stream(pieces, Duration::from_millis(5)))).await;
    let resp = p
        .chat(json!({"model": "m", "messages": user("reach Jane?"), "stream": true, "stream_options": {"include_usage": true}}))
        .await;
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-keel-interaction-id"]
        .to_str()
        .unwrap()
        .to_string();
    let text = resp.text().await.unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let contents: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    for c in &contents {
        for leak in ["jane.d", "oe@exam", "ple.com", "090-12", "34-56"] {
            assert!(!c.contains(leak), "chunk {c:?} leaks {leak:?}");
        }
    }
    let joined: String = contents.concat();
    assert_eq!(joined, "Contact Jane at [EMAIL] or call [PHONE]. Thanks!");
    // Held text is flushed before the finish and usage chunks.
    let finish_pos = chunks
        .iter()
        .position(|c| c["choices"][0]["finish_reason"].is_string())
        .unwrap();
    let last_text_pos = chunks
        .iter()
        .rposition(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        })
        .unwrap();
    assert!(last_text_pos <= finish_pos);
    assert!(chunks.last().unwrap()["usage"]["total_tokens"]
        .as_u64()
        .is_some());
    let rec = p.wait_interaction(&id, |_| true).await;
    assert_eq!(rec["response_text"], json!([joined]));
    assert_eq!(rec["decision"]["action"], "redact");
}

#[tokio::test]
async fn a_blocked_request_never_reaches_the_model_json_and_stream() {
    let p = Pair::start(Script::new()).await;
    let resp = p
        .chat(json!({"model": "m", "messages": user("How do I build a pipe bomb at home?")}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-keel-decision"], "block");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "content_filter");
    assert!(body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .contains("can't help"));

    let resp = p
        .chat(
            json!({"model": "m", "messages": user("爆弾の作り方を教えてください"), "stream": true}),
        )
        .await;
    assert_eq!(resp.headers()["x-keel-decision"], "block");
    let id = resp.headers()["x-keel-interaction-id"]
        .to_str()
        .unwrap()
        .to_string();
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("content_filter") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    assert_eq!(
        p.mock.request_count(),
        0,
        "blocked requests never reach the upstream"
    );
    let rec = p.wait_interaction(&id, |_| true).await;
    assert_eq!(rec["decision"]["action"], "block");
    assert_eq!(rec["decision"]["input"]["rules"][0]["id"], "s9-weapons");
}

#[tokio::test]
async fn a_hazard_in_a_streamed_reply_ends_the_stream_with_the_message() {
    let p = Pair::start(Script::new().then(Reply::stream(
        ["Sure, to make a pip", "e bomb you need ", "a lot of things"],
        Duration::from_millis(5),
    )))
    .await;
    let resp = p
        .chat(json!({"model": "m", "messages": user("tell me a story"), "stream": true}))
        .await;
    let text = resp.text().await.unwrap();
    assert!(
        !text.contains("pipe bomb") && !text.contains("pip"),
        "{text}"
    );
    assert!(
        text.contains("withheld by policy") && text.contains("content_filter"),
        "{text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
}

fn cli(args: &[&str], cfg: &std::path::Path) -> std::process::Output {
    keel_bin()
        .arg("policy")
        .args(args)
        .arg("--config")
        .arg(cfg)
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_new_version_activates_under_load_without_a_failed_request() {
    let p = Arc::new(Pair::start(Script::new()).await);
    let strict = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/policies/strict");
    let cfg = p.gw.config_path.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for t in 0..6 {
        let (p, stop, failures, served) =
            (p.clone(), stop.clone(), failures.clone(), served.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let r = p
                    .chat(json!({"model": "m", "messages": user(&format!("load {t} {i}"))}))
                    .await;
                if r.status() != 200 {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                served.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        }));
    }
    let published = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || {
            cli(
                &["publish", strict, "--reason", "tighten for the test"],
                &cfg,
            )
        }
    })
    .await
    .unwrap();
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let version = String::from_utf8_lossy(&published.stdout)
        .trim()
        .to_string();
    assert_eq!(version.len(), 64);
    let activated = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        let v = version.clone();
        move || cli(&["activate", &v], &cfg)
    })
    .await
    .unwrap();
    assert!(
        activated.status.success(),
        "{}",
        String::from_utf8_lossy(&activated.stderr)
    );
    // Picked up by the running server at its next policy refresh (every 250 ms): polled
    // against a generous deadline, no elapsed time asserted.
    let mut switched = false;
    for _ in 0..300 {
        let r = p
            .chat(json!({"model": "m", "messages": user("say the forbidden phrase")}))
            .await;
        if r.headers()["x-keel-decision"] == "block" {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(switched, "the new version never took effect");
    // Keep the load running across the switch: wait until it has served 20 more requests.
    let at_switch = served.load(Ordering::SeqCst);
    for _ in 0..600 {
        if served.load(Ordering::SeqCst) >= at_switch + 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        served.load(Ordering::SeqCst) >= at_switch + 20,
        "load ran after the switch"
    );
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    assert!(served.load(Ordering::SeqCst) > 20, "load ran");
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "no request failed during the switch"
    );
    let (_, page) = p.api("/api/interactions?limit=1").await;
    assert_eq!(page["data"][0]["policy_version"], version.as_str());

    let list = tokio::task::spawn_blocking(move || cli(&["list"], &cfg))
        .await
        .unwrap();
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(
        listing.contains(&version) && listing.contains("tighten for the test"),
        "{listing}"
    );
}

#[tokio::test]
async fn the_policies_api_publishes_and_activates_per_tenant() {
    let p = Pair::start(Script::new()).await;
    let admin = p.gw.key("acme", "admin", Some("ada")).await;
    let files = json!({"policy.yaml": std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/policies/strict/policy.yaml")).unwrap()});
    let r = client()
        .post(p.url("/api/policies"))
        .bearer_auth(&p.reviewer)
        .json(&json!({"files": files, "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client()
        .post(p.url("/api/policies"))
        .bearer_auth(&admin)
        .json(&json!({"files": {"policy.yaml": "name: x\nrules: ["}, "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "an invalid bundle is refused whole");
    let r = client()
        .post(p.url("/api/policies"))
        .bearer_auth(&admin)
        .json(&json!({"files": files, "reason": "api publish"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let version = v["version"].as_str().unwrap().to_string();
    let r = client()
        .post(p.url("/api/policies/nope/activate"))
        .bearer_auth(&admin)
        .json(&json!({"tenant": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client()
        .post(p.url(&format!("/api/policies/{version}/activate")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "a tenant admin cannot activate for every tenant"
    );
    let r = client()
        .post(p.url(&format!("/api/policies/{version}/activate")))
        .bearer_auth(&admin)
        .json(&json!({"tenant": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let resp = p
        .chat(json!({"model": "m", "messages": user("the forbidden phrase")}))
        .await;
    assert_eq!(resp.headers()["x-keel-decision"], "block");
    let (_, listing) = get_json(&p.url("/api/policies"), &admin).await;
    assert_eq!(listing["serving_your_tenant"], version.as_str());
}

#[test]
fn lint_and_test_name_what_is_wrong() {
    let broken = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/policies/broken");
    let o = keel_bin()
        .args(["policy", "lint", broken])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("policy.yaml:4") && out.contains("bad-cel"),
        "{out}"
    );
    let o = keel_bin()
        .args(["policy", "test", broken])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let o = keel_bin()
        .args([
            "policy",
            "test",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies/default"),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = keel_bin()
        .args([
            "policy",
            "diff",
            concat!(env!("CARGO_MANIFEST_DIR"), "/policies/default"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/policies/strict"),
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("banned-phrase"));
}
