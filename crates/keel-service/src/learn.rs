//! The learned monitor's IO: the persisted model (loaded, trained on `ReviewCompleted` events
//! in sequence order — and on `JudgeVerdict`s (`ok`/`outdated`/`violation`) at the lower
//! [`JUDGE_WEIGHT`] —, its status) and `rebuild`, which retrains from the history and compares
//! digests with the online model. The gateway's worker calls [`train`]; the CLI calls
//! [`status`] and [`rebuild`].

use keel_core::StoredEvent;
use keel_learn::{Config, Example, Model};
use keel_loop::review::kinds;
use keel_store::Store;
use serde_json::{json, Value};

use crate::error::ServiceError;

/// `worker_state` key of the persisted model.
pub const STATE_KEY: &str = "learned";

/// How much a judge model's verdict counts against a reviewer's label (the gradient scale of
/// its example): a judge is a weaker, cheaper witness.
pub const JUDGE_WEIGHT: f32 = 0.3;

/// The reply text a review is about (and new replies are scored on): what the upstream said
/// (before the policy changed it), first choice; else the served text.
pub fn reply_text(record: &Value) -> Option<&str> {
    record["upstream_text"][0]
        .as_str()
        .or_else(|| record["response_text"][0].as_str())
}

/// Loads the persisted model, or a new one when there is none.
pub async fn load(store: &dyn Store, config: &Config) -> Result<Model, ServiceError> {
    Ok(match store.load_state(STATE_KEY).await? {
        Some(json) => Model::from_json(&json, config)?,
        None => Model::new(config.clone())?,
    })
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
) -> Result<TrainReport, ServiceError> {
    let mut report = TrainReport::default();
    'pages: loop {
        let page = store
            .events_of_kinds_after(
                &[kinds::COMPLETED, keel_core::EventKind::JUDGE_VERDICT],
                model.cursor,
                1_000,
            )
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
) -> Result<bool, ServiceError> {
    let p = &ev.payload;
    let (Some(verdict), Some(id)) = (p["verdict"].as_str(), p["interaction_id"].as_str()) else {
        return Ok(false);
    };
    let judged = ev.kind == keel_core::EventKind::JUDGE_VERDICT;
    if judged && !matches!(verdict, "ok" | "outdated" | "violation") {
        // `unsure` (and failed calls) teach nothing.
        return Ok(false);
    }
    let weight = if judged { JUDGE_WEIGHT } else { 1.0 };
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
    match model.learn_weighted(&ex, weight) {
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

/// `keel learn status` / the KPIs: the persisted model's per-label status, examples and cursor.
pub async fn status(store: &dyn Store, config: &Config) -> Result<Value, ServiceError> {
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
pub async fn rebuild(store: &dyn Store, config: &Config) -> Result<Rebuild, ServiceError> {
    let online = match store.load_state(STATE_KEY).await? {
        Some(json) => match Model::from_json(&json, config) {
            Ok(m) => Some(Ok(m)),
            Err(e) => Some(Err(e)),
        },
        None => None,
    };
    let mut model = Model::new(config.clone())?;
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
