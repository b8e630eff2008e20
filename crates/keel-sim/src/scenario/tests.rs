//! Tests of scenario parsing and validation: each error names its field.

use super::*;

#[test]
fn bundled_scenarios_parse() {
    for (name, text) in BUNDLED {
        let s = Scenario::parse(text, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!s.changes.is_empty(), "{name}");
        assert!(s.ticks() > 0);
    }
}

const MINIMAL: &str = r#"
name = "t"
start = "2026-01-01T00:00:00Z"
duration = "2d"
tick = "1h"
[traffic]
conversations_per_tick = 5
segments = [{ locale = "de-DE", jurisdiction = "DE", weight = 1 }]
[[topics]]
id = "tax"
[[topics.subtopics]]
id = "rate"
prompts = { de = ["Wie hoch ist die Steuer?"] }
answers = { de = "Die Steuer beträgt 19 %." }
[[topics.subtopics]]
id = "food"
prompts = { de = ["Und für Lebensmittel?"] }
answers = { de = "7 % für Lebensmittel." }
[users]
wrong = { report = 0.3 }
[[changes]]
id = "raise"
effective = "1d"
scope = { jurisdictions = ["DE"], topic = "tax", except_subtopics = ["food"] }
wrong = ["19 %"]
right = "Die Steuer beträgt 21 %."
update = { kind = "rewrite", from = "19 %", to = "21 %" }
"#;

/// A scenario with `from` replaced by `to` must fail naming `field`.
fn check_err(from: &str, to: &str, field: &str) {
    let text = MINIMAL.replacen(from, to, 1);
    assert_ne!(text, MINIMAL, "pattern {from} not found");
    let e = Scenario::parse(&text, "x.toml")
        .expect_err(field)
        .to_string();
    assert!(e.contains(field), "expected `{field}` in: {e}");
    assert!(e.contains("x.toml"), "{e}");
}

#[test]
fn a_locale_outside_the_bundled_set_and_exceptions_parse() {
    let s = Scenario::parse(MINIMAL, "m").unwrap();
    let c = &s.changes[0];
    assert_eq!(c.effective_ms - s.start_ms, 86_400_000);
    assert!(c.scope.covers(&segment("tax", Some("rate"), "de-DE", "DE")));
    assert!(!c.scope.covers(&segment("tax", Some("food"), "de-DE", "DE")));
    assert!(!c.scope.covers(&segment("tax", Some("rate"), "de-DE", "AT")));
    assert_eq!(s.ticks(), 48);
}

#[test]
fn bad_files_name_the_field() {
    check_err("tick = \"1h\"", "tick = \"1y\"", "tick");
    check_err("duration = \"2d\"", "duration = \"soon\"", "duration");
    check_err(
        "effective = \"1d\"",
        "effective = \"later\"",
        "changes[0].effective",
    );
    check_err(
        "topic = \"tax\", except",
        "topic = \"vat\", except",
        "changes[0].scope.topic",
    );
    check_err(
        "except_subtopics = [\"food\"]",
        "except_subtopics = [\"x\"]",
        "changes[0].scope.subtopics",
    );
    check_err(
        "kind = \"rewrite\"",
        "kind = \"magic\"",
        "changes[0].update.kind",
    );
    check_err(
        "kind = \"rewrite\", from = \"19 %\", ",
        "kind = \"rewrite\", ",
        "changes[0].update",
    );
    check_err(
        "wrong = { report = 0.3 }",
        "wrong = { report = 3 }",
        "users.wrong.report",
    );
    check_err("de = \"Die", "fr = \"Die", "topics[0].subtopics[0].answers");
    check_err(
        "prompts = { de = [\"Und",
        "prompts = { fr = [\"Und",
        "topics[0].subtopics[1].prompts",
    );
    check_err("wrong = [\"19 %\"]", "wrong = [\"\"]", "changes[0].wrong");
    check_err("[traffic]", "[traffic]\nspeed = 3", "speed");
    check_err(
        "conversations_per_tick = 5",
        "conversations_per_tick = -5",
        "traffic.conversations_per_tick",
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("90s"), Ok(90_000));
    assert_eq!(parse_duration("2w"), Ok(14 * 86_400_000));
    assert!(parse_duration("3y").is_err());
    assert!(parse_duration("h").is_err());
}

/// Issue 16 item 5: a topic that a segment never asks about needs no prompts in its locale.
#[test]
fn prompts_are_needed_only_where_a_segment_asks() {
    let two = MINIMAL.replacen(
        "segments = [{ locale = \"de-DE\", jurisdiction = \"DE\", weight = 1 }]",
        "segments = [{ locale = \"de-DE\", jurisdiction = \"DE\", weight = 1 },\n  \
         { locale = \"fr-FR\", jurisdiction = \"FR\", weight = 1, topics = { tax = 0 } }]",
        1,
    );
    assert_ne!(two, MINIMAL);
    // fr-FR asks nothing about `tax` (weight 0): no French prompts needed…
    assert!(Scenario::parse(&two, "m").is_ok());
    // …but once it asks, they are.
    let asks = two.replacen("topics = { tax = 0 }", "topics = { tax = 1 }", 1);
    let e = Scenario::parse(&asks, "m").unwrap_err().to_string();
    assert!(
        e.contains("topics[0].subtopics[0].prompts") && e.contains("fr-FR"),
        "{e}"
    );
}

#[test]
fn the_operator_section_is_optional_and_checked() {
    let s = Scenario::parse(MINIMAL, "m").unwrap();
    assert_eq!((s.operator.hours, s.operator.latency_ms), ([0, 24], 0));
    let with = format!("{MINIMAL}\n[operator]\nhours = [8, 20]\nlatency = \"2h\"\n");
    let s = Scenario::parse(&with, "m").unwrap();
    assert_eq!(
        (s.operator.hours, s.operator.latency_ms),
        ([8, 20], 7_200_000)
    );
    assert!(s.operator.on_duty(s.start_ms + 8 * 3_600_000));
    assert!(!s.operator.on_duty(s.start_ms + 20 * 3_600_000));
    for (bad, field) in [
        ("hours = [20, 8]", "operator.hours"),
        ("hours = [0, 25]", "operator.hours"),
        ("latency = \"soon\"", "latency"),
        ("shift = 1", "shift"),
    ] {
        let text = format!("{MINIMAL}\n[operator]\n{bad}\n");
        let e = Scenario::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(e.contains(field), "{bad}: {e}");
    }
}
