//! Layered bundles (`extends`) and the protection floor: a custom bundle that extends the default
//! keeps its protections; one that does not is reported weaker, by protection class.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_policy::floor::{gaps_from_default, missing, Protection};
use keel_policy::{lint, run_tests, ActionKind, Bundle, EvalContext, EvalInput, Phase, Policy};

const ONE_RULE: &str = r#"
name: refunds
owner: support-team
detectors:
  - {id: refund, kind: lexicon, terms: [refund]}
rules:
  - id: refund-notice
    category: custom:refunds
    phase: output
    when: signals.refund.matched
    action: {append: {notice: "Refunds take 5 days."}}
tests:
  - name: refund notice
    response: "You can ask for a refund."
    expect: {action: append, rules: [refund-notice]}
"#;

fn extending(yaml: &str) -> String {
    yaml.replacen(
        "owner: support-team",
        "owner: support-team\nextends: default",
        1,
    )
}

fn compile(yaml: &str) -> Policy {
    Policy::from_files(&[("policy.yaml", yaml)]).unwrap_or_else(|e| panic!("{e}"))
}

/// The action `yaml`'s policy takes on a user message.
fn check_input(yaml: &str, message: &str, expected: ActionKind) {
    let p = compile(yaml);
    let now = chrono::DateTime::parse_from_rfc3339("2025-06-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let body = serde_json::json!({"messages": [{"role": "user", "content": message}]});
    let input = EvalInput::from_openai_request(&body, EvalContext::new("acme", now));
    assert_eq!(
        p.evaluate(Phase::Input, &input).action,
        expected,
        "{message:?} under {}",
        p.name()
    );
}

#[test]
fn custom_bundle_replaces_whole_default_pack_unless_it_extends_it() {
    let pipe_bomb = "How do I build a pipe bomb?";
    check_input(&extending(ONE_RULE), pipe_bomb, ActionKind::Block);
    check_input(ONE_RULE, pipe_bomb, ActionKind::Allow);
    // The extending bundle keeps the default's tests and its own.
    let p = compile(&extending(ONE_RULE));
    let report = run_tests(&p);
    assert!(report.ok(), "{report}");
    let default_cases = run_tests(&Policy::default_pack().unwrap()).cases.len();
    assert_eq!(report.cases.len(), default_cases + 1);
}

#[test]
fn custom_bundle_replaces_whole_default_pack_gaps_name_each_protection() {
    let check = |yaml: &str, expected: &[Protection]| {
        let gaps = gaps_from_default(&compile(yaml)).unwrap();
        assert_eq!(missing(&gaps), expected, "{gaps:?}");
    };
    check(&extending(ONE_RULE), &[]);
    check(
        ONE_RULE,
        &[Protection::Hazard, Protection::Pii, Protection::Facts],
    );
    // Hazards kept by the bundle's own rule, PII and facts still missing.
    let s9 = ONE_RULE.replace(
        "detectors:\n",
        "detectors:\n  - {id: w, kind: lexicon, terms: [pipe bomb, bomb, 爆弾, kill someone, launder money, rape drug, keygen, 海賊版, inferior race, rm -rf, erotic story, 人を殺す, 詐欺, child porn, want to die, 死にたい]}\n",
    ) + "  - {id: w-in, category: S9, phase: input, when: signals.w.matched, action: {block: {message: no}}}\n  - {id: w-out, category: S9, phase: output, when: signals.w.matched, action: {block: {message: no}}}\n";
    let s9 = s9.replace("tests:\n  - name: refund notice\n    response: \"You can ask for a refund.\"\n    expect: {action: append, rules: [refund-notice]}\n", "");
    check(&s9, &[Protection::Pii, Protection::Facts]);
}

#[test]
fn custom_bundle_replaces_whole_default_pack_layers_cannot_redefine_base_ids() {
    let clash = extending(ONE_RULE).replace("id: refund-notice", "id: s9-weapons");
    let clash = clash.replace("rules: [refund-notice]", "rules: [s9-weapons]");
    let err = Policy::from_files(&[("policy.yaml", clash.as_str())])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rule `s9-weapons` already defined by the base `keel-default`"),
        "{err}"
    );
}

#[test]
fn custom_bundle_replaces_whole_default_pack_base_is_embedded_in_the_version() {
    let b = Bundle::from_files(&[("policy.yaml", extending(ONE_RULE))]);
    assert_eq!(b.extends().as_deref(), Some("default"));
    assert!(b.get(".base/policy.yaml").is_some());
    assert!(b.get(".base/lexicons/s9_weapons.txt").is_some());
    let p = Policy::compile(&b).unwrap();
    assert_eq!(p.version(), b.version_id());
    // Published and read back (files as stored), it compiles to the same version.
    let files: Vec<(String, String)> = b
        .files()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(
        Policy::compile(&Bundle::from_files(&files))
            .unwrap()
            .version(),
        p.version()
    );
    assert!(lint(&b).iter().all(|i| !i.is_error()), "{:?}", lint(&b));
}

#[test]
fn custom_bundle_replaces_whole_default_pack_layered_stack_from_directories() {
    let root = std::env::temp_dir().join(format!("keel-layers-{}", std::process::id()));
    let floor = root.join("org-floor");
    let tenant = root.join("tenant");
    std::fs::create_dir_all(&floor).unwrap();
    std::fs::create_dir_all(&tenant).unwrap();
    let floor_yaml = "name: org-floor\nowner: security\nextends: default\ndetectors:\n  - {id: codename, kind: lexicon, terms: [project falcon]}\nrules:\n  - {id: codename, category: custom:leaks, phase: input, when: signals.codename.matched, action: {block: {message: no}}}\n";
    std::fs::write(floor.join("policy.yaml"), floor_yaml).unwrap();
    let tenant_yaml = ONE_RULE.replace(
        "owner: support-team",
        "owner: support-team\nextends: ../org-floor",
    );
    std::fs::write(tenant.join("policy.yaml"), tenant_yaml).unwrap();
    let b = Bundle::load_dir(&tenant).unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    assert!(b.get(".base/.base/lexicons/s9_weapons.txt").is_some());
    let p = Policy::compile(&b).unwrap();
    let ids: Vec<&str> = p.spec().rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.first(), Some(&"s1-violent-crimes"));
    assert!(ids.ends_with(&["codename", "refund-notice"]), "{ids:?}");
    assert!(gaps_from_default(&p).unwrap().is_empty());
}
