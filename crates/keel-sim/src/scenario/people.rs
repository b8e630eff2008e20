//! The scenario's people who work the loop: `[reviewers]` (also the staff answering handoffs)
//! and `[operator]` (who turns suggestions into proposals and follows alerts).

use serde::{Deserialize, Serialize};

use super::de_duration;

/// `[reviewers]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reviewers {
    #[serde(default = "default_reviewers")]
    pub count: u32,
    /// Working hours `[from, to)` in UTC (simulated time); `[0, 24]` = around the clock.
    #[serde(default = "default_hours")]
    pub hours: [u32; 2],
    /// Time from an item entering the queue until a reviewer labels it (at the earliest).
    #[serde(
        rename = "latency",
        default = "default_latency",
        deserialize_with = "de_duration"
    )]
    pub latency_ms: i64,
    /// Probability that a label is right (a wrong one flips the verdict and drops the suggestion).
    #[serde(default = "default_accuracy")]
    pub accuracy: f64,
    /// Items one reviewer labels per working hour.
    #[serde(default = "default_items_per_hour")]
    pub items_per_hour: f64,
}

fn default_reviewers() -> u32 {
    2
}
fn default_hours() -> [u32; 2] {
    [9, 18]
}
fn default_latency() -> i64 {
    30 * 60_000
}
fn default_accuracy() -> f64 {
    0.95
}
fn default_items_per_hour() -> f64 {
    12.0
}

impl Default for Reviewers {
    fn default() -> Self {
        Self {
            count: default_reviewers(),
            hours: default_hours(),
            latency_ms: default_latency(),
            accuracy: default_accuracy(),
            items_per_hour: default_items_per_hour(),
        }
    }
}

/// `[operator]`: the person who drafts and approves proposals, follows canaries and
/// acknowledges alerts. Absent: around the clock, acting in the same tick (the behaviour before
/// the section existed). The operator never promotes a canary by hand.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    /// Working hours `[from, to)` in UTC (simulated time); `[0, 24]` = around the clock.
    #[serde(default = "default_operator_hours")]
    pub hours: [u32; 2],
    /// Time from a suggestion or alert reaching the operator until they act on it (at the
    /// earliest, and only within working hours).
    #[serde(
        rename = "latency",
        default = "default_operator_latency",
        deserialize_with = "de_duration"
    )]
    pub latency_ms: i64,
}

fn default_operator_hours() -> [u32; 2] {
    [0, 24]
}
fn default_operator_latency() -> i64 {
    0
}

impl Default for Operator {
    fn default() -> Self {
        Self {
            hours: default_operator_hours(),
            latency_ms: default_operator_latency(),
        }
    }
}

impl Operator {
    /// Whether `ms` falls in the operator's working hours.
    pub fn on_duty(&self, ms: i64) -> bool {
        in_hours(self.hours, ms)
    }
}

impl Reviewers {
    /// Whether `ms` falls in the reviewers' working hours.
    pub fn on_duty(&self, ms: i64) -> bool {
        in_hours(self.hours, ms)
    }
}

/// Whether the UTC hour of `ms` is in `[from, to)`.
pub fn in_hours(hours: [u32; 2], ms: i64) -> bool {
    let hour = ((ms.rem_euclid(86_400_000)) / 3_600_000) as u32;
    hour >= hours[0] && hour < hours[1]
}
