//! The protection floor: which of the default pack's protections (hazard blocks and escalations,
//! PII and secrets redaction, stale-fact correction) a bundle lacks. Judged by behaviour: each
//! protective test case of the floor (the default pack's own tests) runs through the candidate,
//! which must reach the same action (or block/escalate). Activation refuses a weaker bundle unless
//! the operator says so explicitly (`--allow-weaker-than-default` with a reason).

use serde::{Deserialize, Serialize};

use crate::decision::ActionKind;
use crate::error::PolicyError;
use crate::Policy;

/// A class of protection the default pack gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protection {
    /// Llama Guard hazard categories blocked or escalated (requests and replies).
    Hazard,
    /// Personal data and secrets redacted (S7).
    Pii,
    /// Stale fact values corrected (`facts-correct`).
    Facts,
}

impl Protection {
    pub fn as_str(self) -> &'static str {
        match self {
            Protection::Hazard => "hazard",
            Protection::Pii => "pii",
            Protection::Facts => "facts",
        }
    }
}

/// One protective case of the floor the candidate does not keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub protection: Protection,
    /// The floor's test case.
    pub case: String,
    /// The floor's rules that fire on it.
    pub rules: Vec<String>,
    pub expected: ActionKind,
    pub got: ActionKind,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: \"{}\" is {} by {} in the default pack, {} here",
            self.protection.as_str(),
            self.case,
            past(self.expected),
            self.rules.join(", "),
            past(self.got)
        )
    }
}

fn past(a: ActionKind) -> &'static str {
    match a {
        ActionKind::Allow => "allowed",
        ActionKind::Block => "blocked",
        ActionKind::Redact => "redacted",
        ActionKind::Rewrite => "rewritten",
        ActionKind::Append => "given a notice",
        ActionKind::Escalate => "escalated",
        ActionKind::Route => "routed",
        ActionKind::Correct => "corrected",
    }
}

/// The protection a rule of the floor gives, from its category.
fn protection_of(category: &str) -> Option<Protection> {
    match category {
        "S7" => Some(Protection::Pii),
        "custom:facts" => Some(Protection::Facts),
        c if c.starts_with('S') => Some(Protection::Hazard),
        _ => None,
    }
}

/// Whether `got` keeps a protection that the floor gives with `expected`.
fn keeps(expected: ActionKind, got: ActionKind) -> bool {
    if expected.is_blocking() {
        got.is_blocking()
    } else {
        got == expected || got.is_blocking()
    }
}

/// The floor's protective cases `candidate` does not keep (empty: at least as strong).
pub fn gaps(candidate: &Policy, floor: &Policy) -> Vec<Gap> {
    let mut out = Vec::new();
    for t in &floor.tests {
        let want = match &t.facts {
            Some(ix) => floor.evaluate_with(t.phase, &t.input, Some(ix.as_ref())),
            None => floor.evaluate(t.phase, &t.input),
        };
        if matches!(want.action, ActionKind::Allow | ActionKind::Append) {
            continue;
        }
        // The protection is the one of the rule that decided the action.
        let Some(protection) = want
            .rules
            .iter()
            .find(|r| r.action == want.action)
            .and_then(|r| protection_of(&r.category))
        else {
            continue;
        };
        let got = match &t.facts {
            Some(ix) => candidate.evaluate_with(t.phase, &t.input, Some(ix.as_ref())),
            None => candidate.evaluate(t.phase, &t.input),
        };
        if !keeps(want.action, got.action) {
            out.push(Gap {
                protection,
                case: t.name.clone(),
                rules: want.rules.iter().map(|r| r.id.clone()).collect(),
                expected: want.action,
                got: got.action,
            });
        }
    }
    out
}

/// [`gaps`] against the embedded default pack.
pub fn gaps_from_default(candidate: &Policy) -> Result<Vec<Gap>, PolicyError> {
    Ok(gaps(candidate, &Policy::default_pack()?))
}

/// The distinct protections among `gaps`, in order.
pub fn missing(gaps: &[Gap]) -> Vec<Protection> {
    let mut p: Vec<Protection> = gaps.iter().map(|g| g.protection).collect();
    p.sort();
    p.dedup();
    p
}

/// One line for a CLI or an error message: `lacks the default pack's hazard, pii protections
/// (3 cases, e.g. …)`; `None` when nothing is missing.
pub fn summary(gaps: &[Gap]) -> Option<String> {
    let first = gaps.first()?;
    let names: Vec<&str> = missing(gaps).iter().map(|p| p.as_str()).collect();
    Some(format!(
        "lacks the default pack's {} protection{} ({} case{}, e.g. {first})",
        names.join(", "),
        if names.len() == 1 { "" } else { "s" },
        gaps.len(),
        if gaps.len() == 1 { "" } else { "s" },
    ))
}

/// Warning-level lint issues, one per missing protection (check `weaker-than-default`), for
/// `keel policy lint` and `keel policy diff`.
pub fn lint_issues(gaps: &[Gap]) -> Vec<crate::lint::LintIssue> {
    missing(gaps)
        .into_iter()
        .map(|p| {
            let cases: Vec<&Gap> = gaps.iter().filter(|g| g.protection == p).collect();
            let example = cases.first().map(|g| g.to_string()).unwrap_or_default();
            crate::lint::LintIssue::warning(
                crate::bundle::POLICY_FILE,
                1,
                None,
                "weaker-than-default",
                format!(
                    "lacks the default pack's {} protection ({} of its cases, e.g. {example}); add `extends: default`, or activation needs --allow-weaker-than-default",
                    p.as_str(),
                    cases.len()
                ),
            )
        })
        .collect()
}
