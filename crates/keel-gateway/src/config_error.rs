//! Config errors people can act on: `keel.toml: unknown key storage.durabilty (did you mean
//! durability?)` instead of figment's rendering (doubled backticks, a `default.` profile prefix).

use figment::error::Kind;

/// One line per figment error, each prefixed with `origin` (the file).
pub fn describe(origin: &str, err: figment::Error) -> String {
    let lines: Vec<String> = err
        .into_iter()
        .map(|e| one(origin, &e.path, &e.kind))
        .collect();
    lines.join("; ")
}

fn one(origin: &str, path: &[String], kind: &Kind) -> String {
    let key = path.join(".");
    match kind {
        Kind::UnknownField(field, expected) => {
            let full = if path.last() == Some(field) {
                key
            } else if key.is_empty() {
                field.clone()
            } else {
                format!("{key}.{field}")
            };
            let hint = closest(field, expected)
                .map(|c| format!(" (did you mean {c}?)"))
                .unwrap_or_else(|| {
                    if expected.is_empty() {
                        String::new()
                    } else {
                        format!(" (expected one of: {})", expected.join(", "))
                    }
                });
            format!("{origin}: unknown key {full}{hint}")
        }
        Kind::UnknownVariant(v, expected) => format!(
            "{origin}: {key}: unknown value `{v}` (expected one of: {})",
            expected.join(", ")
        ),
        Kind::MissingField(f) => {
            let full = if key.is_empty() {
                f.to_string()
            } else {
                format!("{key}.{f}")
            };
            format!("{origin}: missing key {full}")
        }
        other if key.is_empty() => format!("{origin}: {other}"),
        other => format!("{origin}: {key}: {other}"),
    }
}

/// The expected name nearest to `got` (edit distance at most 2, or a third of its length).
pub(crate) fn closest<'a>(got: &str, expected: &[&'a str]) -> Option<&'a str> {
    let limit = (got.chars().count() / 3).max(2);
    expected
        .iter()
        .map(|e| (distance(got, e), *e))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, e)| e)
}

/// Levenshtein distance over characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml: &str, expected: &str) {
        let err = crate::Config::from_toml_str(toml)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(expected), "{toml:?}: {err}");
        assert!(!err.contains("``") && !err.contains("default."), "{err}");
    }

    /// Issue 25, defect 8.
    #[test]
    fn config_typo_error_has_doubled_backticks_and_a_stray_default() {
        check(
            "[storage]\ndurabilty = \"durable\"\n",
            "<inline>: unknown key storage.durabilty (did you mean durability?)",
        );
        check(
            "lisen = \"127.0.0.1:0\"\n",
            "unknown key lisen (did you mean listen?)",
        );
        check(
            "[storage]\nzzzzzzzz = 1\n",
            "unknown key storage.zzzzzzzz (expected one of: url, durability)",
        );
        assert_eq!(distance("durabilty", "durability"), 1);
        assert_eq!(closest("xyz", &["durability"]), None);
    }
}
