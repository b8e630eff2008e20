//! Events: the one way state changes. A kind, an actor, a tenant, a time and a JSON payload.

use serde::{Deserialize, Serialize};

/// The catalogue of event kinds: every kind any crate appends or reads is named here, once.
/// Kinds are stored as these strings (old databases keep reading); code refers to the
/// constants, never to a string literal. ARCHITECTURE.md's event catalogue table lists who
/// appends each kind and which projections and workers read it (`cargo xtask tidy` checks
/// that every kind in [`EventKind::ALL`] is in that table).
pub struct EventKind;

impl EventKind {
    pub const INTERACTION_RECORDED: &'static str = "InteractionRecorded";
    pub const KEY_CREATED: &'static str = "KeyCreated";
    pub const KEY_REVOKED: &'static str = "KeyRevoked";
    pub const POLICY_PUBLISHED: &'static str = "PolicyPublished";
    pub const POLICY_ACTIVATED: &'static str = "PolicyActivated";
    pub const ROLLOUT_CHANGED: &'static str = "RolloutChanged";
    pub const FACT_SET: &'static str = "FactSet";
    pub const FEEDBACK_RECEIVED: &'static str = "FeedbackReceived";
    pub const HANDOFF_RECORDED: &'static str = "HandoffRecorded";
    pub const REVIEW_SAMPLED: &'static str = "ReviewSampled";
    pub const REVIEW_CLAIMED: &'static str = "ReviewClaimed";
    pub const REVIEW_COMPLETED: &'static str = "ReviewCompleted";
    pub const DATASET_EXPORTED: &'static str = "DatasetExported";
    pub const ALERT_RAISED: &'static str = "AlertRaised";
    pub const PROPOSAL_CREATED: &'static str = "ProposalCreated";
    pub const PROPOSAL_DECIDED: &'static str = "ProposalDecided";
    pub const PAYLOAD_ERASED: &'static str = "PayloadErased";
    pub const JUDGE_VERDICT: &'static str = "JudgeVerdict";

    /// Every kind, in the order of ARCHITECTURE.md's table.
    pub const ALL: [&'static str; 18] = [
        Self::INTERACTION_RECORDED,
        Self::KEY_CREATED,
        Self::KEY_REVOKED,
        Self::POLICY_PUBLISHED,
        Self::POLICY_ACTIVATED,
        Self::ROLLOUT_CHANGED,
        Self::FACT_SET,
        Self::FEEDBACK_RECEIVED,
        Self::HANDOFF_RECORDED,
        Self::REVIEW_SAMPLED,
        Self::REVIEW_CLAIMED,
        Self::REVIEW_COMPLETED,
        Self::DATASET_EXPORTED,
        Self::ALERT_RAISED,
        Self::PROPOSAL_CREATED,
        Self::PROPOSAL_DECIDED,
        Self::PAYLOAD_ERASED,
        Self::JUDGE_VERDICT,
    ];
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
