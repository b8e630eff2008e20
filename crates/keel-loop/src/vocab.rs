//! One vocabulary for what the policy did, used by KPIs, rollout guards, docs and the console:
//!
//! - a **violation**: the model said something a rule forbids — an *output*-phase rule blocked
//!   or redacted the reply. A user's forbidden request (input phase) is not the model's
//!   violation; a fix that rewrites, corrects or appends is not one either.
//! - an **intervention**: Keel changed the reply — any rule, input or output, that blocked,
//!   escalated, redacted, rewrote, corrected or appended. Every violation is an intervention;
//!   a successful fix raises interventions, not violations.
//!
//! Works on recorded decisions (`{"action", "input": {rules}, "output": [{action, rules}]}`).

use std::collections::BTreeSet;

use serde_json::Value;

/// Output actions that mean the model said something forbidden.
pub const VIOLATION_ACTIONS: [&str; 2] = ["block", "redact"];
/// Actions that change what the user receives.
pub const INTERVENTION_ACTIONS: [&str; 6] = [
    "block", "escalate", "redact", "rewrite", "correct", "append",
];

fn output_decisions(decision: &Value) -> impl Iterator<Item = &Value> {
    decision["output"].as_array().into_iter().flatten()
}

fn rule_categories<'a>(
    decisions: impl Iterator<Item = &'a Value>,
    actions: &[&str],
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for d in decisions {
        for r in d["rules"].as_array().into_iter().flatten() {
            if r["action"].as_str().is_some_and(|a| actions.contains(&a)) {
                if let Some(c) = r["category"].as_str() {
                    out.insert(c.to_string());
                }
            }
        }
    }
    out
}

/// Whether the recorded decision holds a violation: an output decision that blocked or
/// redacted (the rollout guard's `violation_rate`).
pub fn violated(decision: &Value) -> bool {
    output_decisions(decision).any(|o| {
        o["action"]
            .as_str()
            .is_some_and(|a| VIOLATION_ACTIONS.contains(&a))
    })
}

/// Categories of output rules that blocked or redacted (KPI `violations`).
pub fn violation_categories(decision: &Value) -> BTreeSet<String> {
    rule_categories(output_decisions(decision), &VIOLATION_ACTIONS)
}

/// Categories of rules, either phase, that changed the reply (KPI `interventions`).
pub fn intervention_categories(decision: &Value) -> BTreeSet<String> {
    rule_categories(
        std::iter::once(&decision["input"]).chain(output_decisions(decision)),
        &INTERVENTION_ACTIONS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decision(phase: &str, action: &str) -> Value {
        let rules = json!([{"id": "r", "category": "C", "action": action}]);
        match phase {
            "input" => {
                json!({"action": action, "input": {"action": action, "rules": rules}, "output": []})
            }
            _ => json!({"action": action, "input": {"action": "allow", "rules": []},
                        "output": [{"action": action, "rules": rules}]}),
        }
    }

    fn check(phase: &str, action: &str, violation: bool, intervention: bool) {
        let d = decision(phase, action);
        assert_eq!(violated(&d), violation, "{phase} {action}");
        assert_eq!(
            !violation_categories(&d).is_empty(),
            violation,
            "{phase} {action}"
        );
        assert_eq!(
            !intervention_categories(&d).is_empty(),
            intervention,
            "{phase} {action}"
        );
    }

    /// Issue 25, defect 5: KPIs counted a fix's rewrites as violations while the rollout guard
    /// counted only blocks and redactions. One definition now serves both.
    #[test]
    fn violation_means_two_things() {
        check("output", "block", true, true);
        check("output", "redact", true, true);
        check("output", "rewrite", false, true);
        check("output", "correct", false, true);
        check("output", "append", false, true);
        check("output", "escalate", false, true);
        check("output", "allow", false, false);
        check("input", "block", false, true);
        check("input", "redact", false, true);
        check("input", "route", false, false);
    }
}
