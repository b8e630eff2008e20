//! Learned signals: scores from classifiers trained on reviews (the `keel-learn` crate, wired
//! by the gateway), read by conditions as `signals.learned.<label>`.
//!
//! The policy only sees a [`LearnedScorer`]; without one (or for a label whose score is
//! unavailable because it has too few examples) every base label reads `0.0`, so a rule such as
//! `signals.learned.outdated > 0.8` stays false rather than guessing. Category labels
//! (`violation.<category>`) are read with an index, `signals.learned["violation.pii"]`, and are
//! present only while available (guard with `"violation.pii" in signals.learned`).

/// The reserved `signals.` name (no detector may use it).
pub const LEARNED_ID: &str = "learned";

/// Labels always present in `signals.learned` (0.0 when unavailable).
pub const LEARNED_FIELDS: [&str; 3] = ["outdated", "violation", "wrong_answer"];

/// Scores a text per label; `None` = unavailable. Implementations must be cheap (the request
/// path calls it once per evaluation that reads `signals.learned`) and never panic.
pub trait LearnedScorer: Send + Sync {
    fn scores(&self, text: &str) -> Vec<(String, Option<f64>)>;
}

/// The `signals.learned` entries for `scores`: base labels first (0.0 when missing or
/// unavailable), then available category labels.
pub(crate) fn entries(scores: Vec<(String, Option<f64>)>) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = LEARNED_FIELDS
        .iter()
        .map(|l| (l.to_string(), 0.0))
        .collect();
    for (label, score) in scores {
        let Some(s) = score.filter(|s| s.is_finite()) else {
            continue;
        };
        match out.iter_mut().find(|(l, _)| *l == label) {
            Some(slot) => slot.1 = s,
            None => out.push((label, s)),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{ActionKind, EvalContext, EvalInput, Phase, Policy, StreamGuard};

    /// Scores `outdated` 0.95 when the text mentions "8%", else 0.1; `violation` unavailable;
    /// `violation.pii` 0.9 when it mentions "ssn".
    struct Fake;
    impl LearnedScorer for Fake {
        fn scores(&self, text: &str) -> Vec<(String, Option<f64>)> {
            vec![
                (
                    "outdated".into(),
                    Some(if text.contains("8%") { 0.95 } else { 0.1 }),
                ),
                ("violation".into(), None),
                ("wrong_answer".into(), Some(0.2)),
                (
                    "violation.pii".into(),
                    Some(if text.contains("ssn") { 0.9 } else { 0.0 }),
                ),
            ]
        }
    }

    fn policy(when: &str) -> Result<Policy, String> {
        let yaml = format!(
            "name: t\nowner: t\nrules:\n  - id: learned-rule\n    category: custom:learned\n    phase: output\n    when: '{when}'\n    action:\n      escalate: {{message: \"A person will check this.\", severity: high}}\n"
        );
        Policy::from_files(&[("policy.yaml", yaml)]).map_err(|e| e.to_string())
    }

    fn decide(p: &Policy, reply: &str) -> ActionKind {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let input = EvalInput::new(EvalContext::new("acme", now))
            .user("what is the tax?")
            .with_openai_response(&serde_json::json!({"choices": [{"index": 0,
                "message": {"role": "assistant", "content": reply}}]}));
        p.evaluate(Phase::Output, &input).action
    }

    #[test]
    fn a_rule_escalates_on_the_learned_score() {
        let mut p = policy("signals.learned.outdated > 0.8").unwrap();
        assert!(p.reads_learned(Phase::Output) && !p.reads_learned(Phase::Input));
        // No scorer: every base label reads 0.0.
        assert_eq!(decide(&p, "The tax is 8%."), ActionKind::Allow);
        p.set_learned_scorer(Arc::new(Fake));
        assert_eq!(decide(&p, "The tax is 8%."), ActionKind::Escalate);
        assert_eq!(decide(&p, "The tax is 10%."), ActionKind::Allow);
    }

    #[test]
    fn unavailable_reads_zero_and_categories_by_index() {
        for (when, reply, want) in [
            (
                "signals.learned.violation == 0.0",
                "x",
                ActionKind::Escalate,
            ),
            (
                "signals.learned.wrong_answer > 0.1",
                "x",
                ActionKind::Escalate,
            ),
            (
                "\"violation.pii\" in signals.learned && signals.learned[\"violation.pii\"] > 0.5",
                "my ssn is",
                ActionKind::Escalate,
            ),
            (
                "\"violation.medical\" in signals.learned",
                "x",
                ActionKind::Allow,
            ),
        ] {
            let mut p = policy(when).unwrap();
            p.set_learned_scorer(Arc::new(Fake));
            assert_eq!(decide(&p, reply), want, "{when}");
        }
    }

    #[test]
    fn lint_checks_learned_fields() {
        assert!(policy("signals.learned.outdated > 0.8").is_ok());
        let e = policy("signals.learned.stale > 0.8").unwrap_err();
        assert!(e.contains("signals.learned.stale"), "{e}");
        let yaml = "name: t\nowner: t\ndetectors:\n  - id: learned\n    kind: pii\n    recognizers: [email]\nrules: []\n";
        let e = Policy::from_files(&[("policy.yaml", yaml)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("reserved"), "{e}");
    }

    #[test]
    fn streams_re_evaluate_the_score_as_text_arrives() {
        let mut p = policy("signals.learned.outdated > 0.8").unwrap();
        p.set_learned_scorer(Arc::new(Fake));
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let input = EvalInput::new(EvalContext::new("acme", now)).user("tax?");
        let mut g = StreamGuard::new(Arc::new(p), input, 0);
        assert!(g.push("The tax ").blocked.is_none());
        assert!(g.push("is 8").blocked.is_none());
        let o = g.push("% now.");
        assert_eq!(o.blocked.map(|b| b.action), Some(ActionKind::Escalate));
    }

    #[test]
    fn entries_put_base_labels_first() {
        let e = entries(vec![
            ("violation.x".into(), Some(0.5)),
            ("outdated".into(), Some(f64::NAN)),
            ("wrong_answer".into(), Some(0.25)),
        ]);
        assert_eq!(
            e,
            vec![
                ("outdated".to_string(), 0.0),
                ("violation".to_string(), 0.0),
                ("wrong_answer".to_string(), 0.25),
                ("violation.x".to_string(), 0.5),
            ]
        );
    }
}
