//! ADWIN and Page-Hinkley reproduce River 0.26.1's detection indices (golden file from bench/make_golden.py).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{bernoulli_step, detections, gauss_step};
use keel_drift::DetectorSpec;
use serde_json::Value;

const GOLDEN: &str = include_str!("data/river_golden.json");

fn stream(s: &Value) -> Vec<f64> {
    let u = |k: &str| s[k].as_u64().unwrap();
    let f = |k: &str| s[k].as_f64().unwrap();
    let (seed, n, change) = (u("seed"), u("n") as usize, u("change") as usize);
    match s["kind"].as_str().unwrap() {
        "bernoulli" => bernoulli_step(seed, n, change, f("p0"), f("p1")),
        "gauss" => gauss_step(seed, n, change, f("shift")),
        other => panic!("unknown stream kind {other}"),
    }
}

#[test]
fn adwin_and_page_hinkley_match_river_0_26_1_golden_indices() {
    let golden: Value = serde_json::from_str(GOLDEN).unwrap();
    assert_eq!(golden["river_version"], "0.26.1");
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut checked = 0;
    for case in cases {
        let xs = stream(&case["stream"]);
        let spec = case["spec"].as_str().unwrap();
        let expected: Vec<usize> = case["river_detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let mut d = DetectorSpec::parse(spec).unwrap().build().unwrap();
        let got = detections(&mut d, &xs);
        assert_eq!(
            got, expected,
            "{spec} on {}: detections differ from River's",
            case["stream"]["name"]
        );
        checked += 1;
    }
    assert_eq!(checked, cases.len());
}
