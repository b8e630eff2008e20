//! Metrics per scenario, variant and strategy, counted from the first affected interaction after
//! each change (definitions in `docs/scenarios.md`).

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::grade::Grade;
use crate::runner::{Strategy, Variant};
use crate::scenario::{Change, Scenario};

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

/// An alert as the runner read it after a tick's barrier. A slice dimension that is `None`
/// is not named (a roll-up across it), so it covers any value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Alert {
    pub seq: i64,
    pub id: String,
    pub metric: String,
    pub locale: Option<String>,
    pub jurisdiction: Option<String>,
    pub topic: Option<String>,
    pub cluster: Option<String>,
    /// The interactions the alert names (its `evidence` and `first_interaction`).
    pub evidence: Vec<String>,
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
    /// Per change: its first true alert, the affected replies before it, its mitigation.
    pub per_change: Vec<PerChange>,
    /// Alerts seen before the first change took effect (nothing to find yet).
    pub quiet_period_alerts: u64,
    /// Canaries promoted by a person (the simulated operator never promotes by hand; a
    /// rollout whose `promoted_by` names someone other than the worker counts).
    pub manual_promotions: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One change's detection and mitigation in one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerChange {
    pub change: String,
    pub effective_ms: i64,
    /// Replies on this change's affected slice.
    pub affected: u64,
    /// …of them graded bad.
    pub bad_served: u64,
    /// When the first true alert for this change was seen, and its sequence number.
    pub first_true_alert_ms: Option<i64>,
    pub first_true_alert_seq: Option<i64>,
    /// Affected replies served before that alert (`null` when never detected).
    pub affected_before_alert: Option<u64>,
    /// When the fix first reached users (a canary) and when it was fully in force.
    pub canary_ms: Option<i64>,
    pub mitigated_ms: Option<i64>,
    /// Simulated minutes from the first affected reply until the fix was fully in force.
    pub mitigation_minutes: Option<f64>,
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

/// Whether a slice value the alert names (if any) is inside a scope's list (empty = any).
fn names_inside(scope_list: &[String], named: Option<&String>) -> bool {
    named.is_none_or(|v| keel_core::scope::any_tag_covers(scope_list, Some(v)))
}

/// Whether `a` is a true alert for change `c`: its slice lies in the change's scope (every
/// dimension it names is one the scope covers) and it names at least one reply of the change's
/// affected slice (`affected` holds their interaction ids).
fn true_for(c: &Change, affected: &HashSet<&str>, a: &Alert) -> bool {
    let sc = &c.scope;
    a.at_ms >= c.effective_ms
        && names_inside(&sc.locales, a.locale.as_ref())
        && names_inside(&sc.jurisdictions, a.jurisdiction.as_ref())
        && match (&sc.topic, &a.topic) {
            (Some(want), Some(t)) => keel_core::scope::topic_covers(want, t),
            _ => true,
        }
        && a.evidence.iter().any(|id| affected.contains(id.as_str()))
}

/// The median of `v` (the mean of the middle two for an even count); `None` when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut xs: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    let mid = if xs.len().is_multiple_of(2) {
        (xs[m - 1] + xs[m]) / 2.0
    } else {
        xs[m]
    };
    Some(round4(mid))
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
    /// Canaries promoted by a person.
    pub manual_promotions: u64,
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
        manual_promotions,
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
    let mut per_change = Vec::with_capacity(s.changes.len());
    let mut is_true = vec![false; alerts.len()];
    for (i, c) in s.changes.iter().enumerate() {
        let mine: Vec<(usize, &Served)> = served
            .iter()
            .enumerate()
            .filter(|(_, x)| x.affected.contains(&i))
            .collect();
        let ids: HashSet<&str> = mine.iter().map(|(_, x)| x.id.as_str()).collect();
        let mut first: Option<&Alert> = None;
        for (k, a) in alerts.iter().enumerate() {
            if true_for(c, &ids, a) {
                is_true[k] = true;
                if first.is_none_or(|f| (a.at_ms, a.seq) < (f.at_ms, f.seq)) {
                    first = Some(a);
                }
            }
        }
        let before = first.map(|a| mine.iter().filter(|(k, _)| *k < a.served_before).count());
        if let Some(b) = before {
            delays.push(b as f64);
        }
        let mitigated_ms = mitigated.get(&i).copied();
        let minutes = match (mine.first(), mitigated_ms) {
            (Some(f), Some(m)) => Some(round4(((m - f.1.at_ms).max(0)) as f64 / 60_000.0)),
            _ => None,
        };
        if let Some(m) = minutes {
            mitigation.push(m);
        }
        per_change.push(PerChange {
            change: c.id.clone(),
            effective_ms: c.effective_ms,
            affected: mine.len() as u64,
            bad_served: mine.iter().filter(|(_, x)| x.grade == Grade::Bad).count() as u64,
            first_true_alert_ms: first.map(|a| a.at_ms),
            first_true_alert_seq: first.map(|a| a.seq),
            affected_before_alert: before.map(|b| b as u64),
            canary_ms: canary.get(&i).copied(),
            mitigated_ms,
            mitigation_minutes: minutes,
        });
    }
    let true_alerts = is_true.iter().filter(|t| **t).count() as u64;
    let first_effective = s.changes.iter().map(|c| c.effective_ms).min();
    let quiet_period_alerts = alerts
        .iter()
        .filter(|a| first_effective.is_none_or(|t| a.at_ms < t))
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
        detect_delay: median(&delays),
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
        per_change,
        quiet_period_alerts,
        manual_promotions,
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
            .zip(&is_true)
            .map(|(a, t)| (a.at_ms, *t))
            .collect(),
    };
    (row, series)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn served(at_ms: i64, grade: Grade, affected: &[usize]) -> Served {
        Served {
            id: format!("ix{at_ms}"),
            tick: 0,
            at_ms,
            topic: 0,
            subtopic: 0,
            segment: 1,
            grade,
            affected: affected.to_vec(),
        }
    }

    /// An alert on (locale, jurisdiction, topic) naming the replies served at `evidence`.
    fn alert(
        at_ms: i64,
        slice: (Option<&str>, Option<&str>, Option<&str>),
        evidence: &[i64],
        served_before: usize,
    ) -> Alert {
        Alert {
            seq: at_ms,
            id: format!("al{at_ms}"),
            metric: "wrong_answer_rate".into(),
            locale: slice.0.map(str::to_string),
            jurisdiction: slice.1.map(str::to_string),
            topic: slice.2.map(str::to_string),
            cluster: None,
            evidence: evidence.iter().map(|t| format!("ix{t}")).collect(),
            at_ms,
            served_before,
        }
    }

    fn run(s: &Scenario, xs: &[Served], alerts: &[Alert], mitigated: &BTreeMap<usize, i64>) -> Row {
        let end = xs.last().map_or(0, |x| x.at_ms) + 60 * 60_000;
        let seen = Observed {
            served: xs,
            alerts,
            mitigated,
            canary: mitigated,
            to_human: &[],
            labels: 0,
            end_ms: end,
            ticks: &[],
            manual_promotions: 0,
        };
        compute(
            s,
            Variant::Unannounced,
            Strategy::Continual,
            seen,
            None,
            Vec::new(),
        )
        .0
    }

    #[test]
    fn metrics_count_from_the_first_affected_reply() {
        let s = Scenario::load("leveraged-products").unwrap();
        let t = s.changes[0].effective_ms;
        let gb = (Some("en-GB"), Some("GB"), Some("investing"));
        let xs = vec![
            served(t - 10, Grade::Good, &[]),
            served(t, Grade::Bad, &[0]),
            served(t + 1, Grade::Bad, &[0]),
            served(t + 2, Grade::Withheld, &[]), // right answer withheld: collateral
            served(t + 3, Grade::Bad, &[0]),
            served(t + 100, Grade::Good, &[0]), // after the fix
            served(t + 101, Grade::Withheld, &[0]),
        ];
        let alerts = vec![
            alert(t - 5, gb, &[t - 10], 1), // before the change: false alarm, quiet period
            alert(
                t + 50,
                (Some("en-US"), Some("US"), Some("investing")),
                &[t],
                5,
            ), // wrong slice
            alert(t + 55, gb, &[t + 2], 5), // right slice, no affected reply named
            alert(t + 60, gb, &[t + 2, t + 1], 5), // true: 3 affected replies before it
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
            manual_promotions: 0,
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
        assert_eq!((row.true_alerts, row.false_alarms), (1, 3));
        assert_eq!(row.quiet_period_alerts, 1);
        assert_eq!(row.war_before, Some(1.0));
        assert_eq!(row.war_after, Some(0.0));
        assert_eq!(row.mtth_minutes, Some(45.0));
        assert_eq!(row.review_load_per_1k, 1000.0);
        assert_eq!(series.alerts.iter().filter(|a| a.1).count(), 1);
        let pc = &row.per_change[0];
        assert_eq!(pc.first_true_alert_ms, Some(t + 60));
        assert_eq!(pc.affected_before_alert, Some(3));
        assert_eq!((pc.affected, pc.bad_served), (5, 3));
        assert_eq!(pc.mitigated_ms, Some(t + 100));
    }

    /// Two changes in one slice, a third elsewhere: which alerts detect which change.
    const TWO_RATES: &str = r#"
name = "two-rates"
start = "2026-01-01T00:00:00Z"
duration = "2d"
tick = "1h"
[traffic]
conversations_per_tick = 5
segments = [{ locale = "de-DE", jurisdiction = "DE", weight = 1 }, { locale = "en-GB", jurisdiction = "GB", weight = 1 }]
[[topics]]
id = "tax"
[[topics.subtopics]]
id = "standard"
prompts = { de = ["Steuer?"], en = ["Tax?"] }
answers = { de = "19 %.", en = "20 %." }
[[topics.subtopics]]
id = "reduced"
prompts = { de = ["Ermäßigt?"], en = ["Reduced?"] }
answers = { de = "7 %.", en = "5 %." }
[users]
wrong = { report = 0.05 }
[[changes]]
id = "de-standard"
effective = "1d"
scope = { jurisdictions = ["DE"], topic = "tax", subtopics = ["standard"] }
wrong = ["19 %"]
update = { kind = "rewrite", from = "19 %", to = "21 %" }
[[changes]]
id = "de-reduced"
effective = "1d"
scope = { jurisdictions = ["DE"], topic = "tax", subtopics = ["reduced"] }
wrong = ["7 %"]
update = { kind = "rewrite", from = "7 %", to = "8 %" }
[[changes]]
id = "gb-standard"
effective = "1d"
scope = { jurisdictions = ["GB"], topic = "tax" }
wrong = ["20 %"]
update = { kind = "rewrite", from = "20 %", to = "22 %" }
"#;

    /// `alerts` against TWO_RATES's replies (ix{t}: t+0..2 affected by change 0, t+3..5 by
    /// change 1, t+6 by change 2): (first true alert time per change, true, quiet, median).
    fn check(alerts: &[Alert], want: ([Option<i64>; 3], u64, u64, Option<f64>)) {
        let s = Scenario::parse(TWO_RATES, "two-rates").unwrap();
        let t = s.changes[0].effective_ms;
        let mut xs = vec![served(t - 1, Grade::Good, &[])];
        for k in 0..7 {
            let change = [0, 0, 0, 1, 1, 1, 2][k as usize];
            xs.push(served(t + k, Grade::Bad, &[change]));
        }
        let row = run(&s, &xs, alerts, &BTreeMap::new());
        let first: Vec<Option<i64>> = row
            .per_change
            .iter()
            .map(|p| p.first_true_alert_ms.map(|m| m - t))
            .collect();
        let got = (
            first,
            row.true_alerts,
            row.quiet_period_alerts,
            row.detect_delay,
        );
        let want = (want.0.to_vec(), want.1, want.2, want.3);
        assert_eq!(got, want, "{alerts:?}");
        assert_eq!(row.changes_detected, got.0.iter().flatten().count() as u64);
        assert_eq!(row.false_alarms, alerts.len() as u64 - row.true_alerts);
    }

    #[test]
    fn an_alert_is_true_only_for_the_changes_its_evidence_names() {
        let s = Scenario::parse(TWO_RATES, "two-rates").unwrap();
        let t = s.changes[0].effective_ms;
        let de = (Some("de-DE"), Some("DE"), Some("tax"));
        let de_rollup = (None, Some("DE"), Some("tax"));
        let gb = (Some("en-GB"), Some("GB"), Some("tax"));
        // One early alert naming a reply of the first change detects only that change.
        check(
            &[alert(t + 2, de, &[t + 1], 3)],
            ([Some(2), None, None], 1, 0, Some(2.0)),
        );
        // Naming replies of both DE changes detects both; a roll-up across locales still lies
        // inside the scope.
        check(
            &[alert(t + 5, de_rollup, &[t, t + 4], 6)],
            ([Some(5), Some(5), None], 1, 0, Some(2.5)),
        );
        // A GB slice naming a DE reply detects nothing; naming a GB reply detects the GB change.
        check(
            &[alert(t + 7, gb, &[t], 8)],
            ([None, None, None], 0, 0, None),
        );
        check(
            &[alert(t + 7, gb, &[t + 6], 8)],
            ([None, None, Some(7)], 1, 0, Some(1.0)),
        );
        // Before the changes: quiet-period alerts, never true.
        check(
            &[alert(t - 1, de, &[t - 1], 0), alert(t - 1, gb, &[], 0)],
            ([None, None, None], 0, 2, None),
        );
        // The median over detected changes (1, 1 and 1 affected replies before the alerts).
        check(
            &[
                alert(t + 1, de, &[t], 2),
                alert(t + 4, de, &[t + 3], 5),
                alert(t + 7, gb, &[t + 6], 8),
            ],
            ([Some(1), Some(4), Some(7)], 3, 0, Some(1.0)),
        );
    }

    #[test]
    fn median_of_detect_delays() {
        for (xs, want) in [
            (vec![], None),
            (vec![3.0], Some(3.0)),
            (vec![9.0, 1.0, 2.0], Some(2.0)),
            (vec![4.0, 1.0, 2.0, 3.0], Some(2.5)),
        ] {
            assert_eq!(median(&xs), want, "{xs:?}");
        }
    }
}
