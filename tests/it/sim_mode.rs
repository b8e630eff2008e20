//! Sim mode (`[sim] manual_clock = true`): the clock and barrier endpoints, workers driven only
//! by the barrier, and ids that do not depend on the order concurrent requests arrive in.

use serde_json::{json, Value};

use crate::support::*;

const START_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn sim_toml(o: &mut GatewayOptions) {
    o.retries = 0;
    o.extra_toml.push_str(&format!(
        "[sim]\nmanual_clock = true\nstart_ms = {START_MS}\n"
    ));
}

struct Sim {
    p: Pair,
    admin: String,
}

impl Sim {
    async fn start(script: Script) -> Self {
        let p = Pair::start_with(script, sim_toml).await;
        let admin = p.gw.key("acme", "admin", Some("ada")).await;
        Sim { p, admin }
    }

    async fn call(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        let c = client();
        let url = self.p.url(path);
        let req = match method {
            "POST" => c.post(url),
            _ => c.get(url),
        };
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        let resp = req.bearer_auth(key).send().await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn sim_endpoints_are_404_without_sim_mode() {
    let p = Pair::start(Script::new()).await;
    let admin = p.gw.key("acme", "admin", Some("ada")).await;
    for (method, path) in [
        ("GET", "/api/sim/clock"),
        ("GET", "/api/sim/barrier"),
        ("POST", "/api/sim/clock"),
    ] {
        let req = match method {
            "POST" => client().post(p.url(path)).json(&json!({"now_ms": 1})),
            _ => client().get(p.url(path)),
        };
        let resp = req.bearer_auth(&admin).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{method} {path}");
        assert_error_shape(&resp.json().await.unwrap());
    }
}

#[tokio::test]
async fn the_clock_moves_only_forward_and_only_for_admins() {
    let s = Sim::start(Script::new()).await;
    let check = |input: (&'static str, Option<Value>, bool), expected: (u16, Option<i64>)| {
        let s = &s;
        async move {
            let (method, body, as_admin) = input;
            let key = if as_admin { &s.admin } else { &s.p.reviewer };
            let (status, v) = s.call(method, "/api/sim/clock", key, body.clone()).await;
            assert_eq!(status, expected.0, "{method} {body:?}: {v}");
            match expected.1 {
                Some(ms) => assert_eq!(v["now_ms"], ms, "{v}"),
                None => {
                    assert_error_shape(&v);
                }
            }
        }
    };
    check(("GET", None, true), (200, Some(START_MS))).await;
    check(("GET", None, false), (403, None)).await;
    check(
        ("POST", Some(json!({"now_ms": START_MS + 60_000})), false),
        (403, None),
    )
    .await;
    check(
        ("POST", Some(json!({"now_ms": START_MS + 60_000})), true),
        (200, Some(START_MS + 60_000)),
    )
    .await;
    check(
        ("POST", Some(json!({"now_ms": START_MS})), true),
        (409, None),
    )
    .await;
    check(("POST", Some(json!({"now_ms": "soon"})), true), (400, None)).await;
    check(
        ("POST", Some(json!({"now_ms": 1, "extra": 1})), true),
        (400, None),
    )
    .await;
    check(("GET", None, true), (200, Some(START_MS + 60_000))).await;

    // Interactions carry simulated time.
    let resp =
        s.p.chat(json!({"model": "m", "messages": user("hello")}))
            .await;
    assert_eq!(resp.status(), 200);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, ix) = s.p.api(&format!("/api/interactions/{id}")).await;
    assert_eq!(ix["started_ms"], START_MS + 60_000, "{ix}");

    // The barrier's bad inputs.
    let (status, v) = s
        .call("GET", "/api/sim/barrier?seq=-1", &s.admin, None)
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = s
        .call("GET", "/api/sim/barrier?seq=999999", &s.admin, None)
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = s
        .call("GET", "/api/sim/barrier?seq=x", &s.admin, None)
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, _) = s.call("GET", "/api/sim/barrier", &s.p.reviewer, None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn alerts_wait_for_the_barrier_in_sim_mode() {
    let s = Sim::start(Script::new()).await;
    let send = |locale: &'static str, i: usize| {
        s.p.chat(json!({"model": "m", "messages": user(&format!("{locale} {i}")),
                        "metadata": {"locale": locale, "conversation_id": format!("{locale}-{i}")}}))
    };
    // Within one tick the order of events is arbitrary (sorted by content): advance the
    // simulated clock every ten requests, as the simulator does every tick.
    let tick = |i: usize| {
        let s = &s;
        async move {
            if i.is_multiple_of(10) {
                let (status, _) = s
                    .call(
                        "POST",
                        "/api/sim/clock",
                        &s.admin,
                        Some(json!({"now_ms": START_MS + i as i64 * 1_000})),
                    )
                    .await;
                assert_eq!(status, 200);
            }
        }
    };
    for i in 0..150 {
        tick(i).await;
        assert_eq!(send("en", i).await.status(), 200);
        assert_eq!(send("ja", i).await.status(), 200);
    }
    for i in 150..350 {
        tick(i).await;
        assert_eq!(send("en", i).await.status(), 200);
        if i % 2 == 0 {
            s.p.mock.push(Reply::error(500, "model overloaded"));
            assert_eq!(send("ja", i).await.status(), 502);
        } else {
            assert_eq!(send("ja", i).await.status(), 200);
        }
    }
    // Real time passes, but no timer drives the monitor in sim mode: wait until the server's
    // own timers have demonstrably run (its 250 ms key refresh noticed two revocations, longer
    // than the monitor's 200 ms period outside sim mode), then look for alerts and state.
    for round in 0..2 {
        timers_ran(&s, round).await;
    }
    assert!(
        s.p.gw.store.load_state("monitor").await.unwrap().is_none(),
        "nothing saved a monitor state before the barrier"
    );
    let errors = |v: &Value| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["metric"] == "upstream_error_rate")
            .count()
    };
    let (_, before) = s.p.api("/api/alerts").await;
    assert_eq!(errors(&before), 0, "{before}");
    let last = s.p.gw.store.last_seq().await.unwrap();
    let (status, v) = s
        .call(
            "GET",
            &format!("/api/sim/barrier?seq={last}"),
            &s.admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["seq"].as_i64().unwrap() >= last, "{v}");
    let (_, after) = s.p.api("/api/alerts").await;
    assert_eq!(errors(&after), 1, "{after}");
    let state = s.p.gw.store.load_state("monitor").await.unwrap();
    assert!(state.is_some(), "the barrier saved the monitor's state");
}

/// Returns once the server's background timer has run after this call: a fresh key is used
/// (cached), revoked through the store, and polled until the key refresh drops it.
async fn timers_ran(s: &Sim, round: usize) {
    let name = format!("ticker-{round}");
    let token = s.p.gw.key("acme", "reviewer", Some(&name)).await;
    let (status, _) = get_json(&s.p.url("/api/alerts"), &token).await;
    assert_eq!(status, 200);
    let keys = s.p.gw.store.list_keys().await.unwrap();
    let record = keys
        .iter()
        .find(|k| k.name.as_deref() == Some(name.as_str()))
        .unwrap();
    let revoke = keel_core::auth::revoke_key_event(record, "test", s.p.gw.clock.as_ref());
    s.p.gw.store.append(vec![revoke]).await.unwrap();
    for _ in 0..600 {
        if get_json(&s.p.url("/api/alerts"), &token).await.0 == 401 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the key refresh never ran");
}

/// Sends the same 40 requests concurrently, in the given order, and returns the ids, sorted.
async fn concurrent_ids(order: impl Iterator<Item = usize>) -> Vec<String> {
    let s = Sim::start(Script::new()).await;
    let mut set = tokio::task::JoinSet::new();
    for i in order {
        let url = s.p.url("/v1/chat/completions");
        let key = s.p.app.clone();
        // Two identical requests per conversation: the occurrence counter keeps them apart.
        let body = json!({"model": "m", "messages": user(&format!("q{}", i / 2)),
                          "metadata": {"conversation_id": format!("c{}", i / 2)}});
        set.spawn(async move {
            let r = client()
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        });
    }
    let mut ids: Vec<String> = set.join_all().await;
    ids.sort();
    ids
}

#[tokio::test]
async fn ids_do_not_depend_on_arrival_order_in_sim_mode() {
    let forward = concurrent_ids(0..40).await;
    let backward = concurrent_ids((0..40).rev()).await;
    assert_eq!(forward.len(), 40);
    let unique: std::collections::BTreeSet<_> = forward.iter().collect();
    assert_eq!(unique.len(), 40, "identical requests get distinct ids");
    assert_eq!(forward, backward);
}

#[tokio::test]
async fn the_barrier_waits_for_asynchronously_written_interactions() {
    let p = Pair::start_with(Script::new(), |o| {
        sim_toml(o);
        o.durability = "async";
    })
    .await;
    let admin = p.gw.key("acme", "admin", Some("ada")).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..60 {
        let url = p.url("/v1/chat/completions");
        let key = p.app.clone();
        set.spawn(async move {
            let body = json!({"model": "m", "messages": user(&format!("q{i}"))});
            client()
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    for status in set.join_all().await {
        assert_eq!(status, 200);
    }
    let (status, v) = get_json(&p.url("/api/sim/barrier"), &admin).await;
    assert_eq!(status, 200, "{v}");
    let seq = v["seq"].as_i64().unwrap();
    let events = p.gw.store.events_after(0, 10_000).await.unwrap();
    let interactions = events
        .iter()
        .filter(|e| e.seq <= seq && e.kind == "InteractionRecorded")
        .count();
    assert_eq!(
        interactions, 60,
        "every acknowledged interaction is behind the barrier"
    );
}
