//! Facts with effective dates: the typed [`Fact`] a registry keeps, validation of a new version
//! against a key's history, and [`FactIndex`], the pure checker that finds statements of a
//! subject with a value in the same sentence and compares them with the fact in force.
//!
//! The index is built once from every version of every fact (a few milliseconds for thousands of
//! facts); a check filters by the request's scope and `context.now`, so a version scheduled for
//! next month takes over by itself when the caller's clock gets there. No IO, no clock reads.
//!
//! Specificity: a longer subject term wins over a shorter one that overlaps it
//! (leftmost-longest), and among facts in force for the same term the one with the narrowest
//! scope wins (tenant > jurisdiction subdivision > jurisdiction = topic > locale), so an
//! exception keeps its own value while the general rule changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::detect::{FactChecker, FactFinding, FactStatus};
use crate::input::EvalContext;
use crate::normalize::{fold, is_word_char, Normalized};

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
fn dedup_versions(facts: Vec<Fact>) -> Vec<Fact> {
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
type Version<'a> = (DateTime<Utc>, Option<DateTime<Utc>>, &'a Fact);

struct Entry {
    key: String,
    value: FactValue,
    scope: FactScope,
    from: DateTime<Utc>,
    /// Explicit end, or the start of the next version of the same key and scope.
    until: Option<DateTime<Utc>>,
    specificity: u32,
}

impl Entry {
    fn in_force(&self, ctx: &EvalContext) -> bool {
        ctx.now >= self.from && self.until.is_none_or(|u| ctx.now < u) && self.scope.matches(ctx)
    }
}

/// The checker: every version of every fact, indexed by subject term. Implements
/// [`FactChecker`]; build it with [`FactIndex::new`] and hand it to
/// [`Policy::set_fact_checker`](crate::Policy::set_fact_checker).
pub struct FactIndex {
    entries: Vec<Entry>,
    /// Per folded term: the entries it names, and whether it needs word boundaries.
    terms: Vec<(Vec<usize>, bool, bool)>,
    ac: Option<AhoCorasick>,
    values: Regex,
}

impl std::fmt::Debug for FactIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactIndex")
            .field("versions", &self.entries.len())
            .field("terms", &self.terms.len())
            .finish()
    }
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn value_regex() -> Result<Regex, String> {
    let month = "(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)";
    let pct_ja = fold("パーセント");
    let pattern = format!(
        r"(?x)
        (?P<iso>(?P<y1>[0-9]{{4}})(?P<sep>[-/.])(?P<m1>[0-9]{{1,2}})[-/.](?P<d1>[0-9]{{1,2}}))
        |(?P<ja>(?P<y2>[0-9]{{4}})\ ?年\ ?(?P<m2>[0-9]{{1,2}})\ ?月\ ?(?P<d2>[0-9]{{1,2}})\ ?日)
        |(?P<en1>(?P<mn3>{month})\.?\ (?P<d3>[0-9]{{1,2}})(?:st|nd|rd|th)?,?\ (?P<y3>[0-9]{{4}}))
        |(?P<en2>(?P<d4>[0-9]{{1,2}})(?:st|nd|rd|th)?\ (?P<mn4>{month})\.?,?\ (?P<y4>[0-9]{{4}}))
        |(?:(?P<pre>[¥$€])\ ?)?(?P<num>[0-9]{{1,3}}(?:,[0-9]{{3}}){{1,5}}(?:\.[0-9]{{1,6}})?|[0-9]{{1,15}}(?:\.[0-9]{{1,6}})?)
         \ ?(?P<mult>万|億|千)?\ ?(?P<unit>%|percent(?-u:\b)|per\ cent(?-u:\b)|{pct_ja}|歳|才|years?(?-u:\b)|yrs?(?-u:\b)|円|yen(?-u:\b)|jpy(?-u:\b)|usd(?-u:\b)|dollars?(?-u:\b)|eur(?-u:\b)|euros?(?-u:\b))?"
    );
    regex::RegexBuilder::new(&pattern)
        .size_limit(1 << 22)
        .build()
        .map_err(|e| e.to_string())
}

/// A value read from the normalised text.
#[derive(Debug, Clone)]
struct Tok {
    /// Whole token (normalised bytes).
    start: usize,
    end: usize,
    /// The part a correction replaces (normalised bytes).
    rstart: usize,
    rend: usize,
    val: TokVal,
}

#[derive(Debug, Clone)]
enum TokVal {
    Num {
        value: f64,
        unit: Option<Unit>,
        mult: f64,
        grouped: bool,
    },
    Date {
        date: NaiveDate,
        style: DateStyle,
    },
}

#[derive(Debug, Clone, Copy)]
enum DateStyle {
    Iso(char, bool),
    Ja,
    MonthDayYear,
    DayMonthYear,
}

fn month_of(name: &str) -> Option<u32> {
    let p = name.get(..3)?;
    MONTHS
        .iter()
        .position(|m| m.starts_with(p))
        .map(|i| i as u32 + 1)
}

fn read_values(re: &Regex, text: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    for caps in re.captures_iter(text) {
        let Some(m) = caps.get(0) else { continue };
        if m.as_str().trim().is_empty() {
            continue;
        }
        // Not inside a word or a longer number.
        let before = text.get(..m.start()).and_then(|t| t.chars().next_back());
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == ',') {
            continue;
        }
        let g = |n: &str| caps.name(n).map(|x| x.as_str());
        let num = |n: &str| g(n).and_then(|s| s.parse::<u32>().ok());
        let date = |y: &str, mo: Option<u32>, d: &str| {
            NaiveDate::from_ymd_opt(num(y)? as i32, mo?, num(d)?)
        };
        let (tok_date, style) = if caps.name("iso").is_some() {
            let sep = g("sep").and_then(|s| s.chars().next()).unwrap_or('-');
            let padded = g("m1").is_some_and(|s| s.len() == 2);
            (date("y1", num("m1"), "d1"), DateStyle::Iso(sep, padded))
        } else if caps.name("ja").is_some() {
            (date("y2", num("m2"), "d2"), DateStyle::Ja)
        } else if caps.name("en1").is_some() {
            (
                date("y3", g("mn3").and_then(month_of), "d3"),
                DateStyle::MonthDayYear,
            )
        } else if caps.name("en2").is_some() {
            (
                date("y4", g("mn4").and_then(month_of), "d4"),
                DateStyle::DayMonthYear,
            )
        } else {
            (None, DateStyle::Ja)
        };
        if caps.name("iso").is_some()
            || caps.name("ja").is_some()
            || caps.name("en1").is_some()
            || caps.name("en2").is_some()
        {
            if let Some(d) = tok_date {
                out.push(Tok {
                    start: m.start(),
                    end: m.end(),
                    rstart: m.start(),
                    rend: m.end(),
                    val: TokVal::Date { date: d, style },
                });
            }
            continue;
        }
        let Some(n) = caps.name("num") else { continue };
        let grouped = n.as_str().contains(',');
        let Ok(value) = n.as_str().replace(',', "").parse::<f64>() else {
            continue;
        };
        let mult = match g("mult") {
            Some("万") => 1e4,
            Some("億") => 1e8,
            Some("千") => 1e3,
            _ => 1.0,
        };
        let unit_text = g("unit").map(|u| {
            if u.starts_with('%') || u.starts_with('p') || u.starts_with('ハ') {
                "%"
            } else {
                u.trim_end_matches('s')
            }
        });
        let unit = match (g("pre"), unit_text) {
            (_, Some("%")) => Some(Unit::Percent),
            (_, Some("歳" | "才" | "year" | "yr")) => Some(Unit::Years),
            (Some("¥"), _) | (_, Some("円" | "yen" | "jpy")) => {
                Some(Unit::Currency("JPY".into()))
            }
            (Some("$"), _) | (_, Some("usd" | "dollar")) => Some(Unit::Currency("USD".into())),
            (Some("€"), _) | (_, Some("eur" | "euro")) => Some(Unit::Currency("EUR".into())),
            _ => None,
        };
        // Trailing spaces the optional parts let in are not part of the token.
        let end = m.start() + m.as_str().trim_end().len();
        out.push(Tok {
            start: m.start(),
            end,
            rstart: n.start(),
            rend: caps.name("mult").map_or(n.end(), |x| x.end()),
            val: TokVal::Num {
                value: value * mult,
                unit,
                mult,
                grouped,
            },
        });
    }
    out
}

/// Whether a token can state a value of `fact`'s type; returns the stated value.
fn stated(tok: &Tok, fact: &FactValue) -> Option<FactValue> {
    match (&tok.val, fact) {
        (TokVal::Num { value, unit, .. }, FactValue::Number { unit: fu, .. }) => {
            let ok = match (unit, fu) {
                (Some(u), fu) => u == fu,
                (None, Unit::Count | Unit::Years) => true,
                (None, _) => false,
            };
            ok.then(|| FactValue::Number {
                value: *value,
                unit: fu.clone(),
            })
        }
        (TokVal::Date { date, .. }, FactValue::Date(_)) => Some(FactValue::Date(*date)),
        _ => None,
    }
}

fn same(a: &FactValue, b: &FactValue) -> bool {
    match (a, b) {
        (FactValue::Number { value: x, unit: u }, FactValue::Number { value: y, unit: v }) => {
            u == v && (x - y).abs() <= 1e-9 * y.abs().max(1.0)
        }
        _ => a == b,
    }
}

fn group_thousands(int: &str) -> String {
    let mut out = String::new();
    let n = int.len();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (n - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_number(v: f64, grouped: bool) -> String {
    let s = format!("{v}");
    if !grouped {
        return s;
    }
    let (sign, rest) = match s.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", s.as_str()),
    };
    let (int, frac) = rest
        .split_once('.')
        .map_or((rest, None), |(a, b)| (a, Some(b)));
    let mut out = format!("{sign}{}", group_thousands(int));
    if let Some(f) = frac {
        out.push('.');
        out.push_str(f);
    }
    out
}

fn to_full_width(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '0'..='9' => char::from_u32(c as u32 - '0' as u32 + 0xFF10).unwrap_or(c),
            '.' => '．',
            ',' => '，',
            _ => c,
        })
        .collect()
}

/// The replacement text for `tok`, written in the stated style, saying `current`.
fn replacement(tok: &Tok, current: &FactValue, full_width: bool) -> Option<String> {
    let s = match (&tok.val, current) {
        (TokVal::Num { mult, grouped, .. }, FactValue::Number { value, .. }) => {
            fmt_number(value / mult, *grouped)
        }
        (TokVal::Date { style, .. }, FactValue::Date(d)) => match style {
            DateStyle::Iso(sep, padded) => {
                if *padded {
                    format!("{}{sep}{:02}{sep}{:02}", d.year(), d.month(), d.day())
                } else {
                    format!("{}{sep}{}{sep}{}", d.year(), d.month(), d.day())
                }
            }
            DateStyle::Ja => format!("{}年{}月{}日", d.year(), d.month(), d.day()),
            DateStyle::MonthDayYear => format!("{} {}, {}", d.format("%B"), d.day(), d.year()),
            DateStyle::DayMonthYear => format!("{} {} {}", d.day(), d.format("%B"), d.year()),
        },
        _ => return None,
    };
    Some(if full_width { to_full_width(&s) } else { s })
}

/// Sentence ends in the normalised text: `。！？!?` and newlines; `.` before a space or the end.
fn is_sentence_end(text: &str, i: usize, c: char) -> bool {
    match c {
        '。' | '!' | '?' | '\n' => true,
        '.' => text
            .get(i + 1..)
            .and_then(|r| r.chars().next())
            .is_none_or(char::is_whitespace),
        _ => false,
    }
}

impl FactIndex {
    /// Builds the index over every version in `facts` (invalid versions are skipped: the
    /// registry validates before it records). For the same key, scope and `effective_from`,
    /// the last one given wins.
    pub fn new(facts: Vec<Fact>) -> Result<FactIndex, String> {
        let facts = dedup_versions(facts);
        let mut entries: Vec<Entry> = Vec::new();
        let mut folded_terms: Vec<String> = Vec::new();
        let mut term_ids: BTreeMap<String, usize> = BTreeMap::new();
        let mut terms: Vec<(Vec<usize>, bool, bool)> = Vec::new();
        for f in &facts {
            let (Ok(value), Ok((from, until))) = (f.typed_value(), f.interval()) else {
                continue;
            };
            let e = entries.len();
            entries.push(Entry {
                key: f.key.clone(),
                value,
                scope: f.scope.clone(),
                from,
                until,
                specificity: f.scope.specificity(),
            });
            for t in f.subjects.values().flatten() {
                let folded = fold(t.trim());
                if folded.is_empty() {
                    continue;
                }
                let id = *term_ids.entry(folded.clone()).or_insert_with(|| {
                    let first = folded.chars().next().is_some_and(is_word_char);
                    let last = folded.chars().next_back().is_some_and(is_word_char);
                    folded_terms.push(folded.clone());
                    terms.push((Vec::new(), first, last));
                    terms.len() - 1
                });
                if let Some(t) = terms.get_mut(id) {
                    if !t.0.contains(&e) {
                        t.0.push(e);
                    }
                }
            }
        }
        // An open-ended version ends where the next version of the same key and scope starts.
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by(|&a, &b| {
            let (x, y) = (&entries[a], &entries[b]);
            (&x.key, &x.scope, x.from).cmp(&(&y.key, &y.scope, y.from))
        });
        for w in order.windows(2) {
            let (a, b) = (w[0], w[1]);
            let (next_from, same) = {
                let (x, y) = (&entries[a], &entries[b]);
                (y.from, x.key == y.key && x.scope == y.scope)
            };
            if same {
                let x = &mut entries[a];
                x.until = Some(x.until.map_or(next_from, |u| u.min(next_from)));
            }
        }
        let ac = if folded_terms.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&folded_terms)
                    .map_err(|e| format!("fact subjects: {e}"))?,
            )
        };
        Ok(FactIndex {
            entries,
            terms,
            ac,
            values: value_regex()?,
        })
    }

    /// Number of fact versions indexed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The longest stretch of a stream the checker needs to see at once (characters): a value
    /// up to [`FACT_WINDOW`] bytes from a subject term, plus the term and the value.
    pub fn stream_span() -> usize {
        FACT_WINDOW + MAX_TERM_CHARS + MAX_VALUE_CHARS
    }

    /// The most specific entry in force for the context among `cands`.
    fn best(&self, cands: &[usize], ctx: &EvalContext) -> Option<&Entry> {
        let mut best: Option<&Entry> = None;
        for &i in cands {
            let Some(e) = self.entries.get(i) else {
                continue;
            };
            if !e.in_force(ctx) {
                continue;
            }
            let better = match best {
                None => true,
                Some(b) => (e.specificity, e.from) > (b.specificity, b.from),
            };
            if better {
                best = Some(e);
            }
        }
        best
    }
}

impl FactChecker for FactIndex {
    fn check(&self, text: &str, context: &EvalContext) -> Vec<FactFinding> {
        let mut out = Vec::new();
        let Some(ac) = &self.ac else { return out };
        let norm = Normalized::new(text, 0);
        let t = norm.text.as_str();
        let mut subjects = Vec::new();
        for m in ac.find_iter(t) {
            let Some((cands, bs, be)) = self.terms.get(m.pattern().as_usize()) else {
                continue;
            };
            if *bs && norm.char_before(m.start()).is_some_and(is_word_char) {
                continue;
            }
            if *be && norm.char_at(m.end()).is_some_and(is_word_char) {
                continue;
            }
            subjects.push((m.start(), m.end(), cands));
        }
        if subjects.is_empty() {
            return out;
        }
        let toks = read_values(&self.values, t);
        let mut claimed = vec![false; toks.len()];
        for (s, e, cands) in subjects {
            // The sentence around the subject, at most FACT_WINDOW bytes either side.
            let lo = s.saturating_sub(FACT_WINDOW);
            let hi = (e + FACT_WINDOW).min(t.len());
            let sent_start = t
                .get(..s)
                .map(|b| {
                    b.char_indices()
                        .rev()
                        .take_while(|(i, _)| *i >= lo)
                        .find(|(i, c)| is_sentence_end(t, *i, *c))
                        .map_or(lo, |(i, c)| i + c.len_utf8())
                })
                .unwrap_or(lo);
            let sent_end = t
                .get(e..)
                .map(|a| {
                    a.char_indices()
                        .take_while(|(i, _)| e + i < hi)
                        .find(|(i, c)| is_sentence_end(t, e + i, *c))
                        .map_or(hi, |(i, _)| e + i)
                })
                .unwrap_or(hi);
            let best = self.best(cands, context);
            let kind_of = best.map(|b| &b.value).or_else(|| {
                cands
                    .first()
                    .and_then(|&i| self.entries.get(i))
                    .map(|e| &e.value)
            });
            let Some(kind_of) = kind_of else { continue };
            // The nearest unclaimed value of the right type in the sentence; after the subject
            // first at equal distance.
            let mut pick: Option<(usize, usize, FactValue)> = None;
            for (k, tok) in toks.iter().enumerate() {
                if claimed.get(k).copied().unwrap_or(true)
                    || tok.start < sent_start
                    || tok.end > sent_end
                    || (tok.start < e && tok.end > s)
                {
                    continue;
                }
                let Some(v) = stated(tok, kind_of) else {
                    continue;
                };
                let dist = if tok.start >= e {
                    tok.start - e
                } else {
                    s.saturating_sub(tok.end) + 1
                };
                if pick.as_ref().is_none_or(|(_, d, _)| dist < *d) {
                    pick = Some((k, dist, v));
                }
            }
            let Some((k, _, stated_v)) = pick else {
                continue;
            };
            if let Some(c) = claimed.get_mut(k) {
                *c = true;
            }
            let Some(tok) = toks.get(k) else { continue };
            let (start, end) = norm.span(tok.rstart, tok.rend);
            let full_width = text
                .get(start..)
                .and_then(|r| r.chars().next())
                .is_some_and(|c| ('\u{FF10}'..='\u{FF19}').contains(&c));
            let finding = match best {
                None => FactFinding {
                    start,
                    end,
                    fact: cands
                        .first()
                        .and_then(|&i| self.entries.get(i))
                        .map(|e| e.key.clone())
                        .unwrap_or_default(),
                    status: FactStatus::Unknown,
                    stated: stated_v.to_string(),
                    current: None,
                    replacement: None,
                },
                Some(b) => {
                    let ok = same(&stated_v, &b.value);
                    FactFinding {
                        start,
                        end,
                        fact: b.key.clone(),
                        status: if ok {
                            FactStatus::Current
                        } else {
                            FactStatus::Stale
                        },
                        stated: stated_v.to_string(),
                        current: Some(b.value.to_string()),
                        replacement: if ok {
                            None
                        } else {
                            replacement(tok, &b.value, full_width)
                        },
                    }
                }
            };
            out.push(finding);
        }
        out.sort_by_key(|f| (f.start, f.end));
        out
    }
}

/// A shared, swappable checker: the gateway swaps the index when the registry changes while
/// compiled policies keep pointing at this holder.
#[derive(Default)]
pub struct SharedFacts {
    inner: std::sync::RwLock<Option<Arc<FactIndex>>>,
}

impl SharedFacts {
    pub fn new() -> Self {
        SharedFacts::default()
    }

    /// Replaces the index.
    pub fn set(&self, index: Arc<FactIndex>) {
        if let Ok(mut g) = self.inner.write() {
            *g = Some(index);
        }
    }

    /// The current index.
    pub fn get(&self) -> Option<Arc<FactIndex>> {
        self.inner.read().ok().and_then(|g| g.clone())
    }
}

impl FactChecker for SharedFacts {
    fn check(&self, text: &str, context: &EvalContext) -> Vec<FactFinding> {
        match self.get() {
            Some(ix) => ix.check(text, context),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EvalInput, Phase, Policy, StreamGuard};

    fn fact(
        key: &str,
        kind: &str,
        value: serde_json::Value,
        from: &str,
        subjects: &[(&str, &[&str])],
    ) -> Fact {
        Fact {
            key: key.into(),
            kind: kind.into(),
            value,
            currency: None,
            scope: FactScope::default(),
            effective_from: from.into(),
            effective_until: None,
            source: "test".into(),
            owner: "test".into(),
            subjects: subjects
                .iter()
                .map(|(l, t)| (l.to_string(), t.iter().map(|s| s.to_string()).collect()))
                .collect(),
        }
    }

    fn tax() -> Vec<Fact> {
        vec![
            fact(
                "jp.consumption_tax",
                "percent",
                8.into(),
                "2014-04-01",
                &[("en", &["consumption tax"]), ("ja", &["消費税"])],
            ),
            fact(
                "jp.consumption_tax",
                "percent",
                10.into(),
                "2019-10-01",
                &[("en", &["consumption tax"]), ("ja", &["消費税"])],
            ),
        ]
    }

    fn ctx(now: &str) -> EvalContext {
        let mut c = EvalContext::new("acme", parse_instant(now).unwrap());
        c.jurisdiction = Some("JP".into());
        c
    }

    /// (status, stated, replacement) per finding.
    fn check(
        facts: Vec<Fact>,
        text: &str,
        c: &EvalContext,
    ) -> Vec<(String, String, Option<String>)> {
        let ix = FactIndex::new(facts).unwrap();
        ix.check(text, c)
            .into_iter()
            .map(|f| {
                assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
                (
                    f.status.as_str().to_string(),
                    text[f.start..f.end].to_string(),
                    f.replacement,
                )
            })
            .collect()
    }

    fn stale(stated: &str, repl: &str) -> (String, String, Option<String>) {
        ("stale".into(), stated.into(), Some(repl.into()))
    }

    #[test]
    fn number_forms_english_and_japanese() {
        let c = ctx("2025-01-01");
        for (text, stated, repl) in [
            ("The consumption tax is 8%.", "8", "10"),
            ("The consumption tax is 8 percent.", "8", "10"),
            ("The consumption tax rate is now 8 per cent", "8", "10"),
            ("消費税は8パーセントです。", "8", "10"),
            ("消費税は８％です。", "８", "１０"),
            ("消費税は８パーセントです", "８", "１０"),
            ("It is 8% consumption tax.", "8", "10"),
        ] {
            assert_eq!(check(tax(), text, &c), vec![stale(stated, repl)], "{text}");
        }
        assert_eq!(
            check(tax(), "The consumption tax is 10%.", &c)[0].0,
            "current"
        );
        assert_eq!(check(tax(), "消費税は１０％です。", &c)[0].0, "current");
    }

    #[test]
    fn value_must_be_in_the_same_sentence_and_of_the_right_kind() {
        let c = ctx("2025-01-01");
        assert!(check(tax(), "The consumption tax applies. Shipping is 8%.", &c).is_empty());
        assert!(check(tax(), "The consumption tax is listed on page 8.", &c).is_empty());
        assert!(check(tax(), "Nothing about taxes at 8%.", &c).is_empty());
    }

    #[test]
    fn effective_dates_switch_by_the_context_clock() {
        assert_eq!(
            check(tax(), "The consumption tax is 10%.", &ctx("2019-09-30"))[0],
            stale("10", "8")
        );
        assert_eq!(
            check(tax(), "The consumption tax is 10%.", &ctx("2019-10-01"))[0].0,
            "current"
        );
        // Before any version: unknown.
        assert_eq!(
            check(tax(), "The consumption tax is 10%.", &ctx("2010-01-01"))[0].0,
            "unknown"
        );
    }

    #[test]
    fn thousands_separators_currency_and_multipliers() {
        let mut f = fact(
            "acme.fee",
            "currency",
            1200.into(),
            "2020-01-01",
            &[("en", &["annual fee"]), ("ja", &["年会費"])],
        );
        f.currency = Some("JPY".into());
        let c = ctx("2025-01-01");
        assert_eq!(
            check(vec![f.clone()], "The annual fee is ¥1,000.", &c),
            vec![stale("1,000", "1,200")]
        );
        assert_eq!(
            check(vec![f.clone()], "The annual fee is 1,200 yen.", &c)[0].0,
            "current"
        );
        assert_eq!(
            check(vec![f.clone()], "年会費は１，０００円です。", &c),
            vec![stale("１，０００", "１，２００")]
        );
        assert!(check(vec![f.clone()], "The annual fee is $1,000.", &c).is_empty());
        let mut big = f;
        big.value = 12000.into();
        assert_eq!(
            check(vec![big], "年会費は1万円です。", &c),
            vec![stale("1万", "1.2")]
        );
    }

    #[test]
    fn dates_in_common_forms() {
        let f = fact(
            "jp.majority.since",
            "date",
            "2022-04-01".into(),
            "2018-06-20",
            &[
                ("en", &["new age of majority"]),
                ("ja", &["成年年齢の引き下げ"]),
            ],
        );
        let c = ctx("2025-01-01");
        assert_eq!(
            check(
                vec![f.clone()],
                "The new age of majority applies from 2022-04-01.",
                &c
            )[0]
            .0,
            "current"
        );
        assert_eq!(
            check(
                vec![f.clone()],
                "The new age of majority applies from 2023/4/1.",
                &c
            ),
            vec![stale("2023/4/1", "2022/4/1")]
        );
        assert_eq!(
            check(
                vec![f.clone()],
                "The new age of majority applies from April 1, 2023.",
                &c
            ),
            vec![stale("april 1, 2023", "April 1, 2022")]
                .into_iter()
                .map(|(a, _, r)| (a, "April 1, 2023".into(), r))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            check(
                vec![f.clone()],
                "The new age of majority applies from 1 April 2023.",
                &c
            ),
            vec![stale("1 April 2023", "1 April 2022")]
        );
        assert_eq!(
            check(
                vec![f],
                "成年年齢の引き下げは２０２３年４月１日からです。",
                &c
            ),
            vec![stale("２０２３年４月１日", "２０２２年４月１日")]
        );
    }

    #[test]
    fn specificity_an_exception_keeps_its_value() {
        // General rate changes to 10%; the food sub-topic keeps 8% (a narrower scope).
        let mut food = fact(
            "jp.consumption_tax.food",
            "percent",
            8.into(),
            "2019-10-01",
            &[("en", &["consumption tax"])],
        );
        food.scope.topic = Some("tax.food".into());
        let mut facts = tax();
        facts.push(food);
        let mut c = ctx("2025-01-01");
        assert_eq!(
            check(facts.clone(), "The consumption tax is 8%.", &c)[0],
            stale("8", "10")
        );
        c.topic = Some("tax.food".into());
        assert_eq!(
            check(facts.clone(), "The consumption tax is 8%.", &c)[0].0,
            "current"
        );
        // A narrower subject term wins over a shorter one it contains.
        let reduced = fact(
            "jp.consumption_tax.reduced",
            "percent",
            8.into(),
            "2019-10-01",
            &[("en", &["reduced consumption tax"])],
        );
        facts.push(reduced);
        c.topic = None;
        assert_eq!(
            check(facts.clone(), "The reduced consumption tax is 8%.", &c)[0].0,
            "current"
        );
        // A tenant-scoped version beats the general one.
        let mut acme = fact(
            "jp.consumption_tax",
            "percent",
            12.into(),
            "2020-01-01",
            &[("en", &["consumption tax"])],
        );
        acme.scope.tenants = vec!["acme".into()];
        facts.push(acme);
        assert_eq!(
            check(facts, "The consumption tax is 10%.", &c)[0],
            stale("10", "12")
        );
    }

    #[test]
    fn unknown_subjects_are_left_alone() {
        let c = ctx("2025-01-01");
        assert!(check(tax(), "The income tax is 20%. VAT is 8%.", &c).is_empty());
        assert!(check(Vec::new(), "The consumption tax is 8%.", &c).is_empty());
    }

    #[test]
    fn bad_fact_input_is_rejected_with_a_clear_error() {
        let mut f = tax().remove(0);
        f.value = "ten".into();
        assert!(f.validate().unwrap_err().contains("must be a number"));
        let mut f = tax().remove(0);
        f.kind = "furlongs".into();
        assert!(f
            .validate()
            .unwrap_err()
            .contains("unknown unit `furlongs`"));
        let mut f = tax().remove(0);
        f.kind = "currency".into();
        f.currency = Some("XYZ".into());
        assert!(f.validate().unwrap_err().contains("unknown currency"));
        let mut f = tax().remove(0);
        f.effective_from = "yesterday".into();
        assert!(f.validate().unwrap_err().contains("effective_from"));
        let mut f = tax().remove(0);
        f.subjects.clear();
        assert!(f.validate().unwrap_err().contains("subjects"));
        // Overlapping explicit validity for the same key and scope.
        let mut a = tax().remove(0);
        a.effective_until = Some("2020-01-01".into());
        let mut b = tax().remove(1);
        b.effective_from = "2019-06-01".into();
        assert!(b
            .check_against(&[a.clone()])
            .unwrap_err()
            .contains("overlaps"));
        // An open-ended version is cut by the next one; another scope never overlaps.
        assert!(tax().remove(1).check_against(&tax()[..1]).is_ok());
        b.scope.jurisdictions = vec!["JP-13".into()];
        assert!(b.check_against(&[a]).is_ok());
    }

    fn policy(facts: Vec<Fact>) -> Arc<Policy> {
        let yaml = r#"
name: t
owner: o
detectors:
  - {id: facts, kind: facts}
rules:
  - id: fix-facts
    category: custom:facts
    phase: output
    when: signals.facts.stale > 0
    action: {correct: {}}
"#;
        let mut p = Policy::from_files(&[("policy.yaml", yaml)]).unwrap();
        p.set_fact_checker(Arc::new(FactIndex::new(facts).unwrap()));
        Arc::new(p)
    }

    fn reply(text: &str) -> EvalInput {
        let body =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "q"}]});
        EvalInput::from_openai_request(&body, ctx("2025-01-01")).with_openai_response(
            &serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}),
        )
    }

    #[test]
    fn correct_action_in_one_shot_and_streams() {
        let p = policy(tax());
        let text = "Yes. The consumption tax is 8% in Japan, and 消費税は８％です。 Thanks.";
        let d = p.evaluate(Phase::Output, &reply(text));
        assert_eq!(d.summary(), "correct");
        let fixed = "Yes. The consumption tax is 10% in Japan, and 消費税は１０％です。 Thanks.";
        assert_eq!(d.text_for(0), Some(fixed));
        assert_eq!(d.facts.len(), 2);
        assert!(d
            .facts
            .iter()
            .all(|f| f.corrected && f.finding.status == FactStatus::Stale));
        // Every split into chunks: the stale value never leaks.
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        for step in [1, 2, 3, 5, 7] {
            let mut g = StreamGuard::new(Arc::clone(&p), reply(""), 0);
            let mut sent = String::new();
            let mut i = 0;
            while i < chars.len() {
                let a = chars[i].0;
                let b = chars.get(i + step).map_or(text.len(), |c| c.0);
                let o = g.push(&text[a..b]);
                assert!(o.blocked.is_none());
                sent.push_str(&o.emit);
                assert!(
                    !sent.contains(" 8%") && !sent.contains("８％"),
                    "leaked: {sent}"
                );
                i += step;
            }
            sent.push_str(&g.finish().emit);
            assert_eq!(sent, fixed, "step {step}");
        }
        // A current statement is never changed.
        let d = p.evaluate(Phase::Output, &reply("The consumption tax is 10%."));
        assert_eq!(d.summary(), "allow");
        assert_eq!(d.facts.len(), 1);
    }

    #[test]
    fn rules_read_fact_signals_for_append_and_escalate() {
        let yaml = r#"
name: t
owner: o
detectors:
  - {id: facts, kind: facts}
rules:
  - id: stale-escalate
    category: custom:facts
    phase: output
    when: signals.facts.stale > 1
    action: {escalate: {message: "A person will check this answer."}}
  - id: unknown-notice
    category: custom:facts
    phase: output
    when: signals.facts.unknown > 0 || "stale" in signals.facts.findings
    action: {append: {notice: "Figures may have changed."}}
"#;
        let mut p = Policy::from_files(&[("policy.yaml", yaml)]).unwrap();
        p.set_fact_checker(Arc::new(FactIndex::new(tax()).unwrap()));
        let d = p.evaluate(Phase::Output, &reply("The consumption tax is 8%."));
        assert_eq!(d.summary(), "append");
        assert_eq!(
            d.text_for(0),
            Some("The consumption tax is 8%.\n\nFigures may have changed.")
        );
        assert!(!d.facts[0].corrected, "no correct rule fired");
        let d = p.evaluate(
            Phase::Output,
            &reply("The consumption tax is 8%, or 消費税は8%."),
        );
        assert_eq!(d.summary(), "escalate");
    }
}
