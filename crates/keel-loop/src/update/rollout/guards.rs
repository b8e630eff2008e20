//! Guard metrics and their judgement: the `[update]` configuration (guards, margins, minimum
//! samples and duration), per-arm counts and the sequential comparison that says promote,
//! roll back or wait.

use serde::{Deserialize, Serialize};

use super::plan::{Plan, StepProgress};
use crate::update::sequential::{diff_interval, judge, Interval, Verdict};

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
    /// Interactions per arm that conclude an analysis step, unless `[rollouts] min_samples`
    /// says otherwise.
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
    /// Where a concluded step goes (`promote`: 100, `advance`: the next step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_percent: Option<f64>,
}

/// Judges a canary's arms by analysis steps: roll back as soon as an enabled guard is shown
/// worse than its margin (always-valid interval, any time); otherwise, at an analysis, the
/// step concludes when both arms reached the plan's sample target or the step ran its
/// maximum duration — to the next step (`advance`) or to 100 % (`promote`); else wait.
/// `percent` is the canary's current share.
pub fn evaluate(
    canary: &ArmStats,
    baseline: &ArmStats,
    cfg: &UpdateConfig,
    plan: &Plan,
    step: &StepProgress,
    percent: f64,
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
            next_percent: None,
        };
    }
    let mut next_percent = None;
    let (verdict, reason) = if step.total_elapsed_ms < cfg.min_duration_ms {
        (
            "wait",
            format!(
                "running for {} ms of at least {}",
                step.total_elapsed_ms, cfg.min_duration_ms
            ),
        )
    } else if !step.analysis_due {
        (
            "wait",
            format!(
                "next analysis {} ms after the last (step at {} % for {} ms)",
                plan.analysis_interval_ms, percent, step.step_elapsed_ms
            ),
        )
    } else {
        let target = step.canary >= plan.min_samples && step.baseline >= plan.min_samples;
        let timed_out = step.step_elapsed_ms >= plan.max_duration_ms;
        if let Some(g) = guards
            .iter()
            .filter(live)
            .find(|g| g.verdict == Verdict::Inferior)
        {
            (
                "wait",
                format!(
                    "{} looks worse than its margin; waiting for {} observations per arm to decide",
                    g.guard, cfg.min_samples_rollback
                ),
            )
        } else if !target && !timed_out {
            (
                "wait",
                format!(
                    "collecting: {} canary and {} baseline interactions of {} per arm at {} % \
                     (or {} ms of {})",
                    step.canary,
                    step.baseline,
                    plan.min_samples,
                    percent,
                    step.step_elapsed_ms,
                    plan.max_duration_ms
                ),
            )
        } else {
            let next = plan.next_percent(percent);
            next_percent = Some(next);
            let why = if target {
                format!(
                    "sample target reached ({} canary, {} baseline interactions ≥ {} per arm)",
                    step.canary, step.baseline, plan.min_samples
                )
            } else {
                format!(
                    "step ran its maximum {} ms ({} canary, {} baseline interactions)",
                    plan.max_duration_ms, step.canary, step.baseline
                )
            };
            let shown: Vec<&str> = guards
                .iter()
                .filter(live)
                .filter(|g| g.verdict == Verdict::NonInferior)
                .map(|g| g.guard.as_str())
                .collect();
            let shown = if shown.is_empty() {
                String::new()
            } else {
                format!("; shown non-inferior: {}", shown.join(", "))
            };
            (
                if next >= 100.0 { "promote" } else { "advance" },
                format!("{why}; no guard shows harm{shown}; {percent} % → {next} %"),
            )
        }
    };
    Evaluation {
        guards,
        verdict: verdict.into(),
        reason,
        next_percent,
    }
}
