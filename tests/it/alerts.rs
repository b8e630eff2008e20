//! The alert lifecycle over HTTP and the CLI: open → acknowledged → resolved (or open →
//! resolved), `GET /api/alerts?status=`, `keel_alerts_open`, and bad input: unknown id and
//! another tenant's 404, empty reason and unknown proposal 400, wrong role 403, acting on a
//! resolved alert 409.

use keel_core::{EventKind, NewEvent};
use serde_json::{json, Value};

use crate::support::*;

/// Appends an `AlertRaised` as the monitor would (the fixture: alerts without drift traffic).
async fn raise(p: &Pair, id: &str, tenant: &str) {
    let payload = json!({
        "id": id, "metric": "wrong_answer_rate",
        "segment": {"tenant": tenant, "locale": "en", "jurisdiction": "JP", "policy_version": "v1", "topic": "tax"},
        "segment_key": format!("{tenant}|en|JP|v1|tax"), "detector": "adwin",
        "before": 0.01, "after": 0.2, "evidence": [], "severity": "high",
        "raised_by_seq": 1, "samples": 100
    });
    p.gw.store
        .append(vec![NewEvent {
            kind: EventKind::ALERT_RAISED.into(),
            actor: "monitor".into(),
            tenant: tenant.into(),
            at_ms: p.gw.clock.now_ms(),
            payload,
        }])
        .await
        .unwrap();
}

async fn post(p: &Pair, path: &str, key: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(p.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn ids(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

async fn open_gauge(p: &Pair) -> f64 {
    let text = client()
        .get(p.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("keel_alerts_open "))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test]
async fn alert_lifecycle_over_http() {
    let p = Pair::start(Script::new()).await;
    let admin = p.gw.key("acme", "admin", Some("ada")).await;
    let auditor = p.gw.key("acme", "auditor", Some("aud")).await;
    raise(&p, "al_1", "acme").await;
    raise(&p, "al_2", "acme").await;
    raise(&p, "al_other", "globex").await;

    let (s, list) = p.api("/api/alerts?status=open").await;
    assert_eq!(s, 200);
    assert_eq!(ids(&list), ["al_1", "al_2"]);
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["status"] == "open"));
    let (s, e) = p.api("/api/alerts?status=closed").await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(assert_error_shape(&e)["param"], "status");

    // Bad input.
    for (path, key, body, want) in [
        (
            "/api/alerts/al_404/ack",
            &p.reviewer,
            json!({"reason": "x"}),
            404,
        ),
        (
            "/api/alerts/al_other/ack",
            &p.reviewer,
            json!({"reason": "x"}),
            404,
        ),
        (
            "/api/alerts/al_1/ack",
            &p.reviewer,
            json!({"reason": "  "}),
            400,
        ),
        ("/api/alerts/al_1/ack", &p.reviewer, json!({}), 400),
        (
            "/api/alerts/al_1/ack",
            &p.reviewer,
            json!({"reason": 3}),
            400,
        ),
        ("/api/alerts/al_1/ack", &p.app, json!({"reason": "x"}), 403),
        (
            "/api/alerts/al_1/ack",
            &auditor,
            json!({"reason": "x"}),
            403,
        ),
        (
            "/api/alerts/al_1/resolve",
            &p.reviewer,
            json!({"reason": "x", "proposal": "pr_nope"}),
            400,
        ),
    ] {
        let (s, e) = post(&p, path, key, body.clone()).await;
        assert_eq!(s, want, "{path} {body}: {e}");
        assert_error_shape(&e);
    }
    let (s, _) = p.api("/api/alerts/al_other").await;
    assert_eq!(s, 404);
    let (s, _) = p.api("/api/alerts/al_404").await;
    assert_eq!(s, 404);
    assert_eq!(open_gauge(&p).await, 3.0);

    // open → acknowledged → resolved.
    let (s, a) = post(
        &p,
        "/api/alerts/al_1/ack",
        &p.reviewer,
        json!({"reason": "looking into it"}),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["status"], "acknowledged");
    assert_eq!(a["acknowledged"]["reason"], "looking into it");
    assert!(
        a["acknowledged"]["by"].as_str().unwrap().contains("rita"),
        "{a}"
    );
    assert_eq!(open_gauge(&p).await, 2.0);
    let (s, e) = post(
        &p,
        "/api/alerts/al_1/ack",
        &admin,
        json!({"reason": "again"}),
    )
    .await;
    assert_eq!(s, 409, "{e}");
    let (s, a) = post(
        &p,
        "/api/alerts/al_1/resolve",
        &admin,
        json!({"reason": "fact updated"}),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["status"], "resolved");
    assert_eq!(a["resolved"]["reason"], "fact updated");
    assert_eq!(a["resolved"]["proposal"], Value::Null);
    assert_eq!(a["acknowledged"]["reason"], "looking into it");
    for verb in ["ack", "resolve"] {
        let (s, e) = post(
            &p,
            &format!("/api/alerts/al_1/{verb}"),
            &admin,
            json!({"reason": "x"}),
        )
        .await;
        assert_eq!(s, 409, "{verb}: {e}");
        assert!(assert_error_shape(&e)["message"]
            .as_str()
            .unwrap()
            .contains("resolved"));
    }
    // open → resolved directly.
    let (s, a) = post(
        &p,
        "/api/alerts/al_2/resolve",
        &p.reviewer,
        json!({"reason": "noise", "proposal": null}),
    )
    .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["status"], "resolved");
    assert_eq!(a["acknowledged"], Value::Null);
    assert_eq!(open_gauge(&p).await, 1.0);

    let (_, list) = p.api("/api/alerts?status=resolved").await;
    assert_eq!(ids(&list), ["al_1", "al_2"]);
    let (_, list) = p.api("/api/alerts?status=open").await;
    assert!(ids(&list).is_empty());
    let (s, one) = p.api("/api/alerts/al_1").await;
    assert_eq!(s, 200);
    assert_eq!(one["status"], "resolved");
    assert_eq!(one["metric"], "wrong_answer_rate");
}

/// Runs the `keel` binary off the runtime thread (the in-process gateway keeps running).
async fn keel(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || keel_bin().args(&args).output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn alert_lifecycle_from_the_terminal() {
    let p = Pair::start(Script::new()).await;
    raise(&p, "al_cli", "acme").await;
    raise(&p, "al_cli2", "acme").await;
    let cfg = p.gw.config_path.display().to_string();
    let run = |verb: &[&str]| {
        let mut args: Vec<String> = vec!["alerts".into()];
        args.extend(verb.iter().map(|s| s.to_string()));
        args.extend(["--config".into(), cfg.clone()]);
        keel(args)
    };
    let out = run(&["list", "--status", "open"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("ID\tSTATUS"), "{text}");
    assert!(
        text.contains("al_cli\topen\thigh\twrong_answer_rate"),
        "{text}"
    );

    let out = run(&["ack", "al_cli", "--key", &p.reviewer, "--reason", "on it"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "al_cli\tacknowledged"
    );
    let out = run(&[
        "resolve",
        "al_cli",
        "--key",
        &p.reviewer,
        "--reason",
        "fixed",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["show", "al_cli"]).await;
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["status"], "resolved");
    assert_eq!(shown["resolved"]["reason"], "fixed");
    // The HTTP API sees what the CLI did.
    let (_, one) = p.api("/api/alerts/al_cli").await;
    assert_eq!(one["acknowledged"]["reason"], "on it");

    // Bad input fails with a message, not a panic.
    for (verb, want) in [
        (
            vec![
                "resolve",
                "al_cli",
                "--key",
                &p.reviewer,
                "--reason",
                "again",
            ],
            "resolved",
        ),
        (
            vec!["ack", "al_cli2", "--key", &p.reviewer, "--reason", ""],
            "reason",
        ),
        (
            vec!["ack", "al_cli2", "--key", &p.app, "--reason", "x"],
            "role",
        ),
        (
            vec!["ack", "al_none", "--key", &p.reviewer, "--reason", "x"],
            "No alert",
        ),
    ] {
        let out = run(&verb).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{verb:?} succeeded");
        assert!(err.contains(want), "{verb:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = run(&["list", "--status", "open"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("al_cli2\topen") && !text.contains("al_cli\t"),
        "{text}"
    );
}
