//! Scope matching at the rollout and sample-rate boundaries: one matcher (`keel_core::Scope`)
//! for every surface, so a locale written `ja_JP` falls in a scope written `ja` everywhere.

use keel_gateway::config::ReviewConfig;
use keel_loop::update::rollout::RolloutScope;
use serde_json::json;

/// Whether a rollout scoped to `scope_locale` serves `locale`, and whether a sample rule for
/// `scope_locale` (rate 1.0, default 0.0) applies to it; both must give `expected`.
fn check(scope_locale: &str, locale: &str, expected: bool) {
    let rollout = RolloutScope {
        tenant: None,
        locale: Some(scope_locale.to_string()),
    };
    assert_eq!(
        rollout.covers("acme", Some(locale)),
        expected,
        "rollout scoped to {scope_locale} vs {locale}"
    );
    let review: ReviewConfig = serde_json::from_value(json!({
        "sample_rate": 0.0,
        "sample": [{"locale": scope_locale, "rate": 1.0}],
    }))
    .unwrap();
    let rate = review.sample_rate_for("acme", Some(locale), None);
    assert_eq!(
        rate == 1.0,
        expected,
        "sample rule for {scope_locale} vs {locale}: rate {rate}"
    );
}

#[test]
fn ja_underscore_locale_matches_rollout_and_sample_rate_scoped_to_ja() {
    for (scope, locale, expected) in [
        ("ja", "ja_JP", true),
        ("ja", "JA_jp", true),
        ("ja", "ja-JP", true),
        ("JA", "ja-JP", true),
        ("ja-JP", "ja_JP", true),
        ("ja", "jav", false),
        ("ja", "en_JP", false),
        ("ja-JP", "ja", false),
    ] {
        check(scope, locale, expected);
    }
}
