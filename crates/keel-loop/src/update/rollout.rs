//! Rollouts: one state machine for canaries and activations (`activate V` is a rollout at
//! 100 %). The split is sticky: a request goes to the canary when a stable hash (FNV-1a, 64
//! bit) of the rollout id and its conversation id (else its interaction id) falls below the
//! percentage, so a conversation stays on one arm. Guard metrics are counted per arm from the
//! event log ([`Tracker`]) and judged with the always-valid interval of
//! [`sequential`](super::sequential); the tracker's state serialises so a worker resumes where
//! it stopped.
//!
//! States: `canary` → `promoted` | `rolled_back` | `superseded`; `active` (started at 100 %)
//! → `rolled_back` | `superseded`; `promoted` → `rolled_back`.

use std::collections::{BTreeMap, BTreeSet};

use keel_core::{NewEvent, StoredEvent};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::sequential::{diff_interval, judge, Interval, Verdict};
use super::{activated_event, GLOBAL_SCOPE};

/// The event kind of every rollout step.
pub const ROLLOUT_CHANGED: &str = "RolloutChanged";

/// The arm a request was served by.
pub const CANARY: &str = "canary";
pub const BASELINE: &str = "baseline";

/// Where a rollout applies: one tenant or all, one locale (prefix) or all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutScope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

impl RolloutScope {
    /// `tenant|locale` with `*` for "any": at most one canary runs per key.
    pub fn key(&self) -> String {
        format!(
            "{}|{}",
            self.tenant.as_deref().unwrap_or(GLOBAL_SCOPE),
            self.locale.as_deref().unwrap_or(GLOBAL_SCOPE)
        )
    }

    /// Whether a request of `tenant` in `locale` falls in this scope (the one
    /// [`keel_core::Scope::covers`]: `ja` covers `ja-JP` and `ja_JP`).
    pub fn covers(&self, tenant: &str, locale: Option<&str>) -> bool {
        keel_core::Scope::of(self.tenant.as_deref(), self.locale.as_deref(), None).covers(
            &keel_core::Segment {
                tenant,
                locale,
                ..keel_core::Segment::default()
            },
        )
    }

    /// Higher = more specific (tenant counts more than locale).
    pub fn specificity(&self) -> u8 {
        u8::from(self.tenant.is_some()) * 2 + u8::from(self.locale.is_some())
    }

    /// The activation scope a 100 % rollout maps to (`None` for locale-scoped rollouts,
    /// which the runtime keeps as an overlay).
    pub fn activation_scope(&self) -> Option<&str> {
        if self.locale.is_some() {
            None
        } else {
            Some(self.tenant.as_deref().unwrap_or(GLOBAL_SCOPE))
        }
    }
}

/// A stable bucket in `0..10_000` for `key` (a conversation or interaction id) in a rollout.
pub fn bucket(rollout_id: &str, key: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in rollout_id
        .as_bytes()
        .iter()
        .chain(&[0x1f])
        .chain(key.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Fold the high bits in: FNV's low bits alone are weak for short keys.
    ((h ^ (h >> 32)) % 10_000) as u32
}

/// Whether `key` is served the canary of a rollout at `percent`.
pub fn in_canary(rollout_id: &str, key: &str, percent: f64) -> bool {
    let threshold = (percent.clamp(0.0, 100.0) * 100.0).round() as u32;
    bucket(rollout_id, key) < threshold
}

/// A rollout as its latest `RolloutChanged` event describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub version: String,
    /// What the scope was served before (`None`: the embedded default pack).
    #[serde(default)]
    pub baseline: Option<String>,
    pub percent: f64,
    #[serde(default)]
    pub scope: RolloutScope,
    pub state: String,
    pub started_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<String>,
}

impl Rollout {
    /// Reads a `RolloutChanged` payload.
    pub fn from_payload(v: &Value) -> Option<Rollout> {
        serde_json::from_value(v.clone()).ok()
    }

    pub fn is_canary(&self) -> bool {
        self.state == "canary"
    }
}

/// A refused transition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    /// Bad input (a 400).
    #[error("{0}")]
    Invalid(String),
    /// The rollout's state does not allow it (a 409).
    #[error("{0}")]
    Conflict(String),
}

fn changed(r: &Rollout, reason: &str, actor: &str, at_ms: i64, extra: Option<Value>) -> NewEvent {
    let mut payload = json!(r);
    payload["reason"] = Value::String(reason.to_string());
    payload["scope_key"] = Value::String(r.scope.key());
    if let Some(Value::Object(m)) = extra {
        for (k, v) in m {
            payload[k] = v;
        }
    }
    NewEvent {
        kind: ROLLOUT_CHANGED.to_string(),
        actor: actor.to_string(),
        tenant: r
            .scope
            .tenant
            .clone()
            .unwrap_or_else(|| GLOBAL_SCOPE.to_string()),
        at_ms,
        payload,
    }
}

fn need_reason(reason: &str) -> Result<(), RolloutError> {
    if reason.trim().is_empty() {
        Err(RolloutError::Invalid(
            "a rollout step needs a reason".into(),
        ))
    } else {
        Ok(())
    }
}

/// What starting a rollout needs.
#[derive(Debug, Clone)]
pub struct Start<'a> {
    pub id: &'a str,
    pub version: &'a str,
    pub baseline: Option<&'a str>,
    pub percent: f64,
    pub scope: RolloutScope,
    pub reason: &'a str,
    pub proposal: Option<&'a str>,
}

/// Events that start a rollout: a canary below 100 %, else an `active` rollout (plus the
/// `PolicyActivated` that makes it the scope's version). `live` are the rollouts currently in
/// force (canary, active or promoted) at the same scope: a new canary conflicts with a live
/// canary; a 100 % rollout supersedes them.
pub fn start(
    s: &Start<'_>,
    live: &[&Rollout],
    actor: &str,
    at_ms: i64,
) -> Result<Vec<NewEvent>, RolloutError> {
    need_reason(s.reason)?;
    if !(s.percent > 0.0 && s.percent <= 100.0) {
        return Err(RolloutError::Invalid(
            "percent must be above 0 and at most 100".into(),
        ));
    }
    let full = s.percent >= 100.0;
    let mut events = Vec::new();
    for old in live.iter().filter(|r| r.scope.key() == s.scope.key()) {
        if old.is_canary() && !full {
            return Err(RolloutError::Conflict(format!(
                "rollout {} is a live canary for this scope; promote or roll it back first",
                old.id
            )));
        }
        let mut o = (*old).clone();
        o.state = "superseded".into();
        events.push(changed(
            &o,
            &format!("superseded by {}", s.id),
            actor,
            at_ms,
            None,
        ));
    }
    let r = Rollout {
        id: s.id.to_string(),
        version: s.version.to_string(),
        baseline: s.baseline.map(str::to_string),
        percent: if full { 100.0 } else { s.percent },
        scope: s.scope.clone(),
        state: if full { "active" } else { "canary" }.to_string(),
        started_ms: at_ms,
        proposal: s.proposal.map(str::to_string),
    };
    events.push(changed(&r, s.reason, actor, at_ms, None));
    if full {
        if let Some(scope) = r.scope.activation_scope() {
            events.push(activated_event(&r.version, scope, actor, at_ms));
        }
    }
    Ok(events)
}

/// Events that promote a canary to 100 % (`extra` adds fields such as the guard verdicts).
pub fn promote(
    r: &Rollout,
    reason: &str,
    actor: &str,
    at_ms: i64,
    extra: Option<Value>,
) -> Result<Vec<NewEvent>, RolloutError> {
    need_reason(reason)?;
    if !r.is_canary() {
        return Err(RolloutError::Conflict(format!(
            "rollout {} is {}; only a canary can be promoted",
            r.id, r.state
        )));
    }
    let mut p = r.clone();
    p.state = "promoted".into();
    p.percent = 100.0;
    let mut events = vec![changed(&p, reason, actor, at_ms, extra)];
    if let Some(scope) = p.scope.activation_scope() {
        events.push(activated_event(&p.version, scope, actor, at_ms));
    }
    Ok(events)
}

/// Events that roll a rollout back: a canary stops (its scope is served as before); a promoted
/// or active rollout gives the scope back to its baseline version.
pub fn rollback(
    r: &Rollout,
    reason: &str,
    actor: &str,
    at_ms: i64,
    extra: Option<Value>,
) -> Result<Vec<NewEvent>, RolloutError> {
    need_reason(reason)?;
    let mut b = r.clone();
    b.state = "rolled_back".into();
    b.percent = 0.0;
    match r.state.as_str() {
        "canary" => Ok(vec![changed(&b, reason, actor, at_ms, extra)]),
        "promoted" | "active" => {
            let mut events = vec![changed(&b, reason, actor, at_ms, extra)];
            if let Some(scope) = b.scope.activation_scope() {
                let Some(base) = &r.baseline else {
                    return Err(RolloutError::Conflict(format!(
                        "rollout {} replaced the embedded default pack; activate a version instead",
                        r.id
                    )));
                };
                events.push(activated_event(base, scope, actor, at_ms));
            }
            Ok(events)
        }
        other => Err(RolloutError::Conflict(format!(
            "rollout {} is {other}; nothing to roll back",
            r.id
        ))),
    }
}

/// One guard's settings: `margin` is the non-inferiority margin on its rate (absolute).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
}

fn yes() -> bool {
    true
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            margin: None,
        }
    }
}

/// The four guards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guards {
    #[serde(default)]
    pub violation_rate: GuardConfig,
    #[serde(default)]
    pub wrong_answer_rate: GuardConfig,
    #[serde(default)]
    pub csat: GuardConfig,
    #[serde(default)]
    pub escalation_rate: GuardConfig,
}

/// The `[update]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// The approver of a proposal must be another person (key name) than its author.
    #[serde(default)]
    pub two_person_rule: bool,
    /// Interactions per arm before a canary may be promoted automatically.
    #[serde(default = "default_min_samples")]
    pub min_samples_per_arm: u64,
    /// Observations per arm before a guard can roll a canary back.
    #[serde(default = "default_min_rollback")]
    pub min_samples_rollback: u64,
    /// The sequential test's error level.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Promote and roll back automatically (else only report the verdicts).
    #[serde(default = "yes")]
    pub auto: bool,
    /// A canary is promoted automatically no sooner than this after it started (clock time).
    #[serde(default)]
    pub min_duration_ms: i64,
    /// How often the worker runs (ms of wall time; the simulator drives it directly).
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    #[serde(default)]
    pub guards: Guards,
}

fn default_min_samples() -> u64 {
    200
}
fn default_min_rollback() -> u64 {
    30
}
fn default_alpha() -> f64 {
    0.05
}
fn default_interval() -> u64 {
    500
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            two_person_rule: false,
            min_samples_per_arm: default_min_samples(),
            min_samples_rollback: default_min_rollback(),
            alpha: default_alpha(),
            auto: true,
            min_duration_ms: 0,
            interval_ms: default_interval(),
            guards: Guards::default(),
        }
    }
}

impl UpdateConfig {
    /// Checks ranges (alpha in (0, 1), margins in [0, 1)).
    pub fn validate(&self) -> Result<(), String> {
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err("update.alpha must be between 0 and 1".into());
        }
        for (name, g) in self.guard_list() {
            if let Some(m) = g.margin {
                if !(0.0..1.0).contains(&m) {
                    return Err(format!("update.guards.{name}.margin must be in [0, 1)"));
                }
            }
        }
        Ok(())
    }

    fn guard_list(&self) -> [(&'static str, &GuardConfig); 4] {
        [
            ("violation_rate", &self.guards.violation_rate),
            ("wrong_answer_rate", &self.guards.wrong_answer_rate),
            ("csat", &self.guards.csat),
            ("escalation_rate", &self.guards.escalation_rate),
        ]
    }
}

/// Default margins: violations 1 pt, wrong answers 2 pt, dissatisfied share 5 pt,
/// escalations 10 pt (an escalate rule raises it on purpose).
fn default_margin(name: &str) -> f64 {
    match name {
        "violation_rate" => 0.01,
        "wrong_answer_rate" => 0.02,
        "csat" => 0.05,
        _ => 0.10,
    }
}

/// Guard counts of one arm.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmStats {
    /// Completed interactions (outcome ok).
    pub interactions: u64,
    /// Interactions whose output a rule blocked or redacted.
    pub violations: u64,
    /// Interactions escalated to a person.
    pub escalations: u64,
    /// Interactions reported wrong (feedback `wrong_answer`, review verdict wrong/outdated).
    pub wrong_answers: u64,
    /// CSAT ratings, and how many were 4 or 5.
    pub csat_ratings: u64,
    pub csat_satisfied: u64,
}

/// One guard's current reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardResult {
    pub guard: String,
    pub enabled: bool,
    pub margin: f64,
    /// The arm's rate (for `csat`: share satisfied).
    pub canary: Option<f64>,
    pub baseline: Option<f64>,
    pub n_canary: u64,
    pub n_baseline: u64,
    /// Always-valid interval of the harm (canary worse = positive).
    pub harm: Option<Interval>,
    pub verdict: Verdict,
}

/// What the guards say now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub guards: Vec<GuardResult>,
    /// `promote`, `rollback` or `wait`.
    pub verdict: String,
    pub reason: String,
}

/// Judges a canary's arms.
pub fn evaluate(
    canary: &ArmStats,
    baseline: &ArmStats,
    cfg: &UpdateConfig,
    elapsed_ms: i64,
) -> Evaluation {
    let mut guards = Vec::new();
    for (name, g) in cfg.guard_list() {
        let margin = g.margin.unwrap_or_else(|| default_margin(name));
        // (harm count, n) per arm: the rate whose increase is bad.
        let pick = |a: &ArmStats| -> (u64, u64) {
            match name {
                "violation_rate" => (a.violations, a.interactions),
                "wrong_answer_rate" => (a.wrong_answers, a.interactions),
                "csat" => (
                    a.csat_ratings - a.csat_satisfied.min(a.csat_ratings),
                    a.csat_ratings,
                ),
                _ => (a.escalations, a.interactions),
            }
        };
        let ((kc, nc), (kb, nb)) = (pick(canary), pick(baseline));
        let shown = |k: u64, n: u64| {
            (n > 0).then(|| {
                let r = k as f64 / n as f64;
                if name == "csat" {
                    1.0 - r
                } else {
                    r
                }
            })
        };
        let harm = diff_interval(kc, nc, kb, nb, cfg.alpha, margin.max(0.01));
        guards.push(GuardResult {
            guard: name.to_string(),
            enabled: g.enabled,
            margin,
            canary: shown(kc, nc),
            baseline: shown(kb, nb),
            n_canary: nc,
            n_baseline: nb,
            harm,
            verdict: judge(harm, margin),
        });
    }
    let live = |g: &&GuardResult| g.enabled;
    if let Some(bad) = guards.iter().filter(live).find(|g| {
        g.verdict == Verdict::Inferior
            && g.n_canary >= cfg.min_samples_rollback
            && g.n_baseline >= cfg.min_samples_rollback
    }) {
        let reason = format!(
            "{} regressed: canary {:.4} vs baseline {:.4}, harm interval [{:.4}, {:.4}] above the margin {}",
            bad.guard,
            bad.canary.unwrap_or(0.0),
            bad.baseline.unwrap_or(0.0),
            bad.harm.map(|h| h.lo).unwrap_or(0.0),
            bad.harm.map(|h| h.hi).unwrap_or(0.0),
            bad.margin
        );
        return Evaluation {
            guards,
            verdict: "rollback".into(),
            reason,
        };
    }
    let (verdict, reason) = if canary.interactions < cfg.min_samples_per_arm
        || baseline.interactions < cfg.min_samples_per_arm
    {
        (
            "wait",
            format!(
                "collecting: {} canary and {} baseline interactions of {} per arm",
                canary.interactions, baseline.interactions, cfg.min_samples_per_arm
            ),
        )
    } else if elapsed_ms < cfg.min_duration_ms {
        (
            "wait",
            format!(
                "running for {elapsed_ms} ms of at least {}",
                cfg.min_duration_ms
            ),
        )
    } else if let Some(g) = guards
        .iter()
        .filter(live)
        .find(|g| g.verdict == Verdict::Undecided)
    {
        ("wait", format!("{} is not yet shown non-inferior", g.guard))
    } else {
        let judged: Vec<&str> = guards
            .iter()
            .filter(live)
            .filter(|g| g.verdict == Verdict::NonInferior)
            .map(|g| g.guard.as_str())
            .collect();
        (
            "promote",
            format!(
                "non-inferior after {} canary interactions: {}",
                canary.interactions,
                judged.join(", ")
            ),
        )
    };
    Evaluation {
        guards,
        verdict: verdict.into(),
        reason,
    }
}

/// One rollout as the tracker follows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracked {
    pub rollout: Rollout,
    pub canary: ArmStats,
    pub baseline: ArmStats,
    /// Interactions already counted as wrong (so two reports count once); cleared at the end.
    #[serde(default)]
    pub wrong_seen: BTreeSet<String>,
    /// An automatic step was drafted; wait for its event.
    #[serde(default)]
    pub decided: bool,
}

impl Tracked {
    fn arm_mut(&mut self, arm: &str) -> Option<&mut ArmStats> {
        match arm {
            CANARY => Some(&mut self.canary),
            BASELINE => Some(&mut self.baseline),
            _ => None,
        }
    }
}

/// Guard counters per rollout, fed with events in log order. The caller resolves which
/// rollout arm a `FeedbackReceived` / `ReviewCompleted` event's interaction was served by.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    pub cursor: i64,
    pub rollouts: BTreeMap<String, Tracked>,
}

/// An automatic step the tracker asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoStep {
    pub rollout: Rollout,
    pub promote: bool,
    pub evaluation: Evaluation,
}

/// The `{id, arm}` an interaction record carries.
pub fn arm_of(record: &Value) -> Option<(String, String)> {
    let r = record.get("rollout")?;
    Some((
        r["id"].as_str()?.to_string(),
        r["arm"].as_str()?.to_string(),
    ))
}

impl Tracker {
    /// Reads a saved tracker.
    pub fn from_json(s: &str) -> Result<Self, crate::LoopError> {
        serde_json::from_str(s).map_err(|e| crate::LoopError::State(e.to_string()))
    }

    pub fn to_json(&self) -> Result<String, crate::LoopError> {
        serde_json::to_string(self).map_err(|e| crate::LoopError::State(e.to_string()))
    }

    /// Whether `ev` needs its interaction's arm resolved (feedback and review labels).
    pub fn needs_arm(&self, ev: &StoredEvent) -> bool {
        (ev.kind == crate::review::kinds::FEEDBACK || ev.kind == crate::review::kinds::COMPLETED)
            && self.rollouts.values().any(|t| t.rollout.is_canary())
    }

    /// Feeds one event; `arm` is the resolved `(rollout id, arm)` of a feedback or label.
    pub fn observe(&mut self, ev: &StoredEvent, arm: Option<(String, String)>) {
        self.cursor = self.cursor.max(ev.seq);
        match ev.kind.as_str() {
            ROLLOUT_CHANGED => {
                let Some(r) = Rollout::from_payload(&ev.payload) else {
                    return;
                };
                let ended = !r.is_canary();
                let t = self
                    .rollouts
                    .entry(r.id.clone())
                    .or_insert_with(|| Tracked {
                        rollout: r.clone(),
                        canary: ArmStats::default(),
                        baseline: ArmStats::default(),
                        wrong_seen: BTreeSet::new(),
                        decided: false,
                    });
                t.rollout = r;
                if ended {
                    t.wrong_seen.clear();
                    t.decided = false;
                }
            }
            keel_core::EventKind::INTERACTION_RECORDED => {
                let Some((id, arm)) = arm_of(&ev.payload) else {
                    return;
                };
                if ev.payload["outcome"] != "ok" {
                    return;
                }
                let Some(t) = self.rollouts.get_mut(&id).filter(|t| t.rollout.is_canary()) else {
                    return;
                };
                let d = &ev.payload["decision"];
                let outputs = d["output"].as_array().cloned().unwrap_or_default();
                let violated = outputs
                    .iter()
                    .any(|o| matches!(o["action"].as_str(), Some("block" | "redact")));
                let escalated = d["action"] == "escalate";
                if let Some(a) = t.arm_mut(&arm) {
                    a.interactions += 1;
                    a.violations += u64::from(violated);
                    a.escalations += u64::from(escalated);
                }
            }
            k if k == crate::review::kinds::FEEDBACK || k == crate::review::kinds::COMPLETED => {
                let Some((id, arm)) = arm else { return };
                let Some(t) = self.rollouts.get_mut(&id).filter(|t| t.rollout.is_canary()) else {
                    return;
                };
                let p = &ev.payload;
                let wrong = if k == crate::review::kinds::FEEDBACK {
                    p["wrong_answer"] == true
                } else {
                    matches!(p["verdict"].as_str(), Some("wrong_answer" | "outdated"))
                };
                let ix = p["interaction_id"].as_str().unwrap_or_default().to_string();
                let first_wrong = wrong && t.wrong_seen.insert(format!("{arm}:{ix}"));
                let csat = p["csat"].as_u64();
                if let Some(a) = t.arm_mut(&arm) {
                    a.wrong_answers += u64::from(first_wrong);
                    if let Some(c) = csat {
                        a.csat_ratings += 1;
                        a.csat_satisfied += u64::from(c >= 4);
                    }
                }
            }
            _ => {}
        }
    }

    /// The automatic steps due now (each canary at most once until its event is seen).
    pub fn decide(&mut self, cfg: &UpdateConfig, now_ms: i64) -> Vec<AutoStep> {
        let mut out = Vec::new();
        if !cfg.auto {
            return out;
        }
        for t in self.rollouts.values_mut() {
            if !t.rollout.is_canary() || t.decided {
                continue;
            }
            let e = evaluate(&t.canary, &t.baseline, cfg, now_ms - t.rollout.started_ms);
            let promote = match e.verdict.as_str() {
                "promote" => true,
                "rollback" => false,
                _ => continue,
            };
            t.decided = true;
            out.push(AutoStep {
                rollout: t.rollout.clone(),
                promote,
                evaluation: e,
            });
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_sticky_and_near_the_percentage() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("conv-{i}")).collect();
        let n = keys.iter().filter(|k| in_canary("ro_1", k, 10.0)).count();
        assert!((1_700..=2_300).contains(&n), "{n}");
        assert!(keys
            .iter()
            .all(|k| in_canary("ro_1", k, 10.0) == in_canary("ro_1", k, 10.0)));
        // Raising the percentage keeps everyone who was in the canary in it.
        assert!(keys
            .iter()
            .filter(|k| in_canary("ro_1", k, 10.0))
            .all(|k| in_canary("ro_1", k, 50.0)));
        assert!(keys.iter().all(|k| in_canary("ro_1", k, 100.0)));
        assert!(!keys.iter().any(|k| in_canary("ro_1", k, 0.0)));
        // Pinned values: the hash must never change (stored interactions name their arm).
        assert_eq!(bucket("ro_1", "conv-1"), bucket("ro_1", "conv-1"));
        assert_eq!(
            [
                bucket("ro_a", "c1"),
                bucket("ro_a", "c2"),
                bucket("ro_b", "c1")
            ],
            [992, 8085, 3502]
        );
    }

    #[test]
    fn scopes() {
        let s = RolloutScope {
            tenant: Some("acme".into()),
            locale: Some("ja".into()),
        };
        assert!(s.covers("acme", Some("ja-JP")));
        assert!(!s.covers("acme", Some("jav")));
        assert!(!s.covers("acme", None));
        assert!(!s.covers("other", Some("ja")));
        assert!(RolloutScope::default().covers("x", None));
        assert_eq!(s.key(), "acme|ja");
        assert_eq!(s.activation_scope(), None);
        assert_eq!(RolloutScope::default().activation_scope(), Some("*"));
    }

    fn started(percent: f64) -> Rollout {
        let s = Start {
            id: "ro_1",
            version: "v2",
            baseline: Some("v1"),
            percent,
            scope: RolloutScope::default(),
            reason: "try",
            proposal: None,
        };
        let ev = start(&s, &[], "ann", 5).unwrap();
        Rollout::from_payload(&ev[0].payload).unwrap()
    }

    #[test]
    fn transitions() {
        let c = started(10.0);
        assert_eq!(c.state, "canary");
        let full = start(
            &Start {
                percent: 100.0,
                id: "ro_2",
                ..Start {
                    id: "",
                    version: "v3",
                    baseline: None,
                    percent: 0.0,
                    scope: RolloutScope::default(),
                    reason: "activate",
                    proposal: None,
                }
            },
            &[&c],
            "ann",
            6,
        )
        .unwrap();
        let kinds: Vec<(&str, &str)> = full
            .iter()
            .map(|e| (e.kind.as_str(), e.payload["state"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(
            kinds,
            [
                ("RolloutChanged", "superseded"),
                ("RolloutChanged", "active"),
                ("PolicyActivated", "")
            ]
        );
        let second = Start {
            id: "ro_3",
            version: "v3",
            baseline: None,
            percent: 5.0,
            scope: RolloutScope::default(),
            reason: "x",
            proposal: None,
        };
        assert!(matches!(
            start(&second, &[&c], "a", 1),
            Err(RolloutError::Conflict(_))
        ));
        assert!(matches!(
            start(
                &Start {
                    percent: 0.0,
                    ..second.clone()
                },
                &[],
                "a",
                1
            ),
            Err(RolloutError::Invalid(_))
        ));
        let p = promote(&c, "good", "system", 9, None).unwrap();
        assert_eq!(p[0].payload["state"], "promoted");
        assert_eq!(p[1].kind, "PolicyActivated");
        assert_eq!(p[1].payload["version"], "v2");
        let promoted = Rollout::from_payload(&p[0].payload).unwrap();
        assert!(promote(&promoted, "again", "a", 10, None).is_err());
        let back = rollback(&promoted, "bad after all", "bob", 11, None).unwrap();
        assert_eq!(back[1].payload["version"], "v1");
        let rb = rollback(&c, "bad", "system", 9, None).unwrap();
        assert_eq!(rb.len(), 1);
        assert!(rollback(&c, " ", "system", 9, None).is_err());
    }

    fn interaction(seq: i64, arm: &str, action: &str) -> StoredEvent {
        StoredEvent {
            seq,
            kind: "InteractionRecorded".into(),
            actor: "app".into(),
            tenant: "acme".into(),
            at_ms: seq,
            payload: json!({"id": format!("ix_{seq}"), "outcome": "ok",
                            "rollout": {"id": "ro_1", "arm": arm},
                            "decision": {"action": action, "output": [{"action": action}]}}),
        }
    }

    fn feedback(seq: i64, ix: i64, wrong: bool) -> StoredEvent {
        StoredEvent {
            seq,
            kind: "FeedbackReceived".into(),
            actor: "app".into(),
            tenant: "acme".into(),
            at_ms: seq,
            payload: json!({"interaction_id": format!("ix_{ix}"), "wrong_answer": wrong}),
        }
    }

    fn cfg() -> UpdateConfig {
        UpdateConfig {
            min_samples_per_arm: 100,
            ..UpdateConfig::default()
        }
    }

    fn tracker_with(c: &Rollout) -> Tracker {
        let mut t = Tracker::default();
        let ev = StoredEvent {
            seq: 1,
            kind: ROLLOUT_CHANGED.into(),
            actor: "a".into(),
            tenant: "*".into(),
            at_ms: 5,
            payload: json!(c),
        };
        t.observe(&ev, None);
        t
    }

    #[test]
    fn a_regression_rolls_back_and_a_clean_canary_promotes() {
        let c = started(50.0);
        let mut bad = tracker_with(&c);
        let mut seq = 10;
        for i in 0..400 {
            let arm = if i % 2 == 0 { CANARY } else { BASELINE };
            seq += 1;
            bad.observe(&interaction(seq, arm, "allow"), None);
            // The canary gets a wrong answer every other time, the baseline rarely.
            if (arm == CANARY && i % 4 == 0) || (arm == BASELINE && i % 40 == 1) {
                let ix = seq;
                seq += 1;
                bad.observe(&feedback(seq, ix, true), Some(("ro_1".into(), arm.into())));
                seq += 1;
                bad.observe(&feedback(seq, ix, true), Some(("ro_1".into(), arm.into())));
            }
        }
        let steps = bad.decide(&cfg(), 1_000);
        assert_eq!(steps.len(), 1);
        assert!(!steps[0].promote, "{:?}", steps[0].evaluation);
        assert!(steps[0].evaluation.reason.contains("wrong_answer_rate"));
        assert!(bad.decide(&cfg(), 1_000).is_empty(), "decided once");
        let w = &bad.rollouts["ro_1"];
        assert_eq!(
            w.canary.wrong_answers, 100,
            "two reports of one interaction count once"
        );

        let mut clean = tracker_with(&c);
        for i in 0..4_000 {
            let arm = if i % 2 == 0 { CANARY } else { BASELINE };
            clean.observe(&interaction(10 + i, arm, "allow"), None);
        }
        let steps = clean.decide(&cfg(), 1_000);
        assert_eq!(steps.len(), 1);
        assert!(steps[0].promote, "{:?}", steps[0].evaluation);
        let json = clean.to_json().unwrap();
        assert_eq!(Tracker::from_json(&json).unwrap(), clean);
    }

    #[test]
    fn unhappy_canary_users_roll_it_back_and_escalations_count() {
        let c = started(50.0);
        let mut t = tracker_with(&c);
        let mut seq = 10;
        for i in 0..200 {
            let arm = if i % 2 == 0 { CANARY } else { BASELINE };
            seq += 1;
            t.observe(&interaction(seq, arm, "allow"), None);
            let ix = seq;
            seq += 1;
            let csat = if arm == CANARY { 1 } else { 5 };
            let fb = StoredEvent {
                seq,
                kind: "FeedbackReceived".into(),
                actor: "app".into(),
                tenant: "acme".into(),
                at_ms: seq,
                payload: json!({"interaction_id": format!("ix_{ix}"), "csat": csat}),
            };
            t.observe(&fb, Some(("ro_1".into(), arm.into())));
        }
        seq += 1;
        t.observe(&interaction(seq, BASELINE, "escalate"), None);
        assert_eq!(t.rollouts["ro_1"].baseline.escalations, 1);
        assert_eq!(t.rollouts["ro_1"].canary.csat_ratings, 100);
        let steps = t.decide(&cfg(), 1_000);
        assert_eq!(steps.len(), 1);
        assert!(!steps[0].promote);
        assert!(
            steps[0].evaluation.reason.starts_with("csat"),
            "{:?}",
            steps[0].evaluation
        );
        // Disabled guards never decide.
        let mut quiet = cfg();
        quiet.guards.csat.enabled = false;
        let mut t2 = tracker_with(&c);
        for i in 0..100 {
            let fb = StoredEvent {
                seq: 10 + i,
                kind: "FeedbackReceived".into(),
                actor: "app".into(),
                tenant: "acme".into(),
                at_ms: 0,
                payload: json!({"interaction_id": format!("ix_{i}"), "csat": 1}),
            };
            t2.observe(&fb, Some(("ro_1".into(), CANARY.into())));
        }
        assert!(t2.decide(&quiet, 1_000).is_empty());
    }

    #[test]
    fn waits_for_the_minimum_sample_and_duration() {
        let c = started(50.0);
        let mut t = tracker_with(&c);
        for i in 0..2_000 {
            t.observe(
                &interaction(10 + i, if i % 2 == 0 { CANARY } else { BASELINE }, "allow"),
                None,
            );
        }
        let few = UpdateConfig {
            min_samples_per_arm: 5_000,
            ..UpdateConfig::default()
        };
        assert!(t.decide(&few, 1_000).is_empty());
        let e = evaluate(
            &t.rollouts["ro_1"].canary,
            &t.rollouts["ro_1"].baseline,
            &few,
            0,
        );
        assert_eq!(e.verdict, "wait");
        let slow = UpdateConfig {
            min_samples_per_arm: 10,
            min_duration_ms: 10_000,
            ..UpdateConfig::default()
        };
        assert!(t.decide(&slow, 1_000).is_empty());
        assert_eq!(t.decide(&slow, 20_000).len(), 1);
    }
}
