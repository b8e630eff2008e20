//! What a reviewer sees of one item: the users' reports on the interaction (comment, correct
//! answer, CSAT, thumbs, category), the conversation sent, the reply served and what the model
//! said before the policy changed it, the decision with its rules, spans and facts checks.
//! Shared by `GET /api/reviews/{id}` and `keel review show`.

use serde_json::{json, Value};

/// One `FeedbackReceived` payload as the reviewer needs it (`at` is when it was received).
pub fn report(payload: &Value, at: &str) -> Value {
    json!({
        "id": payload["id"],
        "received_at": at,
        "report": payload["report"],
        "comment": payload["comment"],
        "correct_answer": payload["correct_answer"],
        "csat": payload["csat"],
        "thumbs": payload["thumbs"],
        "wrong_answer": payload["wrong_answer"],
        "category": payload["category"],
        "severity": payload["severity"],
    })
}

/// The feedback payloads (with their receive times) that concern `interaction_id`, shaped by
/// [`report`], in the order given.
pub fn reports_for<'a>(
    interaction_id: &str,
    feedback: impl IntoIterator<Item = (&'a Value, String)>,
) -> Vec<Value> {
    feedback
        .into_iter()
        .filter(|(p, _)| p["interaction_id"].as_str() == Some(interaction_id))
        .map(|(p, at)| report(p, &at))
        .collect()
}

/// The interaction as a reviewer judges it (`null` when erased): the conversation, the reply
/// served and the upstream's own text when the policy changed it, the decision (input and
/// output phases with rules, spans, signals and facts checks), context and policy version.
pub fn interaction(id: &str, record: &Value) -> Value {
    if record.is_null() {
        return Value::Null;
    }
    let decision = &record["decision"];
    let facts: Vec<Value> = decision["output"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["facts"].as_array().cloned().unwrap_or_default())
        .collect();
    json!({
        "id": id,
        "request_messages": record["request_messages"],
        "response_text": record["response_text"],
        "upstream_text": record["upstream_text"],
        "decision": decision["action"],
        "decision_detail": {"input": decision["input"], "output": decision["output"]},
        "facts": facts,
        "context": record["context"],
        "policy_version": record["policy_version"],
        "outcome": record["outcome"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(feedback: &[Value], expected: &[(&str, Value)]) {
        let items = feedback
            .iter()
            .map(|p| (p, "2026-01-01T00:00:00Z".to_string()));
        let got = reports_for("ix_1", items);
        assert_eq!(got.len(), expected.len(), "{got:?}");
        for (g, (field, want)) in got.iter().zip(expected) {
            assert_eq!(&g[*field], want, "{g}");
        }
    }

    #[test]
    fn review_show_omits_the_reporters_comment_correct_answer_and_csat() {
        let report = json!({"id": "fb_1", "interaction_id": "ix_1", "report": true, "csat": 1,
            "comment": "the tax is 10% now", "correct_answer": "10%", "wrong_answer": true});
        let other = json!({"id": "fb_2", "interaction_id": "ix_2", "comment": "other"});
        check(
            &[report.clone(), other.clone()],
            &[("comment", json!("the tax is 10% now"))],
        );
        check(
            std::slice::from_ref(&report),
            &[("correct_answer", json!("10%"))],
        );
        check(&[report], &[("csat", json!(1))]);
        check(&[other], &[]);
    }

    #[test]
    fn the_interaction_view_keeps_spans_and_facts() {
        let record = json!({"decision": {"action": "correct", "input": {"action": "allow"},
            "output": [{"action": "correct", "spans": [{"start": 1}], "facts": [{"fact": "k"}]}]},
            "response_text": ["x"], "request_messages": [{"role": "user"}]});
        let v = interaction("ix_1", &record);
        assert_eq!(v["decision"], "correct");
        assert_eq!(v["facts"], json!([{"fact": "k"}]));
        assert_eq!(v["decision_detail"]["output"][0]["spans"][0]["start"], 1);
        assert_eq!(interaction("ix_1", &Value::Null), Value::Null);
    }
}
