//! The crate's single error type, [`DriftError`], and its HTTP status mapping.

use thiserror::Error;

/// Everything that can go wrong in `keel-drift`.
///
/// Bad specs and bad input values are the caller's fault (HTTP 400); I/O failures
/// while replaying a stream are ours (HTTP 500).
#[derive(Debug, Error)]
pub enum DriftError {
    /// The spec names a detector that does not exist.
    #[error("unknown detector `{name}` (known: {known})")]
    UnknownDetector {
        /// The name as written in the spec.
        name: String,
        /// Comma-separated list of the known detector names.
        known: &'static str,
    },
    /// The spec gives a parameter the detector does not have.
    #[error("unknown parameter `{param}` for detector `{detector}` (known: {known})")]
    UnknownParam {
        /// Detector name.
        detector: &'static str,
        /// The parameter as written.
        param: String,
        /// Comma-separated list of the detector's parameters.
        known: &'static str,
    },
    /// A parameter value does not parse or is out of range.
    #[error("bad value `{value}` for parameter `{param}` of detector `{detector}`: {reason}")]
    BadParam {
        /// Detector name.
        detector: &'static str,
        /// Parameter name.
        param: String,
        /// The value as written (or formatted).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The spec itself is malformed (empty, `key` without `=value`, duplicate key).
    #[error("malformed detector spec `{spec}`: {reason}")]
    BadSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An input value is NaN or infinite; the detector's state is unchanged.
    #[error("input value {value} is not finite (NaN and infinities are rejected)")]
    NonFinite {
        /// The offending value.
        value: f64,
    },
    /// An input value is finite but outside the detector's domain
    /// (a Bernoulli CUSUM value outside [0, 1], a category index out of range).
    #[error("input value {value} rejected by `{detector}`: {reason}")]
    OutOfDomain {
        /// Detector name.
        detector: &'static str,
        /// The offending value.
        value: f64,
        /// The domain the detector accepts.
        reason: &'static str,
    },
    /// A replayed stream could not be decoded.
    #[error("cannot decode input at {location}: {reason}")]
    Decode {
        /// Where (`line 12`, `byte 8000`, …).
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing a replayed stream failed.
    #[error("I/O error during replay: {0}")]
    Io(#[from] std::io::Error),
    /// Persisted detector state could not be (de)serialised.
    #[error("detector state (de)serialisation failed: {0}")]
    State(#[from] serde_json::Error),
}

impl DriftError {
    /// The HTTP status this error maps to: 400 for a bad spec or a bad input value,
    /// 500 for I/O and state (de)serialisation failures.
    pub fn http_status(&self) -> u16 {
        match self {
            DriftError::UnknownDetector { .. }
            | DriftError::UnknownParam { .. }
            | DriftError::BadParam { .. }
            | DriftError::BadSpec { .. }
            | DriftError::NonFinite { .. }
            | DriftError::OutOfDomain { .. }
            | DriftError::Decode { .. } => 400,
            DriftError::Io(_) | DriftError::State(_) => 500,
        }
    }

    pub(crate) fn bad_param(
        detector: &'static str,
        param: &str,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        DriftError::BadParam {
            detector,
            param: param.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Reject NaN and infinities; every detector calls this first, before touching its state.
#[inline]
pub(crate) fn check_finite(x: f64) -> Result<(), DriftError> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(DriftError::NonFinite { value: x })
    }
}
