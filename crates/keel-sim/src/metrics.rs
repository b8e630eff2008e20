//! Metrics per scenario, variant and strategy, counted from the first affected interaction after
//! each change (definitions in `docs/scenarios.md`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::grade::Grade;
use crate::runner::{Strategy, Variant};
use crate::scenario::{segment, Scenario};

/// One reply the simulated client received.
#[derive(Debug, Clone)]
pub struct Served {
    pub id: String,
    pub tick: u64,
    pub at_ms: i64,
    pub topic: usize,
    pub subtopic: usize,
    pub segment: usize,
    pub grade: Grade,
    /// Changes whose now-wrong statement the model's own answer carries (the affected slice).
    pub affected: Vec<usize>,
}

/// An alert as the runner read it after a tick's barrier.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub seq: i64,
    pub metric: String,
    pub locale: String,
    pub jurisdiction: String,
    pub topic: String,
    pub at_ms: i64,
    /// Replies served before the alert was seen.
    pub served_before: usize,
}

/// Counts per tick.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TickStats {
    pub tick: u64,
    pub at_ms: i64,
    pub interactions: u64,
    pub bad: u64,
    pub withheld: u64,
    pub affected: u64,
}

impl TickStats {
    pub fn add(&mut self, g: Grade, affected: bool) {
        self.interactions += 1;
        self.affected += u64::from(affected);
        match g {
            Grade::Bad => self.bad += 1,
            Grade::Withheld => self.withheld += 1,
            Grade::Good => {}
        }
    }
}

/// One row of `results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub variant: Variant,
    pub strategy: Strategy,
    /// `KEY=V` of a sweep run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepPoint>,
    pub interactions: u64,
    /// Replies on the affected slices (after a change, in its scope, model answer now wrong).
    pub affected: u64,
    /// Affected interactions before the first true alert (mean over detected changes); null
    /// when no change was detected.
    pub detect_delay: Option<f64>,
    pub changes_detected: u64,
    pub bad_served: u64,
    pub withheld: u64,
    /// Withheld replies whose answer was right.
    pub collateral: u64,
    pub true_alerts: u64,
    pub false_alarms: u64,
    pub false_alarms_per_10k: f64,
    /// Wrong-answer rate on the affected slice before mitigation (or over the whole run).
    pub war_before: Option<f64>,
    /// …and after mitigation; null when never mitigated.
    pub war_after: Option<f64>,
    /// Simulated minutes from a change's first affected reply until its fix was fully in force.
    pub mitigation_minutes: Option<f64>,
    /// Mean simulated minutes until a person took over (handoffs and escalations; ones never
    /// taken over count until the end of the run).
    pub mtth_minutes: Option<f64>,
    pub review_load_per_1k: f64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Row {
    pub fn variant_str(&self) -> &'static str {
        self.variant.as_str()
    }
    pub fn strategy_str(&self) -> &'static str {
        self.strategy.as_str()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    pub key: String,
    pub value: String,
}

/// A run's curves for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub ticks: Vec<TickStats>,
    pub changes: Vec<(String, i64)>,
    pub mitigations: Vec<(String, i64)>,
    pub canaries: Vec<(String, i64)>,
    /// (time, true alert?)
    pub alerts: Vec<(i64, bool)>,
}

fn rate(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| round4(n as f64 / d as f64))
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// Whether `a` is a true alert for change `i`.
fn true_for(s: &Scenario, i: usize, a: &Alert) -> bool {
    let c = &s.changes[i];
    a.at_ms >= c.effective_ms
        && c.scope
            .covers(&segment(&a.topic, None, &a.locale, &a.jurisdiction))
}

/// What one run observed, as the runner hands it to [`compute`].
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    pub served: &'a [Served],
    pub alerts: &'a [Alert],
    /// Per change: when its update was fully in force.
    pub mitigated: &'a BTreeMap<usize, i64>,
    /// Per change: when its update first reached users (a canary).
    pub canary: &'a BTreeMap<usize, i64>,
    pub to_human: &'a [(i64, Option<i64>)],
    pub labels: u64,
    pub end_ms: i64,
    pub ticks: &'a [TickStats],
}

pub fn compute(
    s: &Scenario,
    variant: Variant,
    strategy: Strategy,
    seen: Observed<'_>,
    sweep: Option<(String, String)>,
    notes: Vec<String>,
) -> (Row, Series) {
    let Observed {
        served,
        alerts,
        mitigated,
        canary,
        to_human,
        labels,
        end_ms,
        ticks,
    } = seen;
    let n = served.len() as u64;
    let affected: Vec<&Served> = served.iter().filter(|x| !x.affected.is_empty()).collect();
    let bad_served = affected.iter().filter(|x| x.grade == Grade::Bad).count() as u64;
    let withheld = served.iter().filter(|x| x.grade == Grade::Withheld).count() as u64;
    let collateral = served
        .iter()
        .filter(|x| x.grade == Grade::Withheld && x.affected.is_empty())
        .count() as u64;
    let mut delays = Vec::new();
    let mut mitigation = Vec::new();
    for i in 0..s.changes.len() {
        let mine: Vec<(usize, &Served)> = served
            .iter()
            .enumerate()
            .filter(|(_, x)| x.affected.contains(&i))
            .collect();
        if let Some(a) = alerts.iter().find(|a| true_for(s, i, a)) {
            delays.push(mine.iter().filter(|(k, _)| *k < a.served_before).count() as f64);
        }
        if let (Some(first), Some(m)) = (mine.first(), mitigated.get(&i)) {
            mitigation.push(((m - first.1.at_ms).max(0)) as f64 / 60_000.0);
        }
    }
    let true_alerts = alerts
        .iter()
        .filter(|a| (0..s.changes.len()).any(|i| true_for(s, i, a)))
        .count() as u64;
    let false_alarms = alerts.len() as u64 - true_alerts;
    let before_after = |after: bool| {
        let xs: Vec<&&Served> = affected
            .iter()
            .filter(|x| {
                let m = x
                    .affected
                    .iter()
                    .filter_map(|i| mitigated.get(i))
                    .min()
                    .copied();
                match m {
                    Some(m) => (x.at_ms >= m) == after,
                    None => !after,
                }
            })
            .collect();
        let bad = xs.iter().filter(|x| x.grade == Grade::Bad).count() as u64;
        rate(bad, xs.len() as u64)
    };
    let mtth = if to_human.is_empty() {
        None
    } else {
        let total: f64 = to_human
            .iter()
            .map(|(at, h)| (h.unwrap_or(end_ms) - at).max(0) as f64 / 60_000.0)
            .sum();
        Some(round4(total / to_human.len() as f64))
    };
    let mean = |v: &[f64]| (!v.is_empty()).then(|| round4(v.iter().sum::<f64>() / v.len() as f64));
    let row = Row {
        scenario: s.name.clone(),
        variant,
        strategy,
        sweep: sweep.map(|(key, value)| SweepPoint { key, value }),
        interactions: n,
        affected: affected.len() as u64,
        detect_delay: mean(&delays),
        changes_detected: delays.len() as u64,
        bad_served,
        withheld,
        collateral,
        true_alerts,
        false_alarms,
        false_alarms_per_10k: if n == 0 {
            0.0
        } else {
            round4(false_alarms as f64 * 10_000.0 / n as f64)
        },
        war_before: before_after(false),
        war_after: if mitigated.is_empty() {
            None
        } else {
            before_after(true)
        },
        mitigation_minutes: mean(&mitigation),
        mtth_minutes: mtth,
        review_load_per_1k: if n == 0 {
            0.0
        } else {
            round4(labels as f64 * 1000.0 / n as f64)
        },
        notes,
    };
    let name = |i: &usize| s.changes.get(*i).map(|c| c.id.clone()).unwrap_or_default();
    let series = Series {
        ticks: ticks.to_vec(),
        changes: s
            .changes
            .iter()
            .map(|c| (c.id.clone(), c.effective_ms))
            .collect(),
        mitigations: mitigated.iter().map(|(i, t)| (name(i), *t)).collect(),
        canaries: canary.iter().map(|(i, t)| (name(i), *t)).collect(),
        alerts: alerts
            .iter()
            .map(|a| (a.at_ms, (0..s.changes.len()).any(|i| true_for(s, i, a))))
            .collect(),
    };
    (row, series)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn served(at_ms: i64, grade: Grade, affected: bool) -> Served {
        Served {
            id: format!("ix{at_ms}"),
            tick: 0,
            at_ms,
            topic: 0,
            subtopic: 0,
            segment: 1,
            grade,
            affected: if affected { vec![0] } else { Vec::new() },
        }
    }

    fn alert(at_ms: i64, jurisdiction: &str, served_before: usize) -> Alert {
        Alert {
            seq: at_ms,
            metric: "wrong_answer_rate".into(),
            locale: "en-GB".into(),
            jurisdiction: jurisdiction.into(),
            topic: "investing".into(),
            at_ms,
            served_before,
        }
    }

    #[test]
    fn metrics_count_from_the_first_affected_reply() {
        let s = Scenario::load("leveraged-products").unwrap();
        let t = s.changes[0].effective_ms;
        let xs = vec![
            served(t - 10, Grade::Good, false),
            served(t, Grade::Bad, true),
            served(t + 1, Grade::Bad, true),
            served(t + 2, Grade::Withheld, false), // right answer withheld: collateral
            served(t + 3, Grade::Bad, true),
            served(t + 100, Grade::Good, true), // after the fix
            served(t + 101, Grade::Withheld, true),
        ];
        let alerts = vec![
            alert(t - 5, "GB", 1),  // before the change: false alarm
            alert(t + 50, "US", 5), // another jurisdiction: false alarm
            alert(t + 60, "GB", 5), // true: 3 affected replies before it
        ];
        let mitigated = BTreeMap::from([(0usize, t + 100)]);
        let seen = Observed {
            served: &xs,
            alerts: &alerts,
            mitigated: &mitigated,
            canary: &mitigated,
            to_human: &[(t, Some(t + 30 * 60_000)), (t, None)],
            labels: 7,
            end_ms: t + 60 * 60_000,
            ticks: &[],
        };
        let (row, series) = compute(
            &s,
            Variant::Unannounced,
            Strategy::Continual,
            seen,
            None,
            Vec::new(),
        );
        assert_eq!(row.interactions, 7);
        assert_eq!(row.affected, 5);
        assert_eq!(row.bad_served, 3);
        assert_eq!(row.withheld, 2);
        assert_eq!(row.collateral, 1);
        assert_eq!(row.detect_delay, Some(3.0));
        assert_eq!((row.true_alerts, row.false_alarms), (1, 2));
        assert_eq!(row.war_before, Some(1.0));
        assert_eq!(row.war_after, Some(0.0));
        assert_eq!(row.mtth_minutes, Some(45.0));
        assert_eq!(row.review_load_per_1k, 1000.0);
        assert_eq!(series.alerts.iter().filter(|a| a.1).count(), 1);
    }
}
