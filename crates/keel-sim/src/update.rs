//! Operator updates: a scenario's `[changes.update]` as the review API's structured suggestion,
//! and (for publishing through `POST /api/policies`) as rules added to the default pack.

use serde_json::{json, Value};

use crate::scenario::{Change, Update};
use crate::SimError;

/// Fact versions scoped to `tenant` (its admin key may set only its own facts): a version
/// whose scope names no tenant gets `tenants = [tenant]`.
pub fn tenant_facts(facts: &[Value], tenant: &str) -> Vec<Value> {
    facts
        .iter()
        .map(|f| {
            let mut f = f.clone();
            if f.is_object() {
                if !f["scope"].is_object() {
                    f["scope"] = json!({});
                }
                let none = f["scope"]["tenants"]
                    .as_array()
                    .is_none_or(|t| t.is_empty());
                if none {
                    f["scope"]["tenants"] = json!([tenant]);
                }
            }
            f
        })
        .collect()
}

/// The suggestion a reviewer attaches to a label (`keel_loop::review::Suggestion` shape), for a
/// reply reading `reply` (an escalation names the term the reply contains: one term per
/// suggestion, in the reply's language). A fact update carries its fact's scope, tenant
/// included, so the proposal finds the version it replaces.
pub fn suggestion(u: &Update, reply: &str, tenant: &str) -> Value {
    let mut scope = json!({});
    if !u.scope.locales.is_empty() {
        scope["locales"] = json!(u.scope.locales);
    }
    if !u.scope.jurisdictions.is_empty() {
        scope["jurisdictions"] = json!(u.scope.jurisdictions);
    }
    if let Some(t) = &u.scope.topic {
        scope["topic"] = json!(t);
    }
    let mut s = json!({"kind": u.kind, "scope": scope});
    match u.kind.as_str() {
        "rewrite" | "lexicon_term" => {
            s["from"] = json!(u.from);
            s["to"] = json!(u.to);
        }
        "escalate" => {
            let lower = reply.to_lowercase();
            let term = u
                .terms
                .iter()
                .find(|t| lower.contains(&t.to_lowercase()))
                .or(u.terms.first());
            s["from"] = json!(term);
        }
        _ => {
            if let Some(f) = tenant_facts(&u.facts, tenant).first() {
                s["fact"] = f["key"].clone();
                s["value"] = f["value"].clone();
                s["effective_from"] = f["effective_from"].clone();
                let mut scope = json!({});
                for k in ["tenants", "locales", "jurisdictions"] {
                    if f["scope"][k].as_array().is_some_and(|v| !v.is_empty()) {
                        scope[k] = f["scope"][k].clone();
                    }
                }
                if f["scope"]["topic"].is_string() {
                    scope["topic"] = f["scope"]["topic"].clone();
                }
                s["scope"] = scope;
            }
        }
    }
    s
}

/// A name usable as a detector id and in CEL (`[a-z0-9_]`).
fn ident(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("sim_{s}")
}

/// Escapes regex metacharacters.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The detectors and rules that carry out `change`'s update (not for `fact_update`).
pub fn rules_for(change: &Change) -> (Vec<Value>, Vec<Value>) {
    let u = &change.update;
    let id = ident(&change.id);
    let mut scope = json!({});
    if !u.scope.locales.is_empty() {
        scope["locales"] = json!(u.scope.locales);
    }
    if !u.scope.jurisdictions.is_empty() {
        scope["jurisdictions"] = json!(u.scope.jurisdictions);
    }
    let topic_cond = u
        .scope
        .topic
        .as_ref()
        .map(|t| format!("context.topic == {}", json!(t)));
    let mut rule = json!({
        "id": id.replace('_', "-"),
        "description": format!("{}: {}", change.id, change.description),
        "category": "custom:sim",
        "severity": if change.safety_critical { "critical" } else { "medium" },
        "phase": "output",
        "scope": scope,
    });
    let mut detectors = Vec::new();
    match u.kind.as_str() {
        "rewrite" | "lexicon_term" => {
            // The rule fires only where the old statement is present.
            // `from` is literal text (as the update pipeline reads it), matched case-insensitively.
            let from = format!(
                "(?i){}",
                u.from.as_deref().map(regex_escape).unwrap_or_default()
            );
            detectors.push(json!({"id": id, "kind": "regex",
                                  "description": format!("the statement {} made wrong", change.id),
                                  "patterns": [{"name": "old", "pattern": from}]}));
            let mut cond = format!("signals.{id}.matched");
            if let Some(c) = topic_cond {
                cond = format!("{cond} && {c}");
            }
            rule["when"] = json!(cond);
            rule["action"] = json!({"rewrite": {"from": from, "to": u.to}});
        }
        "escalate" => {
            detectors.push(json!({"id": id, "kind": "lexicon",
                                  "description": format!("terms of {}", change.id),
                                  "terms": u.terms}));
            let mut cond = format!("signals.{id}.matched");
            if let Some(c) = topic_cond {
                cond = format!("{cond} && {c}");
            }
            rule["when"] = json!(cond);
            rule["action"] = json!({"escalate": {
                "message": u.message.clone().unwrap_or_else(|| "A person will follow up on this. / 担当者からご連絡します。".into()),
                "severity": if change.safety_critical { "critical" } else { "high" }}});
        }
        _ => return (Vec::new(), Vec::new()),
    }
    (detectors, vec![rule])
}

/// The default pack's files with `extra` (detectors, rules) added to `policy.yaml`.
pub fn bundle_files(
    extra: &[(Vec<Value>, Vec<Value>)],
) -> Result<std::collections::BTreeMap<String, String>, SimError> {
    let mut files: std::collections::BTreeMap<String, String> = keel_policy::default_pack_files()
        .into_iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect();
    let base = files
        .get("policy.yaml")
        .ok_or_else(|| SimError::Gateway("the default pack has no policy.yaml".into()))?;
    let mut spec: Value = serde_norway::from_str(base)
        .map_err(|e| SimError::Gateway(format!("default pack: {e}")))?;
    for (dets, rules) in extra {
        if let Some(d) = spec["detectors"].as_array_mut() {
            d.extend(dets.iter().cloned());
        }
        if let Some(r) = spec["rules"].as_array_mut() {
            r.extend(rules.iter().cloned());
        }
    }
    spec["name"] = json!("keel-default+sim");
    let text = serde_norway::to_string(&spec)
        .map_err(|e| SimError::Gateway(format!("policy.yaml: {e}")))?;
    files.insert("policy.yaml".into(), text);
    Ok(files)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Scenario;

    #[test]
    fn every_bundled_update_compiles_into_a_passing_bundle() {
        let mut extra = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (name, _) in crate::scenario::BUNDLED {
            let s = Scenario::load(name).unwrap();
            for c in &s.changes {
                // The realistic copies share their originals' changes.
                if seen.insert(c.id.clone()) {
                    extra.push(rules_for(c));
                }
                let sug = suggestion(&c.update, "", &s.tenant);
                assert_eq!(sug["kind"], c.update.kind.as_str());
            }
        }
        let files = bundle_files(&extra).unwrap();
        let files: Vec<(String, String)> = files.into_iter().collect();
        let bundle = keel_policy::Bundle::from_files(&files);
        let policy = keel_policy::Policy::compile(&bundle).unwrap();
        let report = keel_policy::run_tests(&policy);
        assert!(report.ok(), "{report}");
    }

    /// Issue 16 item 5: the operator's tenant key was refused for facts whose scope named no
    /// tenant; the simulator scopes them to the scenario's tenant, suggestion included.
    #[test]
    fn fact_updates_are_scoped_to_the_scenarios_tenant() {
        let given = vec![
            json!({"key": "a", "scope": {"jurisdictions": ["DE"]}}),
            json!({"key": "b"}),
            json!({"key": "c", "scope": {"tenants": ["other"]}}),
        ];
        let got: Vec<Value> = tenant_facts(&given, "shop")
            .iter()
            .map(|f| f["scope"]["tenants"].clone())
            .collect();
        assert_eq!(
            got,
            vec![json!(["shop"]), json!(["shop"]), json!(["other"])]
        );
        let s = Scenario::load("vat-rate").unwrap();
        let sug = suggestion(&s.changes[0].update, "", &s.tenant);
        assert_eq!(
            sug["scope"],
            json!({"tenants": ["shop"], "jurisdictions": ["DE"]})
        );
        assert_eq!(sug["fact"], "de.vat.standard_rate");
    }

    #[test]
    fn escaping() {
        assert_eq!(regex_escape("a.b(c)"), "a\\.b\\(c\\)");
        assert_eq!(regex_escape("障害者"), "障害者");
    }
}
