//! ADWIN (adaptive windowing, Bifet & Gavaldà 2007) with detections identical to River 0.26.1.
//!
//! The window is kept as an exponential histogram: row `i` holds up to `max_buckets`
//! summaries (sum and variance) of `2^i` consecutive values each; when a row
//! overflows, its two oldest summaries merge into one summary of the next row.
//! Every `clock` updates (once more than `grace_period` values are in the window)
//! every cut between summaries is tested, oldest first, with the Hoeffding/Bernstein
//! bound; on a cut the oldest summary is dropped and the whole scan restarts.
//!
//! Floating-point operations are performed in the same order as River's
//! implementation so that the same stream gives the same detection indices.
//! Like River's `drift.ADWIN`, the detector starts afresh on the update that
//! follows a detection.

use serde::{Deserialize, Serialize};

use crate::error::{check_finite, DriftError};
use crate::Detector;

/// ADWIN parameters (defaults are River 0.26.1's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdwinConfig {
    /// Significance value (0 < delta < 1). Default 0.002.
    pub delta: f64,
    /// Check for a cut every `clock` updates. Default 32.
    pub clock: u32,
    /// Maximum number of summaries per histogram row before two are merged. Default 5.
    pub max_buckets: u32,
    /// Minimum length of each sub-window for a cut to be considered. Default 5.
    pub min_window_length: u32,
    /// No cut is checked until the window holds more than this many values. Default 10.
    pub grace_period: u32,
}

impl Default for AdwinConfig {
    fn default() -> Self {
        AdwinConfig {
            delta: 0.002,
            clock: 32,
            max_buckets: 5,
            min_window_length: 5,
            grace_period: 10,
        }
    }
}

impl AdwinConfig {
    /// Largest accepted `max_buckets` (keeps the histogram's memory bounded).
    pub const MAX_MAX_BUCKETS: u32 = 1 << 16;

    /// Check ranges; errors name the parameter.
    pub fn validate(&self) -> Result<(), DriftError> {
        const D: &str = "adwin";
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(DriftError::bad_param(
                D,
                "delta",
                self.delta,
                "must be in (0, 1)",
            ));
        }
        if self.clock == 0 {
            return Err(DriftError::bad_param(D, "clock", self.clock, "must be ≥ 1"));
        }
        if self.max_buckets == 0 || self.max_buckets > Self::MAX_MAX_BUCKETS {
            return Err(DriftError::bad_param(
                D,
                "max_buckets",
                self.max_buckets,
                format!("must be in 1..={}", Self::MAX_MAX_BUCKETS),
            ));
        }
        Ok(())
    }
}

/// The ADWIN detector. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adwin {
    config: AdwinConfig,
    total: f64,
    variance: f64,
    width: f64,
    tick: u64,
    n_detections: u64,
    /// Number of histogram rows in use.
    rows: usize,
    /// Summaries used in each row (allocated rows may exceed `rows`; they are reused).
    lens: Vec<usize>,
    /// Row-major summary sums, `max_buckets + 1` slots per row.
    totals: Vec<f64>,
    /// Row-major summary variances (sums of squared deviations), same layout.
    variances: Vec<f64>,
    drift: bool,
}

/// `2^row` as f64 (exact).
#[inline]
fn row_size(row: usize) -> f64 {
    // Rows never exceed 64 for any stream that fits in memory; powi is exact for powers of two.
    2f64.powi(row as i32)
}

impl Adwin {
    /// A detector with the given parameters.
    pub fn new(config: AdwinConfig) -> Result<Self, DriftError> {
        config.validate()?;
        let stride = config.max_buckets as usize + 1;
        // Preallocate 32 rows (enough for ~2^32 · max_buckets values); more are added on demand.
        let prealloc = 32;
        Ok(Adwin {
            config,
            total: 0.0,
            variance: 0.0,
            width: 0.0,
            tick: 0,
            n_detections: 0,
            rows: 1,
            lens: vec![0; prealloc],
            totals: vec![0.0; prealloc * stride],
            variances: vec![0.0; prealloc * stride],
            drift: false,
        })
    }

    /// The parameters.
    pub fn config(&self) -> &AdwinConfig {
        &self.config
    }

    /// Number of values in the current window.
    pub fn width(&self) -> f64 {
        self.width
    }

    /// Sum of the values in the window.
    pub fn total(&self) -> f64 {
        self.total
    }

    /// Sum of squared deviations from the mean within the window (River's `variance`).
    pub fn variance(&self) -> f64 {
        self.variance
    }

    /// Mean of the window (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.width == 0.0 {
            0.0
        } else {
            self.total / self.width
        }
    }

    /// Detections since the last reset (at most 1: the detector restarts after a detection).
    pub fn n_detections(&self) -> u64 {
        self.n_detections
    }

    /// Number of histogram rows in use (grows with log2 of the window width).
    pub fn rows(&self) -> usize {
        self.rows
    }

    #[inline]
    fn stride(&self) -> usize {
        self.config.max_buckets as usize + 1
    }

    fn clear(&mut self) {
        self.total = 0.0;
        self.variance = 0.0;
        self.width = 0.0;
        self.tick = 0;
        self.n_detections = 0;
        self.rows = 1;
        self.lens.iter_mut().for_each(|l| *l = 0);
        self.totals.iter_mut().for_each(|t| *t = 0.0);
        self.variances.iter_mut().for_each(|v| *v = 0.0);
        self.drift = false;
    }

    #[inline]
    fn push_summary(&mut self, row: usize, total: f64, variance: f64) {
        let slot = row * self.stride() + self.lens[row];
        self.totals[slot] = total;
        self.variances[slot] = variance;
        self.lens[row] += 1;
    }

    /// Drop the `n` oldest summaries of `row` (shifting the rest to the front).
    #[inline]
    fn drop_front(&mut self, row: usize, n: usize) {
        let base = row * self.stride();
        let len = self.lens[row];
        self.totals.copy_within(base + n..base + len, base);
        self.variances.copy_within(base + n..base + len, base);
        for slot in base + len - n..base + len {
            self.totals[slot] = 0.0;
            self.variances[slot] = 0.0;
        }
        self.lens[row] = len - n;
    }

    fn ensure_row(&mut self, row: usize) {
        if row >= self.rows {
            self.rows = row + 1;
            if self.lens.len() < self.rows {
                // Only past 2^32·max_buckets values: amortised, never in steady state.
                let stride = self.stride();
                self.lens.push(0);
                self.totals.extend(std::iter::repeat_n(0.0, stride));
                self.variances.extend(std::iter::repeat_n(0.0, stride));
            }
        }
    }

    fn insert(&mut self, value: f64) {
        self.push_summary(0, value, 0.0);
        self.width += 1.0;
        let mut incremental_variance = 0.0;
        if self.width > 1.0 {
            let d = value - self.total / (self.width - 1.0);
            incremental_variance = (self.width - 1.0) * d * d / self.width;
        }
        self.variance += incremental_variance;
        self.total += value;
        self.compress();
    }

    fn compress(&mut self) {
        let full = self.config.max_buckets as usize + 1;
        let mut row = 0;
        loop {
            if self.lens[row] != full {
                break;
            }
            let base = row * self.stride();
            let n = row_size(row);
            let (t0, t1) = (self.totals[base], self.totals[base + 1]);
            let (v0, v1) = (self.variances[base], self.variances[base + 1]);
            let mu0 = t0 / n;
            let mu1 = t1 / n;
            let merged_total = t0 + t1;
            let merged_variance = v0 + v1 + n * 0.5 * (mu0 - mu1) * (mu0 - mu1);
            self.ensure_row(row + 1);
            self.push_summary(row + 1, merged_total, merged_variance);
            self.drop_front(row, 2);
            if self.lens[row + 1] < full {
                break;
            }
            row += 1;
        }
    }

    /// Drop the oldest summary of the window.
    fn delete_oldest(&mut self) {
        let last = self.rows - 1;
        let n = row_size(last);
        let base = last * self.stride();
        let u = self.totals[base];
        let v = self.variances[base];
        let mu = u / n;
        self.width -= n;
        self.total -= u;
        let mu_window = self.total / self.width;
        let inc = v + n * self.width * (mu - mu_window) * (mu - mu_window) / (n + self.width);
        self.variance -= inc;
        self.drop_front(last, 1);
        if self.lens[last] == 0 && self.rows > 1 {
            self.rows -= 1;
        }
    }

    #[inline]
    fn cut_found(&self, n0: f64, n1: f64, delta_mean: f64) -> bool {
        let min_len = f64::from(self.config.min_window_length);
        let delta_prime = (2.0 * self.width.ln() / self.config.delta).ln();
        let m_recip = 1.0 / (n0 - min_len + 1.0) + 1.0 / (n1 - min_len + 1.0);
        let epsilon = (2.0 * m_recip * (self.variance / self.width) * delta_prime).sqrt()
            + 2.0 / 3.0 * delta_prime * m_recip;
        delta_mean.abs() > epsilon
    }

    fn detect(&mut self) -> bool {
        let mut change = false;
        self.tick += 1;
        if !self.tick.is_multiple_of(u64::from(self.config.clock))
            || self.width <= f64::from(self.config.grace_period)
        {
            return false;
        }
        let min_len = f64::from(self.config.min_window_length);
        let stride = self.stride();
        let mut again = true;
        while again {
            again = false;
            let mut n0 = 0.0_f64;
            let mut n1 = self.width;
            let mut u0 = 0.0_f64;
            let mut u1 = self.total;
            'scan: for row in (0..self.rows).rev() {
                let size = row_size(row);
                let len = self.lens[row];
                let base = row * stride;
                for k in 0..len {
                    n0 += size;
                    n1 -= size;
                    let t = self.totals[base + k];
                    u0 += t;
                    u1 -= t;
                    if row == 0 && k + 1 == len {
                        break 'scan;
                    }
                    let delta_mean = (u0 / n0) - (u1 / n1);
                    if n1 >= min_len && n0 >= min_len && self.cut_found(n0, n1, delta_mean) {
                        again = true;
                        change = true;
                        if self.width > 0.0 {
                            self.delete_oldest();
                            break 'scan;
                        }
                    }
                }
            }
        }
        if change {
            self.n_detections += 1;
        }
        change
    }
}

impl Default for Adwin {
    fn default() -> Self {
        // The default configuration always validates; build it directly.
        let config = AdwinConfig::default();
        let stride = config.max_buckets as usize + 1;
        Adwin {
            config,
            total: 0.0,
            variance: 0.0,
            width: 0.0,
            tick: 0,
            n_detections: 0,
            rows: 1,
            lens: vec![0; 32],
            totals: vec![0.0; 32 * stride],
            variances: vec![0.0; 32 * stride],
            drift: false,
        }
    }
}

impl Detector for Adwin {
    fn update(&mut self, x: f64) -> Result<bool, DriftError> {
        check_finite(x)?;
        if self.drift {
            self.clear();
        }
        self.insert(x);
        self.drift = self.detect();
        Ok(self.drift)
    }

    fn reset(&mut self) {
        self.clear();
    }

    fn name(&self) -> &'static str {
        "adwin"
    }

    fn drift_detected(&self) -> bool {
        self.drift
    }

    fn estimate(&self) -> Option<f64> {
        (self.width > 0.0).then(|| self.mean())
    }
}
