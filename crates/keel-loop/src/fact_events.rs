//! Facts as events: a `FactSet` event per version (actor, reason), validated against the key's
//! history; the registry is the list of those events. Bulk import from YAML or CSV.

use keel_core::NewEvent;
use keel_policy::{Fact, FactIndex};
use serde_json::json;

use crate::update::GLOBAL_SCOPE;
use crate::LoopError;

/// The event kind that sets one version of a fact.
pub const FACT_SET: &str = keel_core::EventKind::FACT_SET;

/// The tenant a fact's events are recorded for: its one tenant, else `*`.
pub fn fact_tenant(fact: &Fact) -> &str {
    match fact.scope.tenants.as_slice() {
        [one] => one.as_str(),
        _ => GLOBAL_SCOPE,
    }
}

/// The `FactSet` event for `fact`, checked on its own and against `existing` versions (wrong
/// type, unknown unit, bad dates, overlapping validity for the same key and scope are errors).
pub fn fact_set_event(
    fact: &Fact,
    existing: &[Fact],
    reason: &str,
    actor: &str,
    at_ms: i64,
) -> Result<NewEvent, LoopError> {
    if reason.trim().is_empty() {
        return Err(LoopError::Invalid("setting a fact needs a reason".into()));
    }
    fact.check_against(existing).map_err(LoopError::Invalid)?;
    Ok(NewEvent {
        kind: FACT_SET.to_string(),
        actor: actor.to_string(),
        tenant: fact_tenant(fact).to_string(),
        at_ms,
        payload: json!({"fact": fact, "reason": reason}),
    })
}

/// Events for a batch (each checked against the history and the batch before it).
pub fn fact_set_events(
    facts: &[Fact],
    existing: &[Fact],
    reason: &str,
    actor: &str,
    at_ms: i64,
) -> Result<Vec<NewEvent>, LoopError> {
    let mut all = existing.to_vec();
    let mut out = Vec::with_capacity(facts.len());
    for (i, f) in facts.iter().enumerate() {
        let ev = fact_set_event(f, &all, reason, actor, at_ms).map_err(|e| {
            if facts.len() > 1 {
                LoopError::Invalid(format!("fact #{}: {e}", i + 1))
            } else {
                e
            }
        })?;
        all.push(f.clone());
        out.push(ev);
    }
    Ok(out)
}

/// The fact of a `FactSet` payload's `fact` value (`None` if erased or unreadable).
pub fn fact_from_value(v: &serde_json::Value) -> Option<Fact> {
    if v.is_null() {
        return None;
    }
    serde_json::from_value(v.clone()).ok()
}

/// The checker over every version.
pub fn index(facts: Vec<Fact>) -> Result<FactIndex, LoopError> {
    FactIndex::new(facts).map_err(LoopError::State)
}

/// Reads facts from YAML (a list of facts, or `{facts: [...]}`) or CSV (header row; columns
/// `key,kind,value,currency,effective_from,effective_until,tenants,locales,jurisdictions,topic,
/// source,owner,subjects_en,subjects_ja`; lists separated by `|`). `name` picks the format by
/// its extension.
pub fn parse_import(name: &str, text: &str) -> Result<Vec<Fact>, LoopError> {
    let lower = name.to_ascii_lowercase();
    let facts = if lower.ends_with(".csv") {
        parse_csv(text)?
    } else if lower.ends_with(".yaml") || lower.ends_with(".yml") || lower.ends_with(".json") {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Doc {
            List(Vec<Fact>),
            Wrapped { facts: Vec<Fact> },
        }
        let doc: Doc =
            serde_norway::from_str(text).map_err(|e| LoopError::Invalid(format!("{name}: {e}")))?;
        match doc {
            Doc::List(f) | Doc::Wrapped { facts: f } => f,
        }
    } else {
        return Err(LoopError::Invalid(format!(
            "{name}: use a .yaml, .yml, .json or .csv file"
        )));
    };
    for (i, f) in facts.iter().enumerate() {
        f.validate()
            .map_err(|e| LoopError::Invalid(format!("{name}: fact #{}: {e}", i + 1)))?;
    }
    Ok(facts)
}

/// A value given as text (CLI flag, CSV cell) as the JSON a fact of `kind` holds: numbers
/// (thousands separators `,` and `_` allowed), `true`/`false`, else the text itself (which
/// validation then rejects for numeric kinds).
pub fn value_from_text(kind: &str, raw: &str) -> serde_json::Value {
    match kind {
        "percent" | "years" | "currency" | "count" => raw
            .replace([',', '_'], "")
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| serde_json::Value::String(raw.to_string())),
        "boolean" => match raw {
            "true" => serde_json::Value::Bool(true),
            "false" => serde_json::Value::Bool(false),
            _ => serde_json::Value::String(raw.to_string()),
        },
        _ => serde_json::Value::String(raw.to_string()),
    }
}

/// Splits one CSV line (double quotes, `""` inside quotes).
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn parse_csv(text: &str) -> Result<Vec<Fact>, LoopError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = csv_fields(lines.next().unwrap_or(""));
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    for required in ["key", "kind", "value", "effective_from"] {
        if col(required).is_none() {
            return Err(LoopError::Invalid(format!(
                "CSV: missing column `{required}`"
            )));
        }
    }
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        let fields = csv_fields(line);
        let get = |name: &str| {
            col(name)
                .and_then(|i| fields.get(i))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let list = |name: &str| -> Vec<String> {
            get(name)
                .split('|')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let kind = get("kind");
        let raw = get("value");
        let value = value_from_text(&kind, &raw);
        let mut subjects = std::collections::BTreeMap::new();
        for lang in ["en", "ja"] {
            let terms = list(&format!("subjects_{lang}"));
            if !terms.is_empty() {
                subjects.insert(lang.to_string(), terms);
            }
        }
        let opt = |name: &str| Some(get(name)).filter(|s| !s.is_empty());
        let fact = Fact {
            key: get("key"),
            kind,
            value,
            currency: opt("currency"),
            scope: keel_policy::FactScope {
                tenants: list("tenants"),
                locales: list("locales"),
                jurisdictions: list("jurisdictions"),
                topic: opt("topic"),
                ..keel_policy::FactScope::default()
            },
            effective_from: get("effective_from"),
            effective_until: opt("effective_until"),
            source: get("source"),
            owner: get("owner"),
            subjects,
        };
        fact.validate()
            .map_err(|e| LoopError::Invalid(format!("CSV line {}: {e}", n + 2)))?;
        out.push(fact);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
facts:
  - key: jp.consumption_tax
    kind: percent
    value: 10
    effective_from: 2019-10-01
    source: 消費税法
    owner: tax-team
    subjects: {en: [consumption tax], ja: [消費税]}
"#;

    #[test]
    fn imports_yaml_and_csv() {
        let y = parse_import("f.yaml", YAML).unwrap();
        assert_eq!(y[0].key, "jp.consumption_tax");
        let csv = "key,kind,value,effective_from,jurisdictions,subjects_en,subjects_ja\n\
                   jp.consumption_tax,percent,10,2019-10-01,JP,\"consumption tax|sales tax\",消費税\n";
        let c = parse_import("f.csv", csv).unwrap();
        assert_eq!(c[0].scope.jurisdictions, vec!["JP"]);
        assert_eq!(c[0].subjects["en"], vec!["consumption tax", "sales tax"]);
        assert_eq!(c[0].value, serde_json::json!(10.0));
        let bad = "key,kind,value,effective_from,subjects_en\nk,furlongs,1,2020-01-01,x\n";
        let e = parse_import("f.csv", bad).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("unknown unit"), "{e}");
    }

    #[test]
    fn events_are_validated_against_history() {
        let f = parse_import("f.yaml", YAML).unwrap().remove(0);
        let ev = fact_set_event(&f, &[], "initial", "cli:ann", 1).unwrap();
        assert_eq!(ev.kind, FACT_SET);
        assert_eq!(ev.tenant, "*");
        assert_eq!(fact_from_value(&ev.payload["fact"]), Some(f.clone()));
        assert!(fact_set_event(&f, &[], " ", "x", 1).is_err());
        let mut a = f.clone();
        a.effective_until = Some("2030-01-01".into());
        let mut b = f.clone();
        b.effective_from = "2025-01-01".into();
        let e = fact_set_events(&[a, b], &[], "r", "x", 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlaps"), "{e}");
    }
}
