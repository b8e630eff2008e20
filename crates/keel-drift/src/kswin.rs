//! KSWIN (Kolmogorov–Smirnov windowing, Raab et al. 2020), River 0.26.1's test, allocation-free.
//!
//! A ring buffer keeps the last `window_size` values. Once it is full, every update
//! draws `stat_size` distinct values uniformly from the oldest
//! `window_size − stat_size` ones and runs a two-sample Kolmogorov–Smirnov test against
//! the newest `stat_size` values. As with `scipy.stats.ks_2samp(method="auto")` on two
//! samples of equal size `n` (what River calls), the p-value is the exact
//! `P(D ≥ h/n)` of the two-sample KS distribution, `h` being the largest gap between
//! the empirical CDF counts. Drift when `p ≤ alpha` and `D > 0.1`, as in River.
//!
//! Because `P(D ≥ h/n)` falls with `h`, the detector precomputes the smallest
//! rejecting `h` once. It keeps the older part and the recent part of the window as
//! two sorted arrays, updated in place as values move through the window (one
//! memmove each). The reference sample is drawn by selection sampling (Knuth's
//! Algorithm S: a uniform `stat_size`-subset, produced already sorted) and the KS
//! statistic is one merge. An update therefore costs O(window_size) with small
//! constants, no sort, no allocation and no special function. The p-value of the
//! latest test is computed on demand by [`Kswin::p_value`].
//!
//! River samples with Python's `random.Random(seed)`; this detector uses a seeded
//! SplitMix64 generator (default seed 0, deterministic), so detections agree with
//! River's in distribution, not index for index. Like River, it starts afresh (empty
//! window, generator re-seeded) on the update after a detection.

use serde::{Deserialize, Serialize};

use crate::error::{check_finite, DriftError};
use crate::rng::SplitMix64;
use crate::Detector;

/// KSWIN parameters (defaults are River 0.26.1's except `seed`, which River leaves unset).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KswinConfig {
    /// Significance level of the KS test. Default 0.005.
    pub alpha: f64,
    /// Size of the sliding window. Default 100.
    pub window_size: usize,
    /// Size of the recent (statistic) window and of the reference sample. Default 30.
    pub stat_size: usize,
    /// Seed of the sampling generator. Default 0.
    pub seed: u64,
}

impl Default for KswinConfig {
    fn default() -> Self {
        KswinConfig {
            alpha: 0.005,
            window_size: 100,
            stat_size: 30,
            seed: 0,
        }
    }
}

impl KswinConfig {
    /// Largest accepted `stat_size` (scipy's exact-method limit).
    pub const MAX_STAT_SIZE: usize = 10_000;
    /// Largest accepted `window_size` (bounds the detector's memory).
    pub const MAX_WINDOW_SIZE: usize = 1 << 24;

    /// Check ranges; errors name the parameter.
    pub fn validate(&self) -> Result<(), DriftError> {
        const D: &str = "kswin";
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(DriftError::bad_param(
                D,
                "alpha",
                self.alpha,
                "must be in (0, 1]",
            ));
        }
        if self.stat_size == 0 || self.stat_size > Self::MAX_STAT_SIZE {
            return Err(DriftError::bad_param(
                D,
                "stat_size",
                self.stat_size,
                format!("must be in 1..={}", Self::MAX_STAT_SIZE),
            ));
        }
        if self.window_size > Self::MAX_WINDOW_SIZE {
            return Err(DriftError::bad_param(
                D,
                "window_size",
                self.window_size,
                format!("must be ≤ {}", Self::MAX_WINDOW_SIZE),
            ));
        }
        if self.window_size < 2 * self.stat_size {
            return Err(DriftError::bad_param(
                D,
                "window_size",
                self.window_size,
                format!(
                    "must be ≥ 2·stat_size = {} (the reference sample is drawn without replacement \
                     from the window's oldest window_size − stat_size values)",
                    2 * self.stat_size
                ),
            ));
        }
        Ok(())
    }
}

/// `P(D_{n,n} ≥ h/n)` for the two-sample KS statistic of two samples of size `n`
/// (the exact formula scipy uses: an alternating sum of binomial-coefficient ratios,
/// evaluated Horner-style to avoid cancellation). Clamped to [0, 1].
pub fn ks_two_sample_pvalue(n: usize, h: usize) -> f64 {
    if h == 0 || n == 0 {
        return 1.0;
    }
    if h > n {
        return 0.0;
    }
    let (nf, hf) = (n as f64, h as f64);
    let mut p = 0.0_f64;
    let mut k = n / h;
    loop {
        let kh = k as f64 * hf;
        let mut term = 1.0_f64;
        for j in 0..h {
            let jf = j as f64;
            term = (nf - kh - jf) * term / (nf + kh + jf + 1.0);
        }
        p = term * (1.0 - p);
        if k == 0 {
            break;
        }
        k -= 1;
    }
    (2.0 * p).clamp(0.0, 1.0)
}

/// The KSWIN detector. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kswin {
    config: KswinConfig,
    /// Ring buffer of the last `window_size` values; `head` is the oldest once full.
    ring: Vec<f64>,
    head: usize,
    len: usize,
    /// The oldest `window_size − stat_size` values of the window, sorted.
    older: Vec<f64>,
    /// The newest `stat_size` values of the window, sorted.
    recent: Vec<f64>,
    /// Scratch buffer for the reference sample (sorted by construction).
    sample: Vec<f64>,
    rng: SplitMix64,
    /// Smallest count gap `h` with `P(D ≥ h/n) ≤ alpha` (`stat_size + 1` if none).
    h_crit: usize,
    /// Count gap of the latest test (`None` before the window first fills).
    last_gap: Option<usize>,
    n: u64,
    drift: bool,
}

impl Kswin {
    /// A detector with the given parameters.
    pub fn new(config: KswinConfig) -> Result<Self, DriftError> {
        config.validate()?;
        let n = config.stat_size;
        let h_crit = (1..=n)
            .find(|&h| ks_two_sample_pvalue(n, h) <= config.alpha)
            .unwrap_or(n + 1);
        let older = config.window_size - n;
        Ok(Kswin {
            config,
            ring: vec![0.0; config.window_size],
            head: 0,
            len: 0,
            older: Vec::with_capacity(older),
            recent: Vec::with_capacity(n),
            sample: vec![0.0; n],
            rng: SplitMix64::new(config.seed),
            h_crit,
            last_gap: None,
            n: 0,
            drift: false,
        })
    }

    /// The parameters.
    pub fn config(&self) -> &KswinConfig {
        &self.config
    }

    /// KS statistic `D` of the latest test, if a test ran.
    pub fn statistic(&self) -> Option<f64> {
        self.last_gap
            .map(|h| h as f64 / self.config.stat_size as f64)
    }

    /// Exact p-value of the latest test, if a test ran (computed on demand, O(stat_size)).
    pub fn p_value(&self) -> Option<f64> {
        self.last_gap
            .map(|h| ks_two_sample_pvalue(self.config.stat_size, h))
    }

    /// Values seen since the last (re)start.
    pub fn seen(&self) -> u64 {
        self.n
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
        self.ring.iter_mut().for_each(|v| *v = 0.0);
        self.sample.iter_mut().for_each(|v| *v = 0.0);
        self.older.clear();
        self.recent.clear();
        self.rng = SplitMix64::new(self.config.seed);
        self.last_gap = None;
        self.n = 0;
        self.drift = false;
    }

    /// Largest gap between the two samples' empirical CDF counts (both sorted, same length).
    fn count_gap(a: &[f64], b: &[f64]) -> usize {
        let n = a.len();
        let (mut i, mut j, mut gap) = (0usize, 0usize, 0usize);
        while i < n && j < n {
            let x = if a[i] <= b[j] { a[i] } else { b[j] };
            while i < n && a[i] <= x {
                i += 1;
            }
            while j < n && b[j] <= x {
                j += 1;
            }
            gap = gap.max(i.abs_diff(j));
        }
        gap
    }

    fn test(&mut self) -> bool {
        let r = self.config.stat_size;
        let m = self.older.len();
        // Selection sampling: each older value is taken with probability needed/remaining,
        // which yields a uniform r-subset, in sorted order since `older` is sorted.
        let mut needed = r;
        let mut k = 0;
        for (i, &v) in self.older.iter().enumerate() {
            if self.rng.below((m - i) as u64) < needed as u64 {
                self.sample[k] = v;
                k += 1;
                needed -= 1;
                if needed == 0 {
                    break;
                }
            }
        }
        let gap = Self::count_gap(&self.sample[..k], &self.recent);
        self.last_gap = Some(gap);
        gap >= self.h_crit && (gap as f64 / r as f64) > 0.1
    }
}

/// Insert `x` into the sorted vector `v` (capacity reserved up front).
fn insert_sorted(v: &mut Vec<f64>, x: f64) {
    let at = v.partition_point(|a| a.total_cmp(&x).is_lt());
    v.insert(at, x);
}

/// Replace one occurrence of `old` in the sorted slice `v` by `new`, keeping it sorted.
fn replace_sorted(v: &mut [f64], old: f64, new: f64) {
    let mut i = v.partition_point(|a| a.total_cmp(&old).is_lt());
    if i >= v.len() {
        return; // unreachable while the sorted arrays mirror the ring buffer
    }
    if new.total_cmp(&old).is_gt() {
        while i + 1 < v.len() && v[i + 1].total_cmp(&new).is_lt() {
            v[i] = v[i + 1];
            i += 1;
        }
    } else {
        while i > 0 && v[i - 1].total_cmp(&new).is_gt() {
            v[i] = v[i - 1];
            i -= 1;
        }
    }
    v[i] = new;
}

impl Default for Kswin {
    fn default() -> Self {
        let config = KswinConfig::default();
        let n = config.stat_size;
        // Default parameters: the critical gap is computed exactly as in `new`.
        let h_crit = (1..=n)
            .find(|&h| ks_two_sample_pvalue(n, h) <= config.alpha)
            .unwrap_or(n + 1);
        Kswin {
            config,
            ring: vec![0.0; config.window_size],
            head: 0,
            len: 0,
            older: Vec::with_capacity(config.window_size - n),
            recent: Vec::with_capacity(n),
            sample: vec![0.0; n],
            rng: SplitMix64::new(config.seed),
            h_crit,
            last_gap: None,
            n: 0,
            drift: false,
        }
    }
}

impl Detector for Kswin {
    fn update(&mut self, x: f64) -> Result<bool, DriftError> {
        check_finite(x)?;
        if self.drift {
            self.clear();
        }
        self.n += 1;
        let w = self.config.window_size;
        let older = w - self.config.stat_size;
        if self.len < w {
            if self.len < older {
                insert_sorted(&mut self.older, x);
            } else {
                insert_sorted(&mut self.recent, x);
            }
            self.ring[(self.head + self.len) % w] = x;
            self.len += 1;
        } else {
            // The oldest value leaves; the oldest recent value joins the older part.
            let leaving = self.ring[self.head];
            let moving = self.ring[(self.head + older) % w];
            replace_sorted(&mut self.older, leaving, moving);
            replace_sorted(&mut self.recent, moving, x);
            self.ring[self.head] = x;
            self.head = (self.head + 1) % w;
        }
        self.drift = self.len == w && self.test();
        Ok(self.drift)
    }

    fn reset(&mut self) {
        self.clear();
    }

    fn name(&self) -> &'static str {
        "kswin"
    }

    fn drift_detected(&self) -> bool {
        self.drift
    }

    fn estimate(&self) -> Option<f64> {
        if self.len == 0 {
            return None;
        }
        let w = self.config.window_size;
        let take = self.len.min(self.config.stat_size);
        let start = self.len - take;
        let sum: f64 = (start..self.len)
            .map(|i| self.ring[(self.head + i) % w])
            .sum();
        Some(sum / take as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<f64>) -> Vec<f64> {
        v.sort_by(f64::total_cmp);
        v
    }

    #[test]
    fn sorted_halves_mirror_the_ring_buffer() {
        let config = KswinConfig {
            window_size: 12,
            stat_size: 4,
            alpha: 1e-9,
            seed: 7,
        };
        let mut d = Kswin::new(config).unwrap();
        let mut rng = SplitMix64::new(1);
        for step in 0..5000 {
            // Few distinct values, so ties are frequent.
            let x = (rng.below(5) as f64) - 2.0;
            d.update(x).unwrap();
            let w = config.window_size;
            let logical: Vec<f64> = (0..d.len).map(|i| d.ring[(d.head + i) % w]).collect();
            let older = w - config.stat_size;
            let split = logical.len().min(older);
            assert_eq!(d.older, sorted(logical[..split].to_vec()), "step {step}");
            assert_eq!(d.recent, sorted(logical[split..].to_vec()), "step {step}");
        }
    }

    #[test]
    fn count_gap_matches_brute_force() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..500 {
            let a = sorted((0..8).map(|_| rng.below(6) as f64).collect());
            let b = sorted((0..8).map(|_| rng.below(6) as f64).collect());
            let brute = a
                .iter()
                .chain(&b)
                .map(|&x| {
                    let ca = a.iter().filter(|&&v| v <= x).count();
                    let cb = b.iter().filter(|&&v| v <= x).count();
                    ca.abs_diff(cb)
                })
                .max()
                .unwrap_or(0);
            assert_eq!(Kswin::count_gap(&a, &b), brute);
        }
    }

    #[test]
    fn critical_gap_for_river_defaults() {
        // n = 30, alpha = 0.005: P(D ≥ 13/30) ≈ 0.0065 > alpha ≥ P(D ≥ 14/30) ≈ 0.0025.
        let d = Kswin::new(KswinConfig::default()).unwrap();
        assert_eq!(d.h_crit, 14);
        assert!(ks_two_sample_pvalue(30, 13) > 0.005);
        assert!(ks_two_sample_pvalue(30, 14) <= 0.005);
    }
}
