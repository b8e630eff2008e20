//! The reviewer's view of one item (the reports on the interaction, the conversation, the
//! decision with spans and facts, the labels so far), read from the store. Behind
//! [`crate::reviews::detail`] (`GET /api/reviews/{id}`, `keel review show`); the shaping is
//! `keel_loop::review::view`.

use keel_core::clock::format_ms;
use keel_loop::review::view;
use keel_store::{ReviewItemRow, Store};
use serde_json::{json, Value};

use crate::error::ServiceError;

/// `{interaction, reports, label_events}` for `item`, reports received up to `now_ms`.
pub async fn detail(
    store: &dyn Store,
    item: &ReviewItemRow,
    now_ms: i64,
) -> Result<Value, ServiceError> {
    let ix = store.interaction(&item.interaction_id).await?;
    let (interaction, from_ms) = match &ix {
        Some(r) => (view::interaction(&r.id, &r.record), r.at_ms),
        None => (Value::Null, item.created_ms),
    };
    // Feedback always names its interaction and comes after it.
    let feedback = store
        .events_in_range(
            &[keel_loop::review::kinds::FEEDBACK],
            Some(&item.tenant),
            from_ms,
            now_ms.saturating_add(1).max(from_ms + 1),
        )
        .await?;
    let reports = view::reports_for(
        &item.interaction_id,
        feedback.iter().map(|e| (&e.payload, format_ms(e.at_ms))),
    );
    let labels = store.review_labels(&item.id).await?;
    let label_events: Vec<Value> = labels
        .iter()
        .map(|e| {
            let mut v = e.payload.clone();
            if v.is_object() {
                v["labelled_at"] = json!(format_ms(e.at_ms));
                v["actor"] = json!(e.actor);
            }
            v
        })
        .collect();
    Ok(json!({"interaction": interaction, "reports": reports, "label_events": label_events}))
}
