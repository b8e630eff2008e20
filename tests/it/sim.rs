//! The simulator end to end on a tiny scenario: strategies compare as they should, results are
//! identical for a seed, and `keel sim-model` / bad scenarios behave.

use keel_sim::runner::{simulate, Plan, Strategy, Variant};
use keel_sim::Scenario;

/// A small copy of the leveraged-products scenario (one day and a half, about 400 replies).
fn tiny() -> Scenario {
    let text = keel_sim::scenario::BUNDLED
        .iter()
        .find(|(n, _)| *n == "leveraged-products")
        .map(|(_, t)| *t)
        .unwrap()
        .replace("duration = \"6d\"", "duration = \"36h\"")
        .replace("effective = \"2d\"", "effective = \"12h\"")
        .replace("conversations_per_tick = 24", "conversations_per_tick = 18");
    Scenario::parse(&text, "tiny").unwrap()
}

fn plan(dir: &std::path::Path, strategies: Vec<Strategy>, variants: Vec<Variant>) -> Plan {
    Plan {
        scenarios: vec![tiny()],
        variants,
        strategies,
        seed: Some(5),
        out: dir.to_path_buf(),
        sweep: None,
        concurrency: 8,
        parallel: 2,
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strategies_compare_and_results_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        vec![Strategy::Static, Strategy::Monitor, Strategy::Continual],
        vec![Variant::Announced, Variant::Unannounced],
    );
    let (results, _) = simulate(&p, false).await.unwrap();
    keel_sim::report::write(dir.path(), &results, "t").unwrap();
    let get = |v: Variant, s: Strategy| {
        results
            .iter()
            .find(|r| r.row.variant == v && r.row.strategy == s)
            .map(|r| r.row.clone())
            .unwrap()
    };
    let st = get(Variant::Announced, Strategy::Static);
    let mon = get(Variant::Announced, Strategy::Monitor);
    assert!(st.affected > 0, "{st:?}");
    assert!(st.bad_served > 0, "{st:?}");
    assert_eq!(
        st.true_alerts + st.false_alarms,
        0,
        "static runs no monitors"
    );
    assert!(mon.bad_served < st.bad_served, "{mon:?} vs {st:?}");
    // Issues 15/16: per-change detail agrees with the totals; the operator never promotes.
    for r in &results {
        let row = &r.row;
        assert_eq!(row.manual_promotions, 0, "{row:?}");
        assert_eq!(row.per_change.len(), 1, "{row:?}");
        let detected = row
            .per_change
            .iter()
            .filter(|p| p.first_true_alert_ms.is_some())
            .count() as u64;
        assert_eq!(row.changes_detected, detected, "{row:?}");
        let bad: u64 = row.per_change.iter().map(|p| p.bad_served).sum();
        assert_eq!(row.bad_served, bad, "{row:?}");
    }
    for v in [Variant::Announced, Variant::Unannounced] {
        let c = get(v, Strategy::Continual);
        let s = get(v, Strategy::Static);
        assert!(c.bad_served < s.bad_served, "{v:?}: {c:?} vs {s:?}");
    }
    // Same seed, another directory, another concurrency: the same results.json.
    let dir2 = tempfile::tempdir().unwrap();
    let mut p2 = plan(dir2.path(), p.strategies.clone(), p.variants.clone());
    p2.concurrency = 3;
    p2.parallel = 1;
    let (again, _) = simulate(&p2, false).await.unwrap();
    keel_sim::report::write(dir2.path(), &again, "t").unwrap();
    let a = std::fs::read_to_string(dir.path().join("results.json")).unwrap();
    let b = std::fs::read_to_string(dir2.path().join("results.json")).unwrap();
    assert_eq!(a, b);
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("<svg") && !html.contains("<script"));
    // Issue 25, item 12: the headline first, a legend in words, "-" explained, 1280 px.
    let avoided: u64 = [Variant::Announced, Variant::Unannounced]
        .iter()
        .map(|&v| get(v, Strategy::Static).bad_served - get(v, Strategy::Continual).bad_served)
        .sum();
    let headline = html.find("Continual updating avoided").unwrap();
    assert!(headline < html.find("<table").unwrap(), "headline first");
    assert!(
        html.contains(&format!("avoided {avoided} of the ")),
        "{html}"
    );
    assert!(
        html.contains("<dt>detect_delay</dt>") && html.contains("- means no change was detected")
    );
    assert!(html.contains("max-width:1232px"));
}

#[test]
fn simulate_names_a_bad_scenario_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\nstart = \"2026-01-01T00:00:00Z\"\nduration = \"1d\"\ntick = \"1y\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["simulate", bad.to_str().unwrap(), "--out"])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["simulate", "no-such-scenario"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("leveraged-products"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["simulate", "recall", "--strategy", "magic"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown strategy"));
}

/// A scenario with `[judge]`: the runner configures the gateway's judge, the scenario model
/// answers its requests from the truth, verdicts are recorded, and results stay deterministic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scenario_judge_audits_replies_deterministically() {
    let text = format!(
        "{}\n[judge]\naccuracy = 1.0\nsample_rate = 0.2\nknows_after = \"1h\"\n",
        keel_sim::scenario::BUNDLED
            .iter()
            .find(|(n, _)| *n == "leveraged-products")
            .map(|(_, t)| *t)
            .unwrap()
            .replace("duration = \"6d\"", "duration = \"36h\"")
            .replace("effective = \"2d\"", "effective = \"12h\"")
            .replace("conversations_per_tick = 24", "conversations_per_tick = 18")
    );
    let run = |dir: std::path::PathBuf, concurrency: usize| {
        let s = Scenario::parse(&text, "tiny-judge").unwrap();
        async move {
            let p = Plan {
                scenarios: vec![s],
                variants: vec![Variant::Unannounced],
                strategies: vec![Strategy::Monitor],
                seed: Some(5),
                out: dir.clone(),
                sweep: None,
                concurrency,
                parallel: 1,
                progress: false,
            };
            let (results, _) = simulate(&p, false).await.unwrap();
            keel_sim::report::write(&dir, &results, "t").unwrap();
            std::fs::read_to_string(dir.join("results.json")).unwrap()
        }
    };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = run(d1.path().to_path_buf(), 8).await;
    let b = run(d2.path().to_path_buf(), 3).await;
    assert_eq!(a, b);
    // The verdicts are in the run's log: some `ok`, and `outdated` once the change is known.
    let runs = d1.path().join("runs");
    let run_dir = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let db = run_dir.join("keel.db");
    let store = keel_service::open_store(
        &format!("sqlite://{}", db.display()),
        keel_store::Durability::Durable,
    )
    .await
    .unwrap();
    let verdicts = store
        .events_of_kinds_after(&[keel_core::EventKind::JUDGE_VERDICT], 0, 100_000)
        .await
        .unwrap();
    let count = |v: &str| {
        verdicts
            .iter()
            .filter(|e| e.payload["verdict"] == v)
            .count()
    };
    assert!(
        count("ok") > 0 && count("outdated") > 0,
        "ok {} outdated {}",
        count("ok"),
        count("outdated")
    );
    assert_eq!(count("unsure"), 0, "the scenario model always answers");
    store.close().await;
}
