//! Monitor throughput: interactions (with realistic feedback: CSAT on 30 %, reports and
//! complaints at 0.3 %) through `Monitor::process` with the default config — the ADWIN
//! streams and the low-rate slices over 200 answer clusters, 4 topics, 2 locales. Plain
//! `std::time`: run with `cargo bench -p keel-loop --bench monitor`. Prints interactions/s
//! on one core (events are built before the clock starts).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use keel_core::StoredEvent;
use keel_loop::watch::{Monitor, MonitorConfig};
use serde_json::json;

fn main() {
    let mut x: u64 = 7;
    let mut f = move || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let interactions = 200_000u64;
    let mut events = Vec::new();
    let mut seq = 0i64;
    for r in 0..interactions {
        let k = (f() * 200.0) as u64;
        let locale = if f() < 0.2 { "ja-JP" } else { "en-JP" };
        let ctx = json!({"locale": locale, "jurisdiction": "JP", "topic": format!("t{}", k % 4)});
        let id = format!("ix_{r}");
        let cluster = format!("c{k:08x}");
        seq += 1;
        events.push(StoredEvent {
            seq,
            kind: "InteractionRecorded".into(),
            actor: "a".into(),
            tenant: "acme".into(),
            at_ms: r as i64 * 100,
            payload: json!({"id": id, "outcome": "ok", "latency_ms": 40 + (f() * 20.0) as i64,
                "response_text": ["The rate is 8 percent."], "context": ctx, "policy_version": "v1",
                "answer_cluster": cluster, "decision": {"action": "allow", "input": {"rules": []}, "output": []}}),
        });
        let rated = f() < 0.3;
        let report = f() < 0.003;
        let complaint = f() < 0.003;
        if rated || report || complaint {
            seq += 1;
            let mut fb = json!({"interaction_id": id, "context": ctx, "policy_version": "v1",
                "answer_cluster": cluster});
            if rated {
                fb["csat"] = json!(if f() < 0.05 { 1 } else { 4 });
            }
            if report {
                fb["wrong_answer"] = json!(true);
            }
            if complaint {
                fb["thumbs"] = json!("down");
                fb["comment"] = json!("this answer is wrong");
            }
            events.push(StoredEvent {
                seq,
                kind: "FeedbackReceived".into(),
                actor: "a".into(),
                tenant: "acme".into(),
                at_ms: r as i64 * 100 + 50,
                payload: fb,
            });
        }
    }
    let only_slices = MonitorConfig {
        rules: Vec::new(),
        ..MonitorConfig::default()
    };
    let cases = [
        ("default config", MonitorConfig::default()),
        ("slices only (rules = [])", only_slices),
    ];
    for (round, (name, cfg)) in cases.iter().cycle().take(4).enumerate() {
        println!("{name}");
        let mut m = Monitor::new(cfg.clone()).unwrap();
        let t = Instant::now();
        let mut alerts = 0usize;
        for e in &events {
            alerts += m.process(e).unwrap().len();
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "round {round}: {interactions} interactions + {} feedback events in {s:.2} s: {:.0} interactions/s ({} slices, {alerts} alerts)",
            events.len() as u64 - interactions,
            interactions as f64 / s,
            m.slices()
        );
    }
}
