//! The monitor: one drift detector per (metric, segment), fed observations in log order.

use std::collections::{BTreeMap, VecDeque};

use keel_core::{NewEvent, StoredEvent};
use keel_drift::{AnyDetector, Detector, DetectorSpec};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::metrics::{observations, Observation, Segment};
use super::slices::{rate_observations, Interval, RateAlert, SliceConfig, Slices};
use crate::LoopError;
use keel_drift::rate::RateConfig;

/// Which detector watches which metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorRule {
    pub metric: String,
    /// A detector spec, e.g. `adwin:delta=0.002` (see `keel drift replay --help`).
    pub detector: String,
    /// Practical significance: ignore a detected change smaller than this (absolute, in the
    /// metric's unit; e.g. 0.05 = 5 percentage points for a rate).
    #[serde(default)]
    pub min_change: Option<f64>,
    /// …or smaller than this fraction of the value before (e.g. 0.5 = ±50 % for latency).
    #[serde(default)]
    pub min_relative_change: Option<f64>,
}

impl MonitorRule {
    fn material(&self, before: Option<f64>, after: Option<f64>) -> bool {
        let (Some(b), Some(a)) = (before, after) else {
            return true;
        };
        let d = (a - b).abs();
        self.min_change.is_none_or(|m| d >= m)
            && self
                .min_relative_change
                .is_none_or(|r| d >= r * b.abs().max(f64::EPSILON))
    }
}

/// Monitor settings (`[monitors]` in keel.toml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    #[serde(default = "default_rules")]
    pub rules: Vec<MonitorRule>,
    /// Observations a segment's stream needs before it may alert.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// No second alert for the same (metric, segment) within this time.
    #[serde(default = "default_cooldown_ms")]
    pub cooldown_ms: i64,
    /// Sample interaction ids kept as evidence per stream.
    #[serde(default = "default_evidence")]
    pub evidence: usize,
    /// Scale detector sensitivity by the number of active segments (Bonferroni).
    #[serde(default = "default_true")]
    pub scale_by_segments: bool,
    /// Feedback whose comment mentions one of these (case-insensitive) counts as a complaint:
    /// the `complaint_rate` metric, per segment and topic.
    #[serde(default)]
    pub complaint_terms: Vec<String>,
    /// The low-rate monitors per (segment, answer cluster), (segment, topic) and roll-ups.
    #[serde(default)]
    pub slices: SliceConfig,
}

fn default_rules() -> Vec<MonitorRule> {
    // Rates alert on a change of at least 5 points, CSAT on 0.5, latency on ±50 %. The
    // low-rate signals (complaints, reports, thumbs-down, low CSAT, handoffs, learned scores,
    // stale facts, judge verdicts) are watched per slice by `[monitors.slices]` instead.
    [
        ("upstream_error_rate", "adwin:delta=0.002", Some(0.05), None),
        ("refusal_rate", "adwin:delta=0.002", Some(0.05), None),
        ("block_rate", "adwin:delta=0.002", Some(0.05), None),
        ("escalate_rate", "adwin:delta=0.002", Some(0.05), None),
        ("redact_rate", "adwin:delta=0.002", Some(0.05), None),
        ("latency_ms", "adwin:delta=0.0001", None, Some(0.5)),
        ("csat", "adwin:delta=0.002", Some(0.5), None),
        ("rule_category_rate", "adwin:delta=0.002", Some(0.05), None),
    ]
    .into_iter()
    .map(|(m, d, abs, rel)| MonitorRule {
        metric: m.to_string(),
        detector: d.to_string(),
        min_change: abs,
        min_relative_change: rel,
    })
    .collect()
}
fn default_min_samples() -> u64 {
    30
}
fn default_cooldown_ms() -> i64 {
    10 * 60 * 1000
}
fn default_evidence() -> usize {
    5
}
fn default_true() -> bool {
    true
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            rules: default_rules(),
            min_samples: default_min_samples(),
            cooldown_ms: default_cooldown_ms(),
            evidence: default_evidence(),
            scale_by_segments: true,
            complaint_terms: Vec::new(),
            slices: SliceConfig::default(),
        }
    }
}

impl MonitorConfig {
    /// Checks every rule's detector spec.
    pub fn validate(&self) -> Result<(), LoopError> {
        for r in &self.rules {
            DetectorSpec::parse(&r.detector)
                .map_err(|e| LoopError::Config(format!("monitor for `{}`: {e}", r.metric)))?;
        }
        self.rate_config()?;
        Ok(())
    }

    /// The slices' rate detector.
    pub fn rate_config(&self) -> Result<RateConfig, LoopError> {
        RateConfig::parse(&self.slices.detector)
            .map_err(|e| LoopError::Config(format!("monitors.slices.detector: {e}")))
    }
}

/// An alert the caller turns into an `AlertRaised` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertDraft {
    pub metric: String,
    pub segment: Segment,
    pub detector: String,
    pub before: Option<f64>,
    pub after: Option<f64>,
    pub evidence: Vec<String>,
    pub severity: &'static str,
    /// The event that raised it.
    pub seq: i64,
    pub at_ms: i64,
    /// Observations in this stream so far.
    pub samples: u64,
    /// `{tenant, locale, jurisdiction, topic, policy_version, cluster, level}`.
    pub slice: serde_json::Value,
    /// Rate signals: the slice's baseline and recent rate with Wilson intervals.
    pub baseline: Option<Interval>,
    pub current: Option<Interval>,
    /// The first suspicious interaction of the run that raised it.
    pub first_interaction: Option<String>,
    /// Alerts on one answer cluster share a group (one open alert, one review item).
    pub group: String,
}

impl AlertDraft {
    /// The `AlertRaised` event, with `id` assigned by the caller.
    pub fn to_event(&self, id: &str) -> NewEvent {
        NewEvent {
            kind: keel_core::EventKind::ALERT_RAISED.to_string(),
            actor: "monitor".to_string(),
            tenant: self.segment.tenant.clone(),
            at_ms: self.at_ms,
            payload: json!({
                "id": id,
                "metric": self.metric,
                "segment": self.segment,
                "segment_key": self.segment.key(),
                "detector": self.detector,
                "before": self.before,
                "after": self.after,
                "evidence": self.evidence,
                "severity": self.severity,
                "raised_by_seq": self.seq,
                "samples": self.samples,
                "slice": self.slice,
                "baseline": self.baseline,
                "current": self.current,
                "first_interaction": self.first_interaction,
                "group": self.group,
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stream {
    detector: AnyDetector,
    spec: String,
    n: u64,
    evidence: VecDeque<String>,
    /// The most recent values: their mean is the "after" estimate of an alert (the detector's
    /// own window still mixes both regimes when it fires).
    #[serde(default)]
    recent: VecDeque<f64>,
    last_alert_ms: Option<i64>,
}

/// Values kept for the "after" estimate.
const RECENT: usize = 50;

/// The monitor's whole state; serialise it to resume without double alerts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Monitor {
    #[serde(skip)]
    config: MonitorConfig,
    streams: BTreeMap<String, Stream>,
    segments: BTreeMap<String, u64>,
    /// Rule categories seen so far: each interaction feeds every one of them (1 if it fired).
    #[serde(default)]
    categories: std::collections::BTreeSet<String>,
    /// The last event sequence processed.
    pub cursor: i64,
    /// The low-rate slices.
    #[serde(default)]
    slices: Slices,
    /// Last alert time per group (event time), for suppression.
    #[serde(default)]
    groups: BTreeMap<String, i64>,
    #[serde(skip)]
    rate: RateConfig,
}

fn severity(metric: &str, before: Option<f64>, after: Option<f64>) -> &'static str {
    let (Some(b), Some(a)) = (before, after) else {
        return "medium";
    };
    let worse = if metric == "csat" { a < b } else { a > b };
    if !worse {
        return "low";
    }
    let rel = (a - b).abs() / b.abs().max(0.01);
    if rel >= 1.0 || (a - b).abs() >= 0.2 {
        "high"
    } else {
        "medium"
    }
}

impl Monitor {
    /// A fresh monitor.
    pub fn new(config: MonitorConfig) -> Result<Self, LoopError> {
        config.validate()?;
        Ok(Self {
            rate: config.rate_config()?,
            config,
            streams: BTreeMap::new(),
            segments: BTreeMap::new(),
            categories: Default::default(),
            cursor: 0,
            slices: Slices::default(),
            groups: BTreeMap::new(),
        })
    }

    /// Restores a monitor saved with [`Monitor::to_json`], under (possibly new) `config`.
    pub fn from_json(json: &str, config: MonitorConfig) -> Result<Self, LoopError> {
        config.validate()?;
        let mut m: Monitor =
            serde_json::from_str(json).map_err(|e| LoopError::State(e.to_string()))?;
        m.rate = config.rate_config()?;
        m.config = config;
        Ok(m)
    }

    /// The state as JSON.
    pub fn to_json(&self) -> Result<String, LoopError> {
        serde_json::to_string(self).map_err(|e| LoopError::State(e.to_string()))
    }

    /// Number of (metric, segment) streams.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Number of low-rate slices held.
    pub fn slices(&self) -> usize {
        self.slices.len()
    }

    /// Whether `group` alerted within the group cooldown before `at_ms`; records it otherwise.
    fn suppressed(&mut self, group: &str, at_ms: i64) -> bool {
        let cooldown = self.config.slices.group_cooldown_ms;
        if self
            .groups
            .get(group)
            .is_some_and(|t| at_ms - *t < cooldown)
        {
            return true;
        }
        if self.groups.len() >= 10_000 {
            self.groups.retain(|_, t| at_ms - *t < cooldown);
        }
        self.groups.insert(group.to_string(), at_ms);
        false
    }

    fn rate_alert(&self, a: RateAlert, event: &StoredEvent) -> AlertDraft {
        let segment = Segment {
            tenant: a.slice.tenant.clone(),
            locale: a.slice.locale.clone(),
            jurisdiction: a.slice.jurisdiction.clone(),
            policy_version: a.slice.policy_version.clone(),
            topic: a.slice.topic.clone(),
            category: None,
        };
        let (before, after) = (Some(a.baseline.rate), Some(a.current.rate));
        AlertDraft {
            metric: a.signal.to_string(),
            severity: severity(a.signal, before, after),
            segment,
            detector: a.detector,
            before,
            after,
            evidence: a.evidence,
            seq: event.seq,
            at_ms: event.at_ms,
            samples: a.samples,
            slice: serde_json::to_value(&a.slice).unwrap_or_default(),
            baseline: Some(a.baseline),
            current: Some(a.current),
            first_interaction: a.first_interaction,
            group: a.group,
        }
    }

    fn rule_for(&self, metric: &str) -> Option<&MonitorRule> {
        self.config.rules.iter().find(|r| r.metric == metric)
    }

    fn new_stream(&self, spec: &str) -> Result<Stream, LoopError> {
        let mut parsed = DetectorSpec::parse(spec)?;
        if self.config.scale_by_segments {
            let k = (self.segments.len().max(1)) as f64;
            match &mut parsed {
                DetectorSpec::Adwin(c) => c.delta /= k,
                DetectorSpec::PageHinkley(c) => c.threshold *= 1.0 + k.ln(),
                _ => {}
            }
        }
        Ok(Stream {
            detector: parsed.build()?,
            spec: parsed.to_string(),
            n: 0,
            evidence: VecDeque::with_capacity(self.config.evidence),
            recent: VecDeque::with_capacity(RECENT),
            last_alert_ms: None,
        })
    }

    /// Observations that need the monitor's config or memory: complaints (configured terms) and
    /// per-rule-category rates (every category seen so far, 1 where it fired).
    fn derived(&mut self, event: &StoredEvent) -> Vec<Observation> {
        let p = &event.payload;
        let mut out = Vec::new();
        match event.kind.as_str() {
            keel_core::EventKind::FEEDBACK_RECEIVED if !self.config.complaint_terms.is_empty() => {
                if let Some(comment) = p["comment"].as_str() {
                    let lower = comment.to_lowercase();
                    let hit = self
                        .config
                        .complaint_terms
                        .iter()
                        .any(|t| lower.contains(&t.to_lowercase()));
                    out.push(Observation {
                        metric: "complaint_rate",
                        segment: Segment::of(
                            &event.tenant,
                            &p["context"],
                            p["policy_version"].as_str(),
                        ),
                        value: f64::from(u8::from(hit)),
                        interaction_id: p["interaction_id"].as_str().map(str::to_string),
                    });
                }
            }
            keel_core::EventKind::INTERACTION_RECORDED if p.is_object() => {
                let mut fired = std::collections::BTreeSet::new();
                for phase in ["input", "output"] {
                    let decisions: Vec<&serde_json::Value> = match &p["decision"][phase] {
                        serde_json::Value::Array(a) => a.iter().collect(),
                        v if v.is_object() => vec![v],
                        _ => Vec::new(),
                    };
                    for d in decisions {
                        for r in d["rules"].as_array().into_iter().flatten() {
                            let enforced = r["action"].as_str().is_some_and(|a| a != "allow");
                            if let (Some(c), true) = (r["category"].as_str(), enforced) {
                                fired.insert(c.to_string());
                            }
                        }
                    }
                }
                self.categories.extend(fired.iter().cloned());
                let base = Segment::of(&event.tenant, &p["context"], p["policy_version"].as_str());
                for c in &self.categories {
                    let mut segment = base.clone();
                    segment.category = Some(c.clone());
                    out.push(Observation {
                        metric: "rule_category_rate",
                        segment,
                        value: f64::from(u8::from(fired.contains(c))),
                        interaction_id: p["id"].as_str().map(str::to_string),
                    });
                }
            }
            _ => {}
        }
        out
    }

    /// Feeds one event; returns the alerts it raises. Events at or below the cursor are
    /// ignored, so replaying after a restart never double-alerts.
    pub fn process(&mut self, event: &StoredEvent) -> Result<Vec<AlertDraft>, LoopError> {
        if event.seq <= self.cursor {
            return Ok(Vec::new());
        }
        self.cursor = event.seq;
        self.observe(event)
    }

    /// Feeds a batch of events that are all past the cursor, in the order given (the
    /// simulator orders a tick's events by content, not by commit order); the cursor moves to
    /// the batch's highest sequence. Events at or below the cursor are ignored.
    pub fn process_batch(
        &mut self,
        events: &[StoredEvent],
    ) -> Vec<(i64, Result<Vec<AlertDraft>, LoopError>)> {
        let floor = self.cursor;
        let mut out = Vec::new();
        for event in events.iter().filter(|e| e.seq > floor) {
            self.cursor = self.cursor.max(event.seq);
            out.push((event.seq, self.observe(event)));
        }
        out
    }

    fn observe(&mut self, event: &StoredEvent) -> Result<Vec<AlertDraft>, LoopError> {
        let mut alerts = Vec::new();
        let robs = rate_observations(event, &self.config.complaint_terms);
        let raised = self
            .slices
            .feed(&self.config.slices, &self.rate, event, &robs);
        for a in raised {
            if !self.suppressed(&a.group, event.at_ms) {
                alerts.push(self.rate_alert(a, event));
            }
        }
        let mut all = observations(event);
        all.extend(self.derived(event));
        for obs in all {
            if !obs.value.is_finite() {
                continue;
            }
            let Some(rule) = self.rule_for(obs.metric).cloned() else {
                continue;
            };
            let spec = rule.detector.clone();
            let seg_key = obs.segment.key();
            let count = self.segments.entry(seg_key.clone()).or_insert(0);
            *count += 1;
            let key = format!("{}|{}", obs.metric, seg_key);
            if !self.streams.contains_key(&key) {
                let s = self.new_stream(&spec)?;
                self.streams.insert(key.clone(), s);
            }
            let min_samples = self.config.min_samples;
            let cooldown = self.config.cooldown_ms;
            let keep = self.config.evidence;
            let Some(stream) = self.streams.get_mut(&key) else {
                continue;
            };
            let before = stream.detector.estimate();
            let drift = stream.detector.update(obs.value)?;
            stream.n += 1;
            if let Some(id) = obs.interaction_id {
                if stream.evidence.len() >= keep.max(1) {
                    stream.evidence.pop_front();
                }
                stream.evidence.push_back(id);
            }
            let cooled = stream
                .last_alert_ms
                .is_none_or(|t| event.at_ms - t >= cooldown);
            if stream.recent.len() >= RECENT {
                stream.recent.pop_front();
            }
            stream.recent.push_back(obs.value);
            let after = Some(stream.recent.iter().sum::<f64>() / stream.recent.len() as f64);
            if drift && stream.n >= min_samples && cooled && rule.material(before, after) {
                stream.last_alert_ms = Some(event.at_ms);
                let slice = json!({
                    "tenant": obs.segment.tenant, "locale": obs.segment.locale,
                    "jurisdiction": obs.segment.jurisdiction, "topic": obs.segment.topic,
                    "policy_version": obs.segment.policy_version, "cluster": null, "level": "topic",
                });
                let mut evidence: Vec<String> = stream.evidence.iter().rev().cloned().collect();
                evidence.truncate(5);
                alerts.push(AlertDraft {
                    group: format!("grp_{}_{}", obs.metric, fnv_hex(&seg_key)),
                    slice,
                    baseline: None,
                    current: None,
                    first_interaction: evidence.last().cloned(),
                    metric: obs.metric.to_string(),
                    segment: obs.segment,
                    detector: stream.spec.clone(),
                    before,
                    after,
                    evidence,
                    severity: severity(obs.metric, before, after),
                    seq: event.seq,
                    at_ms: event.at_ms,
                    samples: stream.n,
                });
            }
        }
        Ok(alerts)
    }
}

fn fnv_hex(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn interaction(seq: i64, locale: &str, failed: bool) -> StoredEvent {
        StoredEvent {
            seq,
            kind: "InteractionRecorded".into(),
            actor: "app".into(),
            tenant: "acme".into(),
            at_ms: seq * 1000,
            payload: json!({"id": format!("ix_{seq}"), "outcome": if failed {"upstream_error"} else {"ok"},
                            "latency_ms": 10, "response_text": ["fine"], "context": {"locale": locale}}),
        }
    }

    #[test]
    fn one_segment_jumps_and_only_it_alerts() {
        let mut m = Monitor::new(MonitorConfig::default()).unwrap();
        let mut alerts = Vec::new();
        let mut seq = 0;
        for i in 0..2000 {
            for locale in ["en", "ja"] {
                seq += 1;
                let failed = locale == "ja" && i >= 1000 && i % 2 == 0;
                alerts.extend(m.process(&interaction(seq, locale, failed)).unwrap());
            }
        }
        assert!(!alerts.is_empty(), "the jump was detected");
        assert!(
            alerts
                .iter()
                .all(|a| a.segment.locale == "ja" && a.metric == "upstream_error_rate"),
            "{alerts:?}"
        );
        let first = &alerts[0];
        assert!(
            first.seq > 2000 && first.seq < 2400,
            "detected within a bounded delay: {}",
            first.seq
        );
        assert_eq!(first.severity, "high");
        assert!(first.evidence.iter().all(|e| e.starts_with("ix_")));
        assert_eq!(alerts.len(), 1, "the cooldown deduplicates");
    }

    #[test]
    fn state_round_trips_without_double_alerts() {
        let mut a = Monitor::new(MonitorConfig::default()).unwrap();
        for s in 1..=500 {
            a.process(&interaction(s, "en", false)).unwrap();
        }
        let saved = a.to_json().unwrap();
        let mut b = Monitor::from_json(&saved, MonitorConfig::default()).unwrap();
        assert_eq!(b.cursor, 500);
        assert!(
            b.process(&interaction(400, "en", true)).unwrap().is_empty(),
            "already processed"
        );
        for s in 501..=900 {
            let x = interaction(s, "en", s % 2 == 0);
            assert_eq!(a.process(&x).unwrap(), b.process(&x).unwrap());
        }
    }

    #[test]
    fn bad_specs_are_config_errors() {
        let cfg = MonitorConfig {
            rules: vec![MonitorRule {
                metric: "x".into(),
                detector: "adwin:delta=7".into(),
                min_change: None,
                min_relative_change: None,
            }],
            ..MonitorConfig::default()
        };
        assert!(matches!(Monitor::new(cfg), Err(LoopError::Config(_))));
    }

    #[test]
    fn a_rule_category_surge_alerts_on_its_own_stream() {
        let mut m = Monitor::new(MonitorConfig::default()).unwrap();
        let mut alerts = Vec::new();
        for s in 1..=1500i64 {
            let fire = (s > 800 && s % 3 == 0) || s % 97 == 0;
            let rules = if fire || s % 100 == 0 {
                json!([{"id": "r", "category": if fire {"S9"} else {"S7"}, "action": "block"}])
            } else {
                json!([])
            };
            let ev = StoredEvent {
                seq: s,
                kind: "InteractionRecorded".into(),
                actor: "a".into(),
                tenant: "acme".into(),
                at_ms: s * 1000,
                payload: json!({"id": format!("ix_{s}"), "outcome": "ok", "latency_ms": 5, "response_text": ["ok"],
                                "context": {"topic": "tax"}, "decision": {"action": "allow", "input": {"rules": rules}, "output": []}}),
            };
            alerts.extend(m.process(&ev).unwrap());
        }
        let cat: Vec<_> = alerts
            .iter()
            .filter(|a| a.metric == "rule_category_rate")
            .collect();
        assert!(!cat.is_empty());
        assert!(
            cat.iter()
                .all(|a| a.segment.category.as_deref() == Some("S9") && a.segment.topic == "tax"),
            "{cat:?}"
        );
    }

    #[test]
    fn a_rising_share_of_likely_outdated_replies_alerts() {
        let mut m = Monitor::new(MonitorConfig::default()).unwrap();
        let mut alerts = Vec::new();
        for s in 1..=1200i64 {
            // 5 % of replies look outdated, then 40 % from interaction 700 on.
            let likely = if s > 700 { s % 5 < 2 } else { s % 20 == 0 };
            let score = if likely { 0.93 } else { 0.04 };
            let ev = StoredEvent {
                seq: s,
                kind: "InteractionRecorded".into(),
                actor: "a".into(),
                tenant: "acme".into(),
                at_ms: s * 1000,
                payload: json!({"id": format!("ix_{s}"), "outcome": "ok", "latency_ms": 5, "response_text": ["ok"],
                                "context": {"locale": "ja-JP"},
                                "decision": {"action": "allow", "learned": {"outdated": score, "violation": 0.01}}}),
            };
            alerts.extend(m.process(&ev).unwrap());
        }
        let learned: Vec<_> = alerts
            .iter()
            .filter(|a| a.metric.starts_with("learned_"))
            .collect();
        assert!(!learned.is_empty(), "{alerts:?}");
        assert!(
            learned.iter().all(|a| a.metric == "learned_outdated_share"),
            "{learned:?}"
        );
    }

    #[test]
    fn complaints_follow_configured_terms() {
        // Complaints are a rate per reply: every interaction exposes its slices, a comment with
        // a configured term is a hit. 0.5 % of replies draw one, then 10 % from reply 1 000.
        let cfg = MonitorConfig {
            complaint_terms: vec!["refund".into()],
            ..MonitorConfig::default()
        };
        let mut m = Monitor::new(cfg).unwrap();
        let mut alerts = Vec::new();
        let mut seq = 0;
        for s in 1..=2000i64 {
            seq += 1;
            let ix = StoredEvent {
                seq,
                kind: "InteractionRecorded".into(),
                actor: "a".into(),
                tenant: "acme".into(),
                at_ms: s * 1000,
                payload: json!({"id": format!("ix_{s}"), "outcome": "ok", "latency_ms": 5, "response_text": ["ok"],
                                "context": {"topic": "billing"}}),
            };
            alerts.extend(m.process(&ix).unwrap());
            let complains = if s > 1000 { s % 10 == 0 } else { s % 200 == 0 };
            let comment = if complains {
                "I want a REFUND now"
            } else {
                "fine"
            };
            if complains || s % 7 == 0 {
                seq += 1;
                let fb = StoredEvent {
                    seq,
                    kind: "FeedbackReceived".into(),
                    actor: "a".into(),
                    tenant: "acme".into(),
                    at_ms: s * 1000 + 1,
                    payload: json!({"comment": comment, "interaction_id": format!("ix_{s}"), "context": {"topic": "billing"}}),
                };
                alerts.extend(m.process(&fb).unwrap());
            }
        }
        assert!(!alerts.is_empty());
        for a in &alerts {
            assert!(
                ["complaint_rate", "negative_feedback_rate"].contains(&a.metric.as_str())
                    && a.segment.topic == "billing",
                "{a:?}"
            );
            assert!(a.seq > 1000, "raised after the change: {a:?}");
            assert!(!a.evidence.is_empty() && a.evidence.len() <= 5);
            let n: i64 = a.evidence[0].trim_start_matches("ix_").parse().unwrap();
            assert!(n > 1000 && n % 10 == 0, "evidence is a complaint: {a:?}");
        }
    }

    #[test]
    fn constant_streams_never_alert() {
        let mut m = Monitor::new(MonitorConfig::default()).unwrap();
        for s in 1..=5000 {
            assert!(m
                .process(&interaction(s, if s % 3 == 0 { "en" } else { "fr" }, false))
                .unwrap()
                .is_empty());
        }
    }
}
