//! `/api/sim`: simulated time for the stress-test simulator. Only with `[sim] manual_clock =
//! true`; otherwise both endpoints answer 404 as if they did not exist. Admin only.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use keel_core::clock::format_ms;
use keel_core::{Clock, Role};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::GatewayError;
use crate::extract::{JsonBody, Query};
use crate::routes::RouteModule;
use crate::sim::SimControl;

const ADMIN: &[Role] = &[Role::Admin];

fn router() -> Router<AppState> {
    Router::new()
        .route("/api/sim/clock", post(set_clock).get(get_clock))
        .route("/api/sim/barrier", get(barrier))
}

fn openapi_paths() -> Value {
    json!({
        "/api/sim/clock": {
            "get": {"summary": "The simulated time (admin; sim mode only, else 404).",
                    "responses": {"200": {"description": "{now_ms, now}"}}},
            "post": {"summary": "Set the simulated time: {now_ms} (admin; sim mode only, else 404). Time never goes backwards (409).",
                     "responses": {"200": {"description": "{now_ms, now}"}, "409": {"description": "earlier than the current time"}}}},
        "/api/sim/barrier": {"get": {
            "summary": "Runs the monitors, the review queue's and the rollouts' workers until they have processed every committed event (at least `seq`); returns the log's last sequence (admin; sim mode only, else 404).",
            "parameters": [{"name": "seq", "in": "query", "schema": {"type": "integer"}}],
            "responses": {"200": {"description": "{seq}"}, "400": {"description": "seq not committed"}}}},
    })
}

inventory::submit! {
    RouteModule { name: "sim", router, openapi_paths }
}

/// Sim state, or the 404 a gateway without sim mode gives for any unknown path.
fn sim(
    state: &AppState,
    caller: &Caller,
    path: &str,
) -> Result<std::sync::Arc<SimControl>, GatewayError> {
    let Some(sim) = state.sim.clone() else {
        return Err(GatewayError::NotFound(format!("No route for {path}")));
    };
    caller.require(ADMIN)?;
    Ok(sim)
}

fn now(sim: &SimControl) -> Json<Value> {
    let ms = sim.clock.now_ms();
    Json(json!({"now_ms": ms, "now": format_ms(ms)}))
}

async fn get_clock(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, GatewayError> {
    let sim = sim(&state, &caller, "GET /api/sim/clock")?;
    Ok(now(&sim))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetClock {
    now_ms: i64,
}

async fn set_clock(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<SetClock>,
) -> Result<Json<Value>, GatewayError> {
    let sim = sim(&state, &caller, "POST /api/sim/clock")?;
    let current = sim.clock.now_ms();
    if body.now_ms < current {
        return Err(GatewayError::Conflict(format!(
            "Simulated time cannot go backwards: it is {} and {} was asked for.",
            format_ms(current),
            format_ms(body.now_ms)
        )));
    }
    sim.clock.set_ms(body.now_ms);
    Ok(now(&sim))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BarrierParams {
    seq: Option<i64>,
}

async fn barrier(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<BarrierParams>,
) -> Result<Json<Value>, GatewayError> {
    sim(&state, &caller, "GET /api/sim/barrier")?;
    if p.seq.is_some_and(|s| s < 0) {
        return Err(GatewayError::bad_param("seq", "must be 0 or more"));
    }
    let seq = crate::background::drive(&state, p.seq).await?;
    Ok(Json(json!({"seq": seq})))
}
