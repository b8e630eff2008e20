//! The loop crate's error type, with HTTP statuses.

/// Errors from the loop stages.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("monitor config: {0}")]
    Config(String),
    #[error(transparent)]
    Drift(#[from] keel_drift::DriftError),
    #[error("monitor state: {0}")]
    State(String),
    /// Input that fails validation (a fact of the wrong type, an overlapping validity).
    #[error("{0}")]
    Invalid(String),
}
