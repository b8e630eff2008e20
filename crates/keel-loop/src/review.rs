//! Review: the human-in-the-loop stage. Validation of feedback, handoffs and review labels, the
//! audit-sample decision, lease rules, reviewer agreement; KPIs in [`kpi`], datasets in
//! [`dataset`]. Pure: no IO, time is passed in.

pub mod dataset;
pub mod kpi;
pub mod view;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Event kinds this stage appends.
pub mod kinds {
    pub const FEEDBACK: &str = keel_core::EventKind::FEEDBACK_RECEIVED;
    pub const HANDOFF: &str = keel_core::EventKind::HANDOFF_RECORDED;
    pub const SAMPLED: &str = keel_core::EventKind::REVIEW_SAMPLED;
    pub const CLAIMED: &str = keel_core::EventKind::REVIEW_CLAIMED;
    pub const COMPLETED: &str = keel_core::EventKind::REVIEW_COMPLETED;
    pub const EXPORTED: &str = keel_core::EventKind::DATASET_EXPORTED;
}

/// Where a review item came from.
pub const SOURCES: [&str; 5] = [
    "escalation",
    "alert",
    "user_report",
    "audit_sample",
    "judge",
];

/// Item severities, weakest first; the queue serves the strongest first, then the oldest.
pub const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];

/// A severity's rank (1..=4; unknown = medium).
pub fn severity_rank(s: &str) -> i64 {
    SEVERITIES
        .iter()
        .position(|x| *x == s)
        .map(|i| i as i64 + 1)
        .unwrap_or(2)
}

/// Whether an interaction falls in the audit sample at `rate` (0..=1). Deterministic in the
/// id (FNV-1a, 64 bit), so the decision can be recomputed from the log.
pub fn sampled(interaction_id: &str, rate: f64) -> bool {
    if rate.is_nan() || rate <= 0.0 {
        return false;
    }
    if rate >= 1.0 {
        return true;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in interaction_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Use the top 53 bits as a uniform number in [0, 1).
    let u = (h >> 11) as f64 / (1u64 << 53) as f64;
    u < rate
}

/// A problem with client input: which field and why (becomes a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid '{field}': {message}")]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

const MAX_TEXT: usize = 32 * 1024;

fn opt_text(v: &Value, field: &'static str) -> Result<Option<String>, Invalid> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_TEXT => {
            Err(invalid(field, format!("at most {MAX_TEXT} bytes")))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(field, "expected a string")),
    }
}

fn check_keys(v: &Value, allowed: &[&str]) -> Result<(), Invalid> {
    let Some(obj) = v.as_object() else {
        return Err(invalid("body", "expected a JSON object"));
    };
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(Invalid {
                field: "body",
                message: format!("unknown field `{k}`"),
            });
        }
    }
    Ok(())
}

/// A validated `POST /v1/feedback` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feedback {
    pub interaction_id: Option<String>,
    pub conversation_id: Option<String>,
    pub csat: Option<u8>,
    pub thumbs: Option<String>,
    pub wrong_answer: Option<bool>,
    pub correct_answer: Option<String>,
    pub comment: Option<String>,
    pub category: Option<String>,
}

impl Feedback {
    /// Validates a feedback body: an `interaction_id` or a `conversation_id`, and at least one
    /// signal (`csat` 1–5, `thumbs` up|down, `wrong_answer`, `correct_answer`, `comment`).
    pub fn parse(v: &Value) -> Result<Self, Invalid> {
        check_keys(
            v,
            &[
                "interaction_id",
                "conversation_id",
                "csat",
                "thumbs",
                "wrong_answer",
                "correct_answer",
                "comment",
                "category",
            ],
        )?;
        let interaction_id = opt_text(v, "interaction_id")?;
        let conversation_id = opt_text(v, "conversation_id")?;
        if interaction_id.is_none() && conversation_id.is_none() {
            return Err(invalid(
                "interaction_id",
                "give an interaction_id or a conversation_id",
            ));
        }
        let csat = match v.get("csat") {
            None | Some(Value::Null) => None,
            Some(x) => Some(
                x.as_u64()
                    .filter(|n| (1..=5).contains(n))
                    .map(|n| n as u8)
                    .ok_or_else(|| invalid("csat", "expected an integer from 1 to 5"))?,
            ),
        };
        let thumbs = opt_text(v, "thumbs")?;
        if let Some(t) = &thumbs {
            if t != "up" && t != "down" {
                return Err(invalid("thumbs", "expected `up` or `down`"));
            }
        }
        let wrong_answer = match v.get("wrong_answer") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(invalid("wrong_answer", "expected true or false")),
        };
        let category = opt_text(v, "category")?;
        if category
            .as_ref()
            .is_some_and(|c| c.is_empty() || c.len() > 64)
        {
            return Err(invalid("category", "expected 1 to 64 characters"));
        }
        let f = Feedback {
            interaction_id,
            conversation_id,
            csat,
            thumbs,
            wrong_answer,
            correct_answer: opt_text(v, "correct_answer")?,
            comment: opt_text(v, "comment")?,
            category,
        };
        if f.csat.is_none()
            && f.thumbs.is_none()
            && f.wrong_answer.is_none()
            && f.correct_answer.is_none()
            && f.comment.is_none()
        {
            return Err(invalid(
                "body",
                "give at least one of csat, thumbs, wrong_answer, correct_answer, comment",
            ));
        }
        Ok(f)
    }

    /// Whether this report puts the interaction in the review queue.
    pub fn is_report(&self) -> bool {
        self.wrong_answer == Some(true) || self.thumbs.as_deref() == Some("down")
    }
}

/// Handoff events, in the order they normally happen.
pub const HANDOFF_EVENTS: [&str; 3] = ["requested", "human_joined", "resolved"];

/// A validated `POST /v1/handoffs` body (`at` already resolved to Unix ms, if given).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Handoff {
    pub conversation_id: String,
    pub event: String,
    pub at_ms: Option<i64>,
}

impl Handoff {
    /// Validates a handoff body; `at` is an RFC 3339 time or Unix milliseconds.
    pub fn parse(v: &Value) -> Result<Self, Invalid> {
        check_keys(v, &["conversation_id", "event", "at"])?;
        let conversation_id = opt_text(v, "conversation_id")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid("conversation_id", "required"))?;
        let event = opt_text(v, "event")?.ok_or_else(|| invalid("event", "required"))?;
        if !HANDOFF_EVENTS.contains(&event.as_str()) {
            return Err(invalid(
                "event",
                "expected requested, human_joined or resolved",
            ));
        }
        let at_ms = match v.get("at") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_i64()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| invalid("at", "expected Unix milliseconds or RFC 3339"))?,
            ),
            Some(Value::String(s)) => Some(
                chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|_| invalid("at", "expected an RFC 3339 time"))?
                    .timestamp_millis(),
            ),
            Some(_) => return Err(invalid("at", "expected Unix milliseconds or RFC 3339")),
        };
        Ok(Handoff {
            conversation_id,
            event,
            at_ms,
        })
    }
}

/// Reviewer verdicts.
pub const VERDICTS: [&str; 4] = ["ok", "violation", "wrong_answer", "outdated"];

/// A structured suggestion the update pipeline can act on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suggestion {
    pub kind: SuggestionKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<SuggestionScope>,
}

/// What a suggestion asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuggestionKind {
    Rewrite,
    LexiconTerm,
    FactUpdate,
    Escalate,
}

/// Where a suggestion applies (empty = everywhere).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuggestionScope {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locales: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jurisdictions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

/// A validated review label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Label {
    pub verdict: String,
    pub category: Option<String>,
    pub corrected_response: Option<String>,
    pub notes: Option<String>,
    pub suggestion: Option<Suggestion>,
}

impl Label {
    /// Validates `{verdict, category?, corrected_response?, notes?, suggestion?}`. A
    /// `violation` needs its `category`; `verdict` may also be `{"violation": {"category": …}}`.
    pub fn parse(v: &Value) -> Result<Self, Invalid> {
        check_keys(
            v,
            &[
                "verdict",
                "category",
                "corrected_response",
                "notes",
                "suggestion",
            ],
        )?;
        let mut category = opt_text(v, "category")?;
        let verdict = match v.get("verdict") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Object(o)) if o.len() == 1 && o.contains_key("violation") => {
                let c = o["violation"]["category"]
                    .as_str()
                    .ok_or_else(|| invalid("verdict", "violation needs {category}"))?;
                category = Some(c.to_string());
                "violation".to_string()
            }
            None | Some(Value::Null) => return Err(invalid("verdict", "required")),
            Some(_) => return Err(invalid("verdict", "expected a string")),
        };
        if !VERDICTS.contains(&verdict.as_str()) {
            return Err(invalid(
                "verdict",
                "expected ok, violation, wrong_answer or outdated",
            ));
        }
        if verdict == "violation" {
            if category
                .as_ref()
                .is_none_or(|c| c.is_empty() || c.len() > 64)
            {
                return Err(invalid(
                    "category",
                    "a violation needs a category (1 to 64 characters)",
                ));
            }
        } else if category.is_some() {
            return Err(invalid("category", "only a violation has a category"));
        }
        let suggestion = match v.get("suggestion") {
            None | Some(Value::Null) => None,
            Some(s) => Some(
                serde_json::from_value::<Suggestion>(s.clone())
                    .map_err(|e| invalid("suggestion", e.to_string()))?,
            ),
        };
        Ok(Label {
            verdict,
            category,
            corrected_response: opt_text(v, "corrected_response")?,
            notes: opt_text(v, "notes")?,
            suggestion,
        })
    }
}

/// A review item's claim state, as the lease rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimState<'a> {
    pub status: &'a str,
    pub claimed_by: Option<&'a str>,
    pub lease_until_ms: Option<i64>,
}

impl ClaimState<'_> {
    /// The status a reader sees at `now`: a claim whose lease ran out is `open` again.
    pub fn effective_status(&self, now_ms: i64) -> &'static str {
        match self.status {
            "done" => "done",
            "claimed" if self.lease_until_ms.is_some_and(|l| l > now_ms) => "claimed",
            _ => "open",
        }
    }

    /// Whether `actor` may claim at `now` (open, expired, or already theirs).
    pub fn claimable_by(&self, actor: &str, now_ms: i64) -> bool {
        match self.effective_status(now_ms) {
            "open" => true,
            "claimed" => self.claimed_by == Some(actor),
            _ => false,
        }
    }

    /// Whether `actor` holds a live claim at `now` (needed to label).
    pub fn held_by(&self, actor: &str, now_ms: i64) -> bool {
        self.effective_status(now_ms) == "claimed" && self.claimed_by == Some(actor)
    }
}

/// Percent agreement: over items with at least two labels, the share of reviewer pairs that
/// gave the same verdict (and category), averaged over items. `None` without such items.
pub fn percent_agreement<'a>(items: impl IntoIterator<Item = Vec<&'a str>>) -> Option<f64> {
    let mut sum = 0.0;
    let mut n = 0usize;
    for verdicts in items {
        if verdicts.len() < 2 {
            continue;
        }
        let mut pairs = 0usize;
        let mut same = 0usize;
        for i in 0..verdicts.len() {
            for j in (i + 1)..verdicts.len() {
                pairs += 1;
                if verdicts[i] == verdicts[j] {
                    same += 1;
                }
            }
        }
        sum += same as f64 / pairs as f64;
        n += 1;
    }
    (n > 0).then(|| sum / n as f64)
}

/// The part of an interaction's context that feedback, handoffs and labels carry: what KPIs,
/// monitors and export filters group by. The end user's id stays in the interaction only, so
/// erasing by user does not leave copies behind.
pub fn segment_context(context: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in [
        "tenant",
        "conversation_id",
        "locale",
        "jurisdiction",
        "topic",
    ] {
        if let Some(v) = context.get(k).filter(|v| !v.is_null()) {
            out.insert(k.to_string(), v.clone());
        }
    }
    Value::Object(out)
}

/// The review item an action is about.
#[derive(Debug, Clone, Copy)]
pub struct ItemRef<'a> {
    pub id: &'a str,
    pub interaction_id: &'a str,
    pub tenant: &'a str,
    pub source: &'a str,
}

/// The `ReviewClaimed` event: `actor` holds the item until `now_ms + lease_ms`.
pub fn claim_event(
    item: ItemRef<'_>,
    actor: &str,
    reviewer: &str,
    now_ms: i64,
    lease_ms: i64,
) -> keel_core::NewEvent {
    keel_core::NewEvent {
        kind: kinds::CLAIMED.to_string(),
        actor: actor.to_string(),
        tenant: item.tenant.to_string(),
        at_ms: now_ms,
        payload: json!({
            "item_id": item.id,
            "interaction_id": item.interaction_id,
            "reviewer": reviewer,
            "lease_until_ms": now_ms.saturating_add(lease_ms),
        }),
    }
}

/// The `ReviewCompleted` event: the label, with the interaction's segment (for KPIs and
/// export filters) and how many labels the item needs (`required`).
pub fn label_event(
    item: ItemRef<'_>,
    actor: &str,
    reviewer: &str,
    label: &Label,
    required: u32,
    interaction: &Value,
    now_ms: i64,
) -> keel_core::NewEvent {
    keel_core::NewEvent {
        kind: kinds::COMPLETED.to_string(),
        actor: actor.to_string(),
        tenant: item.tenant.to_string(),
        at_ms: now_ms,
        payload: json!({
            "item_id": item.id,
            "interaction_id": item.interaction_id,
            "source": item.source,
            "reviewer": reviewer,
            "verdict": label.verdict,
            "category": label.category,
            "corrected_response": label.corrected_response,
            "notes": label.notes,
            "suggestion": label.suggestion,
            "required": required,
            "context": segment_context(&interaction["context"]),
            "policy_version": interaction["policy_version"],
        }),
    }
}

/// The `FeedbackReceived` payload: the validated body plus what the monitors group by.
pub fn feedback_payload(
    id: &str,
    f: &Feedback,
    interaction_id: &str,
    conversation_id: Option<&str>,
    interaction: &Value,
    idempotency_key: Option<&str>,
) -> Value {
    json!({
        "id": id,
        "interaction_id": interaction_id,
        "conversation_id": conversation_id,
        "csat": f.csat,
        "thumbs": f.thumbs,
        "wrong_answer": f.wrong_answer,
        "correct_answer": f.correct_answer,
        "comment": f.comment,
        "category": f.category,
        "report": f.is_report(),
        "severity": if f.wrong_answer == Some(true) { "high" } else { "medium" },
        "context": segment_context(&interaction["context"]),
        "policy_version": interaction["policy_version"],
        "answer_cluster": interaction["answer_cluster"],
        "idempotency_key": idempotency_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_deterministic_and_near_the_rate() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("ix_{i:08}")).collect();
        let n = ids.iter().filter(|id| sampled(id, 0.01)).count();
        assert!((120..=280).contains(&n), "{n}");
        // The decision is FNV-1a 64 of the id, top 53 bits as u in [0, 1): published FNV-1a
        // vectors give "a" = 0xaf63dc4c8601ec8c (u = 0.68512) and "foobar" =
        // 0x85944171f73967e8 (u = 0.52179), so each is sampled exactly at rates above its u.
        for (id, u) in [("a", 0.685_117_500_956), ("foobar", 0.521_793_451_618)] {
            assert!(sampled(id, u + 1e-9), "{id} at {}", u + 1e-9);
            assert!(!sampled(id, u - 1e-9), "{id} at {}", u - 1e-9);
        }
        assert!(!sampled("ix_1", 0.0));
        assert!(sampled("ix_1", 1.0));
        assert!(!sampled("ix_1", f64::NAN));
    }

    #[test]
    fn feedback_validation() {
        let ok = Feedback::parse(&json!({"interaction_id": "ix_1", "csat": 5, "thumbs": "down"}))
            .unwrap();
        assert!(ok.is_report());
        for bad in [
            json!({"csat": 3}),
            json!({"interaction_id": "x", "csat": 0}),
            json!({"interaction_id": "x", "csat": 6}),
            json!({"interaction_id": "x", "csat": 2.5}),
            json!({"interaction_id": "x", "thumbs": "sideways"}),
            json!({"interaction_id": "x", "wrong_answer": "yes"}),
            json!({"interaction_id": "x"}),
            json!({"interaction_id": "x", "csat": 3, "extra": 1}),
            json!({"interaction_id": 5, "csat": 3}),
            json!([1]),
        ] {
            assert!(Feedback::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn handoff_validation() {
        let h = Handoff::parse(
            &json!({"conversation_id": "c", "event": "requested", "at": "2026-01-01T00:00:00Z"}),
        )
        .unwrap();
        assert_eq!(h.at_ms, Some(1_767_225_600_000));
        assert!(Handoff::parse(&json!({"conversation_id": "c", "event": "later"})).is_err());
        assert!(Handoff::parse(&json!({"event": "requested"})).is_err());
        assert!(Handoff::parse(
            &json!({"conversation_id": "c", "event": "resolved", "at": "soon"})
        )
        .is_err());
    }

    #[test]
    fn label_validation() {
        let l = Label::parse(&json!({"verdict": {"violation": {"category": "S7"}}, "corrected_response": "x",
            "suggestion": {"kind": "fact_update", "fact": "tax_rate", "value": 0.1, "effective_from": "2026-04-01",
                           "scope": {"jurisdictions": ["JP"]}}})).unwrap();
        assert_eq!(l.category.as_deref(), Some("S7"));
        assert_eq!(l.suggestion.unwrap().kind, SuggestionKind::FactUpdate);
        for bad in [
            json!({"verdict": "violation"}),
            json!({"verdict": "great"}),
            json!({"verdict": "ok", "category": "S1"}),
            json!({"verdict": "ok", "suggestion": {"kind": "teleport"}}),
            json!({"verdict": "ok", "suggestion": {"kind": "rewrite", "color": "red"}}),
            json!({}),
        ] {
            assert!(Label::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn leases_expire() {
        let c = ClaimState {
            status: "claimed",
            claimed_by: Some("rita"),
            lease_until_ms: Some(1_000),
        };
        assert_eq!(c.effective_status(999), "claimed");
        assert!(c.held_by("rita", 999));
        assert!(!c.claimable_by("bob", 999));
        assert_eq!(c.effective_status(1_000), "open");
        assert!(c.claimable_by("bob", 1_000));
        assert!(!c.held_by("rita", 1_000));
    }

    #[test]
    fn copies_of_the_context_leave_the_user_out() {
        let c = segment_context(
            &json!({"tenant": "acme", "user": "u-1", "locale": "ja-JP", "topic": null}),
        );
        assert_eq!(c, json!({"tenant": "acme", "locale": "ja-JP"}));
    }

    #[test]
    fn agreement() {
        assert_eq!(percent_agreement(vec![vec!["ok"]]), None);
        let a = percent_agreement(vec![vec!["ok", "ok"], vec!["ok", "wrong_answer"]]).unwrap();
        assert!((a - 0.5).abs() < 1e-12);
        let b = percent_agreement(vec![vec!["ok", "ok", "wrong_answer"]]).unwrap();
        assert!((b - 1.0 / 3.0).abs() < 1e-12);
    }
}
