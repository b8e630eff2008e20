//! The rollout state machine, split and guards at their boundary.

use keel_core::StoredEvent;
use serde_json::json;

use super::*;

#[test]
fn the_split_is_sticky_and_near_the_percentage() {
    let keys: Vec<String> = (0..20_000).map(|i| format!("conv-{i}")).collect();
    let n = keys.iter().filter(|k| in_canary("ro_1", k, 10.0)).count();
    assert!((1_700..=2_300).contains(&n), "{n}");
    // Sticky: the arm is the bucket of (rollout, key) against the threshold, nothing else.
    assert!(keys
        .iter()
        .all(|k| in_canary("ro_1", k, 10.0) == (bucket("ro_1", k) < 1_000)));
    // Another rollout splits the same keys independently (about 10 % of its 10 %).
    let both = keys
        .iter()
        .filter(|k| in_canary("ro_1", k, 10.0) && in_canary("ro_2", k, 10.0))
        .count();
    assert!((100..=300).contains(&both), "{both}");
    // Raising the percentage keeps everyone who was in the canary in it.
    assert!(keys
        .iter()
        .filter(|k| in_canary("ro_1", k, 10.0))
        .all(|k| in_canary("ro_1", k, 50.0)));
    assert!(keys.iter().all(|k| in_canary("ro_1", k, 100.0)));
    assert!(!keys.iter().any(|k| in_canary("ro_1", k, 0.0)));
    // Pinned values: the hash must never change (stored interactions name their arm).
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
    assert!(s.covers("acme", Some("ja_JP")));
    assert!(s.covers("acme", Some("JA")));
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

/// Analysis every 100 ms, steps end after 10 s at the latest.
fn plans() -> RolloutsConfig {
    RolloutsConfig {
        analysis_interval_ms: 100,
        max_duration_ms: 10_000,
        ..RolloutsConfig::default()
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
    let steps = bad.decide(&cfg(), &plans(), 1_000);
    assert_eq!(steps.len(), 1);
    assert!(!steps[0].promote, "{:?}", steps[0].evaluation);
    assert!(steps[0].evaluation.reason.contains("wrong_answer_rate"));
    assert!(
        bad.decide(&cfg(), &plans(), 1_000).is_empty(),
        "decided once"
    );
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
    let steps = clean.decide(&cfg(), &plans(), 1_000);
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
    let steps = t.decide(&cfg(), &plans(), 1_000);
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
    assert!(t2.decide(&quiet, &plans(), 1_000).is_empty());
}

#[test]
fn waits_for_the_minimum_duration_then_concludes_at_an_analysis() {
    let c = started(50.0);
    let mut t = tracker_with(&c);
    for i in 0..2_000 {
        t.observe(
            &interaction(10 + i, if i % 2 == 0 { CANARY } else { BASELINE }, "allow"),
            None,
        );
    }
    let slow = UpdateConfig {
        min_samples_per_arm: 10,
        min_duration_ms: 10_000,
        ..UpdateConfig::default()
    };
    assert!(t.decide(&slow, &plans(), 1_000).is_empty());
    let steps = t.decide(&slow, &plans(), 20_000);
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].to_percent, 100.0, "50 % → the next step, 100 %");
}

/// One synthetic step: interactions and wrong answers per arm within the step, the canary's
/// share, how long the step has run and whether an analysis is due.
struct Case {
    name: &'static str,
    canary: (u64, u64),
    baseline: (u64, u64),
    percent: f64,
    step_elapsed_ms: i64,
    analysis_due: bool,
}

/// The verdict and where a concluded step goes, under the plan 5 → 25 → 100, 100 interactions
/// per arm, steps of at most one hour.
fn check(c: &Case, expected: (&str, Option<f64>)) {
    let arm = |(n, wrong): (u64, u64)| ArmStats {
        interactions: n,
        wrong_answers: wrong,
        ..ArmStats::default()
    };
    let cfg = UpdateConfig::default();
    let plan = RolloutsConfig {
        min_samples: Some(100),
        ..RolloutsConfig::default()
    }
    .plan_for(None, &cfg);
    let step = StepProgress {
        canary: c.canary.0,
        baseline: c.baseline.0,
        step_elapsed_ms: c.step_elapsed_ms,
        total_elapsed_ms: c.step_elapsed_ms,
        analysis_due: c.analysis_due,
    };
    let e = evaluate(
        &arm(c.canary),
        &arm(c.baseline),
        &cfg,
        &plan,
        &step,
        c.percent,
    );
    assert_eq!(
        (e.verdict.as_str(), e.next_percent),
        expected,
        "{}: {}",
        c.name,
        e.reason
    );
}

#[test]
fn analysis_steps_promote_and_roll_back_on_synthetic_data() {
    const HOUR: i64 = 3_600_000;
    let cases = [
        (
            Case {
                name: "sample target reached at 5 %: on to 25 %",
                canary: (120, 2),
                baseline: (2_000, 40),
                percent: 5.0,
                step_elapsed_ms: HOUR / 6,
                analysis_due: true,
            },
            ("advance", Some(25.0)),
        ),
        (
            Case {
                name: "sample target reached at 25 %: promoted",
                canary: (150, 3),
                baseline: (450, 9),
                percent: 25.0,
                step_elapsed_ms: HOUR / 6,
                analysis_due: true,
            },
            ("promote", Some(100.0)),
        ),
        (
            Case {
                name: "a started share between steps moves to the next one",
                canary: (150, 3),
                baseline: (600, 12),
                percent: 20.0,
                step_elapsed_ms: HOUR / 6,
                analysis_due: true,
            },
            ("advance", Some(25.0)),
        ),
        (
            Case {
                name: "short of the target and of the duration: wait",
                canary: (30, 0),
                baseline: (120, 2),
                percent: 25.0,
                step_elapsed_ms: HOUR / 2,
                analysis_due: true,
            },
            ("wait", None),
        ),
        (
            Case {
                name: "short of the target at the maximum duration, no harm: promoted",
                canary: (30, 0),
                baseline: (120, 2),
                percent: 25.0,
                step_elapsed_ms: HOUR,
                analysis_due: true,
            },
            ("promote", Some(100.0)),
        ),
        (
            Case {
                name: "between analyses nothing concludes",
                canary: (500, 5),
                baseline: (500, 5),
                percent: 25.0,
                step_elapsed_ms: 2 * HOUR,
                analysis_due: false,
            },
            ("wait", None),
        ),
        (
            Case {
                name: "a guard significantly worse rolls back, analysis or not",
                canary: (200, 60),
                baseline: (800, 16),
                percent: 25.0,
                step_elapsed_ms: HOUR / 60,
                analysis_due: false,
            },
            ("rollback", None),
        ),
        (
            Case {
                name: "harm shown below the rollback sample floor blocks promotion",
                canary: (29, 25),
                baseline: (2_000, 20),
                percent: 5.0,
                step_elapsed_ms: HOUR,
                analysis_due: true,
            },
            ("wait", None),
        ),
    ];
    for (case, expected) in &cases {
        check(case, *expected);
    }
}

#[test]
fn a_canary_walks_its_steps_and_a_tenant_override_applies() {
    let rollout_event = |seq: i64, at: i64, r: &Rollout| StoredEvent {
        seq,
        kind: ROLLOUT_CHANGED.into(),
        actor: "system".into(),
        tenant: "*".into(),
        at_ms: at,
        payload: json!(r),
    };
    let cfg = UpdateConfig {
        min_samples_per_arm: 50,
        ..UpdateConfig::default()
    };
    let plans = RolloutsConfig {
        analysis_interval_ms: 100,
        max_duration_ms: 1_000_000,
        ..RolloutsConfig::default()
    };
    let c = started(5.0);
    let mut t = tracker_with(&c);
    let feed = |t: &mut Tracker, from: i64, n: i64| {
        for i in 0..n {
            let arm = if i % 4 == 0 { CANARY } else { BASELINE };
            t.observe(&interaction(from + i, arm, "allow"), None);
        }
    };
    feed(&mut t, 10, 400);
    let steps = t.decide(&cfg, &plans, 1_000);
    assert_eq!(steps.len(), 1);
    assert!(steps[0].promote);
    assert_eq!(steps[0].to_percent, 25.0);
    assert!(t.decide(&cfg, &plans, 1_100).is_empty(), "decided once");
    // The step's event arrives: the next step counts its own samples.
    let ev = advance(&c, 25.0, "step", "system", 1_000, None).unwrap();
    let stepped = Rollout::from_payload(&ev[0].payload).unwrap();
    t.observe(&rollout_event(500, 1_000, &stepped), None);
    assert_eq!(t.rollouts["ro_1"].step_base, (100, 300));
    assert!(
        t.decide(&cfg, &plans, 1_200).is_empty(),
        "no new samples yet"
    );
    feed(&mut t, 600, 200);
    let steps = t.decide(&cfg, &plans, 1_300);
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].to_percent, 100.0);
    // A tenant's own steps and sample target.
    let mut per_tenant = plans.clone();
    per_tenant.tenants.insert(
        "acme".into(),
        PlanOverride {
            steps: Some(vec![50.0, 100.0]),
            min_samples: Some(7),
            ..PlanOverride::default()
        },
    );
    let p = per_tenant.plan_for(Some("acme"), &cfg);
    assert_eq!((p.next_percent(5.0), p.min_samples), (50.0, 7));
    let g = per_tenant.plan_for(Some("other"), &cfg);
    assert_eq!((g.next_percent(5.0), g.min_samples), (25.0, 50));
    assert!(advance(&stepped, 20.0, "down", "a", 1, None).is_err());
    assert!(RolloutsConfig {
        steps: vec![25.0, 5.0, 100.0],
        ..RolloutsConfig::default()
    }
    .validate()
    .is_err());
    assert!(RolloutsConfig {
        steps: vec![5.0, 50.0],
        ..RolloutsConfig::default()
    }
    .validate()
    .is_err());
    assert!(RolloutsConfig::default().validate().is_ok());
}
