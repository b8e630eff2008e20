//! The learned monitor at runtime: a worker that reads `ReviewCompleted` events in sequence
//! order, trains the `keel-learn` model on the reviewed reply, persists model + cursor
//! (`worker_state` key `learned`), and publishes a read-only scorer to the request path, where
//! policies read it as `signals.learned.<label>` and interactions record it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use keel_learn::{Model, Scorer};
use keel_service::learn::{load, status_json, train, STATE_KEY};
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::error::GatewayError;
use keel_service::ServiceError;

/// Shared between the worker (which trains) and the request path (which scores).
pub struct LearnedMonitor {
    scorer: RwLock<Arc<Scorer>>,
    /// [`status_json`] of the model last published (`null` before the first).
    status: RwLock<Value>,
    trainer: tokio::sync::Mutex<Option<Model>>,
}

impl Default for LearnedMonitor {
    fn default() -> Self {
        LearnedMonitor {
            scorer: RwLock::new(Arc::new(Scorer::empty())),
            status: RwLock::new(Value::Null),
            trainer: tokio::sync::Mutex::new(None),
        }
    }
}

impl LearnedMonitor {
    /// The current scorer snapshot.
    pub fn scorer(&self) -> Arc<Scorer> {
        match self.scorer.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn publish(&self, model: &Model) {
        let s = Arc::new(model.scorer());
        if let Ok(mut g) = self.scorer.write() {
            *g = s;
        }
        let st = status_json(model);
        if let Ok(mut g) = self.status.write() {
            *g = st;
        }
    }

    /// The per-label status of the model in use (for the KPIs); `null` before it loaded.
    pub fn status(&self) -> Value {
        match self.status.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The available scores of `text` as a JSON object (label → score), for the interaction
    /// record; `None` when no label is available.
    pub fn scores_json(&self, text: &str) -> Option<Value> {
        let scorer = self.scorer();
        let started = std::time::Instant::now();
        let mut out = Map::new();
        for (label, score) in scorer.score(text) {
            if let Some(s) = score {
                // Rounded: the record is for metrics and people, not for bit-exact replay.
                let s = (f64::from(s) * 10_000.0).round() / 10_000.0;
                out.insert(label.to_string(), json!(s));
            }
        }
        metrics::histogram!(crate::telemetry::LEARNED_SCORE_SECONDS)
            .record(started.elapsed().as_secs_f64());
        (!out.is_empty()).then_some(Value::Object(out))
    }
}

impl keel_policy::learned::LearnedScorer for LearnedMonitor {
    fn scores(&self, text: &str) -> Vec<(String, Option<f64>)> {
        self.scorer()
            .score(text)
            .into_iter()
            .map(|(l, s)| (l.to_string(), s.map(f64::from)))
            .collect()
    }
}

/// Processes every event committed so far: trains on new reviews, persists model and cursor
/// when it learned something, publishes the scorer. Returns the cursor. The worker's timer
/// calls it; a simulator can call it at a barrier to make learning synchronous.
pub async fn learn_step(state: &AppState) -> Result<i64, GatewayError> {
    let mut guard = state.learned.trainer.lock().await;
    let model = match guard.as_mut() {
        Some(m) => m,
        None => {
            let m = match load(state.store.as_ref(), &state.config.learn).await {
                Ok(m) => m,
                Err(e) => {
                    // A state from another format or config: start over from the history
                    // (what `keel learn rebuild` does), rather than serving nothing.
                    tracing::warn!(error = %e, "learned model not restorable; retraining from the event history");
                    Model::new(state.config.learn.clone()).map_err(ServiceError::from)?
                }
            };
            state.learned.publish(&m);
            guard.insert(m)
        }
    };
    // Everything committed before this call (a barrier for drivers).
    let upto = state.store.last_seq().await?;
    let report = train(state.store.as_ref(), model, Some(upto)).await?;
    if report.learned > 0 {
        state
            .store
            .append_with_state(Vec::new(), STATE_KEY, model.to_json())
            .await?;
        state.learned.publish(model);
        metrics::counter!(crate::telemetry::LEARNED_REVIEWS).increment(report.learned);
        tracing::info!(
            learned = report.learned,
            skipped = report.skipped,
            examples = model.examples(),
            "learned monitor trained"
        );
    }
    Ok(model.cursor)
}

/// The worker: [`learn_step`] every 500 ms.
pub async fn worker(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if let Err(e) = learn_step(&state).await {
            tracing::warn!(error = %e, "learn step failed");
        }
    }
}
