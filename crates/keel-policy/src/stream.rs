//! The streaming guard: runs output rules over a reply as it streams, holding back just enough
//! text that a redaction or rewrite never lets an original value through in any chunk (values
//! split across chunks included), and stopping cleanly when a block or escalate rule fires.
//!
//! Hold-back: at most [`Policy::stream_holdback`] characters — the longest match of any detector
//! or rewrite pattern the output rules use, plus 8 characters of look-ahead — and never the
//! middle of a candidate match. Text before that point can no longer change its findings, so it is
//! redacted/rewritten and released; findings there are kept for the `signals` of later rules.
//!
//! Equivalence: for rules whose condition, once true, stays true as the text grows (e.g.
//! `signals.pii.count > 0`, `signals.x.matched`), the concatenated output equals the one-shot
//! [`Policy::evaluate`] of the whole reply. A transform rule latches when it first fires; a
//! rule that fires only late in the stream cannot un-send what was released before it fired.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::decision::{ActionKind, Decision};
use crate::detect::Finding;
use crate::input::{EvalInput, Phase, TextSegment};
use crate::policy::{apply_edits, Action};
use crate::Policy;

/// The guard stopped the stream: answer with `message` and `finish_reason: "content_filter"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    pub action: ActionKind,
    pub rule: String,
    pub message: String,
}

/// What to send to the client after a push or at the finish.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GuardOutput {
    /// Processed text to release now (may be empty).
    pub emit: String,
    /// Set once, when a block or escalate rule fires; the stream ends after it.
    pub blocked: Option<Blocked>,
}

/// Guards one streamed choice. Create one per choice index; feed it every content delta.
pub struct StreamGuard {
    policy: Arc<Policy>,
    input: EvalInput,
    location: String,
    full: String,
    emitted: usize,
    final_findings: Vec<Finding>,
    latched: BTreeSet<usize>,
    last_findings: Option<Vec<Finding>>,
    last_fired: Vec<usize>,
    blocked: bool,
    done: bool,
    max_held: usize,
}

impl StreamGuard {
    /// `input` carries the request and the context (its `response` is ignored); `choice` is the
    /// choice index the guarded deltas belong to.
    pub fn new(policy: Arc<Policy>, input: EvalInput, choice: usize) -> Self {
        StreamGuard {
            policy,
            input,
            location: format!("choices[{choice}].message.content"),
            full: String::new(),
            emitted: 0,
            final_findings: Vec::new(),
            latched: BTreeSet::new(),
            last_findings: None,
            last_fired: Vec::new(),
            blocked: false,
            done: false,
            max_held: 0,
        }
    }

    /// Feeds a content delta; returns what may be released now.
    pub fn push(&mut self, delta: &str) -> GuardOutput {
        if self.blocked || self.done {
            return GuardOutput::default();
        }
        self.full.push_str(delta);
        self.step(false)
    }

    /// Flushes the held text, processed, plus any appended notice. Call before sending the
    /// finish and usage chunks.
    pub fn finish(&mut self) -> GuardOutput {
        if self.blocked || self.done {
            return GuardOutput::default();
        }
        let out = self.step(true);
        self.done = true;
        out
    }

    /// Bytes received but not yet released.
    pub fn held(&self) -> usize {
        self.full.len() - self.emitted
    }

    /// The most bytes held back at once so far.
    pub fn max_held(&self) -> usize {
        self.max_held
    }

    /// The whole reply received so far.
    pub fn received(&self) -> &str {
        &self.full
    }

    /// The decision to record: the one-shot evaluation of everything received.
    pub fn decision(&self) -> Decision {
        let mut input = self.input.clone();
        input.response = vec![TextSegment::new(
            self.location.clone(),
            Some("assistant"),
            self.full.clone(),
        )];
        self.policy.evaluate(Phase::Output, &input)
    }

    fn step(&mut self, last: bool) -> GuardOutput {
        let policy = Arc::clone(&self.policy);
        let base = self.emitted;
        let mut window = Vec::new();
        policy.scan(
            Phase::Output,
            &self.full,
            base,
            0,
            &self.input.context,
            &mut window,
        );
        let mut all = self.final_findings.clone();
        all.extend(window.iter().cloned());
        let fired = if !last
            && !policy.output_reads_response()
            && self.last_findings.as_ref() == Some(&all)
        {
            self.last_fired.clone()
        } else {
            let (fired, _) =
                policy.run_rules(Phase::Output, &self.input, &[self.full.as_str()], &all);
            self.last_findings = Some(all);
            self.last_fired = fired.clone();
            fired
        };
        if let Some(i) = policy.deciding(&fired) {
            if let Some(rule) = policy.rules.get(i) {
                if let Action::Block { message } | Action::Escalate { message, .. } = &rule.action {
                    self.blocked = true;
                    return GuardOutput {
                        emit: String::new(),
                        blocked: Some(Blocked {
                            action: rule.action.kind(),
                            rule: rule.id.clone(),
                            message: message.clone(),
                        }),
                    };
                }
            }
        }
        for &i in &fired {
            if matches!(
                policy.rules.get(i).map(|r| &r.action),
                Some(Action::Redact { .. } | Action::Rewrite { .. } | Action::Correct { .. })
            ) {
                self.latched.insert(i);
            }
        }
        let len = self.full.len();
        let mut p = if last {
            len
        } else {
            let h = policy.stream_holdback();
            let tail = self.full.get(base..).unwrap_or("");
            if h == 0 {
                len
            } else {
                tail.char_indices()
                    .rev()
                    .nth(h - 1)
                    .map_or(base, |(i, _)| base + i)
            }
        };
        if !last {
            let mut spans: Vec<(usize, usize)> = window.iter().map(|f| (f.start, f.end)).collect();
            spans.extend(policy.rewrite_spans(&self.full, base));
            loop {
                let mut moved = false;
                for &(s, e) in &spans {
                    if s < p && e > p {
                        p = s.max(base);
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        let latched: Vec<usize> = self.latched.iter().copied().collect();
        let edits = policy.edits(&latched, 0, &self.full, base, &window);
        let mut emit = apply_edits(&self.full, base, p, &edits);
        self.final_findings
            .extend(window.into_iter().filter(|f| f.start < p));
        self.emitted = p;
        self.max_held = self.max_held.max(len - p);
        if last {
            let notices = policy.notices(&fired);
            if !notices.is_empty() {
                // The notices go after the whole reply, as in the one-shot evaluation.
                for (k, n) in notices.iter().enumerate() {
                    if !(self.full.is_empty() && k == 0) {
                        emit.push_str("\n\n");
                    }
                    emit.push_str(n);
                }
            }
        }
        GuardOutput {
            emit,
            blocked: None,
        }
    }
}
