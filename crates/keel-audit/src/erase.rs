//! Erasure: remove payloads (and their salts) while every proof stays valid; the erasure is an
//! event too (`PayloadErased`).

use keel_core::{Clock, NewEvent};
use keel_store::{SeqFilter, Store};

use crate::AuditError;

/// Kinds whose payloads carry user content and may be erased.
pub const ERASABLE_KINDS: &[&str] = &[
    keel_core::EventKind::INTERACTION_RECORDED,
    keel_core::EventKind::FEEDBACK_RECEIVED,
    keel_core::EventKind::REVIEW_COMPLETED,
];

/// Most seqs named by one `PayloadErased` event.
const CHUNK: usize = 5_000;

/// What to erase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EraseTarget {
    Index(u64),
    Conversation(String),
    User(String),
    /// Everything recorded before this time (Unix ms).
    Before(i64),
}

impl EraseTarget {
    fn describe(&self) -> String {
        match self {
            EraseTarget::Index(i) => format!("index {i}"),
            EraseTarget::Conversation(c) => format!("conversation {c}"),
            EraseTarget::User(u) => format!("user {u}"),
            EraseTarget::Before(ms) => format!("before {}", keel_core::clock::format_ms(*ms)),
        }
    }
}

/// Erases the payloads `target` selects; returns how many events were erased.
pub async fn erase_events(
    store: &dyn Store,
    target: &EraseTarget,
    reason: &str,
    actor: &str,
    clock: &dyn Clock,
) -> Result<usize, AuditError> {
    if reason.trim().is_empty() {
        return Err(AuditError::Invalid("an erasure needs a --reason".into()));
    }
    let filter = match target {
        EraseTarget::Index(i) => SeqFilter::LedgerIndex(*i),
        EraseTarget::Conversation(c) => SeqFilter::Conversation(c.clone()),
        EraseTarget::User(u) => SeqFilter::User(u.clone()),
        EraseTarget::Before(ms) => SeqFilter::Before(*ms),
    };
    let seqs = store.erasable_seqs(&filter, ERASABLE_KINDS).await?;
    if let (EraseTarget::Index(i), true) = (target, seqs.is_empty()) {
        return Err(AuditError::NotFound(format!(
            "no erasable payload at index {i} (it may not exist, be already erased, or be of a kind that is kept)"
        )));
    }
    let events: Vec<NewEvent> = seqs
        .chunks(CHUNK)
        .map(|chunk| NewEvent {
            kind: keel_core::EventKind::PAYLOAD_ERASED.to_string(),
            actor: actor.to_string(),
            tenant: "*".to_string(),
            at_ms: clock.now_ms(),
            payload: serde_json::json!({
                "seqs": chunk,
                "target": target.describe(),
                "reason": reason,
            }),
        })
        .collect();
    for ev in events {
        store.append(vec![ev]).await?;
    }
    Ok(seqs.len())
}
