//! The judge worker (`[judge]`): tails `InteractionRecorded` events from its saved cursor,
//! picks the sample (`keel_loop::judge`: deterministic in the interaction id, boosted in
//! suspicious slices), sheds what the budget does not allow (counted, never queued), asks the
//! configured upstream whether each sampled reply is still correct and acceptable today (the
//! tenant's active rules and the facts in force for the reply's scope), and appends
//! `JudgeVerdict` events with its state (`worker_state` key `judge`) in the same transaction.
//! A judge that fails, times out or answers garbage yields a recorded `unsure` with `error`.
//! Never on the request path.

use std::time::Duration;

use keel_core::clock::format_ms;
use keel_core::{EventKind, Segment, StoredEvent};
use keel_loop::judge::{
    decide, estimate_tokens, parse_response, question_text, reply_text, reported_tokens,
    request_body, verdict_event, Decision, JudgeConfig, JudgeQuestion, Outcome, RuleNote,
    SuspectSlice, WorkerState,
};
use keel_store::AlertQuery;
use serde_json::Value;

use crate::app::AppState;
use crate::error::GatewayError;
use crate::telemetry;
use crate::upstream::AttemptError;

/// The worker's `worker_state` key.
pub const STATE_KEY: &str = "judge";

/// Events read per batch.
const BATCH: u32 = 200;
/// Rules and facts quoted to the judge at most.
const MAX_NOTES: usize = 50;

/// Processes every `InteractionRecorded` event committed so far. Returns the cursor. The timer
/// loop and the simulator's barrier both call it; without `[judge]` it does nothing.
pub async fn judge_step(state: &AppState) -> Result<i64, GatewayError> {
    let Some(cfg) = state.config.judge.as_ref() else {
        return Ok(0);
    };
    let mut guard = state.judge.lock().await;
    let ws = match guard.as_mut() {
        Some(w) => w,
        None => guard.insert(load(state).await?),
    };
    loop {
        let mut events = state
            .store
            .events_of_kinds_after(&[EventKind::INTERACTION_RECORDED], ws.cursor, BATCH)
            .await?;
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(ws.cursor);
        };
        if state.sim.is_some() {
            // Everything committed in one batch, in (time, kind, id) order: the verdicts do not
            // depend on commit order.
            let mut upto = last;
            loop {
                let more = state
                    .store
                    .events_of_kinds_after(&[EventKind::INTERACTION_RECORDED], upto, BATCH)
                    .await?;
                let Some(l) = more.last().map(|e| e.seq) else {
                    break;
                };
                upto = l;
                events.extend(more);
            }
            crate::sim::order_batch(&mut events);
        }
        let cursor = events.iter().map(|e| e.seq).max().unwrap_or(last);
        let open = open_slices(state).await?;
        let mut facts: Option<Vec<keel_policy::Fact>> = None;
        for ev in &events {
            let now = state.clock.now_ms();
            match decide(cfg, &mut ws.budget, &ev.payload, &open, now) {
                Decision::Skip => {}
                Decision::Shed(reason) => {
                    *ws.shed.entry(reason.as_str().to_string()).or_default() += 1;
                    metrics::counter!(telemetry::JUDGE_SHED, "reason" => reason.as_str())
                        .increment(1);
                }
                Decision::Judge { reserve } => {
                    if facts.is_none() {
                        facts = Some(all_facts(state).await?);
                    }
                    let q = question(state, ev, facts.as_deref().unwrap_or_default());
                    let body = request_body(cfg, &q);
                    let (outcome, used) = ask(state, cfg, &body).await;
                    let used = used
                        .unwrap_or_else(|| reserve.saturating_sub(u64::from(cfg.max_tokens)) + 50);
                    ws.budget.settle(state.clock.now_ms(), reserve, used);
                    metrics::counter!(telemetry::JUDGE_TOKENS).increment(used);
                    metrics::counter!(telemetry::JUDGE_VERDICTS, "verdict" => outcome.verdict.kind.as_str())
                        .increment(1);
                    let iid = ev.payload["id"].as_str().unwrap_or_default();
                    let id = state.new_id("jv", iid.as_bytes());
                    let event = verdict_event(
                        &id,
                        &ev.payload,
                        &ev.tenant,
                        &cfg.model,
                        &outcome,
                        state.clock.now_ms(),
                    );
                    // Saved with the verdict, so a restart neither repeats nor loses it.
                    let mut saved = ws.clone();
                    saved.cursor = ev.seq.min(cursor);
                    if state.sim.is_some() {
                        // Batch order is not seq order in sim mode: only the end is a cursor.
                        saved.cursor = ws.cursor;
                    }
                    state
                        .store
                        .append_with_state(vec![event], STATE_KEY, to_json(&saved)?)
                        .await?;
                }
            }
        }
        ws.cursor = cursor;
        state
            .store
            .append_with_state(Vec::new(), STATE_KEY, to_json(ws)?)
            .await?;
    }
}

fn to_json(ws: &WorkerState) -> Result<String, GatewayError> {
    serde_json::to_string(ws).map_err(|e| GatewayError::Internal(e.to_string()))
}

/// Loads the saved state before the server takes traffic (a fresh judge starts at the end of
/// the log as it is at start-up).
pub async fn resume(state: &AppState) -> Result<(), GatewayError> {
    let ws = load(state).await?;
    *state.judge.lock().await = Some(ws);
    Ok(())
}

/// The saved state, or a fresh one starting at the end of the log (the judge audits replies
/// from when it was configured, not the history).
async fn load(state: &AppState) -> Result<WorkerState, GatewayError> {
    if let Some(json) = state.store.load_state(STATE_KEY).await? {
        match serde_json::from_str(&json) {
            Ok(ws) => return Ok(ws),
            Err(e) => {
                tracing::warn!(error = %e, "judge state unreadable; starting at the end of the log")
            }
        }
    }
    Ok(WorkerState {
        cursor: state.store.last_seq().await?,
        ..WorkerState::default()
    })
}

/// The slices of open alerts (the boost).
async fn open_slices(state: &AppState) -> Result<Vec<SuspectSlice>, GatewayError> {
    let rows = state
        .store
        .list_alerts(&AlertQuery {
            status: Some("open".into()),
            limit: 1_000,
            ..AlertQuery::default()
        })
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| SuspectSlice::of_alert(&r.alert))
        .collect())
}

async fn all_facts(state: &AppState) -> Result<Vec<keel_policy::Fact>, GatewayError> {
    Ok(keel_service::facts::load(state.store.as_ref(), None)
        .await?
        .into_iter()
        .map(|(_, f)| f)
        .collect())
}

/// What the judge is told about one interaction: today's date, the tenant's active rules, the
/// facts in force today for the interaction's scope.
fn question(state: &AppState, ev: &StoredEvent, facts: &[keel_policy::Fact]) -> JudgeQuestion {
    let r = &ev.payload;
    let ctx = &r["context"];
    let policy = state.policies.for_tenant(&ev.tenant);
    let rules = policy
        .spec()
        .rules
        .iter()
        .filter(|x| !x.description.trim().is_empty())
        .take(MAX_NOTES)
        .map(|x| RuleNote {
            id: x.id.clone(),
            category: x.category.clone(),
            description: x.description.clone(),
        })
        .collect();
    let seg = Segment {
        tenant: &ev.tenant,
        locale: ctx["locale"].as_str(),
        jurisdiction: ctx["jurisdiction"].as_str(),
        topic: ctx["topic"].as_str(),
        subtopic: None,
    };
    let now = state.clock.now();
    let facts = keel_policy::in_force_at(facts, now)
        .into_iter()
        .filter(|(f, _)| f.scope.covers(&seg))
        .take(MAX_NOTES)
        .filter_map(|(f, _)| {
            let mut v = serde_json::to_value(&f).ok()?;
            if let Some(o) = v.as_object_mut() {
                o.remove("subjects");
                o.remove("owner");
            }
            Some(v)
        })
        .collect();
    JudgeQuestion {
        today: format_ms(state.clock.now_ms()),
        interaction_id: r["id"].as_str().unwrap_or_default().to_string(),
        context: ctx.clone(),
        question: question_text(r),
        reply: reply_text(r).unwrap_or_default().to_string(),
        rules,
        facts,
    }
}

/// Asks the judge with retries and backoff; every failure ends as a recorded `unsure`. Returns
/// the outcome and the tokens the upstream reported.
async fn ask(state: &AppState, cfg: &JudgeConfig, body: &Value) -> (Outcome, Option<u64>) {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let mut error = String::new();
    let mut attempts = 0;
    let mut used: Option<u64> = None;
    for attempt in 0..=cfg.retries {
        if attempt > 0 {
            let factor = 1u64 << (attempt - 1).min(16);
            tokio::time::sleep(Duration::from_millis(cfg.backoff_ms.saturating_mul(factor))).await;
        }
        attempts += 1;
        let (result, retry) = match state
            .upstreams
            .post_json(&cfg.upstream, body, timeout)
            .await
        {
            Ok(answer) => {
                if let Some(t) = reported_tokens(&answer) {
                    used = Some(used.unwrap_or(0) + t);
                }
                match parse_response(&answer) {
                    Ok(verdict) => {
                        metrics::counter!(telemetry::JUDGE_REQUESTS, "result" => "ok").increment(1);
                        return (
                            Outcome {
                                verdict,
                                attempts,
                                error: None,
                            },
                            used,
                        );
                    }
                    Err(e) => {
                        error = format!("unreadable verdict: {e}");
                        ("unreadable", true)
                    }
                }
            }
            Err(AttemptError::Timeout) => {
                metrics::counter!(telemetry::JUDGE_TIMEOUTS).increment(1);
                error = format!("timed out after {} ms", cfg.timeout_ms);
                ("timeout", true)
            }
            Err(e @ AttemptError::Status { retry, .. }) => {
                error = format!("upstream `{}` {e}", cfg.upstream);
                ("status", retry)
            }
            Err(e @ AttemptError::Transport(_)) => {
                error = format!("upstream `{}`: {e}", cfg.upstream);
                ("transport", true)
            }
        };
        metrics::counter!(telemetry::JUDGE_REQUESTS, "result" => result).increment(1);
        metrics::counter!(telemetry::JUDGE_FAILURES, "kind" => result).increment(1);
        tracing::warn!(attempt, error = %error, "judge attempt failed");
        if !retry {
            break;
        }
    }
    let used = used.or_else(|| Some(estimate_tokens(&body.to_string())));
    (Outcome::failed(attempts, error), used)
}

/// The worker: [`judge_step`] every second (only started with `[judge]` and outside sim mode).
pub async fn worker(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_millis(1_000));
    loop {
        tick.tick().await;
        if let Err(e) = judge_step(&state).await {
            tracing::warn!(error = %e, "judge step failed");
        }
    }
}
