//! Compiling a bundle into a [`Policy`]: detectors, rules with their CEL conditions and
//! actions, the per-phase plans, the stream hold-back and the inline tests; every issue found is
//! reported with its file and line.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use super::scope::compile_scope;
use super::{phase_idx, Action, PhasePlan, Policy, Rule, HOLDBACK_SLACK, UNBOUNDED_HOLDBACK};
use crate::bundle::{
    line_of_id, line_of_section, ActionSpec, Bundle, PolicySpec, RuleSpec, POLICY_FILE,
};
use crate::detect::{DetectorKind, DetectorSource, Detectors, PII_KINDS};
use crate::error::PolicyError;
use crate::expr::{self};
use crate::input::Phase;
use crate::lint::LintIssue;

pub(super) fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
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
        // A layered bundle compiles as its merged layers; the version is the whole bundle's.
        if let Some(flat) = crate::layer::flatten(bundle)? {
            let mut p = Policy::compile(&flat).map_err(|e| {
                PolicyError::Invalid(crate::layer::relocate(bundle, e.issues().to_vec()))
            })?;
            p.warnings = crate::layer::relocate(bundle, std::mem::take(&mut p.warnings));
            p.version = bundle.version_id();
            return Ok(p);
        }
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
}

fn expr_max_len(pattern: &str) -> Option<usize> {
    crate::detect::regex_max_len(pattern)
}

pub(super) type RuleErrors = Vec<(&'static str, String)>;

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
