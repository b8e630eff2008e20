//! Databases written by an earlier release still open, verify and read: a committed fixture
//! (`tests/data/fixtures/v0_1`, written by release 0.1 through its HTTP API: keys, a published and
//! activated policy, a fact, three interactions (one escalated), a thumbs-down, a review claim
//! and label, a signed checkpoint) opened by this build through the CLI.

use std::path::{Path, PathBuf};

use crate::support::keel_bin;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fixtures/v0_1");

/// Copies the fixture into a temp dir (opening may migrate it) and writes a config for it.
fn fixture_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for f in ["keel.db", "ledger-signing.key"] {
        std::fs::copy(Path::new(FIXTURE).join(f), dir.path().join(f)).unwrap();
    }
    let cfg = dir.path().join("keel.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{d}\"\n[storage]\nurl = \"sqlite://{d}/keel.db\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    (dir, cfg)
}

/// Runs `keel ARGS --config CFG` and returns stdout then stderr; fails the test on a non-zero exit.
fn keel(cfg: &Path, args: &[&str]) -> String {
    let out = keel_bin()
        .args(args)
        .arg("--config")
        .arg(cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keel {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `(args, text the output must contain)`, each run against a fresh copy of the fixture.
fn check(args: &[&str], expected: &str) {
    let (_dir, cfg) = fixture_copy();
    let out = keel(&cfg, args);
    assert!(
        out.contains(expected),
        "keel {args:?}: `{expected}` not in:\n{out}"
    );
}

#[test]
fn a_release_0_1_database_verifies_clean() {
    check(&["audit", "verify"], "verified 14 events, 14 leaves");
    check(&["audit", "verify"], "OK");
}

#[test]
fn a_release_0_1_database_reads_its_projections() {
    check(
        &["review", "list", "--status", "done"],
        "rv_escalation_ix_00001kdvdncxr6rzm6wy1meyqe",
    );
    check(&["review", "list", "--status", "open"], "user_report");
    check(
        &[
            "review",
            "show",
            "rv_escalation_ix_00001kdvdncxr6rzm6wy1meyqe",
        ],
        "\"verdict\": \"wrong_answer\"",
    );
    check(
        &[
            "review",
            "show",
            "rv_escalation_ix_00001kdvdncxr6rzm6wy1meyqe",
        ],
        "\"deciding_rule\": \"refund-human\"",
    );
    check(
        &["facts", "list", "--at", "2026-01-01"],
        "jp.consumption_tax",
    );
    check(&["keys", "list"], "rita");
    check(&["policy", "list"], "acme");
}
