//! Update: policy versions as events. Publishing puts the whole bundle (its files) into a
//! `PolicyPublished` event, so the ledger seals what was published; activation is a
//! `PolicyActivated` event per scope (`*` or one tenant). The update pipeline around them:
//! `proposal` (suggestions drafted into candidate bundles or facts), `backtest` (a candidate
//! replayed over recorded interactions), `rollout` (canary split, guards, the state machine)
//! and `sequential` (the always-valid test the guards use).

pub mod backtest;
pub mod batch;
pub mod proposal;
pub mod rollout;
pub mod sample_size;
pub mod sequential;
pub mod textdiff;

use keel_core::NewEvent;
use keel_policy::{Bundle, Policy};
use serde_json::{json, Map, Value};

use crate::LoopError;

/// The scope that applies to every tenant without its own activation.
pub const GLOBAL_SCOPE: &str = "*";

/// The `PolicyPublished` event for a compiled bundle.
pub fn published_event(
    bundle: &Bundle,
    policy: &Policy,
    reason: &str,
    actor: &str,
    at_ms: i64,
) -> Result<NewEvent, LoopError> {
    if reason.trim().is_empty() {
        return Err(LoopError::Config("publishing needs a --reason".into()));
    }
    let files: Map<String, Value> = bundle
        .files()
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    Ok(NewEvent {
        kind: keel_core::EventKind::POLICY_PUBLISHED.to_string(),
        actor: actor.to_string(),
        tenant: GLOBAL_SCOPE.to_string(),
        at_ms,
        payload: json!({
            "version": policy.version(),
            "name": policy.name(),
            "owner": policy.owner(),
            "reason": reason,
            "files": files,
        }),
    })
}

/// The `PolicyActivated` event making `version` active for `scope` (`*` or a tenant).
pub fn activated_event(version: &str, scope: &str, actor: &str, at_ms: i64) -> NewEvent {
    NewEvent {
        kind: keel_core::EventKind::POLICY_ACTIVATED.to_string(),
        actor: actor.to_string(),
        tenant: scope.to_string(),
        at_ms,
        payload: json!({"version": version, "scope": scope, "percent": 100}),
    }
}

/// The bundle stored in a `PolicyPublished` payload.
pub fn bundle_from_payload(payload: &Value) -> Result<Bundle, LoopError> {
    let files = payload["files"]
        .as_object()
        .ok_or_else(|| LoopError::State("policy payload has no files (erased?)".into()))?;
    let pairs: Vec<(String, String)> = files
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
        .collect();
    Ok(Bundle::from_files(&pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips_the_bundle() {
        let bundle = Bundle::from_files(&keel_policy::default_pack_files());
        let policy = Policy::compile(&bundle).unwrap();
        let ev = published_event(&bundle, &policy, "initial", "cli:ann", 1).unwrap();
        let back = bundle_from_payload(&ev.payload).unwrap();
        assert_eq!(back.version_id(), policy.version());
        assert!(published_event(&bundle, &policy, " ", "x", 1).is_err());
    }
}
