//! The audit crate's error type, with HTTP statuses.

use keel_ledger::LedgerError;
use keel_store::StoreError;

/// Errors from ledger operations.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("signing key {path}: {message}")]
    Key { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
}

impl AuditError {
    /// The HTTP status this error should be reported with.
    pub fn http_status(&self) -> u16 {
        match self {
            AuditError::Store(e) => e.http_status(),
            AuditError::Ledger(e) => e.http_status(),
            AuditError::Key { .. } => 500,
            AuditError::Invalid(_) => 400,
            AuditError::NotFound(_) => 404,
        }
    }
}
