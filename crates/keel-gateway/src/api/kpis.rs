//! `GET /api/kpis`: KPIs per time bucket and segment, and comparisons of two periods or two
//! policy versions (reviewer, admin, auditor; own tenant). [`load`] is shared with `keel kpis`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use keel_loop::review::kinds;
use keel_loop::review::kpi::{self, Dim, ItemFact, KpiQuery, KpiRow};
use keel_store::{ReviewQuery, Store, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{Caller, READERS};
use crate::error::GatewayError;
use crate::extract::Query;
use crate::routes::RouteModule;

fn router() -> Router<AppState> {
    Router::new().route("/api/kpis", get(kpis))
}

fn openapi_paths() -> Value {
    let s = json!({"type": "string"});
    json!({"/api/kpis": {"get": {
        "summary": "KPIs per bucket and segment: CSAT mean and distribution, wrong-answer rate (reports, reviews), violation rate (output rules that blocked or redacted: the model said something forbidden) and intervention rate (any rule that changed the reply) by category, escalation rate (95% Wilson intervals), mean and p90 time to human, review load and backlog age; `learned`: the learned monitor's labels with examples and prequential precision/recall (one model for all tenants). With compare_from/compare_to or compare_policies=A,B: the differences and their 95% intervals (reviewer, admin, auditor; own tenant).",
        "parameters": [
            {"name": "from", "in": "query", "schema": s, "description": "RFC 3339, YYYY-MM-DD, Unix ms or a span back (7d); default 7d"},
            {"name": "to", "in": "query", "schema": s, "description": "exclusive; default now"},
            {"name": "bucket", "in": "query", "schema": s, "description": "none | hour | day | week | <n>m|h|d"},
            {"name": "group_by", "in": "query", "schema": s, "description": "comma list of tenant, locale, jurisdiction, policy_version, topic"},
            {"name": "compare_from", "in": "query", "schema": s},
            {"name": "compare_to", "in": "query", "schema": s},
            {"name": "compare_policies", "in": "query", "schema": s, "description": "A,B: two policy versions over [from, to), each a full id or an unambiguous prefix of at least 8 characters (404 unknown, 400 ambiguous)"}
        ],
        "responses": {"200": {"description": "{data: [row], comparison?}"}, "400": {"description": "invalid parameter"}}
    }}})
}

inventory::submit! {
    RouteModule { name: "kpis", router, openapi_paths }
}

/// Event kinds the KPIs read.
pub const KPI_KINDS: [&str; 4] = [
    "InteractionRecorded",
    kinds::FEEDBACK,
    kinds::HANDOFF,
    kinds::COMPLETED,
];

/// Reads what `q` needs from the store and computes the rows.
pub async fn load(
    store: &dyn Store,
    tenant: Option<&str>,
    q: &KpiQuery,
) -> Result<Vec<KpiRow>, StoreError> {
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

#[derive(Debug, Deserialize)]
struct Params {
    from: Option<String>,
    to: Option<String>,
    bucket: Option<String>,
    group_by: Option<String>,
    compare_from: Option<String>,
    compare_to: Option<String>,
    compare_policies: Option<String>,
}

fn time_param(name: &str, v: Option<&str>, default: i64, now: i64) -> Result<i64, GatewayError> {
    match v {
        None | Some("") => Ok(default),
        Some(s) => kpi::parse_time(s, now).ok_or_else(|| {
            GatewayError::bad_param(
                name,
                format!(
                    "Invalid '{name}': expected RFC 3339, YYYY-MM-DD, Unix ms or a span like 7d."
                ),
            )
        }),
    }
}

async fn kpis(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<Params>,
) -> Result<Response, GatewayError> {
    caller.require(READERS)?;
    let now = state.clock.now_ms();
    let to = time_param("to", p.to.as_deref(), now, now)?;
    let from = time_param("from", p.from.as_deref(), to - 7 * 86_400_000, now)?;
    if from >= to {
        return Err(GatewayError::bad_param(
            "from",
            "Invalid 'from': must be before 'to'.",
        ));
    }
    let bucket_ms = kpi::parse_bucket(p.bucket.as_deref().unwrap_or("none")).ok_or_else(|| {
        GatewayError::bad_param(
            "bucket",
            "Invalid 'bucket': none, hour, day, week or <n>m|h|d.",
        )
    })?;
    if bucket_ms.is_some_and(|w| (to - from) / w > 2_000) {
        return Err(GatewayError::bad_param(
            "bucket",
            "Invalid 'bucket': more than 2000 buckets.",
        ));
    }
    let group_by = parse_group_by(p.group_by.as_deref()).ok_or_else(|| {
        GatewayError::bad_param(
            "group_by",
            "Invalid 'group_by': a comma list of tenant, locale, jurisdiction, policy_version, topic.",
        )
    })?;
    let tenant = caller.tenant_filter();
    let q = KpiQuery {
        from_ms: from,
        to_ms: to,
        bucket_ms,
        group_by,
        now_ms: now,
    };
    let rows = load(state.store.as_ref(), tenant.as_deref(), &q).await?;
    let mut body = json!({"object": "list", "from": from, "to": to, "data": rows,
                          "learned": state.learned.status()});
    let total = |from_ms, to_ms, group_by| KpiQuery {
        from_ms,
        to_ms,
        bucket_ms: None,
        group_by,
        now_ms: now,
    };
    if p.compare_from.is_some() || p.compare_to.is_some() {
        let (Some(cf), Some(ct)) = (p.compare_from.as_deref(), p.compare_to.as_deref()) else {
            return Err(GatewayError::bad_param(
                "compare_from",
                "Give both compare_from and compare_to.",
            ));
        };
        let cf = time_param("compare_from", Some(cf), 0, now)?;
        let ct = time_param("compare_to", Some(ct), 0, now)?;
        let a = load(
            state.store.as_ref(),
            tenant.as_deref(),
            &total(from, to, vec![]),
        )
        .await?;
        let b = load(
            state.store.as_ref(),
            tenant.as_deref(),
            &total(cf, ct, vec![]),
        )
        .await?;
        let empty = KpiRow::default();
        body["comparison"] = json!({
            "a": {"from": from, "to": to}, "b": {"from": cf, "to": ct},
            "diff": kpi::compare(a.first().unwrap_or(&empty), b.first().unwrap_or(&empty)),
        });
    } else if let Some(pair) = p.compare_policies.as_deref() {
        let Some((va, vb)) = pair.split_once(',') else {
            return Err(GatewayError::bad_param(
                "compare_policies",
                "Invalid 'compare_policies': expected A,B.",
            ));
        };
        // The one resolver: full ids or unambiguous prefixes; unknown ids are errors.
        let store = state.store.as_ref();
        let va = crate::update::resolve_recorded_version(store, va).await?;
        let vb = crate::update::resolve_recorded_version(store, vb).await?;
        let (va, vb) = (va.as_str(), vb.as_str());
        let rows = load(
            state.store.as_ref(),
            tenant.as_deref(),
            &total(from, to, vec![Dim::PolicyVersion]),
        )
        .await?;
        let empty = KpiRow::default();
        let pick = |v: &str| {
            rows.iter()
                .find(|r| r.group.get("policy_version").map(String::as_str) == Some(v))
                .unwrap_or(&empty)
        };
        body["comparison"] = json!({
            "a": {"policy_version": va}, "b": {"policy_version": vb},
            "diff": kpi::compare(pick(va.trim()), pick(vb.trim())),
        });
    }
    Ok(Json(body).into_response())
}
