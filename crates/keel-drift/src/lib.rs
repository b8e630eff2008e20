//! Streaming change detectors for Keel's monitors: pure, synchronous, bounded memory, serialisable state.
//!
//! # Detectors
//!
//! | spec name | type | what it watches | defaults |
//! |---|---|---|---|
//! | `adwin` | [`Adwin`] | mean of a real stream, adaptive window | River 0.26.1's `drift.ADWIN` (identical detections) |
//! | `page-hinkley` (`ph`) | [`PageHinkley`] | mean shifts, with forgetting | River 0.26.1's `drift.PageHinkley` (identical detections) |
//! | `cusum` | [`Cusum`] | mean shifts in σ units (k, h) | k = 0.5, h = 5, 30-value warm-up |
//! | `cusum-bernoulli` | [`BernoulliCusum`] | rate of a 0/1 stream (odds ratio, h) | odds 2, h = 10 nats, 100-value warm-up |
//! | `kswin` | [`Kswin`] | whole distribution (two-sample KS test) | River 0.26.1's `drift.KSWIN` (seed 0) |
//! | `rate` (monitor slices) | [`rate::RateCusum`] | rise of a low rate to k·p₀ (Poisson CUSUM, baseline with a prior, BH across slices) | k = 3, h = 7 nats, prior weight 200 |
//! | `categorical` | [`CategoricalShift`] | category mix (χ² + PSI, JS reported) | 2 categories, windows of 1000 |
//!
//! Every detector implements [`Detector`]: [`Detector::update`] takes one value and
//! returns `Ok(true)` when that value raised a detection. NaN and ±∞ are rejected with
//! [`DriftError::NonFinite`] and leave the state untouched. As in River, a detector
//! keeps running after a detection: it starts afresh on the next update (so detections
//! on a long stream match River's index for index). State is bounded (ADWIN's histogram
//! grows with log₂ of its window; the others are fixed at construction) and updates
//! allocate nothing.
//!
//! # Building from a spec
//!
//! ```
//! use keel_drift::{Detector, DetectorSpec};
//!
//! let spec = DetectorSpec::parse("page-hinkley:threshold=50,alpha=0.9999")?;
//! let mut detector = spec.build()?;           // AnyDetector: serialisable enum
//! let mut alarms = Vec::new();
//! for (i, x) in (0..2000).map(|i| if i < 1000 { 0.0 } else { 5.0 }).enumerate() {
//!     if detector.update(x)? {
//!         alarms.push(i);
//!     }
//! }
//! assert!(alarms.first().is_some_and(|&i| i >= 1000));
//! # Ok::<(), keel_drift::DriftError>(())
//! ```
//!
//! Spec grammar: `NAME[:KEY=VALUE,…]`, e.g. `adwin:delta=0.002`, `page-hinkley`,
//! `cusum:k=0.5,h=5`, `cusum-bernoulli:p0=0.02`, `kswin:alpha=0.005`,
//! `categorical:categories=4,window=500`. Unknown names or keys and bad values give a
//! [`DriftError`] naming them (HTTP 400 via [`DriftError::http_status`]).
//! [`DetectorSpec`]'s `Display` prints the canonical, fully spelt-out spec.
//!
//! # Persisting and resuming
//!
//! [`AnyDetector`] (and every detector struct) derives `Serialize`/`Deserialize`;
//! [`AnyDetector::to_json`] / [`AnyDetector::from_json`] are shortcuts. A restored
//! detector continues exactly where the saved one stopped.
//!
//! # Replay
//!
//! [`replay()`]`(spec, Format::F64Le | Format::Csv, reader, writer)` feeds a recorded
//! stream through a detector and writes each detection index (0-based position of the
//! value that raised it) on its own line; it returns a [`ReplaySummary`] (count, first
//! detection, elapsed, updates/s). `examples/replay.rs` wraps it with the CLI arguments of
//! `keel drift replay --detector SPEC [--format f64|csv] FILE`.
//!
//! # Distribution-shift measures
//!
//! [`psi`], [`js_divergence`], [`chi_square_homogeneity`] and [`shift_stats`] compare
//! two category-count vectors directly (for monitors that keep their own windows);
//! [`chi_square_sf`], [`gamma_p`] and [`gamma_q`] are exposed for the same reason.

pub mod adwin;
pub mod categorical;
pub mod cusum;
mod error;
mod float_serde;
pub mod kswin;
pub mod page_hinkley;
pub mod rate;
pub mod replay;
mod rng;
pub mod spec;
pub mod special;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use adwin::{Adwin, AdwinConfig};
pub use categorical::{
    chi_square_homogeneity, js_divergence, psi, shift_stats, CategoricalConfig, CategoricalShift,
    ChiSquare, ShiftStats,
};
pub use cusum::{BernoulliCusum, BernoulliCusumConfig, Cusum, CusumConfig};
pub use error::DriftError;
pub use kswin::{ks_two_sample_pvalue, Kswin, KswinConfig};
pub use page_hinkley::{PageHinkley, PageHinkleyConfig};
pub use replay::{replay, replay_with, Format, ReplaySummary};
pub use spec::DetectorSpec;
pub use special::{chi_square_sf, gamma_p, gamma_q, ln_gamma};

/// A streaming change detector.
pub trait Detector: fmt::Debug + Send + Sync {
    /// Feed one value. `Ok(true)` when this value raised a detection. NaN/±∞ (and values
    /// outside the detector's domain) are rejected with an error and change nothing.
    fn update(&mut self, x: f64) -> Result<bool, DriftError>;

    /// Forget everything seen; parameters are kept.
    fn reset(&mut self);

    /// Canonical detector name, as in specs (`adwin`, `page-hinkley`, …).
    fn name(&self) -> &'static str;

    /// Whether the latest update raised a detection.
    fn drift_detected(&self) -> bool;

    /// The detector's current estimate of the watched quantity (window mean, rate, …), if it has one.
    fn estimate(&self) -> Option<f64>;
}

/// Which direction(s) of change a one-dimensional detector reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Increases only.
    Up,
    /// Decreases only.
    Down,
    /// Both directions.
    #[default]
    Both,
}

impl FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "up" => Ok(Direction::Up),
            "down" => Ok(Direction::Down),
            "both" => Ok(Direction::Both),
            _ => Err("must be one of up, down, both".to_string()),
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Both => "both",
        })
    }
}

/// Any detector of this crate, as one serialisable type (what monitors persist).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "detector", content = "state", rename_all = "kebab-case")]
pub enum AnyDetector {
    /// [`Adwin`].
    Adwin(Adwin),
    /// [`PageHinkley`].
    PageHinkley(PageHinkley),
    /// [`Cusum`].
    Cusum(Cusum),
    /// [`BernoulliCusum`].
    CusumBernoulli(BernoulliCusum),
    /// [`Kswin`].
    Kswin(Kswin),
    /// [`CategoricalShift`].
    Categorical(CategoricalShift),
}

impl AnyDetector {
    /// Build a fresh detector from a spec string (see [`DetectorSpec::parse`]).
    pub fn from_spec(spec: &str) -> Result<Self, DriftError> {
        DetectorSpec::parse(spec)?.build()
    }

    /// The detector's full state as JSON.
    pub fn to_json(&self) -> Result<String, DriftError> {
        Ok(serde_json::to_string(self)?)
    }

    /// Restore a detector saved with [`AnyDetector::to_json`].
    pub fn from_json(json: &str) -> Result<Self, DriftError> {
        Ok(serde_json::from_str(json)?)
    }

    fn inner(&self) -> &dyn Detector {
        match self {
            AnyDetector::Adwin(d) => d,
            AnyDetector::PageHinkley(d) => d,
            AnyDetector::Cusum(d) => d,
            AnyDetector::CusumBernoulli(d) => d,
            AnyDetector::Kswin(d) => d,
            AnyDetector::Categorical(d) => d,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn Detector {
        match self {
            AnyDetector::Adwin(d) => d,
            AnyDetector::PageHinkley(d) => d,
            AnyDetector::Cusum(d) => d,
            AnyDetector::CusumBernoulli(d) => d,
            AnyDetector::Kswin(d) => d,
            AnyDetector::Categorical(d) => d,
        }
    }
}

impl Detector for AnyDetector {
    #[inline]
    fn update(&mut self, x: f64) -> Result<bool, DriftError> {
        // Match directly so the hot path is a static call, not a vtable hop.
        match self {
            AnyDetector::Adwin(d) => d.update(x),
            AnyDetector::PageHinkley(d) => d.update(x),
            AnyDetector::Cusum(d) => d.update(x),
            AnyDetector::CusumBernoulli(d) => d.update(x),
            AnyDetector::Kswin(d) => d.update(x),
            AnyDetector::Categorical(d) => d.update(x),
        }
    }

    fn reset(&mut self) {
        self.inner_mut().reset();
    }

    fn name(&self) -> &'static str {
        self.inner().name()
    }

    fn drift_detected(&self) -> bool {
        self.inner().drift_detected()
    }

    fn estimate(&self) -> Option<f64> {
        self.inner().estimate()
    }
}
