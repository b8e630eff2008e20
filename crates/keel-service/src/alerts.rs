//! Alerts raised by the drift monitors: a page of them, newest first, as the actor may see.

use keel_store::{AlertQuery, AlertRow, Store};

use crate::actor::{Actor, READERS};
use crate::error::ServiceError;

/// Up to `limit` alerts (of `metric`, or all) raised before `before_seq`, newest first, and
/// whether there are more.
pub async fn list(
    store: &dyn Store,
    actor: &Actor,
    metric: Option<String>,
    before_seq: Option<i64>,
    limit: u32,
) -> Result<(Vec<AlertRow>, bool), ServiceError> {
    actor.require(READERS)?;
    let mut rows = store
        .list_alerts(&AlertQuery {
            tenant: actor.tenant_filter().map(str::to_string),
            metric,
            before_seq,
            limit: limit + 1,
        })
        .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok((rows, more))
}
