//! Evaluating one phase of a request or reply: scan with the detectors, run the rules whose
//! scope and condition hold, and decide by the one precedence into a [`Decision`].

use std::collections::{BTreeMap, BTreeSet};

use super::edit::append_notice;
use super::{apply_edits, phase_idx, Action, PhasePlan, Policy};
use crate::decision::{
    ActionKind, Decision, FactCheck, MatchedSpan, RuleError, RuleHit, TransformedText, MAX_SPANS,
};
use crate::detect::{DetectorKind, FactChecker, Finding, ScanWith, PII_KINDS};
use crate::expr::{self, Activation, BoxVal};
use crate::input::{EvalContext, EvalInput, Phase, SegmentKind};

impl Policy {
    /// Evaluates the rules of `phase` over `input`. Pure: no IO, no clock (time is
    /// `input.context.now`), never panics; cost is linear in the text plus bounded CEL work.
    pub fn evaluate(&self, phase: Phase, input: &EvalInput) -> Decision {
        self.evaluate_with(phase, input, None)
    }

    /// [`Policy::evaluate`] with another facts checker than the one set (inline tests).
    pub(crate) fn evaluate_with(
        &self,
        phase: Phase,
        input: &EvalInput,
        checker: Option<&dyn FactChecker>,
    ) -> Decision {
        let segs = input.segments(phase);
        let mut findings = Vec::new();
        let plan = &self.plans[phase_idx(phase)];
        for (i, s) in segs.iter().enumerate() {
            if plan.detectors.iter().any(|u| *u) {
                let with = ScanWith {
                    used: &plan.detectors,
                    context: &input.context,
                    checker,
                };
                self.detectors.scan(&s.text, 0, i, with, &mut findings);
            }
        }
        let texts: Vec<&str> = segs.iter().map(|s| s.text.as_str()).collect();
        let (fired, errors) = self.run_rules(phase, input, &texts, &findings);
        self.decide(phase, input, &texts, &findings, &fired, errors)
    }

    pub(crate) fn scan(
        &self,
        phase: Phase,
        text: &str,
        base: usize,
        segment: usize,
        ctx: &EvalContext,
        out: &mut Vec<Finding>,
    ) {
        let plan = &self.plans[phase_idx(phase)];
        if plan.detectors.iter().any(|u| *u) {
            let with = ScanWith {
                used: &plan.detectors,
                context: ctx,
                checker: None,
            };
            self.detectors.scan(text, base, segment, with, out);
        }
    }

    /// The rules of `phase` that fire, in order, and the conditions that failed. `phase_texts`
    /// are the texts of the phase's segments (the stream guard passes its accumulated text).
    pub(crate) fn run_rules(
        &self,
        phase: Phase,
        input: &EvalInput,
        phase_texts: &[&str],
        findings: &[Finding],
    ) -> (Vec<usize>, Vec<RuleError>) {
        let plan = &self.plans[phase_idx(phase)];
        let mut fired = Vec::new();
        let mut errors = Vec::new();
        let in_scope: Vec<usize> = plan
            .rules
            .iter()
            .copied()
            .filter(|&i| {
                self.rules
                    .get(i)
                    .is_some_and(|r| r.scope.matches(&input.context))
            })
            .collect();
        if in_scope.is_empty() {
            return (fired, errors);
        }
        let needs_cel = in_scope
            .iter()
            .any(|&i| self.rules.get(i).is_some_and(|r| r.cond.is_some()));
        let ctx = if needs_cel {
            Some(expr::context(
                &self.env,
                self.activation(phase, plan, input, phase_texts, findings),
            ))
        } else {
            None
        };
        for i in in_scope {
            let Some(rule) = self.rules.get(i) else {
                continue;
            };
            let hit = match (&rule.cond, &ctx) {
                (None, _) => true,
                (Some(c), Some(ctx)) => match c.eval(ctx) {
                    Ok(b) => b,
                    Err(e) => {
                        errors.push(RuleError {
                            rule: rule.id.clone(),
                            message: e,
                        });
                        false
                    }
                },
                (Some(_), None) => false,
            };
            if hit {
                fired.push(i);
            }
        }
        (fired, errors)
    }

    fn activation<'v>(
        &'v self,
        phase: Phase,
        plan: &PhasePlan,
        input: &'v EvalInput,
        phase_texts: &[&'v str],
        findings: &[Finding],
    ) -> Activation<'v> {
        let mut vars: Vec<(&'static str, BoxVal<'v>)> = Vec::with_capacity(4);
        // signals
        let mut signals = Vec::new();
        for (d, info) in self.detectors.list.iter().enumerate() {
            if !plan.detectors.get(d).copied().unwrap_or(false) {
                continue;
            }
            let mut per_label: BTreeMap<u32, usize> = BTreeMap::new();
            let mut count = 0;
            for f in findings.iter().filter(|f| f.detector == d) {
                count += 1;
                *per_label.entry(f.label).or_default() += 1;
            }
            let label = |l: &u32| info.labels.get(*l as usize).map_or("", String::as_str);
            let names: Vec<BoxVal<'v>> =
                per_label.keys().map(|l| expr::str_val(label(l))).collect();
            let mut entries: Vec<(&'v str, BoxVal<'v>)> = vec![
                ("matched", expr::bool_val(count > 0)),
                ("count", expr::int_val(count)),
            ];
            match info.kind {
                DetectorKind::Lexicon => entries.push(("terms", expr::list_val(names))),
                DetectorKind::Regex => entries.push(("patterns", expr::list_val(names))),
                DetectorKind::Facts => {
                    entries.push(("findings", expr::list_val(names)));
                    for (k, name) in crate::detect::FactStatus::LABELS.iter().enumerate() {
                        let n = per_label.get(&(k as u32)).copied().unwrap_or(0);
                        entries.push((name, expr::int_val(n)));
                    }
                }
                DetectorKind::Pii => {
                    entries.push(("kinds", expr::list_val(names)));
                    for (k, name) in PII_KINDS.iter().enumerate() {
                        let n = per_label.get(&(k as u32)).copied().unwrap_or(0);
                        entries.push((name, expr::int_val(n)));
                    }
                }
            }
            signals.push((info.id.as_str(), expr::map_val(entries)));
        }
        if plan.learned {
            let scores = match &self.learned {
                Some(scorer) => match phase_texts {
                    [one] => scorer.scores(one),
                    many => scorer.scores(&many.join("\n")),
                },
                None => Vec::new(),
            };
            signals.push((
                crate::learned::LEARNED_ID,
                expr::double_map(crate::learned::entries(scores)),
            ));
        }
        vars.push(("signals", expr::map_val(signals)));
        let segments_val = |segs: &'v [crate::input::TextSegment], texts: Option<&[&'v str]>| {
            let items = segs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let text = texts
                        .and_then(|t| t.get(i).copied())
                        .unwrap_or(s.text.as_str());
                    expr::map_val(vec![
                        ("location", expr::str_val(&s.location)),
                        ("role", expr::str_val(s.role.as_deref().unwrap_or(""))),
                        ("text", expr::str_val(text)),
                    ])
                })
                .collect();
            expr::list_val(items)
        };
        let joined = |texts: &[&'v str]| -> BoxVal<'v> {
            match texts {
                [one] => expr::str_val(one),
                many => expr::owned_str(many.join("\n")),
            }
        };
        if plan.request {
            let texts: Vec<&'v str> = input.request.iter().map(|s| s.text.as_str()).collect();
            let last_user = input
                .request
                .iter()
                .rev()
                .find(|s| s.role.as_deref() == Some("user") && s.kind == SegmentKind::Content)
                .map_or("", |s| s.text.as_str());
            vars.push((
                "request",
                expr::map_val(vec![
                    ("model", expr::str_val(input.model.as_deref().unwrap_or(""))),
                    ("text", joined(&texts)),
                    ("last_user_text", expr::str_val(last_user)),
                    ("segments", segments_val(&input.request, None)),
                ]),
            ));
        }
        if plan.response {
            let (texts, segs): (Vec<&'v str>, Vec<BoxVal<'v>>) = match phase {
                Phase::Output => {
                    let segs = phase_texts
                        .iter()
                        .enumerate()
                        .map(|(i, t)| {
                            let s = input.response.get(i);
                            expr::map_val(vec![
                                (
                                    "location",
                                    expr::str_val(s.map_or("choices[0].message.content", |s| {
                                        s.location.as_str()
                                    })),
                                ),
                                ("role", expr::str_val("assistant")),
                                ("text", expr::str_val(t)),
                            ])
                        })
                        .collect();
                    (phase_texts.to_vec(), segs)
                }
                Phase::Input => (Vec::new(), Vec::new()),
            };
            vars.push((
                "response",
                expr::map_val(vec![
                    ("text", joined(&texts)),
                    ("segments", expr::list_val(segs)),
                ]),
            ));
        }
        let c = &input.context;
        let opt = |o: &'v Option<String>| expr::str_val(o.as_deref().unwrap_or(""));
        vars.push((
            "context",
            expr::map_val(vec![
                ("now", expr::time_val(c.now)),
                ("tenant", expr::str_val(&c.tenant)),
                ("locale", opt(&c.locale)),
                ("jurisdiction", opt(&c.jurisdiction)),
                ("topic", opt(&c.topic)),
                ("conversation_id", opt(&c.conversation_id)),
                ("user", opt(&c.user)),
            ]),
        ));
        Activation { vars }
    }

    /// The deciding rule among `fired`: strongest action, earliest rule on ties.
    pub(crate) fn deciding(&self, fired: &[usize]) -> Option<usize> {
        let mut best: Option<(u8, usize)> = None;
        for &i in fired {
            let Some(r) = self.rules.get(i) else { continue };
            let rank = r.action.kind().rank();
            if best.is_none_or(|(b, _)| rank > b) {
                best = Some((rank, i));
            }
        }
        best.map(|(_, i)| i)
    }
}

impl Policy {
    fn decide(
        &self,
        phase: Phase,
        input: &EvalInput,
        texts: &[&str],
        findings: &[Finding],
        fired: &[usize],
        errors: Vec<RuleError>,
    ) -> Decision {
        let segs = input.segments(phase);
        let deciding = self.deciding(fired);
        let deciding_rule = deciding.and_then(|i| self.rules.get(i));
        let action = deciding_rule.map_or(ActionKind::Allow, |r| r.action.kind());
        let mut decision = Decision {
            phase,
            policy_version: self.version.clone(),
            action,
            deciding_rule: deciding_rule.map(|r| r.id.clone()),
            rules: fired
                .iter()
                .filter_map(|&i| self.rules.get(i))
                .map(|r| RuleHit {
                    id: r.id.clone(),
                    category: r.category.clone(),
                    severity: r.severity,
                    action: r.action.kind(),
                })
                .collect(),
            message: None,
            escalation_severity: None,
            upstream: None,
            spans: Vec::new(),
            signals: BTreeMap::new(),
            transformed: Vec::new(),
            errors,
            facts: Vec::new(),
        };
        let correcting: Vec<&Vec<usize>> = fired
            .iter()
            .filter_map(|&i| match self.rules.get(i).map(|r| &r.action) {
                Some(Action::Correct { targets }) => Some(targets),
                _ => None,
            })
            .collect();
        let blocking = deciding_rule.is_some_and(|r| r.action.kind().is_blocking());
        let mut seen_facts = BTreeSet::new();
        for f in findings {
            let Some(ff) = &f.fact else { continue };
            if decision.facts.len() >= MAX_SPANS || !seen_facts.insert((f.segment, f.start, f.end))
            {
                continue;
            }
            decision.facts.push(FactCheck {
                segment: f.segment,
                location: segs
                    .get(f.segment)
                    .map(|s| s.location.clone())
                    .unwrap_or_default(),
                finding: (**ff).clone(),
                corrected: !blocking
                    && ff.replacement.is_some()
                    && correcting.iter().any(|t| t.contains(&f.detector)),
            });
        }
        for f in findings {
            let Some(info) = self.detectors.list.get(f.detector) else {
                continue;
            };
            let label = info
                .labels
                .get(f.label as usize)
                .cloned()
                .unwrap_or_default();
            let s = decision.signals.entry(info.id.clone()).or_default();
            s.count += 1;
            *s.labels.entry(label.clone()).or_default() += 1;
            if decision.spans.len() < MAX_SPANS {
                decision.spans.push(MatchedSpan {
                    segment: f.segment,
                    location: segs
                        .get(f.segment)
                        .map(|s| s.location.clone())
                        .unwrap_or_default(),
                    start: f.start,
                    end: f.end,
                    detector: info.id.clone(),
                    label,
                });
            }
        }
        match deciding_rule.map(|r| &r.action) {
            Some(Action::Block { message }) => {
                decision.message = Some(message.clone());
                return decision;
            }
            Some(Action::Escalate { message, severity }) => {
                decision.message = Some(message.clone());
                decision.escalation_severity = Some(*severity);
                return decision;
            }
            Some(Action::Route { upstream }) => decision.upstream = Some(upstream.clone()),
            _ => {}
        }
        let notices = self.notices(fired);
        let last_content = segs.iter().rposition(|s| s.kind == SegmentKind::Content);
        for (i, seg) in segs.iter().enumerate() {
            let text = texts.get(i).copied().unwrap_or("");
            let edits = self.edits(fired, i, text, 0, findings);
            let mut out = apply_edits(text, 0, text.len(), &edits);
            let gets_notice = seg.kind == SegmentKind::Content
                && (phase == Phase::Output || Some(i) == last_content);
            if gets_notice {
                for n in &notices {
                    out = append_notice(out, n);
                }
            }
            if out != text {
                decision.transformed.push(TransformedText {
                    segment: i,
                    location: seg.location.clone(),
                    text: out,
                });
            }
        }
        decision
    }
}
