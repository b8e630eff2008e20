//! Facts: every version as stored, the versions in force at an instant, one key's history, and
//! setting versions (validated against the registry; a tenant's admin sets only its own facts).

use chrono::{DateTime, Utc};
use keel_core::StoredEvent;
use keel_loop::facts::{fact_from_value, fact_set_events, fact_tenant};
use keel_policy::Fact;
use keel_store::{FactRow, Store};

use crate::actor::{Actor, ADMIN, READERS};
use crate::error::ServiceError;

/// Every `FactSet` event (or one key's) with its parsed fact; erased payloads are skipped.
pub async fn load(
    store: &dyn Store,
    key: Option<&str>,
) -> Result<Vec<(FactRow, Fact)>, ServiceError> {
    Ok(store
        .fact_events(key)
        .await?
        .into_iter()
        .filter_map(|r| fact_from_value(&r.fact).map(|f| (r, f)))
        .collect())
}

/// Global facts are visible to everyone; a tenant's only to actors that see it.
fn visible(actor: &Actor, tenant: &str) -> bool {
    tenant == keel_loop::update::GLOBAL_SCOPE || actor.sees(tenant)
}

/// The versions `actor` may see (of `key`, or every key).
pub async fn visible_versions(
    store: &dyn Store,
    actor: &Actor,
    key: Option<&str>,
) -> Result<Vec<(FactRow, Fact)>, ServiceError> {
    actor.require(READERS)?;
    Ok(load(store, key)
        .await?
        .into_iter()
        .filter(|(r, _)| visible(actor, &r.tenant))
        .collect())
}

/// The facts in force at `at` that `actor` may see, each with the end of its validity.
pub async fn in_force(
    store: &dyn Store,
    actor: &Actor,
    key: Option<&str>,
    at: DateTime<Utc>,
) -> Result<Vec<(Fact, Option<DateTime<Utc>>)>, ServiceError> {
    let facts: Vec<Fact> = visible_versions(store, actor, key)
        .await?
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    Ok(keel_policy::in_force_at(&facts, at))
}

/// Every version of `key` that `actor` may see, oldest first (404 when there is none).
pub async fn history(
    store: &dyn Store,
    actor: &Actor,
    key: &str,
) -> Result<Vec<(FactRow, Fact)>, ServiceError> {
    let rows = visible_versions(store, actor, Some(key)).await?;
    if rows.is_empty() {
        return Err(ServiceError::NotFound(format!("No fact `{key}`.")));
    }
    Ok(rows)
}

/// Validates `facts` against the registry and appends their `FactSet` events (admin; a
/// tenant's key only for facts scoped to its tenant).
pub async fn set(
    store: &dyn Store,
    actor: &Actor,
    facts: &[Fact],
    reason: &str,
    at_ms: i64,
) -> Result<Vec<StoredEvent>, ServiceError> {
    actor.require(ADMIN)?;
    for f in facts {
        if actor.tenant_filter().is_some() && !actor.sees(fact_tenant(f)) {
            return Err(ServiceError::Forbidden(format!(
                "fact `{}`: a key of tenant {} can only set facts scoped to `tenants: [{}]`",
                f.key, actor.tenant, actor.tenant
            )));
        }
    }
    let existing: Vec<Fact> = load(store, None)
        .await?
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    let events = fact_set_events(facts, &existing, reason, &actor.who, at_ms)
        .map_err(|e| ServiceError::bad_param("fact", e.to_string()))?;
    Ok(store.append(events).await?)
}
