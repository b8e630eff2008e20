//! Metric observations derived from events. Each event kind registers a [`MetricSource`] (with
//! `inventory`), so new kinds (feedback, reviews) plug in without editing a central list.

use keel_core::StoredEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What monitors and KPIs group by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Segment {
    pub tenant: String,
    pub locale: String,
    pub jurisdiction: String,
    pub policy_version: String,
    /// `metadata.topic` (`-` when absent).
    #[serde(default = "dash")]
    pub topic: String,
    /// The policy rule category, for per-category streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

fn dash() -> String {
    "-".to_string()
}

impl Segment {
    /// The segment of an interaction-like payload (missing keys become `-`).
    pub fn of(tenant: &str, context: &Value, policy_version: Option<&str>) -> Self {
        let get = |k: &str| context[k].as_str().unwrap_or("-").to_string();
        Segment {
            tenant: tenant.to_string(),
            locale: get("locale"),
            jurisdiction: get("jurisdiction"),
            policy_version: policy_version.unwrap_or("-").to_string(),
            topic: get("topic"),
            category: None,
        }
    }

    /// `tenant=…,locale=…,jurisdiction=…,policy=…,topic=…[,category=…]`
    pub fn key(&self) -> String {
        let mut k = format!(
            "tenant={},locale={},jurisdiction={},policy={},topic={}",
            self.tenant, self.locale, self.jurisdiction, self.policy_version, self.topic
        );
        if let Some(c) = &self.category {
            k.push_str(",category=");
            k.push_str(c);
        }
        k
    }
}

/// One value of one metric in one segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub metric: &'static str,
    pub segment: Segment,
    pub value: f64,
    /// The interaction this value came from (evidence for alerts).
    pub interaction_id: Option<String>,
}

/// Derives observations from events of one kind.
pub struct MetricSource {
    pub kind: &'static str,
    pub extract: fn(&StoredEvent) -> Vec<Observation>,
}

inventory::collect!(MetricSource);

/// Every observation `event` yields, from every registered source for its kind.
pub fn observations(event: &StoredEvent) -> Vec<Observation> {
    inventory::iter::<MetricSource>
        .into_iter()
        .filter(|s| s.kind == event.kind)
        .flat_map(|s| (s.extract)(event))
        .collect()
}

/// Phrases that mark a refusal (English and Japanese; keyword-level, documented as such).
const REFUSALS: &[&str] = &[
    "i can't help",
    "i cannot help",
    "i can't assist",
    "i cannot assist",
    "i'm unable to",
    "i am unable to",
    "i won't be able to",
    "お答えできません",
    "お手伝いできません",
];

fn is_refusal(text: &str) -> bool {
    let lower = text.to_lowercase();
    REFUSALS.iter().any(|r| lower.contains(r))
}

fn interaction(ev: &StoredEvent) -> Vec<Observation> {
    let p = &ev.payload;
    if !p.is_object() {
        return Vec::new(); // erased
    }
    let decision = p["decision"]["action"].as_str();
    let segment = Segment::of(&ev.tenant, &p["context"], p["policy_version"].as_str());
    let id = p["id"].as_str().map(str::to_string);
    let outcome = p["outcome"].as_str().unwrap_or("");
    let mut out = Vec::with_capacity(6);
    let mut push = |metric: &'static str, value: f64| {
        out.push(Observation {
            metric,
            segment: segment.clone(),
            value,
            interaction_id: id.clone(),
        })
    };
    if outcome == "client_cancelled" {
        return out;
    }
    let upstream_failed = matches!(outcome, "upstream_error" | "upstream_timeout");
    push("upstream_error_rate", f64::from(u8::from(upstream_failed)));
    if !upstream_failed {
        if let Some(ms) = p["latency_ms"].as_f64() {
            push("latency_ms", ms);
        }
        let texts = p["response_text"].as_array();
        let refused = texts
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(is_refusal);
        push("refusal_rate", f64::from(u8::from(refused)));
    }
    for (metric, action) in [
        ("block_rate", "block"),
        ("escalate_rate", "escalate"),
        ("redact_rate", "redact"),
    ] {
        push(metric, f64::from(u8::from(decision == Some(action))));
    }
    out
}

inventory::submit! { MetricSource { kind: keel_core::EventKind::INTERACTION_RECORDED, extract: interaction } }

fn feedback(ev: &StoredEvent) -> Vec<Observation> {
    let p = &ev.payload;
    let segment = Segment::of(&ev.tenant, &p["context"], p["policy_version"].as_str());
    let id = p["interaction_id"].as_str().map(str::to_string);
    let mut out = Vec::new();
    let mut push = |metric: &'static str, value: f64| {
        out.push(Observation {
            metric,
            segment: segment.clone(),
            value,
            interaction_id: id.clone(),
        })
    };
    if let Some(w) = p["wrong_answer"].as_bool() {
        push("wrong_answer_rate", f64::from(u8::from(w)));
    }
    if let Some(t) = p["thumbs"].as_str() {
        push("thumbs_down_rate", f64::from(u8::from(t == "down")));
    }
    if let Some(c) = p["csat"].as_f64() {
        push("csat", c);
    }
    out
}

/// Learned-monitor scores recorded with an interaction (`decision.learned`, only labels whose
/// score was available) become Bernoulli streams: 1 when the score is above 0.5. A rising
/// `learned_outdated_share` means more replies look like ones reviewers called outdated.
pub const LEARNED_METRICS: [(&str, &str); 3] = [
    ("outdated", "learned_outdated_share"),
    ("violation", "learned_violation_share"),
    ("wrong_answer", "learned_wrong_answer_share"),
];

fn learned(ev: &StoredEvent) -> Vec<Observation> {
    let p = &ev.payload;
    let scores = &p["decision"]["learned"];
    if !scores.is_object() || p["outcome"].as_str() == Some("client_cancelled") {
        return Vec::new();
    }
    let segment = Segment::of(&ev.tenant, &p["context"], p["policy_version"].as_str());
    let id = p["id"].as_str().map(str::to_string);
    LEARNED_METRICS
        .iter()
        .filter_map(|(label, metric)| {
            let s = scores[*label].as_f64()?;
            Some(Observation {
                metric,
                segment: segment.clone(),
                value: f64::from(u8::from(s > 0.5)),
                interaction_id: id.clone(),
            })
        })
        .collect()
}

inventory::submit! { MetricSource { kind: keel_core::EventKind::INTERACTION_RECORDED, extract: learned } }

// Feedback events arrive with the review issue; their metrics are ready for them.
inventory::submit! { MetricSource { kind: keel_core::EventKind::FEEDBACK_RECEIVED, extract: feedback } }

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(kind: &str, payload: Value) -> StoredEvent {
        StoredEvent {
            seq: 1,
            kind: kind.into(),
            actor: "a".into(),
            tenant: "acme".into(),
            at_ms: 0,
            payload,
        }
    }

    fn check(event: StoredEvent, expected: &[(&str, f64)]) {
        let got: Vec<(&str, f64)> = observations(&event)
            .iter()
            .map(|o| (o.metric, o.value))
            .collect();
        assert_eq!(got, expected, "{event:?}");
    }

    #[test]
    fn interaction_metrics() {
        check(
            ev(
                "InteractionRecorded",
                json!({"id": "ix_1", "outcome": "ok", "latency_ms": 12, "response_text": ["Sure."], "context": {"locale": "en"}}),
            ),
            &[
                ("upstream_error_rate", 0.0),
                ("latency_ms", 12.0),
                ("refusal_rate", 0.0),
                ("block_rate", 0.0),
                ("escalate_rate", 0.0),
                ("redact_rate", 0.0),
            ],
        );
        check(
            ev(
                "InteractionRecorded",
                json!({"id": "ix_2", "outcome": "upstream_error", "context": {}}),
            ),
            &[
                ("upstream_error_rate", 1.0),
                ("block_rate", 0.0),
                ("escalate_rate", 0.0),
                ("redact_rate", 0.0),
            ],
        );
        check(
            ev(
                "InteractionRecorded",
                json!({"id": "ix_3", "outcome": "ok", "latency_ms": 1, "response_text": ["I'm unable to do that"], "decision": {"action": "block"}, "context": {}}),
            ),
            &[
                ("upstream_error_rate", 0.0),
                ("latency_ms", 1.0),
                ("refusal_rate", 1.0),
                ("block_rate", 1.0),
                ("escalate_rate", 0.0),
                ("redact_rate", 0.0),
            ],
        );
        check(
            ev(
                "InteractionRecorded",
                json!({"outcome": "client_cancelled", "context": {}}),
            ),
            &[],
        );
        check(ev("InteractionRecorded", Value::Null), &[]);
        check(ev("KeyCreated", json!({})), &[]);
        check(
            ev(
                "FeedbackReceived",
                json!({"wrong_answer": true, "thumbs": "down", "csat": 2, "context": {}}),
            ),
            &[
                ("wrong_answer_rate", 1.0),
                ("thumbs_down_rate", 1.0),
                ("csat", 2.0),
            ],
        );
    }

    #[test]
    fn learned_share_metrics() {
        let learned = |payload: Value| -> Vec<(&'static str, f64)> {
            observations(&ev("InteractionRecorded", payload))
                .into_iter()
                .filter(|o| o.metric.starts_with("learned_"))
                .map(|o| (o.metric, o.value))
                .collect()
        };
        assert_eq!(
            learned(json!({"outcome": "ok", "context": {},
                "decision": {"action": "allow", "learned": {"outdated": 0.91, "violation": 0.2, "violation.pii": 0.9}}})),
            [
                ("learned_outdated_share", 1.0),
                ("learned_violation_share", 0.0)
            ]
        );
        assert!(
            learned(json!({"outcome": "ok", "context": {}, "decision": {"action": "allow"}}))
                .is_empty()
        );
        assert!(learned(json!({"outcome": "client_cancelled", "context": {},
            "decision": {"learned": {"outdated": 0.9}}}))
        .is_empty());
    }

    #[test]
    fn segment_keys() {
        let s = Segment::of("acme", &json!({"locale": "ja-JP"}), None);
        assert_eq!(
            s.key(),
            "tenant=acme,locale=ja-JP,jurisdiction=-,policy=-,topic=-"
        );
    }
}
