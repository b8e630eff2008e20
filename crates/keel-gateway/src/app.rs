//! Application state and router assembly: registered modules plus shared middleware.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use keel_core::Clock;
use keel_store::{Durability, Store};

use crate::config::Config;
use crate::error::GatewayError;
use crate::telemetry;
use crate::upstream::Upstreams;

/// Shared state handed to every handler.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub upstreams: Arc<Upstreams>,
    /// True once migrations and start-up catch-up are done.
    pub ready: Arc<AtomicBool>,
    /// True once a graceful shutdown began.
    pub draining: Arc<AtomicBool>,
    /// Recently validated API keys.
    pub keys: Arc<crate::auth::KeyCache>,
    /// The active policies.
    pub policies: Arc<crate::policy::PolicyRuntime>,
    /// The learned monitor: the scorer the request path reads, the model the worker trains.
    pub learned: Arc<crate::learn::LearnedMonitor>,
    /// The judge worker's state (loaded on its first step; `[judge]` only).
    pub judge: Arc<tokio::sync::Mutex<Option<keel_loop::judge::WorkerState>>>,
    /// Signs ledger checkpoints.
    pub signer: Arc<keel_audit::LedgerSigner>,
    /// Serialises on-demand checkpoints (at most one a second); holds the last issue time.
    pub on_demand: Arc<tokio::sync::Mutex<i64>>,
    /// Simulated time, when `[sim] manual_clock = true`.
    pub sim: Option<Arc<crate::sim::SimControl>>,
}

impl AppState {
    /// Builds the state; `ready` starts false.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, GatewayError> {
        let upstreams = Upstreams::from_config(&config.upstreams)?;
        let signer = keel_audit::LedgerSigner::load_or_create(
            &config.data_dir,
            &config.ledger.key_name,
            &config.ledger.origin,
        )
        .map_err(|e| GatewayError::Config(e.to_string()))?;
        let learned = Arc::new(crate::learn::LearnedMonitor::default());
        Ok(Self {
            keys: Arc::new(crate::auth::KeyCache::default()),
            policies: Arc::new(crate::policy::PolicyRuntime::new(learned.clone())?),
            learned,
            judge: Arc::new(tokio::sync::Mutex::new(None)),
            signer: Arc::new(signer),
            on_demand: Arc::new(tokio::sync::Mutex::new(i64::MIN / 2)),
            config: Arc::new(config),
            store,
            clock,
            upstreams: Arc::new(upstreams),
            ready: Arc::new(AtomicBool::new(false)),
            draining: Arc::new(AtomicBool::new(false)),
            sim: None,
        })
    }

    /// A new id: random, or in sim mode derived from `material` (what the id names) so that a
    /// seeded run reproduces it whatever order concurrent requests arrive in.
    pub fn new_id(&self, prefix: &str, material: &[u8]) -> String {
        match &self.sim {
            Some(sim) => sim.id(prefix, material),
            None => keel_core::id::new_id(prefix, self.clock.as_ref()),
        }
    }

    /// The configured durability.
    pub fn durability(&self) -> Durability {
        self.config.storage.durability
    }

    /// Marks start-up as complete.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }
}

/// The full router: every registered module, a fallback 404, and the middleware stack.
pub fn build_router(state: AppState) -> Router {
    let mut router: Router<AppState> = Router::new();
    for m in crate::routes::modules() {
        router = router.merge((m.router)());
    }
    router
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), body_limit))
        .layer(middleware::from_fn(track))
        .with_state(state)
}

async fn fallback(req: Request) -> GatewayError {
    let path = req.uri().path().to_string();
    if path.starts_with("/v1/") {
        GatewayError::NotFound(format!(
            "Invalid URL ({} {}): this endpoint is not supported by Keel yet.",
            req.method(),
            path
        ))
    } else {
        GatewayError::NotFound(format!("No route for {} {}", req.method(), path))
    }
}

async fn method_not_allowed(req: Request) -> GatewayError {
    GatewayError::MethodNotAllowed(format!(
        "Method {} is not allowed for {}",
        req.method(),
        req.uri().path()
    ))
}

/// Rejects a declared body over the limit before reading it (413, `connection: close`).
async fn body_limit(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    let limit = state.config.server.max_body_bytes;
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
        match len.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(n) if n > limit as u64 => {
                return GatewayError::PayloadTooLarge { limit }.into_response()
            }
            Some(_) => {}
            None => return GatewayError::bad("invalid Content-Length header").into_response(),
        }
    }
    next.run(req).await
}

/// Counts requests and their latency by matched route and status.
async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    telemetry::http_request(
        &route,
        method.as_str(),
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}
