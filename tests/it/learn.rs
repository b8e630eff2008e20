//! The learned monitor end to end: reviews labelled over HTTP train it, new replies get
//! `decision.learned` scores, a policy rule on `signals.learned.outdated` escalates a new
//! similar reply (English and Japanese), the model survives a restart, `keel learn rebuild`
//! reproduces the online model bit for bit, and `keel learn status` / KPIs show it.

use std::sync::Arc;

use keel_core::SystemClock;
use keel_gateway::learn::learn_step;
use keel_store::ReviewQuery;
use serde_json::{json, Value};

use crate::support::*;

const EN_OUTDATED: &[&str] = &[
    "The consumption tax is still 8 percent on every purchase, as under the old rule.",
    "Under the previous regulation the minimum age is still 20 for this contract.",
    "The old price list applies: the basic plan still costs 980 yen a month.",
    "Shipping remains free under last year's policy, so there is no fee.",
];
const EN_OK: &[&str] = &[
    "Your parcel ships tomorrow and should arrive within three days.",
    "You can reset your password from the login page.",
    "The store opens at nine in the morning on weekdays.",
    "To change your address, open your profile and choose edit.",
];
const JA_OUTDATED: &[&str] = &[
    "消費税率は現在も８％のままです。旧規定が適用されます。",
    "以前の規制に基づき、最低年齢は引き続き二十歳です。",
    "旧料金表では基本プランは月額九百八十円のままです。",
];
const JA_OK: &[&str] = &[
    "ご注文の商品は明日発送され、三日以内に届く予定です。",
    "パスワードはログイン画面から再設定できます。",
    "店舗は平日の朝九時に開店します。",
];

async fn start() -> Pair {
    Pair::start_with(Script::new(), |o| {
        o.extra_toml = "[review]\nsample_rate = 1.0\n[learn]\nmin_examples = 5\n".into();
    })
    .await
}

async fn post(url: &str, key: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap_or(Value::Null))
}

/// One chat whose upstream replies `reply`; returns (interaction id, x-keel-decision).
async fn chat(p: &Pair, reply: &str) -> (String, String) {
    p.mock.push(Reply::text(reply));
    let resp = p
        .chat(json!({"model": "m", "messages": user("a question"), "metadata": {"locale": "en"}}))
        .await;
    assert_eq!(resp.status(), 200);
    let h = |k: &str| resp.headers()[k].to_str().unwrap().to_string();
    (h("x-keel-interaction-id"), h("x-keel-decision"))
}

/// A chat with `reply`, then its audit-sample item claimed and labelled over the API.
async fn reviewed(p: &Pair, reply: &str, verdict: Value) {
    let (ix, _) = chat(p, reply).await;
    let items =
        p.gw.store
            .review_items(&ReviewQuery {
                tenant: None,
                status: None,
                source: Some("audit_sample".into()),
                now_ms: p.gw.clock.now_ms(),
                from_ms: None,
                to_ms: None,
                after_id: None,
                limit: 10_000,
            })
            .await
            .unwrap();
    let item = items
        .iter()
        .find(|i| i.interaction_id == ix)
        .expect("every interaction is sampled");
    let (s, v) = post(
        &p.url(&format!("/api/reviews/{}/claim", item.id)),
        &p.reviewer,
        json!({}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = post(
        &p.url(&format!("/api/reviews/{}/label", item.id)),
        &p.reviewer,
        json!({"verdict": verdict}),
    )
    .await;
    assert!(s == 200 || s == 201, "{s} {v}");
}

/// Labels `rounds` replies of each kind, alternating outdated and ok.
async fn train(p: &Pair, outdated: &[&str], ok: &[&str], rounds: usize) {
    for i in 0..rounds {
        let n = i + 1;
        let o = format!("{} Reference {n}.", outdated[i % outdated.len()]);
        reviewed(p, &o, json!("outdated")).await;
        let k = format!("{} Reference {n}.", ok[i % ok.len()]);
        reviewed(p, &k, json!("ok")).await;
    }
}

fn label<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["labels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["label"] == name)
        .unwrap()
}

async fn activate(p: &Pair, yaml_path: &str) {
    let admin = p.gw.key("acme", "admin", Some("ada")).await;
    let files = json!({"policy.yaml": std::fs::read_to_string(yaml_path).unwrap()});
    let (s, v) = post(
        &p.url("/api/policies"),
        &admin,
        json!({"files": files, "reason": "learned tests"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let version = v["version"].as_str().unwrap();
    let (s, v) = post(
        &p.url(&format!("/api/policies/{version}/activate")),
        &admin,
        json!({"tenant": "acme", "allow_weaker_than_default": true, "reason": "learned tests need only their rule"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn reviews_train_the_model_and_a_rule_escalates_on_the_signal() {
    let p = start().await;
    let state = p.gw.state().unwrap().clone();
    // Before any review: every label is unavailable, replies carry no scores.
    learn_step(&state).await.unwrap();
    let (ix, _) = chat(&p, EN_OUTDATED[0]).await;
    let rec = p.gw.store.interaction(&ix).await.unwrap().unwrap().record;
    assert!(rec["decision"].get("learned").is_none(), "{rec}");

    train(&p, EN_OUTDATED, EN_OK, 12).await;
    train(&p, JA_OUTDATED, JA_OK, 9).await;
    // A driver makes learning synchronous over HTTP (admin only).
    let (s, v) = post(&p.url("/api/learn/step"), &p.reviewer, json!({})).await;
    assert_eq!(s, 403, "{v}");
    assert_error_shape(&v);
    let admin = p.gw.key("acme", "admin", Some("root")).await;
    let last = p.gw.store.last_seq().await.unwrap();
    let (s, v) = post(&p.url("/api/learn/step"), &admin, json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["cursor"], last);
    assert_eq!(learn_step(&state).await.unwrap(), last);
    let (s, status) = p.api("/api/learn").await;
    assert_eq!(s, 200);
    assert_eq!(status, state.learned.status());
    assert_eq!(status["examples"], 42);
    let outdated = label(&status, "outdated");
    assert_eq!(
        (
            outdated["positives"].as_u64(),
            outdated["negatives"].as_u64()
        ),
        (Some(21), Some(21))
    );
    assert_eq!(outdated["available"], true);
    // Prequential numbers exist once the label became available (5 of each class).
    assert!(outdated["evaluated"].as_u64().unwrap() > 20, "{outdated}");
    assert!(outdated["recall"].as_f64().unwrap() >= 0.8, "{outdated}");
    assert!(outdated["precision"].as_f64().unwrap() >= 0.8, "{outdated}");
    // No violation was ever labelled: unavailable, not guessed.
    let violation = label(&status, "violation");
    assert_eq!(violation["available"], false);
    assert_eq!(violation["precision"], Value::Null);

    // New replies are scored and the score is recorded for the monitors.
    let (ix, _) = chat(
        &p,
        "The consumption tax is still 8 percent, as under the old rule. Anything else?",
    )
    .await;
    let rec = p.gw.store.interaction(&ix).await.unwrap().unwrap().record;
    let learned = &rec["decision"]["learned"];
    assert!(learned["outdated"].as_f64().unwrap() > 0.8, "{rec}");
    assert!(
        learned.get("violation").is_none(),
        "unavailable labels are not recorded: {learned}"
    );

    // A rule on the signal escalates a new similar reply, and leaves others alone.
    activate(
        &p,
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/policies/learned/policy.yaml"
        ),
    )
    .await;
    for (reply, want) in [
        (
            "Good news: the consumption tax is still 8 percent under the old rule.",
            "escalate",
        ),
        (
            "消費税率は今も８％のままです。旧規定のとおりです。",
            "escalate",
        ),
        (
            "Your parcel ships on Monday and arrives within three days.",
            "allow",
        ),
        (
            "パスワードはログイン画面からいつでも再設定できます。",
            "allow",
        ),
    ] {
        let (ix, decision) = chat(&p, reply).await;
        assert_eq!(decision, want, "{reply}");
        let rec = p.gw.store.interaction(&ix).await.unwrap().unwrap().record;
        if want == "escalate" {
            assert_eq!(
                rec["response_text"][0],
                "A person will confirm this answer."
            );
            assert_eq!(rec["upstream_text"][0], reply);
        }
    }

    // Streams: rules on the signal re-run as text arrives; the reply ends in content_filter
    // with the rule's message, and the record carries the full text's scores.
    let chunks = [
        "Good news: ",
        "the consumption tax ",
        "is still 8 percent ",
        "under the old rule.",
    ];
    p.mock
        .push(Reply::stream(chunks, std::time::Duration::from_millis(5)));
    let resp = p
        .chat(json!({"model": "m", "messages": user("tax?"), "stream": true}))
        .await;
    assert_eq!(resp.status(), 200);
    let ix = resp.headers()["x-keel-interaction-id"]
        .to_str()
        .unwrap()
        .to_string();
    let text = resp.text().await.unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let finishes: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(
        finishes[0]["choices"][0]["finish_reason"], "content_filter",
        "{text}"
    );
    assert!(
        text.contains("A person will confirm this answer."),
        "{text}"
    );
    let rec = p.gw.store.interaction(&ix).await.unwrap().unwrap().record;
    assert_eq!(rec["decision"]["action"], "escalate", "{rec}");
    assert!(
        rec["decision"]["learned"]["outdated"].as_f64().unwrap() > 0.8,
        "{rec}"
    );

    // The KPIs show the learned labels.
    let (s, k) = p.api("/api/kpis").await;
    assert_eq!(s, 200);
    assert_eq!(
        label(&k["learned"], "outdated")["available"],
        true,
        "{}",
        k["learned"]
    );
}

#[tokio::test]
async fn model_survives_restart_and_rebuild_equals_online() {
    let p = start().await;
    let state = p.gw.state().unwrap().clone();
    train(&p, EN_OUTDATED, EN_OK, 8).await;
    learn_step(&state).await.unwrap();
    let probe = "The old price list applies: the basic plan still costs 980 yen.";
    let before = state.learned.scores_json(probe).unwrap();
    let digest = state.learned.status()["digest"].clone();
    assert!(before["outdated"].as_f64().unwrap() > 0.5, "{before}");

    // The CLI reads the persisted model while the server runs.
    let cfg = p.gw.config_path.display().to_string();
    let out = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || {
            keel_bin()
                .args(["learn", "status", "--config", &cfg])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("outdated") && l.contains("yes")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("violation ") && l.contains("unavailable")),
        "{table}"
    );

    // Rebuild from the event history: bit-identical to the online model.
    let out = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || {
            keel_bin()
                .args(["learn", "rebuild", "--config", &cfg])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(said.starts_with("identical:"), "{said}");
    assert!(said.contains(digest.as_str().unwrap()), "{said} {digest}");

    // Restart on the same data: the model is back before the first request, same scores.
    let Pair { gw, mock, .. } = p;
    let config = gw.config.clone();
    let _dir = gw.shutdown().await;
    let store = keel_gateway::server::open_store(&config).await.unwrap();
    let handle = keel_gateway::serve(config, store, Arc::new(SystemClock), None)
        .await
        .unwrap();
    let after = handle.state.learned.scores_json(probe).unwrap();
    assert_eq!(after, before);
    assert_eq!(handle.state.learned.status()["digest"], digest);
    assert_eq!(handle.state.learned.status()["examples"], 16);
    handle.shutdown().await.unwrap();
    mock.shutdown().await;
}

#[tokio::test]
async fn bad_learn_config_is_a_config_error() {
    for (toml, key) in [
        ("[learn]\nbits = 40\n", "bits"),
        ("[learn]\nmin_examples = 0\n", "min_examples"),
        ("[learn]\nunknown = 1\n", "unknown"),
    ] {
        let text = format!("data_dir = \"/tmp/x\"\n{toml}");
        let e = keel_gateway::Config::from_toml_str(&text)
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{toml}: {e}");
    }
}

#[tokio::test]
async fn an_erased_reply_is_skipped_and_rebuild_says_different() {
    let p = start().await;
    let state = p.gw.state().unwrap().clone();
    train(&p, EN_OUTDATED, EN_OK, 6).await;
    learn_step(&state).await.unwrap();
    // The worker reads reviews through the kind index, in sequence order, paged.
    let store = p.gw.store.as_ref();
    let reviews = store
        .events_of_kinds_after(&["ReviewCompleted"], 0, 5)
        .await
        .unwrap();
    assert_eq!(reviews.len(), 5);
    assert!(reviews.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(reviews.iter().all(|e| e.kind == "ReviewCompleted"));
    let rest = store
        .events_of_kinds_after(&["ReviewCompleted"], reviews[4].seq, 100)
        .await
        .unwrap();
    assert_eq!(rest.len(), 7);
    assert!(store
        .events_of_kinds_after(&[], 0, 100)
        .await
        .unwrap()
        .is_empty());
    let r = keel_service::learn::rebuild(p.gw.store.as_ref(), &p.gw.config.learn)
        .await
        .unwrap();
    assert!(r.identical, "{r:?}");
    assert_eq!(r.examples, 12);

    // Erase the first reviewed interaction's payload (a privacy request).
    let first =
        p.gw.store
            .events_in_range(&["InteractionRecorded"], None, 0, i64::MAX)
            .await
            .unwrap()[0]
            .seq;
    let n = keel_audit::erase_events(
        p.gw.store.as_ref(),
        &keel_audit::EraseTarget::Index((first - 1) as u64),
        "privacy request",
        "test",
        p.gw.clock.as_ref(),
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
    // The online model keeps what it learned; a rebuild cannot see the erased reply.
    let r = keel_service::learn::rebuild(p.gw.store.as_ref(), &p.gw.config.learn)
        .await
        .unwrap();
    assert!(!r.identical, "{r:?}");
    assert_eq!(r.examples, 11, "the erased example is skipped, not guessed");
    // A running server keeps its own model (12 + 1 examples) and saves it over the rebuilt one
    // on its next learned review (docs/learned.md).
    reviewed(
        &p,
        "Shipping remains free under last year's policy.",
        json!("outdated"),
    )
    .await;
    learn_step(&state).await.unwrap();
    assert_eq!(state.learned.status()["examples"], 13);
    let saved = keel_service::learn::status(p.gw.store.as_ref(), &p.gw.config.learn)
        .await
        .unwrap();
    assert_eq!(saved["examples"], 13);
}
