//! How many canary interactions a rollout needs before it can promote: the smallest canary size
//! at which the guard's sequential interval ([`super::sequential`]) lies below the margin when
//! the counts are what the rates predict. Deterministic (expected counts, no simulation), so it
//! reads as a planning table; real traffic scatters around it.
//!
//! `cargo test -p keel-loop canary_sample_size_table -- --nocapture` prints the table in
//! `docs/rollouts.md`, and that test fails when the document disagrees.

use super::sequential::{diff_interval, judge, Verdict};

/// Canary interactions needed (at least `min_per_arm`, the automatic-promotion floor) for a
/// guard whose baseline harm rate is `base`, with the canary's rate `base + effect`, at
/// `margin`, `alpha`, and the canary taking `share` (0–1) of traffic; `None` above `limit`.
pub fn canary_needed(
    base: f64,
    effect: f64,
    margin: f64,
    alpha: f64,
    share: f64,
    min_per_arm: u64,
    limit: u64,
) -> Option<u64> {
    if !(share > 0.0 && share < 1.0) {
        return None;
    }
    let canary_rate = (base + effect).clamp(0.0, 1.0);
    let tau = margin.max(0.01);
    let ok = |nc: u64| {
        let nb = ((nc as f64) * (1.0 - share) / share).round() as u64;
        let kc = (canary_rate * nc as f64).round() as u64;
        let kb = (base * nb as f64).round() as u64;
        nb >= min_per_arm
            && judge(diff_interval(kc, nc, kb, nb, alpha, tau), margin) == Verdict::NonInferior
    };
    // The interval shrinks with n; search upwards in doubling steps, then bisect.
    let mut hi = min_per_arm.max(1);
    while !ok(hi) {
        hi = hi.checked_mul(2)?;
        if hi > limit {
            return None;
        }
    }
    let mut lo = min_per_arm.max(1);
    if ok(lo) {
        return Some(lo);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of the table in `docs/rollouts.md`: guard, margin, base rate, effect.
    const ROWS: [(&str, f64, f64, f64); 10] = [
        ("violation_rate", 0.01, 0.001, 0.0),
        ("violation_rate", 0.01, 0.01, 0.0),
        ("violation_rate", 0.01, 0.01, -0.005),
        ("wrong_answer_rate", 0.02, 0.02, 0.0),
        ("wrong_answer_rate", 0.02, 0.05, 0.0),
        ("wrong_answer_rate", 0.02, 0.05, -0.02),
        ("wrong_answer_rate", 0.02, 0.05, 0.01),
        ("wrong_answer_rate", 0.02, 0.10, 0.0),
        ("csat", 0.05, 0.20, 0.0),
        ("escalation_rate", 0.10, 0.05, 0.0),
    ];

    fn line(guard: &str, margin: f64, base: f64, effect: f64) -> String {
        let n = canary_needed(base, effect, margin, 0.05, 0.10, 200, 10_000_000);
        let (canary, requests) = match n {
            Some(n) => (n.to_string(), (n * 10).to_string()),
            None => ("> 10,000,000".into(), "-".into()),
        };
        format!(
            "| `{guard}` | {margin} | {:.1} % | {:+.1} pt | {canary} | {requests} |",
            base * 100.0,
            effect * 100.0
        )
    }

    #[test]
    fn canary_sample_size_table() {
        let doc = include_str!("../../../../docs/rollouts.md");
        let lines: Vec<String> = ROWS.iter().map(|&(g, m, b, e)| line(g, m, b, e)).collect();
        println!("{}", lines.join("\n"));
        for l in &lines {
            assert!(
                doc.contains(l),
                "docs/rollouts.md lacks the computed row\n{l}"
            );
        }
    }

    #[test]
    fn needs_more_data_for_smaller_gaps_to_the_margin() {
        let n = |base, effect| canary_needed(base, effect, 0.02, 0.05, 0.10, 200, 10_000_000);
        assert!(n(0.05, 0.0) > n(0.05, -0.02));
        assert!(n(0.05, 0.01) > n(0.05, 0.0));
        assert_eq!(n(0.05, 0.03), None, "worse than the margin never promotes");
        assert_eq!(
            canary_needed(0.0, 0.0, 0.5, 0.05, 0.10, 200, 1_000),
            Some(200)
        );
    }
}
