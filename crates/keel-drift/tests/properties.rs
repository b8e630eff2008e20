//! Property tests: no alarm on constant streams, bounded state, serde round trips resume identically.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Lcg;
use keel_drift::{AnyDetector, Detector, DetectorSpec};
use proptest::prelude::*;

const SPECS: [&str; 8] = [
    "adwin",
    "adwin:clock=1,delta=0.1",
    "page-hinkley",
    "cusum",
    "cusum-bernoulli",
    "kswin",
    "kswin:window_size=20,stat_size=5",
    "categorical:categories=3,reference=100,window=50",
];

/// Map a stream value into the detector's domain (the Bernoulli CUSUM takes [0, 1]).
fn fit(spec: &str, x: f64) -> f64 {
    if spec.starts_with("cusum-bernoulli") {
        x.min(1.0)
    } else {
        x
    }
}

fn build(spec: &str) -> AnyDetector {
    DetectorSpec::parse(spec).unwrap().build().unwrap()
}

/// A value valid for every detector in SPECS: a category index 0, 1 or 2 (noisy enough to drift now and then).
fn stream(seed: u64, n: usize) -> Vec<f64> {
    let mut g = Lcg(seed);
    (0..n)
        .map(|i| {
            let u = g.next_f64();
            let p = if (i / 700) % 2 == 0 { 0.1 } else { 0.6 };
            if u < p {
                1.0
            } else if u > 0.97 {
                2.0
            } else {
                0.0
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn constant_streams_never_alarm(c in -1e6f64..1e6, n in 1usize..4000) {
        // Every numeric detector in every case (a drawn index once never reached KSWIN).
        for spec in ["adwin", "adwin:clock=1,delta=0.1", "page-hinkley", "cusum", "kswin"] {
            let mut d = build(spec);
            for _ in 0..n {
                prop_assert!(!d.update(c).unwrap(), "{} alarmed on constant {}", spec, c);
            }
        }
    }

    #[test]
    fn constant_category_streams_never_alarm(c in 0u8..3, n in 1usize..4000) {
        for spec in ["cusum-bernoulli", "categorical:categories=3,reference=100,window=50"] {
            let x = if spec.starts_with("cusum") { f64::from(c.min(1)) } else { f64::from(c) };
            let mut d = build(spec);
            for _ in 0..n {
                prop_assert!(!d.update(x).unwrap(), "{} alarmed on constant {}", spec, x);
            }
        }
    }

    #[test]
    fn serde_round_trip_resumes_identically(seed in any::<u64>(), split in 0usize..3000) {
        let xs = stream(seed, 3000);
        for spec in SPECS {
            let mut a = build(spec);
            for &x in &xs[..split] {
                a.update(fit(spec, x)).unwrap();
            }
            let json = a.to_json().unwrap();
            let mut b = AnyDetector::from_json(&json).unwrap();
            prop_assert_eq!(&a, &b);
            for &x in &xs[split..] {
                let x = fit(spec, x);
                prop_assert_eq!(a.update(x).unwrap(), b.update(x).unwrap(), "{}", spec);
            }
            prop_assert_eq!(&a, &b);
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn state_stays_bounded(seed in any::<u64>()) {
        let xs = stream(seed, 30_000);
        for spec in SPECS {
            let mut d = build(spec);
            let initial = d.to_json().unwrap().len();
            let mut largest = initial;
            for (i, &x) in xs.iter().enumerate() {
                d.update(fit(spec, x)).unwrap();
                if i % 3000 == 2999 {
                    largest = largest.max(d.to_json().unwrap().len());
                }
            }
            // Fixed-size state: only digits of counters and floats change. ADWIN's
            // histogram is preallocated for 2^32·max_buckets values.
            prop_assert!(largest <= initial * 3 + 2000, "{}: {} -> {}", spec, initial, largest);
            if let AnyDetector::Adwin(a) = &d {
                prop_assert!(a.rows() <= 1 + (a.width().max(1.0)).log2().ceil() as usize);
            }
        }
    }
}
