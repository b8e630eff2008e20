//! The simulator's one error enum.

/// Everything that can go wrong in a simulation.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A scenario file that does not parse or fails validation; the message names the field.
    #[error("scenario {origin}: {message}")]
    Scenario { origin: String, message: String },
    /// A bad command-line value (strategy, sweep key, …).
    #[error("{0}")]
    Usage(String),
    /// The gateway answered something the runner did not expect.
    #[error("gateway: {0}")]
    Gateway(String),
    #[error("gateway setup: {0}")]
    Setup(#[from] keel_gateway::GatewayError),
    #[error("store: {0}")]
    Service(#[from] keel_service::ServiceError),
    #[error("store: {0}")]
    Store(#[from] keel_store::StoreError),
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl SimError {
    pub(crate) fn scenario(origin: &str, message: impl Into<String>) -> Self {
        SimError::Scenario {
            origin: origin.to_string(),
            message: message.into(),
        }
    }
}
