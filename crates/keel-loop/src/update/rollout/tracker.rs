//! The [`Tracker`]: guard counters per rollout and arm, folded from the event log, serialisable
//! so the rollout worker resumes where it stopped, and its automatic promote/rollback steps.

use std::collections::{BTreeMap, BTreeSet};

use keel_core::StoredEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::guards::{evaluate, ArmStats, Evaluation, UpdateConfig};
use super::plan::{Plan, RolloutsConfig, StepProgress};
use super::state::Rollout;
use super::{BASELINE, CANARY, ROLLOUT_CHANGED};

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
    /// When the current analysis step began (the start, or the last percentage raise).
    #[serde(default)]
    pub step_started_ms: i64,
    /// Interactions per arm counted before the current step began.
    #[serde(default)]
    pub step_base: (u64, u64),
    /// When the step was last analysed for promotion.
    #[serde(default)]
    pub last_analysis_ms: i64,
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
    /// Forward (to `to_percent`; 100 = promoted) or back.
    pub promote: bool,
    pub to_percent: f64,
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
                        step_started_ms: ev.at_ms,
                        step_base: (0, 0),
                        last_analysis_ms: ev.at_ms,
                    });
                if r.is_canary() && t.rollout.is_canary() && r.percent > t.rollout.percent {
                    // The next analysis step: its sample target counts from here.
                    t.step_started_ms = ev.at_ms;
                    t.step_base = (t.canary.interactions, t.baseline.interactions);
                    t.last_analysis_ms = ev.at_ms;
                    t.decided = false;
                }
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
                let violated = crate::vocab::violated(d);
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

    /// Where a tracked canary stands in its step at `now_ms`.
    pub fn progress(t: &Tracked, plan: &Plan, now_ms: i64) -> StepProgress {
        StepProgress {
            canary: t.canary.interactions.saturating_sub(t.step_base.0),
            baseline: t.baseline.interactions.saturating_sub(t.step_base.1),
            step_elapsed_ms: now_ms - t.step_started_ms,
            total_elapsed_ms: now_ms - t.rollout.started_ms,
            analysis_due: now_ms - t.last_analysis_ms >= plan.analysis_interval_ms,
        }
    }

    /// The automatic steps due now (each canary at most once until its event is seen):
    /// rollbacks at any time, step conclusions at analyses (`plans` gives each rollout's plan
    /// by its tenant).
    pub fn decide(
        &mut self,
        cfg: &UpdateConfig,
        plans: &RolloutsConfig,
        now_ms: i64,
    ) -> Vec<AutoStep> {
        let mut out = Vec::new();
        if !cfg.auto {
            return out;
        }
        for t in self.rollouts.values_mut() {
            if !t.rollout.is_canary() || t.decided {
                continue;
            }
            let plan = plans.plan_for(t.rollout.scope.tenant.as_deref(), cfg);
            let step = Self::progress(t, &plan, now_ms);
            let e = evaluate(&t.canary, &t.baseline, cfg, &plan, &step, t.rollout.percent);
            if step.analysis_due {
                // Analyses fall on the step's own grid (start + k · interval).
                let i = plan.analysis_interval_ms;
                t.last_analysis_ms = if i > 0 {
                    t.step_started_ms + (now_ms - t.step_started_ms).div_euclid(i) * i
                } else {
                    now_ms
                };
            }
            let (promote, to_percent) = match (e.verdict.as_str(), e.next_percent) {
                ("promote", _) => (true, 100.0),
                ("advance", Some(p)) => (true, p),
                ("rollback", _) => (false, 0.0),
                _ => continue,
            };
            t.decided = true;
            out.push(AutoStep {
                rollout: t.rollout.clone(),
                promote,
                to_percent,
                evaluation: e,
            });
        }
        out
    }
}
