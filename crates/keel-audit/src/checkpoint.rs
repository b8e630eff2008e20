//! Issuing signed checkpoints, and the policy for when to issue them.

use keel_core::Clock;
use keel_store::{Store, StoredCheckpoint};

use crate::{AuditError, LedgerSigner};

/// When to issue a checkpoint: every `every_events` new leaves, or every `every_ms` when the
/// tree grew (defaults 256 events, 5 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    pub every_events: u64,
    pub every_ms: i64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every_events: 256,
            every_ms: 5_000,
        }
    }
}

impl CheckpointPolicy {
    /// Whether a checkpoint is due, given the last one (size, time) and the tree's size now.
    pub fn due(&self, last: Option<(u64, i64)>, size: u64, now_ms: i64) -> bool {
        match last {
            None => true,
            Some((last_size, _)) if size <= last_size => false,
            Some((last_size, last_ms)) => {
                size - last_size >= self.every_events || now_ms - last_ms >= self.every_ms
            }
        }
    }
}

/// Signs and stores a checkpoint over everything committed now (or returns the latest one if
/// the tree has not grown since).
pub async fn issue_checkpoint(
    store: &dyn Store,
    signer: &LedgerSigner,
    clock: &dyn Clock,
) -> Result<StoredCheckpoint, AuditError> {
    let size = store.ledger_size().await?;
    if let Some(latest) = store.latest_checkpoint().await? {
        if latest.size == size {
            return Ok(latest);
        }
    }
    let root = store.ledger_root(size).await?;
    let note = signer.sign(size, root)?;
    let cp = StoredCheckpoint {
        size,
        root,
        note,
        issued_ms: clock.now_ms(),
    };
    store.save_checkpoint(&cp).await?;
    tracing::debug!(size, "checkpoint issued");
    Ok(cp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_table() {
        let p = CheckpointPolicy::default();
        for (last, size, now, want) in [
            (None, 0, 0, true),
            (Some((10, 0)), 10, 100_000, false),
            (Some((10, 0)), 11, 1_000, false),
            (Some((10, 0)), 11, 5_000, true),
            (Some((10, 0)), 266, 1, true),
            (Some((10, 0)), 265, 1, false),
        ] {
            assert_eq!(p.due(last, size, now), want, "{last:?} {size} {now}");
        }
    }
}
