//! Inline tests of a bundle: each case (messages and/or response, context) runs through
//! [`Policy::evaluate`] and is checked against its expected action, rules and texts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bundle::{line_of_id, line_of_section, PolicySpec, TestExpect, POLICY_FILE};
use crate::input::{EvalContext, EvalInput, Phase};
use crate::lint::LintIssue;
use crate::Policy;

/// The `now` of a test case that gives none.
pub const TEST_NOW: &str = "2025-01-01T00:00:00Z";

pub(crate) struct CompiledTest {
    pub name: String,
    pub line: usize,
    pub phase: Phase,
    pub input: EvalInput,
    pub expect: TestExpect,
    /// The case's own facts registry (`facts:`), if it has one.
    pub facts: Option<std::sync::Arc<crate::facts::FactIndex>>,
}

pub(crate) fn compile_tests(
    spec: &PolicySpec,
    yaml: &str,
    issues: &mut Vec<LintIssue>,
) -> Vec<CompiledTest> {
    let section = line_of_section(yaml, "tests");
    let mut out = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for t in &spec.tests {
        let line = line_of_id(yaml, &t.name, section);
        let id = Some(t.name.as_str());
        if !names.insert(t.name.clone()) {
            issues.push(LintIssue::error(
                POLICY_FILE,
                line,
                id,
                "duplicate-id",
                "two tests have this name",
            ));
        }
        let c = t.context.clone().unwrap_or_default();
        let now = match DateTime::parse_from_rfc3339(c.now.as_deref().unwrap_or(TEST_NOW)) {
            Ok(n) => n.with_timezone(&Utc),
            Err(e) => {
                issues.push(LintIssue::error(
                    POLICY_FILE,
                    line,
                    id,
                    "test",
                    format!("`context.now`: {e}"),
                ));
                continue;
            }
        };
        let ctx = EvalContext {
            now,
            tenant: c.tenant.unwrap_or_else(|| "test".to_string()),
            locale: c.locale,
            jurisdiction: c.jurisdiction,
            topic: c.topic,
            conversation_id: c.conversation_id,
            user: c.user,
        };
        let body = serde_json::json!({ "messages": t.messages.clone().unwrap_or(serde_json::Value::Array(vec![])) });
        let mut input = EvalInput::from_openai_request(&body, ctx);
        if let Some(r) = &t.response {
            for text in r.to_vec() {
                input = input.reply(&text);
            }
        }
        let phase = t.phase.unwrap_or(if t.response.is_some() {
            Phase::Output
        } else {
            Phase::Input
        });
        if input.segments(phase).is_empty() {
            issues.push(LintIssue::error(
                POLICY_FILE,
                line,
                id,
                "test",
                format!("the case has no {} text", phase.as_str()),
            ));
        }
        if let Some(rules) = &t.expect.rules {
            for r in rules {
                if !spec.rules.iter().any(|x| &x.id == r) {
                    issues.push(LintIssue::error(
                        POLICY_FILE,
                        line,
                        id,
                        "test",
                        format!("expects unknown rule `{r}`"),
                    ));
                }
            }
        }
        let mut facts = None;
        if !t.facts.is_empty() {
            let mut ok = true;
            for f in &t.facts {
                if let Err(e) = f.validate() {
                    issues.push(LintIssue::error(POLICY_FILE, line, id, "test", e));
                    ok = false;
                }
            }
            if ok {
                match crate::facts::FactIndex::new(t.facts.clone()) {
                    Ok(ix) => facts = Some(std::sync::Arc::new(ix)),
                    Err(e) => issues.push(LintIssue::error(POLICY_FILE, line, id, "test", e)),
                }
            }
        }
        out.push(CompiledTest {
            name: t.name.clone(),
            line,
            phase,
            input,
            expect: t.expect.clone(),
            facts,
        });
    }
    out
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseResult {
    pub name: String,
    pub line: usize,
    pub passed: bool,
    /// Why it failed, one line per mismatch.
    pub failures: Vec<String>,
}

/// The result of [`run_tests`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestReport {
    pub policy: String,
    pub version: String,
    pub cases: Vec<CaseResult>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed).count()
    }
    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }
    pub fn ok(&self) -> bool {
        self.failed() == 0
    }
    pub fn failing(&self) -> impl Iterator<Item = &CaseResult> {
        self.cases.iter().filter(|c| !c.passed)
    }
}

impl std::fmt::Display for TestReport {
    /// One line per failing case (`FAIL policy.yaml:40 name: why`), then `N passed, M failed`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.failing() {
            writeln!(
                f,
                "FAIL {POLICY_FILE}:{} {}: {}",
                c.line,
                c.name,
                c.failures.join("; ")
            )?;
        }
        write!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}

/// Runs the inline tests of a policy.
pub fn run_tests(policy: &Policy) -> TestReport {
    let cases = policy
        .tests
        .iter()
        .map(|t| {
            let d = match &t.facts {
                Some(ix) => policy.evaluate_with(t.phase, &t.input, Some(ix.as_ref())),
                None => policy.evaluate(t.phase, &t.input),
            };
            let mut failures = Vec::new();
            if d.action != t.expect.action {
                failures.push(format!(
                    "expected {}, got {} (rules: {})",
                    t.expect.action,
                    d.action,
                    ids(&d)
                ));
            }
            if let Some(rules) = &t.expect.rules {
                let got: Vec<String> = d.rules.iter().map(|r| r.id.clone()).collect();
                let mut want = rules.clone();
                want.sort();
                let mut got_sorted = got.clone();
                got_sorted.sort();
                if want != got_sorted {
                    failures.push(format!(
                        "expected rules [{}], got [{}]",
                        rules.join(", "),
                        got.join(", ")
                    ));
                }
            }
            for e in &d.errors {
                failures.push(format!("rule {} errored: {}", e.rule, e.message));
            }
            let segs = t.input.segments(t.phase);
            let texts: Vec<String> = if d.is_blocking() {
                vec![d.message.clone().unwrap_or_default()]
            } else {
                segs.iter()
                    .enumerate()
                    .map(|(i, s)| d.text_for(i).unwrap_or(&s.text).to_string())
                    .collect()
            };
            for c in &t.expect.contains {
                if !texts.iter().any(|x| x.contains(c.as_str())) {
                    failures.push(format!("no text contains `{c}`"));
                }
            }
            for c in &t.expect.not_contains {
                if texts.iter().any(|x| x.contains(c.as_str())) {
                    failures.push(format!("a text contains `{c}`"));
                }
            }
            if let Some(want) = &t.expect.text {
                let got = texts.first().cloned().unwrap_or_default();
                if &got != want {
                    failures.push(format!("expected text {want:?}, got {got:?}"));
                }
            }
            CaseResult {
                name: t.name.clone(),
                line: t.line,
                passed: failures.is_empty(),
                failures,
            }
        })
        .collect();
    TestReport {
        policy: policy.name().to_string(),
        version: policy.version().to_string(),
        cases,
    }
}

fn ids(d: &crate::Decision) -> String {
    d.rules
        .iter()
        .map(|r| r.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
