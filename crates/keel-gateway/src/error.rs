//! The gateway's error type: every failure maps to an HTTP status and OpenAI's error shape.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keel_store::StoreError;
use serde_json::json;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed (bad JSON, wrong type, missing field).
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    #[error("Request body too large: the limit is {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    Unauthorized(String),
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
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("upstream error: {0}")]
    Upstream(String),
    #[error("upstream timed out: {0}")]
    UpstreamTimeout(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] keel_audit::AuditError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    /// A 400 about `param`.
    pub fn bad_param(param: &str, message: impl Into<String>) -> Self {
        GatewayError::BadRequest {
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    /// A 400 not tied to one parameter.
    pub fn bad(message: impl Into<String>) -> Self {
        GatewayError::BadRequest {
            message: message.into(),
            param: None,
        }
    }

    /// The HTTP status.
    pub fn http_status(&self) -> u16 {
        match self {
            GatewayError::BadRequest { .. } => 400,
            GatewayError::PayloadTooLarge { .. } => 413,
            GatewayError::Unauthorized(_) => 401,
            GatewayError::Forbidden(_) => 403,
            GatewayError::NotFound(_) | GatewayError::ModelNotFound(_) => 404,
            GatewayError::Conflict(_) => 409,
            GatewayError::Unprocessable(_) => 422,
            GatewayError::MethodNotAllowed(_) => 405,
            GatewayError::UnsupportedMediaType(_) => 415,
            GatewayError::Upstream(_) => 502,
            GatewayError::UpstreamTimeout(_) => 504,
            GatewayError::Unavailable(_) => 503,
            GatewayError::Store(e) => e.http_status(),
            GatewayError::Audit(e) => e.http_status(),
            GatewayError::Config(_) | GatewayError::Internal(_) => 500,
        }
    }

    /// OpenAI's `error.type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            GatewayError::Unauthorized(_) => "invalid_request_error",
            GatewayError::Forbidden(_) => "permission_error",
            GatewayError::Upstream(_) | GatewayError::UpstreamTimeout(_) => "api_error",
            GatewayError::Audit(e) if e.http_status() < 500 => "invalid_request_error",
            GatewayError::Audit(_) => "server_error",
            GatewayError::Unavailable(_)
            | GatewayError::Store(_)
            | GatewayError::Config(_)
            | GatewayError::Internal(_) => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// OpenAI's `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::BadRequest { .. } => "invalid_request",
            GatewayError::PayloadTooLarge { .. } => "request_too_large",
            GatewayError::Unauthorized(_) => "invalid_api_key",
            GatewayError::Forbidden(_) => "insufficient_permissions",
            GatewayError::NotFound(_) => "not_found",
            GatewayError::Conflict(_) => "conflict",
            GatewayError::Unprocessable(_) => "unprocessable",
            GatewayError::ModelNotFound(_) => "model_not_found",
            GatewayError::MethodNotAllowed(_) => "method_not_allowed",
            GatewayError::UnsupportedMediaType(_) => "unsupported_media_type",
            GatewayError::Upstream(_) => "upstream_error",
            GatewayError::UpstreamTimeout(_) => "upstream_timeout",
            GatewayError::Unavailable(_) => "unavailable",
            GatewayError::Store(_) => "storage_error",
            GatewayError::Audit(e) if e.http_status() == 404 => "not_found",
            GatewayError::Audit(e) if e.http_status() < 500 => "invalid_request",
            GatewayError::Audit(_) => "ledger_error",
            GatewayError::Config(_) | GatewayError::Internal(_) => "internal_error",
        }
    }

    /// The JSON body `{"error":{"message","type","param","code"}}`.
    pub fn body(&self) -> serde_json::Value {
        let param = match self {
            GatewayError::BadRequest { param, .. } => param.clone(),
            _ => None,
        };
        let message = match self {
            // Never leak internals (paths, SQL) to clients; the log has the detail.
            GatewayError::Store(_) => "The request could not be recorded; try again.".to_string(),
            GatewayError::Config(_) | GatewayError::Internal(_) => {
                "Internal server error.".to_string()
            }
            other => other.to_string(),
        };
        json!({"error": {"message": message, "type": self.error_type(), "param": param, "code": self.code()}})
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        }
        let mut resp = (status, axum::Json(self.body())).into_response();
        if matches!(self, GatewayError::PayloadTooLarge { .. }) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

impl From<keel_service::ServiceError> for GatewayError {
    /// The service decided the status; the gateway only picks OpenAI's shape for it.
    fn from(e: keel_service::ServiceError) -> Self {
        use keel_service::ServiceError as S;
        match e {
            S::BadRequest { message, param } => GatewayError::BadRequest { message, param },
            S::Unauthorized(m) => GatewayError::Unauthorized(m),
            S::Forbidden(m) => GatewayError::Forbidden(m),
            S::NotFound(m) => GatewayError::NotFound(m),
            S::Conflict(m) => GatewayError::Conflict(m),
            S::Unprocessable(m) => GatewayError::Unprocessable(m),
            S::Store(e) => GatewayError::Store(e),
            S::Audit(e) => GatewayError::Audit(e),
            other => match other.http_status() {
                400 => GatewayError::bad(other.to_string()),
                404 => GatewayError::NotFound(other.to_string()),
                409 => GatewayError::Conflict(other.to_string()),
                422 => GatewayError::Unprocessable(other.to_string()),
                _ => GatewayError::Internal(other.to_string()),
            },
        }
    }
}
