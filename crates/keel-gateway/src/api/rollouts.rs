//! `/api/rollouts` (canaries and activations: one state machine; admin starts, promotes and
//! rolls back; reviewer, admin and auditor read), `/api/backtests` (a candidate replayed over
//! recorded interactions; admin) and `/api/policies/history` (versions, rollouts, facts and
//! proposals with who, why, when and outcome; reviewer, admin, auditor).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keel_core::Role;
use keel_loop::update::rollout::RolloutScope;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{Caller, READERS};
use crate::error::GatewayError;
use crate::extract::{JsonBody, Path, Query};
use crate::routes::RouteModule;
use keel_service::backtests::{self, BacktestRequest};
use keel_service::history;
use keel_service::rollouts::{self, RolloutRequest};

const ADMIN: &[Role] = &[Role::Admin];
const STATES: [&str; 5] = ["canary", "active", "promoted", "rolled_back", "superseded"];

fn router() -> Router<AppState> {
    Router::new()
        .route("/api/rollouts", get(list).post(start))
        .route("/api/rollouts/{id}", get(one))
        .route("/api/rollouts/{id}/promote", post(promote))
        .route("/api/rollouts/{id}/rollback", post(rollback))
        .route("/api/backtests", post(backtest))
        .route("/api/policies/history", get(history))
}

fn openapi_paths() -> Value {
    let id = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
    json!({
        "/api/rollouts": {
            "get": {"summary": "Rollouts, newest first, with guard readings (reviewer, admin, auditor; own tenant).",
                    "parameters": [{"name": "state", "in": "query", "schema": {"type": "string", "enum": STATES}}],
                    "responses": {"200": {"description": "{data: [rollout]}"}}},
            "post": {"summary": "Start a rollout: {version, percent (0 < p <= 100), tenant?, locale?, reason?, allow_weaker_than_default?} (admin). A version lacking the default pack's hazard, PII or facts protections is refused (422) unless allow_weaker_than_default is true and a reason is given. Below 100 %: a canary split by a stable hash of the conversation id; at 100 %: active (= activate).",
                     "responses": {"201": {"description": "rollout {id, version, baseline, percent, scope, state}"},
                                   "404": {"description": "unknown version"}, "409": {"description": "a canary is already live for this scope"}, "422": {"description": "weaker than the default pack without allow_weaker_than_default"}}}},
        "/api/rollouts/{id}": {"get": {
            "summary": "One rollout with per-arm guard counts and the sequential test's verdict (reviewer, admin, auditor).",
            "parameters": id,
            "responses": {"200": {"description": "rollout {arms, guards, verdict}"}, "404": {"description": "unknown id"}}}},
        "/api/rollouts/{id}/promote": {"post": {
            "summary": "Promote a canary to 100 %: {reason} (admin).",
            "parameters": id,
            "responses": {"200": {"description": "rollout"}, "404": {"description": "unknown id"}, "409": {"description": "not a canary"}}}},
        "/api/rollouts/{id}/rollback": {"post": {
            "summary": "Roll back a canary (or a promoted/active rollout to its baseline): {reason} (admin).",
            "parameters": id,
            "responses": {"200": {"description": "rollout"}, "404": {"description": "unknown id"}, "409": {"description": "nothing to roll back"}}}},
        "/api/backtests": {"post": {
            "summary": "Replay recorded interactions through the version in force (the base) and through a candidate, and report their difference: {proposal | version, since_ms?, until_ms?, limit?, tenant?} (admin). Default window: the last 7 days. Changes between the recording and the base replay are reported apart, in drift_since_recording.",
            "responses": {"200": {"description": "{candidate_version, base_version, interactions, skipped_erased, flipped, transitions (base -> candidate), by_rule, by_segment, samples, caught_wrong_answers, caught_violations, drift_since_recording {flipped, rules_changed, transitions (recorded -> base), other_version}}"},
                          "404": {"description": "unknown proposal or version"}, "422": {"description": "not a policy candidate"}}}},
        "/api/policies/history": {"get": {
            "summary": "Versions, rollouts, fact changes and proposals in order, with who, why, when, outcome and links (reviewer, admin, auditor; own tenant).",
            "responses": {"200": {"description": "{data: [{at_ms, kind, actor, reason, version?, rollout?, proposal?, review?, fact?, outcome}]}"}}}},
    })
}

inventory::submit! {
    RouteModule { name: "rollouts", router, openapi_paths }
}

/// Runs the rollout worker up to the last committed event (read after write for guard
/// readings and automatic steps) and applies any step it took to this replica's policies.
async fn catch_up(state: &AppState) -> Result<keel_loop::update::rollout::Tracker, GatewayError> {
    let tracker = rollouts::rollouts_catch_up(
        state.store.as_ref(),
        state.clock.as_ref(),
        &state.config.update,
        &state.config.rollouts,
    )
    .await?;
    state.policies.refresh_facts(state.store.as_ref()).await?;
    state.policies.refresh(state.store.as_ref()).await?;
    Ok(tracker)
}

fn sees(caller: &Caller, tenant: Option<&str>) -> bool {
    match tenant {
        Some(t) => caller.sees(t),
        None => true,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    version: String,
    percent: f64,
    tenant: Option<String>,
    locale: Option<String>,
    reason: Option<String>,
    /// Required (with a reason) for a version that lacks the default pack's protections.
    #[serde(default)]
    allow_weaker_than_default: bool,
}

async fn start(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<StartBody>,
) -> Result<Response, GatewayError> {
    let weaker = body.allow_weaker_than_default;
    // A weaker-than-default rollout needs the operator's own reason (no default).
    let reason = body.reason.unwrap_or_else(|| {
        if weaker {
            String::new()
        } else {
            format!("rollout at {}%", body.percent)
        }
    });
    let id = state.new_id(
        "ro",
        format!("{}|{}|{reason}", body.version, body.percent).as_bytes(),
    );
    let request = RolloutRequest {
        version: &body.version,
        percent: body.percent,
        scope: RolloutScope {
            tenant: body.tenant,
            locale: body.locale,
        },
        reason: &reason,
        allow_weaker_than_default: weaker,
        id,
    };
    let (store, clock) = (state.store.as_ref(), state.clock.as_ref());
    let r = rollouts::start(store, clock, &caller.actor(), request).await?;
    state.policies.refresh(state.store.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(json!(r))).into_response())
}

#[derive(Debug, Deserialize)]
struct ListParams {
    state: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> Result<Response, GatewayError> {
    caller.require(READERS)?;
    crate::extract::one_of("state", p.state.as_deref(), &STATES)?;
    let tracker = catch_up(&state).await?;
    let now = state.clock.now_ms();
    let mut data: Vec<Value> = state
        .store
        .rollouts()
        .await?
        .iter()
        .filter(|r| sees(&caller, r.tenant.as_deref()))
        .filter(|r| p.state.as_deref().is_none_or(|s| r.state == s))
        .map(|r| {
            let mut v = rollouts::rollout_json(
                r,
                &tracker,
                &state.config.update,
                &state.config.rollouts,
                now,
            );
            v["updated_ms"] = json!(r.updated_ms);
            v["updated_by"] = json!(r.actor);
            v
        })
        .collect();
    data.reverse();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

async fn visible(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<keel_loop::update::rollout::Rollout, GatewayError> {
    let r = rollouts::rollout_by_id(state.store.as_ref(), id).await?;
    if !sees(caller, r.scope.tenant.as_deref()) {
        return Err(GatewayError::NotFound(format!("No rollout `{id}`.")));
    }
    Ok(r)
}

async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    caller.require(READERS)?;
    visible(&state, &caller, &id).await?;
    let tracker = catch_up(&state).await?;
    let r = rollouts::rollout_row(state.store.as_ref(), &id).await?;
    Ok(Json(rollouts::rollout_json(
        &r,
        &tracker,
        &state.config.update,
        &state.config.rollouts,
        state.clock.now_ms(),
    ))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

async fn step(
    state: AppState,
    caller: Caller,
    id: String,
    reason: String,
    promote: bool,
) -> Result<Response, GatewayError> {
    caller.require(ADMIN)?;
    let r = visible(&state, &caller, &id).await?;
    if r.scope.tenant.is_none() && caller.tenant_filter().is_some() {
        return Err(GatewayError::Forbidden(
            "a rollout for every tenant needs an all-tenant admin key".into(),
        ));
    }
    let r = rollouts::end_rollout(
        state.store.as_ref(),
        state.clock.as_ref(),
        &id,
        promote,
        &reason,
        &caller.0.actor(),
    )
    .await?;
    state.policies.refresh_facts(state.store.as_ref()).await?;
    state.policies.refresh(state.store.as_ref()).await?;
    let row = rollouts::rollout_row(state.store.as_ref(), &r.id).await?;
    let mut v = json!(r);
    v["promoted_by"] = json!(rollouts::promoted_by(&row));
    Ok(Json(v).into_response())
}

async fn promote(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Response, GatewayError> {
    step(state, caller, id, body.reason, true).await
}

async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReasonBody>,
) -> Result<Response, GatewayError> {
    step(state, caller, id, body.reason, false).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BacktestBody {
    proposal: Option<String>,
    version: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    limit: Option<usize>,
    tenant: Option<String>,
}

async fn backtest(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<BacktestBody>,
) -> Result<Response, GatewayError> {
    let req = BacktestRequest {
        proposal: body.proposal,
        version: body.version,
        tenant: body.tenant,
        since_ms: body.since_ms,
        until_ms: body.until_ms,
        limit: body.limit,
    };
    let facts = Some(state.policies.fact_checker());
    let now = state.clock.now_ms();
    let (report, since) =
        backtests::backtest(state.store.as_ref(), &caller.actor(), &req, facts, now).await?;
    let mut v = json!(report);
    v["since_ms"] = json!(since);
    v["until_ms"] = json!(req.until_ms);
    v["proposal"] = json!(req.proposal);
    Ok(Json(v).into_response())
}

async fn history(State(state): State<AppState>, caller: Caller) -> Result<Response, GatewayError> {
    caller.require(READERS)?;
    let tenant = caller.tenant_filter();
    let data = history::history(state.store.as_ref(), tenant.as_deref()).await?;
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}
