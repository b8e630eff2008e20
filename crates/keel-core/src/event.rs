//! Events: the one way state changes. A kind, an actor, a tenant, a time and a JSON payload.

use serde::{Deserialize, Serialize};

/// Event kinds known to the foundation. Kinds are plain strings so later modules add their own
/// without editing a shared enum; these constants only avoid typos.
pub struct EventKind;

impl EventKind {
    pub const INTERACTION_RECORDED: &'static str = "InteractionRecorded";
    pub const KEY_CREATED: &'static str = "KeyCreated";
    pub const KEY_REVOKED: &'static str = "KeyRevoked";
}

/// An event about to be appended. The store assigns its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub kind: String,
    pub actor: String,
    pub tenant: String,
    /// Unix milliseconds from the injected clock.
    pub at_ms: i64,
    pub payload: serde_json::Value,
}

/// An event as stored: with its sequence number (1-based, gap-free, assigned in the write
/// transaction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub seq: i64,
    pub kind: String,
    pub actor: String,
    pub tenant: String,
    pub at_ms: i64,
    pub payload: serde_json::Value,
}
