//! Data-driven boundary tests: PII recognizers, lexicon folding, CEL bounds, precedence, lint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_policy::{lint, run_tests, ActionKind, Bundle, EvalContext, EvalInput, Phase, Policy};

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2025-06-01T00:00:00Z")
        .unwrap()
        .to_utc()
}

fn policy(yaml: &str) -> Policy {
    Policy::from_files(&[("policy.yaml", yaml)]).unwrap_or_else(|e| panic!("{e}"))
}

const PII: &str = r#"
name: t
owner: team
detectors:
  - {id: pii, kind: pii}
rules:
  - id: r
    category: S7
    phase: output
    when: signals.pii.count > 0
    action: {redact: {detectors: [pii], replacement: "<{label}>"}}
"#;

/// `text` redacted by a PII-only policy.
fn check_pii(text: &str, expected: &str) {
    let p = policy(PII);
    let input = EvalInput::new(EvalContext::new("t", now())).reply(text);
    let d = p.evaluate(Phase::Output, &input);
    let got = d.text_for(0).unwrap_or(text);
    assert_eq!(got, expected, "input: {text:?}");
}

#[test]
fn pii_recognizers() {
    let cases = [
        ("mail jane.doe+x@example.co.jp now", "mail <email> now"),
        ("not an email: a@b", "not an email: a@b"),
        ("ｉｎｆｏ＠ｅｘａｍｐｌｅ．ｃｏｍ", "<email>"),
        // cards: Luhn and issuer prefix
        ("visa 4111111111111111.", "visa <credit_card>."),
        ("visa 4111-1111-1111-1111", "visa <credit_card>"),
        ("amex 3782 822463 10005", "amex <credit_card>"),
        ("bad luhn 4111111111111112", "bad luhn 4111111111111112"),
        ("no issuer 9999999999999995", "no issuer 9999999999999995"),
        // IBAN mod 97
        ("iban DE89 3704 0044 0532 0130 00 ok", "iban <iban> ok"),
        ("iban GB82WEST12345698765432", "iban <iban>"),
        (
            "iban DE89 3704 0044 0532 0130 01 bad",
            "iban DE89 3704 0044 0532 0130 01 bad",
        ),
        // My Number check digit
        ("mn 123456789018", "mn <jp_my_number>"),
        ("mn 1234 5678 9018", "mn <jp_my_number>"),
        ("mn 123456789019", "mn 123456789019"),
        // Japanese phones
        ("tel 03-1234-5678", "tel <phone>"),
        ("tel (03)1234-5678", "tel <phone>"),
        ("携帯090-1234-5678です", "携帯<phone>です"),
        ("携帯０９０－１２３４－５６７８", "携帯<phone>"),
        ("free 0120-123-456", "free <phone>"),
        ("ip 050-1234-5678", "ip <phone>"),
        ("code 012-345", "code 012-345"),
        // international and NANP
        ("call +81 90 1234 5678", "call <phone>"),
        ("call +1 (415) 555-0100", "call <phone>"),
        ("call (415) 555-0100", "call <phone>"),
        ("year 2024", "year 2024"),
        // IPs
        ("host 192.168.10.1 up", "host <ip> up"),
        ("not ip 999.1.1.1", "not ip 999.1.1.1"),
        ("v6 2001:db8::8a2e:370:7334 up", "v6 <ip> up"),
        ("time 12:30:45", "time 12:30:45"),
        // secrets
        ("key sk-proj-abcdefghijklmnopqrstuvwx", "key <secret>"),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws <secret>"),
        ("password: hunter2hunter2", "password: <secret>"),
        // SSN
        ("ssn 123-45-6789", "ssn <us_ssn>"),
        ("ssn 666-45-6789", "ssn 666-45-6789"),
        ("ssn 123-00-6789", "ssn 123-00-6789"),
    ];
    for (input, expected) in cases {
        check_pii(input, expected);
    }
}

const LEX: &str = r#"
name: t
owner: team
detectors:
  - {id: lex, kind: lexicon, terms: [kill, "pipe bomb", 爆弾, ｶﾞｽ, café]}
rules:
  - {id: r, category: S1, phase: input, when: signals.lex.matched, action: {block: {message: no}}}
"#;

fn check_lexicon(text: &str, matched: bool) {
    let p = policy(LEX);
    let input = EvalInput::new(EvalContext::new("t", now())).user(text);
    let d = p.evaluate(Phase::Input, &input);
    assert_eq!(
        d.action == ActionKind::Block,
        matched,
        "input: {text:?} → {d:?}"
    );
}

#[test]
fn lexicon_folding_and_boundaries() {
    let cases = [
        ("KILL it", true),
        ("ｋｉｌｌ", true), // full-width Latin
        ("Kill.", true),
        ("skill", false), // word boundary
        ("killer", false),
        ("a PIPE   bomb", false), // spaces are part of the term
        ("Pipe Bomb!", true),
        ("これは爆弾です", true), // Japanese substring
        ("ガス漏れ", true),       // half-width katakana term vs full-width text
        ("ｶﾞｽ", true),
        ("カス", false),               // voiced mark matters
        ("cafe\u{301} au lait", true), // decomposed é matches composed term
        ("café", true),
        ("cafe", false),
        ("私はkillする", true), // Latin term next to Japanese
    ];
    for (text, matched) in cases {
        check_lexicon(text, matched);
    }
}

fn check_cel(expr: &str, ok: bool) {
    let yaml = format!(
        "name: t\nowner: o\nrules:\n  - id: r\n    category: custom\n    phase: input\n    when: {}\n    action: allow\n",
        serde_json::to_string(expr).unwrap()
    );
    let res = Policy::from_files(&[("policy.yaml", yaml.as_str())]);
    assert_eq!(
        res.is_ok(),
        ok,
        "{}: {:?}",
        &expr[..expr.len().min(60)],
        res.err().map(|e| e.to_string())
    );
    if let Err(e) = res {
        assert!(
            e.issues()
                .iter()
                .all(|i| i.rule_id.as_deref() == Some("r") && i.line == 4),
            "{e}"
        );
    }
}

#[test]
fn cel_bounds() {
    let deep = format!("{}true{}", "(".repeat(100_000), ")".repeat(100_000));
    let unary = format!("{}true", "!".repeat(100_000));
    let chain = vec!["1"; 3000].join(" + ") + " > 0";
    let cases: Vec<(String, bool)> = vec![
        ("context.tenant == 'acme'".into(), true),
        (
            "request.text.size() > 10 && context.now > timestamp('2024-01-01T00:00:00Z')".into(),
            true,
        ),
        ("request.segments.exists(s, s.role == 'user')".into(), true),
        (deep, false),
        (unary, false),
        (chain, false),
        ("x".repeat(5000), false),
        ("request.text.matches('a+')".into(), false),
        ("signals.nope.matched".into(), false),
        ("unknown_var == 1".into(), false),
        ("[1,2].all(a, [1].all(b, [1].all(c, true)))".into(), false),
        ("(((((((((((true)))))))))))".into(), true),
        ("'((((((((((((((((((((((((((((((' == 'x'".into(), true),
        ("1 +".into(), false),
    ];
    for (expr, ok) in cases {
        check_cel(&expr, ok);
    }
}

const PRECEDENCE: &str = r#"
name: t
owner: team
rules:
  - {id: allow1, category: custom, phase: input, when: "request.text.contains('allow')", action: allow}
  - {id: append1, category: S6, phase: input, when: "request.text.contains('append')", action: {append: {notice: N1}}}
  - {id: rewrite1, category: custom, phase: input, when: "request.text.contains('rewrite')", action: {rewrite: {from: "rewrite", to: "REWRITTEN"}}}
  - {id: route1, category: custom, phase: input, when: "request.text.contains('route')", action: {route: {upstream: safe}}}
  - {id: escalate1, category: custom, phase: input, when: "request.text.contains('escalate')", action: {escalate: {message: E, severity: high}}}
  - {id: block1, category: S1, phase: input, when: "request.text.contains('block')", action: {block: {message: B1}}}
  - {id: block2, category: S1, phase: input, when: "request.text.contains('block')", action: {block: {message: B2}}}
"#;

fn check_precedence(text: &str, action: ActionKind, deciding: Option<&str>) {
    let p = policy(PRECEDENCE);
    let input = EvalInput::new(EvalContext::new("t", now())).user(text);
    let d = p.evaluate(Phase::Input, &input);
    assert_eq!(
        (d.action, d.deciding_rule.as_deref()),
        (action, deciding),
        "{text}"
    );
    assert_eq!(d.summary(), action.as_str());
}

#[test]
fn precedence_table() {
    let cases = [
        ("nothing", ActionKind::Allow, None),
        ("allow", ActionKind::Allow, Some("allow1")),
        ("allow append", ActionKind::Append, Some("append1")),
        ("append rewrite", ActionKind::Rewrite, Some("rewrite1")),
        ("rewrite route", ActionKind::Route, Some("route1")),
        ("route escalate", ActionKind::Escalate, Some("escalate1")),
        ("escalate block", ActionKind::Block, Some("block1")),
        (
            "allow append rewrite route escalate block",
            ActionKind::Block,
            Some("block1"),
        ),
    ];
    for (text, action, deciding) in cases {
        check_precedence(text, action, deciding);
    }
    // Transforms of all fired rules apply under route.
    let p = policy(PRECEDENCE);
    let d = p.evaluate(
        Phase::Input,
        &EvalInput::new(EvalContext::new("t", now())).user("route rewrite append"),
    );
    assert_eq!(d.upstream.as_deref(), Some("safe"));
    assert_eq!(d.text_for(0), Some("route REWRITTEN append\n\nN1"));
}

fn check_lint(files: &[(&str, &str)], expected: &[(&str, usize, Option<&str>, &str)]) {
    let issues: Vec<_> = lint(&Bundle::from_files(files))
        .into_iter()
        .filter(|i| i.is_error())
        .collect();
    let got: Vec<(String, usize, Option<String>, String)> = issues
        .iter()
        .map(|i| (i.file.clone(), i.line, i.rule_id.clone(), i.check.clone()))
        .collect();
    let want: Vec<(String, usize, Option<String>, String)> = expected
        .iter()
        .map(|(f, l, r, c)| (f.to_string(), *l, r.map(str::to_string), c.to_string()))
        .collect();
    assert_eq!(got, want, "{issues:#?}");
}

#[test]
fn lint_errors_name_file_line_and_rule() {
    let bad = "name: t\nowner: o\ndetectors:\n  - id: lex\n    kind: lexicon\n    files: [terms.txt]\nrules:\n  - id: ok\n    category: S1\n    phase: input\n    when: signals.lex.matched\n    action: allow\n  - id: broken\n    category: S15\n    phase: input\n    when: signals.lex.nope\n    action: {redact: {detectors: [missing]}}\n";
    check_lint(
        &[("policy.yaml", bad), ("terms.txt", "a\nb\n")],
        &[
            ("policy.yaml", 13, Some("broken"), "category"),
            ("policy.yaml", 13, Some("broken"), "cel"),
            ("policy.yaml", 13, Some("broken"), "unknown-detector"),
        ],
    );
    check_lint(
        &[(
            "policy.yaml",
            "name: t\nowner: o\nrules:\n  - id: x\n    phase: sideways\n",
        )],
        &[("policy.yaml", 5, None, "yaml")],
    );
    check_lint(
        &[("policy.yaml", "name: t\nowner: ''\n")],
        &[("policy.yaml", 2, None, "metadata")],
    );
    let long_term = format!("ok\n{}\n", "x".repeat(65));
    check_lint(
        &[
            (
                "policy.yaml",
                "name: t\nowner: o\ndetectors:\n  - {id: lex, kind: lexicon, files: [t.txt]}\n",
            ),
            ("t.txt", long_term.as_str()),
        ],
        &[("t.txt", 2, Some("lex"), "term-length")],
    );
    check_lint(
        &[(
            "policy.yaml",
            "name: t\nowner: o\ndetectors:\n  - {id: lex, kind: lexicon, files: [gone.txt]}\n",
        )],
        &[
            ("policy.yaml", 4, Some("lex"), "detector"),
            ("policy.yaml", 4, Some("lex"), "missing-file"),
        ],
    );
}

#[test]
fn failing_inline_test_is_named() {
    let yaml = "name: t\nowner: o\nrules:\n  - {id: r, category: S1, phase: input, when: \"request.text.contains('x')\", action: {block: {message: m}}}\ntests:\n  - name: passes\n    messages: [{role: user, content: x}]\n    expect: {action: block, rules: [r]}\n  - name: wrong expectation\n    messages: [{role: user, content: y}]\n    expect: {action: block}\n";
    let report = run_tests(&policy(yaml));
    assert_eq!((report.passed(), report.failed()), (1, 1));
    let text = report.to_string();
    assert!(
        text.contains("FAIL policy.yaml:9 wrong expectation: expected block, got allow"),
        "{text}"
    );
}

#[test]
fn version_id_is_canonical_and_diff_reports_changes() {
    let a = Bundle::from_files(&[("policy.yaml", PII), ("b.txt", "x")]);
    let b = Bundle::from_files(&[
        ("./b.txt", "x"),
        ("policy.yaml", PII.replace('\n', "\r\n").as_str()),
    ]);
    assert_eq!(a.version_id(), b.version_id());
    assert_eq!(a.version_id().len(), 64);
    let p1 = policy(PRECEDENCE);
    let p2 = policy(&PRECEDENCE.replace("message: B2", "message: B3").replace("  - {id: allow1, category: custom, phase: input, when: \"request.text.contains('allow')\", action: allow}\n", ""));
    let d = keel_policy::diff(&p1, &p2);
    assert_eq!(d.rules_removed, vec!["allow1"]);
    assert_eq!(d.rules_changed.len(), 1);
    assert_eq!(d.rules_changed[0].id, "block2");
    assert!(d.to_string().contains("~ rule block2: action"), "{d}");
}

#[test]
fn scope_by_tenant_locale_jurisdiction_and_time() {
    let yaml = r#"
name: t
owner: o
rules:
  - id: r
    category: custom
    phase: input
    scope: {tenants: [acme], locales: [ja], jurisdictions: [JP], effective_from: "2025-01-01T00:00:00Z", effective_until: "2026-01-01T00:00:00Z"}
    action: {block: {message: m}}
"#;
    let p = policy(yaml);
    let check = |tenant: &str, locale: &str, jur: &str, at: &str, fires: bool| {
        let mut ctx = EvalContext::new(
            tenant,
            chrono::DateTime::parse_from_rfc3339(at).unwrap().to_utc(),
        );
        ctx.locale = Some(locale.into());
        ctx.jurisdiction = Some(jur.into());
        let d = p.evaluate(Phase::Input, &EvalInput::new(ctx).user("x"));
        assert_eq!(d.fired("r"), fires, "{tenant} {locale} {jur} {at}");
    };
    check("acme", "ja-JP", "JP-13", "2025-06-01T00:00:00Z", true);
    check("other", "ja-JP", "JP", "2025-06-01T00:00:00Z", false);
    check("acme", "en-US", "JP", "2025-06-01T00:00:00Z", false);
    check("acme", "ja", "JPN", "2025-06-01T00:00:00Z", false);
    check("acme", "ja", "JP", "2024-12-31T23:59:59Z", false);
    check("acme", "ja", "JP", "2026-01-01T00:00:00Z", false);
}

#[test]
fn openai_bodies_cover_parts_choices_and_tool_calls() {
    let body = serde_json::json!({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{\"q\":1}"}}]}
    ]});
    let reply = serde_json::json!({"choices": [
        {"index": 0, "message": {"content": "x"}}, {"index": 1, "message": {"content": "y", "tool_calls": [{"function": {"arguments": "{}"}}]}}
    ]});
    let input = EvalInput::from_openai_request(&body, EvalContext::new("t", now()))
        .with_openai_response(&reply);
    let locs: Vec<&str> = input
        .request
        .iter()
        .chain(&input.response)
        .map(|s| s.location.as_str())
        .collect();
    assert_eq!(
        locs,
        [
            "messages[0].content[0].text",
            "messages[0].content[2].text",
            "messages[1].tool_calls[0].function.arguments",
            "choices[0].message.content",
            "choices[1].message.content",
            "choices[1].message.tool_calls[0].function.arguments",
        ]
    );
}
