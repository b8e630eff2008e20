//! Page-Hinkley test with River 0.26.1's parametrisation and identical detections.
//!
//! With `m` the running mean (including the current value) and `dev = x − m`:
//! `S⁺ ← α·S⁺ + dev − δ`, `S⁻ ← α·S⁻ + dev + δ`; `min⁺ = min S⁺` (starting at +∞),
//! `max⁻ = max S⁻` (starting at −1, as River does). Once `min_instances` values were
//! seen, an increase is signalled when `S⁺ − min⁺ > λ` and a decrease when
//! `max⁻ − S⁻ > λ`. The detector starts afresh on the update after a detection.

use serde::{Deserialize, Serialize};

use crate::error::{check_finite, DriftError};
use crate::{Detector, Direction};

pub use crate::Direction as PhMode;

/// Page-Hinkley parameters (defaults are River 0.26.1's).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PageHinkleyConfig {
    /// Values needed before any detection. Default 30.
    pub min_instances: u64,
    /// Magnitude of change tolerated (δ). Default 0.005.
    pub delta: f64,
    /// Detection threshold (λ). Default 50.
    pub threshold: f64,
    /// Forgetting factor of the cumulative sums (α). Default 1 − 0.0001.
    pub alpha: f64,
    /// Direction(s) to watch. Default both.
    pub mode: Direction,
}

impl Default for PageHinkleyConfig {
    fn default() -> Self {
        PageHinkleyConfig {
            min_instances: 30,
            delta: 0.005,
            threshold: 50.0,
            alpha: 1.0 - 0.0001,
            mode: Direction::Both,
        }
    }
}

impl PageHinkleyConfig {
    /// Check ranges; errors name the parameter.
    pub fn validate(&self) -> Result<(), DriftError> {
        const D: &str = "page-hinkley";
        if !self.delta.is_finite() || self.delta < 0.0 {
            return Err(DriftError::bad_param(D, "delta", self.delta, "must be ≥ 0"));
        }
        if !self.threshold.is_finite() || self.threshold <= 0.0 {
            return Err(DriftError::bad_param(
                D,
                "threshold",
                self.threshold,
                "must be > 0",
            ));
        }
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(DriftError::bad_param(
                D,
                "alpha",
                self.alpha,
                "must be in (0, 1]",
            ));
        }
        Ok(())
    }
}

/// The Page-Hinkley detector. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageHinkley {
    config: PageHinkleyConfig,
    n: f64,
    mean: f64,
    sum_increase: f64,
    sum_decrease: f64,
    /// +∞ before the first value: serialised as a string so JSON can carry it.
    #[serde(with = "crate::float_serde")]
    min_increase: f64,
    max_decrease: f64,
    drift: bool,
}

impl PageHinkley {
    /// A detector with the given parameters.
    pub fn new(config: PageHinkleyConfig) -> Result<Self, DriftError> {
        config.validate()?;
        Ok(Self::fresh(config))
    }

    fn fresh(config: PageHinkleyConfig) -> Self {
        PageHinkley {
            config,
            n: 0.0,
            mean: 0.0,
            sum_increase: 0.0,
            sum_decrease: 0.0,
            min_increase: f64::INFINITY,
            max_decrease: -1.0,
            drift: false,
        }
    }

    /// The parameters.
    pub fn config(&self) -> &PageHinkleyConfig {
        &self.config
    }

    /// Running mean of the values since the last (re)start.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Current test statistics `(S⁺ − min⁺, max⁻ − S⁻)`.
    pub fn statistics(&self) -> (f64, f64) {
        (
            self.sum_increase - self.min_increase,
            self.max_decrease - self.sum_decrease,
        )
    }
}

impl Default for PageHinkley {
    fn default() -> Self {
        Self::fresh(PageHinkleyConfig::default())
    }
}

impl Detector for PageHinkley {
    fn update(&mut self, x: f64) -> Result<bool, DriftError> {
        check_finite(x)?;
        if self.drift {
            *self = Self::fresh(self.config);
        }
        self.n += 1.0;
        self.mean += (1.0 / self.n) * (x - self.mean);
        let dev = x - self.mean;
        let c = &self.config;
        self.sum_increase = c.alpha * self.sum_increase + dev - c.delta;
        self.sum_decrease = c.alpha * self.sum_decrease + dev + c.delta;
        if self.sum_increase < self.min_increase {
            self.min_increase = self.sum_increase;
        }
        if self.sum_decrease > self.max_decrease {
            self.max_decrease = self.sum_decrease;
        }
        if self.n >= c.min_instances as f64 {
            let up = self.sum_increase - self.min_increase > c.threshold;
            let down = self.max_decrease - self.sum_decrease > c.threshold;
            self.drift = match c.mode {
                Direction::Up => up,
                Direction::Down => down,
                Direction::Both => up || down,
            };
        }
        Ok(self.drift)
    }

    fn reset(&mut self) {
        *self = Self::fresh(self.config);
    }

    fn name(&self) -> &'static str {
        "page-hinkley"
    }

    fn drift_detected(&self) -> bool {
        self.drift
    }

    fn estimate(&self) -> Option<f64> {
        (self.n > 0.0).then_some(self.mean)
    }
}
