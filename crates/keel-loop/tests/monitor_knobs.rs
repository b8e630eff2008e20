//! The monitor's documented false-alarm knobs, each shown to change what alerts: `min_samples`,
//! segment scaling (Bonferroni), `min_change`, and the cooldown (with a second alert after it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_core::StoredEvent;
use keel_drift::DetectorSpec;
use keel_loop::watch::{AlertDraft, Monitor, MonitorConfig, MonitorRule};
use serde_json::json;

/// One interaction per second; `failed` makes it an upstream error.
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

/// Only `upstream_error_rate`, watched by ADWIN at δ = 0.002; the rest from `tweak`.
fn config(tweak: impl FnOnce(&mut MonitorConfig)) -> MonitorConfig {
    let mut c = MonitorConfig {
        rules: vec![MonitorRule {
            metric: "upstream_error_rate".into(),
            detector: "adwin:delta=0.002".into(),
            min_change: None,
            min_relative_change: None,
        }],
        min_samples: 1,
        cooldown_ms: 0,
        scale_by_segments: false,
        ..MonitorConfig::default()
    };
    tweak(&mut c);
    c
}

/// A failure pattern that switches every `period` interactions between 5 % and 60 %.
fn switching(i: i64, period: i64) -> bool {
    if (i / period) % 2 == 0 {
        i % 20 == 0
    } else {
        i % 5 < 3
    }
}

/// Runs `n` interactions of one locale through a monitor with `cfg`; returns its alerts.
fn run(cfg: MonitorConfig, n: i64, failed: impl Fn(i64) -> bool) -> Vec<AlertDraft> {
    let mut m = Monitor::new(cfg).unwrap();
    (1..=n)
        .flat_map(|s| m.process(&interaction(s, "en", failed(s))).unwrap())
        .collect()
}

#[test]
fn min_samples_holds_back_early_alerts() {
    let pattern = |s| switching(s, 200);
    let eager = run(config(|_| {}), 1200, pattern);
    assert!(
        eager.first().is_some_and(|a| a.samples < 300),
        "without a minimum the first switch alerts: {:?}",
        eager.iter().map(|a| a.samples).collect::<Vec<_>>()
    );
    let patient = run(config(|c| c.min_samples = 500), 1200, pattern);
    assert!(!patient.is_empty(), "a later switch still alerts");
    assert!(
        patient.iter().all(|a| a.samples >= 500),
        "{:?}",
        patient.iter().map(|a| a.samples).collect::<Vec<_>>()
    );
}

#[test]
fn min_change_ignores_small_changes() {
    // 5 % → 60 %: detected whatever the threshold; only its size decides.
    let pattern = |s| switching(s, 400);
    for (min_change, alerts) in [(None, true), (Some(0.2), true), (Some(0.9), false)] {
        let got = run(config(|c| c.rules[0].min_change = min_change), 800, pattern);
        assert_eq!(
            !got.is_empty(),
            alerts,
            "min_change {min_change:?}: {got:?}"
        );
        for a in &got {
            let d = (a.after.unwrap() - a.before.unwrap()).abs();
            assert!(min_change.is_none_or(|m| d >= m), "{a:?}");
        }
    }
}

#[test]
fn the_cooldown_holds_a_second_alert_until_it_passes() {
    let pattern = |s| switching(s, 200);
    let all = run(config(|_| {}), 2000, pattern);
    let cooled = run(config(|c| c.cooldown_ms = 300_000), 2000, pattern);
    assert!(
        all.len() >= 4,
        "every switch alerts without a cooldown: {}",
        all.len()
    );
    assert!(
        cooled.len() >= 2,
        "a second alert after the cooldown: {cooled:?}"
    );
    assert!(
        cooled.len() < all.len(),
        "{} vs {}",
        cooled.len(),
        all.len()
    );
    for pair in cooled.windows(2) {
        assert!(
            pair[1].at_ms - pair[0].at_ms >= 300_000,
            "alerts at {} and {} ms",
            pair[0].at_ms,
            pair[1].at_ms
        );
    }
}

#[test]
fn detector_sensitivity_is_scaled_by_active_segments() {
    // Four locales interleaved: the stream of the fourth is created when four segments are
    // active, so its ADWIN runs at δ / 4 with scaling and at δ without.
    let locales = ["en", "ja", "fr", "de"];
    for (scale, delta) in [(true, 0.002 / 4.0), (false, 0.002)] {
        let mut m = Monitor::new(config(|c| c.scale_by_segments = scale)).unwrap();
        let mut alerts = Vec::new();
        let mut seq = 0;
        for i in 0..1600 {
            for locale in locales {
                seq += 1;
                let failed = locale == "de" && switching(i, 400);
                alerts.extend(m.process(&interaction(seq, locale, failed)).unwrap());
            }
        }
        let want = DetectorSpec::parse(&format!("adwin:delta={delta}"))
            .unwrap()
            .to_string();
        let de: Vec<_> = alerts.iter().filter(|a| a.segment.locale == "de").collect();
        assert!(!de.is_empty(), "scale {scale}: no alert for de");
        assert!(
            de.iter().all(|a| a.detector == want),
            "scale {scale}: want {want}, got {:?}",
            de.iter().map(|a| &a.detector).collect::<Vec<_>>()
        );
    }
}
