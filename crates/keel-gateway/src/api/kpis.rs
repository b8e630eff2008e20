//! `GET /api/kpis`: KPIs per time bucket and segment, and comparisons of two periods or two
//! policy versions (reviewer, admin, auditor; own tenant). [`load`] is shared with `keel kpis`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use keel_loop::review::kpi::{self, KpiQuery};
use keel_service::kpis::{self, parse_group_by, Comparison};
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

/// The comparison the query asks for, if any.
fn comparison(p: &Params, now: i64) -> Result<Option<Comparison>, GatewayError> {
    if p.compare_from.is_some() || p.compare_to.is_some() {
        let (Some(cf), Some(ct)) = (p.compare_from.as_deref(), p.compare_to.as_deref()) else {
            return Err(GatewayError::bad_param(
                "compare_from",
                "Give both compare_from and compare_to.",
            ));
        };
        return Ok(Some(Comparison::Period {
            from_ms: time_param("compare_from", Some(cf), 0, now)?,
            to_ms: time_param("compare_to", Some(ct), 0, now)?,
        }));
    }
    let Some(pair) = p.compare_policies.as_deref() else {
        return Ok(None);
    };
    let (a, b) = pair.split_once(',').ok_or_else(|| {
        GatewayError::bad_param(
            "compare_policies",
            "Invalid 'compare_policies': expected A,B.",
        )
    })?;
    Ok(Some(Comparison::Policies {
        a: a.trim().to_string(),
        b: b.trim().to_string(),
    }))
}

/// The period, buckets and groups the query asks for.
fn query(p: &Params, now: i64) -> Result<KpiQuery, GatewayError> {
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
    Ok(KpiQuery {
        from_ms: from,
        to_ms: to,
        bucket_ms,
        group_by,
        now_ms: now,
    })
}

async fn kpis(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<Params>,
) -> Result<Response, GatewayError> {
    caller.require(READERS)?;
    let now = state.clock.now_ms();
    let q = query(&p, now)?;
    let compare = comparison(&p, now)?;
    let report = kpis::report(
        state.store.as_ref(),
        &caller.actor(),
        None,
        &q,
        compare.as_ref(),
    )
    .await?;
    let mut body = json!({"object": "list", "from": q.from_ms, "to": q.to_ms, "data": report.rows,
                          "learned": state.learned.status()});
    if let (Some(c), Some(diff)) = (report.compared, report.comparison) {
        body["comparison"] = match c {
            Comparison::Period { from_ms, to_ms } => json!({
                "a": {"from": q.from_ms, "to": q.to_ms}, "b": {"from": from_ms, "to": to_ms},
                "diff": diff}),
            Comparison::Policies { a, b } => json!({
                "a": {"policy_version": a}, "b": {"policy_version": b}, "diff": diff}),
        };
    }
    Ok(Json(body).into_response())
}
