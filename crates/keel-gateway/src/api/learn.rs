//! `GET /api/learn`: the learned monitor's labels (examples, prequential precision/recall,
//! availability; reviewer, admin, auditor). `POST /api/learn/step` (admin): learn from every
//! review committed so far before answering, so a driver (the simulator) can make learning
//! synchronous at a barrier.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keel_core::Role;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::{Caller, READERS};
use crate::error::GatewayError;
use crate::routes::RouteModule;

const ADMIN: &[Role] = &[Role::Admin];

fn router() -> Router<AppState> {
    Router::new()
        .route("/api/learn", get(status))
        .route("/api/learn/step", post(step))
}

fn openapi_paths() -> Value {
    json!({
        "/api/learn": {"get": {
            "summary": "The learned monitor (one model for all tenants): per label positives, negatives, prequential precision and recall over the most recent reviews, availability; examples, cursor, digest (reviewer, admin, auditor).",
            "responses": {"200": {"description": "{examples, cursor, min_examples, window, digest, labels: [...]}; null fields before the model loaded"}}
        }},
        "/api/learn/step": {"post": {
            "summary": "Learns from every review committed so far, then answers with the cursor and the status (admin).",
            "responses": {"200": {"description": "{cursor, status}"}}
        }}
    })
}

inventory::submit! {
    RouteModule { name: "learn", router, openapi_paths }
}

async fn status(State(state): State<AppState>, caller: Caller) -> Result<Response, GatewayError> {
    caller.require(READERS)?;
    Ok(Json(state.learned.status()).into_response())
}

async fn step(State(state): State<AppState>, caller: Caller) -> Result<Response, GatewayError> {
    caller.require(ADMIN)?;
    let cursor = crate::learn::learn_step(&state).await?;
    Ok(Json(json!({"cursor": cursor, "status": state.learned.status()})).into_response())
}
