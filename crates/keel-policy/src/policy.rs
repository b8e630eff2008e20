//! A compiled policy: bundle → detectors, rules with compiled CEL conditions, inline tests; and
//! evaluation of one phase of a request or reply into a [`Decision`]. Split by concern:
//! [`compile`] (bundle → policy), [`evaluate`] (one phase → decision), [`edit`] (redactions,
//! rewrites, notices) and [`scope`] (where and when a rule applies).

mod compile;
mod edit;
mod evaluate;
mod scope;

pub(crate) use edit::apply_edits;
use scope::Scope;

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;

use crate::bundle::{PolicySpec, Severity};
use crate::decision::ActionKind;
use crate::detect::{Detectors, FactChecker};
use crate::expr::Condition;
use crate::input::Phase;
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

impl Policy {
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
}
