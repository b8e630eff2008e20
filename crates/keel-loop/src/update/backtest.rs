//! Backtests: recorded interactions replayed (the request as the client sent it, then the reply
//! as the upstream wrote it) through the **base** version (what is in force) and through the
//! candidate, reporting only their difference ([`compare`]), so a change since recording (other
//! rules, other versions, new facts) is not blamed on the candidate; that drift — recorded
//! decision vs base replay — is reported separately ([`Drift`]). [`run`] compares a candidate
//! with the recorded decisions themselves. Erased payloads are skipped and counted. An
//! interaction later known to be bad (a wrong-answer report, a review verdict) counts as
//! *caught* when the base let the reply through unchanged and the candidate would change or
//! withhold it.

use std::collections::{BTreeMap, BTreeSet};

use keel_core::{InteractionRecord, Outcome};
use keel_policy::{ActionKind, EvalContext, EvalInput, Phase, Policy};
use serde::Serialize;
use serde_json::{json, Value};

/// What is known about an interaction after the fact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Known {
    pub wrong_answer: bool,
    pub violation: bool,
}

/// Per-rule change counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuleChange {
    pub rule: String,
    /// Interactions where the rule fires under the candidate but did not before.
    pub now_fires: u64,
    /// Interactions where it fired before but does not under the candidate.
    pub stops_firing: u64,
    /// Of those, interactions whose overall action flipped.
    pub flipped: u64,
}

/// Per-segment counts (tenant / locale / jurisdiction).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SegmentChange {
    pub segment: String,
    pub interactions: u64,
    pub flipped: u64,
}

/// Recorded decisions vs the base replayed now: what changed since recording, whatever the
/// candidate (other versions in force then, rules or facts changed since).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// Interactions whose overall action differs between the recording and the base replay.
    pub flipped: u64,
    /// Same action, different rules.
    pub rules_changed: u64,
    /// `recorded action → base action` counts.
    pub transitions: BTreeMap<String, u64>,
    /// Interactions recorded under another policy version than the base.
    pub other_version: u64,
}

/// The report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BacktestReport {
    pub candidate_version: String,
    /// What the candidate is compared with: the base version replayed (`None`: the recorded
    /// decisions, [`run`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_version: Option<String>,
    /// Recorded vs base (only with a base): not the candidate's doing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift_since_recording: Option<Drift>,
    /// Interactions replayed.
    pub interactions: u64,
    pub skipped_erased: u64,
    /// Not replayed: the upstream never answered (errors, timeouts, cancellations).
    pub skipped_incomplete: u64,
    /// The overall action differs.
    pub flipped: u64,
    /// Same action, different rules fired.
    pub rules_changed: u64,
    /// `base action → candidate action` counts (`recorded → candidate` without a base).
    pub transitions: BTreeMap<String, u64>,
    pub by_rule: Vec<RuleChange>,
    pub by_segment: Vec<SegmentChange>,
    pub samples: Vec<Value>,
    pub known_wrong_answers: u64,
    pub known_violations: u64,
    pub caught_wrong_answers: u64,
    pub caught_violations: u64,
}

/// Whether an action changes or withholds the reply (or the request).
fn alters(a: ActionKind) -> bool {
    !matches!(
        a,
        ActionKind::Allow | ActionKind::Append | ActionKind::Route
    )
}

fn action_of(s: &str) -> ActionKind {
    match s {
        "block" => ActionKind::Block,
        "redact" => ActionKind::Redact,
        "rewrite" => ActionKind::Rewrite,
        "append" => ActionKind::Append,
        "escalate" => ActionKind::Escalate,
        "route" => ActionKind::Route,
        "correct" => ActionKind::Correct,
        _ => ActionKind::Allow,
    }
}

fn recorded_rules(decision: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |d: &Value| {
        for r in d["rules"].as_array().into_iter().flatten() {
            if let Some(id) = r["id"].as_str() {
                out.insert(id.to_string());
            }
        }
    };
    add(&decision["input"]);
    for o in decision["output"].as_array().into_iter().flatten() {
        add(o);
    }
    out
}

/// Replays one record through `policy`: the overall action and the rules that fired.
pub fn replay_one(policy: &Policy, rec: &InteractionRecord) -> (ActionKind, BTreeSet<String>) {
    let now = chrono::DateTime::from_timestamp_millis(rec.started_ms).unwrap_or_default();
    let mut ctx = EvalContext::new(rec.context.tenant.clone(), now);
    ctx.locale = rec.context.locale.clone();
    ctx.jurisdiction = rec.context.jurisdiction.clone();
    ctx.topic = rec.context.topic.clone();
    ctx.conversation_id = rec.context.conversation_id.clone();
    ctx.user = rec.context.user.clone();
    let request = json!({"model": rec.model, "messages": rec.request_messages});
    let input = EvalInput::from_openai_request(&request, ctx);
    let in_dec = policy.evaluate(Phase::Input, &input);
    let mut rules: BTreeSet<String> = in_dec.rules.iter().map(|r| r.id.clone()).collect();
    if in_dec.is_blocking() {
        return (in_dec.action, rules);
    }
    let texts = rec.upstream_text.as_ref().unwrap_or(&rec.response_text);
    let choices: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"index": i, "message": {"role": "assistant", "content": t}}))
        .collect();
    let out_dec = policy.evaluate(
        Phase::Output,
        &input.with_openai_response(&json!({"choices": choices})),
    );
    rules.extend(out_dec.rules.iter().map(|r| r.id.clone()));
    let action = if out_dec.action.rank() > in_dec.action.rank() {
        out_dec.action
    } else {
        in_dec.action
    };
    (action, rules)
}

/// Replays `records` (`InteractionRecorded` payloads; `null` = erased) through `candidate`
/// and compares with the decisions recorded at the time.
pub fn run(
    candidate: &Policy,
    records: &[Value],
    known: &BTreeMap<String, Known>,
    max_samples: usize,
) -> BacktestReport {
    run_with(candidate, None, records, known, max_samples)
}

/// Replays `records` through `base` and through `candidate` and reports their difference only;
/// the recorded decisions vs `base` go to `drift_since_recording`.
pub fn compare(
    base: &Policy,
    candidate: &Policy,
    records: &[Value],
    known: &BTreeMap<String, Known>,
    max_samples: usize,
) -> BacktestReport {
    run_with(candidate, Some(base), records, known, max_samples)
}

fn run_with(
    candidate: &Policy,
    base: Option<&Policy>,
    records: &[Value],
    known: &BTreeMap<String, Known>,
    max_samples: usize,
) -> BacktestReport {
    let mut rep = BacktestReport {
        candidate_version: candidate.version().to_string(),
        base_version: base.map(|b| b.version().to_string()),
        drift_since_recording: base.map(|_| Drift::default()),
        ..BacktestReport::default()
    };
    let mut rules: BTreeMap<String, RuleChange> = BTreeMap::new();
    let mut segments: BTreeMap<String, SegmentChange> = BTreeMap::new();
    for v in records {
        if v.is_null() {
            rep.skipped_erased += 1;
            continue;
        }
        let Ok(rec) = serde_json::from_value::<InteractionRecord>(v.clone()) else {
            rep.skipped_erased += 1;
            continue;
        };
        if rec.outcome != Outcome::Ok {
            rep.skipped_incomplete += 1;
            continue;
        }
        rep.interactions += 1;
        let decision = rec.decision.clone().unwrap_or(Value::Null);
        let recorded = action_of(decision["action"].as_str().unwrap_or("allow"));
        let recorded_rules = recorded_rules(&decision);
        let (before, before_rules) = match base {
            Some(b) => {
                let (a, r) = replay_one(b, &rec);
                if let Some(d) = rep.drift_since_recording.as_mut() {
                    if a != recorded {
                        d.flipped += 1;
                        *d.transitions
                            .entry(format!("{} -> {}", recorded.as_str(), a.as_str()))
                            .or_default() += 1;
                    } else if r != recorded_rules {
                        d.rules_changed += 1;
                    }
                    d.other_version +=
                        u64::from(rec.policy_version.as_deref() != Some(b.version()));
                }
                (a, r)
            }
            None => (recorded, recorded_rules),
        };
        let (after, after_rules) = replay_one(candidate, &rec);
        let seg_key = format!(
            "{}/{}/{}",
            rec.context.tenant,
            rec.context.locale.as_deref().unwrap_or("-"),
            rec.context.jurisdiction.as_deref().unwrap_or("-")
        );
        let seg = segments
            .entry(seg_key.clone())
            .or_insert_with(|| SegmentChange {
                segment: seg_key,
                ..SegmentChange::default()
            });
        seg.interactions += 1;
        for r in after_rules.difference(&before_rules) {
            rules
                .entry(r.clone())
                .or_insert_with(|| RuleChange {
                    rule: r.clone(),
                    ..RuleChange::default()
                })
                .now_fires += 1;
        }
        for r in before_rules.difference(&after_rules) {
            rules
                .entry(r.clone())
                .or_insert_with(|| RuleChange {
                    rule: r.clone(),
                    ..RuleChange::default()
                })
                .stops_firing += 1;
        }
        let k = known.get(&rec.id).copied().unwrap_or_default();
        rep.known_wrong_answers += u64::from(k.wrong_answer);
        rep.known_violations += u64::from(k.violation);
        let caught = !alters(before) && alters(after);
        rep.caught_wrong_answers += u64::from(caught && k.wrong_answer);
        rep.caught_violations += u64::from(caught && k.violation);
        if before != after {
            for r in after_rules.symmetric_difference(&before_rules) {
                if let Some(c) = rules.get_mut(r) {
                    c.flipped += 1;
                }
            }
            rep.flipped += 1;
            seg.flipped += 1;
            *rep.transitions
                .entry(format!("{} -> {}", before.as_str(), after.as_str()))
                .or_default() += 1;
            if rep.samples.len() < max_samples {
                rep.samples.push(json!({
                    "interaction_id": rec.id,
                    "segment": seg.segment,
                    "recorded": recorded.as_str(),
                    "base": before.as_str(),
                    "candidate": after.as_str(),
                    "rules_added": after_rules.difference(&before_rules).collect::<Vec<_>>(),
                    "rules_removed": before_rules.difference(&after_rules).collect::<Vec<_>>(),
                    "known_wrong_answer": k.wrong_answer,
                    "known_violation": k.violation,
                }));
            }
        } else if before_rules != after_rules {
            rep.rules_changed += 1;
        }
    }
    rep.by_rule = rules.into_values().collect();
    rep.by_segment = segments.into_values().filter(|s| s.flipped > 0).collect();
    rep
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn record(id: &str, user: &str, reply: &str, action: &str, outcome: &str) -> Value {
        json!({"id": id, "context": {"tenant": "acme", "locale": "en"}, "model": "m",
               "stream": false, "request_messages": [{"role": "user", "content": user}],
               "response_text": [reply], "started_ms": 0, "finished_ms": 1, "latency_ms": 1,
               "outcome": outcome, "status": 200, "attempts": 1,
               "decision": {"action": action, "input": {"rules": []}, "output": [{"rules": []}]}})
    }

    #[test]
    fn counts_on_known_data() {
        let base = keel_policy::Bundle::from_files(&keel_policy::default_pack_files());
        let s: crate::review::Suggestion =
            serde_json::from_value(json!({"kind": "rewrite", "from": "Acme Corp", "to": "ACME"}))
                .unwrap();
        let d = super::super::proposal::draft_policy(&base, &s, "pr_x", "brand").unwrap();
        let candidate = Policy::compile(&d.bundle).unwrap();
        let records = vec![
            record("ix_1", "hello", "Acme Corp says hi", "allow", "ok"),
            record("ix_2", "hello", "Acme Corp again", "allow", "ok"),
            record("ix_3", "hello", "nothing to see", "allow", "ok"),
            Value::Null,
            record("ix_5", "hello", "", "allow", "upstream_error"),
        ];
        let mut known = BTreeMap::new();
        known.insert(
            "ix_1".to_string(),
            Known {
                wrong_answer: true,
                violation: false,
            },
        );
        known.insert(
            "ix_3".to_string(),
            Known {
                wrong_answer: true,
                violation: false,
            },
        );
        let r = run(&candidate, &records, &known, 1);
        assert_eq!(
            (
                r.interactions,
                r.skipped_erased,
                r.skipped_incomplete,
                r.flipped
            ),
            (3, 1, 1, 2)
        );
        assert_eq!(r.caught_wrong_answers, 1);
        assert_eq!(r.known_wrong_answers, 2);
        assert_eq!(r.transitions["allow -> rewrite"], 2);
        assert_eq!(r.by_rule.len(), 1);
        assert_eq!(r.by_rule[0].rule, "proposal-x");
        assert_eq!(r.by_rule[0].now_fires, 2);
        assert_eq!(r.by_rule[0].flipped, 2);
        assert_eq!(r.by_segment[0].segment, "acme/en/-");
        assert_eq!(r.samples.len(), 1);
    }

    /// Issue 25, defect 4: a backtest blamed the candidate for every difference since
    /// recording. Here the recording predates the default pack's PII rule (recorded `allow`
    /// on a reply with an e-mail address) and the candidate adds a brand rewrite: only the
    /// rewrite is the candidate's; the redaction is drift.
    #[test]
    fn backtest_blames_the_wrong_change() {
        let base_bundle = keel_policy::Bundle::from_files(&keel_policy::default_pack_files());
        let base = Policy::compile(&base_bundle).unwrap();
        let s: crate::review::Suggestion =
            serde_json::from_value(json!({"kind": "rewrite", "from": "Acme Corp", "to": "ACME"}))
                .unwrap();
        let d = super::super::proposal::draft_policy(&base_bundle, &s, "pr_x", "brand").unwrap();
        let candidate = Policy::compile(&d.bundle).unwrap();
        let records = vec![
            record("ix_1", "hello", "Acme Corp says hi", "allow", "ok"),
            record("ix_2", "hello", "mail jane@example.com", "allow", "ok"),
            record("ix_3", "hello", "nothing to see", "allow", "ok"),
        ];
        let check = |r: &BacktestReport, flipped: u64, transitions: &[(&str, u64)]| {
            assert_eq!(r.flipped, flipped, "{r:?}");
            let want: BTreeMap<String, u64> = transitions
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect();
            assert_eq!(r.transitions, want);
        };
        // Against the recording, the redaction is wrongly blamed on the candidate.
        let old = run(&candidate, &records, &BTreeMap::new(), 5);
        check(&old, 2, &[("allow -> redact", 1), ("allow -> rewrite", 1)]);
        // Against the base replayed, only the rewrite is the candidate's.
        let r = compare(&base, &candidate, &records, &BTreeMap::new(), 5);
        check(&r, 1, &[("allow -> rewrite", 1)]);
        assert_eq!(r.by_rule.len(), 1);
        assert_eq!(r.by_rule[0].rule, "proposal-x");
        assert_eq!(r.base_version.as_deref(), Some(base.version()));
        let drift = r.drift_since_recording.unwrap();
        assert_eq!(drift.flipped, 1);
        assert_eq!(drift.transitions["allow -> redact"], 1);
        assert_eq!(drift.other_version, 3, "recorded without a version");
    }
}
