//! Keel's policy layer: versioned bundles of YAML rules with CEL conditions and detectors,
//! evaluated on every request (input phase) and reply (output phase) into a [`Decision`] that
//! carries its explanation.
//!
//! Pure, synchronous Rust: no IO on the evaluation path (only [`Bundle::load_dir`] /
//! [`Policy::load_dir`] read files), no clock (the caller passes `now` in [`EvalContext`]), no
//! panics on any input. The bundle format is documented in `docs/policies.md` at the repository root.
//!
//! # Wiring
//!
//! ```
//! use std::sync::Arc;
//! use keel_policy::{EvalContext, EvalInput, Phase, Policy, StreamGuard};
//!
//! // Load: the embedded default pack, a directory, or in-memory files.
//! let policy = Arc::new(Policy::default_pack().map_err(|e| e.to_string())?);
//! // Policy::load_dir("policies/default")?;  Policy::from_files(&[("policy.yaml", yaml)])?;
//! let version: &str = policy.version(); // hex SHA-256 of the canonical bundle
//!
//! // Input phase: every text of the OpenAI request body.
//! let now = chrono::DateTime::parse_from_rfc3339("2025-06-01T00:00:00Z").map_err(|e| e.to_string())?.to_utc();
//! let ctx = EvalContext { jurisdiction: Some("JP".into()), ..EvalContext::new("acme", now) };
//! let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
//! let input = EvalInput::from_openai_request(&body, ctx);
//! let decision = policy.evaluate(Phase::Input, &input);
//! assert_eq!(decision.summary(), "allow"); // the `x-keel-decision` header
//!
//! // Output phase (JSON): add the reply, evaluate, use the transformed texts.
//! let reply = serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant",
//!     "content": "Write to jane@example.com"}}]});
//! let input = input.with_openai_response(&reply);
//! let out = policy.evaluate(Phase::Output, &input);
//! assert_eq!(out.summary(), "redact");
//! assert_eq!(out.text_for(0), Some("Write to [EMAIL]"));
//!
//! // Output phase (SSE): one guard per choice, fed every delta.
//! let mut guard = StreamGuard::new(Arc::clone(&policy), input, 0);
//! let mut sent = String::new();
//! for delta in ["Write to ja", "ne@exam", "ple.com"] {
//!     let o = guard.push(delta);
//!     assert!(o.blocked.is_none());
//!     sent.push_str(&o.emit);
//! }
//! sent.push_str(&guard.finish().emit); // before the finish and usage chunks
//! assert_eq!(sent, "Write to [EMAIL]");
//! # Ok::<(), String>(())
//! ```
//!
//! - Decisions: [`Decision::summary`] for `x-keel-decision`; [`Decision::is_blocking`] (block or
//!   escalate: answer with [`Decision::message`] and `finish_reason: "content_filter"`);
//!   [`Decision::upstream`] for route; [`Decision::text_for`] for redact/rewrite/append. The
//!   whole `Decision` is `Serialize` for the interaction event.
//! - Precedence: block > escalate > route > rewrite = redact > append > allow; ties go to the
//!   earlier rule. Transformations of all fired rules apply unless the decision blocks.
//! - Versions: [`Bundle::version_id`] / [`Policy::version`]. CLI verbs: [`lint()`] (`keel policy
//!   lint`), [`run_tests`] (`keel policy test`; non-zero exit when `!report.ok()`, the report's
//!   `Display` names each failing case), [`diff()`] (`keel policy diff`; `Display` renders it).
//! - Hot swap: hold the active policy as `Arc<Policy>` and swap the `Arc`; an in-flight request
//!   keeps the `Arc` it started with.
//! - Facts: `kind: facts` detectors ask a [`FactChecker`] set with [`Policy::set_fact_checker`]
//!   (none by default: they find nothing). [`FactIndex`] is the checker over versioned
//!   [`Fact`]s; [`SharedFacts`] lets a running server swap the index under compiled policies.
//!   `signals.<facts id>` has `stale`, `current`, `unknown` counts; the `correct` action
//!   replaces each stale value with the value in force; [`Decision::facts`] lists the checks.
//! - Learned signals: `signals.learned.<label>` reads a [`learned::LearnedScorer`] set with
//!   [`Policy::set_learned_scorer`] (the gateway plugs in the `keel-learn` model); base labels
//!   read 0.0 without a scorer or while a label is unavailable.

pub mod bundle;
pub mod decision;
pub mod detect;
pub mod diff;
pub mod error;
pub mod expr;
pub mod facts;
pub mod floor;
pub mod input;
pub mod layer;
pub mod learned;
pub mod lint;
mod normalize;
pub mod policy;
pub mod stream;
pub mod testing;
pub mod version;

pub use bundle::{Bundle, PolicySpec, Severity};
pub use decision::{ActionKind, Decision, MatchedSpan, RuleHit, SignalSummary, TransformedText};
pub use detect::{FactChecker, FactFinding, FactStatus, PII_KINDS};
pub use diff::{diff, BundleDiff};
pub use error::PolicyError;
pub use facts::{in_force_at, Fact, FactIndex, FactScope, FactScopeExt, FactValue, SharedFacts};
pub use input::{EvalContext, EvalInput, Phase, SegmentKind, TextSegment};
pub use lint::{lint, LintIssue, LintLevel};
pub use policy::Policy;
pub use stream::{Blocked, GuardOutput, StreamGuard};
pub use testing::{run_tests, CaseResult, TestReport};

/// The files of the default pack (`policies/default/` in the repository), embedded.
pub fn default_pack_files() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "policy.yaml",
            include_str!("../../../policies/default/policy.yaml"),
        ),
        (
            "lexicons/s1_violent_crimes.txt",
            include_str!("../../../policies/default/lexicons/s1_violent_crimes.txt"),
        ),
        (
            "lexicons/s2_non_violent_crimes.txt",
            include_str!("../../../policies/default/lexicons/s2_non_violent_crimes.txt"),
        ),
        (
            "lexicons/s3_sex_crimes.txt",
            include_str!("../../../policies/default/lexicons/s3_sex_crimes.txt"),
        ),
        (
            "lexicons/s4_child_exploitation.txt",
            include_str!("../../../policies/default/lexicons/s4_child_exploitation.txt"),
        ),
        (
            "lexicons/s5_defamation.txt",
            include_str!("../../../policies/default/lexicons/s5_defamation.txt"),
        ),
        (
            "lexicons/s6_financial.txt",
            include_str!("../../../policies/default/lexicons/s6_financial.txt"),
        ),
        (
            "lexicons/s6_medical.txt",
            include_str!("../../../policies/default/lexicons/s6_medical.txt"),
        ),
        (
            "lexicons/s6_legal.txt",
            include_str!("../../../policies/default/lexicons/s6_legal.txt"),
        ),
        (
            "lexicons/s8_ip.txt",
            include_str!("../../../policies/default/lexicons/s8_ip.txt"),
        ),
        (
            "lexicons/s9_weapons.txt",
            include_str!("../../../policies/default/lexicons/s9_weapons.txt"),
        ),
        (
            "lexicons/s10_hate.txt",
            include_str!("../../../policies/default/lexicons/s10_hate.txt"),
        ),
        (
            "lexicons/s11_self_harm.txt",
            include_str!("../../../policies/default/lexicons/s11_self_harm.txt"),
        ),
        (
            "lexicons/s12_sexual.txt",
            include_str!("../../../policies/default/lexicons/s12_sexual.txt"),
        ),
        (
            "lexicons/s13_elections.txt",
            include_str!("../../../policies/default/lexicons/s13_elections.txt"),
        ),
        (
            "lexicons/s14_code_abuse.txt",
            include_str!("../../../policies/default/lexicons/s14_code_abuse.txt"),
        ),
    ]
}
