//! `/api/policies`: published versions, publishing and activation (admin), same events as the CLI.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use keel_core::clock::format_ms;
use keel_core::Role;
use keel_loop::update::{published_event, GLOBAL_SCOPE};
use keel_policy::{run_tests, Bundle, Policy};
use keel_service::rollouts::{self, Activation};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::GatewayError;
use crate::extract::{parse_json_value, read_body, JsonBody, Path};
use crate::routes::RouteModule;

const ADMIN: &[Role] = &[Role::Admin];

fn router() -> Router<AppState> {
    Router::new()
        .route("/api/policies", get(list).post(publish))
        .route("/api/policies/{version}/activate", post(activate))
}

fn openapi_paths() -> Value {
    json!({
        "/api/policies": {
            "get": {"summary": "Published policy versions and where each is active (admin).",
                    "responses": {"200": {"description": "{data: [...], active: [...]}"}}},
            "post": {"summary": "Publish a bundle: {files: {path: text}, reason} (admin). Its inline tests must pass. `extends: default` in policy.yaml embeds the default pack under .base/ (the version covers it).",
                     "responses": {"201": {"description": "{version}"}, "422": {"description": "invalid bundle or failing tests"}}}},
        "/api/policies/{version}/activate": {"post": {
            "summary": "Activate a version for every tenant or one: {tenant?, reason?, allow_weaker_than_default?} (admin); a rollout at 100 % (see /api/rollouts). A version lacking the default pack's hazard, PII or facts protections is refused (422) unless allow_weaker_than_default is true and a reason is given.",
            "parameters": [{"name": "version", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "{version, scope, rollout, warnings: [e.g. the tenant has no app key yet]}"}, "404": {"description": "unknown version"}, "422": {"description": "weaker than the default pack without allow_weaker_than_default"}}}},
    })
}

inventory::submit! {
    RouteModule { name: "policies", router, openapi_paths }
}

async fn list(State(state): State<AppState>, caller: Caller) -> Result<Response, GatewayError> {
    caller.require(ADMIN)?;
    let versions = state.store.policy_versions().await?;
    let active = state.store.policy_activations().await?;
    let data: Vec<Value> = versions
        .into_iter()
        .map(|v| {
            let scopes: Vec<&str> = active.iter().filter(|a| a.version == v.version).map(|a| a.scope.as_str()).collect();
            json!({"version": v.version, "name": v.name, "owner": v.owner, "published_by": v.actor,
                   "reason": v.reason, "published_at": format_ms(v.published_ms), "active_for": scopes})
        })
        .collect();
    let current = state.policies.for_tenant(&caller.0.tenant);
    Ok(
        Json(json!({"object": "list", "data": data, "active": active,
                   "serving_your_tenant": current.version()}))
        .into_response(),
    )
}

#[derive(Debug, Deserialize)]
struct PublishBody {
    files: std::collections::BTreeMap<String, String>,
    reason: String,
}

fn invalid(msg: String) -> GatewayError {
    GatewayError::BadRequest {
        message: msg,
        param: Some("files".into()),
    }
}

async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<PublishBody>,
) -> Result<Response, GatewayError> {
    caller.require(ADMIN)?;
    let files: Vec<(String, String)> = body.files.into_iter().collect();
    let bundle = Bundle::from_files(&files);
    let policy = Policy::compile(&bundle).map_err(|e| invalid(e.to_string()))?;
    let report = run_tests(&policy);
    if !report.ok() {
        return Err(invalid(format!("the bundle's tests fail: {report}")));
    }
    let exists = state
        .store
        .policy_versions()
        .await?
        .iter()
        .any(|v| v.version == policy.version());
    if !exists {
        let ev = published_event(
            &bundle,
            &policy,
            &body.reason,
            &caller.0.actor(),
            state.clock.now_ms(),
        )
        .map_err(|e| GatewayError::bad_param("reason", e.to_string()))?;
        state.store.append(vec![ev]).await?;
    }
    Ok((
        axum::http::StatusCode::CREATED,
        Json(json!({"version": policy.version(), "already_published": exists})),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
struct ActivateBody {
    tenant: Option<String>,
    reason: Option<String>,
    /// Required (with a reason) for a version that lacks the default pack's protections.
    #[serde(default)]
    allow_weaker_than_default: bool,
}

async fn activate(
    State(state): State<AppState>,
    caller: Caller,
    Path(version): Path<String>,
    req: axum::extract::Request,
) -> Result<Response, GatewayError> {
    caller.require(ADMIN)?;
    let bytes = read_body(req.into_body(), state.config.server.max_body_bytes).await?;
    let body: ActivateBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        ActivateBody::default()
    } else {
        serde_json::from_value(parse_json_value(&bytes)?)
            .map_err(|e| GatewayError::bad(format!("invalid request body: {e}")))?
    };
    let scope = body.tenant.as_deref().unwrap_or(GLOBAL_SCOPE).to_string();
    // Activation is a rollout at 100 % (one state machine; it supersedes a live canary).
    let id = state.new_id("ro", format!("{version}|100|activate|{}", scope).as_bytes());
    let weaker = body.allow_weaker_than_default;
    // A weaker-than-default activation needs the operator's own reason (no default).
    let default_reason = if weaker { "" } else { "activated" };
    let activation = Activation {
        version: &version,
        tenant: body.tenant,
        reason: body.reason.as_deref().unwrap_or(default_reason),
        allow_weaker_than_default: weaker,
        id,
    };
    let (store, clock) = (state.store.as_ref(), state.clock.as_ref());
    let done = rollouts::activate(store, clock, &caller.actor(), activation).await?;
    state.policies.refresh(state.store.as_ref()).await?;
    let (rollout, warnings) = (done.rollout, done.warnings);
    Ok(Json(json!({"version": rollout.version, "scope": scope, "rollout": rollout.id, "warnings": warnings}))
        .into_response())
}
