//! Learned-monitor cost: scoring a 1 KB reply (English, Japanese) with five trained labels, and
//! one online update per review, and the answer fingerprint + cluster of a 1 KB reply. Plain `std::time`: run with
//! `cargo bench -p keel-learn --bench learn`. Prints p50/p99 per case.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Instant;

use std::sync::Arc;

use keel_learn::{Config, Example, Model, Scorer};
use keel_policy::learned::LearnedScorer;
use keel_policy::{EvalContext, EvalInput, Phase, Policy};

/// The gateway's adapter, minus the swap.
struct Adapter(Scorer);
impl LearnedScorer for Adapter {
    fn scores(&self, text: &str) -> Vec<(String, Option<f64>)> {
        self.0
            .score(text)
            .into_iter()
            .map(|(l, s)| (l.to_string(), s.map(f64::from)))
            .collect()
    }
}

const EN: &str = "Thanks for reaching out to our support team today. The consumption tax rate is still 8 percent on all purchases, \
and the basic plan costs 12 dollars a month. You can reset your password from the login page. \
Let me know if there is anything else I can do for you. ";
const JA: &str = "お問い合わせいただきありがとうございます。消費税率は現在も８％のままです。\
パスワードはログイン画面から再設定できます。ご不明な点がございましたら、お気軽にお知らせください。";

fn kb(para: &str) -> String {
    let mut s = String::new();
    while s.len() < 1024 {
        s.push_str(para);
    }
    let mut cut = 1024;
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

fn bench(name: &str, iters: usize, mut f: impl FnMut(usize)) {
    for i in 0..iters / 10 {
        f(i);
    }
    let mut times = Vec::with_capacity(iters);
    for i in 0..iters {
        let t = Instant::now();
        f(i);
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (p50, p99) = percentiles(times);
    println!("{name:<44} p50 {p50:>8.2} µs   p99 {p99:>8.2} µs");
}

/// A model with every base label and two categories available.
fn trained() -> Model {
    let mut m = Model::new(Config::default()).unwrap();
    let verdicts = [
        ("ok", None),
        ("outdated", None),
        ("violation", Some("pii")),
        ("violation", Some("medical")),
        ("wrong_answer", None),
    ];
    for i in 0..500 {
        let (verdict, category) = verdicts[i % verdicts.len()];
        let text = format!(
            "{} sample {i} {verdict} {}",
            if i % 2 == 0 { EN } else { JA },
            category.unwrap_or("")
        );
        m.learn(&Example {
            text: &text,
            verdict,
            category,
        })
        .unwrap();
    }
    m
}

fn main() {
    let model = trained();
    let scorer = model.scorer();
    let en = kb(EN);
    let ja = kb(JA);
    assert!(scorer.score(&en).iter().all(|(_, s)| s.is_some()));
    println!("labels: {}", model.labels().collect::<Vec<_>>().join(", "));
    bench("score 1 KB English (5 labels)", 20_000, |_| {
        black_box(scorer.score(black_box(&en)));
    });
    bench("score 1 KB Japanese (5 labels)", 20_000, |_| {
        black_box(scorer.score(black_box(&ja)));
    });
    let yaml = "name: b\nowner: b\nrules:\n  - id: r\n    category: custom:learned\n    phase: output\n    when: signals.learned.outdated > 0.8\n    action:\n      escalate: {message: m, severity: high}\n";
    let mut policy = Policy::from_files(&[("policy.yaml", yaml)]).unwrap();
    let plain = Policy::from_files(&[(
        "policy.yaml",
        yaml.replace(
            "signals.learned.outdated > 0.8",
            "response.text.size() > 100000",
        ),
    )])
    .unwrap();
    policy.set_learned_scorer(Arc::new(Adapter(model.scorer())));
    let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let input = EvalInput::new(EvalContext::new("acme", now))
        .user("what is the tax?")
        .with_openai_response(&serde_json::json!({"choices": [{"index": 0,
            "message": {"role": "assistant", "content": en}}]}));
    bench("output evaluation, rule on signals.learned", 20_000, |_| {
        black_box(policy.evaluate(Phase::Output, black_box(&input)));
    });
    bench("output evaluation, same rule on response", 20_000, |_| {
        black_box(plain.evaluate(Phase::Output, black_box(&input)));
    });
    bench("answer fingerprint + cluster 1 KB English", 20_000, |_| {
        black_box(keel_learn::answer_ids(black_box(&en)));
    });
    bench("answer fingerprint + cluster 1 KB Japanese", 20_000, |_| {
        black_box(keel_learn::answer_ids(black_box(&ja)));
    });
    bench("features only 1 KB Japanese", 20_000, |_| {
        black_box(keel_learn::features::features(black_box(&ja), 18, 8192));
    });
    bench("normalize only 1 KB Japanese", 20_000, |_| {
        black_box(keel_learn::features::normalize(black_box(&ja), 8192));
    });
    let mut m = model.clone();
    let verdicts = ["ok", "outdated", "wrong_answer", "ok"];
    bench("update per review, 1 KB English", 5_000, |i| {
        m.learn(&Example {
            text: &en,
            verdict: verdicts[i % 4],
            category: None,
        })
        .unwrap();
    });
    bench("update per review, 1 KB Japanese", 5_000, |i| {
        m.learn(&Example {
            text: &ja,
            verdict: verdicts[i % 4],
            category: None,
        })
        .unwrap();
    });
    let json = m.to_json();
    println!(
        "state size after {} reviews: {} bytes",
        m.examples(),
        json.len()
    );
    bench("state to_json", 50, |_| {
        black_box(m.to_json());
    });
    bench("scorer snapshot (publish)", 50, |_| {
        black_box(m.scorer());
    });
}
