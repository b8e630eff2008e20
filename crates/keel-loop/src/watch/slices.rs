//! Low-rate monitors per slice: every reply exposes its (segment, answer cluster) slice, its
//! (segment, topic) slice and two roll-ups (all locales of its jurisdiction; all jurisdictions
//! of its topic); complaints, reports, low CSAT, handoffs, learned scores, stale-fact
//! corrections and judge verdicts are hits. Each (slice, signal) runs a
//! [`keel_drift::rate::RateCusum`]; a chart that crosses `h` alerts only when its slice is a
//! Benjamini–Hochberg discovery among all slices of that signal.
//!
//! Bounded: at most `max_slices` slices; cluster slices idle for `slice_idle_ms` of *event*
//! time are dropped, and when full the least recently seen cluster slice (ties by key) makes
//! room, so two monitors fed the same events hold the same slices.

use std::collections::{BTreeMap, VecDeque};

use keel_core::StoredEvent;
use keel_drift::rate::{bh_threshold, wilson, RateConfig, RateCusum};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The rate signals watched per slice.
pub const SIGNALS: [&str; 12] = [
    "negative_feedback_rate",
    "complaint_rate",
    "wrong_answer_rate",
    "thumbs_down_rate",
    "low_csat_rate",
    "handoff_rate",
    "learned_outdated_share",
    "learned_wrong_answer_share",
    "learned_violation_share",
    "stale_fact_rate",
    "judge_outdated_rate",
    "judge_violation_rate",
];

/// Signals whose exposure is a judged interaction (a verdict), not a reply.
const JUDGED: [usize; 2] = [10, 11];

fn signal_index(s: &str) -> Option<usize> {
    SIGNALS.iter().position(|x| *x == s)
}

/// Where a slice sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Cluster,
    Topic,
    RollupJurisdiction,
    RollupTopic,
}

/// A slice's coordinates (`*` for rolled-up dimensions).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SliceKey {
    pub tenant: String,
    pub locale: String,
    pub jurisdiction: String,
    pub topic: String,
    pub policy_version: String,
    pub cluster: Option<String>,
    pub level: Level,
}

impl SliceKey {
    fn key(&self) -> String {
        format!(
            "{:?}|{}|{}|{}|{}|{}|{}",
            self.level,
            self.tenant,
            self.locale,
            self.jurisdiction,
            self.topic,
            self.policy_version,
            self.cluster.as_deref().unwrap_or("-")
        )
    }

    /// The alert group: one per answer cluster (per tenant); the topic slices and their
    /// roll-ups share one group per (tenant, topic, policy version), so a change seen at the
    /// topic level alerts once, not once per level.
    pub fn group(&self) -> String {
        match (&self.cluster, self.level) {
            (Some(c), Level::Cluster) => format!("grp_{}_{c}", self.tenant),
            _ => format!(
                "grp_{}_topic_{}",
                self.tenant,
                fnv(&format!("{}|{}", self.topic, self.policy_version))
            ),
        }
    }

    /// The four slices of an event: cluster (when known), topic, and the two roll-ups,
    /// broadest first.
    fn of(tenant: &str, ctx: &Value, policy: Option<&str>, cluster: Option<&str>) -> Vec<Self> {
        let get = |k: &str| ctx[k].as_str().unwrap_or("-").to_string();
        let base = SliceKey {
            tenant: tenant.to_string(),
            locale: "*".into(),
            jurisdiction: "*".into(),
            topic: get("topic"),
            policy_version: policy.unwrap_or("-").to_string(),
            cluster: None,
            level: Level::RollupTopic,
        };
        let mut out = vec![base.clone()];
        let j = SliceKey {
            jurisdiction: get("jurisdiction"),
            level: Level::RollupJurisdiction,
            ..base
        };
        out.push(j.clone());
        let t = SliceKey {
            locale: get("locale"),
            level: Level::Topic,
            ..j
        };
        out.push(t.clone());
        if let Some(c) = cluster {
            out.push(SliceKey {
                cluster: Some(c.to_string()),
                level: Level::Cluster,
                ..t
            });
        }
        out
    }
}

fn fnv(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// One signal's chart in one slice, with its evidence.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Chart {
    cusum: RateCusum,
    /// Interactions of the recent hits, newest last (at most 5).
    hits: VecDeque<String>,
    /// The first hit of the open run.
    first: Option<String>,
    n: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Slice {
    key: SliceKey,
    charts: Vec<Option<Chart>>,
    last_ms: i64,
}

/// What the slices decided for one hit: an alert to draft.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateAlert {
    pub signal: &'static str,
    pub slice: SliceKey,
    pub group: String,
    pub baseline: Interval,
    pub current: Interval,
    pub first_interaction: Option<String>,
    pub evidence: Vec<String>,
    pub samples: u64,
    pub detector: String,
}

/// A rate with its 95 % Wilson interval and the exposures behind it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub rate: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: u64,
}

fn interval(x: f64, n: f64, rate: f64) -> Interval {
    let (lo, hi) = wilson(x, n);
    Interval {
        rate,
        lo,
        hi,
        n: n.max(0.0) as u64,
    }
}

/// Slice settings (part of `[monitors]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliceConfig {
    /// Off: no slice is kept and no rate alert raised.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The rate detector, `rate:k=3,h=7,…` (see `keel_drift::rate`).
    #[serde(default = "default_detector")]
    pub detector: String,
    /// Most slices kept (all levels).
    #[serde(default = "default_max_slices")]
    pub max_slices: usize,
    /// A cluster slice not seen for this long (event time) is dropped.
    #[serde(default = "default_idle_ms")]
    pub slice_idle_ms: i64,
    /// Global prior per signal before any data (a rate).
    #[serde(default = "default_prior")]
    pub prior: f64,
    /// A group that alerted stays quiet this long (event time): its open alert and review
    /// item stand for the later crossings.
    #[serde(default = "default_group_cooldown_ms")]
    pub group_cooldown_ms: i64,
}

fn default_detector() -> String {
    RateConfig::default().to_string()
}
fn default_enabled() -> bool {
    true
}
fn default_max_slices() -> usize {
    20_000
}
fn default_idle_ms() -> i64 {
    7 * 24 * 3600 * 1000
}
fn default_group_cooldown_ms() -> i64 {
    24 * 3600 * 1000
}
fn default_prior() -> f64 {
    0.005
}

impl Default for SliceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            detector: default_detector(),
            max_slices: default_max_slices(),
            slice_idle_ms: default_idle_ms(),
            prior: default_prior(),
            group_cooldown_ms: default_group_cooldown_ms(),
        }
    }
}

/// All slices' state. Serialisable; the config is supplied on restore.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Slices {
    slices: BTreeMap<String, Slice>,
    /// Per signal (exposures, hits) over everything: the prior of the broadest slices.
    #[serde(default)]
    global: Vec<(f64, f64)>,
    #[serde(default)]
    last_sweep_ms: i64,
}

/// One hit or exposure of one signal, before slicing.
pub struct RateObs<'a> {
    pub signal: usize,
    pub hit: bool,
    pub expose: bool,
    pub interaction_id: Option<&'a str>,
}

impl Slices {
    fn global_rate(&self, sig: usize, prior: f64) -> f64 {
        match self.global.get(sig) {
            Some((n, x)) if *n > 0.0 => (x + 200.0 * prior) / (n + 200.0),
            _ => prior,
        }
    }

    fn sweep(&mut self, now_ms: i64, cfg: &SliceConfig) {
        if now_ms - self.last_sweep_ms < 3_600_000 && self.slices.len() < cfg.max_slices {
            return;
        }
        self.last_sweep_ms = now_ms;
        let idle = cfg.slice_idle_ms;
        self.slices
            .retain(|_, s| s.key.level != Level::Cluster || now_ms - s.last_ms < idle);
        if self.slices.len() >= cfg.max_slices {
            // Least recently seen cluster slices first, ties by key.
            let mut victims: Vec<(i64, String)> = self
                .slices
                .iter()
                .filter(|(_, s)| s.key.level == Level::Cluster)
                .map(|(k, s)| (s.last_ms, k.clone()))
                .collect();
            victims.sort();
            let excess = self.slices.len() + 1 - cfg.max_slices.max(1);
            for (_, k) in victims.into_iter().take(excess.max(cfg.max_slices / 10)) {
                self.slices.remove(&k);
            }
        }
    }

    /// Number of slices held.
    pub fn len(&self) -> usize {
        self.slices.len()
    }

    /// Whether no slice is held.
    pub fn is_empty(&self) -> bool {
        self.slices.is_empty()
    }

    /// Feeds one event's rate observations; returns the alerts it raises.
    pub fn feed(
        &mut self,
        cfg: &SliceConfig,
        rate: &RateConfig,
        event: &StoredEvent,
        obs: &[RateObs<'_>],
    ) -> Vec<RateAlert> {
        if obs.is_empty() || !cfg.enabled {
            return Vec::new();
        }
        let p = &event.payload;
        let cluster = p["answer_cluster"].as_str();
        let keys = SliceKey::of(
            &event.tenant,
            &p["context"],
            p["policy_version"].as_str(),
            cluster,
        );
        self.sweep(event.at_ms, cfg);
        if self.global.len() < SIGNALS.len() {
            self.global.resize(SIGNALS.len(), (0.0, 0.0));
        }
        let names: Vec<String> = keys.iter().map(SliceKey::key).collect();
        for (key, k) in keys.iter().zip(&names) {
            if !self.slices.contains_key(k) {
                if self.slices.len() >= cfg.max_slices {
                    let evict = SliceConfig {
                        slice_idle_ms: i64::MAX,
                        ..cfg.clone()
                    };
                    self.sweep(i64::MAX / 4, &evict);
                }
                self.slices.insert(
                    k.clone(),
                    Slice {
                        key: key.clone(),
                        charts: vec![None; SIGNALS.len()],
                        last_ms: event.at_ms,
                    },
                );
            }
        }
        let mut alerts = Vec::new();
        for o in obs {
            if let Some(g) = self.global.get_mut(o.signal) {
                g.0 += f64::from(u8::from(o.expose));
                g.1 += f64::from(u8::from(o.hit));
            }
        }
        for o in obs {
            let mut prior = self.global_rate(o.signal, cfg.prior);
            // The significance test uses the highest rate along the chain (global and every
            // broader slice), so a slice whose own baseline is low by chance does not alert.
            let mut reference = prior;
            for k in &names {
                let Some(slice) = self.slices.get_mut(k) else {
                    continue;
                };
                slice.last_ms = slice.last_ms.max(event.at_ms);
                let Some(slot) = slice.charts.get_mut(o.signal) else {
                    continue;
                };
                let chart = slot.get_or_insert_with(Chart::default);
                let parent = prior;
                prior = chart.cusum.p0(rate, parent);
                let test_rate = reference.max(parent);
                reference = test_rate.max(prior);
                if o.expose {
                    chart.cusum.expose(rate, parent, 1.0);
                    chart.n += 1;
                    if !chart.cusum.in_run() {
                        chart.first = None;
                    }
                }
                if !o.hit {
                    continue;
                }
                let opened = !chart.cusum.in_run();
                let crossed = chart.cusum.hit(rate);
                if let Some(id) = o.interaction_id {
                    if opened || chart.first.is_none() {
                        chart.first = Some(id.to_string());
                    }
                    if chart.hits.len() >= 5 {
                        chart.hits.pop_front();
                    }
                    chart.hits.push_back(id.to_string());
                }
                if crossed {
                    alerts.push((k.clone(), o.signal, parent, test_rate));
                }
            }
        }
        alerts
            .into_iter()
            .filter_map(|(k, sig, parent, test_rate)| {
                self.confirm(&k, sig, parent, test_rate, rate)
            })
            .collect()
    }

    /// A crossing becomes an alert when its slice is a BH discovery among all slices of the
    /// signal; either way the chart restarts.
    fn confirm(
        &mut self,
        k: &str,
        sig: usize,
        parent: f64,
        test_rate: f64,
        rate: &RateConfig,
    ) -> Option<RateAlert> {
        let own = {
            let chart = self.slices.get(k)?.charts.get(sig)?.as_ref()?;
            chart.cusum.p_value(rate, test_rate)
        };
        let discovered = if own > rate.q {
            false
        } else {
            // Every slice's p-value for this signal (parents' rates approximated by the
            // global rate: exact enough for ranking).
            let g = self.global_rate(sig, rate.floor.max(1e-9));
            let mut ps: Vec<f64> = self
                .slices
                .iter()
                .filter_map(|(key, s)| {
                    let c = s.charts.get(sig)?.as_ref()?;
                    Some(if key == k {
                        own
                    } else {
                        c.cusum.p_value(rate, g)
                    })
                })
                .collect();
            bh_threshold(&mut ps, rate.q).is_some_and(|t| own <= t)
        };
        let slice = self.slices.get_mut(k)?;
        let key = slice.key.clone();
        let chart = slice.charts.get_mut(sig)?.as_mut()?;
        let out = discovered.then(|| {
            let c = &chart.cusum;
            let p0 = c.p0(rate, parent);
            let (wn, wx) = c.window();
            let mut evidence: Vec<String> = chart.hits.iter().rev().cloned().collect();
            evidence.dedup();
            RateAlert {
                signal: SIGNALS[sig],
                group: key.group(),
                slice: key,
                baseline: interval(c.base_x, c.base_n, p0),
                current: interval(wx, wn, if wn > 0.0 { wx / wn } else { 0.0 }),
                first_interaction: chart.first.clone(),
                evidence,
                samples: chart.n,
                detector: rate.to_string(),
            }
        });
        chart.cusum.restart();
        chart.first = None;
        out
    }
}

/// The rate observations of one event (`complaint_terms`: what makes a comment a complaint;
/// empty = any thumbs-down comment).
pub fn rate_observations<'a>(
    event: &'a StoredEvent,
    complaint_terms: &[String],
) -> Vec<RateObs<'a>> {
    let p = &event.payload;
    let mut out = Vec::new();
    let mut push = |sig: &str, hit: bool, expose: bool, id: Option<&'a str>| {
        if let Some(signal) = signal_index(sig) {
            out.push(RateObs {
                signal,
                hit,
                expose,
                interaction_id: id,
            });
        }
    };
    match event.kind.as_str() {
        keel_core::EventKind::INTERACTION_RECORDED => {
            if !p.is_object() || p["outcome"].as_str() != Some("ok") {
                return out;
            }
            let id = p["id"].as_str();
            for (i, sig) in SIGNALS.iter().enumerate() {
                if JUDGED.contains(&i) || sig.starts_with("learned_") || *sig == "stale_fact_rate" {
                    continue;
                }
                push(sig, false, true, id);
            }
            let learned = &p["decision"]["learned"];
            for (label, sig) in [
                ("outdated", "learned_outdated_share"),
                ("wrong_answer", "learned_wrong_answer_share"),
                ("violation", "learned_violation_share"),
            ] {
                if let Some(s) = learned[label].as_f64() {
                    push(sig, s > 0.5, true, id);
                }
            }
            push(
                "stale_fact_rate",
                states_a_stale_fact(&p["decision"]),
                true,
                id,
            );
        }
        keel_core::EventKind::FEEDBACK_RECEIVED => {
            let id = p["interaction_id"].as_str();
            let wrong = p["wrong_answer"].as_bool() == Some(true);
            let down = p["thumbs"].as_str() == Some("down");
            let low = p["csat"].as_f64().is_some_and(|c| c <= 2.0);
            let complaint = p["comment"].as_str().is_some_and(|c| {
                if complaint_terms.is_empty() {
                    down && !c.trim().is_empty()
                } else {
                    let lower = c.to_lowercase();
                    complaint_terms
                        .iter()
                        .any(|t| lower.contains(&t.to_lowercase()))
                }
            });
            for (sig, hit) in [
                ("wrong_answer_rate", wrong),
                ("thumbs_down_rate", down),
                ("low_csat_rate", low),
                ("complaint_rate", complaint),
                ("negative_feedback_rate", wrong || down || low || complaint),
            ] {
                if hit {
                    push(sig, true, false, id);
                }
            }
        }
        keel_core::EventKind::HANDOFF_RECORDED if p["event"].as_str() == Some("requested") => {
            let id = p["interaction_id"].as_str();
            push("handoff_rate", true, false, id);
            push("negative_feedback_rate", true, false, id);
        }
        keel_core::EventKind::JUDGE_VERDICT => {
            let id = p["interaction_id"].as_str();
            let (outdated, violation) = match p["verdict"].as_str() {
                Some("ok") => (false, false),
                Some("outdated") => (true, false),
                Some("violation") => (false, true),
                _ => return out,
            };
            push("judge_outdated_rate", outdated, true, id);
            push("judge_violation_rate", violation, true, id);
        }
        _ => {}
    }
    out
}

/// Whether an output decision read a stale fact statement (the facts checker's findings).
fn states_a_stale_fact(decision: &Value) -> bool {
    let outputs: Vec<&Value> = match &decision["output"] {
        Value::Array(a) => a.iter().collect(),
        v if v.is_object() => vec![v],
        _ => Vec::new(),
    };
    outputs.iter().any(|d| {
        d["facts"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x["status"].as_str() == Some("stale")))
    })
}

#[cfg(test)]
#[path = "slices_tests.rs"]
mod tests;
