//! Decision time of the default pack on 1 KB and 16 KB messages, input and output phase, plus a
//! streamed 16 KB reply. Plain `std::time` (no bench framework): run with
//! `cargo bench -p keel-policy --bench policy`. Prints p50/p99 per case.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use keel_policy::{EvalContext, EvalInput, Phase, Policy, StreamGuard};

/// Realistic mixed text: English and Japanese prose, a finance keyword, one e-mail address.
fn text(bytes: usize) -> String {
    let para = "Thanks for reaching out. Our support team reviewed your account settings and the \
                invoice history; everything looks fine. ご確認ありがとうございます。詳細は担当者からご連絡します。 \
                If you plan to invest, compare the fees first. ";
    let mut s = String::from("Contact support@example.com for details. ");
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
    println!("{name:<32} p50 {p50:>9.2} µs   p99 {p99:>9.2} µs");
}

fn main() {
    let policy = Arc::new(Policy::default_pack().unwrap());
    let now = chrono::DateTime::parse_from_rfc3339("2025-06-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let mut ctx = EvalContext::new("acme", now);
    ctx.jurisdiction = Some("JP".into());
    println!(
        "default pack {} — stream hold-back {} chars",
        &policy.version()[..12],
        policy.stream_holdback()
    );
    for size in [1024, 16 * 1024] {
        let t = text(size);
        let input = EvalInput::new(ctx.clone()).user(&t).reply(&t);
        let iters = if size <= 1024 { 20_000 } else { 2_000 };
        let label = format!("{}KB", size / 1024);
        bench(&format!("input  {label}"), iters, || {
            black_box(policy.evaluate(Phase::Input, black_box(&input)));
        });
        bench(&format!("output {label}"), iters, || {
            black_box(policy.evaluate(Phase::Output, black_box(&input)));
        });
    }
    let t = text(16 * 1024);
    let chunks: Vec<&str> = {
        let mut v = Vec::new();
        let mut last = 0;
        for i in (16..t.len()).step_by(16) {
            if t.is_char_boundary(i) {
                v.push(&t[last..i]);
                last = i;
            }
        }
        v.push(&t[last..]);
        v
    };
    let input = EvalInput::new(ctx.clone()).user("hi");
    bench("stream 16KB in 16-byte deltas", 50, || {
        let mut g = StreamGuard::new(Arc::clone(&policy), input.clone(), 0);
        for c in &chunks {
            black_box(g.push(c));
        }
        black_box(g.finish());
    });
}
