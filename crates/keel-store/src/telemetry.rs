//! Metric names the store emits, defined in one place.

/// Histogram: events per committed batch.
pub const STORE_BATCH_EVENTS: &str = "keel_store_batch_events";
/// Histogram: seconds per batch commit (including fsync in durable mode).
pub const STORE_COMMIT_SECONDS: &str = "keel_store_commit_seconds";
/// Counter: batches whose commit failed.
pub const STORE_COMMIT_ERRORS: &str = "keel_store_commit_errors_total";
/// Counter: async-mode appends that failed after being acknowledged.
pub const STORE_ASYNC_LOST: &str = "keel_store_async_lost_total";
