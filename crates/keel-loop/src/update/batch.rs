//! Batches: several suggestions (from several reviews) drafted as one proposal. Identical
//! suggestions — and ones that differ only in where they apply — are merged with every source
//! kept; what a suggestion touches (a term or a fact key, in a scope) says when two live
//! changes conflict (`keel_core::scopes_overlap`, the one matcher).

use keel_core::{scopes_overlap, Scope};
use keel_policy::{Bundle, Fact};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::proposal::{bundle_diff, draft_fact, draft_policy, PolicyDraft};
use crate::review::{Suggestion, SuggestionKind, SuggestionScope};
use crate::LoopError;

/// One suggestion of a batch with the sources it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Merged {
    pub suggestion: Suggestion,
    pub sources: Vec<Value>,
}

fn norm(s: &Option<String>) -> Option<String> {
    s.as_deref().map(|x| x.trim().to_lowercase())
}

/// The same change, wherever it applies.
fn same_change(a: &Suggestion, b: &Suggestion) -> bool {
    let topic = |s: &Suggestion| s.scope.as_ref().and_then(|x| x.topic.clone());
    a.kind == b.kind
        && norm(&a.from) == norm(&b.from)
        && a.to == b.to
        && a.fact == b.fact
        && a.value == b.value
        && a.effective_from == b.effective_from
        && topic(a) == topic(b)
}

/// The union of two lists where empty means "any".
fn union(a: &[String], b: &[String]) -> Vec<String> {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<String> = a.to_vec();
    for x in b {
        if !out.iter().any(|y| y.eq_ignore_ascii_case(x)) {
            out.push(x.clone());
        }
    }
    out
}

/// Merges identical suggestions (and ones that differ only in tenants, locales or
/// jurisdictions: their scopes are united), keeping every source, in first-seen order.
pub fn merge(items: Vec<(Suggestion, Value)>) -> Vec<Merged> {
    let mut out: Vec<Merged> = Vec::new();
    for (s, source) in items {
        if let Some(m) = out.iter_mut().find(|m| same_change(&m.suggestion, &s)) {
            let a = m.suggestion.scope.clone().unwrap_or_default();
            let b = s.scope.clone().unwrap_or_default();
            m.suggestion.scope = Some(SuggestionScope {
                tenants: union(&a.tenants, &b.tenants),
                locales: union(&a.locales, &b.locales),
                jurisdictions: union(&a.jurisdictions, &b.jurisdictions),
                topic: a.topic,
            });
            m.sources.push(source);
        } else {
            out.push(Merged {
                suggestion: s,
                sources: vec![source],
            });
        }
    }
    out
}

/// What a suggestion changes: `("fact", key)`, `("term", from)` or `("topic", topic)`, and
/// where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Touch {
    pub what: String,
    pub key: String,
    pub scope: Scope,
}

/// What `s` touches (`None`: nothing a second change could collide with).
pub fn touch(s: &Suggestion) -> Option<Touch> {
    let sc = s.scope.clone().unwrap_or_default();
    let scope = Scope {
        tenants: sc.tenants,
        locales: sc.locales,
        jurisdictions: sc.jurisdictions,
        topic: sc.topic.clone(),
        ..Scope::default()
    };
    let (what, key) = match s.kind {
        SuggestionKind::FactUpdate => ("fact", s.fact.clone()?),
        _ => match norm(&s.from).filter(|f| !f.is_empty()) {
            Some(f) => ("term", f),
            None => ("topic", sc.topic?),
        },
    };
    Some(Touch {
        what: what.to_string(),
        key,
        scope,
    })
}

/// The first pair of touches that collide: the same term or fact key in overlapping scopes.
pub fn collision<'a>(mine: &'a [Touch], theirs: &'a [Touch]) -> Option<(&'a Touch, &'a Touch)> {
    mine.iter().find_map(|a| {
        theirs
            .iter()
            .find(|b| a.what == b.what && a.key == b.key && scopes_overlap(&a.scope, &b.scope))
            .map(|b| (a, b))
    })
}

/// Drafts every policy suggestion into one candidate on top of `base`, in order: the first
/// gets the proposal's own rule id, the next ones `<id>x2`, `<id>x3`, … Returns the draft
/// (its diff is base → final) and every generated rule id.
pub fn draft_policies(
    base: &Bundle,
    suggestions: &[Suggestion],
    proposal_id: &str,
    reason: &str,
) -> Result<(PolicyDraft, Vec<String>), LoopError> {
    let mut bundle = base.clone();
    let mut rules = Vec::new();
    let mut last = None;
    for (i, s) in suggestions.iter().enumerate() {
        let id = if i == 0 {
            proposal_id.to_string()
        } else {
            format!("{proposal_id}x{}", i + 1)
        };
        let d = draft_policy(&bundle, s, &id, reason)?;
        rules.push(d.rule_id.clone());
        bundle = d.bundle.clone();
        last = Some(d);
    }
    let Some(mut d) = last else {
        return Err(LoopError::Invalid("a batch needs a suggestion".into()));
    };
    d.diff = bundle_diff(base, &d.bundle);
    Ok((d, rules))
}

/// Drafts every fact suggestion into one fact set (each checked against the registry and
/// the batch's earlier versions), with one diff.
pub fn draft_facts(
    suggestions: &[Suggestion],
    existing: &[Fact],
) -> Result<(Vec<Fact>, String), LoopError> {
    let mut all = existing.to_vec();
    let mut facts = Vec::new();
    let mut diff = String::new();
    for s in suggestions {
        let (f, d) = draft_fact(s, &all)?;
        all.push(f.clone());
        facts.push(f);
        diff.push_str(&d);
    }
    Ok((facts, diff))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn s(v: Value) -> Suggestion {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn identical_and_overlapping_suggestions_merge_with_their_sources() {
        let items = vec![
            (
                s(json!({"kind": "rewrite", "from": "Acme Corp", "to": "ACME",
                         "scope": {"tenants": ["acme"], "locales": ["en"]}})),
                json!({"review": "r1"}),
            ),
            (
                s(
                    json!({"kind": "rewrite", "from": "acme corp ", "to": "ACME",
                         "scope": {"tenants": ["acme"], "locales": ["de"]}}),
                ),
                json!({"review": "r2"}),
            ),
            (
                s(json!({"kind": "fact_update", "fact": "tax", "value": 10,
                         "effective_from": "2026-01-01"})),
                json!({"review": "r3"}),
            ),
            (
                s(json!({"kind": "rewrite", "from": "Acme Corp", "to": "ACME",
                         "scope": {"tenants": ["acme"], "locales": ["en"]}})),
                json!({"review": "r4"}),
            ),
        ];
        let m = merge(items);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0].sources,
            vec![
                json!({"review": "r1"}),
                json!({"review": "r2"}),
                json!({"review": "r4"})
            ]
        );
        assert_eq!(
            m[0].suggestion.scope.as_ref().unwrap().locales,
            vec!["en".to_string(), "de".to_string()]
        );
        assert_eq!(m[1].sources, vec![json!({"review": "r3"})]);
    }

    #[test]
    fn live_changes_collide_on_one_term_or_key_in_overlapping_scopes() {
        let t = |v: Value| touch(&s(v)).unwrap();
        let mine = [t(json!({"kind": "rewrite", "from": "Acme", "to": "A",
                             "scope": {"tenants": ["acme"], "locales": ["ja"]}}))];
        let cases = [
            (
                json!({"kind": "lexicon_term", "from": "acme", "scope": {"tenants": ["acme"], "locales": ["ja-JP"]}}),
                true,
            ),
            (
                json!({"kind": "lexicon_term", "from": "acme", "scope": {"tenants": ["acme"], "locales": ["en"]}}),
                false,
            ),
            (
                json!({"kind": "rewrite", "from": "other", "to": "x", "scope": {"tenants": ["acme"]}}),
                false,
            ),
            (
                json!({"kind": "fact_update", "fact": "acme", "value": 1, "effective_from": "2026-01-01"}),
                false,
            ),
        ];
        for (theirs, want) in cases {
            let theirs = [t(theirs.clone())];
            assert_eq!(collision(&mine, &theirs).is_some(), want, "{theirs:?}");
        }
        let fact = [t(json!({"kind": "fact_update", "fact": "tax", "value": 1,
                             "effective_from": "2026-01-01", "scope": {"tenants": ["acme"]}}))];
        let global = [t(json!({"kind": "fact_update", "fact": "tax", "value": 2,
                               "effective_from": "2026-01-01"}))];
        assert!(collision(&fact, &global).is_some());
    }
}
