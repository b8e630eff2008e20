//! Fact checker cost on a 1 KB reply with 1,000 facts loaded (several versions each, English and
//! Japanese subjects), plus a whole output evaluation with a `correct` rule. Plain `std::time`:
//! run with `cargo bench -p keel-policy --bench facts`. Prints p50/p99 per case.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use keel_policy::{EvalContext, EvalInput, Fact, FactChecker, FactIndex, FactScope, Phase, Policy};

fn facts(n: usize) -> Vec<Fact> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut subjects = BTreeMap::new();
        subjects.insert("en".to_string(), vec![format!("widget {i} rate")]);
        subjects.insert("ja".to_string(), vec![format!("部品{i}の料率")]);
        let mut scope = FactScope::default();
        if i % 3 == 0 {
            scope.jurisdictions = vec!["JP".into()];
        }
        for (v, from) in [(5, "2020-01-01"), (8, "2024-01-01")] {
            out.push(Fact {
                key: format!("bench.widget{i}"),
                kind: "percent".into(),
                value: (v + i % 7).into(),
                currency: None,
                scope: scope.clone(),
                effective_from: from.into(),
                effective_until: None,
                source: "bench".into(),
                owner: "bench".into(),
                subjects: subjects.clone(),
            });
        }
    }
    out.push(Fact {
        key: "jp.consumption_tax".into(),
        kind: "percent".into(),
        value: 10.into(),
        currency: None,
        scope: FactScope::default(),
        effective_from: "2019-10-01".into(),
        effective_until: None,
        source: "bench".into(),
        owner: "bench".into(),
        subjects: [
            ("en".to_string(), vec!["consumption tax".to_string()]),
            ("ja".to_string(), vec!["消費税".to_string()]),
        ]
        .into_iter()
        .collect(),
    });
    out
}

fn reply(bytes: usize) -> String {
    let para = "Thanks for asking. The consumption tax is 8% on most goods, and widget 12 rate is 9 percent. \
                消費税は８％です。部品40の料率は１２パーセントです。 Other fees did not change this year. ";
    let mut s = String::new();
    while s.len() < bytes {
        s.push_str(para);
    }
    let mut cut = bytes.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.99))
}

fn bench(name: &str, iters: usize, mut f: impl FnMut()) {
    for _ in 0..iters / 10 {
        f();
    }
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (p50, p99) = percentiles(samples);
    println!("{name:<40} p50 {p50:>9.2} µs   p99 {p99:>9.2} µs");
}

fn main() {
    let all = facts(1000);
    let t = Instant::now();
    let index = Arc::new(FactIndex::new(all).unwrap());
    println!(
        "index of {} versions built in {:.1} ms",
        index.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let now = chrono::DateTime::parse_from_rfc3339("2025-06-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let mut ctx = EvalContext::new("acme", now);
    ctx.jurisdiction = Some("JP".into());
    let text = reply(1024);
    let found = index.check(&text, &ctx);
    println!(
        "1 KB reply: {} statements, {} stale",
        found.len(),
        found.iter().filter(|f| f.replacement.is_some()).count()
    );
    bench("checker, 1 KB reply, 20 statements", 20_000, || {
        black_box(index.check(black_box(&text), &ctx));
    });
    let mut typical =
        "Thanks for reaching out. Our support team reviewed your account settings. ".repeat(12);
    typical.push_str("The consumption tax is 8%. 消費税は８％です。");
    bench("checker, 1 KB reply, 2 statements", 20_000, || {
        black_box(index.check(black_box(&typical), &ctx));
    });
    let plain =
        "Thanks for reaching out. Our support team reviewed your account settings. ".repeat(14);
    bench("checker, 1 KB reply without subjects", 20_000, || {
        black_box(index.check(black_box(&plain), &ctx));
    });
    let yaml = "name: b\nowner: o\ndetectors:\n  - {id: facts, kind: facts}\nrules:\n  - id: fix\n    category: custom:facts\n    phase: output\n    when: signals.facts.stale > 0\n    action: {correct: {}}\n";
    let mut policy = Policy::from_files(&[("policy.yaml", yaml)]).unwrap();
    policy.set_fact_checker(index);
    let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "q"}]});
    let input = EvalInput::from_openai_request(&body, ctx).with_openai_response(
        &serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}),
    );
    bench("output evaluation with `correct`, 1 KB", 10_000, || {
        black_box(policy.evaluate(Phase::Output, black_box(&input)));
    });
}
