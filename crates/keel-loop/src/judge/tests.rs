//! The judge's pure decisions: verdict parsing, sampling determinism and rates, the budget.

use serde_json::{json, Value};

use super::*;

fn cfg() -> JudgeConfig {
    serde_json::from_value(json!({"upstream": "judge", "model": "jm"})).unwrap()
}

/// `expected`: `Ok((kind, reason, correction))` or `Err(substring of the error)`.
fn check(content: &str, expected: Result<(&str, &str, Option<&str>), &str>) {
    let got = parse_verdict(content);
    match (got, expected) {
        (Ok(v), Ok((k, r, c))) => {
            assert_eq!(v.kind.as_str(), k, "{content}");
            assert_eq!(v.reason, r, "{content}");
            assert_eq!(v.correction.as_deref(), c, "{content}");
        }
        (Err(e), Err(want)) => assert!(e.contains(want), "{content}: {e} lacks {want}"),
        (got, want) => panic!("{content}: got {got:?}, expected {want:?}"),
    }
}

#[test]
fn verdict_parsing() {
    check(
        r#"{"verdict":"ok","reason":"fine","correction":null}"#,
        Ok(("ok", "fine", None)),
    );
    check(r#"{"verdict":"ok"}"#, Ok(("ok", "", None)));
    check(
        r#"{"verdict":"Outdated","reason":"rate is 10% now","correction":"It is 10%."}"#,
        Ok(("outdated", "rate is 10% now", Some("It is 10%."))),
    );
    check(
        "```json\n{\"verdict\":\"violation\",\"reason\":\"PII\",\"correction\":\"\"}\n```",
        Ok(("violation", "PII", None)),
    );
    check(
        r#"{"verdict":" unsure ","reason":"no facts"}"#,
        Ok(("unsure", "no facts", None)),
    );
    check("I think it is fine.", Err("not JSON"));
    check("[1,2]", Err("not a JSON object"));
    check(r#"{"reason":"x"}"#, Err("no `verdict`"));
    check(
        r#"{"verdict":"maybe","reason":"x"}"#,
        Err("unknown verdict `maybe`"),
    );
    check(r#"{"verdict":3}"#, Err("`verdict` is not a string"));
    check(r#"{"verdict":"outdated"}"#, Err("without a reason"));
    check(
        r#"{"verdict":"ok","reason":5}"#,
        Err("`reason` is not a string"),
    );
    check(
        r#"{"verdict":"ok","reason":"x","correction":{"a":1}}"#,
        Err("`correction` is not a string or null"),
    );
}

#[test]
fn response_without_content_is_an_error() {
    for body in [
        json!({}),
        json!({"choices": []}),
        json!({"choices": [{"message": {"content": null}}]}),
    ] {
        assert!(parse_response(&body).is_err(), "{body}");
    }
    let ok = json!({"choices": [{"message": {"content": "{\"verdict\":\"ok\"}"}}], "usage": {"total_tokens": 17}});
    assert_eq!(parse_response(&ok).unwrap().kind, VerdictKind::Ok);
    assert_eq!(reported_tokens(&ok), Some(17));
}

#[test]
fn sampling_is_deterministic_and_near_the_rate() {
    let ids: Vec<String> = (0..20_000).map(|i| format!("ix_{i:06}")).collect();
    let first: Vec<bool> = ids.iter().map(|i| sampled(i, 0.05)).collect();
    let again: Vec<bool> = ids.iter().map(|i| sampled(i, 0.05)).collect();
    assert_eq!(first, again);
    let share = first.iter().filter(|b| **b).count() as f64 / ids.len() as f64;
    // 20,000 draws at 5 %: the standard error is 0.15 points; allow 4 of them.
    assert!((share - 0.05).abs() < 0.006, "share {share}");
    // Independent of the review queue's audit sample on the same ids.
    let both = ids
        .iter()
        .filter(|i| sampled(i, 0.05) && crate::review::sampled(i, 0.05))
        .count() as f64
        / ids.len() as f64;
    assert!(both < 0.01, "overlap {both}");
    assert!(ids.iter().all(|i| sampled(i, 1.0) && !sampled(i, 0.0)));
}

fn record(id: &str, learned: Value, topic: &str, cluster: Option<&str>) -> Value {
    json!({"id": id, "context": {"tenant": "acme", "topic": topic}, "response_text": ["an answer"],
           "request_messages": [{"role": "user", "content": "q?"}], "finished_ms": 1_000,
           "decision": {"learned": learned}, "answer_cluster": cluster})
}

#[test]
fn suspicious_slices_get_the_boost() {
    let c = cfg();
    let plain = record("a", json!({}), "tax", None);
    assert!(!suspicious(&c, &plain, &[]));
    assert!(suspicious(
        &c,
        &record("a", json!({"outdated": 0.7}), "tax", None),
        &[]
    ));
    assert!(!suspicious(
        &c,
        &record("a", json!({"outdated": 0.2}), "tax", None),
        &[]
    ));
    let topic =
        SuspectSlice::of_alert(&json!({"segment": {"tenant": "acme", "topic": "tax"}})).unwrap();
    assert!(suspicious(&c, &plain, std::slice::from_ref(&topic)));
    let other =
        SuspectSlice::of_alert(&json!({"segment": {"tenant": "acme", "topic": "age"}})).unwrap();
    assert!(!suspicious(&c, &plain, &[other]));
    let cluster = SuspectSlice::of_alert(
        &json!({"slice": {"tenant": "acme", "topic": "tax", "cluster": "c1"}, "segment": {}}),
    )
    .unwrap();
    assert!(!suspicious(&c, &plain, std::slice::from_ref(&cluster)));
    assert!(suspicious(
        &c,
        &record("a", json!({}), "tax", Some("c1")),
        &[cluster]
    ));
    assert_eq!(c.rate(true), 0.25);
    assert_eq!(c.rate(false), 0.05);
}

#[test]
fn budget_sheds_beyond_requests_per_minute_and_tokens_per_day() {
    let mut c = cfg();
    c.requests_per_minute = 2;
    c.tokens_per_day = 1_000;
    let mut b = Budget::default();
    assert_eq!(b.admit(&c, 0, 100), Ok(()));
    assert_eq!(b.admit(&c, 10, 100), Ok(()));
    assert_eq!(b.admit(&c, 20, 100), Err(Shed::RateLimit));
    // The next minute admits again; the day's tokens carry on.
    assert_eq!(b.admit(&c, 60_000, 100), Ok(()));
    b.settle(60_000, 100, 650);
    assert_eq!(b.tokens_today(), 850);
    assert_eq!(b.admit(&c, 60_001, 200), Err(Shed::TokenBudget));
    // A new UTC day resets the tokens.
    assert_eq!(b.admit(&c, 24 * 3_600_000, 200), Ok(()));
    assert_eq!(b.tokens_today(), 200);
}

#[test]
fn decide_skips_sheds_and_judges() {
    let mut c = cfg();
    c.sample_rate = 1.0;
    c.requests_per_minute = 1;
    let mut b = Budget::default();
    let r = record("a", json!({}), "tax", None);
    assert!(matches!(
        decide(&c, &mut b, &r, &[], 2_000),
        Decision::Judge { .. }
    ));
    assert_eq!(
        decide(&c, &mut b, &r, &[], 2_000),
        Decision::Shed(Shed::RateLimit)
    );
    assert_eq!(
        decide(&c, &mut b, &r, &[], 1_000 + c.max_age_ms + 1),
        Decision::Shed(Shed::Stale)
    );
    let mut empty = r.clone();
    empty["response_text"] = json!([""]);
    assert_eq!(decide(&c, &mut b, &empty, &[], 2_000), Decision::Skip);
    c.sample_rate = 0.0;
    assert_eq!(decide(&c, &mut b, &r, &[], 2_000), Decision::Skip);
}

#[test]
fn request_round_trips_to_the_question() {
    let q = JudgeQuestion {
        today: "2026-01-01T00:00:00Z".into(),
        interaction_id: "ix_1".into(),
        context: json!({"tenant": "acme"}),
        question: "What is the tax rate?".into(),
        reply: "8%".into(),
        rules: vec![],
        facts: vec![json!({"key": "jp.tax", "value": 10})],
    };
    let body = request_body(&cfg(), &q);
    assert_eq!(body["response_format"]["type"], "json_object");
    assert_eq!(body["model"], "jm");
    assert_eq!(question_of_request(&body), Some(q));
    let chat = json!({"messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(question_of_request(&chat), None);
}

#[test]
fn config_errors_name_the_key() {
    for (patch, key) in [
        (json!({"sample_rate": 1.5}), "judge.sample_rate"),
        (json!({"boost_rate": -0.1}), "judge.boost_rate"),
        (
            json!({"requests_per_minute": 0}),
            "judge.requests_per_minute",
        ),
        (json!({"timeout_ms": 0}), "judge.timeout_ms"),
        (json!({"model": " "}), "judge.model"),
    ] {
        let mut v = json!({"upstream": "judge", "model": "jm"});
        for (k, x) in patch.as_object().unwrap() {
            v[k] = x.clone();
        }
        let c: JudgeConfig = serde_json::from_value(v).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(key), "{e} lacks {key}");
    }
    cfg().validate().unwrap();
}
