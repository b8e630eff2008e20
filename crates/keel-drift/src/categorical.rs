//! Categorical distribution shift: PSI, Jensen–Shannon divergence and a chi-square test between a reference and a current window.
//!
//! The pure functions ([`psi`], [`js_divergence`], [`chi_square_homogeneity`],
//! [`shift_stats`]) compare two count vectors (index = category). The
//! [`CategoricalShift`] detector feeds on category indices (`0.0, 1.0, …, k−1`): the
//! first `reference` values after a (re)start fill the reference counts; after that a
//! sliding window of the last `window` values gives the current counts. Once the
//! window is full, every `clock` updates:
//!
//! **Threshold rule**: drift when the chi-square test of homogeneity rejects
//! (`p < alpha`, default 0.001) **and** the shift is material (`PSI ≥ min_psi`, default
//! 0.1 — the usual "moderate shift" mark; 0.25 is the usual "major shift"). The test
//! alone flags negligible shifts on large windows; PSI alone flags noise on small ones.
//!
//! Definitions (categories absent from both windows are ignored):
//! * PSI = Σ (cᵢ − rᵢ)·ln(cᵢ/rᵢ) with proportions smoothed by adding ½ to every count;
//! * JS  = ½·KL(r‖m) + ½·KL(c‖m), m = (r + c)/2, in bits (0 ≤ JS ≤ 1), unsmoothed;
//! * χ²  = Σ over the 2×k table of (O − E)²/E, k_active − 1 degrees of freedom,
//!   p-value from the regularised incomplete gamma function.
//!
//! The detector restarts (new reference) on the update after a detection.

use serde::{Deserialize, Serialize};

use crate::error::{check_finite, DriftError};
use crate::special::chi_square_sf;
use crate::Detector;

/// Result of a chi-square test of homogeneity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChiSquare {
    /// Pearson's statistic.
    pub statistic: f64,
    /// Degrees of freedom (active categories − 1).
    pub dof: u32,
    /// `P(χ²_dof ≥ statistic)`.
    pub p_value: f64,
}

/// All shift measures between two count vectors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShiftStats {
    /// Population stability index (nats, smoothed).
    pub psi: f64,
    /// Jensen–Shannon divergence (bits).
    pub js: f64,
    /// Chi-square test of homogeneity.
    pub chi_square: ChiSquare,
}

fn count_at(v: &[u64], i: usize) -> f64 {
    v.get(i).copied().unwrap_or(0) as f64
}

/// Iterate over `(r_i, c_i)` for categories present in either vector.
fn active<'a>(reference: &'a [u64], current: &'a [u64]) -> impl Iterator<Item = (f64, f64)> + 'a {
    let k = reference.len().max(current.len());
    (0..k)
        .map(move |i| (count_at(reference, i), count_at(current, i)))
        .filter(|&(r, c)| r > 0.0 || c > 0.0)
}

/// Population stability index between two count vectors (½ added to every active count).
/// 0 when either vector is empty.
pub fn psi(reference: &[u64], current: &[u64]) -> f64 {
    let (mut nr, mut nc, mut k) = (0.0, 0.0, 0.0);
    for (r, c) in active(reference, current) {
        nr += r;
        nc += c;
        k += 1.0;
    }
    if nr == 0.0 || nc == 0.0 {
        return 0.0;
    }
    let (dr, dc) = (nr + 0.5 * k, nc + 0.5 * k);
    active(reference, current)
        .map(|(r, c)| {
            let (pr, pc) = ((r + 0.5) / dr, (c + 0.5) / dc);
            (pc - pr) * (pc / pr).ln()
        })
        .sum()
}

/// Jensen–Shannon divergence in bits between the two count vectors' proportions.
/// 0 when either vector is empty.
pub fn js_divergence(reference: &[u64], current: &[u64]) -> f64 {
    let (mut nr, mut nc) = (0.0, 0.0);
    for (r, c) in active(reference, current) {
        nr += r;
        nc += c;
    }
    if nr == 0.0 || nc == 0.0 {
        return 0.0;
    }
    let mut js = 0.0;
    for (r, c) in active(reference, current) {
        let (pr, pc) = (r / nr, c / nc);
        let m = 0.5 * (pr + pc);
        if pr > 0.0 {
            js += 0.5 * pr * (pr / m).log2();
        }
        if pc > 0.0 {
            js += 0.5 * pc * (pc / m).log2();
        }
    }
    js.clamp(0.0, 1.0)
}

/// Pearson's chi-square test of homogeneity of the two count vectors (2 × k table).
/// With fewer than two active categories or an empty vector: statistic 0, p-value 1.
pub fn chi_square_homogeneity(reference: &[u64], current: &[u64]) -> ChiSquare {
    let (mut nr, mut nc, mut k) = (0.0, 0.0, 0u32);
    for (r, c) in active(reference, current) {
        nr += r;
        nc += c;
        k += 1;
    }
    if nr == 0.0 || nc == 0.0 || k < 2 {
        return ChiSquare {
            statistic: 0.0,
            dof: k.saturating_sub(1),
            p_value: 1.0,
        };
    }
    let n = nr + nc;
    let statistic: f64 = active(reference, current)
        .map(|(r, c)| {
            let t = r + c;
            let (er, ec) = (nr * t / n, nc * t / n);
            (r - er) * (r - er) / er + (c - ec) * (c - ec) / ec
        })
        .sum();
    let dof = k - 1;
    ChiSquare {
        statistic,
        dof,
        p_value: chi_square_sf(statistic, dof),
    }
}

/// PSI, Jensen–Shannon and the chi-square test in one call.
pub fn shift_stats(reference: &[u64], current: &[u64]) -> ShiftStats {
    ShiftStats {
        psi: psi(reference, current),
        js: js_divergence(reference, current),
        chi_square: chi_square_homogeneity(reference, current),
    }
}

/// Categorical-shift parameters (no River counterpart; defaults documented here).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CategoricalConfig {
    /// Number of categories `k`; inputs are indices `0..k`. Default 2.
    pub categories: usize,
    /// Values forming the reference window after each (re)start. Default 1000.
    pub reference: usize,
    /// Size of the sliding current window. Default 1000.
    pub window: usize,
    /// Significance level of the chi-square test. Default 0.001.
    pub alpha: f64,
    /// Minimum PSI for a detection. Default 0.1.
    pub min_psi: f64,
    /// Test every `clock` updates once the window is full. Default 1.
    pub clock: u32,
}

impl Default for CategoricalConfig {
    fn default() -> Self {
        CategoricalConfig {
            categories: 2,
            reference: 1000,
            window: 1000,
            alpha: 0.001,
            min_psi: 0.1,
            clock: 1,
        }
    }
}

impl CategoricalConfig {
    /// Largest accepted number of categories.
    pub const MAX_CATEGORIES: usize = 1 << 16;
    /// Largest accepted window (and reference) size.
    pub const MAX_WINDOW: usize = 1 << 24;

    /// Check ranges; errors name the parameter.
    pub fn validate(&self) -> Result<(), DriftError> {
        const D: &str = "categorical";
        if self.categories < 2 || self.categories > Self::MAX_CATEGORIES {
            return Err(DriftError::bad_param(
                D,
                "categories",
                self.categories,
                format!("must be in 2..={}", Self::MAX_CATEGORIES),
            ));
        }
        for (name, v) in [("reference", self.reference), ("window", self.window)] {
            if v == 0 || v > Self::MAX_WINDOW {
                return Err(DriftError::bad_param(
                    D,
                    name,
                    v,
                    format!("must be in 1..={}", Self::MAX_WINDOW),
                ));
            }
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(DriftError::bad_param(
                D,
                "alpha",
                self.alpha,
                "must be in (0, 1)",
            ));
        }
        if !(self.min_psi.is_finite() && self.min_psi >= 0.0) {
            return Err(DriftError::bad_param(
                D,
                "min_psi",
                self.min_psi,
                "must be ≥ 0",
            ));
        }
        if self.clock == 0 {
            return Err(DriftError::bad_param(D, "clock", self.clock, "must be ≥ 1"));
        }
        Ok(())
    }
}

/// The categorical-shift detector. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalShift {
    config: CategoricalConfig,
    reference_counts: Vec<u64>,
    reference_n: usize,
    current_counts: Vec<u64>,
    ring: Vec<u32>,
    head: usize,
    len: usize,
    tick: u64,
    last: Option<ShiftStats>,
    drift: bool,
}

impl CategoricalShift {
    /// A detector with the given parameters.
    pub fn new(config: CategoricalConfig) -> Result<Self, DriftError> {
        config.validate()?;
        Ok(CategoricalShift {
            config,
            reference_counts: vec![0; config.categories],
            reference_n: 0,
            current_counts: vec![0; config.categories],
            ring: vec![0; config.window],
            head: 0,
            len: 0,
            tick: 0,
            last: None,
            drift: false,
        })
    }

    /// The parameters.
    pub fn config(&self) -> &CategoricalConfig {
        &self.config
    }

    /// Measures of the latest test, if one ran.
    pub fn last_stats(&self) -> Option<ShiftStats> {
        self.last
    }

    /// Reference counts (complete once `reference` values were seen).
    pub fn reference_counts(&self) -> &[u64] {
        &self.reference_counts
    }

    /// Counts of the current sliding window.
    pub fn current_counts(&self) -> &[u64] {
        &self.current_counts
    }

    fn clear(&mut self) {
        self.reference_counts.iter_mut().for_each(|c| *c = 0);
        self.current_counts.iter_mut().for_each(|c| *c = 0);
        self.ring.iter_mut().for_each(|c| *c = 0);
        self.reference_n = 0;
        self.head = 0;
        self.len = 0;
        self.tick = 0;
        self.last = None;
        self.drift = false;
    }

    fn category(&self, x: f64) -> Result<usize, DriftError> {
        if x >= 0.0 && x.fract() == 0.0 && x < self.config.categories as f64 {
            Ok(x as usize)
        } else {
            Err(DriftError::OutOfDomain {
                detector: "categorical",
                value: x,
                reason: "values must be category indices 0, 1, …, categories − 1",
            })
        }
    }
}

impl Detector for CategoricalShift {
    fn update(&mut self, x: f64) -> Result<bool, DriftError> {
        check_finite(x)?;
        let cat = self.category(x)?;
        if self.drift {
            self.clear();
        }
        if self.reference_n < self.config.reference {
            self.reference_counts[cat] += 1;
            self.reference_n += 1;
            return Ok(false);
        }
        let w = self.config.window;
        if self.len < w {
            self.ring[self.len] = cat as u32;
            self.len += 1;
        } else {
            let old = self.ring[self.head] as usize;
            self.current_counts[old] -= 1;
            self.ring[self.head] = cat as u32;
            self.head = (self.head + 1) % w;
        }
        self.current_counts[cat] += 1;
        if self.len < w {
            return Ok(false);
        }
        self.tick += 1;
        if !self.tick.is_multiple_of(u64::from(self.config.clock)) {
            return Ok(false);
        }
        let stats = shift_stats(&self.reference_counts, &self.current_counts);
        self.last = Some(stats);
        self.drift =
            stats.chi_square.p_value < self.config.alpha && stats.psi >= self.config.min_psi;
        Ok(self.drift)
    }

    fn reset(&mut self) {
        self.clear();
    }

    fn name(&self) -> &'static str {
        "categorical"
    }

    fn drift_detected(&self) -> bool {
        self.drift
    }

    /// Share of category 1 in the current window (the rate, for a binary stream).
    fn estimate(&self) -> Option<f64> {
        (self.len > 0)
            .then(|| self.current_counts.get(1).copied().unwrap_or(0) as f64 / self.len as f64)
    }
}
