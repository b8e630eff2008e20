//! The review queue: list, one item with its interaction and label events (or the reviewer's
//! full view of it), claim and label.
//! Written once for every surface: reviewers only, own tenant; claims are leases on the
//! injected clock, and whether an action may happen is decided here (`keel_loop::review`'s
//! lease rule) before the store's guard enforces it.

use keel_core::{Clock, StoredEvent};
use keel_loop::review::{claim_event, label_event, ClaimState, ItemRef, Label};
use keel_store::{InteractionRow, ReviewItemRow, ReviewQuery, Store};
use serde_json::Value;

use crate::actor::{Actor, READERS, REVIEWERS};
use crate::error::ServiceError;

/// The claim part of a stored item.
pub fn claim_state(r: &ReviewItemRow) -> ClaimState<'_> {
    ClaimState {
        status: &r.status,
        claimed_by: r.claimed_by.as_deref(),
        lease_until_ms: r.lease_until_ms,
    }
}

/// The identity part of a stored item (what claim and label events name).
pub fn item_ref(r: &ReviewItemRow) -> ItemRef<'_> {
    ItemRef {
        id: &r.id,
        interaction_id: &r.interaction_id,
        tenant: &r.tenant,
        source: &r.source,
    }
}

/// A page of the queue.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// Only this tenant (an actor scoped to one tenant always sees only its own).
    pub tenant: Option<String>,
    pub status: Option<String>,
    pub source: Option<String>,
    /// The last id of the previous page.
    pub after_id: Option<String>,
    pub limit: u32,
}

/// The queue by priority (severity, then age) as the actor may see it at `now_ms`.
pub async fn list(
    store: &dyn Store,
    actor: &Actor,
    req: ListRequest,
    now_ms: i64,
) -> Result<Vec<ReviewItemRow>, ServiceError> {
    actor.require(READERS)?;
    if let Some(c) = &req.after_id {
        visible(store, actor, c).await.map_err(|_| {
            ServiceError::bad_param(
                "cursor",
                "Invalid 'cursor': use next_cursor from a previous page.",
            )
        })?;
    }
    let tenant = actor.tenant_filter().map(str::to_string).or(req.tenant);
    Ok(store
        .review_items(&ReviewQuery {
            tenant,
            status: req.status,
            source: req.source,
            now_ms,
            after_id: req.after_id,
            limit: req.limit,
            ..ReviewQuery::default()
        })
        .await?)
}

/// The item, if it exists and the actor may see it (else a 404).
async fn visible(
    store: &dyn Store,
    actor: &Actor,
    id: &str,
) -> Result<ReviewItemRow, ServiceError> {
    store
        .review_item(id)
        .await?
        .filter(|r| actor.sees(&r.tenant))
        .ok_or_else(|| ServiceError::NotFound(format!("No review item `{id}`.")))
}

/// One item with its interaction and its label events.
#[derive(Debug, Clone)]
pub struct ItemDetail {
    pub item: ReviewItemRow,
    pub interaction: Option<InteractionRow>,
    pub labels: Vec<StoredEvent>,
}

/// One item as the actor may see it.
pub async fn get(store: &dyn Store, actor: &Actor, id: &str) -> Result<ItemDetail, ServiceError> {
    actor.require(READERS)?;
    let item = visible(store, actor, id).await?;
    let interaction = store.interaction(&item.interaction_id).await?;
    let labels = store.review_labels(&item.id).await?;
    Ok(ItemDetail {
        item,
        interaction,
        labels,
    })
}

/// One item and what a reviewer needs to judge it: `view` is
/// `{interaction, reports, label_events}` ([`crate::review_view::detail`]).
#[derive(Debug, Clone)]
pub struct ItemView {
    pub item: ReviewItemRow,
    pub view: Value,
}

/// One item as the actor may see it, with the reports received up to `now_ms`, the
/// conversation and the decision with spans and facts.
pub async fn detail(
    store: &dyn Store,
    actor: &Actor,
    id: &str,
    now_ms: i64,
) -> Result<ItemView, ServiceError> {
    actor.require(READERS)?;
    let item = visible(store, actor, id).await?;
    let view = crate::review_view::detail(store, &item, now_ms).await?;
    Ok(ItemView { item, view })
}

/// What the lease rule says about claiming `r` now.
fn claim_conflict(r: &ReviewItemRow, now_ms: i64) -> ServiceError {
    match claim_state(r).effective_status(now_ms) {
        "done" => ServiceError::Conflict(format!("Review item `{}` is done.", r.id)),
        _ => ServiceError::Conflict(format!(
            "Review item `{}` is claimed by someone else, or you have labelled it already.",
            r.id
        )),
    }
}

/// Claims an item for `lease_ms` (reviewers; 409 when someone else holds it, it is done, or
/// the actor labelled it already). Returns the item as stored after the claim.
pub async fn claim(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    id: &str,
    lease_ms: i64,
) -> Result<ReviewItemRow, ServiceError> {
    actor.require(REVIEWERS)?;
    let item = visible(store, actor, id).await?;
    let now = clock.now_ms();
    if !claim_state(&item).claimable_by(&actor.who, now) {
        return Err(claim_conflict(&item, now));
    }
    let event = claim_event(item_ref(&item), &actor.who, &actor.person, now, lease_ms);
    if let Err(e) = store.append(vec![event]).await {
        // The store's guard refused the claim (a race, or a label by this reviewer): say so.
        if let Some(now_item) = store.review_item(id).await? {
            if !claim_state(&now_item).held_by(&actor.who, now) {
                return Err(claim_conflict(&now_item, now));
            }
        }
        return Err(e.into());
    }
    visible(store, actor, id).await
}

/// Labels an item the actor holds (reviewers; 409 without a live claim). `quorum` is how many
/// reviewers' labels complete the item. Returns the item after the label and the label event's
/// payload.
pub async fn label(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    id: &str,
    label: &Label,
    quorum: u32,
) -> Result<(ReviewItemRow, Value), ServiceError> {
    actor.require(REVIEWERS)?;
    let item = visible(store, actor, id).await?;
    let now = clock.now_ms();
    let no_claim = || {
        ServiceError::Conflict(format!(
            "Claim review item `{id}` first (or your claim expired and the item went back to the queue)."
        ))
    };
    if !claim_state(&item).held_by(&actor.who, now) {
        return Err(no_claim());
    }
    let record = store
        .interaction(&item.interaction_id)
        .await?
        .map(|r| r.record)
        .unwrap_or(Value::Null);
    let event = label_event(
        item_ref(&item),
        &actor.who,
        &actor.person,
        label,
        quorum,
        &record,
        now,
    );
    let payload = event.payload.clone();
    if let Err(e) = store.append(vec![event]).await {
        if let Some(now_item) = store.review_item(id).await? {
            if !claim_state(&now_item).held_by(&actor.who, now) {
                return Err(no_claim());
            }
        }
        return Err(e.into());
    }
    Ok((visible(store, actor, id).await?, payload))
}
