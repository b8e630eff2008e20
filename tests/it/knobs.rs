//! Documented knobs, each exercised: upstream retries on 429, backoff doubling, `api_key_env`,
//! routing by `models` and by a policy `route`, `[retention] payload_days`, `audit erase --user`
//! and `--before`, the shutdown grace period, `/readyz` while draining, `log.format = "json"`.

use std::sync::Arc;
use std::time::Duration;

use keel_core::ManualClock;
use serde_json::{json, Value};

use crate::support::*;

const DAY_MS: i64 = 86_400_000;

/// One `[[upstreams]]` table.
fn upstream_toml(name: &str, url: &str, models: &[&str], extra: &str) -> String {
    let models: Vec<String> = models.iter().map(|m| format!("{m:?}")).collect();
    format!(
        "[[upstreams]]\nname = \"{name}\"\nbase_url = \"{url}\"\nmodels = [{}]\ntimeout_ms = 5000\n{extra}",
        models.join(", ")
    )
}

/// A gateway whose upstreams are exactly `tables` (TOML), with an app and a reviewer key.
async fn gateway(tables: &str) -> (TestGateway, String, String) {
    let gw = TestGateway::start(GatewayOptions {
        extra_toml: tables.to_string(),
        ..GatewayOptions::default()
    })
    .await;
    let app = gw.key("acme", "app", None).await;
    let reviewer = gw.key("acme", "reviewer", None).await;
    (gw, app, reviewer)
}

async fn chat(gw: &TestGateway, key: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn interaction_id(resp: &reqwest::Response) -> String {
    resp.headers()["x-keel-interaction-id"]
        .to_str()
        .unwrap()
        .to_string()
}

/// The recorded interaction `id`, read with `key` (polled: the record may trail the reply).
async fn record(gw: &TestGateway, key: &str, id: &str) -> Value {
    for _ in 0..600 {
        let (status, v) = get_json(&format!("{}/api/interactions/{id}", gw.url()), key).await;
        if status == 200 {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("interaction {id} was never recorded");
}

#[tokio::test]
async fn a_429_is_retried_on_the_same_upstream() {
    let mock = MockUpstream::start(Script::new().then(Reply::error(429, "slow down")))
        .await
        .unwrap();
    let (gw, app, reviewer) = gateway(&upstream_toml(
        "only",
        &mock.base_url(),
        &["*"],
        "retries = 1\nbackoff_ms = 1\n",
    ))
    .await;
    let resp = chat(&gw, &app, json!({"model": "m", "messages": user("x")})).await;
    assert_eq!(resp.status(), 200);
    let rec = record(&gw, &reviewer, &interaction_id(&resp)).await;
    assert_eq!(mock.request_count(), 2, "the 429, then the retry");
    assert_eq!(rec["attempts"], 2, "{rec}");
    assert_eq!(rec["upstream"], "only", "{rec}");
}

#[tokio::test]
async fn backoff_doubles_between_retries() {
    // Every attempt fails; the gaps between attempts are at least 40, 80 and 160 ms. Only lower
    // bounds are asserted (a sleep never ends early), so a slow machine cannot fail this, and a
    // constant backoff (40, 40, 40) cannot pass it.
    let mock = MockUpstream::start(Script::new().default_reply(Reply::error(503, "down")))
        .await
        .unwrap();
    let (gw, app, _) = gateway(&upstream_toml(
        "flaky",
        &mock.base_url(),
        &["*"],
        "retries = 3\nbackoff_ms = 40\n",
    ))
    .await;
    let resp = chat(&gw, &app, json!({"model": "m", "messages": user("x")})).await;
    assert_eq!(resp.status(), 502);
    let at: Vec<_> = mock.received().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), 4, "1 try + 3 retries");
    for (i, want_ms) in [40u64, 80, 160].into_iter().enumerate() {
        let gap = at[i + 1].duration_since(at[i]);
        assert!(
            gap >= Duration::from_millis(want_ms),
            "gap before retry {} was {gap:?}, want at least {want_ms} ms",
            i + 1
        );
    }
}

#[tokio::test]
async fn api_key_env_sends_the_key_and_only_to_its_upstream() {
    // A variable name no other test uses; set before the gateway reads its config.
    let var = "KEEL_TEST_KNOBS_UPSTREAM_KEY";
    std::env::set_var(var, "sk-test-knobs-123");
    let with_key = MockUpstream::start(Script::new()).await.unwrap();
    let without = MockUpstream::start(Script::new()).await.unwrap();
    let tables = upstream_toml(
        "keyed",
        &with_key.base_url(),
        &["keyed-*"],
        &format!("api_key_env = \"{var}\"\n"),
    ) + &upstream_toml("open", &without.base_url(), &["*"], "");
    let (gw, app, _) = gateway(&tables).await;
    for model in ["keyed-model", "other-model"] {
        let resp = chat(&gw, &app, json!({"model": model, "messages": user("x")})).await;
        assert_eq!(resp.status(), 200, "{model}");
    }
    let seen = |m: &MockHandle| -> Vec<Option<String>> {
        m.received().into_iter().map(|r| r.authorization).collect()
    };
    assert_eq!(
        seen(&with_key),
        vec![Some("Bearer sk-test-knobs-123".to_string())]
    );
    assert_eq!(
        seen(&without),
        vec![None],
        "no key for an upstream without one"
    );
}

#[tokio::test]
async fn models_patterns_pick_the_upstream() {
    let gpt = MockUpstream::start(Script::new()).await.unwrap();
    let llama = MockUpstream::start(Script::new()).await.unwrap();
    let tables = upstream_toml("gpt", &gpt.base_url(), &["gpt-*"], "")
        + &upstream_toml("llama", &llama.base_url(), &["llama3"], "");
    let (gw, app, reviewer) = gateway(&tables).await;
    // model → the upstream that must serve it (None: no upstream serves it).
    for (model, want) in [
        ("gpt-4o", Some("gpt")),
        ("gpt-4o-mini", Some("gpt")),
        ("llama3", Some("llama")),
        ("llama3.1", None),
    ] {
        let resp = chat(&gw, &app, json!({"model": model, "messages": user("x")})).await;
        match want {
            Some(name) => {
                assert_eq!(resp.status(), 200, "{model}");
                let rec = record(&gw, &reviewer, &interaction_id(&resp)).await;
                assert_eq!(rec["upstream"], name, "{model}: {rec}");
            }
            None => assert_eq!(resp.status(), 404, "{model} is served by no upstream"),
        }
    }
    let models = |m: &MockHandle| -> Vec<String> {
        m.requests()
            .iter()
            .map(|r| r["model"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(models(&gpt), ["gpt-4o", "gpt-4o-mini"]);
    assert_eq!(models(&llama), ["llama3"]);
}

#[tokio::test]
async fn a_policy_route_reaches_the_named_upstream() {
    let default = MockUpstream::start(Script::new()).await.unwrap();
    let premium = MockUpstream::start(Script::new().default_reply(Reply::text("premium answer")))
        .await
        .unwrap();
    // `premium` serves no model by pattern: only the policy's route reaches it.
    let tables = upstream_toml("default", &default.base_url(), &["*"], "")
        + &upstream_toml("premium", &premium.base_url(), &["premium-only"], "");
    let (gw, app, reviewer) = gateway(&tables).await;
    let admin = gw.key("acme", "admin", None).await;
    let bundle = "name: route-test\nowner: keel-tests\nrules:\n  - id: vip-route\n    category: custom:routing\n    phase: input\n    when: context.user.startsWith(\"vip-\")\n    action:\n      route: {upstream: premium}\n";
    let r = client()
        .post(format!("{}/api/policies", gw.url()))
        .bearer_auth(&admin)
        .json(&json!({"files": {"policy.yaml": bundle}, "reason": "route test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let version = r.json::<Value>().await.unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string();
    let r = client()
        .post(format!("{}/api/policies/{version}/activate", gw.url()))
        .bearer_auth(&admin)
        // A routing-only bundle lacks the default pack's protections (the floor, issue 25).
        .json(&json!({"tenant": "acme", "allow_weaker_than_default": true,
                      "reason": "routing test without the default pack"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // user → upstream that must serve the request.
    for (user_id, want) in [("vip-7", "premium"), ("regular-1", "default")] {
        let resp = chat(
            &gw,
            &app,
            json!({"model": "m", "messages": user("hello"), "metadata": {"user": user_id}}),
        )
        .await;
        assert_eq!(resp.status(), 200, "{user_id}");
        let rec = record(&gw, &reviewer, &interaction_id(&resp)).await;
        assert_eq!(rec["upstream"], want, "{user_id}: {rec}");
    }
    assert_eq!(premium.request_count(), 1);
    assert_eq!(default.request_count(), 1);
}

/// Whether the ledger leaf of interaction `id` still holds its payload.
async fn payload_kept(gw: &TestGateway, auditor: &str, reviewer: &str, id: &str) -> bool {
    let rec = record(gw, reviewer, id).await;
    let index = rec["ledger_index"].as_u64().unwrap();
    let (status, leaf) =
        get_json(&format!("{}/api/ledger/leaves/{index}", gw.url()), auditor).await;
    assert_eq!(status, 200, "{leaf}");
    !leaf["payload"].is_null()
}

#[tokio::test]
async fn retention_erases_payloads_older_than_payload_days() {
    let mock = MockUpstream::start(Script::new()).await.unwrap();
    let clock = Arc::new(ManualClock::new(1_767_225_600_000)); // 2026-01-01
    let mut opts = GatewayOptions::with_upstream(&mock.base_url());
    opts.extra_toml = "[retention]\npayload_days = 30\n".into();
    let gw = TestGateway::start_with_clock(opts, clock.clone()).await;
    let app = gw.key("acme", "app", None).await;
    let reviewer = gw.key("acme", "reviewer", None).await;
    let auditor = gw.key("acme", "auditor", None).await;
    let old =
        interaction_id(&chat(&gw, &app, json!({"model": "m", "messages": user("old")})).await);
    clock.advance_ms(31 * DAY_MS);
    let new =
        interaction_id(&chat(&gw, &app, json!({"model": "m", "messages": user("new")})).await);
    // The server checks once a minute of its clock: move it on and wait for the erasure event.
    clock.advance_ms(61_000);
    let mut erased = false;
    for _ in 0..600 {
        if !payload_kept(&gw, &auditor, &reviewer, &old).await {
            erased = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(erased, "the 31-day-old payload was never erased");
    assert!(
        payload_kept(&gw, &auditor, &reviewer, &new).await,
        "a payload younger than 30 days is kept (same retention pass)"
    );
    let events = gw.store.events_after(0, 10_000).await.unwrap();
    let erasures: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "PayloadErased")
        .collect();
    assert_eq!(erasures.len(), 1, "one retention pass, one event");
    assert_eq!(erasures[0].actor, "system:retention");
}

/// `keel audit erase ARGS --reason r` against the gateway's config; returns the count printed.
/// Runs `keel audit erase ARGS` against the gateway's database. The subprocess runs off the test's
/// runtime: blocking the runtime would freeze the in-process gateway, possibly inside an open write
/// transaction, and the CLI would then wait out the busy timeout (seen as a flaky failure).
async fn erase(gw: &TestGateway, args: &[&str]) -> u64 {
    let mut cmd = keel_bin();
    cmd.args(["audit", "erase"])
        .args(args)
        .args(["--reason", "knob test", "--config"])
        .arg(&gw.config_path);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test]
async fn audit_erase_by_user_and_before_a_date() {
    let mock = MockUpstream::start(Script::new()).await.unwrap();
    let clock = Arc::new(ManualClock::new(1_767_225_600_000)); // 2026-01-01T00:00:00Z
    let gw = TestGateway::start_with_clock(
        GatewayOptions::with_upstream(&mock.base_url()),
        clock.clone(),
    )
    .await;
    let app = gw.key("acme", "app", None).await;
    let reviewer = gw.key("acme", "reviewer", None).await;
    let auditor = gw.key("acme", "auditor", None).await;
    let send = |text: &'static str, user_id: &'static str| {
        let (gw, app) = (&gw, &app);
        async move {
            interaction_id(
                &chat(
                    gw,
                    app,
                    json!({"model": "m", "messages": user(text), "metadata": {"user": user_id}}),
                )
                .await,
            )
        }
    };
    let jan_alice = send("jan alice", "alice").await;
    let jan_bob = send("jan bob", "bob").await;
    clock.set_ms(1_769_904_000_000); // 2026-02-01
    let feb_alice = send("feb alice", "alice").await;
    let feb_bob = send("feb bob", "bob").await;
    let kept = |id: String| {
        let (gw, auditor, reviewer) = (&gw, &auditor, &reviewer);
        async move { payload_kept(gw, auditor, reviewer, &id).await }
    };

    assert_eq!(erase(&gw, &["--user", "alice"]).await, 2);
    assert!(!kept(jan_alice.clone()).await && !kept(feb_alice.clone()).await);
    assert!(kept(jan_bob.clone()).await && kept(feb_bob.clone()).await);

    // Before mid-January: only bob's January interaction is left to erase.
    assert_eq!(erase(&gw, &["--before", "2026-01-15"]).await, 1);
    assert!(!kept(jan_bob).await);
    assert!(kept(feb_bob.clone()).await, "after the date: kept");
    assert_eq!(
        erase(&gw, &["--before", "2026-01-15T00:00:00Z"]).await,
        0,
        "nothing left"
    );
}

#[tokio::test]
async fn readyz_answers_503_while_draining() {
    // A slow stream keeps one request in flight, so the drain lasts until the client leaves;
    // the grace period is long enough not to end it first.
    let slow = Reply::stream(vec!["x "; 400], Duration::from_millis(250));
    let mock = MockUpstream::start(Script::new().default_reply(slow))
        .await
        .unwrap();
    let gw = TestGateway::start(GatewayOptions {
        upstreams: vec![("slow".into(), mock.base_url())],
        extra_toml: "[server]\nshutdown_grace_ms = 120000\n".into(),
        ..GatewayOptions::default()
    })
    .await;
    let app = gw.key("acme", "app", None).await;
    let state = gw.state().unwrap().clone();
    // A second listener on the same state: what a probe of this replica sees during the drain
    // (the draining listener itself no longer accepts connections).
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let probe_url = format!("http://{}/readyz", probe.local_addr().unwrap());
    let router = keel_gateway::app::build_router(state);
    tokio::spawn(async move { axum::serve(probe, router).await });
    let ready = client().get(&probe_url).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(&app)
        .json(&json!({"model": "m", "messages": user("x"), "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = futures::StreamExt::boxed(resp.bytes_stream());
    let first = futures::StreamExt::next(&mut body).await.unwrap().unwrap();
    assert!(!first.is_empty(), "the stream is in flight");
    let shutdown = tokio::spawn(gw.shutdown());
    let mut status = 0;
    for _ in 0..1200 {
        status = client()
            .get(&probe_url)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, 503, "/readyz while draining");
    let text = client()
        .get(&probe_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text.trim(), "draining");
    assert!(
        !shutdown.is_finished(),
        "the drain waits for the stream in flight"
    );
    // The client goes away: the drain ends and the shutdown completes.
    drop(body);
    tokio::time::timeout(Duration::from_secs(60), shutdown)
        .await
        .expect("shutdown after the last request left")
        .unwrap();
}

#[tokio::test]
async fn the_grace_period_bounds_the_drain() {
    // The request in flight would hold the drain for two minutes; a 200 ms grace period ends it.
    let mock = MockUpstream::start(Script::new().default_reply(Reply::Hang))
        .await
        .unwrap();
    let gw = TestGateway::start(GatewayOptions {
        upstreams: vec![("hang".into(), mock.base_url())],
        timeout_ms: 120_000,
        extra_toml: "[server]\nshutdown_grace_ms = 200\n".into(),
        ..GatewayOptions::default()
    })
    .await;
    let app = gw.key("acme", "app", None).await;
    let url = format!("{}/v1/chat/completions", gw.url());
    let inflight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .bearer_auth(&app)
            .json(&json!({"model": "m", "messages": user("x")}))
            .timeout(Duration::from_secs(300))
            .send()
            .await
    });
    wait_until("the request reached the upstream", || {
        mock.request_count() == 1
    })
    .await;
    // Generous: a broken grace period would wait the upstream's 120 s timeout.
    tokio::time::timeout(Duration::from_secs(60), gw.shutdown())
        .await
        .expect("the shutdown ended after the grace period, not the request");
    inflight.abort();
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..1200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("keel.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{d}\"\n[[upstreams]]\nname = \"u\"\nbase_url = \"http://127.0.0.1:9/v1\"\n[log]\nformat = \"json\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let mut child = keel_bin()
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("KEEL_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read stderr until the "listening" line, then stop the server.
    let stderr = child.stderr.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let done = line.contains("keel gateway listening");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let lines = tokio::time::timeout(Duration::from_secs(120), lines)
        .await
        .expect("the server logged that it listens")
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{v}");
    }
    let listening: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(listening["fields"]["message"], "keel gateway listening");
    assert_eq!(listening["level"], "INFO");
    assert_eq!(
        listening["fields"]["addr"],
        format!("127.0.0.1:{port}"),
        "{listening}"
    );
}
