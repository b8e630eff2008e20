//! The default pack compiles, passes its inline tests and behaves as documented.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_policy::{run_tests, Policy};

#[test]
fn default_pack_inline_tests_pass() {
    let p = Policy::default_pack().unwrap_or_else(|e| panic!("{e}"));
    let report = run_tests(&p);
    assert!(report.ok(), "{report}");
    assert!(report.cases.len() >= 30);
}

#[test]
fn default_pack_in_repo_matches_embedded() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/default");
    let from_dir = Policy::load_dir(dir).unwrap();
    let embedded = Policy::default_pack().unwrap();
    assert_eq!(
        from_dir.version(),
        embedded.version(),
        "default_pack_files() misses a file"
    );
}

#[test]
fn default_pack_has_no_warnings() {
    let p = Policy::default_pack().unwrap();
    let w: Vec<String> = p.warnings().iter().map(|w| w.to_string()).collect();
    assert!(w.is_empty(), "{w:#?}");
}
