//! Facts with effective dates through the gateway: a scheduled change corrects replies from its
//! date on (manual clock), in JSON and streams, English and Japanese; the `/api/facts` roles,
//! tenants and validation errors.

use std::sync::Arc;
use std::time::Duration;

use keel_core::clock::ManualClock;
use keel_core::Clock;
use serde_json::{json, Value};

use crate::support::*;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const FEB: i64 = 1_769_904_000_000; // 2026-02-01T00:00:00Z

async fn post(url: &str, key: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

fn tax(value: u32, from: &str) -> Value {
    json!({"key": "jp.consumption_tax", "kind": "percent", "value": value,
           "scope": {"jurisdictions": ["JP"]}, "effective_from": from,
           "source": "消費税法", "owner": "tax-team",
           "subjects": {"en": ["consumption tax"], "ja": ["消費税"]}})
}

async fn start(script: Script) -> (Pair, Arc<ManualClock>, String) {
    let clock = Arc::new(ManualClock::new(T0));
    let mock = MockUpstream::start(script).await.unwrap();
    let opts = GatewayOptions::with_upstream(&mock.base_url());
    let gw = TestGateway::start_with_clock(opts, clock.clone() as Arc<dyn Clock>).await;
    let app = gw.key("acme", "app", Some("acme-app")).await;
    let reviewer = gw.key("acme", "reviewer", Some("rita")).await;
    let admin = gw.key("*", "admin", Some("ada")).await;
    let p = Pair {
        mock,
        gw,
        app,
        reviewer,
    };
    (p, clock, admin)
}

async fn ask(p: &Pair, stream: bool) -> reqwest::Response {
    p.chat(
        json!({"model": "m", "messages": user("消費税は？ What is the consumption tax?"),
                  "stream": stream, "metadata": {"jurisdiction": "JP", "locale": "ja-JP"}}),
    )
    .await
}

#[tokio::test]
async fn a_scheduled_fact_corrects_replies_from_its_effective_date_in_json_and_streams() {
    let stale = "The consumption tax is 8%. 消費税は８％です。";
    let pieces = [
        "消費税は",
        "８",
        "％で",
        "す。 The consumption tax is 8",
        "%, and the income tax is 8%.",
    ];
    let script = Script::new()
        .then(Reply::text(stale))
        .then(Reply::text(stale))
        .then(Reply::stream(pieces, Duration::from_millis(5)));
    let (p, clock, admin) = start(script).await;
    // 8% in force now; 10% scheduled for February.
    let (s, v) = post(
        &p.url("/api/facts"),
        &admin,
        json!({"facts": [tax(8, "2014-04-01"), tax(10, "2026-02-01")], "reason": "rates"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");

    // January: the reply quotes the value in force and is left alone.
    let resp = ask(&p, false).await;
    assert_eq!(resp.headers()["x-keel-decision"], "allow");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], stale);

    // February, by the clock alone: the same reply is corrected.
    clock.advance_ms(FEB - T0);
    let resp = ask(&p, false).await;
    assert_eq!(resp.headers()["x-keel-decision"], "correct");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "The consumption tax is 10%. 消費税は１０％です。"
    );
    let rec = p
        .wait_interaction(body["id"].as_str().unwrap(), |_| true)
        .await;
    let facts = &rec["decision"]["output"][0]["facts"];
    assert_eq!(facts.as_array().map(Vec::len), Some(2), "{rec}");
    assert_eq!(facts[0]["fact"], "jp.consumption_tax");
    assert_eq!(facts[0]["status"], "stale");
    assert_eq!(facts[0]["stated"], "8%");
    assert_eq!(facts[0]["current"], "10%");
    assert_eq!(facts[0]["corrected"], true);

    // Streamed, with the values cut across chunks: the stale value never leaks; an unknown
    // subject (income tax) is left alone.
    let resp = ask(&p, true).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let contents: Vec<String> = sse_data(&text)
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let joined = contents.concat();
    assert_eq!(
        joined,
        "消費税は１０％です。 The consumption tax is 10%, and the income tax is 8%."
    );
    for c in &contents {
        assert!(!c.contains('８'), "chunk {c:?} leaks the stale value");
    }
}

#[tokio::test]
async fn the_facts_api_has_roles_tenants_history_and_clear_errors() {
    let (p, _clock, admin) = start(Script::new()).await;
    let (s, v) = post(
        &p.url("/api/facts"),
        &admin,
        json!({"fact": tax(8, "2014-04-01"), "reason": "initial"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = post(
        &p.url("/api/facts"),
        &admin,
        json!({"fact": tax(10, "2019-10-01"), "reason": "rise"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let mut acme = tax(12, "2020-01-01");
    acme["key"] = json!("acme.fee_rate");
    acme["scope"] = json!({"tenants": ["acme"]});
    let (s, v) = post(
        &p.url("/api/facts"),
        &admin,
        json!({"fact": acme, "reason": "acme only"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");

    // In force at a time; history with actor and reason.
    let (s, v) = p
        .api("/api/facts?at=2019-01-01&key=jp.consumption_tax")
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"][0]["fact"]["value"], 8);
    assert_eq!(v["data"][0]["effective_end"], "2019-10-01T00:00:00+00:00");
    let (_, v) = p.api("/api/facts?key=jp.consumption_tax").await;
    assert_eq!(v["data"][0]["fact"]["value"], 10);
    let (s, v) = p.api("/api/facts/jp.consumption_tax/history").await;
    assert_eq!(s, 200);
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["data"][1]["reason"], "rise");
    assert!(v["data"][1]["actor"].as_str().unwrap().contains("ada"));

    // Roles and tenants.
    let (s, _) = get_json(&p.url("/api/facts"), &p.app).await;
    assert_eq!(s, 403);
    let (s, v) = post(
        &p.url("/api/facts"),
        &p.reviewer,
        json!({"fact": tax(5, "2030-01-01"), "reason": "r"}),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    let eve = p.gw.key("globex", "auditor", Some("eve")).await;
    let (s, _) = get_json(&p.url("/api/facts/acme.fee_rate/history"), &eve).await;
    assert_eq!(s, 404, "another tenant's fact is a 404");
    let (s, v) = get_json(&p.url("/api/facts"), &eve).await;
    assert_eq!(s, 200);
    let keys: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["fact"]["key"].as_str())
        .collect();
    assert_eq!(keys, vec!["jp.consumption_tax"]);
    let (s, _) = p.api("/api/facts/no.such.fact/history").await;
    assert_eq!(s, 404);

    // Bad input: wrong type, unknown unit, overlapping validity.
    let mut wrong = tax(8, "2030-01-01");
    wrong["value"] = json!("ten");
    let mut unit = tax(8, "2030-01-01");
    unit["kind"] = json!("furlongs");
    let mut a = tax(9, "2031-01-01");
    a["effective_until"] = json!("2033-01-01");
    let mut b = tax(11, "2032-01-01");
    b["effective_until"] = json!("2034-01-01");
    for (body, want) in [
        (json!({"fact": wrong, "reason": "r"}), "must be a number"),
        (
            json!({"fact": unit, "reason": "r"}),
            "unknown unit `furlongs`",
        ),
        (json!({"facts": [a, b], "reason": "r"}), "overlaps"),
    ] {
        let (s, v) = post(&p.url("/api/facts"), &admin, body).await;
        assert_eq!(s, 400, "{v}");
        let e = assert_error_shape(&v);
        assert!(e["message"].as_str().unwrap().contains(want), "{v}");
    }
    let (_, v) = p.api("/api/facts/jp.consumption_tax/history").await;
    assert_eq!(
        v["data"].as_array().map(Vec::len),
        Some(2),
        "nothing half-applied"
    );
}

fn keel(args: &[&str], config: &std::path::Path) -> std::process::Output {
    keel_bin()
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run keel")
}

#[tokio::test]
async fn cli_facts_set_list_history_import_and_a_running_server_obeys() {
    let p =
        Pair::start(Script::new().default_reply(Reply::text("The consumption tax is 8%."))).await;
    let cfg = p.gw.config_path.clone();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("facts.csv");
    std::fs::write(
        &csv,
        "key,kind,value,currency,effective_from,jurisdictions,subjects_en,subjects_ja\n\
         jp.annual_fee,currency,\"1,200\",JPY,2020-01-01,JP,annual fee,年会費\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "- {key: k, kind: furlongs, value: 1, effective_from: 2020-01-01, subjects: {en: [k]}}\n",
    )
    .unwrap();
    let (set1, set2, list_old, history, import, bad_import, bad_csv) =
        tokio::task::spawn_blocking({
            let cfg = cfg.clone();
            move || {
                let set1 = keel(
                    &[
                        "facts",
                        "set",
                        "jp.consumption_tax",
                        "--kind",
                        "percent",
                        "--value",
                        "8",
                        "--from",
                        "2014-04-01",
                        "--jurisdiction",
                        "JP",
                        "--subject-en",
                        "consumption tax",
                        "--subject-ja",
                        "消費税",
                        "--source",
                        "消費税法",
                        "--reason",
                        "initial",
                    ],
                    &cfg,
                );
                let set2 = keel(
                    &[
                        "facts",
                        "set",
                        "jp.consumption_tax",
                        "--value",
                        "10",
                        "--from",
                        "2019-10-01",
                        "--reason",
                        "rate rise",
                    ],
                    &cfg,
                );
                let list_old = keel(&["facts", "list", "--at", "2015-01-01"], &cfg);
                let history = keel(&["facts", "history", "jp.consumption_tax"], &cfg);
                let import = keel(
                    &["facts", "import", csv.to_str().unwrap(), "--reason", "bulk"],
                    &cfg,
                );
                let bad_import = keel(
                    &["facts", "import", bad.to_str().unwrap(), "--reason", "bulk"],
                    &cfg,
                );
                let bad_csv = keel(&["facts", "import", csv.to_str().unwrap()], &cfg);
                (set1, set2, list_old, history, import, bad_import, bad_csv)
            }
        })
        .await
        .unwrap();
    for o in [&set1, &set2, &list_old, &history, &import] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let list_old = String::from_utf8_lossy(&list_old.stdout).to_string();
    assert!(
        list_old.contains("jp.consumption_tax\t8%\tjurisdictions=JP"),
        "{list_old}"
    );
    // Issue 25, item 13: `facts set` prints what it set.
    let said = String::from_utf8_lossy(&set2.stdout).to_string();
    assert!(
        said.starts_with("set jp.consumption_tax = 10% scope jurisdictions=JP from 2019-10-01"),
        "{said}"
    );
    let history = String::from_utf8_lossy(&history.stdout).to_string();
    assert_eq!(history.lines().count(), 3, "{history}");
    assert!(history.contains("rate rise"), "{history}");
    assert!(!bad_import.status.success());
    assert!(String::from_utf8_lossy(&bad_import.stderr).contains("unknown unit `furlongs`"));
    assert!(!bad_csv.status.success(), "--reason is required");
    // History rows for facts show the key (and value).
    let policy_history = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || keel(&["policy", "history"], &cfg)
    })
    .await
    .unwrap();
    let policy_history = String::from_utf8_lossy(&policy_history.stdout).to_string();
    assert!(
        policy_history.contains("fact:jp.consumption_tax=10"),
        "{policy_history}"
    );

    // A running server picks the change up at its next facts refresh and corrects the reply
    // (polled against a generous deadline).
    let mut last = Value::Null;
    for _ in 0..300 {
        let resp = p
            .chat(
                json!({"model": "m", "messages": user("tax?"), "metadata": {"jurisdiction": "JP"}}),
            )
            .await;
        last = resp.json().await.unwrap();
        if last["choices"][0]["message"]["content"] == "The consumption tax is 10%." {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server never corrected the reply: {last}");
}

/// Issue 25, defect 2: a stream said `x-keel-decision: allow` (headers leave before the body)
/// while its output was corrected. The header is the input decision (also under its honest
/// name); the final decision comes on the last chunk (`keel`) and as an HTTP trailer.
#[tokio::test]
async fn stream_header_said_allow_when_the_output_was_corrected() {
    let pieces = ["The consumption", " tax is 8", "%."];
    let script = Script::new()
        .then(Reply::stream(pieces, Duration::from_millis(2)))
        .then(Reply::stream(pieces, Duration::from_millis(2)));
    let (p, clock, admin) = start(script).await;
    let (s, v) = post(
        &p.url("/api/facts"),
        &admin,
        json!({"facts": [tax(8, "2014-04-01"), tax(10, "2026-02-01")], "reason": "rates"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    clock.advance_ms(FEB - T0);

    let resp = ask(&p, true).await;
    assert_eq!(
        resp.headers()["x-keel-decision"],
        "allow",
        "kept: the input decision"
    );
    assert_eq!(resp.headers()["x-keel-input-decision"], "allow");
    assert_eq!(resp.headers()["trailer"], "x-keel-final-decision");
    let text = resp.text().await.unwrap();
    let chunks: Vec<Value> = sse_data(&text)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .collect();
    let last = chunks.last().unwrap();
    assert_eq!(
        last["keel"],
        json!({"decision": "correct", "input_decision": "allow", "output_decision": "correct"}),
        "{text}"
    );
    assert_eq!(
        chunks.iter().filter(|c| c.get("keel").is_some()).count(),
        1,
        "only the last chunk carries it"
    );

    // The trailer, read off the wire by a client that accepts trailers.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = p.gw.url().trim_start_matches("http://").to_string();
    let body =
        json!({"model": "m", "messages": user("What is the consumption tax?"), "stream": true,
                      "metadata": {"jurisdiction": "JP"}})
        .to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\nte: trailers\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        p.app,
        body.len()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).to_lowercase();
    let tail = raw.rsplit("data: [done]").next().unwrap_or_default();
    assert!(
        tail.contains("\r\n0\r\nx-keel-final-decision: correct\r\n"),
        "{raw}"
    );
}
