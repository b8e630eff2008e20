//! Detector specs (`adwin:delta=0.002`, `page-hinkley`, `cusum:k=0.5,h=5`, …): parsing, printing and building detectors.
//!
//! Grammar: `NAME[:KEY=VALUE[,KEY=VALUE]…]`. Omitted keys take the detector's
//! defaults (River 0.26.1's where River has the detector). Unknown names or keys,
//! unparsable or out-of-range values and repeated keys are errors that name the
//! offender.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::adwin::{Adwin, AdwinConfig};
use crate::categorical::{CategoricalConfig, CategoricalShift};
use crate::cusum::{BernoulliCusum, BernoulliCusumConfig, Cusum, CusumConfig};
use crate::error::DriftError;
use crate::kswin::{Kswin, KswinConfig};
use crate::page_hinkley::{PageHinkley, PageHinkleyConfig};
use crate::{AnyDetector, Detector, Direction};

const KNOWN: &str = "adwin, page-hinkley (ph), cusum, cusum-bernoulli, kswin, categorical";

/// A parsed detector spec: which detector, with which parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "detector", rename_all = "kebab-case")]
pub enum DetectorSpec {
    /// `adwin`: keys `delta, clock, max_buckets, min_window_length, grace_period`.
    Adwin(AdwinConfig),
    /// `page-hinkley` (or `ph`): keys `min_instances, delta, threshold, alpha, mode`.
    PageHinkley(PageHinkleyConfig),
    /// `cusum`: keys `k, h, warmup, mean, sigma, mode`.
    Cusum(CusumConfig),
    /// `cusum-bernoulli`: keys `p0, odds, h, warmup, mode`.
    CusumBernoulli(BernoulliCusumConfig),
    /// `kswin`: keys `alpha, window_size, stat_size, seed`.
    Kswin(KswinConfig),
    /// `categorical`: keys `categories, reference, window, alpha, min_psi, clock`.
    Categorical(CategoricalConfig),
}

fn num<T: FromStr>(detector: &'static str, key: &str, value: &str) -> Result<T, DriftError>
where
    T::Err: fmt::Display,
{
    value.parse::<T>().map_err(|e| {
        DriftError::bad_param(detector, key, value, format!("not a valid number ({e})"))
    })
}

fn finite(detector: &'static str, key: &str, value: &str) -> Result<f64, DriftError> {
    let x: f64 = num(detector, key, value)?;
    if x.is_finite() {
        Ok(x)
    } else {
        Err(DriftError::bad_param(
            detector,
            key,
            value,
            "must be finite",
        ))
    }
}

fn mode(detector: &'static str, key: &str, value: &str) -> Result<Direction, DriftError> {
    value
        .parse::<Direction>()
        .map_err(|e| DriftError::bad_param(detector, key, value, e))
}

fn unknown(detector: &'static str, key: &str, known: &'static str) -> DriftError {
    DriftError::UnknownParam {
        detector,
        param: key.to_string(),
        known,
    }
}

impl DetectorSpec {
    /// Parse a spec string; the parameters are validated too.
    pub fn parse(spec: &str) -> Result<Self, DriftError> {
        let spec = spec.trim();
        let (name, params) = match spec.split_once(':') {
            Some((n, p)) => (n.trim(), p.trim()),
            None => (spec, ""),
        };
        if name.is_empty() {
            return Err(DriftError::BadSpec {
                spec: spec.to_string(),
                reason: format!("no detector name (known: {KNOWN})"),
            });
        }
        let mut parsed = match name.to_ascii_lowercase().as_str() {
            "adwin" => DetectorSpec::Adwin(AdwinConfig::default()),
            "page-hinkley" | "page_hinkley" | "pagehinkley" | "ph" => {
                DetectorSpec::PageHinkley(PageHinkleyConfig::default())
            }
            "cusum" => DetectorSpec::Cusum(CusumConfig::default()),
            "cusum-bernoulli" | "cusum_bernoulli" => {
                DetectorSpec::CusumBernoulli(BernoulliCusumConfig::default())
            }
            "kswin" => DetectorSpec::Kswin(KswinConfig::default()),
            "categorical" => DetectorSpec::Categorical(CategoricalConfig::default()),
            _ => {
                return Err(DriftError::UnknownDetector {
                    name: name.to_string(),
                    known: KNOWN,
                })
            }
        };
        let mut seen = HashSet::new();
        for pair in params.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(DriftError::BadSpec {
                    spec: spec.to_string(),
                    reason: format!("`{pair}` is not KEY=VALUE"),
                });
            };
            let (key, value) = (key.trim(), value.trim());
            if !seen.insert(key.to_string()) {
                return Err(DriftError::BadSpec {
                    spec: spec.to_string(),
                    reason: format!("parameter `{key}` given twice"),
                });
            }
            parsed.set(key, value)?;
        }
        parsed.validate()?;
        Ok(parsed)
    }

    /// Canonical detector name.
    pub fn name(&self) -> &'static str {
        match self {
            DetectorSpec::Adwin(_) => "adwin",
            DetectorSpec::PageHinkley(_) => "page-hinkley",
            DetectorSpec::Cusum(_) => "cusum",
            DetectorSpec::CusumBernoulli(_) => "cusum-bernoulli",
            DetectorSpec::Kswin(_) => "kswin",
            DetectorSpec::Categorical(_) => "categorical",
        }
    }

    /// Set one parameter from its textual value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), DriftError> {
        match self {
            DetectorSpec::Adwin(c) => {
                const D: &str = "adwin";
                const K: &str = "delta, clock, max_buckets, min_window_length, grace_period";
                match key {
                    "delta" => c.delta = finite(D, key, value)?,
                    "clock" => c.clock = num(D, key, value)?,
                    "max_buckets" => c.max_buckets = num(D, key, value)?,
                    "min_window_length" => c.min_window_length = num(D, key, value)?,
                    "grace_period" => c.grace_period = num(D, key, value)?,
                    _ => return Err(unknown(D, key, K)),
                }
            }
            DetectorSpec::PageHinkley(c) => {
                const D: &str = "page-hinkley";
                const K: &str = "min_instances, delta, threshold, alpha, mode";
                match key {
                    "min_instances" => c.min_instances = num(D, key, value)?,
                    "delta" => c.delta = finite(D, key, value)?,
                    "threshold" => c.threshold = finite(D, key, value)?,
                    "alpha" => c.alpha = finite(D, key, value)?,
                    "mode" => c.mode = mode(D, key, value)?,
                    _ => return Err(unknown(D, key, K)),
                }
            }
            DetectorSpec::Cusum(c) => {
                const D: &str = "cusum";
                const K: &str = "k, h, warmup, mean, sigma, mode";
                match key {
                    "k" => c.k = finite(D, key, value)?,
                    "h" => c.h = finite(D, key, value)?,
                    "warmup" => c.warmup = num(D, key, value)?,
                    "mean" => c.mean = Some(finite(D, key, value)?),
                    "sigma" => c.sigma = Some(finite(D, key, value)?),
                    "mode" => c.mode = mode(D, key, value)?,
                    _ => return Err(unknown(D, key, K)),
                }
            }
            DetectorSpec::CusumBernoulli(c) => {
                const D: &str = "cusum-bernoulli";
                const K: &str = "p0, odds, h, warmup, mode";
                match key {
                    "p0" => c.p0 = Some(finite(D, key, value)?),
                    "odds" => c.odds = finite(D, key, value)?,
                    "h" => c.h = finite(D, key, value)?,
                    "warmup" => c.warmup = num(D, key, value)?,
                    "mode" => c.mode = mode(D, key, value)?,
                    _ => return Err(unknown(D, key, K)),
                }
            }
            DetectorSpec::Kswin(c) => {
                const D: &str = "kswin";
                const K: &str = "alpha, window_size, stat_size, seed";
                match key {
                    "alpha" => c.alpha = finite(D, key, value)?,
                    "window_size" => c.window_size = num(D, key, value)?,
                    "stat_size" => c.stat_size = num(D, key, value)?,
                    "seed" => c.seed = num(D, key, value)?,
                    _ => return Err(unknown(D, key, K)),
                }
            }
            DetectorSpec::Categorical(c) => {
                const D: &str = "categorical";
                const K: &str = "categories, reference, window, alpha, min_psi, clock";
                match key {
                    "categories" => c.categories = num(D, key, value)?,
                    "reference" => c.reference = num(D, key, value)?,
                    "window" => c.window = num(D, key, value)?,
                    "alpha" => c.alpha = finite(D, key, value)?,
                    "min_psi" => c.min_psi = finite(D, key, value)?,
                    "clock" => c.clock = num(D, key, value)?,
                    _ => return Err(unknown(D, key, K)),
                }
            }
        }
        Ok(())
    }

    /// Check every parameter's range.
    pub fn validate(&self) -> Result<(), DriftError> {
        match self {
            DetectorSpec::Adwin(c) => c.validate(),
            DetectorSpec::PageHinkley(c) => c.validate(),
            DetectorSpec::Cusum(c) => c.validate(),
            DetectorSpec::CusumBernoulli(c) => c.validate(),
            DetectorSpec::Kswin(c) => c.validate(),
            DetectorSpec::Categorical(c) => c.validate(),
        }
    }

    /// A fresh detector in a serialisable enum (what monitors persist).
    pub fn build(&self) -> Result<AnyDetector, DriftError> {
        Ok(match self {
            DetectorSpec::Adwin(c) => AnyDetector::Adwin(Adwin::new(*c)?),
            DetectorSpec::PageHinkley(c) => AnyDetector::PageHinkley(PageHinkley::new(*c)?),
            DetectorSpec::Cusum(c) => AnyDetector::Cusum(Cusum::new(*c)?),
            DetectorSpec::CusumBernoulli(c) => {
                AnyDetector::CusumBernoulli(BernoulliCusum::new(*c)?)
            }
            DetectorSpec::Kswin(c) => AnyDetector::Kswin(Kswin::new(*c)?),
            DetectorSpec::Categorical(c) => AnyDetector::Categorical(CategoricalShift::new(*c)?),
        })
    }

    /// A fresh detector behind the [`Detector`] trait.
    pub fn build_boxed(&self) -> Result<Box<dyn Detector>, DriftError> {
        Ok(Box::new(self.build()?))
    }
}

impl FromStr for DetectorSpec {
    type Err = DriftError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DetectorSpec::parse(s)
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "estimated".to_string(), |v| v.to_string())
}

impl fmt::Display for DetectorSpec {
    /// The canonical spec with every parameter spelt out (parses back to the same spec,
    /// except that `estimated` values of optional keys are written only when set).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DetectorSpec::Adwin(c) => write!(
                f,
                "adwin:delta={},clock={},max_buckets={},min_window_length={},grace_period={}",
                c.delta, c.clock, c.max_buckets, c.min_window_length, c.grace_period
            ),
            DetectorSpec::PageHinkley(c) => write!(
                f,
                "page-hinkley:min_instances={},delta={},threshold={},alpha={},mode={}",
                c.min_instances, c.delta, c.threshold, c.alpha, c.mode
            ),
            DetectorSpec::Cusum(c) => {
                write!(
                    f,
                    "cusum:k={},h={},warmup={},mode={}",
                    c.k, c.h, c.warmup, c.mode
                )?;
                if c.mean.is_some() {
                    write!(f, ",mean={}", opt(c.mean))?;
                }
                if c.sigma.is_some() {
                    write!(f, ",sigma={}", opt(c.sigma))?;
                }
                Ok(())
            }
            DetectorSpec::CusumBernoulli(c) => {
                write!(
                    f,
                    "cusum-bernoulli:odds={},h={},warmup={},mode={}",
                    c.odds, c.h, c.warmup, c.mode
                )?;
                if c.p0.is_some() {
                    write!(f, ",p0={}", opt(c.p0))?;
                }
                Ok(())
            }
            DetectorSpec::Kswin(c) => write!(
                f,
                "kswin:alpha={},window_size={},stat_size={},seed={}",
                c.alpha, c.window_size, c.stat_size, c.seed
            ),
            DetectorSpec::Categorical(c) => write!(
                f,
                "categorical:categories={},reference={},window={},alpha={},min_psi={},clock={}",
                c.categories, c.reference, c.window, c.alpha, c.min_psi, c.clock
            ),
        }
    }
}
