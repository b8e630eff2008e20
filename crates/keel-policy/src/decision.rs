//! The outcome of an evaluation: the action taken, with its explanation (rules that fired,
//! matched spans, signals) and the transformed texts. Serialisable for the interaction event.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bundle::Severity;
use crate::input::Phase;

/// A decision's action, as in `x-keel-decision`.
///
/// Precedence (strongest first): `block` > `escalate` > `route` > `rewrite` = `redact` = `correct` >
/// `append` > `allow`; between rules of equal strength the earlier rule in the bundle wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Allow,
    Block,
    Redact,
    Rewrite,
    Append,
    Escalate,
    Route,
    /// Stale fact values replaced with the values in force.
    Correct,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Allow => "allow",
            ActionKind::Block => "block",
            ActionKind::Redact => "redact",
            ActionKind::Rewrite => "rewrite",
            ActionKind::Append => "append",
            ActionKind::Escalate => "escalate",
            ActionKind::Route => "route",
            ActionKind::Correct => "correct",
        }
    }

    /// Strength in the precedence order (higher wins).
    pub fn rank(self) -> u8 {
        match self {
            ActionKind::Allow => 0,
            ActionKind::Append => 1,
            ActionKind::Redact | ActionKind::Rewrite | ActionKind::Correct => 2,
            ActionKind::Route => 3,
            ActionKind::Escalate => 4,
            ActionKind::Block => 5,
        }
    }

    /// Whether the text is withheld and replaced by the rule's message.
    pub fn is_blocking(self) -> bool {
        matches!(self, ActionKind::Block | ActionKind::Escalate)
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHit {
    pub id: String,
    pub category: String,
    pub severity: Severity,
    pub action: ActionKind,
}

/// A detector finding: segment, byte span of the original text, detector and label. The
/// matched text itself is not kept (it may be personal data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchedSpan {
    pub segment: usize,
    pub location: String,
    pub start: usize,
    pub end: usize,
    pub detector: String,
    pub label: String,
}

/// What one detector found over the phase's texts: how many findings, by label (the PII kind,
/// the lexicon term as written in the bundle, the pattern name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SignalSummary {
    pub count: usize,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, usize>,
}

/// The new text of a segment that a redaction, rewrite or appended notice changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransformedText {
    pub segment: usize,
    pub location: String,
    pub text: String,
}

/// A rule whose condition failed at run time (it did not fire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleError {
    pub rule: String,
    pub message: String,
}

/// The result of [`Policy::evaluate`](crate::Policy::evaluate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub phase: Phase,
    /// The version id of the policy that decided.
    pub policy_version: String,
    /// The strongest action among the rules that fired (`allow` if none did).
    pub action: ActionKind,
    /// The rule whose action is `action` (none for a plain allow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deciding_rule: Option<String>,
    /// Every rule that fired, in bundle order.
    pub rules: Vec<RuleHit>,
    /// For block and escalate: the text to answer with instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For escalate: how urgent the review is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_severity: Option<Severity>,
    /// For route: the upstream to send the request to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Detector findings (at most [`MAX_SPANS`]).
    pub spans: Vec<MatchedSpan>,
    /// Findings per detector id.
    pub signals: BTreeMap<String, SignalSummary>,
    /// New texts of the segments that changed (empty for block and escalate).
    pub transformed: Vec<TransformedText>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RuleError>,
    /// Fact statements checked (at most [`MAX_SPANS`]): key, stated and current value, status,
    /// and whether a `correct` rule replaced the value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facts: Vec<FactCheck>,
}

/// One fact statement checked in a segment, for the explanation of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactCheck {
    pub segment: usize,
    pub location: String,
    #[serde(flatten)]
    pub finding: crate::detect::FactFinding,
    /// A `correct` rule replaced the stated value.
    #[serde(default)]
    pub corrected: bool,
}

/// Most spans a decision records.
pub const MAX_SPANS: usize = 256;

impl Decision {
    /// The value of the `x-keel-decision` header: `allow|block|redact|rewrite|append|escalate|route`.
    pub fn summary(&self) -> &'static str {
        self.action.as_str()
    }

    /// Whether the text is withheld (block or escalate): answer with [`Decision::message`] and
    /// `finish_reason: "content_filter"`.
    pub fn is_blocking(&self) -> bool {
        self.action.is_blocking()
    }

    /// The transformed text of segment `segment`, if it changed.
    pub fn text_for(&self, segment: usize) -> Option<&str> {
        self.transformed
            .iter()
            .find(|t| t.segment == segment)
            .map(|t| t.text.as_str())
    }

    /// Whether rule `id` fired.
    pub fn fired(&self, id: &str) -> bool {
        self.rules.iter().any(|r| r.id == id)
    }
}
