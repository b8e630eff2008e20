//! What the README promises about CLI output, checked word for word where it names things.

use crate::support::*;

#[test]
fn policy_test_names_each_failing_case() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/policies/failing-tests"
    );
    let o = keel_bin().args(["policy", "test", dir]).output().unwrap();
    assert!(!o.status.success(), "failing cases give a non-zero exit");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    let fails: Vec<&str> = out.lines().filter(|l| l.contains("FAIL ")).collect();
    // Each failing case by name and line of policy.yaml; the passing case is not listed.
    assert_eq!(fails.len(), 2, "{out}");
    for (line, name) in [
        (19, "wrongly expects hello to be blocked"),
        (22, "wrongly expects the phrase to pass"),
    ] {
        assert!(
            fails
                .iter()
                .any(|l| l.contains(&format!("policy.yaml:{line} {name}:"))),
            "{name} (line {line}) not named:\n{out}"
        );
    }
    assert!(!out.contains("the phrase is blocked"), "{out}");
    assert!(out.contains("1 passed, 2 failed"), "{out}");
    assert!(err.contains("2 policy test cases failed"), "{err}");
}
