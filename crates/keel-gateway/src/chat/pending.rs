//! An interaction in flight, and the drop guard that records it if the client goes away.

use std::sync::Arc;
use std::time::Instant;

use keel_core::{Clock, InteractionRecord, Outcome, RequestContext};
use keel_store::{Durability, Store};

use super::ChatRequest;
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::GatewayError;
use crate::sse::ReplyAccumulator;
use crate::telemetry;

/// Status recorded for a client that disconnected (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

/// An interaction being served. Call [`Pending::finish`] once; if it is dropped unfinished the
/// interaction is recorded as `client_cancelled` with whatever reply was seen so far.
pub struct Pending {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    durability: Durability,
    actor: String,
    started: Instant,
    /// `None` once finished.
    draft: Option<Draft>,
    pub acc: ReplyAccumulator,
    pub upstream: Option<String>,
    pub attempts: u32,
    pub policy_version: Option<String>,
    /// `{id, arm}` of the rollout that chose the policy version, if a canary was live.
    pub rollout: Option<serde_json::Value>,
    pub decision: Option<serde_json::Value>,
    pub upstream_text: Option<Vec<String>>,
    /// The audit sample rate of this interaction's segment.
    sample_rate: f64,
    learned: Arc<crate::learn::LearnedMonitor>,
}

struct Draft {
    id: String,
    context: RequestContext,
    model: String,
    stream: bool,
    messages: serde_json::Value,
    started_ms: i64,
}

impl Pending {
    /// Starts an interaction with a fresh id.
    pub fn start(state: &AppState, caller: &Caller, chat: &ChatRequest) -> Self {
        let sample_rate = state.config.review.sample_rate_for(
            &chat.context.tenant,
            chat.context.locale.as_deref(),
            chat.context.jurisdiction.as_deref(),
        );
        let id = if state.sim.is_some() {
            let material =
                serde_json::json!([chat.context, chat.model, chat.stream, chat.messages]);
            state.new_id("ix", material.to_string().as_bytes())
        } else {
            keel_core::id::new_id("ix", state.clock.as_ref())
        };
        Self {
            learned: state.learned.clone(),
            sample_rate,
            store: state.store.clone(),
            clock: state.clock.clone(),
            durability: state.durability(),
            actor: caller.0.actor(),
            started: Instant::now(),
            draft: Some(Draft {
                id,
                context: chat.context.clone(),
                model: chat.model.clone(),
                stream: chat.stream,
                messages: chat.messages.clone(),
                started_ms: state.clock.now_ms(),
            }),
            acc: ReplyAccumulator::default(),
            upstream: None,
            attempts: 0,
            policy_version: None,
            rollout: None,
            decision: None,
            upstream_text: None,
        }
    }

    /// The interaction id (also the completion id the client sees).
    pub fn id(&self) -> &str {
        self.draft
            .as_ref()
            .map(|d| d.id.as_str())
            .unwrap_or_default()
    }

    fn build(
        &mut self,
        outcome: Outcome,
        status: u16,
        error: Option<String>,
    ) -> Option<InteractionRecord> {
        let d = self.draft.take()?;
        let finished_ms = self.clock.now_ms();
        let acc = std::mem::take(&mut self.acc);
        let mut decision = self.decision.take();
        // The learned scores of what the upstream said (first choice), for the monitors; only
        // for a complete reply that has text.
        let answered = outcome == Outcome::Ok && self.upstream.is_some();
        let text = self
            .upstream_text
            .as_ref()
            .and_then(|t| t.first())
            .or_else(|| acc.texts.first())
            .filter(|t| answered && !t.trim().is_empty());
        if let (Some(serde_json::Value::Object(d)), Some(t)) = (&mut decision, text) {
            if let Some(scores) = self.learned.scores_json(t) {
                d.insert("learned".to_string(), scores);
            }
        }
        // The answer's fingerprint and cluster (pure functions of the text): the monitors'
        // per-cluster slices.
        let (answer_fingerprint, answer_cluster) = text
            .and_then(|t| keel_learn::answer_ids(t))
            .map_or((None, None), |(f, c)| (Some(f), Some(c)));
        Some(InteractionRecord {
            id: d.id,
            context: d.context,
            model: d.model,
            upstream: self.upstream.take(),
            stream: d.stream,
            request_messages: d.messages,
            tool_calls: acc.tool_calls_json(),
            response_text: acc.texts,
            finish_reason: acc.finish_reason,
            started_ms: d.started_ms,
            finished_ms,
            latency_ms: finished_ms - d.started_ms,
            usage: acc.usage,
            outcome,
            status,
            error,
            attempts: self.attempts,
            policy_version: self.policy_version.clone(),
            rollout: self.rollout.take(),
            decision,
            upstream_text: self.upstream_text.take(),
            answer_fingerprint,
            answer_cluster,
        })
    }

    /// Records the interaction. In `durable` mode this returns once it is committed; an error
    /// here means the reply must not be released as a success.
    pub async fn finish(
        mut self,
        outcome: Outcome,
        status: u16,
        error: Option<String>,
    ) -> Result<(), GatewayError> {
        let Some(record) = self.build(outcome, status, error) else {
            return Ok(());
        };
        let mut events = vec![record.to_event(&self.actor)];
        // The audit sample: decided from the id, appended with the interaction (same
        // transaction), so its review item exists when the reply is released.
        if outcome == Outcome::Ok && keel_loop::review::sampled(&record.id, self.sample_rate) {
            events.push(keel_core::NewEvent {
                kind: keel_loop::review::kinds::SAMPLED.to_string(),
                actor: "sampler".to_string(),
                tenant: record.context.tenant.clone(),
                at_ms: record.finished_ms,
                payload: serde_json::json!({"interaction_id": record.id, "rate": self.sample_rate}),
            });
        }
        let label = outcome_label(outcome);
        match self.durability {
            Durability::Durable => {
                let t = Instant::now();
                self.store.append(events).await?;
                telemetry::interaction_recorded(label, Some(t.elapsed()));
            }
            Durability::Async => {
                self.store.submit(events)?;
                telemetry::interaction_recorded(label, None);
            }
        }
        tracing::debug!(
            latency_us = self.started.elapsed().as_micros() as u64,
            outcome = label,
            "interaction recorded"
        );
        Ok(())
    }
}

fn outcome_label(o: Outcome) -> &'static str {
    match o {
        Outcome::Ok => "ok",
        Outcome::UpstreamError => "upstream_error",
        Outcome::UpstreamTimeout => "upstream_timeout",
        Outcome::ClientCancelled => "client_cancelled",
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let error = Some("the client disconnected before the reply was complete".to_string());
        if let Some(record) = self.build(Outcome::ClientCancelled, CLIENT_CLOSED, error) {
            // Drop cannot await: queue the event; the writer commits it shortly.
            match self.store.submit(vec![record.to_event(&self.actor)]) {
                Ok(()) => telemetry::interaction_recorded("client_cancelled", None),
                Err(e) => {
                    tracing::error!(error = %e, interaction = %record.id, "could not record a cancelled interaction")
                }
            }
        }
    }
}
