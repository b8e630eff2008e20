//! Background work of a running server: periodic checkpoints and payload retention, the
//! monitor, and the rollout worker (the judge worker is `crate::judge`, driven here in sim mode).

use std::time::Duration;

use keel_audit::{erase_events, issue_checkpoint, CheckpointPolicy, EraseTarget};
use keel_loop::watch::Monitor;

use crate::error::GatewayError;

use crate::app::AppState;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The monitor worker: tails the event log from its saved cursor, feeds the detectors, and
/// appends alerts together with its new state (one transaction: no double alerts on restart).
pub async fn monitor(state: AppState) {
    let Some(mut monitor) = load_monitor(&state).await else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        if let Err(e) = monitor_step(&state, &mut monitor).await {
            tracing::warn!(error = %e, "monitor step failed");
        }
    }
}

/// The monitor as saved, or a fresh one; `None` when the config is invalid or the state
/// cannot be read (logged).
pub async fn load_monitor(state: &AppState) -> Option<Monitor> {
    let config = state.config.monitors.clone();
    let restored = match state.store.load_state(MONITOR_KEY).await {
        Ok(Some(json)) => Monitor::from_json(&json, config.clone()),
        Ok(None) => Monitor::new(config.clone()),
        Err(e) => {
            tracing::error!(error = %e, "monitor state unreadable; monitor not started");
            return None;
        }
    };
    match restored {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "monitor state not restorable; starting fresh");
            match Monitor::new(config) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::error!(error = %e, "monitor config invalid");
                    None
                }
            }
        }
    }
}

/// Sim mode's barrier: refreshes the caches, then runs every event-driven worker until it has
/// processed everything committed (at least up to `seq`), and returns the log's last sequence.
pub async fn drive(state: &AppState, seq: Option<i64>) -> Result<i64, GatewayError> {
    let Some(sim) = state.sim.clone() else {
        return Err(GatewayError::NotFound("Sim mode is off.".into()));
    };
    let _one_at_a_time = sim.barrier.lock().await;
    // Flush: in `async` durability, replies go out before their events commit. The writer
    // handles jobs in order, so once this write is acknowledged every earlier one is committed.
    state
        .store
        .append_with_state(Vec::new(), "sim_barrier", state.clock.now_ms().to_string())
        .await?;
    let last = state.store.last_seq().await?;
    if let Some(n) = seq {
        if n > last {
            return Err(GatewayError::bad_param(
                "seq",
                format!("event {n} is not committed (the log ends at {last})"),
            ));
        }
    }
    state.keys.refresh(state.store.as_ref()).await?;
    state.policies.refresh(state.store.as_ref()).await?;
    state.policies.refresh_facts(state.store.as_ref()).await?;
    // Workers append events of their own (alerts, rollout changes) that other workers read:
    // repeat until a round appends nothing.
    for _ in 0..8 {
        let before = state.store.last_seq().await?;
        if let Some(m) = sim.monitor.lock().await.as_mut() {
            monitor_step(state, m).await?;
        }
        crate::learn::learn_step(state).await?;
        rollouts_step(state).await?;
        if state.config.judge.is_some() {
            crate::judge::judge_step(state).await?;
        }
        if state.store.last_seq().await? == before {
            break;
        }
    }
    let policy = CheckpointPolicy {
        every_events: state.config.ledger.checkpoint_every_events.max(1),
        every_ms: state.config.ledger.checkpoint_every_ms.max(1),
    };
    checkpoint_if_due(state, &policy, state.clock.now_ms())
        .await
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    Ok(state.store.last_seq().await?)
}

const MONITOR_KEY: &str = "monitor";

/// One step of the rollout worker: processes every event committed so far (guard counts per
/// canary arm; automatic promote or rollback) and returns its cursor. The timer loop and the
/// simulator's barrier both call this.
pub async fn rollouts_step(state: &AppState) -> Result<i64, GatewayError> {
    let t = keel_service::rollouts::rollouts_catch_up(
        state.store.as_ref(),
        state.clock.as_ref(),
        &state.config.update,
        &state.config.rollouts,
    )
    .await?;
    // An automatic step takes effect on this replica at once (others within a refresh tick);
    // a fact canary's promotion sets its fact.
    state.policies.refresh_facts(state.store.as_ref()).await?;
    state.policies.refresh(state.store.as_ref()).await?;
    Ok(t.cursor)
}

/// The rollout worker's timer loop.
pub async fn rollouts(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_millis(
        state.config.update.interval_ms.max(10),
    ));
    loop {
        tick.tick().await;
        if let Err(e) = rollouts_step(&state).await {
            tracing::warn!(error = %e, "rollout worker step failed");
        }
    }
}

async fn monitor_step(state: &AppState, monitor: &mut Monitor) -> Result<(), GatewayError> {
    loop {
        let mut events = state.store.events_after(monitor.cursor, 2_000).await?;
        if events.is_empty() {
            return Ok(());
        }
        if state.sim.is_some() {
            // One batch holding everything committed, so batch boundaries cannot depend on
            // commit order either.
            while let Some(last) = events.last().map(|e| e.seq) {
                let more = state.store.events_after(last, 2_000).await?;
                if more.is_empty() {
                    break;
                }
                events.extend(more);
            }
            crate::sim::order_batch(&mut events);
        }
        let before = monitor.cursor;
        let mut drafts = Vec::new();
        for (seq, result) in monitor.process_batch(&events) {
            match result {
                Ok(d) => drafts.extend(d),
                Err(e) => tracing::warn!(error = %e, seq, "monitor skipped an event"),
            }
        }
        let alerts: Vec<_> = drafts
            .iter()
            .map(|d| {
                let material =
                    format!("{}|{}|{}|{}", d.metric, d.segment.key(), d.at_ms, d.samples);
                d.to_event(&state.new_id("al", material.as_bytes()))
            })
            .collect();
        let json = monitor
            .to_json()
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let stored = state
            .store
            .append_with_state(alerts, MONITOR_KEY, json)
            .await?;
        for a in &stored {
            tracing::warn!(alert = %a.payload["id"], metric = %a.payload["metric"], segment = %a.payload["segment_key"], "drift alert raised");
            if let Some(url) = &state.config.alerts.webhook_url {
                tokio::spawn(webhook(url.clone(), a.payload.clone()));
            }
        }
        if let Ok(n) = state.store.count_alerts().await {
            metrics::gauge!(crate::telemetry::ALERTS_OPEN).set(n as f64);
        }
        // Our own alert events are past the cursor too; they yield no observations.
        if monitor.cursor == before {
            return Ok(());
        }
    }
}

/// Delivers one alert, retrying with backoff; failures are logged, never block the monitor.
async fn webhook(url: String, alert: serde_json::Value) {
    let client = reqwest::Client::new();
    for attempt in 0..5u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * (1 << attempt))).await;
        }
        match client
            .post(&url)
            .timeout(Duration::from_secs(5))
            .json(&alert)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => tracing::warn!(
                status = r.status().as_u16(),
                attempt,
                "alert webhook refused"
            ),
            Err(e) => tracing::warn!(error = %e, attempt, "alert webhook failed"),
        }
    }
    tracing::error!(alert = %alert["id"], "alert webhook gave up after 5 attempts");
}

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
        // Keys and activations changed by the CLI or another replica take effect within a tick.
        if let Err(e) = state.keys.refresh(state.store.as_ref()).await {
            tracing::warn!(error = %e, "key cache refresh failed");
        }
        if let Err(e) = state.policies.refresh(state.store.as_ref()).await {
            tracing::warn!(error = %e, "policy refresh failed");
        }
        if let Err(e) = state.policies.refresh_facts(state.store.as_ref()).await {
            tracing::warn!(error = %e, "facts refresh failed");
        }
        if state.sim.is_some() {
            // Sim mode: checkpoints are issued by the barrier; retention does not run.
            continue;
        }
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
