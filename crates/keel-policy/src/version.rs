//! Version ids as people type them: the one resolver every verb and endpoint uses. A version is
//! named by its full id or by any unambiguous prefix of at least [`MIN_PREFIX`] characters (the
//! 12-character ids `keel policy history`, `diff` and `list` print work everywhere); an unknown,
//! ambiguous or too short id is an error that says which.

use crate::error::PolicyError;

/// Shortest prefix accepted.
pub const MIN_PREFIX: usize = 8;
/// Length of the short ids printed for people.
pub const SHORT_LEN: usize = 12;

/// The short form printed for people (the first 12 characters).
pub fn short(version: &str) -> &str {
    version.get(..SHORT_LEN).unwrap_or(version)
}

/// The one id of `known` that `query` names (exactly, or as a prefix of at least
/// [`MIN_PREFIX`] characters; case-insensitive, surrounding spaces ignored).
pub fn resolve<'a>(
    query: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Result<String, PolicyError> {
    let q = query.trim().to_ascii_lowercase();
    let mut hits: Vec<&str> = Vec::new();
    for v in known {
        if v == q {
            return Ok(v.to_string());
        }
        if v.starts_with(&q) && !hits.contains(&v) {
            hits.push(v);
        }
    }
    if hits.is_empty() {
        return Err(PolicyError::UnknownVersion(format!(
            "no policy version `{query}` (see `keel policy list` / GET /api/policies)"
        )));
    }
    if q.len() < MIN_PREFIX {
        return Err(PolicyError::Version(format!(
            "policy version `{query}` is too short: give at least {MIN_PREFIX} characters of its id (the 12-character ids `keel policy list` prints work)"
        )));
    }
    match hits.as_slice() {
        [one] => Ok((*one).to_string()),
        many => Err(PolicyError::Version(format!(
            "policy version `{query}` is ambiguous: it starts {} versions ({}); give more characters",
            many.len(),
            many.iter().map(|v| short(v)).collect::<Vec<_>>().join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "ab12cd34ef56aa00";
    const B: &str = "ab12cd34ef56bb00";
    const C: &str = "ff00ff00ff00ff00";

    fn check(query: &str, expected: Result<&str, &str>) {
        let got = resolve(query, [A, B, C]);
        match (got, expected) {
            (Ok(v), Ok(want)) => assert_eq!(v, want, "{query}"),
            (Err(e), Err(fragment)) => {
                assert!(e.to_string().contains(fragment), "{query}: {e}")
            }
            (got, want) => panic!("{query}: got {got:?}, want {want:?}"),
        }
    }

    /// Issue 25, defect 6: `kpis --compare-policies` with the printed 12-character ids, or
    /// unknown ids, silently compared nothing.
    #[test]
    fn version_ids_accept_unambiguous_prefixes_and_reject_the_rest() {
        check(A, Ok(A));
        check("ff00ff00ff00", Ok(C));
        check(" FF00FF00 ", Ok(C));
        check("ab12cd34ef56a", Ok(A));
        check("ab12cd34ef56", Err("ambiguous: it starts 2 versions"));
        check("0000000000000", Err("no policy version `0000000000000`"));
        check("nope", Err("no policy version `nope`"));
        check("ff00", Err("too short"));
        check("", Err("too short"));
        assert_eq!(short(A), "ab12cd34ef56");
        assert_eq!(short("abc"), "abc");
    }
}
