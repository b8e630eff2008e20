//! Watch end to end: one segment's upstream error rate jumps through the gateway; an alert
//! follows within a bounded number of events while an unchanged segment stays quiet.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn an_error_rate_jump_in_one_segment_raises_one_alert_there_only() {
    let p = Pair::start_with(Script::new(), |o| o.retries = 0).await;
    let send = |locale: &'static str, i: usize| {
        p.chat(
            json!({"model": "m", "messages": user(&format!("{locale} {i}")),
                      "metadata": {"locale": locale, "conversation_id": format!("{locale}-{i}")}}),
        )
    };
    for i in 0..150 {
        assert_eq!(send("en", i).await.status(), 200);
        assert_eq!(send("ja", i).await.status(), 200);
    }
    let (_, before) = p.api("/api/interactions?limit=1").await;
    let first_bad_seq = before["data"][0]["seq"].as_i64().unwrap() + 1;
    for i in 150..350 {
        assert_eq!(send("en", i).await.status(), 200);
        if i % 2 == 0 {
            p.mock.push(Reply::error(500, "model overloaded"));
            assert_eq!(send("ja", i).await.status(), 502);
        } else {
            assert_eq!(send("ja", i).await.status(), 200);
        }
    }
    let mut alerts = Vec::new();
    for _ in 0..100 {
        let (s, body) = p.api("/api/alerts").await;
        assert_eq!(s, 200);
        // Only the jumped metric matters here (latency on a shared machine may move too).
        alerts = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["metric"] == "upstream_error_rate")
            .cloned()
            .collect();
        if !alerts.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!alerts.is_empty(), "no alert after the jump");
    for a in &alerts {
        assert_eq!(a["metric"], "upstream_error_rate", "{a}");
        assert_eq!(
            a["segment"]["locale"], "ja",
            "the unchanged segment stays quiet: {a}"
        );
    }
    let a: &Value = &alerts[0];
    assert_eq!(alerts.len(), 1, "deduplicated by the cooldown: {alerts:?}");
    let raised_by = a["raised_by_seq"].as_i64().unwrap();
    assert!(
        raised_by - first_bad_seq < 200,
        "detected within 200 events of the jump ({first_bad_seq} → {raised_by})"
    );
    assert!(a["after"].as_f64().unwrap() > a["before"].as_f64().unwrap());
    assert!(
        a["severity"] == "high" || a["severity"] == "medium",
        "an error-rate rise is never low: {a}"
    );
    let evidence = a["evidence"].as_array().unwrap();
    assert!(!evidence.is_empty());
    let (s, ev) = p
        .api(&format!(
            "/api/interactions/{}",
            evidence[0].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, 200, "evidence points at real interactions: {ev}");

    let other = p.gw.key("globex", "reviewer", None).await;
    let (_, theirs) = get_json(&p.url("/api/alerts"), &other).await;
    assert_eq!(theirs["data"], json!([]), "alerts are tenant-scoped");
    let metrics = client()
        .get(p.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("keel_alerts_open"),
        "open-alert gauge exported"
    );

    // The backfill over the same history reports the same alert without raising a new one.
    let cfg = p.gw.config_path.clone();
    let out = tokio::task::spawn_blocking(move || {
        keel_bin()
            .args(["drift", "backfill", "--since", "1d", "--config"])
            .arg(cfg)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report
            .lines()
            .any(|l| l.contains("upstream_error_rate") && l.contains("locale=ja")),
        "{report}"
    );
    let (_, after) = p.api("/api/alerts").await;
    let after_same = after["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["metric"] == "upstream_error_rate")
        .count();
    assert_eq!(
        after_same,
        alerts.len(),
        "backfill raises no live alerts (latency may move on a loaded machine, so compare the same metric)"
    );
}

/// A tiny HTTP receiver: answers 500 to the first POST (to exercise the retry), 200 after,
/// and hands every body it gets to the test.
async fn webhook_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers, then Content-Length bytes of body.
            let body = loop {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break Some(buf[end + 4..end + 4 + len].to_vec());
                    }
                }
            };
            let status = if first {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = sock
                .write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await;
            if let (Some(b), false) = (body, first) {
                if let Ok(v) = serde_json::from_slice::<Value>(&b) {
                    let _ = tx.send(v);
                }
            }
            first = false;
        }
    });
    (url, rx)
}

#[tokio::test]
async fn alerts_are_posted_to_the_webhook_with_retries() {
    let (url, mut received) = webhook_receiver().await;
    let p = Pair::start_with(Script::new(), |o| {
        o.retries = 0;
        o.extra_toml = format!("[alerts]\nwebhook_url = \"{url}\"\n");
    })
    .await;
    for i in 0..150 {
        assert_eq!(p.chat(json!({"model": "m", "messages": user(&format!("{i}")), "metadata": {"locale": "fr"}})).await.status(), 200);
    }
    for i in 0..150 {
        if i % 2 == 0 {
            p.mock.push(Reply::error(500, "overloaded"));
        }
        p.chat(
            json!({"model": "m", "messages": user(&format!("b{i}")), "metadata": {"locale": "fr"}}),
        )
        .await;
    }
    let alert = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let a = received.recv().await.expect("receiver alive");
            if a["metric"] == "upstream_error_rate" {
                return a;
            }
        }
    })
    .await
    .expect("the webhook received the alert (after one refused delivery)");
    assert_eq!(alert["segment"]["locale"], "fr");
    let (_, listed) = p.api("/api/alerts?metric=upstream_error_rate").await;
    assert_eq!(
        listed["data"][0]["id"], alert["id"],
        "the webhook carries the stored alert"
    );
}
