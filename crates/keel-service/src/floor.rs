//! The protection floor at activation: a version that lacks the default pack's hazard, PII or
//! facts protections (see [`keel_policy::floor`]) is refused unless the operator passes
//! `allow_weaker_than_default` (CLI `--allow-weaker-than-default`) with a reason, which is then
//! recorded in the rollout's reason. Decided in [`crate::rollouts::activate`] and [`crate::rollouts::start`] for every surface.
//! Also the warning for activating for a tenant no app key serves yet.

use keel_policy::{floor, Policy};
use keel_store::Store;

use crate::error::ServiceError;

/// Checks `version` (a full published id) against the default pack. `Ok(reason)` is the reason
/// to record: `reason` itself when nothing is missing, else `reason` prefixed with what the
/// bundle lacks (only when `allow_weaker`).
pub async fn check_activation(
    store: &dyn Store,
    version: &str,
    allow_weaker: bool,
    reason: &str,
) -> Result<String, ServiceError> {
    let version = crate::rollouts::resolve_version(store, version).await?;
    let Some(payload) = store.policy_bundle(&version).await? else {
        return Ok(reason.to_string());
    };
    let bundle = keel_loop::update::bundle_from_payload(&payload)?;
    let policy = Policy::compile(&bundle).map_err(|e| ServiceError::Internal(e.to_string()))?;
    let gaps =
        floor::gaps_from_default(&policy).map_err(|e| ServiceError::Internal(e.to_string()))?;
    decide(&gaps, allow_weaker, reason)
}

/// The pure decision of [`check_activation`].
pub fn decide(
    gaps: &[floor::Gap],
    allow_weaker: bool,
    reason: &str,
) -> Result<String, ServiceError> {
    let Some(summary) = floor::summary(gaps) else {
        return Ok(reason.to_string());
    };
    if !allow_weaker {
        return Err(ServiceError::Unprocessable(format!(
            "this policy version {summary}. Extend the default pack (`extends: default` in policy.yaml, see docs/policies.md), or, to run without those protections on purpose, pass --allow-weaker-than-default with --reason (API: \"allow_weaker_than_default\": true and a \"reason\")"
        )));
    }
    if reason.trim().is_empty() {
        return Err(ServiceError::bad_param(
            "reason",
            "allow_weaker_than_default needs a reason",
        ));
    }
    let names: Vec<&str> = floor::missing(gaps).iter().map(|p| p.as_str()).collect();
    Ok(format!(
        "weaker than the default pack (no {} protection): {reason}",
        names.join(", ")
    ))
}

/// A warning when no live app key belongs to `tenant` (the activation then applies to no
/// traffic yet); `None` for every-tenant activations or when a key exists.
pub async fn tenant_without_keys(
    store: &dyn Store,
    tenant: Option<&str>,
) -> Result<Option<String>, ServiceError> {
    let Some(t) = tenant else { return Ok(None) };
    let keys = store.list_keys().await?;
    let served = keys
        .iter()
        .any(|k| k.revoked_ms.is_none() && k.tenant == t && k.role == keel_core::auth::Role::App);
    Ok((!served).then(|| {
        format!(
            "tenant `{t}` has no app key yet: this activation applies to no traffic until one exists (keel keys create --tenant {t} --role app)"
        )
    }))
}
