//! Detection of rises in low rates (0.1–5 %): a Poisson/Bernoulli CUSUM against the slice's own
//! baseline p₀ with a prior, the exact Poisson tail of the current run, Benjamini–Hochberg
//! across slices, and Wilson intervals for alert text.
//!
//! **The chart** ([`RateCusum`], spec `rate`). A slice is exposed (one unit per interaction, or
//! per judged interaction) and hit (a complaint, a report, a low CSAT, an `outdated` verdict…).
//! In control, hits arrive at rate p₀ per exposure; the alternative is `k·p₀` (default
//! `k = 3`). The log-likelihood ratio of the Poisson model is `ln k` per hit and `−(k − 1)·p₀`
//! per unit of exposure; the chart adds it to `S`, clamped at 0, and signals when `S ≥ h`
//! nats. Lorden's bound gives an in-control average run length of at least `e^h` exposures per
//! slice (default `h = 7`: ≥ 1 096). For 0/1 outcomes with small p₀ the Poisson ratio is the
//! Bernoulli one to first order.
//!
//! **The baseline.** p₀ is the slice's own history `(x_base + w·prior)/(n_base + w)`, floored
//! at `floor`, where `prior` is the parent's rate (the caller passes the segment's or the
//! global rate, so a fresh answer cluster starts from its topic's rate) and `w` (default 1000
//! exposures) is the prior's weight. Only data older than the recent window (8 blocks of 64
//! exposures) enters the baseline, so a change is measured against what came before it, not
//! diluted into it, and no data-chosen span is held out (holding out the chart's open runs
//! biased p₀ 24 % low on null streams: runs are open where hits cluster). After a signal the
//! chart restarts; a persisting change signals again, and the caller's grouping decides
//! whether that is news.
//!
//! **Significance across slices.** A slice's evidence is the exact Poisson upper tail of its
//! recent hits under p₀ over fixed windows (the last 1, 2, 4 and 8 blocks of 64 exposures,
//! Bonferroni over the four: [`RateCusum::p_value`]). A monitor
//! with many slices raises a signal only when the chart crossed `h` *and* the slice is among
//! the discoveries of [`benjamini_hochberg`] at level `q` over every slice's current p-value
//! (the false-discovery rate stays near `q` however many slices exist; Bonferroni would need
//! the threshold to shrink with their count). The windows are fixed by exposure count, so at a
//! fixed evaluation the p-values are valid; the chart picks *when* a slice is evaluated, and
//! its `h` is the time-wise false-alarm control. (The open run's own tail is not used: its
//! start is chosen by the data, and on 1 000 null slices it gave a false-discovery share
//! above 90 %.)

use serde::{Deserialize, Serialize};

use crate::error::DriftError;
use crate::special::gamma_p;

/// Parameters of [`RateCusum`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateConfig {
    /// The rise to detect, as a multiple of p₀. Default 3.
    pub k: f64,
    /// Decision threshold in nats (in-control ARL ≥ `e^h` exposures). Default 7.
    pub h: f64,
    /// Weight of the prior rate, in exposures. Default 1000.
    pub prior_weight: f64,
    /// Lowest p₀ ever used. Default 0.0005.
    pub floor: f64,
    /// False-discovery level across slices. Default 0.05.
    pub q: f64,
    /// Hits a run needs before it may signal. Default 3.
    pub min_hits: u64,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            k: 3.0,
            h: 7.0,
            prior_weight: 1000.0,
            floor: 0.0005,
            q: 0.05,
            min_hits: 3,
        }
    }
}

impl RateConfig {
    /// Parses `rate[:k=3,h=7,prior_weight=200,floor=0.0005,q=0.05,min_hits=3]`.
    pub fn parse(spec: &str) -> Result<Self, DriftError> {
        let spec = spec.trim();
        let (name, rest) = spec.split_once(':').unwrap_or((spec, ""));
        if name != "rate" {
            return Err(DriftError::UnknownDetector {
                name: name.to_string(),
                known: "rate",
            });
        }
        let mut c = RateConfig::default();
        for kv in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| DriftError::BadSpec {
                spec: spec.to_string(),
                reason: format!("`{kv}` has no `=value`"),
            })?;
            let x: f64 = v
                .trim()
                .parse()
                .map_err(|_| DriftError::bad_param("rate", k.trim(), v, "not a number"))?;
            match k.trim() {
                "k" => c.k = x,
                "h" => c.h = x,
                "prior_weight" => c.prior_weight = x,
                "floor" => c.floor = x,
                "q" => c.q = x,
                "min_hits" => c.min_hits = x.max(0.0) as u64,
                other => {
                    return Err(DriftError::UnknownParam {
                        detector: "rate",
                        param: other.to_string(),
                        known: "k, h, prior_weight, floor, q, min_hits",
                    })
                }
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks ranges; errors name the parameter.
    pub fn validate(&self) -> Result<(), DriftError> {
        const D: &str = "rate";
        if !(self.k.is_finite() && self.k > 1.0) {
            return Err(DriftError::bad_param(D, "k", self.k, "must be > 1"));
        }
        if !(self.h.is_finite() && self.h > 0.0) {
            return Err(DriftError::bad_param(D, "h", self.h, "must be > 0"));
        }
        if !(self.prior_weight.is_finite() && self.prior_weight >= 0.0) {
            return Err(DriftError::bad_param(
                D,
                "prior_weight",
                self.prior_weight,
                "must be ≥ 0",
            ));
        }
        if !(self.floor.is_finite() && self.floor > 0.0 && self.floor < 1.0) {
            return Err(DriftError::bad_param(
                D,
                "floor",
                self.floor,
                "must be in (0, 1)",
            ));
        }
        if !(self.q.is_finite() && self.q > 0.0 && self.q < 1.0) {
            return Err(DriftError::bad_param(D, "q", self.q, "must be in (0, 1)"));
        }
        Ok(())
    }
}

impl std::fmt::Display for RateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rate:k={},h={},prior_weight={},floor={},q={},min_hits={}",
            self.k, self.h, self.prior_weight, self.floor, self.q, self.min_hits
        )
    }
}

/// One slice's chart. Fixed size; serialisable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateCusum {
    /// Settled exposures and hits (the baseline).
    pub base_n: f64,
    pub base_x: f64,
    /// The open run (since `s` was last 0).
    pub run_n: f64,
    pub run_x: f64,
    /// The CUSUM statistic, nats.
    pub s: f64,
    /// The recent window: the open block and up to 8 closed ones (exposures, hits), a ring.
    #[serde(default)]
    pub cur_n: f64,
    #[serde(default)]
    pub cur_x: f64,
    #[serde(default)]
    pub blocks: Vec<(f64, f64)>,
    #[serde(default)]
    pub head: usize,
}

impl RateCusum {
    /// The in-control rate under `prior` (the parent's rate).
    pub fn p0(&self, c: &RateConfig, prior: f64) -> f64 {
        let prior = if prior.is_finite() { prior } else { c.floor };
        let est = (self.base_x + c.prior_weight * prior) / (self.base_n + c.prior_weight);
        if est.is_finite() {
            est.clamp(c.floor, 1.0 / c.k)
        } else {
            c.floor
        }
    }

    /// `n` units of exposure.
    pub fn expose(&mut self, c: &RateConfig, prior: f64, n: f64) {
        let p0 = self.p0(c, prior);
        self.window_push(n, 0.0);
        if self.s > 0.0 {
            self.run_n += n;
            self.s -= (c.k - 1.0) * p0 * n;
            if self.s <= 0.0 {
                self.settle();
            }
        }
    }

    /// One hit. Returns whether the chart is at or above `h` with at least `min_hits` in the run.
    pub fn hit(&mut self, c: &RateConfig) -> bool {
        if self.s <= 0.0 {
            self.s = 0.0;
        }
        self.s += c.k.ln();
        self.run_x += 1.0;
        self.cur_x += 1.0;
        self.s >= c.h && self.run_x >= c.min_hits as f64
    }

    /// A 0/1 outcome: one exposure, and a hit when `x`.
    pub fn observe(&mut self, c: &RateConfig, prior: f64, x: bool) -> bool {
        self.expose(c, prior, 1.0);
        x && self.hit(c)
    }

    fn settle(&mut self) {
        self.run_n = 0.0;
        self.run_x = 0.0;
        self.s = 0.0;
    }

    /// After a signal: the run is dropped, the chart restarts (the baseline is kept).
    pub fn restart(&mut self) {
        self.run_n = 0.0;
        self.run_x = 0.0;
        self.s = 0.0;
    }

    /// Whether a run is open.
    pub fn in_run(&self) -> bool {
        self.s > 0.0
    }

    /// The evidence of the recent window under p₀: the exact Poisson upper tail of the hits in
    /// the last 1, 2, 4 and 8 blocks (plus the open block), the smallest of the four times 4
    /// (Bonferroni over the four lengths). The windows are fixed by exposure count, not chosen
    /// by the data, so at a fixed time this is a valid p-value.
    ///
    /// The rate tested against is the larger of p₀ and `prior` (the parent's rate): a slice's
    /// own baseline, estimated from little data, is sometimes low by chance, and the slices
    /// whose charts cross are exactly those; testing against the parent too keeps those from
    /// alerting (on a simulated 40 000-reply stream over 40 clusters they did).
    pub fn p_value(&self, c: &RateConfig, prior: f64) -> f64 {
        let p0 = self
            .p0(c, prior)
            .max(if prior.is_finite() { prior } else { 0.0 });
        let (mut n, mut x) = (self.cur_n, self.cur_x);
        let mut best: f64 = 1.0;
        for (i, (bn, bx)) in self.blocks_newest_first().enumerate() {
            n += bn;
            x += bx;
            if matches!(i, 0 | 1 | 3 | 7) && n > 0.0 {
                best = best.min(poisson_upper_tail(x, n * p0));
            }
        }
        if self.blocks_newest_first().next().is_none() && n > 0.0 {
            best = best.min(poisson_upper_tail(x, n * p0));
        }
        (best * 4.0).min(1.0)
    }

    fn blocks_newest_first(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        let len = self.blocks.len();
        (0..len).map(move |i| self.blocks[(self.head + len - 1 - i) % len])
    }

    fn window_push(&mut self, n: f64, x: f64) {
        self.cur_n += n;
        self.cur_x += x;
        if self.cur_n >= BLOCK {
            let b = (self.cur_n, self.cur_x);
            if self.blocks.len() < BLOCKS {
                self.blocks.push(b);
                self.head = self.blocks.len() % BLOCKS;
            } else {
                // The oldest block leaves the window and settles into the baseline.
                let (on, ox) = self.blocks[self.head];
                self.base_n += on;
                self.base_x += ox;
                self.blocks[self.head] = b;
                self.head = (self.head + 1) % BLOCKS;
            }
            self.cur_n = 0.0;
            self.cur_x = 0.0;
        }
    }

    /// Exposures and hits in the recent window (the open block and the kept blocks).
    pub fn window(&self) -> (f64, f64) {
        self.blocks
            .iter()
            .fold((self.cur_n, self.cur_x), |(n, x), b| (n + b.0, x + b.1))
    }
}

/// Exposures per window block.
const BLOCK: f64 = 64.0;
/// Blocks kept (a window of up to 512 exposures).
const BLOCKS: usize = 8;

/// `P(X ≥ x)` for `X ~ Poisson(λ)`: the regularised lower incomplete gamma `P(x, λ)`.
pub fn poisson_upper_tail(x: f64, lambda: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    if lambda <= 0.0 {
        return 0.0;
    }
    gamma_p(x, lambda).clamp(0.0, 1.0)
}

/// The Benjamini–Hochberg threshold at level `q` over `p_values`: the largest `p₍ᵢ₎` with
/// `p₍ᵢ₎ ≤ i·q/m`; every p-value at or below it is a discovery. `None` when there is none.
pub fn bh_threshold(p_values: &mut [f64], q: f64) -> Option<f64> {
    let m = p_values.len() as f64;
    p_values.sort_by(f64::total_cmp);
    let mut t = None;
    for (i, p) in p_values.iter().enumerate() {
        if *p <= (i + 1) as f64 * q / m {
            t = Some(*p);
        }
    }
    t
}

/// Which of `p_values` are Benjamini–Hochberg discoveries at level `q`.
pub fn benjamini_hochberg(p_values: &[f64], q: f64) -> Vec<bool> {
    let mut sorted = p_values.to_vec();
    match bh_threshold(&mut sorted, q) {
        Some(t) => p_values.iter().map(|p| *p <= t).collect(),
        None => vec![false; p_values.len()],
    }
}

/// The Wilson score interval (95 %) for `x` successes in `n` trials: `(lo, hi)`; `(0, 1)` for
/// `n = 0`. `x` above `n` (several hits on one exposure) is clamped.
pub fn wilson(x: f64, n: f64) -> (f64, f64) {
    if n <= 0.0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let p = (x / n).clamp(0.0, 1.0);
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn bernoulli(rng: &mut SplitMix64, p: f64) -> bool {
        (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// Runs `n` Bernoulli(`p`) draws through a chart whose baseline is known (prior weight
    /// huge), counting signals (the chart restarts after each).
    fn alarms(c: &RateConfig, p0: f64, p: f64, n: u64, seed: u64) -> u64 {
        let mut rng = SplitMix64::new(seed);
        let mut chart = RateCusum::default();
        let mut count = 0;
        for _ in 0..n {
            if chart.observe(c, p0, bernoulli(&mut rng, p)) {
                count += 1;
                chart.restart();
            }
        }
        count
    }

    #[test]
    fn constant_streams_stay_under_the_arl_bound() {
        // 1e6 in-control draws: Lorden's bound allows at most 1e6 / e^h signals on average.
        for (p0, seed) in [(0.002, 1), (0.005, 2), (0.01, 3), (0.05, 4)] {
            let c = RateConfig {
                prior_weight: 1e12,
                ..RateConfig::default()
            };
            let bound = 1e6 / c.h.exp();
            let got = alarms(&c, p0, p0, 1_000_000, seed);
            assert!(
                (got as f64) < bound,
                "p0 {p0}: {got} signals, bound {bound:.0}"
            );
        }
    }

    #[test]
    fn a_threefold_rise_is_detected_within_a_bounded_number_of_samples() {
        // p0 = 0.5 %: a rise to 1.5 % signals within 3 000 draws in ≥ 95 % of 200 seeded runs
        // (expected delay ≈ h / (p1·ln k − (k−1)·p0) ≈ 1 000).
        let c = RateConfig::default();
        let mut within = 0;
        for seed in 0..200 {
            let mut rng = SplitMix64::new(100 + seed);
            let mut chart = RateCusum::default();
            for _ in 0..20_000 {
                chart.observe(&c, 0.005, bernoulli(&mut rng, 0.005));
            }
            chart.restart();
            let hit = (0..3_000).any(|_| chart.observe(&c, 0.005, bernoulli(&mut rng, 0.015)));
            within += u32::from(hit);
        }
        assert!(within >= 190, "{within}/200 detected within 3 000 draws");
    }

    #[test]
    fn the_baseline_is_the_slice_own_and_a_prior_carries_a_fresh_slice() {
        let c = RateConfig::default();
        let fresh = RateCusum::default();
        assert!((fresh.p0(&c, 0.01) - 0.01).abs() < 1e-12);
        assert!((fresh.p0(&c, 0.0) - c.floor).abs() < 1e-12);
        let mut rng = SplitMix64::new(9);
        let mut chart = RateCusum::default();
        for _ in 0..200_000 {
            chart.observe(&c, 0.05, bernoulli(&mut rng, 0.003));
        }
        let p0 = chart.p0(&c, 0.05);
        assert!((0.002..0.004).contains(&p0), "{p0}");
    }

    #[test]
    fn bh_keeps_the_false_discovery_rate_across_slices() {
        // 1000 null slices and 10 true ones (p0 = 0.5 % → 5 %), 2 000 exposures each after a
        // 20 000-exposure warm-up; at the end every slice's run p-value goes through BH.
        let c = RateConfig::default();
        let mut total_false = 0usize;
        let mut total = 0usize;
        let mut true_found = 0usize;
        for round in 0..5u64 {
            let mut ps = Vec::new();
            for s in 0..1010u64 {
                let mut rng = SplitMix64::new(round * 10_000 + s);
                let mut chart = RateCusum::default();
                for _ in 0..20_000 {
                    chart.observe(&c, 0.005, bernoulli(&mut rng, 0.005));
                }
                let p = if s >= 1000 { 0.05 } else { 0.005 };
                for _ in 0..2_000 {
                    chart.observe(&c, 0.005, bernoulli(&mut rng, p));
                }
                ps.push(chart.p_value(&c, 0.005));
            }
            let d = benjamini_hochberg(&ps, c.q);
            total += d.iter().filter(|x| **x).count();
            total_false += d[..1000].iter().filter(|x| **x).count();
            true_found += d[1000..].iter().filter(|x| **x).count();
        }
        assert!(true_found >= 45, "{true_found}/50 true slices found");
        let fdr = total_false as f64 / total.max(1) as f64;
        assert!(fdr <= 0.05, "FDR {fdr} ({total_false}/{total})");
    }

    #[test]
    fn bh_reference_cases() {
        fn check(ps: &[f64], q: f64, expected: &[bool]) {
            assert_eq!(benjamini_hochberg(ps, q), expected, "{ps:?}");
        }
        check(&[0.01, 0.02, 0.03, 0.04, 0.05], 0.05, &[true; 5]);
        check(&[0.001, 0.5, 0.9], 0.05, &[true, false, false]);
        // Step-up: 0.013 > 1·0.05/4 alone, but 0.02 ≤ 2·0.05/4 lifts it.
        check(&[0.9, 0.013, 0.9, 0.02], 0.05, &[false, true, false, true]);
        check(&[0.02, 0.03, 0.04, 0.9], 0.05, &[false; 4]);
        check(&[0.2, 0.3], 0.05, &[false, false]);
        check(&[], 0.05, &[]);
    }

    #[test]
    fn poisson_tail_and_wilson() {
        // P(X ≥ 1 | λ) = 1 − e^−λ; P(X ≥ 2 | 1) = 1 − 2/e.
        assert!((poisson_upper_tail(1.0, 0.5) - (1.0 - (-0.5f64).exp())).abs() < 1e-12);
        assert!((poisson_upper_tail(2.0, 1.0) - (1.0 - 2.0 / std::f64::consts::E)).abs() < 1e-10);
        assert_eq!(poisson_upper_tail(0.0, 3.0), 1.0);
        let (lo, hi) = wilson(5.0, 100.0);
        // Wilson 95 % for 5/100: [0.0215, 0.1118].
        assert!(
            (lo - 0.0215).abs() < 5e-4 && (hi - 0.1118).abs() < 5e-4,
            "{lo} {hi}"
        );
        assert_eq!(wilson(0.0, 0.0), (0.0, 1.0));
    }

    #[test]
    fn specs_parse_and_bad_values_name_the_key() {
        let c = RateConfig::parse("rate:k=4,h=9").unwrap();
        assert_eq!((c.k, c.h), (4.0, 9.0));
        assert_eq!(RateConfig::parse(&c.to_string()).unwrap(), c);
        assert_eq!(RateConfig::parse("rate").unwrap(), RateConfig::default());
        for bad in ["rate:k=1", "rate:h=0", "rate:zz=1", "rate:k=x", "adwin"] {
            assert!(RateConfig::parse(bad).is_err(), "{bad}");
        }
    }
}
