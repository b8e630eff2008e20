//! Text edits of fired rules: redaction and rewrite spans merged so that no redacted byte
//! survives, applied to a text range, and appended notices.

use super::{Action, Policy};
use crate::detect::Finding;
use crate::input::Phase;

impl Policy {
    /// Edits (span, replacement) that the fired redact and rewrite rules make to
    /// `text[from..]` of segment `segment`, merged so that overlapping edits become one.
    pub(crate) fn edits(
        &self,
        fired: &[usize],
        segment: usize,
        text: &str,
        from: usize,
        findings: &[Finding],
    ) -> Vec<Edit> {
        let mut raw: Vec<Edit> = Vec::new();
        for (order, &i) in fired.iter().enumerate() {
            let Some(rule) = self.rules.get(i) else {
                continue;
            };
            match &rule.action {
                Action::Redact {
                    targets,
                    replacement,
                } => {
                    for f in findings
                        .iter()
                        .filter(|f| f.segment == segment && f.start >= from)
                    {
                        let hit = targets
                            .iter()
                            .any(|(d, l)| *d == f.detector && l.is_none_or(|l| l == f.label));
                        if !hit {
                            continue;
                        }
                        let label = self
                            .detectors
                            .list
                            .get(f.detector)
                            .and_then(|d| d.labels.get(f.label as usize))
                            .map_or("", String::as_str);
                        raw.push(Edit {
                            start: f.start,
                            end: f.end,
                            replacement: replacement
                                .replace("{label}", label)
                                .replace("{LABEL}", &label.to_uppercase()),
                            redact: true,
                            order,
                        });
                    }
                }
                Action::Rewrite { re, to } => {
                    let mut pos = from;
                    while pos <= text.len() {
                        let Some(caps) = re.captures_at(text, pos) else {
                            break;
                        };
                        let Some(m) = caps.get(0) else { break };
                        if m.end() > m.start() {
                            let mut out = String::new();
                            caps.expand(to, &mut out);
                            raw.push(Edit {
                                start: m.start(),
                                end: m.end(),
                                replacement: out,
                                redact: false,
                                order,
                            });
                            pos = m.end();
                        } else {
                            pos = m.end()
                                + text
                                    .get(m.end()..)
                                    .and_then(|r| r.chars().next())
                                    .map_or(1, char::len_utf8);
                        }
                    }
                }
                Action::Correct { targets } => {
                    for f in findings
                        .iter()
                        .filter(|f| f.segment == segment && f.start >= from)
                    {
                        if !targets.contains(&f.detector) {
                            continue;
                        }
                        let Some(r) = f.fact.as_ref().and_then(|x| x.replacement.as_ref()) else {
                            continue;
                        };
                        raw.push(Edit {
                            start: f.start,
                            end: f.end,
                            replacement: r.clone(),
                            redact: false,
                            order,
                        });
                    }
                }
                _ => {}
            }
        }
        merge_edits(raw)
    }

    /// Raw candidate spans of every output rewrite pattern in `text[from..]` (fired or not): the
    /// stream guard must not cut through one.
    pub(crate) fn rewrite_spans(&self, text: &str, from: usize) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        for r in &self.rules {
            if let (Phase::Output, Action::Rewrite { re, .. }) = (r.phase, &r.action) {
                let mut pos = from;
                while pos <= text.len() {
                    let Some(m) = re.find_at(text, pos) else {
                        break;
                    };
                    spans.push((m.start(), m.end()));
                    pos = if m.end() > m.start() {
                        m.end()
                    } else {
                        m.end()
                            + text
                                .get(m.end()..)
                                .and_then(|r| r.chars().next())
                                .map_or(1, char::len_utf8)
                    };
                }
            }
        }
        spans
    }

    /// The notices fired append rules add, in rule order.
    pub(crate) fn notices(&self, fired: &[usize]) -> Vec<&str> {
        fired
            .iter()
            .filter_map(|&i| match self.rules.get(i).map(|r| &r.action) {
                Some(Action::Append { notice }) => Some(notice.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Appends a notice after a blank line.
pub(crate) fn append_notice(mut text: String, notice: &str) -> String {
    if !text.is_empty() {
        text.push_str("\n\n");
    }
    text.push_str(notice);
    text
}

/// A replacement of `start..end` (bytes of the original text).
#[derive(Debug, Clone)]
pub(crate) struct Edit {
    pub start: usize,
    pub end: usize,
    pub replacement: String,
    redact: bool,
    order: usize,
}

/// Merges overlapping edits into one covering their union. Its replacement is the earliest
/// rule's redaction if any redaction is involved (a redaction always wins over a rewrite, so no
/// redacted byte survives), else the earliest rule's rewrite.
fn merge_edits(mut raw: Vec<Edit>) -> Vec<Edit> {
    raw.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut out: Vec<Edit> = Vec::with_capacity(raw.len());
    for e in raw {
        if let Some(last) = out.last_mut() {
            if e.start < last.end {
                last.end = last.end.max(e.end);
                let better =
                    (e.redact && !last.redact) || (e.redact == last.redact && e.order < last.order);
                if better {
                    last.replacement = e.replacement;
                    last.redact = e.redact;
                    last.order = e.order;
                }
                continue;
            }
        }
        out.push(e);
    }
    out
}

/// `text[from..to]` with the edits inside it applied (edits are sorted and disjoint).
pub(crate) fn apply_edits(text: &str, from: usize, to: usize, edits: &[Edit]) -> String {
    let mut out = String::with_capacity(to.saturating_sub(from));
    let mut pos = from;
    for e in edits {
        if e.start < pos || e.end > to {
            continue;
        }
        out.push_str(text.get(pos..e.start).unwrap_or(""));
        out.push_str(&e.replacement);
        pos = e.end;
    }
    out.push_str(text.get(pos..to).unwrap_or(""));
    out
}
