//! Tests of the KPI computations: rates, intervals, comparisons and the period table.

use super::*;

fn ev(kind: &str, at_ms: i64, payload: Value) -> StoredEvent {
    StoredEvent {
        seq: 0,
        kind: kind.into(),
        actor: "t".into(),
        tenant: "acme".into(),
        at_ms,
        payload,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 5e-4
}

#[test]
fn wilson_matches_known_values() {
    // Reference values (e.g. R's prop.test without continuity correction / statsmodels).
    let (l, u) = wilson(8, 10, Z95).unwrap();
    assert!(close(l, 0.4902) && close(u, 0.9433), "{l} {u}");
    let (l, u) = wilson(0, 10, Z95).unwrap();
    assert!(close(l, 0.0) && close(u, 0.2775), "{l} {u}");
    assert_eq!(wilson(0, 0, Z95), None);
}

#[test]
fn newcombe_matches_his_example() {
    // Newcombe (1998), example (a): 56/70 vs 48/80 → 0.2000, CI [0.0524, 0.3339].
    let (d, lo, hi) = newcombe_diff(56, 70, 48, 80, Z95).unwrap();
    assert!(
        close(d, 0.2) && close(lo, 0.0524) && close(hi, 0.3339),
        "{d} {lo} {hi}"
    );
}

#[test]
fn quantiles() {
    let v: Vec<f64> = (1..=10).map(f64::from).collect();
    assert_eq!(quantile(&v, 0.9), Some(9.0));
    assert_eq!(quantile(&v, 0.5), Some(5.0));
    assert_eq!(quantile(&[], 0.9), None);
    assert_eq!(parse_bucket("day"), Some(Some(86_400_000)));
    assert_eq!(parse_bucket("15m"), Some(Some(900_000)));
    assert_eq!(parse_bucket("x"), None);
    assert_eq!(parse_bucket("none"), Some(None));
    assert_eq!(parse_time("2026-01-01", 0), Some(1_767_225_600_000));
    assert_eq!(parse_time("1d", 86_400_000), Some(0));
    assert_eq!(parse_time("12", 0), Some(12));
    assert_eq!(parse_time("soon", 0), None);
}

#[test]
fn kpis_on_known_data() {
    let ctx = json!({"locale": "en", "conversation_id": "c1"});
    let mut events = Vec::new();
    for i in 0..10 {
        let action = if i < 2 { "escalate" } else { "allow" };
        let rules = if i == 3 {
            json!([{"id": "r", "category": "S7", "severity": "low", "action": "redact"}])
        } else if i == 4 {
            json!([{"id": "fix", "category": "custom:brand", "severity": "low", "action": "rewrite"}])
        } else {
            json!([])
        };
        events.push(ev("InteractionRecorded", 1_000 + i, json!({"id": format!("ix_{i}"), "context": ctx, "policy_version": "v1",
                "outcome": "ok", "decision": {"action": action, "input": {"rules": []}, "output": [{"rules": rules}]}})));
    }
    for (i, c) in [5, 4, 4, 2].iter().enumerate() {
        events.push(ev(kinds::FEEDBACK, 2_000, json!({"interaction_id": format!("ix_{i}"), "csat": c, "context": ctx, "policy_version": "v1"})));
    }
    events.push(ev(
        kinds::FEEDBACK,
        2_000,
        json!({"interaction_id": "ix_1", "wrong_answer": true, "thumbs": "down", "context": ctx}),
    ));
    events.push(ev(
        kinds::FEEDBACK,
        2_001,
        json!({"interaction_id": "ix_1", "wrong_answer": true, "context": ctx}),
    ));
    for (conv, req, joined) in [("c1", 1_000, 4_000), ("c2", 2_000, 12_000)] {
        events.push(ev(
            kinds::HANDOFF,
            5_000,
            json!({"conversation_id": conv, "event": "requested", "at_ms": req, "context": ctx}),
        ));
        events.push(ev(kinds::HANDOFF, 5_000, json!({"conversation_id": conv, "event": "human_joined", "at_ms": joined, "context": ctx})));
    }
    events.push(ev(
        kinds::COMPLETED,
        3_000,
        json!({"item_id": "rv_1", "verdict": "wrong_answer", "context": ctx}),
    ));
    events.push(ev(
        kinds::COMPLETED,
        3_000,
        json!({"item_id": "rv_1", "verdict": "ok", "context": ctx}),
    ));
    let items = vec![
        ItemFact {
            tenant: "acme".into(),
            context: ctx.clone(),
            policy_version: json!("v1"),
            created_ms: 1_000,
            done_ms: Some(3_000),
        },
        ItemFact {
            tenant: "acme".into(),
            context: ctx.clone(),
            policy_version: json!("v1"),
            created_ms: 2_000,
            done_ms: None,
        },
    ];
    let q = KpiQuery {
        from_ms: 0,
        to_ms: 100_000,
        bucket_ms: None,
        group_by: vec![Dim::Locale],
        now_ms: 10_000,
    };
    let rows = compute(&q, &events, &items);
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.group["locale"], "en");
    assert_eq!(r.interactions, 10);
    assert_eq!(r.csat.n, 4);
    assert!(close(r.csat.mean.unwrap(), 3.75));
    assert_eq!(r.csat.distribution, [0, 1, 0, 2, 1]);
    assert_eq!(r.thumbs_down, 1);
    assert_eq!(
        (r.wrong_answer_reports.count, r.wrong_answer_reports.n),
        (1, 10),
        "one interaction reported twice counts once"
    );
    assert_eq!(r.escalations.count, 2);
    let ci = r.escalations.ci95.unwrap();
    assert!(close(ci[0], 0.0567) && close(ci[1], 0.5098), "{ci:?}");
    assert_eq!(r.violations["S7"].count, 1);
    // A fix's rewrite is an intervention, not a violation (issue 25, defect 5).
    assert!(
        !r.violations.contains_key("custom:brand"),
        "{:?}",
        r.violations
    );
    assert_eq!(r.interventions["custom:brand"].count, 1);
    assert_eq!(r.interventions["S7"].count, 1);
    assert_eq!(r.wrong_answer_reviews.count, 1);
    assert_eq!(r.wrong_answer_reviews.n, 2);
    assert_eq!(r.time_to_human.n, 2);
    assert!(close(r.time_to_human.mean_ms.unwrap(), 6_500.0));
    assert!(close(r.time_to_human.p90_ms.unwrap(), 10_000.0));
    assert_eq!(r.reviews.created, 2);
    assert_eq!(r.reviews.completed, 2);
    assert_eq!(r.reviews.backlog, 1);
    assert_eq!(r.reviews.backlog_age_max_ms, Some(8_000));
    assert_eq!(r.reviews.agreement, Some(0.0));
    let text = table(&rows, &|ms| ms.to_string());
    assert!(text.lines().count() == 2, "{text}");
    // CSAT's comparison interval, against values computed independently (Python's
    // `statistics`): a = [5, 4, 4, 2] (sample sd 1.258306), b = [1, 2, 3] (sd 1.0);
    // d = 1.75, se = sqrt(sa²/4 + sb²/3) = 0.853913, d ± 1.959964·se.
    assert!(close(r.csat.sd.unwrap(), 1.258_306), "{:?}", r.csat.sd);
    let b = KpiRow {
        csat: Csat {
            n: 3,
            mean: Some(2.0),
            sd: Some(1.0),
            distribution: [1, 1, 1, 0, 0],
        },
        ..KpiRow::default()
    };
    let cmp = compare(r, &b);
    let csat = &cmp["csat_mean"];
    assert!(close(csat["diff"].as_f64().unwrap(), 1.75), "{csat}");
    let ci = csat["ci95"].as_array().unwrap();
    assert!(close(ci[0].as_f64().unwrap(), 0.076_362), "{csat}");
    assert!(close(ci[1].as_f64().unwrap(), 3.423_638), "{csat}");
    // One rating on a side: no interval.
    let one = KpiRow {
        csat: Csat {
            n: 1,
            mean: Some(2.0),
            sd: None,
            distribution: [0, 1, 0, 0, 0],
        },
        ..KpiRow::default()
    };
    assert_eq!(compare(r, &one)["csat_mean"]["ci95"], Value::Null);
}
