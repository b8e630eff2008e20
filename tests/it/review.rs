//! Human in the loop over HTTP: feedback and handoffs (idempotent, 404/400/403), the review
//! queue (sources, priority, roles, tenants, leases on a manual clock), KPIs on known data, and
//! the dataset exports checked line by line against their formats.

use std::sync::Arc;

use keel_core::clock::ManualClock;
use keel_core::Clock;
use keel_loop::review::dataset::{check_dpo_line, check_sft_line};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::*;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

async fn post(url: &str, key: &str, body: Value, idem: Option<&str>) -> (u16, Value, bool) {
    let mut req = client().post(url).bearer_auth(key).json(&body);
    if let Some(k) = idem {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let replayed = resp.headers().contains_key("idempotent-replayed");
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, replayed)
}

/// Sends a chat as the app and returns the interaction id.
async fn chat(p: &Pair, text: &str, meta: Value) -> String {
    let resp = p
        .chat(json!({"model": "m", "messages": user(text), "metadata": meta}))
        .await;
    assert_eq!(resp.status(), 200);
    resp.headers()["x-keel-interaction-id"]
        .to_str()
        .unwrap()
        .to_string()
}

/// Publishes and activates the escalating test policy for acme.
async fn activate_escalating(p: &Pair) {
    let admin = p.gw.key("acme", "admin", Some("ada")).await;
    let files = json!({"policy.yaml": std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/policies/escalating/policy.yaml")).unwrap()});
    let (s, v, _) = post(
        &p.url("/api/policies"),
        &p.reviewer,
        json!({"files": files, "reason": "x"}),
        None,
    )
    .await;
    assert_eq!(s, 403, "a reviewer cannot publish policy: {v}");
    let (s, v, _) = post(
        &p.url("/api/policies"),
        &admin,
        json!({"files": files, "reason": "review tests"}),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let version = v["version"].as_str().unwrap();
    let (s, v, _) = post(
        &p.url(&format!("/api/policies/{version}/activate")),
        &admin,
        json!({"tenant": "acme", "allow_weaker_than_default": true, "reason": "review tests need only their rules"}),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

async fn count(p: &Pair, kind: &str) -> usize {
    p.gw.store
        .events_in_range(&[kind], None, 0, i64::MAX)
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn feedback_is_idempotent_validated_and_tenant_scoped() {
    let p = Pair::start(Script::new()).await;
    let ix = chat(
        &p,
        "hello",
        json!({"conversation_id": "conv-1", "locale": "en"}),
    )
    .await;
    let fb = p.url("/v1/feedback");
    let body = json!({"interaction_id": ix, "csat": 4, "thumbs": "up", "comment": "nice"});
    let (s, first, replayed) = post(&fb, &p.app, body.clone(), Some("k-1")).await;
    assert_eq!(s, 201, "{first}");
    assert!(!replayed);
    assert!(first["id"].as_str().unwrap().starts_with("fb_"));
    let (s, again, replayed) = post(&fb, &p.app, body.clone(), Some("k-1")).await;
    assert_eq!(s, 201);
    assert!(
        replayed,
        "a retry with the same key is answered from the first"
    );
    assert_eq!(again["id"], first["id"]);
    let (s, v, _) = post(
        &fb,
        &p.app,
        json!({"interaction_id": ix, "csat": 1}),
        Some("k-1"),
    )
    .await;
    assert_eq!(s, 409, "the same key with another body: {v}");
    assert_error_shape(&v);
    // Concurrent retries with a fresh key still record one event.
    let futs: Vec<_> = (0..5)
        .map(|_| post(&fb, &p.app, body.clone(), Some("k-2")))
        .collect();
    let ids: std::collections::HashSet<String> = futures::future::join_all(futs)
        .await
        .into_iter()
        .map(|(s, v, _)| {
            assert_eq!(s, 201, "{v}");
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(count(&p, "FeedbackReceived").await, 2);

    // By conversation: the conversation's latest interaction.
    let (s, v, _) = post(
        &fb,
        &p.app,
        json!({"conversation_id": "conv-1", "wrong_answer": true, "correct_answer": "42"}),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["interaction_id"], ix.as_str());
    let item = v["review_item"].as_str().unwrap().to_string();
    // Read after write: the report's review item is there as soon as the request returned.
    let (s, q) = p.api("/api/reviews?source=user_report").await;
    assert_eq!(s, 200);
    assert_eq!(q["data"][0]["id"], item.as_str(), "{q}");
    assert_eq!(q["data"][0]["severity"], "high");

    // Unknown ids are 404 whatever their format; invalid values 400; wrong role 403.
    for bad_id in ["ix_00000000000000000000000000", "not an id ✓", ""] {
        let (s, v, _) = post(
            &fb,
            &p.app,
            json!({"interaction_id": bad_id, "csat": 3}),
            None,
        )
        .await;
        assert_eq!(s, 404, "{bad_id}: {v}");
        assert_error_shape(&v);
    }
    let (s, _, _) = post(
        &fb,
        &p.app,
        json!({"conversation_id": "nope", "csat": 3}),
        None,
    )
    .await;
    assert_eq!(s, 404);
    for bad in [
        json!({"interaction_id": ix, "csat": 9}),
        json!({"interaction_id": ix, "thumbs": "sideways"}),
        json!({"interaction_id": ix, "wrong_answer": "yes"}),
        json!({"interaction_id": ix}),
        json!({"csat": 3}),
        json!({"interaction_id": ix, "csat": 3, "bogus": true}),
    ] {
        let (s, v, _) = post(&fb, &p.app, bad.clone(), None).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert_eq!(assert_error_shape(&v)["code"], "invalid_request");
    }
    let (s, _, _) = post(&fb, &p.reviewer, body.clone(), None).await;
    assert_eq!(s, 403, "a reviewer key cannot send feedback");
    let other_app = p.gw.key("globex", "app", Some("globex-app")).await;
    let (s, _, _) = post(&fb, &other_app, body.clone(), None).await;
    assert_eq!(s, 404, "another tenant's interaction is a 404");

    // Handoffs.
    let ho = p.url("/v1/handoffs");
    let (s, v, _) = post(
        &ho,
        &p.app,
        json!({"conversation_id": "conv-1", "event": "requested", "at": "2026-01-01T00:00:00Z"}),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["object"], "handoff");
    let (s, _, _) = post(
        &ho,
        &p.app,
        json!({"conversation_id": "conv-1", "event": "human_joined", "at": T0 + 90_000}),
        Some("h-1"),
    )
    .await;
    assert_eq!(s, 201);
    let (_, _, replayed) = post(
        &ho,
        &p.app,
        json!({"conversation_id": "conv-1", "event": "human_joined", "at": T0 + 90_000}),
        Some("h-1"),
    )
    .await;
    assert!(replayed);
    assert_eq!(count(&p, "HandoffRecorded").await, 2);
    for (bad, want) in [
        (
            json!({"conversation_id": "conv-1", "event": "teleported"}),
            400,
        ),
        (
            json!({"conversation_id": "conv-1", "event": "resolved", "at": "later"}),
            400,
        ),
        (json!({"event": "resolved"}), 400),
        (
            json!({"conversation_id": "conv-404", "event": "resolved"}),
            404,
        ),
    ] {
        let (s, v, _) = post(&ho, &p.app, bad.clone(), None).await;
        assert_eq!(s, want, "{bad}: {v}");
        assert_error_shape(&v);
    }
    let (s, _, _) = post(
        &ho,
        &other_app,
        json!({"conversation_id": "conv-1", "event": "resolved"}),
        None,
    )
    .await;
    assert_eq!(s, 404, "another tenant's conversation is a 404");
}

#[tokio::test]
async fn the_review_queue_has_roles_tenants_priority_and_expiring_leases() {
    let clock = Arc::new(ManualClock::new(T0));
    let mock = MockUpstream::start(Script::new()).await.unwrap();
    let opts = GatewayOptions::with_upstream(&mock.base_url());
    let gw = TestGateway::start_with_clock(opts, clock.clone() as Arc<dyn Clock>).await;
    let app = gw.key("acme", "app", Some("acme-app")).await;
    let rita = gw.key("acme", "reviewer", Some("rita")).await;
    let p = Pair {
        mock,
        gw,
        app,
        reviewer: rita.clone(),
    };
    let bob = p.gw.key("acme", "reviewer", Some("bob")).await;
    let eve = p.gw.key("globex", "reviewer", Some("eve")).await;
    activate_escalating(&p).await;

    let plain = chat(&p, "hello", json!({"conversation_id": "c-2"})).await;
    let (s, _, _) = post(
        &p.url("/v1/feedback"),
        &p.app,
        json!({"interaction_id": plain, "thumbs": "down"}),
        None,
    )
    .await;
    assert_eq!(s, 201);
    clock.advance_ms(1_000);
    let resp = p
        .chat(json!({"model": "m", "messages": user("I want a refund"), "metadata": {"conversation_id": "c-1", "locale": "en"}}))
        .await;
    assert_eq!(resp.headers()["x-keel-decision"], "escalate");
    let escalated = resp.headers()["x-keel-interaction-id"]
        .to_str()
        .unwrap()
        .to_string();

    // Read after write, priority: the high-severity escalation before the older thumbs-down.
    let (s, q) = p.api("/api/reviews?status=open").await;
    assert_eq!(s, 200, "{q}");
    let data = q["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{q}");
    assert_eq!(data[0]["source"], "escalation");
    assert_eq!(data[0]["severity"], "high");
    assert_eq!(data[0]["interaction_id"], escalated.as_str());
    assert_eq!(data[0]["reason"], "refund-human");
    assert_eq!(data[1]["source"], "user_report");
    let id = data[0]["id"].as_str().unwrap().to_string();

    // Paging keeps queue order: one item per page, then the end.
    let (s, page1) = p.api("/api/reviews?status=open&limit=1").await;
    assert_eq!(s, 200, "{page1}");
    assert_eq!(page1["data"][0]["id"], id.as_str());
    let cursor = page1["next_cursor"].as_str().unwrap().to_string();
    let (_, page2) = p
        .api(&format!("/api/reviews?status=open&limit=1&cursor={cursor}"))
        .await;
    assert_eq!(page2["data"][0]["source"], "user_report", "{page2}");
    let cursor = page2["next_cursor"].as_str().unwrap().to_string();
    let (_, page3) = p
        .api(&format!("/api/reviews?status=open&limit=1&cursor={cursor}"))
        .await;
    assert_eq!(page3["data"].as_array().unwrap().len(), 0, "{page3}");
    assert!(page3["next_cursor"].is_null(), "{page3}");
    let (s, v) = p.api("/api/reviews?cursor=rv_nope").await;
    assert_eq!(s, 400, "an unknown cursor: {v}");
    let (s, v) = get_json(&p.url(&format!("/api/reviews?cursor={id}")), &eve).await;
    assert_eq!(s, 400, "another tenant's item is no cursor: {v}");

    // Roles and tenants.
    let (s, v) = get_json(&p.url("/api/reviews"), &p.app).await;
    assert_eq!(s, 403, "an app key cannot read reviews: {v}");
    let (s, _) = get_json(&p.url(&format!("/api/reviews/{id}")), &eve).await;
    assert_eq!(s, 404, "another tenant's item is a 404");
    let (s, v) = get_json(&p.url("/api/reviews"), &eve).await;
    assert_eq!((s, v["data"].as_array().unwrap().len()), (200, 0));
    let (s, _, _) = post(
        &p.url(&format!("/api/reviews/{id}/claim")),
        &eve,
        json!({}),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _, _) = post(&p.url("/api/reviews/rv_nope/claim"), &rita, json!({}), None).await;
    assert_eq!(s, 404);
    let (s, _) = get_json(&p.url("/api/reviews?status=weird"), &rita).await;
    assert_eq!(s, 400);

    // Claims are leases on the injected clock.
    let claim = p.url(&format!("/api/reviews/{id}/claim"));
    let label = p.url(&format!("/api/reviews/{id}/label"));
    let (s, v, _) = post(&claim, &rita, json!({}), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "claimed");
    assert!(v["claimed_by"].as_str().unwrap().starts_with("rita"));
    let (s, v, _) = post(&claim, &bob, json!({}), None).await;
    assert_eq!(s, 409, "{v}");
    let (s, _, _) = post(&label, &bob, json!({"verdict": "ok"}), None).await;
    assert_eq!(s, 409, "labelling needs the claim");
    clock.advance_ms(15 * 60 * 1000); // the default lease
    let (_, q) = p.api("/api/reviews?status=open&source=escalation").await;
    assert_eq!(
        q["data"][0]["id"],
        id.as_str(),
        "an abandoned item returns: {q}"
    );
    let (s, v, _) = post(&label, &rita, json!({"verdict": "ok"}), None).await;
    assert_eq!(s, 409, "an expired claim cannot label: {v}");
    let (s, v, _) = post(&claim, &bob, json!({}), None).await;
    assert_eq!(s, 200, "{v}");
    for bad in [
        json!({"verdict": "violation"}),
        json!({"verdict": "meh"}),
        json!({"verdict": "ok", "suggestion": {"kind": "teleport"}}),
    ] {
        let (s, v, _) = post(&label, &bob, bad.clone(), None).await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    let (s, v, _) = post(
        &label,
        &bob,
        json!({"verdict": "wrong_answer", "corrected_response": "Refunds take 5 days; write to help@acme.test.",
               "notes": "policy changed", "suggestion": {"kind": "fact_update", "fact": "refund_days", "value": 5,
               "effective_from": "2026-01-01", "scope": {"tenants": ["acme"], "locales": ["en"]}}}),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["item"]["status"], "done");
    assert_eq!(v["label"]["reviewer"], "bob");
    let (s, _, _) = post(&claim, &rita, json!({}), None).await;
    assert_eq!(s, 409, "a done item cannot be claimed");
    let (s, one) = p.api(&format!("/api/reviews/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(one["label_events"][0]["verdict"], "wrong_answer");
    assert!(one["label_events"][0]["actor"]
        .as_str()
        .unwrap()
        .starts_with("bob ("));
    // Every action is an event with the reviewer's name.
    let claims =
        p.gw.store
            .events_in_range(&["ReviewClaimed"], Some("acme"), 0, i64::MAX)
            .await
            .unwrap();
    let names: Vec<&str> = claims
        .iter()
        .map(|e| e.payload["reviewer"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rita", "bob"]);
}

#[tokio::test]
async fn the_audit_sample_rate_is_configurable_per_segment() {
    let p = Pair::start_with(Script::new(), |o| {
        o.extra_toml =
            "[review]\nsample_rate = 0.0\n[[review.sample]]\nlocale = \"ja\"\nrate = 1.0\n".into();
    })
    .await;
    let ja = chat(&p, "こんにちは", json!({"locale": "ja-JP"})).await;
    chat(&p, "hello", json!({"locale": "en"})).await;
    let (_, q) = p.api("/api/reviews?source=audit_sample").await;
    let data = q["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{q}");
    assert_eq!(data[0]["interaction_id"], ja.as_str());
    assert_eq!(data[0]["severity"], "low");
}

#[tokio::test]
async fn kpis_and_exports_from_a_test_run() {
    let clock = Arc::new(ManualClock::new(T0));
    let mock =
        MockUpstream::start(Script::new().default_reply(Reply::text("Refunds take 30 days.")))
            .await
            .unwrap();
    let opts = GatewayOptions::with_upstream(&mock.base_url());
    let gw = TestGateway::start_with_clock(opts, clock.clone() as Arc<dyn Clock>).await;
    let app = gw.key("acme", "app", Some("acme-app")).await;
    let rita = gw.key("acme", "reviewer", Some("rita")).await;
    let p = Pair {
        mock,
        gw,
        app,
        reviewer: rita.clone(),
    };
    activate_escalating(&p).await;
    // 10 interactions: 2 escalated; CSAT 5, 4, 4, 2; one wrong-answer report (twice).
    let mut ids = Vec::new();
    for i in 0..10 {
        let text = if i < 2 {
            format!("refund please, I am bob{i}@example.com")
        } else {
            format!("how long do refunds take? ({i})").replace("refund", "return")
        };
        ids.push(
            chat(
                &p,
                &text,
                json!({"conversation_id": format!("c{i}"), "locale": "en"}),
            )
            .await,
        );
        clock.advance_ms(1_000);
    }
    for (i, c) in [5, 4, 4, 2].iter().enumerate() {
        let (s, _, _) = post(
            &p.url("/v1/feedback"),
            &p.app,
            json!({"interaction_id": ids[i + 2], "csat": c}),
            None,
        )
        .await;
        assert_eq!(s, 201);
    }
    for _ in 0..2 {
        post(
            &p.url("/v1/feedback"),
            &p.app,
            json!({"interaction_id": ids[2], "wrong_answer": true}),
            None,
        )
        .await;
    }
    for (conv, req, joined) in [("c0", 0, 60_000), ("c1", 10_000, 130_000)] {
        post(
            &p.url("/v1/handoffs"),
            &p.app,
            json!({"conversation_id": conv, "event": "requested", "at": T0 + req}),
            None,
        )
        .await;
        post(
            &p.url("/v1/handoffs"),
            &p.app,
            json!({"conversation_id": conv, "event": "human_joined", "at": T0 + joined}),
            None,
        )
        .await;
    }
    // Review both escalations with corrections (one with an e-mail address to redact).
    let (_, q) = p.api("/api/reviews?source=escalation").await;
    let items: Vec<String> = q["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(items.len(), 2, "{q}");
    for (n, item) in items.iter().enumerate() {
        let (s, _, _) = post(
            &p.url(&format!("/api/reviews/{item}/claim")),
            &rita,
            json!({}),
            None,
        )
        .await;
        assert_eq!(s, 200);
        let body = if n == 0 {
            json!({"verdict": "wrong_answer", "corrected_response": "Refunds take 5 days; mail help@acme.com."})
        } else {
            json!({"verdict": {"violation": {"category": "custom:refunds"}}, "corrected_response": "A person will call you today."})
        };
        let (s, v, _) = post(
            &p.url(&format!("/api/reviews/{item}/label")),
            &rita,
            body,
            None,
        )
        .await;
        assert_eq!(s, 201, "{v}");
    }
    clock.advance_ms(60_000);

    // The API on known data.
    let (s, k) = p
        .api(&format!(
            "/api/kpis?from={}&to={}&group_by=locale",
            T0 - 1,
            T0 + 86_400_000
        ))
        .await;
    assert_eq!(s, 200, "{k}");
    let r = &k["data"][0];
    assert_eq!(r["group"]["locale"], "en");
    assert_eq!(r["interactions"], 10);
    assert_eq!(r["csat"]["n"], 4);
    assert_eq!(r["csat"]["mean"], 3.75);
    assert_eq!(r["csat"]["distribution"], json!([0, 1, 0, 2, 1]));
    assert_eq!(r["wrong_answer_reports"]["count"], 1);
    assert_eq!(r["escalations"]["count"], 2);
    let ci = r["escalations"]["ci95"].as_array().unwrap();
    assert!((ci[0].as_f64().unwrap() - 0.0567).abs() < 1e-3, "{ci:?}");
    assert!((ci[1].as_f64().unwrap() - 0.5098).abs() < 1e-3, "{ci:?}");
    // Refund requests escalated at input: interventions, not the model's violations.
    assert_eq!(r["interventions"]["custom:refunds"]["count"], 2);
    assert!(r["violations"].get("custom:refunds").is_none(), "{r}");
    assert_eq!(r["wrong_answer_reviews"]["count"], 1);
    assert_eq!(r["wrong_answer_reviews"]["n"], 2);
    assert_eq!(r["review_violations"]["custom:refunds"]["count"], 1);
    assert_eq!(r["time_to_human"]["n"], 2);
    assert_eq!(r["time_to_human"]["mean_ms"], 90_000.0);
    assert_eq!(r["time_to_human"]["p90_ms"], 120_000.0);
    assert_eq!(r["reviews"]["created"], 3, "2 escalations + 1 report");
    assert_eq!(r["reviews"]["completed"], 2);
    assert_eq!(r["reviews"]["backlog"], 1);
    let (s, _) = p.api("/api/kpis?bucket=fortnight").await;
    assert_eq!(s, 400);
    let (s, _) = p.api("/api/kpis?group_by=planet").await;
    assert_eq!(s, 400);
    let (s, _) = get_json(&p.url("/api/kpis"), &p.app).await;
    assert_eq!(s, 403);
    let (s, c) = p
        .api(&format!(
            "/api/kpis?from={}&to={}&compare_from={}&compare_to={}",
            T0,
            T0 + 5_000,
            T0 + 5_000,
            T0 + 86_400_000
        ))
        .await;
    assert_eq!(s, 200, "{c}");
    assert!(
        c["comparison"]["diff"]["escalations"]["ci95"].is_array(),
        "{c}"
    );

    let range = format!("from={}&to={}", T0 - 1, T0 + 86_400_000);
    let (_, byv) = p
        .api(&format!("/api/kpis?{range}&group_by=policy_version"))
        .await;
    let v = byv["data"][0]["group"]["policy_version"]
        .as_str()
        .unwrap()
        .to_string();
    // Unknown ids are errors now (issue 25, defect 6), not an empty side.
    let (s, c) = p
        .api(&format!("/api/kpis?{range}&compare_policies={v},unknown"))
        .await;
    assert_eq!(s, 404, "{c}");
    assert_error_shape(&c);
    let (s, c) = p
        .api(&format!(
            "/api/kpis?{range}&compare_policies={v},{}",
            &v[..12]
        ))
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["comparison"]["diff"]["escalations"]["a"], 0.2, "{c}");
    assert_eq!(c["comparison"]["diff"]["escalations"]["b"], 0.2, "{c}");

    // The CLI: the table and the exports.
    let cfg = p.gw.config_path.to_str().unwrap().to_string();
    let out = keel(vec![
        "kpis".into(),
        "--config".into(),
        cfg.clone(),
        "--from".into(),
        T0.to_string(),
        "--to".into(),
        (T0 + 86_400_000).to_string(),
        "--group-by".into(),
        "locale".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    println!("{table}");
    assert!(
        table.starts_with("BUCKET\tGROUP\tINTERACTIONS\tCSAT_MEAN"),
        "{table}"
    );
    assert!(
        table.contains("locale=en\t10\t3.75\t0/1/0/2/1\t10.0% [1.8-40.4] (1/10)"),
        "{table}"
    );
    let out = keel(vec![
        "kpis".into(),
        "--config".into(),
        cfg.clone(),
        "--from".into(),
        T0.to_string(),
        "--to".into(),
        (T0 + 5_000).to_string(),
        "--compare-from".into(),
        (T0 + 5_000).to_string(),
        "--compare-to".into(),
        (T0 + 86_400_000).to_string(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cmp = String::from_utf8(out.stdout).unwrap();
    println!("{cmp}");
    assert!(
        cmp.contains("COMPARISON (a − b)")
            && cmp.contains("\nescalations\t0.4000\t0.0000\t0.4000\t["),
        "{cmp}"
    );
    let dir = tempfile::tempdir().unwrap();
    for format in ["sft", "dpo"] {
        let file = dir.path().join(format!("{format}.jsonl"));
        let out = keel(vec![
            "export".into(),
            format.into(),
            "--config".into(),
            cfg.clone(),
            "--out".into(),
            file.to_str().unwrap().into(),
        ])
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        for l in &lines {
            match format {
                "sft" => check_sft_line(l).unwrap(),
                _ => check_dpo_line(l).unwrap(),
            }
        }
        assert!(
            !text.contains("@example.com") && !text.contains("help@acme.com"),
            "PII left: {text}"
        );
        assert!(
            text.contains("[REDACTED]") || text.contains("[EMAIL]"),
            "{text}"
        );
        if format == "sft" {
            assert_eq!(
                lines[0]["messages"].as_array().unwrap().last().unwrap()["role"],
                "assistant"
            );
        } else {
            assert_eq!(lines[0]["chosen"][0]["role"], "assistant");
            assert_ne!(lines[0]["chosen"], lines[0]["rejected"]);
        }
        let sha = hex_sha(text.as_bytes());
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(stdout.starts_with(&sha), "{stdout}");
        let ev =
            p.gw.store
                .events_in_range(&["DatasetExported"], None, 0, i64::MAX)
                .await
                .unwrap();
        let last = ev.last().unwrap();
        assert_eq!(last.payload["sha256"], sha.as_str());
        assert_eq!(last.payload["format"], format);
        assert_eq!(last.payload["lines"], 2);
    }
    let file = dir.path().join("none.jsonl");
    let out = keel(vec![
        "export".into(),
        "sft".into(),
        "--config".into(),
        cfg.clone(),
        "--out".into(),
        file.to_str().unwrap().into(),
        "--category".into(),
        "outdated".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "",
        "a filter that matches nothing"
    );
}

/// Runs the `keel` binary off the runtime thread (the in-process gateway keeps running).
async fn keel(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || keel_bin().args(&args).output().unwrap())
        .await
        .unwrap()
}

fn hex_sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn alerts_feed_the_queue_and_k_reviewers_agree_from_the_terminal() {
    let p = Pair::start_with(Script::new(), |o| {
        o.extra_toml = "[review]\nreviewers_per_item = 2\n".into();
    })
    .await;
    let bob = p.gw.key("acme", "reviewer", Some("bob")).await;
    let ix = chat(&p, "hello", json!({"locale": "en"})).await;
    // An alert (as the monitor drafts it) makes its evidence interactions review items.
    p.gw.store
        .append(vec![keel_core::NewEvent {
            kind: "AlertRaised".into(),
            actor: "monitor".into(),
            tenant: "acme".into(),
            at_ms: p.gw.clock.now_ms(),
            payload: json!({"id": "al_1", "metric": "refusal_rate", "segment_key": "tenant=acme",
                            "severity": "critical", "evidence": [ix, "ix_unknown"]}),
        }])
        .await
        .unwrap();
    let (_, q) = p.api("/api/reviews?source=alert").await;
    let data = q["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{q}");
    assert_eq!(data[0]["severity"], "critical");
    let id = data[0]["id"].as_str().unwrap().to_string();

    // Two reviewers per item: the first label leaves it open for someone else.
    let (s, _, _) = post(
        &p.url(&format!("/api/reviews/{id}/claim")),
        &p.reviewer,
        json!({}),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, v, _) = post(
        &p.url(&format!("/api/reviews/{id}/label")),
        &p.reviewer,
        json!({"verdict": "ok"}),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["item"]["status"], "open");
    assert_eq!(v["item"]["labels"], 1);
    let (s, _, _) = post(
        &p.url(&format!("/api/reviews/{id}/claim")),
        &p.reviewer,
        json!({}),
        None,
    )
    .await;
    assert_eq!(s, 409, "the same reviewer cannot label twice");

    // The second reviewer works from the terminal with their key.
    let cfg = p.gw.config_path.to_str().unwrap().to_string();
    let out = keel(vec![
        "review".into(),
        "list".into(),
        "--config".into(),
        cfg.clone(),
        "--status".into(),
        "open".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    let out = keel(vec![
        "review".into(),
        "claim".into(),
        id.clone(),
        "--config".into(),
        cfg.clone(),
        "--key".into(),
        p.app.clone(),
    ])
    .await;
    assert!(!out.status.success(), "an app key cannot review");
    let out = keel(vec![
        "review".into(),
        "claim".into(),
        id.clone(),
        "--config".into(),
        cfg.clone(),
        "--key".into(),
        bob.clone(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = keel(vec![
        "review".into(),
        "label".into(),
        id.clone(),
        "--config".into(),
        cfg.clone(),
        "--key".into(),
        bob.clone(),
        "--verdict".into(),
        "violation".into(),
        "--category".into(),
        "S7".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, one) = p.api(&format!("/api/reviews/{id}")).await;
    assert_eq!(one["status"], "done", "{one}");
    let reviewers: Vec<&str> = one["label_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["reviewer"].as_str().unwrap())
        .collect();
    assert_eq!(reviewers, ["rita", "bob"]);
    let (_, k) = p.api("/api/kpis").await;
    assert_eq!(k["data"][0]["reviews"]["agreement"], 0.0, "{k}");

    // Alerts of one group (one answer cluster) keep ONE review item between them, on the
    // first evidence interaction, whatever the signal.
    let ix2 = chat(&p, "hello again", json!({"locale": "en"})).await;
    for (id, metric) in [("al_2", "low_csat_rate"), ("al_3", "complaint_rate")] {
        p.gw.store
            .append(vec![keel_core::NewEvent {
                kind: "AlertRaised".into(),
                actor: "monitor".into(),
                tenant: "acme".into(),
                at_ms: p.gw.clock.now_ms(),
                payload: json!({"id": id, "metric": metric, "segment_key": "tenant=acme",
                                "severity": "high", "evidence": [ix2, ix], "group": "grp_acme_c1",
                                "slice": {"cluster": "c1", "level": "cluster"}}),
            }])
            .await
            .unwrap();
    }
    let (_, q) = p.api("/api/reviews?source=alert").await;
    let grouped: Vec<&serde_json::Value> = q["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["id"] == "rv_alert_grp_acme_c1")
        .collect();
    assert_eq!(grouped.len(), 1, "{q}");
    assert_eq!(q["data"].as_array().unwrap().len(), 2, "{q}");
}

/// Issue 25, defect 3: `keel review show` and `GET /api/reviews/{id}` left out what the user
/// reported (comment, correct answer, CSAT); both now show the report, the conversation and the
/// decision with its spans.
#[tokio::test]
async fn review_show_omits_the_reporters_comment_correct_answer_and_csat() {
    let p = Pair::start(Script::new().then(Reply::text("Write to jane@example.com"))).await;
    let ix = chat(
        &p,
        "who do I write to?",
        json!({"conversation_id": "conv-r"}),
    )
    .await;
    let report = json!({"interaction_id": ix, "csat": 1, "wrong_answer": true,
        "correct_answer": "support@acme.example", "comment": "that address bounces"});
    let (s, v, _) = post(&p.url("/v1/feedback"), &p.app, report, None).await;
    assert_eq!(s, 201, "{v}");
    let item = v["review_item"].as_str().unwrap().to_string();

    let check = |one: &Value| {
        let r = &one["reports"][0];
        assert_eq!(r["comment"], "that address bounces", "{one}");
        assert_eq!(r["correct_answer"], "support@acme.example");
        assert_eq!(r["csat"], 1);
        assert_eq!(r["wrong_answer"], true);
        let i = &one["interaction"];
        assert_eq!(i["request_messages"][0]["content"], "who do I write to?");
        assert_eq!(i["decision"], "redact");
        assert_eq!(i["response_text"][0], "Write to [EMAIL]");
        assert_eq!(i["upstream_text"][0], "Write to jane@example.com");
        let spans = &i["decision_detail"]["output"][0]["spans"];
        assert_eq!(spans[0]["detector"], "pii", "{i}");
    };
    let (s, one) = p.api(&format!("/api/reviews/{item}")).await;
    assert_eq!(s, 200);
    check(&one);
    let cfg = p.gw.config_path.display().to_string();
    let out = keel(vec![
        "review".into(),
        "show".into(),
        item.clone(),
        "--config".into(),
        cfg,
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    check(&shown);
    assert_eq!(shown["item"]["id"], item.as_str());
}
