//! [`FactIndex`]: every version of every fact indexed by subject term, the pure checker that
//! finds a subject with a value in the same sentence and compares it with the version in force
//! for the request's scope and time; [`SharedFacts`], the swappable holder the gateway shares.

use std::collections::BTreeMap;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use chrono::{DateTime, Utc};
use regex::Regex;

use super::format::{replacement, same, stated};
use super::model::*;
use super::reader::{is_sentence_end, read_values, value_regex};
use crate::detect::{FactChecker, FactFinding, FactStatus};
use crate::input::EvalContext;
use crate::normalize::{fold, is_word_char, Normalized};

struct Entry {
    key: String,
    value: FactValue,
    scope: FactScope,
    from: DateTime<Utc>,
    /// Explicit end, or the start of the next version of the same key and scope.
    until: Option<DateTime<Utc>>,
    specificity: u32,
}

impl Entry {
    fn in_force(&self, ctx: &EvalContext) -> bool {
        ctx.now >= self.from && self.until.is_none_or(|u| ctx.now < u) && self.scope.matches(ctx)
    }
}

/// The checker: every version of every fact, indexed by subject term. Implements
/// [`FactChecker`]; build it with [`FactIndex::new`] and hand it to
/// [`Policy::set_fact_checker`](crate::Policy::set_fact_checker).
pub struct FactIndex {
    entries: Vec<Entry>,
    /// Per folded term: the entries it names, and whether it needs word boundaries.
    terms: Vec<(Vec<usize>, bool, bool)>,
    ac: Option<AhoCorasick>,
    values: Regex,
}

impl std::fmt::Debug for FactIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactIndex")
            .field("versions", &self.entries.len())
            .field("terms", &self.terms.len())
            .finish()
    }
}

impl FactIndex {
    /// Builds the index over every version in `facts` (invalid versions are skipped: the
    /// registry validates before it records). For the same key, scope and `effective_from`,
    /// the last one given wins.
    pub fn new(facts: Vec<Fact>) -> Result<FactIndex, String> {
        let facts = dedup_versions(facts);
        let mut entries: Vec<Entry> = Vec::new();
        let mut folded_terms: Vec<String> = Vec::new();
        let mut term_ids: BTreeMap<String, usize> = BTreeMap::new();
        let mut terms: Vec<(Vec<usize>, bool, bool)> = Vec::new();
        for f in &facts {
            let (Ok(value), Ok((from, until))) = (f.typed_value(), f.interval()) else {
                continue;
            };
            let e = entries.len();
            entries.push(Entry {
                key: f.key.clone(),
                value,
                scope: f.scope.clone(),
                from,
                until,
                specificity: f.scope.specificity(),
            });
            for t in f.subjects.values().flatten() {
                let folded = fold(t.trim());
                if folded.is_empty() {
                    continue;
                }
                let id = *term_ids.entry(folded.clone()).or_insert_with(|| {
                    let first = folded.chars().next().is_some_and(is_word_char);
                    let last = folded.chars().next_back().is_some_and(is_word_char);
                    folded_terms.push(folded.clone());
                    terms.push((Vec::new(), first, last));
                    terms.len() - 1
                });
                if let Some(t) = terms.get_mut(id) {
                    if !t.0.contains(&e) {
                        t.0.push(e);
                    }
                }
            }
        }
        // An open-ended version ends where the next version of the same key and scope starts.
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by(|&a, &b| {
            let (x, y) = (&entries[a], &entries[b]);
            (&x.key, &x.scope, x.from).cmp(&(&y.key, &y.scope, y.from))
        });
        for w in order.windows(2) {
            let (a, b) = (w[0], w[1]);
            let (next_from, same) = {
                let (x, y) = (&entries[a], &entries[b]);
                (y.from, x.key == y.key && x.scope == y.scope)
            };
            if same {
                let x = &mut entries[a];
                x.until = Some(x.until.map_or(next_from, |u| u.min(next_from)));
            }
        }
        let ac = if folded_terms.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&folded_terms)
                    .map_err(|e| format!("fact subjects: {e}"))?,
            )
        };
        Ok(FactIndex {
            entries,
            terms,
            ac,
            values: value_regex()?,
        })
    }

    /// Number of fact versions indexed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The longest stretch of a stream the checker needs to see at once (characters): a value
    /// up to [`FACT_WINDOW`] bytes from a subject term, plus the term and the value.
    pub fn stream_span() -> usize {
        FACT_WINDOW + MAX_TERM_CHARS + MAX_VALUE_CHARS
    }

    /// The most specific entry in force for the context among `cands`.
    fn best(&self, cands: &[usize], ctx: &EvalContext) -> Option<&Entry> {
        let mut best: Option<&Entry> = None;
        for &i in cands {
            let Some(e) = self.entries.get(i) else {
                continue;
            };
            if !e.in_force(ctx) {
                continue;
            }
            let better = match best {
                None => true,
                Some(b) => (e.specificity, e.from) > (b.specificity, b.from),
            };
            if better {
                best = Some(e);
            }
        }
        best
    }
}

impl FactChecker for FactIndex {
    fn check(&self, text: &str, context: &EvalContext) -> Vec<FactFinding> {
        let mut out = Vec::new();
        let Some(ac) = &self.ac else { return out };
        let norm = Normalized::new(text, 0);
        let t = norm.text.as_str();
        let mut subjects = Vec::new();
        for m in ac.find_iter(t) {
            let Some((cands, bs, be)) = self.terms.get(m.pattern().as_usize()) else {
                continue;
            };
            if *bs && norm.char_before(m.start()).is_some_and(is_word_char) {
                continue;
            }
            if *be && norm.char_at(m.end()).is_some_and(is_word_char) {
                continue;
            }
            subjects.push((m.start(), m.end(), cands));
        }
        if subjects.is_empty() {
            return out;
        }
        let toks = read_values(&self.values, t);
        let mut claimed = vec![false; toks.len()];
        for (s, e, cands) in subjects {
            // The sentence around the subject, at most FACT_WINDOW bytes either side.
            let lo = s.saturating_sub(FACT_WINDOW);
            let hi = (e + FACT_WINDOW).min(t.len());
            let sent_start = t
                .get(..s)
                .map(|b| {
                    b.char_indices()
                        .rev()
                        .take_while(|(i, _)| *i >= lo)
                        .find(|(i, c)| is_sentence_end(t, *i, *c))
                        .map_or(lo, |(i, c)| i + c.len_utf8())
                })
                .unwrap_or(lo);
            let sent_end = t
                .get(e..)
                .map(|a| {
                    a.char_indices()
                        .take_while(|(i, _)| e + i < hi)
                        .find(|(i, c)| is_sentence_end(t, e + i, *c))
                        .map_or(hi, |(i, _)| e + i)
                })
                .unwrap_or(hi);
            let best = self.best(cands, context);
            let kind_of = best.map(|b| &b.value).or_else(|| {
                cands
                    .first()
                    .and_then(|&i| self.entries.get(i))
                    .map(|e| &e.value)
            });
            let Some(kind_of) = kind_of else { continue };
            // The nearest unclaimed value of the right type in the sentence; after the subject
            // first at equal distance.
            let mut pick: Option<(usize, usize, FactValue)> = None;
            for (k, tok) in toks.iter().enumerate() {
                if claimed.get(k).copied().unwrap_or(true)
                    || tok.start < sent_start
                    || tok.end > sent_end
                    || (tok.start < e && tok.end > s)
                {
                    continue;
                }
                let Some(v) = stated(tok, kind_of) else {
                    continue;
                };
                let dist = if tok.start >= e {
                    tok.start - e
                } else {
                    s.saturating_sub(tok.end) + 1
                };
                if pick.as_ref().is_none_or(|(_, d, _)| dist < *d) {
                    pick = Some((k, dist, v));
                }
            }
            let Some((k, _, stated_v)) = pick else {
                continue;
            };
            if let Some(c) = claimed.get_mut(k) {
                *c = true;
            }
            let Some(tok) = toks.get(k) else { continue };
            let (start, end) = norm.span(tok.rstart, tok.rend);
            let full_width = text
                .get(start..)
                .and_then(|r| r.chars().next())
                .is_some_and(|c| ('\u{FF10}'..='\u{FF19}').contains(&c));
            let finding = match best {
                None => FactFinding {
                    start,
                    end,
                    fact: cands
                        .first()
                        .and_then(|&i| self.entries.get(i))
                        .map(|e| e.key.clone())
                        .unwrap_or_default(),
                    status: FactStatus::Unknown,
                    stated: stated_v.to_string(),
                    current: None,
                    replacement: None,
                },
                Some(b) => {
                    let ok = same(&stated_v, &b.value);
                    FactFinding {
                        start,
                        end,
                        fact: b.key.clone(),
                        status: if ok {
                            FactStatus::Current
                        } else {
                            FactStatus::Stale
                        },
                        stated: stated_v.to_string(),
                        current: Some(b.value.to_string()),
                        replacement: if ok {
                            None
                        } else {
                            replacement(tok, &b.value, full_width)
                        },
                    }
                }
            };
            out.push(finding);
        }
        out.sort_by_key(|f| (f.start, f.end));
        out
    }
}

/// A shared, swappable checker: the gateway swaps the index when the registry changes while
/// compiled policies keep pointing at this holder.
#[derive(Default)]
pub struct SharedFacts {
    inner: std::sync::RwLock<Option<Arc<FactIndex>>>,
}

impl SharedFacts {
    pub fn new() -> Self {
        SharedFacts::default()
    }

    /// Replaces the index.
    pub fn set(&self, index: Arc<FactIndex>) {
        if let Ok(mut g) = self.inner.write() {
            *g = Some(index);
        }
    }

    /// The current index.
    pub fn get(&self) -> Option<Arc<FactIndex>> {
        self.inner.read().ok().and_then(|g| g.clone())
    }
}

impl FactChecker for SharedFacts {
    fn check(&self, text: &str, context: &EvalContext) -> Vec<FactFinding> {
        match self.get() {
            Some(ix) => ix.check(text, context),
            None => Vec::new(),
        }
    }
}
