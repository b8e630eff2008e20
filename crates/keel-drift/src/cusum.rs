//! CUSUM charts: a standardised CUSUM for means and a log-likelihood-ratio CUSUM for Bernoulli rates.
//!
//! **Mean CUSUM** ([`Cusum`], spec `cusum`). The in-control mean μ₀ and standard
//! deviation σ₀ are given (`mean=`, `sigma=`) or estimated from the first `warmup`
//! values after each (re)start (sample mean and sample standard deviation). Each
//! later value is standardised, `z = (x − μ₀)/σ₀`, and
//! `S⁺ ← max(0, S⁺ + z − k)`, `S⁻ ← max(0, S⁻ − z − k)`; drift when `S⁺ > h`
//! (mode `up`/`both`) or `S⁻ > h` (mode `down`/`both`). `k` and `h` are therefore in
//! units of σ₀: the textbook `k = 0.5, h = 5` detects a one-σ shift with an
//! in-control average run length of about 465 values per side. A zero σ₀ (a constant
//! warm-up) is replaced by `1e-12·max(1, |μ₀|)`, so a constant stream never alarms and
//! any step away from it does.
//!
//! **Bernoulli CUSUM** ([`BernoulliCusum`], spec `cusum-bernoulli`). Values are in
//! [0, 1] (a 0/1 outcome, or a fraction). The in-control rate p₀ is given (`p0=`) or
//! estimated as the mean of the first `warmup` values; a warm-up mean of exactly 0
//! (or 1) becomes `½/(n + 1)` (or `1 − ½/(n + 1)`) and the downward (upward) side is
//! switched off, since no lower (higher) rate exists. The out-of-control
//! alternatives are the rates with odds multiplied (`up`) or divided (`down`) by
//! `odds` (default 2): `p₁ = R·p₀/(1 − p₀ + R·p₀)`. Each value adds its
//! log-likelihood ratio `x·ln(p₁/p₀) + (1 − x)·ln((1 − p₁)/(1 − p₀))` to a sum
//! clamped at 0; drift when a sum exceeds `h` (in nats). The in-control average run
//! length is at least `e^h` values per side (Lorden's bound), so the default `h = 10`
//! gives one false alarm per ≳ 22 000 in-control values per side.
//!
//! Both restart (re-estimating what they estimated) on the update after a detection.

use serde::{Deserialize, Serialize};

use crate::error::{check_finite, DriftError};
use crate::{Detector, Direction};

/// Mean-CUSUM parameters. No River counterpart exists; defaults are the textbook ones.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CusumConfig {
    /// Allowance (reference value) in σ units. Default 0.5.
    pub k: f64,
    /// Decision threshold in σ units. Default 5.
    pub h: f64,
    /// Values used to estimate μ₀/σ₀ when not given. Default 30.
    pub warmup: u64,
    /// Known in-control mean (skips estimating it).
    pub mean: Option<f64>,
    /// Known in-control standard deviation (skips estimating it).
    pub sigma: Option<f64>,
    /// Direction(s) to watch. Default both.
    pub mode: Direction,
}

impl Default for CusumConfig {
    fn default() -> Self {
        CusumConfig {
            k: 0.5,
            h: 5.0,
            warmup: 30,
            mean: None,
            sigma: None,
            mode: Direction::Both,
        }
    }
}

impl CusumConfig {
    /// Check ranges; errors name the parameter.
    pub fn validate(&self) -> Result<(), DriftError> {
        const D: &str = "cusum";
        if !self.k.is_finite() || self.k < 0.0 {
            return Err(DriftError::bad_param(D, "k", self.k, "must be ≥ 0"));
        }
        if !self.h.is_finite() || self.h <= 0.0 {
            return Err(DriftError::bad_param(D, "h", self.h, "must be > 0"));
        }
        if let Some(m) = self.mean {
            if !m.is_finite() {
                return Err(DriftError::bad_param(D, "mean", m, "must be finite"));
            }
        }
        if let Some(s) = self.sigma {
            if !(s.is_finite() && s > 0.0) {
                return Err(DriftError::bad_param(D, "sigma", s, "must be > 0"));
            }
        }
        if self.sigma.is_none() && self.warmup < 2 {
            return Err(DriftError::bad_param(
                D,
                "warmup",
                self.warmup,
                "must be ≥ 2 when sigma is estimated",
            ));
        }
        if self.mean.is_none() && self.warmup < 1 {
            return Err(DriftError::bad_param(
                D,
                "warmup",
                self.warmup,
                "must be ≥ 1 when mean is estimated",
            ));
        }
        Ok(())
    }

    fn needs_warmup(&self) -> bool {
        self.mean.is_none() || self.sigma.is_none()
    }
}

/// The standardised mean CUSUM. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cusum {
    config: CusumConfig,
    /// Values seen since the (re)start.
    n: u64,
    /// Running mean / sum of squared deviations since the (re)start (Welford).
    run_mean: f64,
    run_m2: f64,
    /// In-control mean and σ once known.
    mu0: f64,
    sigma0: f64,
    ready: bool,
    s_hi: f64,
    s_lo: f64,
    drift: bool,
}

impl Cusum {
    /// A detector with the given parameters.
    pub fn new(config: CusumConfig) -> Result<Self, DriftError> {
        config.validate()?;
        Ok(Self::fresh(config))
    }

    fn fresh(config: CusumConfig) -> Self {
        let ready = !config.needs_warmup();
        Cusum {
            config,
            n: 0,
            run_mean: 0.0,
            run_m2: 0.0,
            mu0: config.mean.unwrap_or(0.0),
            sigma0: config.sigma.unwrap_or(1.0),
            ready,
            s_hi: 0.0,
            s_lo: 0.0,
            drift: false,
        }
    }

    /// The parameters.
    pub fn config(&self) -> &CusumConfig {
        &self.config
    }

    /// `(μ₀, σ₀)` once known (after the warm-up).
    pub fn baseline(&self) -> Option<(f64, f64)> {
        self.ready.then_some((self.mu0, self.sigma0))
    }

    /// Current sums `(S⁺, S⁻)`.
    pub fn statistics(&self) -> (f64, f64) {
        (self.s_hi, self.s_lo)
    }
}

impl Default for Cusum {
    fn default() -> Self {
        Self::fresh(CusumConfig::default())
    }
}

impl Detector for Cusum {
    fn update(&mut self, x: f64) -> Result<bool, DriftError> {
        check_finite(x)?;
        if self.drift {
            *self = Self::fresh(self.config);
        }
        self.n += 1;
        let d = x - self.run_mean;
        self.run_mean += d / self.n as f64;
        self.run_m2 += d * (x - self.run_mean);
        if !self.ready {
            if self.n >= self.config.warmup {
                if self.config.mean.is_none() {
                    self.mu0 = self.run_mean;
                }
                if self.config.sigma.is_none() {
                    let sd = (self.run_m2 / (self.n as f64 - 1.0)).sqrt();
                    let floor = 1e-12 * self.mu0.abs().max(1.0);
                    self.sigma0 = if sd > floor { sd } else { floor };
                }
                self.ready = true;
            }
            return Ok(false);
        }
        let z = (x - self.mu0) / self.sigma0;
        let k = self.config.k;
        self.s_hi = (self.s_hi + z - k).max(0.0);
        self.s_lo = (self.s_lo - z - k).max(0.0);
        let h = self.config.h;
        self.drift = match self.config.mode {
            Direction::Up => self.s_hi > h,
            Direction::Down => self.s_lo > h,
            Direction::Both => self.s_hi > h || self.s_lo > h,
        };
        Ok(self.drift)
    }

    fn reset(&mut self) {
        *self = Self::fresh(self.config);
    }

    fn name(&self) -> &'static str {
        "cusum"
    }

    fn drift_detected(&self) -> bool {
        self.drift
    }

    fn estimate(&self) -> Option<f64> {
        (self.n > 0).then_some(self.run_mean)
    }
}

/// Bernoulli-CUSUM parameters. No River counterpart exists; defaults are documented here.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BernoulliCusumConfig {
    /// Known in-control rate (skips estimating it); must be in (0, 1).
    pub p0: Option<f64>,
    /// Odds ratio of the out-of-control alternative (> 1). Default 2.
    pub odds: f64,
    /// Decision threshold on the log-likelihood ratio (nats). Default 10.
    pub h: f64,
    /// Values used to estimate p₀ when not given. Default 100.
    pub warmup: u64,
    /// Direction(s) to watch. Default both.
    pub mode: Direction,
}

impl Default for BernoulliCusumConfig {
    fn default() -> Self {
        BernoulliCusumConfig {
            p0: None,
            odds: 2.0,
            h: 10.0,
            warmup: 100,
            mode: Direction::Both,
        }
    }
}

impl BernoulliCusumConfig {
    /// Check ranges; errors name the parameter.
    pub fn validate(&self) -> Result<(), DriftError> {
        const D: &str = "cusum-bernoulli";
        if let Some(p) = self.p0 {
            if !(p > 0.0 && p < 1.0) {
                return Err(DriftError::bad_param(D, "p0", p, "must be in (0, 1)"));
            }
        }
        if !(self.odds.is_finite() && self.odds > 1.0) {
            return Err(DriftError::bad_param(D, "odds", self.odds, "must be > 1"));
        }
        if !self.h.is_finite() || self.h <= 0.0 {
            return Err(DriftError::bad_param(D, "h", self.h, "must be > 0"));
        }
        if self.p0.is_none() && self.warmup < 1 {
            return Err(DriftError::bad_param(
                D,
                "warmup",
                self.warmup,
                "must be ≥ 1 when p0 is estimated",
            ));
        }
        Ok(())
    }
}

/// Log-likelihood-ratio weights `(for x = 1, for x = 0)` of the alternative `p1` against `p0`.
fn llr_weights(p0: f64, p1: f64) -> (f64, f64) {
    ((p1 / p0).ln(), ((1.0 - p1) / (1.0 - p0)).ln())
}

/// The Bernoulli log-likelihood-ratio CUSUM. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BernoulliCusum {
    config: BernoulliCusumConfig,
    n: u64,
    sum: f64,
    p0: f64,
    ready: bool,
    w_up: (f64, f64),
    w_down: (f64, f64),
    up_enabled: bool,
    down_enabled: bool,
    s_up: f64,
    s_down: f64,
    drift: bool,
}

impl BernoulliCusum {
    /// A detector with the given parameters.
    pub fn new(config: BernoulliCusumConfig) -> Result<Self, DriftError> {
        config.validate()?;
        Ok(Self::fresh(config))
    }

    fn fresh(config: BernoulliCusumConfig) -> Self {
        let mut d = BernoulliCusum {
            config,
            n: 0,
            sum: 0.0,
            p0: 0.5,
            ready: false,
            w_up: (0.0, 0.0),
            w_down: (0.0, 0.0),
            up_enabled: true,
            down_enabled: true,
            s_up: 0.0,
            s_down: 0.0,
            drift: false,
        };
        if let Some(p0) = config.p0 {
            d.set_baseline(p0);
        }
        d
    }

    fn set_baseline(&mut self, p0: f64) {
        let r = self.config.odds;
        let up = r * p0 / (1.0 - p0 + r * p0);
        let down = (p0 / r) / (1.0 - p0 + p0 / r);
        self.p0 = p0;
        self.w_up = llr_weights(p0, up);
        self.w_down = llr_weights(p0, down);
        self.ready = true;
    }

    /// The parameters.
    pub fn config(&self) -> &BernoulliCusumConfig {
        &self.config
    }

    /// The in-control rate once known.
    pub fn p0(&self) -> Option<f64> {
        self.ready.then_some(self.p0)
    }

    /// Current sums `(S_up, S_down)`.
    pub fn statistics(&self) -> (f64, f64) {
        (self.s_up, self.s_down)
    }
}

impl Default for BernoulliCusum {
    fn default() -> Self {
        Self::fresh(BernoulliCusumConfig::default())
    }
}

impl Detector for BernoulliCusum {
    fn update(&mut self, x: f64) -> Result<bool, DriftError> {
        check_finite(x)?;
        if !(0.0..=1.0).contains(&x) {
            return Err(DriftError::OutOfDomain {
                detector: "cusum-bernoulli",
                value: x,
                reason: "values must be in [0, 1]",
            });
        }
        if self.drift {
            *self = Self::fresh(self.config);
        }
        self.n += 1;
        self.sum += x;
        if !self.ready {
            if self.n >= self.config.warmup {
                let n = self.n as f64;
                let mean = self.sum / n;
                let edge = 0.5 / (n + 1.0);
                let p0 = if mean <= 0.0 {
                    self.down_enabled = false;
                    edge
                } else if mean >= 1.0 {
                    self.up_enabled = false;
                    1.0 - edge
                } else {
                    mean.clamp(edge, 1.0 - edge)
                };
                self.set_baseline(p0);
            }
            return Ok(false);
        }
        let y = 1.0 - x;
        if self.up_enabled {
            self.s_up = (self.s_up + x * self.w_up.0 + y * self.w_up.1).max(0.0);
        }
        if self.down_enabled {
            self.s_down = (self.s_down + x * self.w_down.0 + y * self.w_down.1).max(0.0);
        }
        let h = self.config.h;
        self.drift = match self.config.mode {
            Direction::Up => self.s_up > h,
            Direction::Down => self.s_down > h,
            Direction::Both => self.s_up > h || self.s_down > h,
        };
        Ok(self.drift)
    }

    fn reset(&mut self) {
        *self = Self::fresh(self.config);
    }

    fn name(&self) -> &'static str {
        "cusum-bernoulli"
    }

    fn drift_detected(&self) -> bool {
        self.drift
    }

    fn estimate(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}
