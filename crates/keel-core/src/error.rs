//! The error type of the core vocabulary, with the HTTP status each error maps to.

/// Errors raised while building or validating core values.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A value a user supplied is not acceptable.
    #[error("{0}")]
    Invalid(String),
}

impl CoreError {
    /// The HTTP status this error should be reported with.
    pub fn http_status(&self) -> u16 {
        match self {
            CoreError::Invalid(_) => 400,
        }
    }
}
