//! The one error type at the service boundary: every library error converts into it with
//! `From`, and it knows its HTTP status (and OpenAI's `code`) once for every surface.

use keel_audit::AuditError;
use keel_learn::LearnError;
use keel_loop::update::rollout::RolloutError;
use keel_loop::LoopError;
use keel_policy::PolicyError;
use keel_store::StoreError;

/// Everything a service operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The input is malformed; `param` names the offending field when there is one.
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    /// No credentials, or credentials that name no live key.
    #[error("{0}")]
    Unauthorized(String),
    /// The actor's role or tenant does not allow the operation.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The object's state does not allow this (a review item someone else holds).
    #[error("{0}")]
    Conflict(String),
    /// Well-formed but unusable (a candidate bundle that does not load).
    #[error("{0}")]
    Unprocessable(String),
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Core(#[from] keel_core::CoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Loop(#[from] LoopError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Learn(#[from] LearnError),
    /// A stored document this build cannot decode.
    #[error("stored data unreadable: {0}")]
    Decode(#[from] serde_json::Error),
    /// Stored data this build cannot read back (a corrupt bundle or worker state).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// A 400 about `param`.
    pub fn bad_param(param: &str, message: impl Into<String>) -> Self {
        ServiceError::BadRequest {
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    /// A 400 not tied to one parameter.
    pub fn bad(message: impl Into<String>) -> Self {
        ServiceError::BadRequest {
            message: message.into(),
            param: None,
        }
    }

    /// The HTTP status.
    pub fn http_status(&self) -> u16 {
        match self {
            ServiceError::BadRequest { .. } => 400,
            ServiceError::Unauthorized(_) => 401,
            ServiceError::Forbidden(_) => 403,
            ServiceError::NotFound(_) => 404,
            ServiceError::Conflict(_) => 409,
            ServiceError::Unprocessable(_) => 422,
            ServiceError::Store(e) => e.http_status(),
            ServiceError::Core(e) => e.http_status(),
            ServiceError::Audit(e) => e.http_status(),
            ServiceError::Loop(LoopError::Invalid(_) | LoopError::Config(_)) => 400,
            ServiceError::Loop(LoopError::Drift(e)) => e.http_status(),
            ServiceError::Loop(LoopError::State(_)) => 500,
            ServiceError::Policy(e) => e.http_status(),
            ServiceError::Learn(_) | ServiceError::Decode(_) | ServiceError::Internal(_) => 500,
        }
    }

    /// The parameter a 400 is about.
    pub fn param(&self) -> Option<&str> {
        match self {
            ServiceError::BadRequest { param, .. } => param.as_deref(),
            _ => None,
        }
    }
}

impl From<RolloutError> for ServiceError {
    fn from(e: RolloutError) -> Self {
        match e {
            RolloutError::Invalid(m) => ServiceError::bad(m),
            RolloutError::Conflict(m) => ServiceError::Conflict(m),
        }
    }
}

impl From<keel_loop::review::Invalid> for ServiceError {
    fn from(e: keel_loop::review::Invalid) -> Self {
        ServiceError::bad_param(e.field, e.to_string())
    }
}

/// A 422: well-formed but unusable.
pub(crate) fn unprocessable(msg: impl Into<String>) -> ServiceError {
    ServiceError::Unprocessable(msg.into())
}
