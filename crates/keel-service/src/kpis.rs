//! KPIs over a period: rows per bucket and group, and a comparison with a second period or
//! between two policy versions. One computation for the API and the CLI table.

use keel_loop::review::kinds;
use keel_loop::review::kpi::{self, Dim, ItemFact, KpiQuery, KpiRow};
use keel_store::{ReviewQuery, Store};
use serde_json::Value;

use crate::actor::{Actor, READERS};
use crate::error::ServiceError;

/// Event kinds the KPIs read.
pub const KPI_KINDS: [&str; 4] = [
    keel_core::EventKind::INTERACTION_RECORDED,
    kinds::FEEDBACK,
    kinds::HANDOFF,
    kinds::COMPLETED,
];

/// Reads what `q` needs from the store and computes the rows.
pub async fn load(
    store: &dyn Store,
    tenant: Option<&str>,
    q: &KpiQuery,
) -> Result<Vec<KpiRow>, ServiceError> {
    let events = store
        .events_in_range(&KPI_KINDS, tenant, q.from_ms, q.to_ms)
        .await?;
    let items = store
        .review_items(&ReviewQuery {
            tenant: tenant.map(str::to_string),
            to_ms: Some(q.to_ms),
            now_ms: q.now_ms,
            limit: u32::MAX,
            ..ReviewQuery::default()
        })
        .await?;
    let facts: Vec<ItemFact> = items
        .into_iter()
        .map(|r| ItemFact {
            tenant: r.tenant,
            context: r.context,
            policy_version: r.policy_version.map(Value::String).unwrap_or(Value::Null),
            created_ms: r.created_ms,
            done_ms: r.done_ms,
        })
        .collect();
    Ok(kpi::compute(q, &events, &facts))
}

/// Parses `group_by` (comma list).
pub fn parse_group_by(s: Option<&str>) -> Option<Vec<Dim>> {
    match s {
        None | Some("") => Some(Vec::new()),
        Some(s) => s.split(',').map(|d| Dim::parse(d.trim())).collect(),
    }
}

/// What to compare the period with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    /// A second period `[from_ms, to_ms)`.
    Period { from_ms: i64, to_ms: i64 },
    /// Two policy versions over the same period.
    Policies { a: String, b: String },
}

/// A KPI report's rows and, when asked, the comparison's differences.
#[derive(Debug, Clone)]
pub struct KpiReport {
    pub rows: Vec<KpiRow>,
    pub comparison: Option<Value>,
    /// The comparison as made: policy versions resolved to full ids.
    pub compared: Option<Comparison>,
}

/// KPIs of `q` for the actor's tenant (or `tenant`, for an actor that sees every tenant).
pub async fn report(
    store: &dyn Store,
    actor: &Actor,
    tenant: Option<&str>,
    q: &KpiQuery,
    compare: Option<&Comparison>,
) -> Result<KpiReport, ServiceError> {
    actor.require(READERS)?;
    let tenant = actor.tenant_filter().or(tenant);
    let rows = load(store, tenant, q).await?;
    let total = |from_ms, to_ms, group_by| KpiQuery {
        from_ms,
        to_ms,
        bucket_ms: None,
        group_by,
        now_ms: q.now_ms,
    };
    let empty = KpiRow::default();
    let mut compared = compare.cloned();
    let comparison = match compare {
        None => None,
        Some(Comparison::Period { from_ms, to_ms }) => {
            let a = load(store, tenant, &total(q.from_ms, q.to_ms, vec![])).await?;
            let b = load(store, tenant, &total(*from_ms, *to_ms, vec![])).await?;
            Some(kpi::compare(
                a.first().unwrap_or(&empty),
                b.first().unwrap_or(&empty),
            ))
        }
        Some(Comparison::Policies { a, b }) => {
            // The one resolver: full ids or unambiguous prefixes; unknown ids are errors.
            let a = crate::rollouts::resolve_recorded_version(store, a.trim()).await?;
            let b = crate::rollouts::resolve_recorded_version(store, b.trim()).await?;
            let all = load(
                store,
                tenant,
                &total(q.from_ms, q.to_ms, vec![Dim::PolicyVersion]),
            )
            .await?;
            let pick = |v: &str| {
                all.iter()
                    .find(|r| r.group.get("policy_version").map(String::as_str) == Some(v.trim()))
                    .unwrap_or(&empty)
            };
            let diff = kpi::compare(pick(&a), pick(&b));
            compared = Some(Comparison::Policies { a, b });
            Some(diff)
        }
    };
    Ok(KpiReport {
        rows,
        comparison,
        compared,
    })
}
