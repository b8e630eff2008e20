//! Request context: who asked, from where, under which jurisdiction; the segment keys.

use serde::{Deserialize, Serialize};

/// The context Keel reads from OpenAI's `metadata` object plus the tenant from the API key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestContext {
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jurisdiction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

impl RequestContext {
    /// The metadata keys Keel owns and strips before forwarding to an upstream.
    pub const METADATA_KEYS: [&'static str; 5] =
        ["conversation_id", "locale", "jurisdiction", "user", "topic"];
}
