//! Proposals: a reviewer's structured suggestion (or an alert's) drafted into a candidate change
//! — a new bundle (the base bundle plus one generated rule, and a lexicon detector where the
//! rule needs one) or a fact version — with a unified diff for review. The candidate must
//! compile and pass the bundle's own tests before it can be proposed. Approval and rejection
//! are `ProposalDecided` events; the two-person rule compares key names.

use keel_core::NewEvent;
use keel_policy::{run_tests, Bundle, Fact, FactScope, Policy};
use serde_json::{json, Value};

use super::textdiff::unified;
use crate::review::{Suggestion, SuggestionKind, SuggestionScope};
use crate::LoopError;

/// A proposal was drafted.
pub const PROPOSAL_CREATED: &str = keel_core::EventKind::PROPOSAL_CREATED;
/// A proposal was approved or rejected.
pub const PROPOSAL_DECIDED: &str = keel_core::EventKind::PROPOSAL_DECIDED;

/// The main policy file of a bundle.
const POLICY_FILE: &str = "policy.yaml";

/// A candidate bundle drafted from a suggestion.
#[derive(Debug, Clone)]
pub struct PolicyDraft {
    pub bundle: Bundle,
    /// The version id the candidate will have once published.
    pub version: String,
    /// Unified diff base → candidate over every file.
    pub diff: String,
    /// The generated rule's id.
    pub rule_id: String,
}

/// A suggestion that cannot be drafted, or a candidate that does not load (a 422).
fn undraftable(msg: impl Into<String>) -> LoopError {
    LoopError::Invalid(msg.into())
}

/// The generated rule and detector ids for a proposal id (`pr_01ABC…` → `proposal-01abc…`).
pub fn ids_for(proposal_id: &str) -> (String, String) {
    let tag: String = proposal_id
        .trim_start_matches("pr_")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (format!("proposal-{tag}"), format!("proposal_{tag}"))
}

/// Escapes regex metacharacters so `s` matches literally.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `s` as a YAML double-quoted scalar.
fn yaml_quoted(s: &str) -> String {
    // JSON strings are valid YAML double-quoted scalars.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A suggestion's required field `what` (of kind `kind`), trimmed, at most 200 bytes.
fn required_field<'a>(v: &'a Option<String>, what: &str, kind: &str) -> Result<&'a str, LoopError> {
    match v.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() && s.len() <= 200 => Ok(s),
        Some(s) if s.len() > 200 => Err(undraftable(format!(
            "suggestion `{kind}`: `{what}` is longer than 200 bytes"
        ))),
        _ => Err(undraftable(format!("suggestion `{kind}` needs `{what}`"))),
    }
}

fn scope_yaml(scope: &SuggestionScope) -> Option<String> {
    let mut parts = Vec::new();
    for (k, v) in [
        ("tenants", &scope.tenants),
        ("locales", &scope.locales),
        ("jurisdictions", &scope.jurisdictions),
    ] {
        if !v.is_empty() {
            parts.push(format!("{}: {}", yaml_quoted(k), json!(v)));
        }
    }
    (!parts.is_empty()).then(|| format!("{{{}}}", parts.join(", ")))
}

fn topic_condition(scope: &SuggestionScope) -> Option<String> {
    scope.topic.as_deref().filter(|t| !t.is_empty()).map(|t| {
        format!(
            "(context.topic == {} || context.topic.startsWith({}))",
            yaml_quoted(t),
            yaml_quoted(&format!("{t}."))
        )
    })
}

/// Appends one list item (given as `key: value` lines) to the end of the top-level list `key`
/// of a YAML document, keeping the rest of the text (comments, layout) as it is.
fn insert_item(yaml: &str, key: &str, item: &[String]) -> String {
    let lines: Vec<&str> = yaml.lines().collect();
    let is_key = |l: &str| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .is_some_and(|r| r.trim().is_empty() || r.trim_start().starts_with('#'))
    };
    let render = |indent: &str| -> Vec<String> {
        item.iter()
            .enumerate()
            .map(|(i, l)| {
                if i == 0 {
                    format!("{indent}- {l}")
                } else {
                    format!("{indent}  {l}")
                }
            })
            .collect()
    };
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + item.len() + 2);
    if let Some(at) = lines.iter().position(|l| is_key(l)) {
        let indent = lines[at + 1..]
            .iter()
            .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .filter(|l| l.trim_start().starts_with("- "))
            .map(|l| l[..l.len() - l.trim_start().len()].to_string())
            .unwrap_or_else(|| "  ".to_string());
        // The list ends at the next top-level key; trailing blank and comment lines stay after.
        let end = lines[at + 1..]
            .iter()
            .position(|l| !l.is_empty() && !l.starts_with([' ', '\t', '#', '-']))
            .map_or(lines.len(), |p| at + 1 + p);
        let mut ins = end;
        while ins > at + 1
            && (lines[ins - 1].trim().is_empty() || lines[ins - 1].trim_start().starts_with('#'))
        {
            ins -= 1;
        }
        out.extend(lines[..ins].iter().map(|s| s.to_string()));
        out.extend(render(&indent));
        out.extend(lines[ins..].iter().map(|s| s.to_string()));
    } else if let Some(at) = lines
        .iter()
        .position(|l| l.trim_end() == format!("{key}: []"))
    {
        out.extend(lines[..at].iter().map(|s| s.to_string()));
        out.push(format!("{key}:"));
        out.extend(render("  "));
        out.extend(lines[at + 1..].iter().map(|s| s.to_string()));
    } else {
        out.extend(lines.iter().map(|s| s.to_string()));
        out.push(format!("{key}:"));
        out.extend(render("  "));
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// Drafts the candidate bundle for a policy suggestion (`rewrite`, `lexicon_term`,
/// `escalate`) on top of `base`. The candidate must compile and pass the bundle's tests.
pub fn draft_policy(
    base: &Bundle,
    s: &Suggestion,
    proposal_id: &str,
    reason: &str,
) -> Result<PolicyDraft, LoopError> {
    let Some(base_yaml) = base.get(POLICY_FILE) else {
        return Err(undraftable("the base bundle has no policy.yaml"));
    };
    let (rule_id, det_id) = ids_for(proposal_id);
    let scope = s.scope.clone().unwrap_or_default();
    let topic = topic_condition(&scope);
    let description = yaml_quoted(&format!("Proposed ({proposal_id}): {}", reason.trim()));
    let mut detector: Option<Vec<String>> = None;
    let mut when: Vec<String> = topic.into_iter().collect();
    let (phase, action) = match s.kind {
        SuggestionKind::Rewrite => {
            let from = required_field(&s.from, "from", "rewrite")?;
            let to =
                s.to.as_deref()
                    .ok_or_else(|| undraftable("suggestion `rewrite` needs `to`"))?;
            let pattern = format!("(?i){}", regex_escape(from));
            detector = Some(vec![
                format!("id: {det_id}"),
                "kind: regex".to_string(),
                format!("description: {description}"),
                format!(
                    "patterns: [{{\"name\": \"from\", \"pattern\": {}}}]",
                    yaml_quoted(&pattern)
                ),
            ]);
            when.push(format!("signals.{det_id}.matched"));
            (
                "output",
                format!(
                    "{{\"rewrite\": {{\"from\": {}, \"to\": {}}}}}",
                    yaml_quoted(&pattern),
                    yaml_quoted(&to.replace('$', "$$"))
                ),
            )
        }
        SuggestionKind::LexiconTerm => {
            let from = required_field(&s.from, "from", "lexicon_term")?;
            detector = Some(vec![
                format!("id: {det_id}"),
                "kind: lexicon".to_string(),
                format!("description: {description}"),
                format!("terms: [{}]", yaml_quoted(from)),
            ]);
            when.push(format!("signals.{det_id}.matched"));
            match s.to.as_deref() {
                Some(to) => (
                    "output",
                    format!(
                        "{{\"redact\": {{\"detectors\": [{}], \"replacement\": {}}}}}",
                        yaml_quoted(&det_id),
                        yaml_quoted(to)
                    ),
                ),
                None => (
                    "output",
                    "{\"block\": {\"message\": \"This reply was withheld by policy.\"}}"
                        .to_string(),
                ),
            }
        }
        SuggestionKind::Escalate => {
            if let Some(from) = s.from.as_deref().filter(|f| !f.trim().is_empty()) {
                let from = required_field(&Some(from.to_string()), "from", "escalate")?.to_string();
                detector = Some(vec![
                    format!("id: {det_id}"),
                    "kind: lexicon".to_string(),
                    format!("description: {description}"),
                    format!("terms: [{}]", yaml_quoted(&from)),
                ]);
                when.push(format!("signals.{det_id}.matched"));
            } else if when.is_empty() {
                return Err(undraftable(
                    "suggestion `escalate` needs `from` (a term) or `scope.topic`",
                ));
            }
            (
                "output",
                "{\"escalate\": {\"message\": \"A person will follow up on this.\", \"severity\": \"high\"}}"
                    .to_string(),
            )
        }
        SuggestionKind::FactUpdate => {
            return Err(undraftable(
                "a fact_update suggestion drafts a fact proposal, not a bundle",
            ))
        }
    };
    let mut rule = vec![
        format!("id: {rule_id}"),
        format!("description: {description}"),
        "category: \"custom:proposal\"".to_string(),
        "severity: medium".to_string(),
        format!("phase: {phase}"),
    ];
    if let Some(sc) = scope_yaml(&scope) {
        rule.push(format!("scope: {sc}"));
    }
    if !when.is_empty() {
        rule.push(format!("when: {}", yaml_quoted(&when.join(" && "))));
    }
    rule.push(format!("action: {action}"));
    let mut yaml = base_yaml.to_string();
    if let Some(d) = &detector {
        yaml = insert_item(&yaml, "detectors", d);
    }
    yaml = insert_item(&yaml, "rules", &rule);
    let mut files: Vec<(String, String)> = base
        .files()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for f in &mut files {
        if f.0 == POLICY_FILE {
            f.1 = yaml.clone();
        }
    }
    let bundle = Bundle::from_files(&files);
    let policy = Policy::compile(&bundle).map_err(|e| {
        let issues: Vec<String> = e.issues().iter().map(ToString::to_string).collect();
        undraftable(format!(
            "the candidate bundle does not load: {}",
            if issues.is_empty() {
                e.to_string()
            } else {
                issues.join("; ")
            }
        ))
    })?;
    if !policy.spec().rules.iter().any(|r| r.id == rule_id) {
        return Err(undraftable("the generated rule did not land in the bundle"));
    }
    let report = run_tests(&policy);
    if !report.ok() {
        return Err(undraftable(format!(
            "the candidate bundle fails its own tests: {report}"
        )));
    }
    Ok(PolicyDraft {
        version: policy.version().to_string(),
        diff: bundle_diff(base, &bundle),
        bundle,
        rule_id,
    })
}

/// The unified diff of every file of two bundles.
pub fn bundle_diff(a: &Bundle, b: &Bundle) -> String {
    let mut paths: Vec<&String> = a.files().keys().chain(b.files().keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .map(|p| {
            unified(
                p,
                a.get(p).unwrap_or_default(),
                b.get(p).unwrap_or_default(),
                3,
            )
        })
        .collect()
}

/// Drafts the fact version a `fact_update` suggestion asks for: the newest version of that key
/// (same scope when the suggestion names one) is the template for kind, unit and subjects.
/// A key with no version yet gets its first one ([`first_version`]).
pub fn draft_fact(s: &Suggestion, existing: &[Fact]) -> Result<(Fact, String), LoopError> {
    let key = required_field(&s.fact, "fact", "fact_update")?;
    let value = s
        .value
        .clone()
        .filter(|v| !v.is_null())
        .ok_or_else(|| undraftable("suggestion `fact_update` needs `value`"))?;
    let from = required_field(&s.effective_from, "effective_from", "fact_update")?;
    let scope = s.scope.as_ref().map(|sc| FactScope {
        tenants: sc.tenants.clone(),
        locales: sc.locales.clone(),
        jurisdictions: sc.jurisdictions.clone(),
        topic: sc.topic.clone(),
        ..FactScope::default()
    });
    let versions: Vec<&Fact> = existing.iter().filter(|f| f.key == key).collect();
    let template = scope
        .as_ref()
        .and_then(|sc| versions.iter().rev().find(|f| &f.scope == sc))
        .or_else(|| versions.last())
        .copied();
    let mut fact = match template {
        Some(t) => t.clone(),
        None => first_version(key, &value, s, scope.as_ref())?,
    };
    fact.value = value;
    fact.effective_from = from.to_string();
    fact.effective_until = None;
    if let Some(sc) = scope {
        fact.scope = sc;
    }
    fact.check_against(existing)
        .map_err(|e| undraftable(e.to_string()))?;
    let before = template
        .map(|t| serde_norway::to_string(t).unwrap_or_default())
        .unwrap_or_default();
    let after = serde_norway::to_string(&fact).unwrap_or_default();
    let diff = unified(&format!("facts/{key}"), &before, &after, 20);
    Ok((fact, diff))
}

/// The first version of a key no version names yet: the kind follows the value (a boolean, a
/// number counts, a `YYYY-MM-DD` string is a date, other text a string); the subject — how
/// the fact is named in text — is the suggestion's `from`, else the key's last segment, in the
/// language of the scope's first locale (else `en`).
fn first_version(
    key: &str,
    value: &serde_json::Value,
    s: &Suggestion,
    scope: Option<&FactScope>,
) -> Result<Fact, LoopError> {
    let kind = match value {
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "count",
        serde_json::Value::String(t)
            if chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok() =>
        {
            "date"
        }
        serde_json::Value::String(_) => "string",
        _ => {
            return Err(undraftable(format!(
                "fact `{key}`: a first version needs a boolean, number or text `value`"
            )))
        }
    };
    let subject = s
        .from
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| {
            key.rsplit('.')
                .next()
                .unwrap_or(key)
                .replace(['_', '-'], " ")
        });
    let lang = scope
        .and_then(|sc| sc.locales.first())
        .and_then(|l| l.split(['-', '_']).next())
        .filter(|l| !l.is_empty())
        .unwrap_or("en")
        .to_ascii_lowercase();
    Ok(Fact {
        key: key.to_string(),
        kind: kind.to_string(),
        value: value.clone(),
        currency: None,
        scope: FactScope::default(),
        effective_from: String::new(),
        effective_until: None,
        source: "review suggestion".to_string(),
        owner: String::new(),
        subjects: [(lang, vec![subject])].into_iter().collect(),
    })
}

/// The `ProposalCreated` event. `doc` is the proposal as the API shows it (id, kind, author,
/// reason, source, base and candidate version, diff, fact) plus the candidate's files.
pub fn created_event(doc: Value, tenant: &str, actor: &str, at_ms: i64) -> NewEvent {
    NewEvent {
        kind: PROPOSAL_CREATED.to_string(),
        actor: actor.to_string(),
        tenant: tenant.to_string(),
        at_ms,
        payload: doc,
    }
}

/// Why an approval is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotPending(String),
    SamePerson,
}

/// Checks an approval: the proposal must be pending and, under the two-person rule, the
/// approver's key name must differ from the author's (a key without a name is its own person).
pub fn check_approval(
    status: &str,
    author_name: &str,
    approver_name: &str,
    two_person_rule: bool,
) -> Result<(), Refusal> {
    if status != "pending" {
        return Err(Refusal::NotPending(status.to_string()));
    }
    if two_person_rule && author_name == approver_name {
        return Err(Refusal::SamePerson);
    }
    Ok(())
}

/// The `ProposalDecided` event (`decision`: `approved` | `rejected`).
pub fn decided_event(
    proposal_id: &str,
    decision: &str,
    reason: &str,
    version: Option<&str>,
    tenant: &str,
    actor: &str,
    at_ms: i64,
) -> Result<NewEvent, LoopError> {
    if reason.trim().is_empty() {
        return Err(LoopError::Invalid(format!(
            "a proposal is {decision} with a reason"
        )));
    }
    Ok(NewEvent {
        kind: PROPOSAL_DECIDED.to_string(),
        actor: actor.to_string(),
        tenant: tenant.to_string(),
        at_ms,
        payload: json!({"id": proposal_id, "decision": decision, "reason": reason,
                        "version": version}),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use keel_policy::{EvalContext, EvalInput, Phase};

    fn base() -> Bundle {
        Bundle::from_files(&keel_policy::default_pack_files())
    }

    fn suggestion(v: Value) -> Suggestion {
        serde_json::from_value(v).unwrap()
    }

    fn reply(policy: &Policy, text: &str, locale: Option<&str>) -> keel_policy::Decision {
        let mut ctx = EvalContext::new("acme", chrono::DateTime::UNIX_EPOCH);
        ctx.locale = locale.map(str::to_string);
        let input = EvalInput::from_openai_request(
            &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            ctx,
        );
        policy.evaluate(
            Phase::Output,
            &input.with_openai_response(&json!({"choices": [{"index": 0,
                "message": {"role": "assistant", "content": text}}]})),
        )
    }

    #[test]
    fn a_rewrite_suggestion_becomes_a_scoped_rule() {
        let s = suggestion(
            json!({"kind": "rewrite", "from": "Acme Corp.", "to": "ACME ($)",
                                  "scope": {"locales": ["en"]}}),
        );
        let d = draft_policy(&base(), &s, "pr_01ABC", "brand name").unwrap();
        assert_eq!(d.rule_id, "proposal-01abc");
        assert!(d.diff.contains("+  - id: proposal-01abc"), "{}", d.diff);
        assert!(d.diff.contains("+  - id: proposal_01abc"), "{}", d.diff);
        assert_eq!(
            reply(&Policy::compile(&d.bundle).unwrap(), "nothing", None).action,
            keel_policy::ActionKind::Allow
        );
        let p = Policy::compile(&d.bundle).unwrap();
        assert_eq!(p.version(), d.version);
        let hit = reply(&p, "Thanks from acme corp. today", Some("en-US"));
        assert_eq!(hit.action, keel_policy::ActionKind::Rewrite);
        assert_eq!(hit.text_for(0), Some("Thanks from ACME ($) today"));
        let other = reply(&p, "Thanks from acme corp. today", Some("ja"));
        assert_eq!(other.action, keel_policy::ActionKind::Allow);
    }

    #[test]
    fn lexicon_and_escalate_suggestions_add_a_detector() {
        let lex = suggestion(json!({"kind": "lexicon_term", "from": "frobnicator"}));
        let p = Policy::compile(&draft_policy(&base(), &lex, "pr_1", "r").unwrap().bundle).unwrap();
        assert_eq!(
            reply(&p, "Buy a Frobnicator", None).action,
            keel_policy::ActionKind::Block
        );
        let esc = suggestion(json!({"kind": "escalate", "from": "frobozz",
                                    "scope": {"topic": "billing"}}));
        let p = Policy::compile(&draft_policy(&base(), &esc, "pr_2", "r").unwrap().bundle).unwrap();
        assert_eq!(
            reply(&p, "a frobozz", None).action,
            keel_policy::ActionKind::Allow,
            "topic not set"
        );
        let topic_only = suggestion(json!({"kind": "escalate", "scope": {"topic": "billing"}}));
        assert!(draft_policy(&base(), &topic_only, "pr_3", "r").is_ok());
        for bad in [
            json!({"kind": "escalate"}),
            json!({"kind": "rewrite", "from": "x"}),
            json!({"kind": "rewrite", "to": "x"}),
            json!({"kind": "lexicon_term"}),
            json!({"kind": "fact_update", "fact": "x", "value": 1, "effective_from": "2026-01-01"}),
        ] {
            assert!(
                draft_policy(&base(), &suggestion(bad.clone()), "pr_4", "r").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn insertion_handles_missing_and_empty_lists() {
        let item = vec!["id: a".to_string(), "kind: x".to_string()];
        assert_eq!(
            insert_item("name: n\nrules: []\n", "rules", &item),
            "name: n\nrules:\n  - id: a\n    kind: x\n"
        );
        assert_eq!(
            insert_item("name: n\n", "rules", &item),
            "name: n\nrules:\n  - id: a\n    kind: x\n"
        );
        assert_eq!(
            insert_item("rules: # c\n- id: b\n", "rules", &item),
            "rules: # c\n- id: b\n- id: a\n  kind: x\n"
        );
    }

    #[test]
    fn fact_updates_copy_the_template() {
        let existing: Vec<Fact> =
            serde_json::from_value(json!([{"key": "jp.tax", "kind": "percent",
            "value": 8, "effective_from": "2014-04-01", "scope": {"jurisdictions": ["JP"]},
            "subjects": {"en": ["consumption tax"]}}]))
            .unwrap();
        let s = suggestion(json!({"kind": "fact_update", "fact": "jp.tax", "value": 10,
                                  "effective_from": "2019-10-01"}));
        let (f, diff) = draft_fact(&s, &existing).unwrap();
        assert_eq!(f.value, json!(10));
        assert_eq!(f.subjects["en"], vec!["consumption tax".to_string()]);
        assert!(
            diff.contains("-value: 8") && diff.contains("+value: 10"),
            "{diff}"
        );
        let bad = suggestion(json!({"kind": "fact_update", "fact": "nope", "value": [1],
                                    "effective_from": "2019-10-01"}));
        assert!(draft_fact(&bad, &existing).is_err());
    }

    #[test]
    fn a_fact_update_for_an_unregistered_key_drafts_its_first_version() {
        let s = suggestion(json!({"kind": "fact_update", "fact": "acme.plan.price_usd",
            "value": 12, "from": "ACME plan price", "effective_from": "2026-02-01",
            "scope": {"tenants": ["acme"], "locales": ["en-US"]}}));
        let (f, diff) = draft_fact(&s, &[]).unwrap();
        assert_eq!(
            (f.kind.as_str(), f.value.clone(), f.effective_from.as_str()),
            ("count", json!(12), "2026-02-01")
        );
        assert_eq!(f.subjects["en"], vec!["ACME plan price".to_string()]);
        assert_eq!(f.scope.tenants, vec!["acme".to_string()]);
        assert!(diff.contains("+value: 12"), "{diff}");
        let date = suggestion(json!({"kind": "fact_update", "fact": "jp.launch_date",
            "value": "2026-04-01", "effective_from": "2026-01-01", "scope": {"locales": ["ja"]}}));
        let (f, _) = draft_fact(&date, &[]).unwrap();
        assert_eq!(
            (f.kind.as_str(), f.subjects["ja"][0].as_str()),
            ("date", "launch date")
        );
    }

    #[test]
    fn two_person_rule() {
        assert!(check_approval("pending", "ann", "bob", true).is_ok());
        assert_eq!(
            check_approval("pending", "ann", "ann", true),
            Err(Refusal::SamePerson)
        );
        assert!(check_approval("pending", "ann", "ann", false).is_ok());
        assert!(check_approval("approved", "ann", "bob", false).is_err());
    }
}
