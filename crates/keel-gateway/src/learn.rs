//! The learned monitor at runtime: a worker that reads `ReviewCompleted` events in sequence
//! order, trains the `keel-learn` model on the reviewed reply, persists model + cursor
//! (`worker_state` key `learned`), and publishes a read-only scorer to the request path, where
//! policies read it as `signals.learned.<label>` and interactions record it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use keel_core::StoredEvent;
use keel_learn::{Config, Example, LearnError, Model, Scorer};
use keel_store::Store;
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::error::GatewayError;

/// `worker_state` key of the persisted model.
pub const STATE_KEY: &str = "learned";

/// The event kind the model learns from.
const REVIEW_COMPLETED: &str = "ReviewCompleted";

/// Shared between the worker (which trains) and the request path (which scores).
pub struct Learned {
    scorer: RwLock<Arc<Scorer>>,
    /// [`status_json`] of the model last published (`null` before the first).
    status: RwLock<Value>,
    trainer: tokio::sync::Mutex<Option<Model>>,
}

impl Default for Learned {
    fn default() -> Self {
        Learned {
            scorer: RwLock::new(Arc::new(Scorer::empty())),
            status: RwLock::new(Value::Null),
            trainer: tokio::sync::Mutex::new(None),
        }
    }
}

impl Learned {
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

impl keel_policy::learned::LearnedScorer for Learned {
    fn scores(&self, text: &str) -> Vec<(String, Option<f64>)> {
        self.scorer()
            .score(text)
            .into_iter()
            .map(|(l, s)| (l.to_string(), s.map(f64::from)))
            .collect()
    }
}

/// The reply text a review is about (and new replies are scored on): what the upstream said
/// (before the policy changed it), first choice; else the served text.
pub fn reply_text(record: &Value) -> Option<&str> {
    record["upstream_text"][0]
        .as_str()
        .or_else(|| record["response_text"][0].as_str())
}

/// Loads the persisted model, or a new one when there is none.
pub async fn load(store: &dyn Store, config: &Config) -> Result<Model, GatewayError> {
    let internal = |e: LearnError| GatewayError::Internal(e.to_string());
    match store.load_state(STATE_KEY).await? {
        Some(json) => Model::from_json(&json, config).map_err(internal),
        None => Model::new(config.clone()).map_err(internal),
    }
}

/// What [`train`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TrainReport {
    /// Reviews learned from.
    pub learned: u64,
    /// Reviews skipped (interaction missing or erased, no reply text, unknown verdict).
    pub skipped: u64,
}

/// Feeds `model` every `ReviewCompleted` after its cursor up to `upto` (inclusive; `None` = the
/// end of the log), then moves the cursor to `upto` (or the last review). The online worker and
/// `keel learn rebuild` both use this, so the same history gives the same model, cursor
/// included.
pub async fn train(
    store: &dyn Store,
    model: &mut Model,
    upto: Option<i64>,
) -> Result<TrainReport, GatewayError> {
    let mut report = TrainReport::default();
    'pages: loop {
        let page = store
            .events_of_kinds_after(&[REVIEW_COMPLETED], model.cursor, 1_000)
            .await?;
        if page.is_empty() {
            break;
        }
        for ev in &page {
            if upto.is_some_and(|u| ev.seq > u) {
                break 'pages;
            }
            match learn_one(store, model, ev).await? {
                true => report.learned += 1,
                false => report.skipped += 1,
            }
            model.cursor = ev.seq;
        }
    }
    if let Some(u) = upto {
        model.cursor = model.cursor.max(u);
    }
    Ok(report)
}

async fn learn_one(
    store: &dyn Store,
    model: &mut Model,
    ev: &StoredEvent,
) -> Result<bool, GatewayError> {
    let p = &ev.payload;
    let (Some(verdict), Some(id)) = (p["verdict"].as_str(), p["interaction_id"].as_str()) else {
        return Ok(false);
    };
    let Some(row) = store.interaction(id).await? else {
        return Ok(false);
    };
    let Some(text) = reply_text(&row.record) else {
        return Ok(false);
    };
    let ex = Example {
        text,
        verdict,
        category: p["category"].as_str(),
    };
    match model.learn(&ex) {
        Ok(learned) => {
            for (label, score, actual) in &learned.predictions {
                tracing::debug!(seq = ev.seq, %label, score, actual, "prequential prediction");
            }
            Ok(true)
        }
        Err(e) => {
            tracing::warn!(seq = ev.seq, error = %e, "review not learned");
            Ok(false)
        }
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
                    Model::new(state.config.learn.clone())
                        .map_err(|e| GatewayError::Config(e.to_string()))?
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

/// `keel learn status` / the KPIs: the persisted model's per-label status, examples and cursor.
pub async fn status(store: &dyn Store, config: &Config) -> Result<Value, GatewayError> {
    let model = load(store, config).await?;
    Ok(status_json(&model))
}

/// The status of `model` as JSON: `{examples, cursor, min_examples, window, labels: [...]}`.
pub fn status_json(model: &Model) -> Value {
    json!({
        "examples": model.examples(),
        "cursor": model.cursor,
        "min_examples": model.config().min_examples,
        "window": model.config().window,
        "digest": model.digest(),
        "labels": model.status(),
    })
}

/// What `keel learn rebuild` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rebuild {
    /// Digest of the persisted (online) model; `None` when there was none.
    pub online_digest: Option<String>,
    /// Digest of the model retrained from the history up to the online model's cursor.
    pub rebuilt_digest: String,
    /// Whether the two are bit-identical.
    pub identical: bool,
    /// The cursor compared at.
    pub compared_at: i64,
    /// Reviews learned from in the whole history, and the final cursor (after catching up).
    pub examples: u64,
    pub cursor: i64,
}

/// Retrains from the event history: first up to the persisted model's cursor (compares the
/// digests), then to the end of the log; persists the result. A persisted state that cannot be
/// restored (other format version or config) counts as not identical and is replaced.
pub async fn rebuild(store: &dyn Store, config: &Config) -> Result<Rebuild, GatewayError> {
    let online = match store.load_state(STATE_KEY).await? {
        Some(json) => match Model::from_json(&json, config) {
            Ok(m) => Some(Ok(m)),
            Err(e) => Some(Err(e)),
        },
        None => None,
    };
    let mut model = Model::new(config.clone()).map_err(|e| GatewayError::Config(e.to_string()))?;
    let (online_digest, compared_at) = match &online {
        Some(Ok(m)) => {
            train(store, &mut model, Some(m.cursor)).await?;
            (Some(m.digest()), m.cursor)
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, "persisted learned model not restorable");
            (None, 0)
        }
        None => (None, 0),
    };
    let rebuilt_digest = model.digest();
    let identical = online_digest.as_deref() == Some(rebuilt_digest.as_str());
    let end = store.last_seq().await?;
    train(store, &mut model, Some(end)).await?;
    store
        .append_with_state(Vec::new(), STATE_KEY, model.to_json())
        .await?;
    Ok(Rebuild {
        online_digest,
        rebuilt_digest,
        identical,
        compared_at,
        examples: model.examples(),
        cursor: model.cursor,
    })
}
