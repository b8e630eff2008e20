//! Lint issues: what is wrong with a bundle, naming the file, line, rule or detector id and the
//! check that failed. [`lint`] runs every check without stopping at the first.

use serde::{Deserialize, Serialize};

use crate::bundle::Bundle;

/// Whether an issue stops the bundle from loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LintLevel {
    Error,
    Warning,
}

/// One finding of the linter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LintIssue {
    pub level: LintLevel,
    /// Path of the file within the bundle (`policy.yaml`, `lexicons/s9.en.txt`, …).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The policy rule (or detector, or test case) concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
    /// The check that failed, e.g. `cel-syntax`, `cel-bounds`, `unknown-detector`.
    pub check: String,
    pub message: String,
}

impl LintIssue {
    pub(crate) fn error(
        file: &str,
        line: usize,
        rule_id: Option<&str>,
        check: &str,
        message: impl Into<String>,
    ) -> Self {
        LintIssue {
            level: LintLevel::Error,
            file: file.to_string(),
            line,
            rule_id: rule_id.map(str::to_string),
            check: check.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn warning(
        file: &str,
        line: usize,
        rule_id: Option<&str>,
        check: &str,
        message: impl Into<String>,
    ) -> Self {
        LintIssue {
            level: LintLevel::Warning,
            ..LintIssue::error(file, line, rule_id, check, message)
        }
    }

    pub fn is_error(&self) -> bool {
        self.level == LintLevel::Error
    }
}

impl std::fmt::Display for LintIssue {
    /// `policy.yaml:12: error[cel-syntax] rule s9-block: message`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            LintLevel::Error => "error",
            LintLevel::Warning => "warning",
        };
        write!(f, "{}:{}: {level}[{}]", self.file, self.line, self.check)?;
        if let Some(id) = &self.rule_id {
            write!(f, " {id}:")?;
        }
        write!(f, " {}", self.message)
    }
}

/// Every issue of a bundle, errors and warnings, sorted by file and line. The bundle loads
/// ([`Policy::compile`](crate::Policy::compile)) exactly when no issue is an error.
pub fn lint(bundle: &Bundle) -> Vec<LintIssue> {
    let mut issues = match crate::Policy::compile(bundle) {
        Ok(p) => p.warnings().to_vec(),
        Err(e) => e.issues().to_vec(),
    };
    issues.sort_by(|a, b| {
        (a.file.as_str(), a.line, a.check.as_str()).cmp(&(
            b.file.as_str(),
            b.line,
            b.check.as_str(),
        ))
    });
    issues
}
