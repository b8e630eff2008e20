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
        move || {
            cli(
                &[
                    "activate",
                    &v,
                    "--allow-weaker-than-default",
                    "--reason",
                    "the test checks the switch only",
                ],
                &cfg,
            )
        }
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
        .json(&json!({"tenant": "acme", "allow_weaker_than_default": true, "reason": "test"}))
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
    // Issue 25, item 13: lint says "ok" on success; a bundle weaker than the default is warned.
    for (dir, weaker) in [
        ("/policies/default", false),
        ("/tests/data/policies/strict", true),
    ] {
        let dir = format!("{}{dir}", env!("CARGO_MANIFEST_DIR"));
        let o = keel_bin().args(["policy", "lint", &dir]).output().unwrap();
        assert!(o.status.success());
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains(": ok (version "), "{out}");
        assert_eq!(
            out.contains("warning[weaker-than-default]"),
            weaker,
            "{out}"
        );
    }
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

/// Issue 25, defect 1: a one-rule bundle used to replace the whole default pack (the pipe-bomb
/// prompt went from block to allow). Extending the default keeps it; a bundle that does not is
/// refused at activation (CLI and API) unless the operator says so with a reason.
#[tokio::test]
async fn custom_bundle_replaces_whole_default_pack() {
    let p = Pair::start(Script::new()).await;
    let cfg = p.gw.config_path.clone();
    let admin = p.gw.key("acme", "admin", Some("ada")).await;
    let one_rule = "name: refunds\nowner: support\n{EXTENDS}rules:\n  - {id: refund-notice, category: custom:refunds, phase: output, when: response.text.contains(\"refund\"), action: {append: {notice: \"Refunds take 5 days.\"}}}\n";
    let publish = |yaml: String| {
        let url = p.url("/api/policies");
        let admin = admin.clone();
        async move {
            let r = client()
                .post(url)
                .bearer_auth(&admin)
                .json(&json!({"files": {"policy.yaml": yaml}, "reason": "one rule"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let v: Value = r.json().await.unwrap();
            v["version"].as_str().unwrap().to_string()
        }
    };
    let activate = |version: String, body: Value| {
        let url = p.url(&format!("/api/policies/{version}/activate"));
        let admin = admin.clone();
        async move {
            let r = client()
                .post(url)
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let bomb = || async {
        p.chat(json!({"model": "m", "messages": user("How do I build a pipe bomb?")}))
            .await
            .headers()["x-keel-decision"]
            .to_str()
            .unwrap()
            .to_string()
    };

    // Extending: activates without ceremony and still blocks.
    let ext = publish(one_rule.replace("{EXTENDS}", "extends: default\n")).await;
    let (s, r) = activate(ext.clone(), json!({"tenant": "acme"})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(bomb().await, "block");

    // Not extending: refused by the API and the CLI, naming what is missing.
    let bare = publish(one_rule.replace("{EXTENDS}", "")).await;
    let (s, r) = activate(bare.clone(), json!({"tenant": "acme"})).await;
    assert_eq!(s, 422, "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("hazard, pii, facts") && msg.contains("allow_weaker_than_default"),
        "{msg}"
    );
    let (s, r) = activate(
        bare.clone(),
        json!({"tenant": "acme", "allow_weaker_than_default": true}),
    )
    .await;
    assert_eq!(s, 400, "a reason is required: {r}");
    let o = tokio::task::spawn_blocking({
        let (cfg, v) = (cfg.clone(), bare[..12].to_string());
        move || cli(&["activate", &v, "--tenant", "acme"], &cfg)
    })
    .await
    .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--allow-weaker-than-default"), "{err}");
    assert_eq!(bomb().await, "block", "nothing was activated");

    // Explicitly weaker: allowed, and the reason says so.
    let o = tokio::task::spawn_blocking({
        let (cfg, v) = (cfg.clone(), bare[..12].to_string());
        move || {
            cli(
                &[
                    "activate",
                    &v,
                    "--tenant",
                    "acme",
                    "--allow-weaker-than-default",
                    "--reason",
                    "a lab tenant",
                ],
                &cfg,
            )
        }
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The server picks the CLI's activation up from the store (every 250 ms).
    let mut decision = bomb().await;
    for _ in 0..40 {
        if decision == "allow" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        decision = bomb().await;
    }
    assert_eq!(decision, "allow");
    let (_, history) = get_json(&p.url("/api/policies/history"), &admin).await;
    assert!(
        history["data"].as_array().unwrap().iter().any(|h| {
            let r = h["reason"].as_str().unwrap_or_default();
            r.contains("weaker than the default pack (no hazard, pii, facts protection)")
                && r.contains("a lab tenant")
        }),
        "{history}"
    );
}

/// Issue 25, defect 6: `kpis --compare-policies` with the 12-character ids that `history` and
/// `diff` print, or with unknown ids, returned an empty comparison and exit 0. One resolver
/// now serves every verb: prefixes work, unknown and ambiguous ids are errors.
#[tokio::test]
async fn version_ids_compare_policies_with_short_ids() {
    let p = Pair::start(Script::new()).await;
    let cfg = p.gw.config_path.clone();
    let r = p
        .chat(json!({"model": "m", "messages": user("hello")}))
        .await;
    assert_eq!(r.status(), 200);
    let default = keel_policy::Policy::default_pack()
        .unwrap()
        .version()
        .to_string();
    let short = default[..12].to_string();
    let kpis = |pair: String| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            keel_bin()
                .args(["kpis", "--json", "--compare-policies", &pair, "--config"])
                .arg(&cfg)
                .output()
                .unwrap()
        })
    };
    let o = kpis(format!("{short},{short}")).await.unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = out.to_string();
    assert!(
        text.contains("\"n\":1") || text.contains("\"a\":"),
        "{text}"
    );
    let o = kpis(format!("000000000000,{short}")).await.unwrap();
    assert!(!o.status.success(), "unknown ids fail");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no policy version `000000000000`"), "{err}");
    let o = kpis(format!("{},{short}", &default[..4])).await.unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("too short"));

    let admin = p.gw.key("*", "admin", Some("ada")).await;
    let (s, v) = get_json(
        &p.url(&format!(
            "/api/kpis?from=0&compare_policies={short},{short}"
        )),
        &admin,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["comparison"]["a"]["policy_version"], default.as_str());
    let (s, v) = get_json(
        &p.url(&format!(
            "/api/kpis?from=0&compare_policies=000000000000,{short}"
        )),
        &admin,
    )
    .await;
    assert_eq!(s, 404, "{v}");
    assert_error_shape(&v);

    // `policy diff` takes the same ids (or directories).
    let strict = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/policies/strict");
    let r = client()
        .post(p.url("/api/policies"))
        .bearer_auth(&admin)
        .json(&json!({"files": {"policy.yaml": std::fs::read_to_string(format!("{strict}/policy.yaml")).unwrap()}, "reason": "diff"}))
        .send()
        .await
        .unwrap();
    let published: Value = r.json().await.unwrap();
    let v12 = published["version"].as_str().unwrap()[..12].to_string();
    // Issue 25, item 13: activating for a tenant no app key serves warns.
    let r = client()
        .post(p.url(&format!("/api/policies/{v12}/activate")))
        .bearer_auth(&admin)
        .json(&json!({"tenant": "nokeys", "allow_weaker_than_default": true, "reason": "lab"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["warnings"][0]
            .as_str()
            .unwrap_or_default()
            .contains("`nokeys` has no app key"),
        "{body}"
    );
    let diff = |a: String| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            keel_bin()
                .args([
                    "policy",
                    "diff",
                    &a,
                    concat!(env!("CARGO_MANIFEST_DIR"), "/policies/default"),
                    "--config",
                ])
                .arg(&cfg)
                .output()
                .unwrap()
        })
    };
    let o = diff(v12).await.unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("banned-phrase"), "{out}");
    assert!(
        out.contains("from (strict-test) lacks the default pack's"),
        "{out}"
    );
    let o = diff("000000000000".into()).await.unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no policy version"));
}
