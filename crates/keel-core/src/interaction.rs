//! The interaction record: everything Keel knows about one chat completion call.

use serde::{Deserialize, Serialize};

use crate::context::RequestContext;

/// How an interaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The upstream answered and the client got the answer.
    Ok,
    /// The upstream answered with an error status, or no upstream could be reached.
    UpstreamError,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The client went away before the answer was complete.
    ClientCancelled,
}

/// Token counts as reported by the upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// The payload of an `InteractionRecorded` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InteractionRecord {
    pub id: String,
    pub context: RequestContext,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    pub stream: bool,
    /// The request's `messages` array as the client sent it.
    pub request_messages: serde_json::Value,
    /// The response text per choice, in choice order.
    pub response_text: Vec<String>,
    /// Tool calls the model made, if any (OpenAI's shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub latency_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
    pub outcome: Outcome,
    /// The HTTP status Keel answered (or was answering when the client left).
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Upstream attempts made (retries and fallbacks included).
    pub attempts: u32,
    /// The policy version that decided this interaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// `{id, arm}`: the rollout whose split chose the version (`arm`: `canary` | `baseline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<serde_json::Value>,
    /// The policy decisions: `{action, input, output}` with rule ids, spans and signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<serde_json::Value>,
    /// What the upstream said, when the policy changed it before the client saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_text: Option<Vec<String>>,
    /// 16 hex digits: the MinHash sketch of what the upstream said (first choice), absent for a
    /// reply without text (`keel_learn::fingerprint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_fingerprint: Option<String>,
    /// The answer cluster, a pure function of the fingerprint (`"c"` + 8 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_cluster: Option<String>,
}

impl InteractionRecord {
    /// The `InteractionRecorded` event carrying this record.
    /// `actor` is the calling key's actor name.
    pub fn to_event(&self, actor: &str) -> crate::NewEvent {
        crate::NewEvent {
            kind: crate::EventKind::INTERACTION_RECORDED.to_string(),
            actor: actor.to_string(),
            tenant: self.context.tenant.clone(),
            at_ms: self.finished_ms,
            payload: serde_json::to_value(self).unwrap_or(serde_json::Value::Null),
        }
    }
}
