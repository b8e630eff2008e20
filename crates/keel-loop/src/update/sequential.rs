//! The sequential test behind canary guards: an always-valid confidence interval for the
//! difference of two rates, from the normal-mixture sequential probability ratio test (mSPRT;
//! Robbins 1970, Johari, Pekelis and Walsh 2017, "Always valid inference"). It may be looked
//! at after every observation: the probability that it *ever* excludes the true difference is
//! at most `alpha`, so continuous monitoring does not inflate false alarms.
//!
//! With `d` the observed difference (canary − baseline) of two proportions, its plug-in
//! variance `s² = p̃c(1−p̃c)/nc + p̃b(1−p̃b)/nb` (p̃ = (k+1)/(n+2), so a rate of 0 still has
//! spread) and a normal mixing distribution N(0, τ²) over the true difference, the mixture
//! likelihood ratio against θ is
//! `Λ(θ) = sqrt(s²/(s²+τ²)) · exp(τ²(d−θ)² / (2s²(s²+τ²)))`, and
//! `{θ : Λ(θ) < 1/α}` is the interval `d ± sqrt( s²(s²+τ²)/τ² · (ln((s²+τ²)/s²) + 2 ln(1/α)) )`.

use serde::{Deserialize, Serialize};

/// An always-valid interval for a difference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub diff: f64,
    pub lo: f64,
    pub hi: f64,
}

/// The always-valid `1 − alpha` interval for `kc/nc − kb/nb`, with mixing scale `tau`.
/// `None` when an arm has no observations or the parameters are out of range.
pub fn diff_interval(kc: u64, nc: u64, kb: u64, nb: u64, alpha: f64, tau: f64) -> Option<Interval> {
    if nc == 0 || nb == 0 || !(alpha > 0.0 && alpha < 1.0) || tau.is_nan() || tau <= 0.0 {
        return None;
    }
    let rate = |k: u64, n: u64| k.min(n) as f64 / n as f64;
    let smooth = |k: u64, n: u64| (k.min(n) as f64 + 1.0) / (n as f64 + 2.0);
    let (pc, pb) = (smooth(kc, nc), smooth(kb, nb));
    let s2 = pc * (1.0 - pc) / nc as f64 + pb * (1.0 - pb) / nb as f64;
    let t2 = tau * tau;
    let half = (s2 * (s2 + t2) / t2 * (((s2 + t2) / s2).ln() + 2.0 * (1.0 / alpha).ln())).sqrt();
    let diff = rate(kc, nc) - rate(kb, nb);
    Some(Interval {
        diff,
        lo: diff - half,
        hi: diff + half,
    })
}

/// What a guard says about the canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Too few observations to judge.
    NoData,
    /// The interval still straddles the margin.
    Undecided,
    /// The canary is worse by less than the margin (interval's upper end below it).
    NonInferior,
    /// The canary is worse by more than the margin (interval's lower end above it).
    Inferior,
}

/// Judges an interval on the *harm* scale (positive = canary worse) against `margin`.
pub fn judge(harm: Option<Interval>, margin: f64) -> Verdict {
    match harm {
        None => Verdict::NoData,
        Some(i) if i.lo > margin => Verdict::Inferior,
        Some(i) if i.hi < margin => Verdict::NonInferior,
        Some(_) => Verdict::Undecided,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn interval_shrinks_with_data_and_is_wider_than_a_fixed_n_one() {
        let small = diff_interval(5, 100, 5, 100, 0.05, 0.05).unwrap();
        let big = diff_interval(50, 1000, 50, 1000, 0.05, 0.05).unwrap();
        assert!(big.hi - big.lo < small.hi - small.lo);
        // A fixed-n 95% interval at n=1000, p=0.05: ±1.96·sqrt(2·0.05·0.95/1000) ≈ ±0.0191.
        assert!(big.hi > 0.0191);
        assert!(diff_interval(0, 0, 1, 1, 0.05, 0.05).is_none());
        assert!(diff_interval(1, 1, 1, 1, 0.0, 0.05).is_none());
    }

    #[test]
    fn verdicts() {
        assert_eq!(judge(None, 0.01), Verdict::NoData);
        let clean = diff_interval(10, 2000, 10, 2000, 0.05, 0.02).unwrap();
        assert_eq!(judge(Some(clean), 0.02), Verdict::NonInferior, "{clean:?}");
        let bad = diff_interval(200, 500, 20, 500, 0.05, 0.02).unwrap();
        assert_eq!(judge(Some(bad), 0.02), Verdict::Inferior, "{bad:?}");
        let early = diff_interval(1, 20, 0, 20, 0.05, 0.02).unwrap();
        assert_eq!(judge(Some(early), 0.02), Verdict::Undecided);
    }

    #[test]
    fn no_false_alarms_under_continuous_monitoring() {
        // Equal arms, looked at after every pair: the interval should almost never exclude 0.
        let mut state: u64 = 42;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut alarms = 0;
        for _run in 0..40 {
            let (mut kc, mut kb) = (0u64, 0u64);
            for n in 1..=2000u64 {
                kc += u64::from(next() < 0.1);
                kb += u64::from(next() < 0.1);
                if n >= 30 {
                    let i = diff_interval(kc, n, kb, n, 0.05, 0.05).unwrap();
                    if i.lo > 0.0 || i.hi < 0.0 {
                        alarms += 1;
                        break;
                    }
                }
            }
        }
        assert!(alarms <= 4, "{alarms} of 40 runs alarmed");
    }
}
