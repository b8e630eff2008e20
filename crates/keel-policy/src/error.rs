//! The crate's one error type, [`PolicyError`], and the HTTP status each variant maps to.

use crate::lint::LintIssue;

/// Everything that can go wrong while loading or compiling a policy bundle.
///
/// Evaluation itself never fails: a rule whose condition errors at run time does not fire and the
/// error is recorded in the [`Decision`](crate::Decision).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The bundle does not compile; every issue names the file, line and rule or detector id.
    #[error("invalid policy bundle: {}", render_issues(.0))]
    Invalid(Vec<LintIssue>),
    /// The bundle directory or one of its files could not be read.
    #[error("cannot read policy bundle at {path}: {message}")]
    Io { path: String, message: String },
    /// No version has this id or prefix.
    #[error("{0}")]
    UnknownVersion(String),
    /// A version id that is ambiguous or too short.
    #[error("{0}")]
    Version(String),
}

fn render_issues(issues: &[LintIssue]) -> String {
    let errors: Vec<String> = issues
        .iter()
        .filter(|i| i.is_error())
        .map(|i| i.to_string())
        .collect();
    errors.join("; ")
}

impl PolicyError {
    /// The HTTP status this error should be reported with: a bad bundle is the caller's fault
    /// (422), an unreadable directory is the server's (500).
    pub fn http_status(&self) -> u16 {
        match self {
            PolicyError::Invalid(_) => 422,
            PolicyError::Io { .. } => 500,
            PolicyError::UnknownVersion(_) => 404,
            PolicyError::Version(_) => 400,
        }
    }

    /// The lint issues of an invalid bundle (empty for IO errors).
    pub fn issues(&self) -> &[LintIssue] {
        match self {
            PolicyError::Invalid(issues) => issues,
            _ => &[],
        }
    }
}
