//! The scenario format (TOML; reference in `docs/scenarios.md`) and its validation.
//!
//! Everything a scenario needs is data: topics and sub-topics with prompts and frozen answers
//! per language or locale, any locales and jurisdictions, several changes with scopes and
//! exceptions, numeric facts, per-jurisdiction rules. Errors name the field.

use std::collections::BTreeMap;

use chrono::DateTime;
use keel_core::Segment;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::SimError;

mod people;
pub use people::{in_hours, Operator, Reviewers};

/// The bundled scenarios: (name, TOML), also in `scenarios/` in the repository.
pub const BUNDLED: &[(&str, &str)] = &[
    (
        "leveraged-products",
        include_str!("../../../scenarios/leveraged-products.toml"),
    ),
    ("ja-term", include_str!("../../../scenarios/ja-term.toml")),
    ("recall", include_str!("../../../scenarios/recall.toml")),
    (
        "leveraged-products-realistic",
        include_str!("../../../scenarios/leveraged-products-realistic.toml"),
    ),
    (
        "ja-term-realistic",
        include_str!("../../../scenarios/ja-term-realistic.toml"),
    ),
    (
        "recall-realistic",
        include_str!("../../../scenarios/recall-realistic.toml"),
    ),
    ("vat-rate", include_str!("../../../scenarios/vat-rate.toml")),
    (
        "jp-majority",
        include_str!("../../../scenarios/jp-majority.toml"),
    ),
    (
        "many-changes",
        include_str!("../../../scenarios/many-changes.toml"),
    ),
];

/// What `keel demo` runs: a fixed showcase within about two minutes (a safety recall with loud
/// users, a fact change with realistic feedback, many changes on one day); `keel simulate` runs
/// any bundled scenario or file.
pub const SHOWCASE: &[&str] = &["recall", "vat-rate", "many-changes"];

/// A parsed, validated scenario. Times are Unix milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub start_ms: i64,
    pub duration_ms: i64,
    pub tick_ms: i64,
    pub tenant: String,
    pub model: String,
    pub traffic: Traffic,
    pub topics: Vec<Topic>,
    pub users: Users,
    pub reviewers: Reviewers,
    pub operator: Operator,
    pub gateway: GatewayKnobs,
    /// Facts registered before the start (the world as the operator knows it at cut-off).
    pub facts: Vec<Value>,
    pub changes: Vec<Change>,
    /// `[judge]`: a judge auditing sampled replies (none without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<crate::judge::JudgeSpec>,
}

/// `[traffic]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Mean conversations started per tick (Poisson arrivals).
    pub conversations_per_tick: f64,
    /// User turns per conversation: `[min, max]`, uniform.
    #[serde(default = "default_turns")]
    pub turns: [u64; 2],
    /// Share of requests sent with `stream: true` (SSE).
    #[serde(default)]
    pub stream_share: f64,
    /// The mix of locales and jurisdictions.
    pub segments: Vec<SegmentMix>,
}

fn default_turns() -> [u64; 2] {
    [1, 1]
}

/// `[[traffic.segments]]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentMix {
    /// Any BCP 47 tag; prompts and answers are looked up by the full tag, then its language.
    pub locale: String,
    pub jurisdiction: String,
    pub weight: f64,
    /// Topic weights for this segment (default: the topics' own weights).
    #[serde(default)]
    pub topics: BTreeMap<String, f64>,
}

/// `[[topics]]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topic {
    /// Sent as `metadata.topic` (what the application knows).
    pub id: String,
    #[serde(default = "one")]
    pub weight: f64,
    pub subtopics: Vec<Subtopic>,
}

fn one() -> f64 {
    1.0
}

/// `[[topics.subtopics]]`: what users ask and what the frozen model answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subtopic {
    pub id: String,
    #[serde(default = "one")]
    pub weight: f64,
    /// Prompt templates per language (`en`) or locale (`ja-JP`).
    pub prompts: BTreeMap<String, Vec<String>>,
    /// The frozen model's answer per language or locale, fixed at its cut-off.
    pub answers: BTreeMap<String, String>,
}

/// Reaction probabilities for one kind of reply.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reaction {
    /// Thumbs down with a complaint comment.
    #[serde(default)]
    pub complaint: f64,
    /// A wrong-answer report (`wrong_answer: true`).
    #[serde(default)]
    pub report: f64,
    /// A request to talk to a person (`/v1/handoffs`).
    #[serde(default)]
    pub handoff: f64,
}

/// `[users]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Users {
    /// Share of replies the user rates (CSAT 1–5).
    #[serde(default = "default_rate_share")]
    pub csat_share: f64,
    /// CSAT distribution (weights of 1..5) when the reply was right by the truth at that time.
    #[serde(default = "default_csat_right")]
    pub csat_right: [f64; 5],
    /// …when it was wrong.
    #[serde(default = "default_csat_wrong")]
    pub csat_wrong: [f64; 5],
    /// …when it was withheld (blocked or escalated).
    #[serde(default = "default_csat_withheld")]
    pub csat_withheld: [f64; 5],
    #[serde(default)]
    pub right: Reaction,
    pub wrong: Reaction,
    #[serde(default)]
    pub withheld: Reaction,
    /// Complaint comments per language or locale.
    #[serde(default = "default_complaints")]
    pub complaint_text: BTreeMap<String, String>,
}

fn default_rate_share() -> f64 {
    0.3
}
fn default_csat_right() -> [f64; 5] {
    [0.02, 0.03, 0.10, 0.35, 0.50]
}
fn default_csat_wrong() -> [f64; 5] {
    [0.35, 0.30, 0.20, 0.10, 0.05]
}
fn default_csat_withheld() -> [f64; 5] {
    [0.10, 0.20, 0.40, 0.20, 0.10]
}
fn default_complaints() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("en".to_string(), "this answer is wrong".to_string()),
        ("ja".to_string(), "この回答は間違っています".to_string()),
    ])
}

/// `[gateway]`: the Keel knobs a sweep varies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayKnobs {
    /// Audit sample rate (`[review] sample_rate`).
    #[serde(default)]
    pub sample_rate: f64,
    /// ADWIN `delta` for the rate and CSAT monitors (smaller = fewer, later alerts).
    #[serde(default = "default_delta")]
    pub delta: f64,
    /// Observations a segment's stream needs before it may alert.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// Smallest change of a rate that counts as an alert (absolute).
    #[serde(default = "default_min_change")]
    pub min_change: f64,
    /// Canary share for continual rollouts, in percent.
    #[serde(default = "default_canary")]
    pub canary_percent: u32,
}

fn default_delta() -> f64 {
    0.002
}
fn default_min_samples() -> u64 {
    30
}
fn default_min_change() -> f64 {
    0.05
}
fn default_canary() -> u32 {
    20
}

impl Default for GatewayKnobs {
    fn default() -> Self {
        Self {
            sample_rate: 0.0,
            delta: default_delta(),
            min_samples: default_min_samples(),
            min_change: default_min_change(),
            canary_percent: default_canary(),
        }
    }
}

/// Where a change applies: the one [`keel_core::Scope`] (empty lists mean "any"; `ja`
/// covers `ja-JP`, `US` covers `US-CA`).
pub type ChangeScope = keel_core::Scope;

/// One change of the world.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub id: String,
    pub description: String,
    pub effective_ms: i64,
    /// In the `announced` variant: the operator update is published on the effective date.
    pub announced: bool,
    pub safety_critical: bool,
    pub scope: ChangeScope,
    /// An answer in scope that contains one of these (case-insensitive) is wrong from now on.
    pub wrong: Vec<String>,
    /// What is right now (a reviewer's corrected response).
    pub right: String,
    /// The operator's update: published on the date when announced; what reviewers suggest.
    pub update: Update,
}

/// The update that fixes a change: a structured suggestion in the review API's vocabulary.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// `rewrite` (literal text `from` → `to`), `lexicon_term` (term `from` → `to`), `escalate`
    /// (replies containing a term of `terms` go to a person; the user sees `message`),
    /// `fact_update` (the versions in `facts` are set).
    pub kind: String,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub terms: Vec<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// Fact versions (`keel facts` JSON shape) for `fact_update`.
    #[serde(default)]
    pub facts: Vec<Value>,
    #[serde(default)]
    pub scope: UpdateScope,
}

/// Where an update applies.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateScope {
    #[serde(default)]
    pub locales: Vec<String>,
    #[serde(default)]
    pub jurisdictions: Vec<String>,
    #[serde(default)]
    pub topic: Option<String>,
}

pub const UPDATE_KINDS: [&str; 4] = ["rewrite", "lexicon_term", "escalate", "fact_update"];

// ---- raw file shape --------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    seed: u64,
    start: String,
    duration: String,
    tick: String,
    #[serde(default = "default_tenant")]
    tenant: String,
    #[serde(default = "default_model")]
    model: String,
    traffic: Traffic,
    topics: Vec<Topic>,
    users: Users,
    #[serde(default)]
    reviewers: Reviewers,
    #[serde(default)]
    operator: Operator,
    #[serde(default)]
    gateway: GatewayKnobs,
    #[serde(default)]
    facts: Vec<Value>,
    #[serde(default)]
    changes: Vec<RawChange>,
    #[serde(default)]
    judge: Option<crate::judge::RawJudge>,
}

fn default_tenant() -> String {
    "sim".into()
}
fn default_model() -> String {
    "frozen".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChange {
    id: String,
    #[serde(default)]
    description: String,
    /// RFC 3339, or an offset from the start (`3d`, `36h`).
    effective: String,
    #[serde(default = "yes")]
    announced: bool,
    #[serde(default)]
    safety_critical: bool,
    #[serde(default)]
    scope: ChangeScope,
    wrong: Vec<String>,
    #[serde(default)]
    right: String,
    update: Update,
}

fn yes() -> bool {
    true
}

pub(crate) fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// `90s`, `30m`, `36h`, `7d`, `2w` (or a plain number of milliseconds).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30m, 36h or 7d"))?;
    let mult = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}` (use s, m, h, d or w)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too long"))
}

fn parse_instant(s: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_millis())
        .map_err(|e| format!("`{s}` is not an RFC 3339 time: {e}"))
}

/// The language part of a locale: `ja-JP` → `ja`.
pub fn language(locale: &str) -> &str {
    locale.split(['-', '_']).next().unwrap_or(locale)
}

/// Looks up a per-language map by full locale, then by language.
pub fn by_locale<'a, T>(map: &'a BTreeMap<String, T>, locale: &str) -> Option<&'a T> {
    map.get(locale).or_else(|| map.get(language(locale)))
}

/// Whether traffic of segment `seg` can ask about `topic` (its topic weight there is above 0).
pub fn asks_about(seg: &SegmentMix, topic: &Topic) -> bool {
    let w = if seg.topics.is_empty() {
        topic.weight
    } else {
        seg.topics.get(&topic.id).copied().unwrap_or(0.0)
    };
    seg.weight > 0.0 && w > 0.0
}

/// Where a simulated slice sits (topic, sub-topic when known, locale, jurisdiction).
pub fn segment<'a>(
    topic: &'a str,
    subtopic: Option<&'a str>,
    locale: &'a str,
    jurisdiction: &'a str,
) -> Segment<'a> {
    Segment {
        tenant: "",
        locale: Some(locale),
        jurisdiction: Some(jurisdiction),
        topic: Some(topic),
        subtopic,
    }
}

impl Scenario {
    /// A bundled scenario by name, or a file by path.
    pub fn load(name_or_path: &str) -> Result<Self, SimError> {
        if let Some((_, text)) = BUNDLED.iter().find(|(n, _)| *n == name_or_path) {
            return Self::parse(text, name_or_path);
        }
        let text = std::fs::read_to_string(name_or_path).map_err(|e| {
            let names: Vec<&str> = BUNDLED.iter().map(|(n, _)| *n).collect();
            SimError::scenario(
                name_or_path,
                format!(
                    "not a bundled scenario ({}) and not a readable file: {e}",
                    names.join(", ")
                ),
            )
        })?;
        Self::parse(&text, name_or_path)
    }

    /// Parses and validates TOML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, SimError> {
        let raw: RawScenario =
            toml::from_str(text).map_err(|e| SimError::scenario(origin, e.to_string()))?;
        let err = |field: &str, msg: String| SimError::scenario(origin, format!("{field}: {msg}"));
        let start_ms = parse_instant(&raw.start).map_err(|e| err("start", e))?;
        let duration_ms = parse_duration(&raw.duration).map_err(|e| err("duration", e))?;
        let tick_ms = parse_duration(&raw.tick).map_err(|e| err("tick", e))?;
        if tick_ms <= 0 || duration_ms < tick_ms {
            return Err(err(
                "tick",
                "must be positive and no longer than `duration`".into(),
            ));
        }
        if duration_ms / tick_ms > 100_000 {
            return Err(err("tick", "more than 100000 ticks".into()));
        }
        let prob = |field: String, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(err(&field, format!("{p} is not a probability (0 to 1)")))
            }
        };
        let t = &raw.traffic;
        if !(t.conversations_per_tick >= 0.0 && t.conversations_per_tick <= 100_000.0) {
            return Err(err(
                "traffic.conversations_per_tick",
                "must be from 0 to 100000".into(),
            ));
        }
        if t.turns[0] == 0 || t.turns[0] > t.turns[1] || t.turns[1] > 50 {
            return Err(err(
                "traffic.turns",
                "expected [min, max] with 1 <= min <= max <= 50".into(),
            ));
        }
        prob("traffic.stream_share".into(), t.stream_share)?;
        if t.segments.is_empty() {
            return Err(err(
                "traffic.segments",
                "at least one locale/jurisdiction".into(),
            ));
        }
        if raw.topics.is_empty() {
            return Err(err("topics", "at least one topic".into()));
        }
        let mut topic_ids = std::collections::BTreeSet::new();
        for (i, topic) in raw.topics.iter().enumerate() {
            if !topic_ids.insert(topic.id.as_str()) {
                return Err(err(
                    &format!("topics[{i}].id"),
                    format!("`{}` is used twice", topic.id),
                ));
            }
            if topic.subtopics.is_empty() {
                return Err(err(
                    &format!("topics[{i}].subtopics"),
                    "at least one".into(),
                ));
            }
            for (j, st) in topic.subtopics.iter().enumerate() {
                let f = format!("topics[{i}].subtopics[{j}]");
                // Only segments that can ask about this topic need its prompts and answers.
                for (k, seg) in t
                    .segments
                    .iter()
                    .enumerate()
                    .filter(|(_, seg)| asks_about(seg, topic))
                {
                    let prompts = by_locale(&st.prompts, &seg.locale);
                    if prompts.is_none_or(|p| p.is_empty()) {
                        return Err(err(
                            &format!("{f}.prompts"),
                            format!(
                                "no prompts for locale `{}` (traffic.segments[{k}]); add `{}` or `{}`",
                                seg.locale,
                                seg.locale,
                                language(&seg.locale)
                            ),
                        ));
                    }
                    if by_locale(&st.answers, &seg.locale).is_none() {
                        return Err(err(
                            &format!("{f}.answers"),
                            format!("no answer for locale `{}`", seg.locale),
                        ));
                    }
                }
            }
        }
        for (k, seg) in t.segments.iter().enumerate() {
            for name in seg.topics.keys() {
                if !topic_ids.contains(name.as_str()) {
                    return Err(err(
                        &format!("traffic.segments[{k}].topics"),
                        format!("unknown topic `{name}`"),
                    ));
                }
            }
        }
        let u = &raw.users;
        prob("users.csat_share".into(), u.csat_share)?;
        for (name, r) in [
            ("right", u.right),
            ("wrong", u.wrong),
            ("withheld", u.withheld),
        ] {
            prob(format!("users.{name}.complaint"), r.complaint)?;
            prob(format!("users.{name}.report"), r.report)?;
            prob(format!("users.{name}.handoff"), r.handoff)?;
        }
        let rv = &raw.reviewers;
        prob("reviewers.accuracy".into(), rv.accuracy)?;
        if rv.hours[0] > 24 || rv.hours[1] > 24 || rv.hours[0] >= rv.hours[1] {
            return Err(err(
                "reviewers.hours",
                "expected [from, to) with 0 <= from < to <= 24".into(),
            ));
        }
        if rv.items_per_hour < 0.0 || rv.latency_ms < 0 {
            return Err(err(
                "reviewers",
                "items_per_hour and latency must not be negative".into(),
            ));
        }
        let op = &raw.operator;
        if op.hours[0] > 24 || op.hours[1] > 24 || op.hours[0] >= op.hours[1] {
            return Err(err(
                "operator.hours",
                "expected [from, to) with 0 <= from < to <= 24".into(),
            ));
        }
        if op.latency_ms < 0 {
            return Err(err("operator.latency", "must not be negative".into()));
        }
        let g = &raw.gateway;
        prob("gateway.sample_rate".into(), g.sample_rate)?;
        if !(g.delta > 0.0 && g.delta < 1.0) {
            return Err(err(
                "gateway.delta",
                "must be between 0 and 1 (exclusive)".into(),
            ));
        }
        if g.canary_percent == 0 || g.canary_percent > 100 {
            return Err(err(
                "gateway.canary_percent",
                "must be from 1 to 100".into(),
            ));
        }
        let mut changes = Vec::with_capacity(raw.changes.len());
        let mut change_ids = std::collections::BTreeSet::new();
        for (i, c) in raw.changes.into_iter().enumerate() {
            let f = format!("changes[{i}]");
            if !change_ids.insert(c.id.clone()) {
                return Err(err(&format!("{f}.id"), format!("`{}` is used twice", c.id)));
            }
            let effective_ms = match parse_instant(&c.effective) {
                Ok(ms) => ms,
                Err(_) => {
                    start_ms
                        + parse_duration(&c.effective).map_err(|e| {
                            err(
                                &format!("{f}.effective"),
                                format!("{e}; or give an RFC 3339 time"),
                            )
                        })?
                }
            };
            if let Some(topic) = &c.scope.topic {
                let Some(tp) = raw.topics.iter().find(|t| &t.id == topic) else {
                    return Err(err(
                        &format!("{f}.scope.topic"),
                        format!("unknown topic `{topic}`"),
                    ));
                };
                for s in c.scope.subtopics.iter().chain(&c.scope.except_subtopics) {
                    if !tp.subtopics.iter().any(|x| &x.id == s) {
                        return Err(err(
                            &format!("{f}.scope.subtopics"),
                            format!("`{s}` is not a sub-topic of `{topic}`"),
                        ));
                    }
                }
            } else if !c.scope.subtopics.is_empty() || !c.scope.except_subtopics.is_empty() {
                return Err(err(
                    &format!("{f}.scope.subtopics"),
                    "sub-topics need a `topic`".into(),
                ));
            }
            if c.wrong.iter().all(|w| w.trim().is_empty()) {
                return Err(err(
                    &format!("{f}.wrong"),
                    "at least one non-empty marker of the now-wrong answer".into(),
                ));
            }
            let up = &c.update;
            if !UPDATE_KINDS.contains(&up.kind.as_str()) {
                return Err(err(
                    &format!("{f}.update.kind"),
                    format!("`{}`: expected one of {}", up.kind, UPDATE_KINDS.join(", ")),
                ));
            }
            let need = |ok: bool, what: &str| {
                if ok {
                    Ok(())
                } else {
                    Err(err(
                        &format!("{f}.update"),
                        format!("`{}` needs {what}", up.kind),
                    ))
                }
            };
            match up.kind.as_str() {
                "rewrite" | "lexicon_term" => {
                    need(up.from.is_some() && up.to.is_some(), "`from` and `to`")?;
                    if up
                        .from
                        .as_deref()
                        .is_some_and(|f| f.trim().is_empty() || f.len() > 200)
                    {
                        return Err(err(
                            &format!("{f}.update.from"),
                            "expected 1 to 200 characters of literal text".into(),
                        ));
                    }
                }
                "escalate" => need(!up.terms.is_empty(), "`terms`")?,
                _ => need(!up.facts.is_empty(), "`facts`")?,
            }
            changes.push(Change {
                id: c.id,
                description: c.description,
                effective_ms,
                announced: c.announced,
                safety_critical: c.safety_critical,
                scope: c.scope,
                wrong: c.wrong,
                right: c.right,
                update: c.update,
            });
        }
        let ids: Vec<&str> = changes.iter().map(|c: &Change| c.id.as_str()).collect();
        let judge = match &raw.judge {
            Some(j) => Some(j.validate(&ids).map_err(|(f, m)| err(&f, m))?),
            None => None,
        };
        Ok(Scenario {
            judge,
            name: raw.name,
            description: raw.description,
            seed: raw.seed,
            start_ms,
            duration_ms,
            tick_ms,
            tenant: raw.tenant,
            model: raw.model,
            traffic: raw.traffic,
            topics: raw.topics,
            users: raw.users,
            reviewers: raw.reviewers,
            operator: raw.operator,
            gateway: raw.gateway,
            facts: raw.facts,
            changes,
        })
    }

    pub fn ticks(&self) -> u64 {
        (self.duration_ms / self.tick_ms) as u64
    }

    /// A sweep: `KEY=V` applied to this scenario. Keys: `sample_rate`, `delta`,
    /// `min_samples`, `min_change`, `canary_percent`, `reviewers`, `reviewer_accuracy`,
    /// `reviewer_latency`, `rate`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), SimError> {
        let bad = || SimError::Usage(format!("sweep: `{value}` is not a valid value for `{key}`"));
        let f = || value.parse::<f64>().map_err(|_| bad());
        match key {
            "sample_rate" => self.gateway.sample_rate = f()?.clamp(0.0, 1.0),
            "delta" => self.gateway.delta = f()?,
            "min_samples" => self.gateway.min_samples = value.parse().map_err(|_| bad())?,
            "min_change" => self.gateway.min_change = f()?,
            "canary_percent" => self.gateway.canary_percent = value.parse().map_err(|_| bad())?,
            "reviewers" => self.reviewers.count = value.parse().map_err(|_| bad())?,
            "reviewer_accuracy" => self.reviewers.accuracy = f()?.clamp(0.0, 1.0),
            "reviewer_latency" => {
                self.reviewers.latency_ms = parse_duration(value).map_err(|_| bad())?
            }
            "rate" => self.traffic.conversations_per_tick = f()?,
            _ => {
                return Err(SimError::Usage(format!(
                    "sweep: unknown key `{key}` (sample_rate, delta, min_samples, min_change, \
                     canary_percent, reviewers, reviewer_accuracy, reviewer_latency, rate)"
                )))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
