//! Background work of a running server: periodic checkpoints and payload retention.

use std::time::Duration;

use keel_audit::{erase_events, issue_checkpoint, CheckpointPolicy, EraseTarget};

use crate::app::AppState;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Runs until aborted: checks every 250 ms (by the injected clock) whether a checkpoint is due,
/// and once a minute whether payloads passed their retention.
pub async fn run(state: AppState) {
    let policy = CheckpointPolicy {
        every_events: state.config.ledger.checkpoint_every_events.max(1),
        every_ms: state.config.ledger.checkpoint_every_ms.max(1),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_retention = i64::MIN / 2;
    loop {
        tick.tick().await;
        let now = state.clock.now_ms();
        if let Err(e) = checkpoint_if_due(&state, &policy, now).await {
            tracing::warn!(error = %e, "periodic checkpoint failed");
        }
        if let Some(days) = state.config.retention.payload_days {
            if now - last_retention >= 60_000 {
                last_retention = now;
                let cutoff = now - i64::from(days) * DAY_MS;
                match erase_events(
                    state.store.as_ref(),
                    &EraseTarget::Before(cutoff),
                    &format!("retention: payloads older than {days} days"),
                    "system:retention",
                    state.clock.as_ref(),
                )
                .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(erased = n, "retention erased old payloads"),
                    Err(e) => tracing::warn!(error = %e, "retention failed"),
                }
            }
        }
    }
}

async fn checkpoint_if_due(
    state: &AppState,
    policy: &CheckpointPolicy,
    now: i64,
) -> Result<(), keel_audit::AuditError> {
    let size = state.store.ledger_size().await?;
    let last = state
        .store
        .latest_checkpoint()
        .await?
        .map(|c| (c.size, c.issued_ms));
    if policy.due(last, size, now) {
        issue_checkpoint(state.store.as_ref(), &state.signer, state.clock.as_ref()).await?;
    }
    Ok(())
}
