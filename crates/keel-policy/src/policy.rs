//! A compiled policy: bundle → detectors, rules with compiled CEL conditions, inline tests; and
//! evaluation of one phase of a request or reply into a [`Decision`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use regex::Regex;

use crate::bundle::{
    line_of_id, line_of_section, ActionSpec, Bundle, PolicySpec, RuleSpec, ScopeSpec, Severity,
    POLICY_FILE,
};
use crate::decision::{
    ActionKind, Decision, FactCheck, MatchedSpan, RuleError, RuleHit, TransformedText, MAX_SPANS,
};
use crate::detect::{DetectorKind, DetectorSource, Detectors, FactChecker, Finding, PII_KINDS};
use crate::error::PolicyError;
use crate::expr::{self, Activation, BoxVal, Condition};
use crate::input::{EvalContext, EvalInput, Phase, SegmentKind};
use crate::lint::LintIssue;
use crate::testing::CompiledTest;

/// Hold-back contribution of a detector with unbounded matches that no transform uses.
const UNBOUNDED_HOLDBACK: usize = 256;
/// Slack added to the longest match: the characters after a match that decide word
/// boundaries and greedy extensions.
const HOLDBACK_SLACK: usize = 8;

pub(crate) enum Action {
    Allow,
    Block {
        message: String,
    },
    Redact {
        targets: Vec<(usize, Option<u32>)>,
        replacement: String,
    },
    Rewrite {
        re: Regex,
        to: String,
    },
    Append {
        notice: String,
    },
    Escalate {
        message: String,
        severity: Severity,
    },
    Route {
        upstream: String,
    },
    Correct {
        targets: Vec<usize>,
    },
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Allow => ActionKind::Allow,
            Action::Block { .. } => ActionKind::Block,
            Action::Redact { .. } => ActionKind::Redact,
            Action::Rewrite { .. } => ActionKind::Rewrite,
            Action::Append { .. } => ActionKind::Append,
            Action::Escalate { .. } => ActionKind::Escalate,
            Action::Route { .. } => ActionKind::Route,
            Action::Correct { .. } => ActionKind::Correct,
        }
    }
}

/// A rule's scope: where (the one [`keel_core::Scope`]) and when.
struct Scope {
    segments: keel_core::Scope,
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl Scope {
    fn matches(&self, ctx: &EvalContext) -> bool {
        self.segments.covers(&ctx.segment())
            && !self.from.is_some_and(|f| ctx.now < f)
            && !self.until.is_some_and(|u| ctx.now >= u)
    }
}

pub(crate) struct Rule {
    pub id: String,
    pub category: String,
    pub severity: Severity,
    pub phase: Phase,
    scope: Scope,
    cond: Option<Condition>,
    pub action: Action,
}

/// What a phase needs computed.
#[derive(Default)]
struct PhasePlan {
    rules: Vec<usize>,
    detectors: Vec<bool>,
    request: bool,
    response: bool,
    /// A condition reads `signals.learned` (or all of `signals`).
    learned: bool,
}

/// A compiled, immutable policy. Cheap to share (`Arc<Policy>`); evaluation takes `&self`.
pub struct Policy {
    version: String,
    spec: PolicySpec,
    lexicon_terms: BTreeMap<String, Vec<String>>,
    env: Arc<cel::Env>,
    pub(crate) detectors: Detectors,
    pub(crate) rules: Vec<Rule>,
    plans: [PhasePlan; 2],
    holdback: usize,
    pub(crate) tests: Vec<CompiledTest>,
    warnings: Vec<crate::lint::LintIssue>,
    learned: Option<Arc<dyn crate::learned::LearnedScorer>>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.spec.name)
            .field("version", &self.version)
            .field("rules", &self.rules.len())
            .finish()
    }
}

fn phase_idx(p: Phase) -> usize {
    match p {
        Phase::Input => 0,
        Phase::Output => 1,
    }
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{s}` is not an RFC 3339 time: {e}"))
}

fn valid_category(c: &str) -> Result<(), String> {
    if let Some(n) = c.strip_prefix('S') {
        if let Ok(n) = n.parse::<u32>() {
            return if (1..=14).contains(&n) {
                Ok(())
            } else {
                Err(format!("`{c}`: Llama Guard categories are S1 to S14"))
            };
        }
    }
    let ok = !c.is_empty()
        && c.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "_-:.".contains(ch));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{c}`: use S1 to S14 or a custom lower-case name such as `custom:refunds`"
        ))
    }
}

impl Policy {
    /// Compiles a bundle. Nothing half-loads: any error-level issue fails the whole bundle,
    /// with every issue listed (see [`crate::lint()`]).
    pub fn compile(bundle: &Bundle) -> Result<Policy, PolicyError> {
        let mut issues: Vec<LintIssue> = Vec::new();
        let Some(yaml) = bundle.get(POLICY_FILE) else {
            return Err(PolicyError::Invalid(vec![LintIssue::error(
                POLICY_FILE,
                1,
                None,
                "missing-file",
                "the bundle has no policy.yaml",
            )]));
        };
        let spec: PolicySpec = match serde_norway::from_str(yaml) {
            Ok(s) => s,
            Err(e) => {
                let line = e.location().map_or(1, |l| l.line());
                return Err(PolicyError::Invalid(vec![LintIssue::error(
                    POLICY_FILE,
                    line,
                    None,
                    "yaml",
                    e.to_string(),
                )]));
            }
        };
        let err = |issues: &mut Vec<LintIssue>, line, id: Option<&str>, check, msg: String| {
            issues.push(LintIssue::error(POLICY_FILE, line, id, check, msg));
        };
        if spec.owner.trim().is_empty() {
            err(
                &mut issues,
                line_of_section(yaml, "owner"),
                None,
                "metadata",
                "`owner` must name an accountable person or team".into(),
            );
        }
        if spec.name.trim().is_empty() {
            err(
                &mut issues,
                line_of_section(yaml, "name"),
                None,
                "metadata",
                "`name` must not be empty".into(),
            );
        }

        // Detectors.
        let det_section = line_of_section(yaml, "detectors");
        let mut defs = Vec::new();
        let mut det_lines = Vec::new();
        let mut seen = BTreeSet::new();
        let mut lexicon_terms = BTreeMap::new();
        let mut referenced_files = BTreeSet::new();
        referenced_files.insert(POLICY_FILE.to_string());
        for d in &spec.detectors {
            let line = line_of_id(yaml, &d.id, det_section);
            det_lines.push(line);
            let id = Some(d.id.as_str());
            if !seen.insert(d.id.clone()) {
                err(
                    &mut issues,
                    line,
                    id,
                    "duplicate-id",
                    format!("detector `{}` is declared twice", d.id),
                );
            }
            if d.id.is_empty()
                || !d.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || d.id.starts_with(|c: char| c.is_ascii_digit())
            {
                err(&mut issues, line, id, "detector-id", format!("detector id `{}` must be an identifier (letters, digits, `_`) so CEL can read `signals.{}`", d.id, d.id));
            }
            if d.id == crate::learned::LEARNED_ID {
                err(&mut issues, line, id, "detector-id", format!("detector id `{}` is reserved for learned signals (`signals.learned.<label>`)", d.id));
            }
            let source = match d.kind.as_str() {
                "regex" => {
                    if d.patterns.is_empty() {
                        err(
                            &mut issues,
                            line,
                            id,
                            "detector",
                            "a regex detector needs `patterns`".into(),
                        );
                    }
                    DetectorSource::Regex(
                        d.patterns
                            .iter()
                            .map(|p| (p.name.clone(), p.pattern.clone()))
                            .collect(),
                    )
                }
                "lexicon" => {
                    let mut terms = d.terms.clone();
                    for f in &d.files {
                        referenced_files.insert(f.clone());
                        match bundle.get(f) {
                            Some(content) => {
                                let mut in_file = BTreeSet::new();
                                for (n, raw) in content.lines().enumerate() {
                                    let t = raw.trim();
                                    if t.is_empty() || t.starts_with('#') {
                                        continue;
                                    }
                                    if !in_file.insert(crate::normalize::fold(t)) {
                                        issues.push(LintIssue::warning(f, n + 1, id, "duplicate-term", format!("`{t}` is listed twice (after NFKC and case folding)")));
                                    }
                                    if t.chars().count() > 64 {
                                        issues.push(LintIssue::error(
                                            f,
                                            n + 1,
                                            id,
                                            "term-length",
                                            "terms are limited to 64 characters".to_string(),
                                        ));
                                    }
                                    terms.push(t.to_string());
                                }
                            }
                            None => err(
                                &mut issues,
                                line,
                                id,
                                "missing-file",
                                format!("lexicon file `{f}` is not in the bundle"),
                            ),
                        }
                    }
                    lexicon_terms.insert(d.id.clone(), terms.clone());
                    DetectorSource::Lexicon(terms)
                }
                "pii" => DetectorSource::Pii(d.recognizers.clone()),
                "facts" => DetectorSource::Facts,
                other => {
                    err(
                        &mut issues,
                        line,
                        id,
                        "detector",
                        format!("unknown detector kind `{other}` (regex, lexicon, pii, facts)"),
                    );
                    DetectorSource::Facts
                }
            };
            defs.push((d.id.clone(), source));
        }
        let detectors = match Detectors::compile(defs) {
            Ok(d) => Some(d),
            Err(errors) => {
                for (i, msg) in errors {
                    let line = det_lines.get(i).copied().unwrap_or(det_section);
                    let id = spec.detectors.get(i).map(|d| d.id.as_str());
                    err(&mut issues, line, id, "detector", msg);
                }
                None
            }
        };
        let mut detector_fields: HashMap<String, Vec<&'static str>> = HashMap::new();
        for d in &spec.detectors {
            let kind = match d.kind.as_str() {
                "regex" => DetectorKind::Regex,
                "lexicon" => DetectorKind::Lexicon,
                "pii" => DetectorKind::Pii,
                _ => DetectorKind::Facts,
            };
            let mut fields = kind.fields().to_vec();
            if kind == DetectorKind::Pii {
                fields.extend(PII_KINDS);
            }
            detector_fields.insert(d.id.clone(), fields);
        }
        detector_fields
            .entry(crate::learned::LEARNED_ID.to_string())
            .or_insert_with(|| crate::learned::LEARNED_FIELDS.to_vec());

        // Rules.
        let env = expr::env();
        let rule_section = line_of_section(yaml, "rules");
        let mut rules = Vec::new();
        let mut rule_ids = BTreeSet::new();
        let mut rule_lines = Vec::new();
        for r in &spec.rules {
            let line = line_of_id(yaml, &r.id, rule_section);
            rule_lines.push(line);
            if !rule_ids.insert(r.id.clone()) {
                err(
                    &mut issues,
                    line,
                    Some(&r.id),
                    "duplicate-id",
                    format!("rule `{}` is declared twice", r.id),
                );
            }
            match compile_rule(r, &env, &detector_fields, detectors.as_ref()) {
                Ok(rule) => rules.push(rule),
                Err(errs) => {
                    for (check, msg) in errs {
                        err(&mut issues, line, Some(&r.id), check, msg);
                    }
                }
            }
        }

        // Plans per phase, and the stream hold-back.
        let n_det = spec.detectors.len();
        let mut plans = [PhasePlan::default(), PhasePlan::default()];
        let mut holdback = 0usize;
        for (i, rule) in rules.iter().enumerate() {
            let plan = &mut plans[phase_idx(rule.phase)];
            plan.rules.push(i);
            if plan.detectors.is_empty() {
                plan.detectors = vec![false; n_det];
            }
            if let Some(c) = &rule.cond {
                plan.request |= c.uses.request;
                plan.response |= c.uses.response;
                if c.uses.signals_dynamic {
                    plan.detectors.iter_mut().for_each(|u| *u = true);
                }
                plan.learned |=
                    c.uses.signals_dynamic || c.uses.signals.contains(crate::learned::LEARNED_ID);
                for s in &c.uses.signals {
                    if let Some(d) = spec.detectors.iter().position(|x| &x.id == s) {
                        if let Some(u) = plan.detectors.get_mut(d) {
                            *u = true;
                        }
                    }
                }
            }
            if let Action::Redact { targets, .. } = &rule.action {
                for (d, _) in targets {
                    if let Some(u) = plan.detectors.get_mut(*d) {
                        *u = true;
                    }
                }
            }
            if let Action::Correct { targets } = &rule.action {
                for d in targets {
                    if let Some(u) = plan.detectors.get_mut(*d) {
                        *u = true;
                    }
                }
            }
        }
        if let Some(dets) = &detectors {
            let out = &plans[1];
            for (d, used) in out.detectors.iter().enumerate() {
                if !used {
                    continue;
                }
                let Some(info) = dets.list.get(d) else {
                    continue;
                };
                let transformed = rules.iter().any(|r| {
                    r.phase == Phase::Output
                        && matches!(&r.action, Action::Redact { targets, .. } if targets.iter().any(|(t, _)| *t == d))
                });
                match info.max_len {
                    Some(n) => holdback = holdback.max(n),
                    None if transformed => {
                        let line = det_lines.get(d).copied().unwrap_or(det_section);
                        err(&mut issues, line, Some(&info.id), "unbounded-pattern", "a pattern of this detector has no maximum length, so an output redaction could not hold back enough of a stream; bound its repetitions (e.g. `{1,64}` instead of `+`)".into());
                    }
                    None => holdback = holdback.max(UNBOUNDED_HOLDBACK),
                }
            }
            for (i, r) in rules.iter().enumerate() {
                if let (Phase::Output, Action::Rewrite { re, .. }) = (r.phase, &r.action) {
                    match expr_max_len(re.as_str()) {
                        Some(n) => holdback = holdback.max(n),
                        None => {
                            let line = rule_lines.get(i).copied().unwrap_or(rule_section);
                            err(&mut issues, line, Some(&r.id), "unbounded-pattern", "`rewrite.from` has no maximum length; bound its repetitions so streams can hold back enough".into());
                        }
                    }
                }
            }
        }
        holdback += HOLDBACK_SLACK;

        // Warnings: unused detectors, unreferenced files.
        for (d, spec_d) in spec.detectors.iter().enumerate() {
            let used = plans
                .iter()
                .any(|p| p.detectors.get(d).copied().unwrap_or(false));
            if !used {
                let line = det_lines.get(d).copied().unwrap_or(det_section);
                issues.push(LintIssue::warning(
                    POLICY_FILE,
                    line,
                    Some(&spec_d.id),
                    "unused-detector",
                    "no rule reads or redacts with this detector",
                ));
            }
        }
        for f in bundle.files().keys() {
            if !referenced_files.contains(f) && !f.ends_with(".md") {
                issues.push(LintIssue::warning(
                    f,
                    1,
                    None,
                    "unreferenced-file",
                    "no detector uses this file (it still counts in the version id)",
                ));
            }
        }

        // Tests.
        let tests = crate::testing::compile_tests(&spec, yaml, &mut issues);
        for (i, r) in spec.rules.iter().enumerate() {
            let covered = tests.iter().any(|t| {
                t.expect
                    .rules
                    .as_ref()
                    .is_some_and(|ids| ids.contains(&r.id))
            });
            if !covered {
                let line = rule_lines.get(i).copied().unwrap_or(rule_section);
                issues.push(LintIssue::warning(
                    POLICY_FILE,
                    line,
                    Some(&r.id),
                    "untested-rule",
                    "no inline test expects this rule to fire",
                ));
            }
        }

        let detectors = match detectors {
            Some(d) if !issues.iter().any(LintIssue::is_error) => d,
            _ => return Err(PolicyError::Invalid(issues)),
        };
        Ok(Policy {
            version: bundle.version_id(),
            spec,
            lexicon_terms,
            env,
            detectors,
            rules,
            plans,
            holdback,
            tests,
            warnings: issues,
            learned: None,
        })
    }

    /// Compiles a bundle given as in-memory files.
    pub fn from_files<P: AsRef<str>, C: AsRef<str>>(
        files: &[(P, C)],
    ) -> Result<Policy, PolicyError> {
        Policy::compile(&Bundle::from_files(files))
    }

    /// Reads and compiles the bundle in `dir`.
    pub fn load_dir(dir: impl AsRef<std::path::Path>) -> Result<Policy, PolicyError> {
        Policy::compile(&Bundle::load_dir(dir)?)
    }

    /// The default pack (embedded in the crate).
    pub fn default_pack() -> Result<Policy, PolicyError> {
        Policy::from_files(&crate::default_pack_files())
    }

    /// The version id: hex SHA-256 of the canonical bundle ([`Bundle::version_id`]).
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn owner(&self) -> &str {
        &self.spec.owner
    }

    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    /// Warning-level lint issues found while compiling.
    pub fn warnings(&self) -> &[LintIssue] {
        &self.warnings
    }

    /// Lexicon terms per lexicon detector (inline and from files), for diffs.
    pub fn lexicon_terms(&self) -> &BTreeMap<String, Vec<String>> {
        &self.lexicon_terms
    }

    /// How many characters of a streamed reply [`StreamGuard`](crate::StreamGuard) holds back at
    /// most: the longest match (in characters) of any detector or rewrite pattern the output
    /// rules use, plus 8 characters of look-ahead.
    pub fn stream_holdback(&self) -> usize {
        self.holdback
    }

    /// Whether an output rule reads `response` (then the stream guard re-evaluates on every
    /// delta rather than only when findings change).
    pub(crate) fn output_reads_response(&self) -> bool {
        self.plans[1].response || self.plans[1].learned
    }

    /// Plugs in the scorer behind `signals.learned.<label>` (none by default: every base
    /// label reads 0.0).
    pub fn set_learned_scorer(&mut self, scorer: Arc<dyn crate::learned::LearnedScorer>) {
        self.learned = Some(scorer);
    }

    /// Whether a rule of `phase` reads `signals.learned`.
    pub fn reads_learned(&self, phase: Phase) -> bool {
        self.plans[phase_idx(phase)].learned
    }

    /// Plugs in the facts checker that `kind: facts` detectors consult.
    pub fn set_fact_checker(&mut self, checker: Arc<dyn FactChecker>) {
        self.detectors.fact_checker = Some(checker);
    }

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
                self.detectors.scan(
                    &s.text,
                    0,
                    i,
                    &plan.detectors,
                    &input.context,
                    checker,
                    &mut findings,
                );
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
            self.detectors
                .scan(text, base, segment, &plan.detectors, ctx, None, out);
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

/// Appends a notice after a blank line.
pub(crate) fn append_notice(mut text: String, notice: &str) -> String {
    if !text.is_empty() {
        text.push_str("\n\n");
    }
    text.push_str(notice);
    text
}

fn expr_max_len(pattern: &str) -> Option<usize> {
    crate::detect::regex_max_len(pattern)
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

type RuleErrors = Vec<(&'static str, String)>;

fn compile_rule(
    r: &RuleSpec,
    env: &cel::Env,
    detector_fields: &HashMap<String, Vec<&'static str>>,
    detectors: Option<&Detectors>,
) -> Result<Rule, RuleErrors> {
    let mut errs: RuleErrors = Vec::new();
    if r.id.trim().is_empty() {
        errs.push(("rule-id", "a rule needs an `id`".into()));
    }
    if let Err(e) = valid_category(&r.category) {
        errs.push(("category", e));
    }
    let scope = compile_scope(&r.scope, &mut errs);
    let cond = match r.when.as_deref().map(str::trim) {
        None | Some("") | Some("true") => None,
        Some(src) => match expr::precheck(src) {
            Err(e) => {
                errs.push(("cel-bounds", e));
                None
            }
            Ok(()) => match expr::compile(env, src, detector_fields) {
                Ok(c) => Some(c),
                Err(e) => {
                    errs.push(("cel", e));
                    None
                }
            },
        },
    };
    let action = match &r.action {
        ActionSpec::Allow => Action::Allow,
        ActionSpec::Block { message } => Action::Block {
            message: message.clone(),
        },
        ActionSpec::Escalate { message, severity } => Action::Escalate {
            message: message.clone(),
            severity: *severity,
        },
        ActionSpec::Append { notice } => Action::Append {
            notice: notice.clone(),
        },
        ActionSpec::Route { upstream } => {
            if r.phase == Phase::Output {
                errs.push((
                    "action",
                    "`route` only makes sense on the input phase".into(),
                ));
            }
            Action::Route {
                upstream: upstream.clone(),
            }
        }
        ActionSpec::Rewrite { from, to } => {
            match regex::RegexBuilder::new(from).size_limit(1 << 20).build() {
                Ok(re) => Action::Rewrite { re, to: to.clone() },
                Err(e) => {
                    errs.push(("regex", format!("`rewrite.from`: {e}")));
                    Action::Allow
                }
            }
        }
        ActionSpec::Correct { detectors: ids } => {
            let mut out = Vec::new();
            if let Some(dets) = detectors {
                if ids.is_empty() {
                    out = (0..dets.list.len())
                        .filter(|&d| {
                            dets.list
                                .get(d)
                                .is_some_and(|i| i.kind == DetectorKind::Facts)
                        })
                        .collect();
                    if out.is_empty() {
                        errs.push((
                            "unknown-detector",
                            "`correct` needs a `kind: facts` detector".into(),
                        ));
                    }
                }
                for id in ids {
                    match dets.index_of(id) {
                        Some(d)
                            if dets
                                .list
                                .get(d)
                                .is_some_and(|i| i.kind == DetectorKind::Facts) =>
                        {
                            out.push(d)
                        }
                        Some(_) => errs.push((
                            "unknown-detector",
                            format!("`correct.detectors`: `{id}` is not a `kind: facts` detector"),
                        )),
                        None => errs.push((
                            "unknown-detector",
                            format!("`correct.detectors`: no detector `{id}`"),
                        )),
                    }
                }
            }
            Action::Correct { targets: out }
        }
        ActionSpec::Redact {
            detectors: targets,
            replacement,
        } => {
            let mut out = Vec::new();
            if targets.is_empty() {
                errs.push(("unknown-detector", "`redact.detectors` is empty".into()));
            }
            for t in targets {
                let (id, label) = match t.split_once('.') {
                    Some((a, b)) => (a, Some(b)),
                    None => (t.as_str(), None),
                };
                let Some(dets) = detectors else { continue };
                match dets.index_of(id) {
                    None => errs.push((
                        "unknown-detector",
                        format!("`redact.detectors`: no detector `{id}`"),
                    )),
                    Some(d) => {
                        let label = match label {
                            None => None,
                            Some(l) => match dets
                                .list
                                .get(d)
                                .and_then(|i| i.labels.iter().position(|x| x == l))
                            {
                                Some(p) => Some(p as u32),
                                None => {
                                    errs.push(("unknown-detector", format!("`redact.detectors`: detector `{id}` has no label `{l}`")));
                                    None
                                }
                            },
                        };
                        out.push((d, label));
                    }
                }
            }
            Action::Redact {
                targets: out,
                replacement: replacement.clone(),
            }
        }
    };
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Rule {
        id: r.id.clone(),
        category: r.category.clone(),
        severity: r.severity,
        phase: r.phase,
        scope,
        cond,
        action,
    })
}

fn compile_scope(s: &ScopeSpec, errs: &mut RuleErrors) -> Scope {
    let mut time = |v: &Option<String>| -> Option<DateTime<Utc>> {
        let v = v.as_deref()?;
        match parse_time(v) {
            Ok(t) => Some(t),
            Err(e) => {
                errs.push(("scope", e));
                None
            }
        }
    };
    let from = time(&s.effective_from);
    let until = time(&s.effective_until);
    if let (Some(f), Some(u)) = (from, until) {
        if f >= u {
            errs.push((
                "scope",
                "`effective_from` must be before `effective_until`".into(),
            ));
        }
    }
    Scope {
        segments: keel_core::Scope {
            tenants: s.tenants.clone(),
            locales: s.locales.clone(),
            jurisdictions: s.jurisdictions.clone(),
            ..keel_core::Scope::default()
        },
        from,
        until,
    }
}
