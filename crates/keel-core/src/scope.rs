//! Scopes and segments: where a policy rule, fact, rollout, sample rate or simulated change
//! applies, and the one matcher for BCP 47 locale tags, jurisdiction subdivisions and topics.
//!
//! A [`Segment`] is where one request (or one labelled item) sits; a [`Scope`] is a set of
//! segments. Tags compare case-insensitively with `_` read as `-`, and a tag covers its
//! subtags: `ja` covers `ja-JP` and `JA_jp`, `US` covers `US-CA`, but `ja` does not cover
//! `jav`. Topics cover their sub-topics: `tax` covers `tax.food` and `tax/food`.

use serde::{Deserialize, Serialize};

/// Whether the tag `pattern` (`ja`, `US`) covers the tag `tag` (`ja-JP`, `ja_JP`, `US-CA`):
/// equal, or `tag` continues `pattern` with a `-` subtag, ignoring case and reading `_` as `-`.
pub fn tag_covers(pattern: &str, tag: &str) -> bool {
    let norm = |c: u8| {
        if c == b'_' {
            b'-'
        } else {
            c.to_ascii_lowercase()
        }
    };
    let (p, t) = (pattern.as_bytes(), tag.as_bytes());
    t.len() >= p.len()
        && p.iter().zip(t).all(|(a, b)| norm(*a) == norm(*b))
        && (t.len() == p.len() || norm(t[p.len()]) == b'-')
}

/// Whether the topic `pattern` (`tax`) covers the topic `topic` (`tax`, `tax.food`,
/// `tax/food`). Topics are compared exactly (case matters).
pub fn topic_covers(pattern: &str, topic: &str) -> bool {
    topic == pattern
        || (topic.starts_with(pattern)
            && matches!(topic.as_bytes().get(pattern.len()), Some(b'.' | b'/')))
}

/// Whether one of `patterns` covers `tag`; an empty list covers everything (even no tag).
pub fn any_tag_covers(patterns: &[String], tag: Option<&str>) -> bool {
    patterns.is_empty() || tag.is_some_and(|t| patterns.iter().any(|p| tag_covers(p, t)))
}

/// Where one request or item sits. `None`: not known (a scope that names the dimension does
/// not cover it, except sub-topics: an unknown sub-topic is judged at topic level).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment<'a> {
    pub tenant: &'a str,
    pub locale: Option<&'a str>,
    pub jurisdiction: Option<&'a str>,
    pub topic: Option<&'a str>,
    pub subtopic: Option<&'a str>,
}

/// Where something applies; empty lists (and no topic) mean "any".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Tenant ids, compared exactly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    /// BCP 47 tags; `ja` covers `ja-JP`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locales: Vec<String>,
    /// `JP`, `US-CA`; `US` covers `US-CA`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jurisdictions: Vec<String>,
    /// `tax` covers the topics `tax` and `tax.food` / `tax/food`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Sub-topics of `topic` covered (empty = all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subtopics: Vec<String>,
    /// Sub-topics of `topic` not covered (exceptions within the topic).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except_subtopics: Vec<String>,
}

impl Scope {
    /// Whether this scope covers the segment.
    pub fn covers(&self, s: &Segment<'_>) -> bool {
        (self.tenants.is_empty() || self.tenants.iter().any(|t| t == s.tenant))
            && any_tag_covers(&self.locales, s.locale)
            && any_tag_covers(&self.jurisdictions, s.jurisdiction)
            && self
                .topic
                .as_deref()
                .is_none_or(|t| s.topic.is_some_and(|c| topic_covers(t, c)))
            && s.subtopic.is_none_or(|sub| {
                (self.subtopics.is_empty() || self.subtopics.iter().any(|x| x == sub))
                    && !self.except_subtopics.iter().any(|x| x == sub)
            })
    }

    /// A scope of at most one tenant and one locale (how rollouts and sample rates are written).
    pub fn of(tenant: Option<&str>, locale: Option<&str>, jurisdiction: Option<&str>) -> Scope {
        let list = |v: Option<&str>| v.map(|x| vec![x.to_string()]).unwrap_or_default();
        Scope {
            tenants: list(tenant),
            locales: list(locale),
            jurisdictions: list(jurisdiction),
            ..Scope::default()
        }
    }
}

/// Whether two scopes share a segment: some segment built from their own values (the more
/// specific of two related tags is in one of them) is covered by both ([`Scope::covers`]).
pub fn scopes_overlap(a: &Scope, b: &Scope) -> bool {
    fn values(x: &[String], y: &[String]) -> Vec<Option<String>> {
        if x.is_empty() && y.is_empty() {
            return vec![None];
        }
        x.iter().chain(y).cloned().map(Some).collect()
    }
    let tenants = values(&a.tenants, &b.tenants);
    let locales = values(&a.locales, &b.locales);
    let jurisdictions = values(&a.jurisdictions, &b.jurisdictions);
    let topics: Vec<String> = a.topic.iter().chain(b.topic.iter()).cloned().collect();
    let topics: Vec<Option<String>> = if topics.is_empty() {
        vec![None]
    } else {
        topics.into_iter().map(Some).collect()
    };
    tenants.iter().any(|t| {
        locales.iter().any(|l| {
            jurisdictions.iter().any(|j| {
                topics.iter().any(|tp| {
                    let seg = Segment {
                        tenant: t.as_deref().unwrap_or(""),
                        locale: l.as_deref(),
                        jurisdiction: j.as_deref(),
                        topic: tp.as_deref(),
                        subtopic: None,
                    };
                    a.covers(&seg) && b.covers(&seg)
                })
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_overlap_when_one_segment_is_in_both() {
        let sc = |t: &[&str], l: &[&str], j: &[&str]| Scope {
            tenants: t.iter().map(|x| x.to_string()).collect(),
            locales: l.iter().map(|x| x.to_string()).collect(),
            jurisdictions: j.iter().map(|x| x.to_string()).collect(),
            ..Scope::default()
        };
        let cases = [
            (sc(&[], &[], &[]), sc(&["acme"], &["ja"], &[]), true),
            (
                sc(&["acme"], &["ja"], &[]),
                sc(&["acme"], &["ja-JP"], &[]),
                true,
            ),
            (
                sc(&["acme"], &["ja"], &[]),
                sc(&["acme"], &["en"], &[]),
                false,
            ),
            (sc(&["acme"], &[], &[]), sc(&["beta"], &[], &[]), false),
            (sc(&[], &[], &["US"]), sc(&[], &["en"], &["US-CA"]), true),
            (sc(&[], &[], &["US"]), sc(&[], &[], &["JP"]), false),
        ];
        for (a, b, want) in cases {
            assert_eq!(scopes_overlap(&a, &b), want, "{a:?} / {b:?}");
            assert_eq!(scopes_overlap(&b, &a), want, "{b:?} / {a:?}");
        }
    }

    fn check(pattern: &str, tag: &str, expected: bool) {
        assert_eq!(tag_covers(pattern, tag), expected, "{pattern} covers {tag}");
    }

    #[test]
    fn tag_covers_table() {
        for (pattern, tag, expected) in [
            ("ja", "ja", true),
            ("ja", "ja-JP", true),
            ("ja", "ja_JP", true),
            ("ja", "JA_jp", true),
            ("JA", "ja-jp", true),
            ("ja-JP", "ja_JP", true),
            ("ja_JP", "ja-JP", true),
            ("ja-JP", "ja", false),
            ("ja", "jav", false),
            ("ja", "en-JP", false),
            ("ja", "", false),
            ("US", "US-CA", true),
            ("US", "us-ca", true),
            ("US-CA", "US", false),
            ("US-CA", "US-CAL", false),
            ("US", "USA", false),
            ("zh-Hant", "zh-hant-TW", true),
        ] {
            check(pattern, tag, expected);
        }
    }

    #[test]
    fn topic_covers_table() {
        for (pattern, topic, expected) in [
            ("tax", "tax", true),
            ("tax", "tax.food", true),
            ("tax", "tax/food", true),
            ("tax", "taxes", false),
            ("tax.food", "tax", false),
            ("tax", "Tax", false),
        ] {
            assert_eq!(topic_covers(pattern, topic), expected, "{pattern} {topic}");
        }
    }

    #[test]
    fn scope_covers_table() {
        let seg = |locale, jurisdiction, topic, subtopic| Segment {
            tenant: "acme",
            locale,
            jurisdiction,
            topic,
            subtopic,
        };
        let ja = Scope::of(None, Some("ja"), None);
        let acme_us = Scope::of(Some("acme"), None, Some("US"));
        let other = Scope::of(Some("other"), None, None);
        let access = Scope {
            topic: Some("access".into()),
            except_subtopics: vec!["wheelchair".into()],
            ..Scope::default()
        };
        let listed = Scope {
            topic: Some("invest".into()),
            subtopics: vec!["leveraged".into()],
            ..Scope::default()
        };
        for (scope, segment, expected) in [
            (&Scope::default(), seg(None, None, None, None), true),
            (&ja, seg(Some("ja_JP"), None, None, None), true),
            (&ja, seg(Some("en-US"), None, None, None), false),
            (&ja, seg(None, None, None, None), false),
            (&acme_us, seg(None, Some("us-ca"), None, None), true),
            (&acme_us, seg(None, Some("GB"), None, None), false),
            (&other, seg(None, None, None, None), false),
            (&access, seg(None, None, Some("access"), Some("ramp")), true),
            (
                &access,
                seg(None, None, Some("access"), Some("wheelchair")),
                false,
            ),
            (&access, seg(None, None, Some("access"), None), true),
            (&access, seg(None, None, None, None), false),
            (
                &listed,
                seg(None, None, Some("invest"), Some("leveraged")),
                true,
            ),
            (
                &listed,
                seg(None, None, Some("invest"), Some("bonds")),
                false,
            ),
            (&listed, seg(None, None, Some("invest"), None), true),
        ] {
            assert_eq!(scope.covers(&segment), expected, "{scope:?} {segment:?}");
        }
    }
}
