//! Detector behaviour on known streams: constant, step change, NaN/∞, tiny windows, specs, replay.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{bernoulli_step, detections, gauss_step, Lcg};
use keel_drift::{
    chi_square_homogeneity, js_divergence, ks_two_sample_pvalue, psi, replay, AnyDetector,
    Detector, DetectorSpec, DriftError, Format,
};

const ALL_DEFAULTS: [&str; 6] = [
    "adwin",
    "page-hinkley",
    "cusum",
    "cusum-bernoulli",
    "kswin",
    "categorical",
];

fn build(spec: &str) -> AnyDetector {
    DetectorSpec::parse(spec)
        .unwrap_or_else(|e| panic!("{spec}: {e}"))
        .build()
        .unwrap()
}

/// `check(spec, stream, expectation)`: the first detection index is in `expected` (or none).
fn check(spec: &str, xs: &[f64], expected: Option<std::ops::Range<usize>>) {
    let mut d = build(spec);
    let got = detections(&mut d, xs);
    match expected {
        None => assert!(got.is_empty(), "{spec}: unexpected detections {got:?}"),
        Some(r) => {
            let first = *got
                .first()
                .unwrap_or_else(|| panic!("{spec}: no detection"));
            assert!(
                r.contains(&first),
                "{spec}: first detection {first} not in {r:?}"
            );
        }
    }
}

fn step(n: usize, change: usize, a: f64, b: f64) -> Vec<f64> {
    (0..n).map(|i| if i < change { a } else { b }).collect()
}

#[test]
fn constant_streams_never_alarm() {
    for spec in ALL_DEFAULTS {
        for c in [0.0, 1.0] {
            check(spec, &vec![c; 20_000], None);
        }
    }
    for spec in ["adwin", "page-hinkley", "cusum", "kswin"] {
        for c in [-3.5, 0.1, 1e6] {
            check(spec, &vec![c; 20_000], None);
        }
    }
    check("cusum-bernoulli", &vec![0.3; 20_000], None);
}

#[test]
fn step_changes_alarm_soon_after_the_change() {
    check("adwin", &step(4000, 2000, 0.0, 1.0), Some(2000..2100));
    check(
        "page-hinkley",
        &step(4000, 2000, 0.0, 1.0),
        Some(2000..2100),
    );
    // k = 0.5, h = 5 has an in-control run length of a few hundred values per side:
    // a wider h and a longer warm-up keep 2000 in-control values quiet.
    check(
        "cusum:h=10,warmup=200",
        &gauss_step(7, 4000, 2000, 2.0),
        Some(2000..2050),
    );
    check(
        "cusum:h=10,warmup=200,mode=down",
        &gauss_step(7, 4000, 2000, -2.0),
        Some(2000..2050),
    );
    check(
        "cusum:h=10,warmup=200,mode=up",
        &gauss_step(7, 4000, 2000, -2.0),
        None,
    );
    check(
        "cusum:mean=0,sigma=1,h=10",
        &gauss_step(7, 4000, 2000, 1.0),
        Some(2000..2100),
    );
    check(
        "cusum-bernoulli",
        &bernoulli_step(8, 6000, 3000, 0.1, 0.4),
        Some(3000..3200),
    );
    check(
        "cusum-bernoulli:p0=0.3,mode=down",
        &bernoulli_step(9, 6000, 3000, 0.3, 0.05),
        Some(3000..3200),
    );
    // KSWIN tests on every update, so at alpha = 0.005 it false-alarms every few hundred values (as River's does).
    check(
        "kswin:alpha=0.0001,seed=3",
        &gauss_step(10, 1000, 500, 3.0),
        Some(500..560),
    );
    let cats: Vec<f64> = {
        let mut g = Lcg(11);
        (0..6000)
            .map(|i| {
                let p = if i < 3000 { 0.1 } else { 0.5 };
                if g.next_f64() < p {
                    1.0
                } else {
                    0.0
                }
            })
            .collect()
    };
    check(
        "categorical:reference=1000,window=500",
        &cats,
        Some(3000..3500),
    );
}

#[test]
fn a_large_step_is_caught_by_every_detector() {
    for spec in ALL_DEFAULTS {
        let xs = step(6000, 3000, 0.0, 1.0);
        check(spec, &xs, Some(3000..3200));
    }
}

#[test]
fn non_finite_input_is_rejected_and_changes_nothing() {
    for spec in ALL_DEFAULTS {
        let mut d = build(spec);
        for i in 0..500 {
            d.update(f64::from(i % 2)).unwrap();
        }
        let before = d.clone();
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = d.update(bad).unwrap_err();
            assert!(matches!(err, DriftError::NonFinite { .. }), "{spec}: {err}");
            assert_eq!(err.http_status(), 400);
            assert_eq!(d, before, "{spec}: state changed on {bad}");
        }
    }
}

#[test]
fn out_of_domain_input_is_rejected() {
    let mut d = build("cusum-bernoulli");
    assert!(matches!(d.update(1.5), Err(DriftError::OutOfDomain { .. })));
    let mut d = build("categorical:categories=3");
    for bad in [3.0, -1.0, 0.5] {
        let err = d.update(bad).unwrap_err();
        assert_eq!(err.http_status(), 400, "{err}");
    }
    assert!(d.update(2.0).is_ok());
}

#[test]
fn tiny_windows_work() {
    let xs = gauss_step(12, 3000, 1500, 4.0);
    for spec in [
        "adwin:clock=1,min_window_length=1,grace_period=0,max_buckets=1",
        "page-hinkley:min_instances=0",
        "cusum:warmup=2",
        "cusum-bernoulli:warmup=1",
        "kswin:window_size=2,stat_size=1",
        "kswin:window_size=10,stat_size=5",
        "categorical:reference=1,window=1",
    ] {
        let mut d = build(spec);
        for &x in &xs {
            let x = if spec.starts_with("cusum-bernoulli") || spec.starts_with("categorical") {
                f64::from(u8::from(x > 2.0))
            } else {
                x
            };
            d.update(x).unwrap();
        }
    }
    // A one-value stat window can never reject at alpha = 0.005 (p ≥ 1 for n = 1).
    check(
        "kswin:window_size=2,stat_size=1",
        &step(100, 50, 0.0, 9.0),
        None,
    );
}

#[test]
fn detectors_keep_running_after_a_detection() {
    // Two steps: both are found, the second after the detector restarted.
    let mut xs = step(4000, 2000, 0.0, 1.0);
    xs.extend(std::iter::repeat_n(5.0, 2000));
    for spec in ["adwin", "page-hinkley", "cusum"] {
        let mut d = build(spec);
        let got = detections(&mut d, &xs);
        assert!(
            got.iter().any(|&i| (2000..2200).contains(&i)),
            "{spec}: {got:?}"
        );
        assert!(
            got.iter().any(|&i| (4000..4200).contains(&i)),
            "{spec}: {got:?}"
        );
    }
}

#[test]
fn reset_forgets_everything() {
    for spec in ALL_DEFAULTS {
        let fresh = build(spec);
        let mut d = build(spec);
        for i in 0..3000 {
            d.update(f64::from(i % 2)).unwrap();
        }
        d.reset();
        assert_eq!(d, fresh, "{spec}");
        assert_eq!(d.name(), fresh.name());
    }
}

#[test]
fn estimates_follow_the_stream() {
    let mut d = build("adwin");
    assert_eq!(d.estimate(), None);
    for _ in 0..100 {
        d.update(2.0).unwrap();
    }
    assert_eq!(d.estimate(), Some(2.0));
    let mut d = build("cusum-bernoulli");
    for i in 0..100 {
        d.update(f64::from(u8::from(i % 4 == 0))).unwrap();
    }
    assert_eq!(d.estimate(), Some(0.25));
}

#[test]
fn ks_pvalues_match_scipy() {
    // scipy.stats._stats_py._compute_prob_outside_square(30, h)
    for (h, p) in [
        (5, 0.807_963_154_090_164_3),
        (8, 0.239_073_002_480_186_45),
        (10, 0.070_887_987_871_144_39),
        (15, 0.000_899_577_684_017_679_9),
        (30, 1.691_123_389_214_474_2e-17),
    ] {
        let got = ks_two_sample_pvalue(30, h);
        assert!((got - p).abs() <= 1e-12 * p, "h={h}: {got} vs {p}");
    }
    assert_eq!(ks_two_sample_pvalue(30, 0), 1.0);
    assert_eq!(ks_two_sample_pvalue(30, 1), 1.0);
}

#[test]
fn kswin_reports_its_latest_test() {
    let mut d = keel_drift::Kswin::new(keel_drift::KswinConfig::default()).unwrap();
    assert_eq!(d.p_value(), None);
    for x in gauss_step(13, 150, 200, 0.0) {
        d.update(x).unwrap();
    }
    let (s, p) = (d.statistic().unwrap(), d.p_value().unwrap());
    assert!((0.0..=1.0).contains(&s) && (0.0..=1.0).contains(&p));
}

#[test]
fn categorical_measures() {
    let same = [100, 200, 700];
    assert_eq!(js_divergence(&same, &same), 0.0);
    assert!(psi(&same, &same).abs() < 1e-12);
    let t = chi_square_homogeneity(&same, &same);
    assert_eq!((t.statistic, t.dof), (0.0, 2));
    assert!((t.p_value - 1.0).abs() < 1e-12);
    // Disjoint supports: JS is 1 bit.
    assert!((js_divergence(&[10, 0], &[0, 10]) - 1.0).abs() < 1e-12);
    // scipy.stats.chi2_contingency([[30, 70], [50, 50]], correction=False)
    let t = chi_square_homogeneity(&[30, 70], &[50, 50]);
    assert!((t.statistic - 8.333_333_333_333_334).abs() < 1e-9, "{t:?}");
    assert!(
        (t.p_value - 0.003_892_417_122_778_637).abs() < 1e-12,
        "{t:?}"
    );
    assert!(psi(&[30, 70], &[50, 50]) > 0.1);
    // Empty vectors and a single active category are harmless.
    assert_eq!(chi_square_homogeneity(&[], &[5]).p_value, 1.0);
    assert_eq!(chi_square_homogeneity(&[5, 0], &[7, 0]).p_value, 1.0);
}

#[test]
fn spec_errors_name_the_culprit() {
    let cases: [(&str, &str); 9] = [
        ("nope", "unknown detector `nope`"),
        ("adwin:delta=abc", "`delta`"),
        (
            "adwin:deltaa=0.1",
            "unknown parameter `deltaa` for detector `adwin`",
        ),
        ("adwin:delta=2", "must be in (0, 1)"),
        ("page-hinkley:mode=sideways", "`mode`"),
        ("kswin:window_size=40,stat_size=30", "`window_size`"),
        ("cusum:k=0.5,k=1", "given twice"),
        ("cusum:h", "not KEY=VALUE"),
        ("", "no detector name"),
    ];
    for (spec, needle) in cases {
        let err = DetectorSpec::parse(spec).unwrap_err();
        assert!(err.to_string().contains(needle), "{spec}: {err}");
        assert_eq!(err.http_status(), 400);
    }
}

#[test]
fn specs_parse_print_and_reparse() {
    for spec in [
        "adwin",
        "adwin:delta=0.002",
        "page-hinkley",
        "ph:threshold=50,alpha=0.9999",
        "cusum:k=0.5,h=5",
        "cusum:mean=1,sigma=2,mode=up",
        "cusum-bernoulli:p0=0.02,odds=3",
        "kswin:alpha=0.005",
        "categorical:categories=4,window=500",
        " adwin : delta = 0.01 , clock = 8 ",
    ] {
        let parsed = DetectorSpec::parse(spec).unwrap();
        let again = DetectorSpec::parse(&parsed.to_string()).unwrap();
        assert_eq!(parsed, again, "{spec} -> {parsed}");
        assert_eq!(parsed.build_boxed().unwrap().name(), parsed.name());
    }
    assert_eq!(
        DetectorSpec::parse("adwin").unwrap().to_string(),
        "adwin:delta=0.002,clock=32,max_buckets=5,min_window_length=5,grace_period=10"
    );
    assert_eq!(
        DetectorSpec::parse("page-hinkley").unwrap().to_string(),
        "page-hinkley:min_instances=30,delta=0.005,threshold=50,alpha=0.9999,mode=both"
    );
}

#[test]
fn replay_prints_detection_indices() {
    let xs = step(4000, 2000, 0.0, 1.0);
    let bin: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
    let csv: String = xs.iter().map(|x| format!("{x}\n")).collect();
    let mut out_bin = Vec::new();
    let s_bin = replay("adwin", Format::F64Le, &bin[..], &mut out_bin).unwrap();
    let mut out_csv = Vec::new();
    let s_csv = replay("adwin", Format::Csv, csv.as_bytes(), &mut out_csv).unwrap();
    assert_eq!(out_bin, out_csv);
    let expected: String = detections(&mut build("adwin"), &xs)
        .iter()
        .map(|i| format!("{i}\n"))
        .collect();
    assert_eq!(String::from_utf8(out_bin).unwrap(), expected);
    assert_eq!(s_bin.updates, 4000);
    assert_eq!(s_bin.detections, s_csv.detections);
    assert!(s_bin.first_detection.is_some());
    assert!(s_bin.updates_per_sec() > 0.0);
}

#[test]
fn replay_reports_bad_input_with_its_location() {
    let err = replay(
        "adwin",
        Format::Csv,
        "1\n\n# note\n2\nx\n".as_bytes(),
        Vec::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("line 5"), "{err}");
    let err = replay("adwin", Format::Csv, "1\nnan\n".as_bytes(), Vec::new()).unwrap_err();
    assert!(err.to_string().contains("value 1"), "{err}");
    assert_eq!(err.http_status(), 400);
    let err = replay("adwin", Format::F64Le, &[0u8; 12][..], Vec::new()).unwrap_err();
    assert!(err.to_string().contains("trailing"), "{err}");
    let err = replay("bogus", Format::Csv, "1\n".as_bytes(), Vec::new()).unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
    assert_eq!("csv".parse::<Format>().unwrap(), Format::Csv);
    assert!("xml".parse::<Format>().is_err());
}

/// A reader that hands out one byte at a time, to exercise values split across reads.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0.is_empty() || buf.is_empty() {
            return Ok(0);
        }
        buf[0] = self.0[0];
        self.0 = &self.0[1..];
        Ok(1)
    }
}

#[test]
fn replay_handles_values_split_across_reads() {
    let xs = gauss_step(5, 3000, 1500, 1.0);
    let bin: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut a = Vec::new();
    let mut b = Vec::new();
    replay("page-hinkley", Format::F64Le, &bin[..], &mut a).unwrap();
    let s = replay("page-hinkley", Format::F64Le, Trickle(&bin), &mut b).unwrap();
    assert_eq!(a, b);
    assert_eq!(s.updates, 3000);
}
