//! The facts checker at its boundary: reading, comparing and correcting stated values.

use super::*;
use std::sync::Arc;

use crate::detect::{FactChecker, FactStatus};
use crate::input::EvalContext;
use crate::{EvalInput, Phase, Policy, StreamGuard};

fn fact(
    key: &str,
    kind: &str,
    value: serde_json::Value,
    from: &str,
    subjects: &[(&str, &[&str])],
) -> Fact {
    Fact {
        key: key.into(),
        kind: kind.into(),
        value,
        currency: None,
        scope: FactScope::default(),
        effective_from: from.into(),
        effective_until: None,
        source: "test".into(),
        owner: "test".into(),
        subjects: subjects
            .iter()
            .map(|(l, t)| (l.to_string(), t.iter().map(|s| s.to_string()).collect()))
            .collect(),
    }
}

fn tax() -> Vec<Fact> {
    vec![
        fact(
            "jp.consumption_tax",
            "percent",
            8.into(),
            "2014-04-01",
            &[("en", &["consumption tax"]), ("ja", &["消費税"])],
        ),
        fact(
            "jp.consumption_tax",
            "percent",
            10.into(),
            "2019-10-01",
            &[("en", &["consumption tax"]), ("ja", &["消費税"])],
        ),
    ]
}

fn ctx(now: &str) -> EvalContext {
    let mut c = EvalContext::new("acme", parse_instant(now).unwrap());
    c.jurisdiction = Some("JP".into());
    c
}

/// (status, stated, replacement) per finding.
fn check(facts: Vec<Fact>, text: &str, c: &EvalContext) -> Vec<(String, String, Option<String>)> {
    let ix = FactIndex::new(facts).unwrap();
    ix.check(text, c)
        .into_iter()
        .map(|f| {
            assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
            (
                f.status.as_str().to_string(),
                text[f.start..f.end].to_string(),
                f.replacement,
            )
        })
        .collect()
}

fn stale(stated: &str, repl: &str) -> (String, String, Option<String>) {
    ("stale".into(), stated.into(), Some(repl.into()))
}

#[test]
fn number_forms_english_and_japanese() {
    let c = ctx("2025-01-01");
    for (text, stated, repl) in [
        ("The consumption tax is 8%.", "8", "10"),
        ("The consumption tax is 8 percent.", "8", "10"),
        ("The consumption tax rate is now 8 per cent", "8", "10"),
        ("消費税は8パーセントです。", "8", "10"),
        ("消費税は８％です。", "８", "１０"),
        ("消費税は８パーセントです", "８", "１０"),
        ("It is 8% consumption tax.", "8", "10"),
    ] {
        assert_eq!(check(tax(), text, &c), vec![stale(stated, repl)], "{text}");
    }
    assert_eq!(
        check(tax(), "The consumption tax is 10%.", &c)[0].0,
        "current"
    );
    assert_eq!(check(tax(), "消費税は１０％です。", &c)[0].0, "current");
}

#[test]
fn value_must_be_in_the_same_sentence_and_of_the_right_kind() {
    let c = ctx("2025-01-01");
    assert!(check(tax(), "The consumption tax applies. Shipping is 8%.", &c).is_empty());
    assert!(check(tax(), "The consumption tax is listed on page 8.", &c).is_empty());
    assert!(check(tax(), "Nothing about taxes at 8%.", &c).is_empty());
}

#[test]
fn effective_dates_switch_by_the_context_clock() {
    assert_eq!(
        check(tax(), "The consumption tax is 10%.", &ctx("2019-09-30"))[0],
        stale("10", "8")
    );
    assert_eq!(
        check(tax(), "The consumption tax is 10%.", &ctx("2019-10-01"))[0].0,
        "current"
    );
    // Before any version: unknown.
    assert_eq!(
        check(tax(), "The consumption tax is 10%.", &ctx("2010-01-01"))[0].0,
        "unknown"
    );
}

#[test]
fn thousands_separators_currency_and_multipliers() {
    let mut f = fact(
        "acme.fee",
        "currency",
        1200.into(),
        "2020-01-01",
        &[("en", &["annual fee"]), ("ja", &["年会費"])],
    );
    f.currency = Some("JPY".into());
    let c = ctx("2025-01-01");
    assert_eq!(
        check(vec![f.clone()], "The annual fee is ¥1,000.", &c),
        vec![stale("1,000", "1,200")]
    );
    assert_eq!(
        check(vec![f.clone()], "The annual fee is 1,200 yen.", &c)[0].0,
        "current"
    );
    assert_eq!(
        check(vec![f.clone()], "年会費は１，０００円です。", &c),
        vec![stale("１，０００", "１，２００")]
    );
    assert!(check(vec![f.clone()], "The annual fee is $1,000.", &c).is_empty());
    let mut big = f;
    big.value = 12000.into();
    assert_eq!(
        check(vec![big], "年会費は1万円です。", &c),
        vec![stale("1万", "1.2")]
    );
}

#[test]
fn dates_in_common_forms() {
    let f = fact(
        "jp.majority.since",
        "date",
        "2022-04-01".into(),
        "2018-06-20",
        &[
            ("en", &["new age of majority"]),
            ("ja", &["成年年齢の引き下げ"]),
        ],
    );
    let c = ctx("2025-01-01");
    assert_eq!(
        check(
            vec![f.clone()],
            "The new age of majority applies from 2022-04-01.",
            &c
        )[0]
        .0,
        "current"
    );
    assert_eq!(
        check(
            vec![f.clone()],
            "The new age of majority applies from 2023/4/1.",
            &c
        ),
        vec![stale("2023/4/1", "2022/4/1")]
    );
    assert_eq!(
        check(
            vec![f.clone()],
            "The new age of majority applies from April 1, 2023.",
            &c
        ),
        vec![stale("april 1, 2023", "April 1, 2022")]
            .into_iter()
            .map(|(a, _, r)| (a, "April 1, 2023".into(), r))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        check(
            vec![f.clone()],
            "The new age of majority applies from 1 April 2023.",
            &c
        ),
        vec![stale("1 April 2023", "1 April 2022")]
    );
    assert_eq!(
        check(
            vec![f],
            "成年年齢の引き下げは２０２３年４月１日からです。",
            &c
        ),
        vec![stale("２０２３年４月１日", "２０２２年４月１日")]
    );
}

#[test]
fn specificity_an_exception_keeps_its_value() {
    // General rate changes to 10%; the food sub-topic keeps 8% (a narrower scope).
    let mut food = fact(
        "jp.consumption_tax.food",
        "percent",
        8.into(),
        "2019-10-01",
        &[("en", &["consumption tax"])],
    );
    food.scope.topic = Some("tax.food".into());
    let mut facts = tax();
    facts.push(food);
    let mut c = ctx("2025-01-01");
    assert_eq!(
        check(facts.clone(), "The consumption tax is 8%.", &c)[0],
        stale("8", "10")
    );
    c.topic = Some("tax.food".into());
    assert_eq!(
        check(facts.clone(), "The consumption tax is 8%.", &c)[0].0,
        "current"
    );
    // A narrower subject term wins over a shorter one it contains.
    let reduced = fact(
        "jp.consumption_tax.reduced",
        "percent",
        8.into(),
        "2019-10-01",
        &[("en", &["reduced consumption tax"])],
    );
    facts.push(reduced);
    c.topic = None;
    assert_eq!(
        check(facts.clone(), "The reduced consumption tax is 8%.", &c)[0].0,
        "current"
    );
    // A tenant-scoped version beats the general one.
    let mut acme = fact(
        "jp.consumption_tax",
        "percent",
        12.into(),
        "2020-01-01",
        &[("en", &["consumption tax"])],
    );
    acme.scope.tenants = vec!["acme".into()];
    facts.push(acme);
    assert_eq!(
        check(facts, "The consumption tax is 10%.", &c)[0],
        stale("10", "12")
    );
}

#[test]
fn unknown_subjects_are_left_alone() {
    let c = ctx("2025-01-01");
    assert!(check(tax(), "The income tax is 20%. VAT is 8%.", &c).is_empty());
    assert!(check(Vec::new(), "The consumption tax is 8%.", &c).is_empty());
}

#[test]
fn bad_fact_input_is_rejected_with_a_clear_error() {
    let mut f = tax().remove(0);
    f.value = "ten".into();
    assert!(f.validate().unwrap_err().contains("must be a number"));
    let mut f = tax().remove(0);
    f.kind = "furlongs".into();
    assert!(f
        .validate()
        .unwrap_err()
        .contains("unknown unit `furlongs`"));
    let mut f = tax().remove(0);
    f.kind = "currency".into();
    f.currency = Some("XYZ".into());
    assert!(f.validate().unwrap_err().contains("unknown currency"));
    let mut f = tax().remove(0);
    f.effective_from = "yesterday".into();
    assert!(f.validate().unwrap_err().contains("effective_from"));
    let mut f = tax().remove(0);
    f.subjects.clear();
    assert!(f.validate().unwrap_err().contains("subjects"));
    // Overlapping explicit validity for the same key and scope.
    let mut a = tax().remove(0);
    a.effective_until = Some("2020-01-01".into());
    let mut b = tax().remove(1);
    b.effective_from = "2019-06-01".into();
    assert!(b
        .check_against(&[a.clone()])
        .unwrap_err()
        .contains("overlaps"));
    // An open-ended version is cut by the next one; another scope never overlaps.
    assert!(tax().remove(1).check_against(&tax()[..1]).is_ok());
    b.scope.jurisdictions = vec!["JP-13".into()];
    assert!(b.check_against(&[a]).is_ok());
}

fn policy(facts: Vec<Fact>) -> Arc<Policy> {
    let yaml = r#"
name: t
owner: o
detectors:
  - {id: facts, kind: facts}
rules:
  - id: fix-facts
    category: custom:facts
    phase: output
    when: signals.facts.stale > 0
    action: {correct: {}}
"#;
    let mut p = Policy::from_files(&[("policy.yaml", yaml)]).unwrap();
    p.set_fact_checker(Arc::new(FactIndex::new(facts).unwrap()));
    Arc::new(p)
}

fn reply(text: &str) -> EvalInput {
    let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "q"}]});
    EvalInput::from_openai_request(&body, ctx("2025-01-01")).with_openai_response(
        &serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}),
    )
}

#[test]
fn correct_action_in_one_shot_and_streams() {
    let p = policy(tax());
    let text = "Yes. The consumption tax is 8% in Japan, and 消費税は８％です。 Thanks.";
    let d = p.evaluate(Phase::Output, &reply(text));
    assert_eq!(d.summary(), "correct");
    let fixed = "Yes. The consumption tax is 10% in Japan, and 消費税は１０％です。 Thanks.";
    assert_eq!(d.text_for(0), Some(fixed));
    assert_eq!(d.facts.len(), 2);
    assert!(d
        .facts
        .iter()
        .all(|f| f.corrected && f.finding.status == FactStatus::Stale));
    // Every split into chunks: the stale value never leaks.
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for step in [1, 2, 3, 5, 7] {
        let mut g = StreamGuard::new(Arc::clone(&p), reply(""), 0);
        let mut sent = String::new();
        let mut i = 0;
        while i < chars.len() {
            let a = chars[i].0;
            let b = chars.get(i + step).map_or(text.len(), |c| c.0);
            let o = g.push(&text[a..b]);
            assert!(o.blocked.is_none());
            sent.push_str(&o.emit);
            assert!(
                !sent.contains(" 8%") && !sent.contains("８％"),
                "leaked: {sent}"
            );
            i += step;
        }
        sent.push_str(&g.finish().emit);
        assert_eq!(sent, fixed, "step {step}");
    }
    // A current statement is never changed.
    let d = p.evaluate(Phase::Output, &reply("The consumption tax is 10%."));
    assert_eq!(d.summary(), "allow");
    assert_eq!(d.facts.len(), 1);
}

#[test]
fn rules_read_fact_signals_for_append_and_escalate() {
    let yaml = r#"
name: t
owner: o
detectors:
  - {id: facts, kind: facts}
rules:
  - id: stale-escalate
    category: custom:facts
    phase: output
    when: signals.facts.stale > 1
    action: {escalate: {message: "A person will check this answer."}}
  - id: unknown-notice
    category: custom:facts
    phase: output
    when: signals.facts.unknown > 0 || "stale" in signals.facts.findings
    action: {append: {notice: "Figures may have changed."}}
"#;
    let mut p = Policy::from_files(&[("policy.yaml", yaml)]).unwrap();
    p.set_fact_checker(Arc::new(FactIndex::new(tax()).unwrap()));
    let d = p.evaluate(Phase::Output, &reply("The consumption tax is 8%."));
    assert_eq!(d.summary(), "append");
    assert_eq!(
        d.text_for(0),
        Some("The consumption tax is 8%.\n\nFigures may have changed.")
    );
    assert!(!d.facts[0].corrected, "no correct rule fired");
    let d = p.evaluate(
        Phase::Output,
        &reply("The consumption tax is 8%, or 消費税は8%."),
    );
    assert_eq!(d.summary(), "escalate");
}
