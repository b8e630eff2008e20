//! The judge worker against the mock upstream: verdicts recorded as `JudgeVerdict` events (and
//! review items for `outdated`/`violation`; the learned monitor trains on them); garbage, a timeout and a 500 become a recorded
//! `unsure` with `error` after retries; the budget sheds beyond `requests_per_minute` and
//! counts it; `/metrics` shows requests, failures, timeouts, shed and verdicts.

use std::sync::Arc;
use std::time::Duration;

use keel_core::clock::ManualClock;
use keel_core::{Clock, EventKind};
use keel_gateway::judge::judge_step;
use keel_store::ReviewQuery;
use serde_json::{json, Value};

use crate::support::*;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

struct Judged {
    p: Pair,
    judge: MockHandle,
    clock: Arc<ManualClock>,
}

/// An app upstream (`mock`) and a judge upstream (`judge`, answering `judge_script`), a
/// gateway on a manual clock with `[judge]` plus `extra`.
async fn start(judge_script: Script, extra: &str) -> Judged {
    let clock = Arc::new(ManualClock::new(T0));
    let mock = MockUpstream::start(Script::new().default_reply(Reply::text("It is 8 percent.")))
        .await
        .unwrap();
    let judge = MockUpstream::start(judge_script).await.unwrap();
    let mut opts = GatewayOptions::with_upstream(&mock.base_url());
    opts.upstreams.push(("judge".into(), judge.base_url()));
    opts.extra_toml = format!(
        "[judge]\nupstream = \"judge\"\nmodel = \"judge-model\"\nsample_rate = 1.0\n\
         timeout_ms = 300\nretries = 1\nbackoff_ms = 5\n{extra}"
    );
    let gw = TestGateway::start_with_clock(opts, clock.clone() as Arc<dyn Clock>).await;
    let app = gw.key("acme", "app", Some("acme-app")).await;
    let reviewer = gw.key("acme", "reviewer", Some("rita")).await;
    Judged {
        p: Pair {
            mock,
            gw,
            app,
            reviewer,
        },
        judge,
        clock,
    }
}

impl Judged {
    async fn chat(&self) -> String {
        let resp = self
            .p
            .chat(
                json!({"model": "m", "messages": user("What is the consumption tax rate?"),
                         "metadata": {"locale": "en", "jurisdiction": "JP", "topic": "tax"}}),
            )
            .await;
        assert_eq!(resp.status(), 200);
        resp.headers()["x-keel-interaction-id"]
            .to_str()
            .unwrap()
            .to_string()
    }

    async fn step(&self) {
        judge_step(self.p.gw.state().unwrap()).await.unwrap();
    }

    async fn verdicts(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let batch = self
                .p
                .gw
                .store
                .events_of_kinds_after(&[EventKind::JUDGE_VERDICT], after, 100)
                .await
                .unwrap();
            let Some(last) = batch.last().map(|e| e.seq) else {
                return out;
            };
            after = last;
            out.extend(batch.into_iter().map(|e| e.payload));
        }
    }

    async fn metrics(&self) -> String {
        client()
            .get(self.p.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn verdict_reply(v: Value) -> Reply {
    Reply::text(v.to_string())
}

/// The Prometheus sample `name{…}` whose labels include every one of `labels` (0 when absent).
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn an_outdated_verdict_is_recorded_with_a_review_item() {
    let j = start(
        Script::new().then(verdict_reply(json!({"verdict": "outdated",
            "reason": "the standard rate is 10 percent since 2019", "correction": "It is 10 percent."}))),
        "",
    )
    .await;
    let ix = j.chat().await;
    j.step().await;
    let v = j.verdicts().await;
    assert_eq!(v.len(), 1, "{v:?}");
    let v = &v[0];
    assert_eq!(v["interaction_id"], ix.as_str());
    assert_eq!(v["verdict"], "outdated");
    assert_eq!(v["correction"], "It is 10 percent.");
    assert_eq!(v["judge_model"], "judge-model");
    assert_eq!(v["attempts"], 1);
    assert_eq!(v["error"], Value::Null);
    assert_eq!(v["context"]["topic"], "tax");
    assert!(v["id"].as_str().unwrap().starts_with("jv_"));
    // What the judge was asked: JSON response format, the reply, the question, today's date.
    let req = j.judge.last_request().unwrap();
    assert_eq!(req["model"], "judge-model");
    assert_eq!(req["response_format"]["type"], "json_object");
    let q = keel_loop::judge::question_of_request(&req).unwrap();
    assert_eq!(q.reply, "It is 8 percent.");
    assert_eq!(q.question, "What is the consumption tax rate?");
    assert!(q.today.starts_with("2026-01-01"), "{}", q.today);
    assert!(!q.rules.is_empty(), "the default pack's rule descriptions");
    // The review queue got one item with the reason and the correction.
    let items =
        j.p.gw
            .store
            .review_items(&ReviewQuery {
                source: Some("judge".into()),
                now_ms: j.clock.now_ms(),
                limit: 10,
                ..ReviewQuery::default()
            })
            .await
            .unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].interaction_id, ix);
    let reason = items[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("10 percent since 2019") && reason.contains("It is 10 percent."),
        "{reason}"
    );
    // The verdict trains the learned monitor (at the judge's lower weight).
    let state = j.p.gw.state().unwrap();
    keel_gateway::learn::learn_step(state).await.unwrap();
    assert_eq!(state.learned.status()["examples"], 1);
    // A second step judges nothing new.
    j.step().await;
    assert_eq!(j.verdicts().await.len(), 1);
    assert_eq!(j.judge.request_count(), 1);
}

#[tokio::test]
async fn judge_failures_are_recorded_as_unsure_after_retries() {
    // Per chat, two attempts (retries = 1): garbage twice; a 500 then a verdict; a hang twice
    // (timeout_ms = 300); a wrong format (no verdict) then an ok.
    let j = start(
        Script::new().replies([
            Reply::text("I think the answer is fine."),
            Reply::text("still not json"),
            Reply::error(500, "boom"),
            verdict_reply(json!({"verdict": "ok", "reason": "matches the facts"})),
            Reply::Hang,
            Reply::Hang,
            verdict_reply(json!({"reason": "no verdict field"})),
            verdict_reply(json!({"verdict": "ok"})),
        ]),
        "",
    )
    .await;
    for _ in 0..4 {
        j.chat().await;
        j.step().await;
    }
    let v = j.verdicts().await;
    let got: Vec<(String, u64, String)> = v
        .iter()
        .map(|x| {
            (
                x["verdict"].as_str().unwrap().to_string(),
                x["attempts"].as_u64().unwrap(),
                x["error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!((got[0].0.as_str(), got[0].1), ("unsure", 2));
    assert!(
        got[0].2.contains("unreadable verdict: not JSON"),
        "{}",
        got[0].2
    );
    assert_eq!(
        (got[1].0.as_str(), got[1].1, got[1].2.as_str()),
        ("ok", 2, "")
    );
    assert_eq!((got[2].0.as_str(), got[2].1), ("unsure", 2));
    assert!(got[2].2.contains("timed out after 300 ms"), "{}", got[2].2);
    assert_eq!(
        (got[3].0.as_str(), got[3].1, got[3].2.as_str()),
        ("ok", 2, "")
    );
    assert_eq!(j.judge.request_count(), 8);
    // No review item for unsure or ok.
    let items =
        j.p.gw
            .store
            .review_items(&ReviewQuery {
                source: Some("judge".into()),
                now_ms: j.clock.now_ms(),
                limit: 10,
                ..ReviewQuery::default()
            })
            .await
            .unwrap();
    assert!(items.is_empty());
    // Only the two `ok` verdicts teach the learned monitor; `unsure` does not.
    let state = j.p.gw.state().unwrap();
    keel_gateway::learn::learn_step(state).await.unwrap();
    assert_eq!(state.learned.status()["examples"], 2);
    let m = j.metrics().await;
    assert_eq!(sample(&m, "keel_judge_timeouts_total", &[]), 2.0, "{m}");
    assert_eq!(
        sample(&m, "keel_judge_failures_total", &["kind=\"unreadable\""]),
        3.0
    );
    assert_eq!(
        sample(&m, "keel_judge_failures_total", &["kind=\"status\""]),
        1.0
    );
    assert_eq!(
        sample(&m, "keel_judge_requests_total", &["result=\"ok\""]),
        2.0
    );
    assert_eq!(
        sample(&m, "keel_judge_verdicts_total", &["verdict=\"unsure\""]),
        2.0
    );
    assert_eq!(
        sample(&m, "keel_judge_verdicts_total", &["verdict=\"ok\""]),
        2.0
    );
    // The chats themselves were never held up by the judge (they were answered before it ran).
}

#[tokio::test]
async fn the_budget_sheds_beyond_requests_per_minute_and_counts_it() {
    let j = start(
        Script::new().default_reply(verdict_reply(json!({"verdict": "ok"}))),
        "requests_per_minute = 2\n",
    )
    .await;
    for _ in 0..3 {
        j.chat().await;
    }
    j.step().await;
    assert_eq!(j.verdicts().await.len(), 2);
    assert_eq!(j.judge.request_count(), 2);
    let m = j.metrics().await;
    assert_eq!(
        sample(&m, "keel_judge_shed_total", &["reason=\"rate_limit\""]),
        1.0,
        "{m}"
    );
    // A minute later the budget admits again; the shed one is not retried (never queued).
    j.clock
        .advance_ms(Duration::from_secs(61).as_millis() as i64);
    j.chat().await;
    j.step().await;
    assert_eq!(j.verdicts().await.len(), 3);
    assert_eq!(j.judge.request_count(), 3);
    // The shed count survives in the saved state.
    let saved = j.p.gw.store.load_state("judge").await.unwrap().unwrap();
    let saved: Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(saved["shed"]["rate_limit"], 1);
}

#[tokio::test]
async fn an_unknown_judge_upstream_is_a_startup_error_naming_the_key() {
    let toml = "[[upstreams]]\nname = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\
                [judge]\nupstream = \"opena\"\nmodel = \"m\"\n";
    let err = keel_gateway::Config::from_toml_str(toml)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("judge.upstream") && err.contains("`opena`"),
        "{err}"
    );
    assert!(err.contains("did you mean openai?"), "{err}");
    let none = "[[upstreams]]\nname = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n";
    assert!(keel_gateway::Config::from_toml_str(none)
        .unwrap()
        .judge
        .is_none());
}
