//! Detectors, compiled once when a bundle loads: regex sets, lexicons, PII recognizers and the
//! facts slot. Scanning a text yields [`Finding`]s (detector, label, segment, byte span) that
//! rules read through `signals` and that redactions replace.

pub(crate) mod pii;

use std::collections::BTreeSet;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::Regex;

use crate::input::EvalContext;
use crate::normalize::{fold, is_mark, is_word_char, Normalized};

pub use pii::PII_KINDS;

/// What a detector is; the `kind:` of a detector in `policy.yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorKind {
    Regex,
    Lexicon,
    Pii,
    Facts,
}

impl DetectorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::Regex => "regex",
            DetectorKind::Lexicon => "lexicon",
            DetectorKind::Pii => "pii",
            DetectorKind::Facts => "facts",
        }
    }

    /// The fields `signals.<id>` has for a detector of this kind (besides the PII kinds).
    pub(crate) fn fields(self) -> &'static [&'static str] {
        match self {
            DetectorKind::Regex => &["matched", "count", "patterns"],
            DetectorKind::Lexicon => &["matched", "count", "terms"],
            DetectorKind::Pii => &["matched", "count", "kinds"],
            DetectorKind::Facts => &[
                "matched", "count", "findings", "stale", "current", "unknown",
            ],
        }
    }
}

/// One thing a detector found: where (segment and byte span of the original text) and what
/// (`label`: the lexicon term as written in the bundle, the PII kind, the regex pattern name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub detector: usize,
    pub label: u32,
    pub segment: usize,
    pub start: usize,
    pub end: usize,
    /// Facts detectors: the statement checked (its span is relative to the checked text).
    pub fact: Option<Arc<FactFinding>>,
}

/// How a statement compares with the fact in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactStatus {
    /// The stated value differs from the fact in force.
    Stale,
    /// The stated value is the fact in force.
    Current,
    /// The subject is known, but no version is in force for this scope and time.
    Unknown,
}

impl FactStatus {
    /// The labels of a `kind: facts` detector, indexed by `as_label`.
    pub const LABELS: [&'static str; 3] = ["stale", "current", "unknown"];

    pub fn as_str(self) -> &'static str {
        match self {
            FactStatus::Stale => "stale",
            FactStatus::Current => "current",
            FactStatus::Unknown => "unknown",
        }
    }

    pub(crate) fn as_label(self) -> u32 {
        match self {
            FactStatus::Stale => 0,
            FactStatus::Current => 1,
            FactStatus::Unknown => 2,
        }
    }
}

/// A statement a [`FactChecker`] found: a subject with a value in the same sentence, compared
/// with the fact in force at the request's time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FactFinding {
    /// Byte span of the stated value in the checked text (what a correction replaces).
    pub start: usize,
    pub end: usize,
    /// The fact's key, e.g. `jp.consumption_tax.standard_rate`.
    pub fact: String,
    pub status: FactStatus,
    /// The value as read from the text, normalised (`10%`, `2022-04-01`).
    pub stated: String,
    /// The value in force, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// For stale statements: the text that replaces `start..end`, in the stated style.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
}

/// Checks statements of facts: given a text and the request context, report each statement of
/// a known subject with a value, compared with the fact in force at `context.now`
/// ([`crate::facts::FactIndex`] is the implementation). A policy without a checker (the
/// default) reports no findings for its `kind: facts` detectors.
pub trait FactChecker: Send + Sync {
    fn check(&self, text: &str, context: &EvalContext) -> Vec<FactFinding>;
}

/// A detector's public description, as the bundle declared it after loading.
pub(crate) struct DetectorInfo {
    pub id: String,
    pub kind: DetectorKind,
    /// Labels findings refer to by index.
    pub labels: Vec<String>,
    /// Longest match in characters of the original text, if bounded.
    pub max_len: Option<usize>,
    /// Enabled PII kinds (PII detectors only).
    pub pii_kinds: Vec<bool>,
}

struct LexPattern {
    detector: usize,
    label: u32,
    /// The term starts/ends with a character of a spaced script: needs a word boundary there.
    bound_start: bool,
    bound_end: bool,
}

/// All detectors of a policy, compiled.
pub(crate) struct Detectors {
    pub list: Vec<DetectorInfo>,
    lexicon: Option<(AhoCorasick, Vec<LexPattern>)>,
    regexes: Vec<(usize, u32, Regex)>,
    pii: Option<pii::PiiRecognizers>,
    pub fact_checker: Option<Arc<dyn FactChecker>>,
}

/// What a compiled detector is built from (validated by the bundle loader).
pub(crate) enum DetectorSource {
    Regex(Vec<(String, String)>),
    Lexicon(Vec<String>),
    Pii(Vec<String>),
    Facts,
}

/// The longest match of a regex, in bytes, if bounded.
pub(crate) fn regex_max_len(pattern: &str) -> Option<usize> {
    regex_syntax::Parser::new()
        .parse(pattern)
        .ok()?
        .properties()
        .maximum_len()
}

/// What one [`Detectors::scan`] reads besides the text: which detectors run, the request
/// context, and a facts checker that replaces the policy's own.
#[derive(Clone, Copy)]
pub struct ScanWith<'a> {
    pub used: &'a [bool],
    pub context: &'a EvalContext,
    pub checker: Option<&'a dyn FactChecker>,
}

impl Detectors {
    /// Compiles detectors; errors are `(detector index, message)`.
    pub fn compile(defs: Vec<(String, DetectorSource)>) -> Result<Self, Vec<(usize, String)>> {
        let mut errors = Vec::new();
        let mut list = Vec::new();
        let mut ac_terms: Vec<String> = Vec::new();
        let mut ac_meta: Vec<LexPattern> = Vec::new();
        let mut regexes = Vec::new();
        let mut need_pii = false;
        for (idx, (id, source)) in defs.into_iter().enumerate() {
            let mut info = DetectorInfo {
                id,
                kind: DetectorKind::Facts,
                labels: Vec::new(),
                max_len: Some(0),
                pii_kinds: Vec::new(),
            };
            match source {
                DetectorSource::Regex(patterns) => {
                    info.kind = DetectorKind::Regex;
                    let mut max = Some(0usize);
                    for (name, pattern) in patterns {
                        match regex::RegexBuilder::new(&pattern)
                            .size_limit(1 << 20)
                            .build()
                        {
                            Ok(re) => {
                                let label = info.labels.len() as u32;
                                info.labels.push(name);
                                max = match (max, regex_max_len(&pattern)) {
                                    (Some(a), Some(b)) => Some(a.max(b)),
                                    _ => None,
                                };
                                regexes.push((idx, label, re));
                            }
                            Err(e) => errors.push((idx, format!("pattern `{name}`: {e}"))),
                        }
                    }
                    info.max_len = max;
                }
                DetectorSource::Lexicon(terms) => {
                    info.kind = DetectorKind::Lexicon;
                    let mut seen = BTreeSet::new();
                    let mut max_chars = 0;
                    for term in terms {
                        let folded = fold(term.trim());
                        if folded.is_empty() || !seen.insert(folded.clone()) {
                            continue;
                        }
                        max_chars = max_chars.max(folded.chars().count());
                        let first = folded.chars().next();
                        let last = folded.chars().next_back();
                        let label = info.labels.len() as u32;
                        info.labels.push(term.trim().to_string());
                        ac_meta.push(LexPattern {
                            detector: idx,
                            label,
                            bound_start: first.is_some_and(is_word_char),
                            bound_end: last.is_some_and(is_word_char),
                        });
                        ac_terms.push(folded);
                    }
                    if info.labels.is_empty() {
                        errors.push((idx, "lexicon has no terms".to_string()));
                    }
                    // Each original character folds to at least one character: a match of n
                    // folded characters spans at most n original characters.
                    info.max_len = Some(max_chars);
                }
                DetectorSource::Pii(kinds) => {
                    info.kind = DetectorKind::Pii;
                    need_pii = true;
                    let mut enabled = vec![kinds.is_empty(); PII_KINDS.len()];
                    for k in &kinds {
                        match PII_KINDS.iter().position(|p| p == k) {
                            Some(i) => {
                                if let Some(e) = enabled.get_mut(i) {
                                    *e = true;
                                }
                            }
                            None => errors.push((
                                idx,
                                format!(
                                    "unknown PII recognizer `{k}` (known: {})",
                                    PII_KINDS.join(", ")
                                ),
                            )),
                        }
                    }
                    info.labels = PII_KINDS.iter().map(|s| s.to_string()).collect();
                    // Patterns are ASCII: bytes = folded characters >= original characters.
                    info.max_len = Some(pii::PiiRecognizers::max_len(&enabled));
                    info.pii_kinds = enabled;
                }
                DetectorSource::Facts => {
                    info.kind = DetectorKind::Facts;
                    info.labels = FactStatus::LABELS.iter().map(|s| s.to_string()).collect();
                    info.max_len = Some(crate::facts::FactIndex::stream_span());
                }
            }
            list.push(info);
        }
        let lexicon = if ac_terms.is_empty() {
            None
        } else {
            match AhoCorasickBuilder::new()
                .match_kind(MatchKind::Standard)
                .build(&ac_terms)
            {
                Ok(ac) => Some((ac, ac_meta)),
                Err(e) => {
                    errors.push((0, format!("lexicon automaton: {e}")));
                    None
                }
            }
        };
        let pii = if need_pii {
            match pii::PiiRecognizers::new() {
                Ok(p) => Some(p),
                Err(e) => {
                    errors.push((0, format!("PII recognizers: {e}")));
                    None
                }
            }
        } else {
            None
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Detectors {
            list,
            lexicon,
            regexes,
            pii,
            fact_checker: None,
        })
    }

    /// Scans `text[base..]` (segment `segment`) with the detectors marked in `used`, appending
    /// findings with spans in `text`'s byte offsets. Context before `base` is only read for word
    /// boundaries, so scanning a suffix gives the same findings as scanning the whole text there.
    /// `with.checker` replaces the policy's facts checker when given.
    pub fn scan(
        &self,
        text: &str,
        base: usize,
        segment: usize,
        with: ScanWith<'_>,
        out: &mut Vec<Finding>,
    ) {
        let ScanWith {
            used,
            context,
            checker,
        } = with;
        let is_used = |d: usize| used.get(d).copied().unwrap_or(false);
        let need_norm = self.lexicon.is_some()
            || self
                .list
                .iter()
                .enumerate()
                .any(|(i, d)| d.kind == DetectorKind::Pii && is_used(i));
        if need_norm {
            let norm = Normalized::new(text, base);
            if let Some((ac, meta)) = &self.lexicon {
                self.scan_lexicon(ac, meta, &norm, segment, used, out);
            }
            if let Some(pii) = &self.pii {
                let mut hits = Vec::new();
                for (d, info) in self.list.iter().enumerate() {
                    if info.kind != DetectorKind::Pii || !is_used(d) {
                        continue;
                    }
                    hits.clear();
                    pii.find(&norm.text, &info.pii_kinds, &mut hits);
                    for h in &hits {
                        let (start, end) = norm.span(h.start, h.end);
                        out.push(Finding {
                            detector: d,
                            label: h.kind as u32,
                            segment,
                            start,
                            end,
                            fact: None,
                        });
                    }
                }
            }
        }
        for (d, label, re) in &self.regexes {
            if !is_used(*d) {
                continue;
            }
            let mut pos = base;
            while let Some(m) = re.find_at(text, pos) {
                if m.end() > m.start() {
                    out.push(Finding {
                        detector: *d,
                        label: *label,
                        segment,
                        start: m.start(),
                        end: m.end(),
                        fact: None,
                    });
                    pos = m.end();
                } else {
                    pos = m.end()
                        + text
                            .get(m.end()..)
                            .and_then(|r| r.chars().next())
                            .map_or(1, char::len_utf8);
                }
                if pos > text.len() {
                    break;
                }
            }
        }
        if let Some(checker) = checker.or(self.fact_checker.as_deref()) {
            let facts: Vec<usize> = (0..self.list.len())
                .filter(|&d| {
                    is_used(d)
                        && self
                            .list
                            .get(d)
                            .is_some_and(|i| i.kind == DetectorKind::Facts)
                })
                .collect();
            if !facts.is_empty() {
                // A statement's subject may sit in text before `base` (already released by a
                // stream): look back far enough, and keep only values from `base` on.
                let mut from = base.saturating_sub(4 * crate::facts::FactIndex::stream_span());
                while from > 0 && !text.is_char_boundary(from) {
                    from -= 1;
                }
                let slice = text.get(from..).unwrap_or("");
                for f in checker.check(slice, context) {
                    let start = from + f.start.min(slice.len());
                    let end = from + f.end.min(slice.len());
                    if start < base {
                        continue;
                    }
                    let label = f.status.as_label();
                    let f = Arc::new(f);
                    for &d in &facts {
                        out.push(Finding {
                            detector: d,
                            label,
                            segment,
                            start,
                            end,
                            fact: Some(Arc::clone(&f)),
                        });
                    }
                }
            }
        }
    }

    fn scan_lexicon(
        &self,
        ac: &AhoCorasick,
        meta: &[LexPattern],
        norm: &Normalized<'_>,
        segment: usize,
        used: &[bool],
        out: &mut Vec<Finding>,
    ) {
        for m in ac.find_overlapping_iter(&norm.text) {
            let Some(p) = meta.get(m.pattern().as_usize()) else {
                continue;
            };
            if !used.get(p.detector).copied().unwrap_or(false) {
                continue;
            }
            let after = norm.char_at(m.end());
            if after.is_some_and(is_mark) {
                continue;
            }
            if p.bound_start && norm.char_before(m.start()).is_some_and(is_word_char) {
                continue;
            }
            if p.bound_end && after.is_some_and(is_word_char) {
                continue;
            }
            let (start, end) = norm.span(m.start(), m.end());
            out.push(Finding {
                detector: p.detector,
                label: p.label,
                segment,
                start,
                end,
                fact: None,
            });
        }
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.list.iter().position(|d| d.id == id)
    }
}
