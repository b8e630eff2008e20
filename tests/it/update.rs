//! The update pipeline over HTTP: a proposal from a review's suggestion walked to a promoted
//! version through the API alone (two-person rule, backtest, canary, automatic promotion), the
//! deterministic sticky split, a synthetic regression rolled back automatically, a rollout
//! surviving a restart, manual steps and bad input.

use std::sync::Arc;

use keel_core::clock::ManualClock;
use keel_loop::update::rollout::in_canary;
use keel_testkit::gateway::{GatewayOptions, TestGateway};
use keel_testkit::mock::{MockHandle, MockUpstream, Reply, Script};
use serde_json::{json, Value};

use crate::support::*;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// Guards decided on small samples (wide margins), so tests stay fast.
const FAST_GUARDS: &str =
    "[update]\ntwo_person_rule = true\nmin_samples_per_arm = 40\nmin_samples_rollback = 10\n\
[update.guards.violation_rate]\nmargin = 0.2\n[update.guards.wrong_answer_rate]\nmargin = 0.2\n\
[update.guards.csat]\nmargin = 0.2\n[update.guards.escalation_rate]\nmargin = 0.2\n\
[rollouts]\nanalysis_interval_ms = 0\n";

struct Env {
    mock: MockHandle,
    gw: TestGateway,
    clock: Arc<ManualClock>,
    app: String,
    reviewer: String,
    ada: String,
}

async fn env(extra: &str, reply: &str) -> Env {
    let mock = MockUpstream::start(Script::new().default_reply(Reply::text(reply)))
        .await
        .unwrap();
    let mut opts = GatewayOptions::with_upstream(&mock.base_url());
    opts.extra_toml = extra.to_string();
    let clock = Arc::new(ManualClock::new(T0));
    let gw = TestGateway::start_with_clock(opts, clock.clone()).await;
    let app = gw.key("acme", "app", Some("acme-app")).await;
    let reviewer = gw.key("acme", "reviewer", Some("rita")).await;
    let ada = gw.key("*", "admin", Some("ada")).await;
    Env {
        mock,
        gw,
        clock,
        app,
        reviewer,
        ada,
    }
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.url())
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        let r = client()
            .post(self.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        let r = client()
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// A chat in a conversation; returns (interaction id, reply text).
    async fn chat(&self, conv: &str) -> (String, String) {
        let (s, v) = self
            .post(
                "/v1/chat/completions",
                &self.app,
                json!({"model": "m", "messages": user("hi"),
                       "metadata": {"conversation_id": conv, "locale": "en"}}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        (
            v["id"].as_str().unwrap().to_string(),
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    }

    /// A reported reply's review item, labelled by the reviewer with `suggestion`.
    async fn reviewed(&self, conv: &str, suggestion: Value) -> String {
        let (ix, _) = self.chat(conv).await;
        let (s, fb) = self
            .post(
                "/v1/feedback",
                &self.app,
                json!({"interaction_id": ix, "wrong_answer": true}),
            )
            .await;
        assert_eq!(s, 201, "{fb}");
        let item = fb["review_item"].as_str().unwrap().to_string();
        let (s, v) = self
            .post(
                &format!("/api/reviews/{item}/claim"),
                &self.reviewer,
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let (s, v) = self
            .post(
                &format!("/api/reviews/{item}/label"),
                &self.reviewer,
                json!({"verdict": "wrong_answer", "suggestion": suggestion}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        item
    }

    /// 30 chats two simulated minutes apart.
    async fn hour_of_traffic(&self, tag: &str) {
        for i in 0..30 {
            self.chat(&format!("{tag}-{i}")).await;
            self.clock.advance_ms(120_000);
        }
    }

    async fn record(&self, ix: &str) -> Value {
        self.gw.store.interaction(ix).await.unwrap().unwrap().record
    }

    /// Drafts a direct proposal (reviewer) and has ada approve it; returns the version.
    async fn approved(&self, suggestion: Value) -> String {
        let (s, p) = self
            .post(
                "/api/proposals",
                &self.reviewer,
                json!({"suggestion": suggestion, "reason": "test candidate"}),
            )
            .await;
        assert_eq!(s, 201, "{p}");
        let id = p["id"].as_str().unwrap();
        let (s, a) = self
            .post(
                &format!("/api/proposals/{id}/approve"),
                &self.ada,
                json!({"reason": "ok"}),
            )
            .await;
        assert_eq!(s, 200, "{a}");
        a["version"].as_str().unwrap().to_string()
    }

    async fn rollout(&self, version: &str, percent: f64) -> String {
        let (s, r) = self
            .post(
                "/api/rollouts",
                &self.ada,
                json!({"version": version, "percent": percent, "tenant": "acme", "reason": "canary"}),
            )
            .await;
        assert_eq!(s, 201, "{r}");
        assert_eq!(r["state"], "canary");
        r["id"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn a_proposal_from_a_review_walks_to_a_promoted_version_through_the_api() {
    let e = env(FAST_GUARDS, "Our Acme Corp plan costs 10 dollars.").await;
    // 1. An answer is reported wrong; the report lands in the review queue.
    let (ix, text) = e.chat("c-report").await;
    assert_eq!(text, "Our Acme Corp plan costs 10 dollars.");
    let (s, fb) = e
        .post(
            "/v1/feedback",
            &e.app,
            json!({"interaction_id": ix, "wrong_answer": true}),
        )
        .await;
    assert_eq!(s, 201, "{fb}");
    let item = fb["review_item"].as_str().unwrap().to_string();
    // 2. A reviewer claims it and labels it with a structured suggestion.
    let (s, v) = e
        .post(
            &format!("/api/reviews/{item}/claim"),
            &e.reviewer,
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = e
        .post(
            &format!("/api/reviews/{item}/label"),
            &e.reviewer,
            json!({"verdict": "wrong_answer", "notes": "the brand is ACME",
                   "suggestion": {"kind": "rewrite", "from": "Acme Corp", "to": "ACME"}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    // 3. The reviewer drafts a proposal from the review.
    let (s, p) = e
        .post("/api/proposals", &e.reviewer, json!({"from_review": item}))
        .await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["status"], "pending");
    assert_eq!(p["kind"], "policy");
    assert_eq!(p["author_name"], "rita");
    assert_eq!(p["source"]["review"], item.as_str());
    assert_eq!(
        p["suggestion"]["scope"],
        json!({"tenants": ["acme"], "locales": ["en"]}),
        "an unscoped suggestion is scoped to the reviewed segment"
    );
    assert!(p["base_version"].is_null(), "base: the default pack");
    assert!(
        p["diff"].as_str().unwrap().contains("+  - id: proposal-"),
        "{p}"
    );
    let pid = p["id"].as_str().unwrap().to_string();
    let candidate = p["candidate_version"].as_str().unwrap().to_string();
    let (s, list) = e.get("/api/proposals?status=pending", &e.ada).await;
    assert_eq!(s, 200);
    assert_eq!(list["data"][0]["id"], pid.as_str());
    // 4. Backtest on the recorded traffic: the reported answer would have been rewritten.
    let (s, bt) = e
        .post("/api/backtests", &e.ada, json!({"proposal": pid}))
        .await;
    assert_eq!(s, 200, "{bt}");
    assert_eq!(
        (
            bt["interactions"].as_u64(),
            bt["flipped"].as_u64(),
            bt["caught_wrong_answers"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{bt}"
    );
    assert_eq!(bt["samples"][0]["interaction_id"], ix.as_str());
    // Compared with the default pack in force (replayed), not the recording: no drift here.
    assert_eq!(bt["samples"][0]["base"], "allow");
    assert_eq!(bt["base_version"].as_str().map(str::len), Some(64), "{bt}");
    assert_eq!(bt["drift_since_recording"]["flipped"], 0, "{bt}");
    // 5. Two-person rule: an admin who is also "rita" may not approve rita's proposal.
    let rita_admin = e.gw.key("*", "admin", Some("rita")).await;
    let (s, v) = e
        .post(
            &format!("/api/proposals/{pid}/approve"),
            &rita_admin,
            json!({"reason": "mine"}),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert_error_shape(&v);
    let (s, v) = e
        .post(
            &format!("/api/proposals/{pid}/approve"),
            &e.reviewer,
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(s, 403, "reviewers do not approve: {v}");
    let (s, a) = e
        .post(
            &format!("/api/proposals/{pid}/approve"),
            &e.ada,
            json!({"reason": "brand fix, backtest clean"}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["status"], "approved");
    assert_eq!(a["version"], candidate.as_str());
    let (s, v) = e
        .post(
            &format!("/api/proposals/{pid}/reject"),
            &e.ada,
            json!({"reason": "too late"}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    // Published, not active.
    let (_, pol) = e.get("/api/policies", &e.ada).await;
    assert_eq!(pol["active"], json!([]), "{pol}");
    // 6. A 50 % canary for acme; clean traffic; the worker promotes it.
    let ro = e.rollout(&candidate, 50.0).await;
    let mut rewritten = 0;
    for i in 0..120 {
        let (_, text) = e.chat(&format!("c-{i}")).await;
        rewritten += usize::from(text.contains("ACME plan"));
        e.clock.advance_ms(1_000);
    }
    assert!((30..=90).contains(&rewritten), "{rewritten}");
    let (s, r) = e.get(&format!("/api/rollouts/{ro}"), &e.ada).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["state"], "promoted", "{r}");
    assert_eq!(r["promoted_by"], "worker", "{r}");
    assert_eq!(r["proposal"], pid.as_str());
    let (_, pol) = e.get("/api/policies", &e.ada).await;
    assert_eq!(pol["active"][0]["version"], candidate.as_str(), "{pol}");
    assert_eq!(pol["active"][0]["scope"], "acme");
    assert_eq!(pol["active"][0]["actor"], "system");
    let (_, text) = e.chat("c-after").await;
    assert_eq!(text, "Our ACME plan costs 10 dollars.");
    // 7. History: who, why, when, outcome, linked proposal and review.
    let (s, h) = e.get("/api/policies/history", &e.ada).await;
    assert_eq!(s, 200);
    let rows = h["data"].as_array().unwrap();
    let outcomes: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap(),
                r["outcome"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("ProposalCreated", "proposed"),
            ("PolicyPublished", "published"),
            ("ProposalDecided", "approved"),
            ("RolloutChanged", "canary"),
            ("RolloutChanged", "promoted"),
            ("PolicyActivated", "activated"),
        ]
    );
    let promoted = &rows[4];
    assert_eq!(promoted["actor"], "system");
    assert_eq!(promoted["proposal"], pid.as_str());
    assert_eq!(promoted["review"], item.as_str());
    assert!(promoted["reason"]
        .as_str()
        .unwrap()
        .starts_with("automatic promotion"));
    e.mock.shutdown().await;
}

#[tokio::test]
async fn the_split_is_deterministic_sticky_and_recorded() {
    let e = env("[update]\nauto = false\n", "hello from the model").await;
    let v = e
        .approved(json!({"kind": "rewrite", "from": "model", "to": "assistant"}))
        .await;
    let ro = e.rollout(&v, 30.0).await;
    for i in 0..40 {
        let conv = format!("conv-{i}");
        let want = if in_canary(&ro, &conv, 30.0) {
            "canary"
        } else {
            "baseline"
        };
        for _ in 0..2 {
            let (ix, text) = e.chat(&conv).await;
            let rec = e.record(&ix).await;
            assert_eq!(rec["rollout"]["id"], ro.as_str());
            assert_eq!(rec["rollout"]["arm"], want, "{conv}");
            assert_eq!(text.contains("assistant"), want == "canary", "{conv}");
            assert_eq!(rec["policy_version"] == v.as_str(), want == "canary");
        }
    }
    // Another tenant is outside the rollout's scope.
    let other = e.gw.key("beta", "app", None).await;
    let (s, r) = e
        .post(
            "/v1/chat/completions",
            &other,
            json!({"model": "m", "messages": user("hi"), "metadata": {"conversation_id": "conv-1"}}),
        )
        .await;
    assert_eq!(s, 200);
    let rec = e.record(r["id"].as_str().unwrap()).await;
    assert!(rec.get("rollout").is_none(), "{rec}");
    // Manual rollback: everyone is back on the baseline; auto = false kept it a canary so far.
    let (_, r) = e.get(&format!("/api/rollouts/{ro}"), &e.ada).await;
    assert_eq!(r["state"], "canary");
    assert_eq!(
        r["arms"]["canary"]["interactions"].as_u64().unwrap()
            + r["arms"]["baseline"]["interactions"].as_u64().unwrap(),
        80,
        "{r}"
    );
    let (s, r) = e
        .post(
            &format!("/api/rollouts/{ro}/rollback"),
            &e.ada,
            json!({"reason": "manual"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["state"], "rolled_back");
    for i in 0..10 {
        let (ix, text) = e.chat(&format!("conv-{i}")).await;
        assert!(!text.contains("assistant"));
        assert!(e.record(&ix).await.get("rollout").is_none());
    }
    let (s, v) = e
        .post(
            &format!("/api/rollouts/{ro}/promote"),
            &e.ada,
            json!({"reason": "too late"}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    e.mock.shutdown().await;
}

#[tokio::test]
async fn a_canary_at_low_traffic_walks_its_analysis_steps_without_an_operator() {
    // A sample target far above this traffic: each step concludes at its maximum duration.
    let cfg = "[update]\nmin_samples_per_arm = 1000\n\
               [rollouts]\nsteps = [5, 25, 100]\nanalysis_interval_ms = 600000\nmax_duration_ms = 3600000\n";
    let e = env(cfg, "hello there").await;
    let v = e
        .approved(json!({"kind": "rewrite", "from": "hello", "to": "hi"}))
        .await;
    let ro = e.rollout(&v, 5.0).await;
    e.hour_of_traffic("a").await;
    let (_, r) = e.get(&format!("/api/rollouts/{ro}"), &e.ada).await;
    assert_eq!(
        (r["state"].as_str(), r["percent"].as_f64()),
        (Some("canary"), Some(25.0)),
        "{r}"
    );
    assert_eq!(r["promoted_by"], Value::Null);
    e.hour_of_traffic("b").await;
    let (_, r) = e.get(&format!("/api/rollouts/{ro}"), &e.ada).await;
    assert_eq!(r["state"], "promoted", "{r}");
    assert_eq!(r["promoted_by"], "worker");
    let (_, h) = e.get("/api/policies/history", &e.ada).await;
    let steps: Vec<(String, String, String)> = h["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "RolloutChanged")
        .map(|r| {
            (
                r["outcome"].as_str().unwrap_or("").to_string(),
                r["actor"].as_str().unwrap_or("").to_string(),
                r["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(steps[1].0, "canary");
    assert_eq!(steps[1].1, "system");
    assert!(
        steps[1].2.starts_with("automatic step to 25 %"),
        "{steps:?}"
    );
    assert!(steps[1].2.contains("maximum"), "{steps:?}");
    assert_eq!(steps[2].0, "promoted");
    assert!(steps[2].2.starts_with("automatic promotion"), "{steps:?}");
    e.mock.shutdown().await;
}

#[tokio::test]
async fn a_synthetic_regression_is_rolled_back_automatically() {
    let e = env(FAST_GUARDS, "hello there").await;
    // A bad candidate: it withholds every reply that says "hello".
    let reviewer2 = e.gw.key("acme", "reviewer", Some("rob")).await;
    let (s, p) = e
        .post(
            "/api/proposals",
            &reviewer2,
            json!({"suggestion": {"kind": "lexicon_term", "from": "hello"}, "reason": "overreach"}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let (s, a) = e
        .post(
            &format!("/api/proposals/{}/approve", p["id"].as_str().unwrap()),
            &e.ada,
            json!({"reason": "try it"}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    let v = a["version"].as_str().unwrap().to_string();
    let ro = e.rollout(&v, 50.0).await;
    for i in 0..60 {
        e.chat(&format!("c-{i}")).await;
    }
    let (_, r) = e.get(&format!("/api/rollouts/{ro}"), &e.ada).await;
    assert_eq!(r["state"], "rolled_back", "{r}");
    let (_, list) = e.get("/api/rollouts?state=rolled_back", &e.ada).await;
    assert_eq!(list["data"][0]["id"], ro.as_str());
    assert_eq!(list["data"][0]["updated_by"], "system");
    let (_, h) = e.get("/api/policies/history", &e.ada).await;
    let last = h["data"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["outcome"], "rolled_back");
    assert!(
        last["reason"].as_str().unwrap().contains("violation_rate"),
        "{last}"
    );
    for i in 0..10 {
        let (_, text) = e.chat(&format!("c-{i}")).await;
        assert_eq!(text, "hello there");
    }
    e.mock.shutdown().await;
}

#[tokio::test]
async fn a_rollout_survives_a_gateway_restart() {
    let e = env("[update]\nauto = false\n", "hello from the model").await;
    let v = e
        .approved(json!({"kind": "rewrite", "from": "model", "to": "assistant"}))
        .await;
    let ro = e.rollout(&v, 50.0).await;
    let mut before = Vec::new();
    for i in 0..20 {
        let (_, text) = e.chat(&format!("conv-{i}")).await;
        before.push(text);
    }
    let Env {
        mock,
        gw,
        clock,
        app,
        reviewer,
        ada,
    } = e;
    let gw = gw.restart().await;
    let e = Env {
        mock,
        gw,
        clock,
        app,
        reviewer,
        ada,
    };
    for (i, was) in before.iter().enumerate() {
        let (ix, text) = e.chat(&format!("conv-{i}")).await;
        assert_eq!(&text, was, "conv-{i} kept its arm");
        assert_eq!(e.record(&ix).await["rollout"]["id"], ro.as_str());
    }
    let (_, r) = e.get(&format!("/api/rollouts/{ro}"), &e.ada).await;
    assert_eq!(r["state"], "canary");
    assert_eq!(
        r["arms"]["canary"]["interactions"].as_u64().unwrap()
            + r["arms"]["baseline"]["interactions"].as_u64().unwrap(),
        40,
        "{r}"
    );
    e.mock.shutdown().await;
}

#[tokio::test]
async fn activate_is_a_rollout_at_100_and_bad_steps_are_refused() {
    let e = env("", "hello from the model").await;
    let v = e
        .approved(json!({"kind": "rewrite", "from": "model", "to": "assistant"}))
        .await;
    let ro = e.rollout(&v, 10.0).await;
    // A second canary for the same scope conflicts; activation supersedes it.
    let (s, r) = e
        .post(
            "/api/rollouts",
            &e.ada,
            json!({"version": v, "percent": 20, "tenant": "acme"}),
        )
        .await;
    assert_eq!(s, 409, "{r}");
    let (s, r) = e
        .post(
            &format!("/api/policies/{v}/activate"),
            &e.ada,
            json!({"tenant": "acme"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let (_, old) = e.get(&format!("/api/rollouts/{ro}"), &e.ada).await;
    assert_eq!(old["state"], "superseded");
    let (_, act) = e.get("/api/rollouts?state=active", &e.ada).await;
    assert_eq!(act["data"][0]["version"], v.as_str());
    assert_eq!(act["data"][0]["percent"], 100.0);
    let (_, text) = e.chat("c-1").await;
    assert!(text.contains("assistant"));
    for (body, want) in [
        (json!({"version": v, "percent": 0, "tenant": "acme"}), 400),
        (json!({"version": v, "percent": 101, "tenant": "acme"}), 400),
        (
            json!({"version": "nope", "percent": 10, "tenant": "acme"}),
            404,
        ),
        (
            json!({"version": v, "percent": 10, "tenant": "acme", "extra": 1}),
            400,
        ),
        (json!({"percent": 10}), 400),
    ] {
        let (s, r) = e.post("/api/rollouts", &e.ada, body.clone()).await;
        assert_eq!(s, want, "{body}: {r}");
        assert_error_shape(&r);
    }
    let (s, _) = e
        .post(
            "/api/rollouts",
            &e.app,
            json!({"version": v, "percent": 10}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = e.get("/api/rollouts/ro_nope", &e.ada).await;
    assert_eq!(s, 404);
    let (s, r) = e
        .post(
            "/api/proposals",
            &e.reviewer,
            json!({"suggestion": {"kind": "rewrite", "from": "x"}, "reason": "r"}),
        )
        .await;
    assert_eq!(s, 422, "{r}");
    let (s, _) = e
        .post(
            "/api/proposals",
            &e.reviewer,
            json!({"from_review": "rv_nope"}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = e
        .post(
            "/api/proposals",
            &e.app,
            json!({"suggestion": {"kind": "rewrite"}}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = e
        .post("/api/backtests", &e.ada, json!({"proposal": "pr_nope"}))
        .await;
    assert_eq!(s, 404);
    e.mock.shutdown().await;
}

#[tokio::test]
async fn backtest_counts_known_data_and_skips_erased_payloads() {
    let e = env("", "Acme Corp says hi").await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(e.chat(&format!("bt-{i}")).await.0);
    }
    e.mock.set_default(Reply::text("nothing to change"));
    e.chat("bt-plain").await;
    keel_audit::erase_events(
        e.gw.store.as_ref(),
        &keel_audit::EraseTarget::Conversation("bt-3".into()),
        "privacy request",
        "test",
        e.clock.as_ref(),
    )
    .await
    .unwrap();
    let (s, _) = e
        .post(
            "/v1/feedback",
            &e.app,
            json!({"interaction_id": ids[0], "wrong_answer": true}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, p) = e
        .post(
            "/api/proposals",
            &e.reviewer,
            json!({"suggestion": {"kind": "rewrite", "from": "Acme Corp", "to": "ACME"}, "reason": "brand"}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let (s, bt) = e
        .post("/api/backtests", &e.ada, json!({"proposal": p["id"]}))
        .await;
    assert_eq!(s, 200, "{bt}");
    let got: Vec<u64> = [
        "interactions",
        "skipped_erased",
        "flipped",
        "caught_wrong_answers",
        "known_wrong_answers",
    ]
    .iter()
    .map(|k| bt[k].as_u64().unwrap())
    .collect();
    assert_eq!(got, [4, 1, 3, 1, 1], "{bt}");
    assert_eq!(bt["by_rule"][0]["now_fires"], 3);
    assert_eq!(bt["by_segment"][0]["segment"], "acme/en/-");
    e.mock.shutdown().await;
}

#[test]
fn the_cli_walks_a_proposal_to_a_promoted_version() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("keel.toml");
    std::fs::write(&cfg, format!("data_dir = \"{}\"\n", dir.path().display())).unwrap();
    let run = |args: &[&str]| {
        let out = keel_bin()
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let p: Value = serde_json::from_str(&run(&[
        "policy",
        "propose",
        "--suggestion",
        r#"{"kind": "rewrite", "from": "Acme Corp", "to": "ACME"}"#,
        "--reason",
        "brand",
    ]))
    .unwrap();
    let pid = p["id"].as_str().unwrap();
    assert_eq!(p["status"], "pending");
    let a: Value =
        serde_json::from_str(&run(&["policy", "approve", pid, "--reason", "ok"])).unwrap();
    let v = a["version"].as_str().unwrap();
    let bt: Value = serde_json::from_str(&run(&[
        "policy",
        "backtest",
        "--candidate",
        pid,
        "--since",
        "7d",
    ]))
    .unwrap();
    assert_eq!(bt["interactions"], 0);
    let ro = run(&[
        "policy",
        "rollout",
        "--version",
        v,
        "--percent",
        "20",
        "--tenant",
        "acme",
    ]);
    let ro = ro.trim();
    assert!(ro.starts_with("ro_"), "{ro}");
    let list: Value = serde_json::from_str(&run(&["policy", "rollouts", "--json"])).unwrap();
    assert_eq!(list[0]["state"], "canary");
    assert_eq!(list[0]["proposal"], pid);
    assert!(
        list[0]["verdict"].is_string(),
        "a live canary has a verdict"
    );
    // Issue 25, item 13: a table by default.
    let table = run(&["policy", "rollouts"]);
    assert!(table.starts_with("ID\tSTATE\tVERSION"), "{table}");
    assert!(
        table.contains(&format!("{ro}\tcanary\t{}", &v[..12])),
        "{table}"
    );
    assert_eq!(
        run(&["policy", "promote", ro, "--reason", "looks good"]).trim(),
        format!("{ro} promoted")
    );
    let list: Value = serde_json::from_str(&run(&["policy", "rollouts", "--json"])).unwrap();
    assert_eq!(list[0]["state"], "promoted");
    assert!(
        list[0].get("verdict").is_none(),
        "no stale verdict: {}",
        list[0]
    );
    let history = run(&["policy", "history"]);
    assert_eq!(history.lines().count(), 7, "{history}");
    assert!(history.contains("\tpromoted\t"), "{history}");
    let listing = run(&["policy", "list"]);
    assert!(listing.contains("acme"));
    assert!(
        listing.contains("embedded default pack"),
        "no global activation: {listing}"
    );
}

#[tokio::test]
async fn a_fact_update_suggestion_becomes_a_fact_version_on_approval() {
    let e = env("", "The consumption tax is 8%.").await;
    let (s, v) = e
        .post(
            "/api/facts",
            &e.ada,
            json!({"fact": {"key": "jp.consumption_tax", "kind": "percent", "value": 8,
                            "effective_from": "2014-04-01", "scope": {"jurisdictions": ["JP"]},
                            "subjects": {"en": ["consumption tax"]}}, "reason": "law"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, p) = e
        .post(
            "/api/proposals",
            &e.reviewer,
            json!({"suggestion": {"kind": "fact_update", "fact": "jp.consumption_tax", "value": 10,
                                  "effective_from": "2019-10-01", "scope": {"jurisdictions": ["JP"]}},
                   "reason": "the rate changed"}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["kind"], "fact");
    assert_eq!(p["fact"]["value"], 10);
    assert!(p["diff"].as_str().unwrap().contains("+value: 10"), "{p}");
    assert_eq!(
        p["tenant"], "acme",
        "a tenant reviewer's proposal is confined to its tenant"
    );
    let id = p["id"].as_str().unwrap();
    let (s, a) = e
        .post(
            &format!("/api/proposals/{id}/approve"),
            &e.ada,
            json!({"reason": "checked the gazette"}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    // Approval starts the fact's canary; promoting it (here by hand) sets the fact.
    let ro = a["rollout"]["id"].as_str().unwrap();
    let (s, r) = e
        .post(
            &format!("/api/rollouts/{ro}/promote"),
            &e.ada,
            json!({"reason": "seen enough"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(
        r["promoted_by"].as_str().unwrap().starts_with("ada ("),
        "{r}"
    );
    let (s, h) = e.get("/api/facts/jp.consumption_tax/history", &e.ada).await;
    assert_eq!(s, 200);
    assert_eq!(h["data"].as_array().unwrap().len(), 2, "{h}");
    assert_eq!(h["data"][1]["fact"]["value"], 10);
    let (_, hist) = e.get("/api/policies/history", &e.ada).await;
    let set = hist["data"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|r| r["kind"] == "FactSet")
        .unwrap()
        .clone();
    assert_eq!(set["proposal"], id);
    assert_eq!(set["fact"]["value"], 10);
    // A value no fact kind holds and alerts are refused.
    let (s, r) = e
        .post(
            "/api/proposals",
            &e.reviewer,
            json!({"suggestion": {"kind": "fact_update", "fact": "nope", "value": [1],
                                  "effective_from": "2019-10-01"}, "reason": "r"}),
        )
        .await;
    assert_eq!(s, 422, "{r}");
    let (s, _) = e
        .post(
            "/api/proposals",
            &e.reviewer,
            json!({"from_alert": "al_nope", "suggestion": {"kind": "escalate", "from": "x"}}),
        )
        .await;
    assert_eq!(s, 404);
    // Another tenant's reviewer does not see acme's proposal.
    let other = e.gw.key("beta", "reviewer", Some("bea")).await;
    let (s, _) = e.get(&format!("/api/proposals/{id}"), &other).await;
    assert_eq!(s, 404);
    let (_, l) = e.get("/api/proposals", &other).await;
    assert_eq!(l["data"], json!([]));
    e.mock.shutdown().await;
}

#[tokio::test]
async fn a_fact_proposal_for_a_new_key_is_backtested_tenant_checked_and_waits_for_its_date() {
    let e = env("", "Our plan costs 10 dollars.").await;
    let acme_admin = e.gw.key("acme", "admin", Some("adam")).await;
    // The first version of a key nobody registered (was a 422 "no fact … is registered").
    let (s, own) = e
        .post(
            "/api/proposals",
            &e.reviewer,
            json!({"suggestion": {"kind": "fact_update", "fact": "acme.plan.price",
                   "value": 12, "from": "plan price", "effective_from": "2026-02-01",
                   "scope": {"tenants": ["acme"]}}, "reason": "new price list"}),
        )
        .await;
    assert_eq!(s, 201, "{own}");
    assert_eq!(own["kind"], "fact");
    assert_eq!(own["fact"]["kind"], "count");
    let (s, global) = e
        .post(
            "/api/proposals",
            &e.ada,
            json!({"suggestion": {"kind": "fact_update", "fact": "shipping.days",
                   "value": 3, "effective_from": "2025-01-01"}, "reason": "global",
                   "tenant": "acme"}),
        )
        .await;
    assert_eq!(s, 201, "{global}");
    assert_eq!(global["fact"]["scope"]["tenants"], Value::Null, "{global}");
    // A fact proposal is backtested against the version in force with the fact added.
    let (s, bt) = e
        .post("/api/backtests", &e.ada, json!({"proposal": own["id"]}))
        .await;
    assert_eq!(s, 200, "{bt}");
    assert!(bt["interactions"].is_u64(), "{bt}");
    // A tenant's admin cannot write a global fact (issue 20 item 2), only its own tenant's.
    let approve = |id: &Value| format!("/api/proposals/{}/approve", id.as_str().unwrap());
    let (s, v) = e
        .post(
            &approve(&global["id"]),
            &acme_admin,
            json!({"reason": "mine?"}),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = e
        .post(
            &approve(&own["id"]),
            &acme_admin,
            json!({"reason": "agreed"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let ro = v["rollout"]["id"].as_str().unwrap();
    let (s, r) = e
        .post(
            &format!("/api/rollouts/{ro}/promote"),
            &acme_admin,
            json!({"reason": "canary fine"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    // Approved before its date: registered, not yet in force.
    let (_, now) = e.get("/api/facts?key=acme.plan.price", &e.ada).await;
    assert_eq!(now["data"], json!([]), "{now}");
    let (_, later) = e
        .get("/api/facts?key=acme.plan.price&at=2026-02-02", &e.ada)
        .await;
    assert_eq!(later["data"][0]["fact"]["value"], 12, "{later}");
    e.mock.shutdown().await;
}

#[tokio::test]
async fn a_fact_update_corrects_the_canary_arm_only_until_its_promotion_sets_the_fact() {
    let cfg = "[update]\nmin_samples_per_arm = 10\n\
               [rollouts]\nsteps = [50, 100]\nanalysis_interval_ms = 0\nmax_duration_ms = 3600000\n";
    let e = env(cfg, "The consumption tax is 8%.").await;
    let (s, v) = e
        .post(
            "/api/facts",
            &e.ada,
            json!({"facts": [{"key": "tax", "kind": "percent", "value": 8,
                   "effective_from": "2014-04-01", "subjects": {"en": ["consumption tax"]}}],
                   "reason": "in force"}),
        )
        .await;
    assert!(s == 200 || s == 201, "{v}");
    let (s, p) = e
        .post(
            "/api/proposals",
            &e.reviewer,
            json!({"suggestion": {"kind": "fact_update", "fact": "tax", "value": 10,
                   "effective_from": "2025-01-01", "scope": {"tenants": ["acme"]}},
                   "reason": "the rate went up"}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let pid = p["id"].as_str().unwrap().to_string();
    let (s, a) = e
        .post(
            &format!("/api/proposals/{pid}/approve"),
            &e.ada,
            json!({"reason": "agreed"}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["rollout"]["state"], "canary", "{a}");
    assert_eq!(a["rollout"]["percent"], 50.0);
    let ro = a["rollout"]["id"].as_str().unwrap().to_string();
    // Approved, not set: the registry still holds one version.
    let (_, h) = e.get("/api/facts/tax/history", &e.ada).await;
    assert_eq!(h["data"].as_array().unwrap().len(), 1, "{h}");
    // Only the canary arm is corrected.
    for i in 0..8 {
        let conv = format!("f-{i}");
        let (ix, text) = e.chat(&conv).await;
        let canary = in_canary(&ro, &conv, 50.0);
        let want = if canary {
            "The consumption tax is 10%."
        } else {
            "The consumption tax is 8%."
        };
        assert_eq!(text, want, "{conv}");
        let rec = e.record(&ix).await;
        assert_eq!(rec["rollout"]["id"], ro.as_str());
        assert_eq!(
            rec["rollout"]["arm"],
            if canary { "canary" } else { "baseline" }
        );
    }
    // The worker promotes it (no guard shows harm) and the promotion sets the fact.
    for i in 0..40 {
        e.chat(&format!("g-{i}")).await;
    }
    let (_, r) = e.get(&format!("/api/rollouts/{ro}"), &e.ada).await;
    assert_eq!(r["state"], "promoted", "{r}");
    assert_eq!(r["promoted_by"], "worker");
    let (_, h) = e.get("/api/facts/tax/history", &e.ada).await;
    assert_eq!(h["data"].as_array().unwrap().len(), 2, "{h}");
    assert_eq!(h["data"][1]["fact"]["value"], 10);
    let (_, text) = e.chat("after").await;
    assert_eq!(text, "The consumption tax is 10%.");
    e.mock.shutdown().await;
}

#[tokio::test]
async fn a_batch_of_reviews_drafts_one_merged_proposal_and_a_conflicting_change_is_refused() {
    let e = env("[update]\nauto = false\n", "Acme Corp sells Widgets.").await;
    let rewrite = json!({"kind": "rewrite", "from": "Acme Corp", "to": "ACME"});
    let r1 = e.reviewed("b-1", rewrite.clone()).await;
    let r2 = e.reviewed("b-2", rewrite.clone()).await;
    let r3 = e
        .reviewed(
            "b-3",
            json!({"kind": "rewrite", "from": "Widgets", "to": "Gadgets"}),
        )
        .await;
    let (s, p) = e
        .post(
            "/api/proposals",
            &e.reviewer,
            json!({"from_reviews": [r1, r2, r3], "reason": "brand and product names"}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    assert_eq!(p["kind"], "policy");
    assert_eq!(p["suggestions"].as_array().unwrap().len(), 2, "{p}");
    assert_eq!(p["rules"].as_array().unwrap().len(), 2, "{p}");
    assert_eq!(p["source"]["reviews"], json!([r1, r2, r3]));
    assert_eq!(
        p["source"]["merged"][0]["sources"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "identical suggestions merged, both reviews kept"
    );
    let pid = p["id"].as_str().unwrap().to_string();
    let (s, a) = e
        .post(
            &format!("/api/proposals/{pid}/approve"),
            &e.ada,
            json!({"reason": "ok"}),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    let v = a["version"].as_str().unwrap().to_string();
    let ro = e.rollout(&v, 50.0).await;
    // One candidate serves both fixes on the canary arm.
    let conv = (0..40)
        .map(|i| format!("k-{i}"))
        .find(|c| in_canary(&ro, c, 50.0))
        .unwrap();
    let (_, text) = e.chat(&conv).await;
    assert_eq!(text, "ACME sells Gadgets.");
    // A second change to a term the live canary changes, in an overlapping scope: 409.
    let (s, c) = e
        .post(
            "/api/proposals",
            &e.reviewer,
            json!({"suggestion": {"kind": "lexicon_term", "from": "acme corp",
                   "scope": {"locales": ["en-US"]}}, "reason": "block it"}),
        )
        .await;
    assert_eq!(s, 409, "{c}");
    let msg = c["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&ro) && msg.contains(&pid), "{msg}");
    // Another term, or the same term elsewhere, is fine.
    let (s, c) = e
        .post(
            "/api/proposals",
            &e.reviewer,
            json!({"suggestion": {"kind": "lexicon_term", "from": "acme corp",
                   "scope": {"locales": ["ja"]}}, "reason": "elsewhere"}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    // A batch mixing a fact update and a policy change is refused.
    let r4 = e
        .reviewed(
            "b-4",
            json!({"kind": "fact_update", "fact": "price", "value": 3,
                                "effective_from": "2026-01-01"}),
        )
        .await;
    let (s, c) = e
        .post(
            "/api/proposals",
            &e.reviewer,
            json!({"from_reviews": [r3, r4]}),
        )
        .await;
    assert_eq!(s, 422, "{c}");
    e.mock.shutdown().await;
}
