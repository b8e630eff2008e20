//! Analysis steps: the `[rollouts]` plan a canary follows (percentages such as 5 → 25 → 100,
//! a sample target per arm, an analysis interval and a maximum duration per step), with
//! per-tenant overrides, and the progress of a canary through its current step.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::guards::UpdateConfig;

/// The `[rollouts]` config section: the global plan and `[rollouts.tenants.<t>]` overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutsConfig {
    /// Canary percentages in increasing order, ending at 100 (100 = promoted). A rollout
    /// started at `p` moves to the first step above `p`.
    #[serde(default = "default_steps")]
    pub steps: Vec<f64>,
    /// Interactions per arm within a step that let it conclude (default:
    /// `[update] min_samples_per_arm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
    /// How often (clock time) a step is analysed for promotion; rollbacks are checked on
    /// every event (the sequential test is always valid).
    #[serde(default = "default_interval")]
    pub analysis_interval_ms: i64,
    /// A step concludes after this long even short of its sample target, when no guard
    /// shows harm.
    #[serde(default = "default_max_duration")]
    pub max_duration_ms: i64,
    /// Per-tenant overrides (omitted fields keep the global value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants: BTreeMap<String, PlanOverride>,
}

/// `[rollouts.tenants.<tenant>]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_interval_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_ms: Option<i64>,
}

fn default_steps() -> Vec<f64> {
    vec![5.0, 25.0, 100.0]
}
fn default_interval() -> i64 {
    10 * 60_000
}
fn default_max_duration() -> i64 {
    3_600_000
}

impl Default for RolloutsConfig {
    fn default() -> Self {
        Self {
            steps: default_steps(),
            min_samples: None,
            analysis_interval_ms: default_interval(),
            max_duration_ms: default_max_duration(),
            tenants: BTreeMap::new(),
        }
    }
}

/// The plan in force for one rollout (global values with its tenant's overrides applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub steps: Vec<f64>,
    pub min_samples: u64,
    pub analysis_interval_ms: i64,
    pub max_duration_ms: i64,
}

fn check_steps(steps: &[f64], key: &str) -> Result<(), String> {
    let increasing = steps.windows(2).all(|w| w[0] < w[1]);
    let in_range = steps.iter().all(|s| *s > 0.0 && *s <= 100.0);
    if steps.is_empty() || !increasing || !in_range || steps.last() != Some(&100.0) {
        return Err(format!(
            "{key} must be increasing percentages above 0 that end at 100 (e.g. [5, 25, 100])"
        ));
    }
    Ok(())
}

impl RolloutsConfig {
    /// Checks the global plan and every override.
    pub fn validate(&self) -> Result<(), String> {
        check_steps(&self.steps, "rollouts.steps")?;
        let times = |i: i64, m: i64, at: &str| {
            if i < 0 || m <= 0 {
                Err(format!(
                    "{at}analysis_interval_ms must be ≥ 0 and {at}max_duration_ms above 0"
                ))
            } else {
                Ok(())
            }
        };
        times(self.analysis_interval_ms, self.max_duration_ms, "rollouts.")?;
        for (t, o) in &self.tenants {
            let at = format!("rollouts.tenants.{t}.");
            if let Some(s) = &o.steps {
                check_steps(s, &format!("{at}steps"))?;
            }
            times(
                o.analysis_interval_ms.unwrap_or(self.analysis_interval_ms),
                o.max_duration_ms.unwrap_or(self.max_duration_ms),
                &at,
            )?;
        }
        Ok(())
    }

    /// The plan for a rollout of `tenant` (`None`: every tenant).
    pub fn plan_for(&self, tenant: Option<&str>, update: &UpdateConfig) -> Plan {
        let o = tenant
            .and_then(|t| self.tenants.get(t))
            .cloned()
            .unwrap_or_default();
        Plan {
            steps: o.steps.unwrap_or_else(|| self.steps.clone()),
            min_samples: o
                .min_samples
                .or(self.min_samples)
                .unwrap_or(update.min_samples_per_arm),
            analysis_interval_ms: o.analysis_interval_ms.unwrap_or(self.analysis_interval_ms),
            max_duration_ms: o.max_duration_ms.unwrap_or(self.max_duration_ms),
        }
    }
}

impl Plan {
    /// The percentage after `percent`: the first step above it (100 when none is).
    pub fn next_percent(&self, percent: f64) -> f64 {
        self.steps
            .iter()
            .copied()
            .find(|s| *s > percent + 1e-9)
            .unwrap_or(100.0)
    }
}

/// Where a canary stands in its current step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepProgress {
    /// Interactions per arm since the step began.
    pub canary: u64,
    pub baseline: u64,
    /// Clock time since the step began, and since the rollout started.
    pub step_elapsed_ms: i64,
    pub total_elapsed_ms: i64,
    /// Whether an analysis is due now (one interval since the last one).
    pub analysis_due: bool,
}
