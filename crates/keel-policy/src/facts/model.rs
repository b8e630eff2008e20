//! The fact model: a typed [`Fact`] version (key, value and unit, scope, effective dates,
//! subjects), its validation against a key's history, and which versions are in force when.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::input::EvalContext;

/// How far (in bytes of the normalised text) a value may be from its subject.
pub const FACT_WINDOW: usize = 96;
/// Subject terms are limited to this many characters.
pub const MAX_TERM_CHARS: usize = 64;
/// Longest value token the checker reads, in characters (`September 30th, 2025`).
pub const MAX_VALUE_CHARS: usize = 32;

/// The units a fact's value can have (`kind:` of a fact).
pub const FACT_KINDS: &[&str] = &[
    "percent", "years", "currency", "count", "date", "string", "boolean",
];

/// Where a fact applies: the one [`keel_core::Scope`] (facts use tenants, locales,
/// jurisdictions and topic; no sub-topics).
pub type FactScope = keel_core::Scope;

/// Fact-specific readings of a [`FactScope`].
pub trait FactScopeExt {
    /// Whether the scope covers the request context (time aside).
    fn matches(&self, ctx: &EvalContext) -> bool;
    /// Higher is narrower.
    fn specificity(&self) -> u32;
}

impl FactScopeExt for FactScope {
    fn matches(&self, ctx: &EvalContext) -> bool {
        self.covers(&ctx.segment())
    }

    fn specificity(&self) -> u32 {
        let mut s = 0;
        if !self.tenants.is_empty() {
            s += 16;
        }
        if !self.jurisdictions.is_empty() {
            s += 4;
            if self.jurisdictions.iter().all(|j| j.contains('-')) {
                s += 2;
            }
        }
        if let Some(t) = &self.topic {
            s += 4 + 2 * t.matches(['.', '/']).count() as u32;
        }
        if !self.locales.is_empty() {
            s += 1;
        }
        s
    }
}

/// One version of a fact, as set by a `FactSet` event or imported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fact {
    /// Dotted key, e.g. `jp.consumption_tax.standard_rate`.
    pub key: String,
    /// One of [`FACT_KINDS`].
    pub kind: String,
    /// A number (percent, years, currency, count), `YYYY-MM-DD` (date), a string, a boolean.
    pub value: serde_json::Value,
    /// ISO 4217 code for `currency` facts (`JPY`, `USD`, `EUR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default)]
    pub scope: FactScope,
    /// RFC 3339 or `YYYY-MM-DD` (midnight UTC); inclusive.
    pub effective_from: String,
    /// Exclusive; absent = until the next version of the same key and scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_until: Option<String>,
    /// Citation: a law, a notice, a URL.
    #[serde(default)]
    pub source: String,
    /// The accountable person or team.
    #[serde(default)]
    pub owner: String,
    /// Subject terms per language (`en`, `ja`, …): how the fact is named in text.
    #[serde(default)]
    pub subjects: BTreeMap<String, Vec<String>>,
}

/// A fact's value, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum FactValue {
    Number { value: f64, unit: Unit },
    Date(NaiveDate),
    Text(String),
    Bool(bool),
}

/// The unit of a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    Percent,
    Years,
    Currency(String),
    Count,
}

impl std::fmt::Display for FactValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FactValue::Number { value, unit } => match unit {
                Unit::Percent => write!(f, "{value}%"),
                Unit::Years => write!(f, "{value} years"),
                Unit::Currency(c) => write!(f, "{value} {c}"),
                Unit::Count => write!(f, "{value}"),
            },
            FactValue::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            FactValue::Text(s) => f.write_str(s),
            FactValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Parses `RFC 3339` or `YYYY-MM-DD` (midnight UTC).
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.to_utc());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("`{s}` is not an RFC 3339 time or a YYYY-MM-DD date"))
}

impl Fact {
    /// The typed value; errors name the key and what is wrong.
    pub fn typed_value(&self) -> Result<FactValue, String> {
        let key = &self.key;
        let num = || {
            self.value
                .as_f64()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    format!(
                        "fact `{key}`: a `{}` value must be a number, got {}",
                        self.kind, self.value
                    )
                })
        };
        Ok(match self.kind.as_str() {
            "percent" => FactValue::Number {
                value: num()?,
                unit: Unit::Percent,
            },
            "years" => FactValue::Number {
                value: num()?,
                unit: Unit::Years,
            },
            "count" => FactValue::Number {
                value: num()?,
                unit: Unit::Count,
            },
            "currency" => {
                let code = self
                    .currency
                    .as_deref()
                    .map(str::to_ascii_uppercase)
                    .ok_or_else(|| {
                        format!("fact `{key}`: a `currency` value needs `currency: JPY|USD|EUR`")
                    })?;
                if !["JPY", "USD", "EUR"].contains(&code.as_str()) {
                    return Err(format!(
                        "fact `{key}`: unknown currency `{code}` (JPY, USD, EUR)"
                    ));
                }
                FactValue::Number {
                    value: num()?,
                    unit: Unit::Currency(code),
                }
            }
            "date" => {
                let s = self.value.as_str().ok_or_else(|| {
                    format!(
                        "fact `{key}`: a `date` value must be a YYYY-MM-DD string, got {}",
                        self.value
                    )
                })?;
                FactValue::Date(
                    NaiveDate::parse_from_str(s, "%Y-%m-%d")
                        .map_err(|_| format!("fact `{key}`: `{s}` is not a YYYY-MM-DD date"))?,
                )
            }
            "string" => FactValue::Text(
                self.value
                    .as_str()
                    .ok_or_else(|| {
                        format!(
                            "fact `{key}`: a `string` value must be a string, got {}",
                            self.value
                        )
                    })?
                    .to_string(),
            ),
            "boolean" => FactValue::Bool(self.value.as_bool().ok_or_else(|| {
                format!(
                    "fact `{key}`: a `boolean` value must be true or false, got {}",
                    self.value
                )
            })?),
            other => {
                return Err(format!(
                    "fact `{key}`: unknown unit `{other}` ({})",
                    FACT_KINDS.join(", ")
                ))
            }
        })
    }

    /// The validity interval as written (`until` explicit only).
    pub fn interval(&self) -> Result<(DateTime<Utc>, Option<DateTime<Utc>>), String> {
        let key = &self.key;
        let from = parse_instant(&self.effective_from)
            .map_err(|e| format!("fact `{key}`: effective_from: {e}"))?;
        let until = match &self.effective_until {
            None => None,
            Some(u) => {
                Some(parse_instant(u).map_err(|e| format!("fact `{key}`: effective_until: {e}"))?)
            }
        };
        if until.is_some_and(|u| u <= from) {
            return Err(format!(
                "fact `{key}`: effective_from must be before effective_until"
            ));
        }
        Ok((from, until))
    }

    /// Checks the fact on its own: key, type, unit, dates, subject terms.
    pub fn validate(&self) -> Result<(), String> {
        let key = &self.key;
        if key.is_empty()
            || key.len() > 128
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(format!(
                "fact key `{key}` must be 1-128 characters of letters, digits, `.`, `_`, `-`"
            ));
        }
        self.typed_value()?;
        self.interval()?;
        if !self.scope.subtopics.is_empty() || !self.scope.except_subtopics.is_empty() {
            return Err(format!(
                "fact `{key}`: a fact's scope has no sub-topics (use `topic: a.b`)"
            ));
        }
        let mut n = 0;
        for (lang, terms) in &self.subjects {
            for t in terms {
                let chars = t.trim().chars().count();
                if chars == 0 || chars > MAX_TERM_CHARS {
                    return Err(format!(
                        "fact `{key}`: subject term `{t}` ({lang}) must be 1-{MAX_TERM_CHARS} characters"
                    ));
                }
                n += 1;
            }
        }
        if n == 0 {
            return Err(format!(
                "fact `{key}`: `subjects` needs at least one term (e.g. `en: [consumption tax]`)"
            ));
        }
        Ok(())
    }

    /// Checks a new version against the existing versions (any keys; other keys are ignored):
    /// validity intervals of the same key and scope must not overlap, except that an open-ended
    /// version ends where a later one starts, and a version with the same `effective_from`
    /// replaces the earlier one (a correction).
    pub fn check_against(&self, existing: &[Fact]) -> Result<(), String> {
        self.validate()?;
        let (from, until) = self.interval()?;
        for e in existing
            .iter()
            .filter(|e| e.key == self.key && e.scope == self.scope)
        {
            let Ok((ef, eu)) = e.interval() else { continue };
            if ef == from {
                continue;
            }
            // Explicit ends only: an open-ended version is cut by the next one.
            let overlap = match (ef < from, eu, until) {
                (true, Some(eu), _) => eu > from,
                (false, _, Some(u)) => u > ef,
                _ => false,
            };
            if overlap {
                return Err(format!(
                    "fact `{}`: validity {}..{} overlaps the version from {} for the same key and scope",
                    self.key,
                    self.effective_from,
                    self.effective_until.as_deref().unwrap_or(""),
                    e.effective_from
                ));
            }
        }
        Ok(())
    }
}

/// The latest versions win: keeps, per (key, scope, effective_from), the last of `facts`.
pub(super) fn dedup_versions(facts: Vec<Fact>) -> Vec<Fact> {
    let mut by: BTreeMap<(String, FactScope, i64), Fact> = BTreeMap::new();
    for f in facts {
        let from = f.interval().map(|(f, _)| f.timestamp_millis()).unwrap_or(0);
        by.insert((f.key.clone(), f.scope.clone(), from), f);
    }
    by.into_values().collect()
}

/// For each key and scope, the version in force at `at` (explicit ends and the next version's
/// start both end a version), with its effective end; sorted by key. For listings: requests
/// use [`FactIndex`], which also applies the request's scope.
pub fn in_force_at(facts: &[Fact], at: DateTime<Utc>) -> Vec<(Fact, Option<DateTime<Utc>>)> {
    let mut groups: BTreeMap<(String, FactScope), Vec<Version<'_>>> = BTreeMap::new();
    for f in facts {
        if let Ok((from, until)) = f.interval() {
            groups
                .entry((f.key.clone(), f.scope.clone()))
                .or_default()
                .push((from, until, f));
        }
    }
    let mut out = Vec::new();
    for (_, mut versions) in groups {
        // The last given wins among versions with the same start.
        versions.sort_by_key(|v| v.0);
        let mut dedup: Vec<Version<'_>> = Vec::new();
        for v in versions {
            match dedup.last_mut() {
                Some(last) if last.0 == v.0 => *last = v,
                _ => dedup.push(v),
            }
        }
        for (i, (from, until, f)) in dedup.iter().enumerate() {
            let next = dedup.get(i + 1).map(|n| n.0);
            let end = match (until, next) {
                (Some(u), Some(n)) => Some((*u).min(n)),
                (Some(u), None) => Some(*u),
                (None, n) => n,
            };
            if *from <= at && end.is_none_or(|e| at < e) {
                out.push(((*f).clone(), end));
            }
        }
    }
    out
}

/// A version with its start and explicit end.
pub(super) type Version<'a> = (DateTime<Utc>, Option<DateTime<Utc>>, &'a Fact);
