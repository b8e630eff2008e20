//! The store's error type, with the HTTP status each error maps to.

/// Errors from the event store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration {id} failed: {source}")]
    Migration {
        id: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("unsupported storage url `{0}`: expected sqlite://PATH")]
    UnsupportedUrl(String),
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the store is shut down")]
    Closed,
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Ledger(#[from] keel_ledger::LedgerError),
}

impl StoreError {
    /// The HTTP status this error should be reported with.
    pub fn http_status(&self) -> u16 {
        match self {
            StoreError::Closed => 503,
            StoreError::Ledger(e) => e.http_status(),
            _ => 500,
        }
    }
}
