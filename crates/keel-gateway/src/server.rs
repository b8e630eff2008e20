//! Running the gateway: open the store, bind, serve, and shut down gracefully.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use keel_core::Clock;
use keel_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::{build_router, AppState};
use crate::config::Config;
use crate::error::GatewayError;

/// A running gateway.
pub struct ServeHandle {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), GatewayError>>,
}

impl ServeHandle {
    /// Begins a graceful shutdown (stop accepting, drain, flush) and waits for it.
    pub async fn shutdown(self) -> Result<(), GatewayError> {
        let _ = self.stop.send(true);
        self.wait().await
    }

    /// Waits until the server stops.
    pub async fn wait(self) -> Result<(), GatewayError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(GatewayError::Internal(format!("server task failed: {e}"))),
        }
    }

    /// A sender that triggers shutdown (for signal handlers).
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Opens the configured store (creating and migrating it if absent).
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, GatewayError> {
    Ok(keel_service::open_store(&config.storage_url(), config.storage.durability).await?)
}

/// Binds `config.listen` (or `listener` if given) and serves until [`ServeHandle::shutdown`].
pub async fn serve(
    config: Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    listener: Option<TcpListener>,
) -> Result<ServeHandle, GatewayError> {
    crate::telemetry::prometheus();
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind(config.listen).await.map_err(|e| {
            GatewayError::Config(format!("cannot listen on {}: {e}", config.listen))
        })?,
    };
    let addr = listener
        .local_addr()
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    let sim = config.sim.manual_clock.then(|| {
        let start = config.sim.start_ms.unwrap_or_else(|| clock.now_ms());
        Arc::new(crate::sim::SimControl::new(Arc::new(
            keel_core::ManualClock::new(start),
        )))
    });
    let clock: Arc<dyn Clock> = match &sim {
        Some(s) => s.clock.clone(),
        None => clock,
    };
    let mut state = AppState::new(config, store.clone(), clock)?;
    state.sim = sim;
    // Start-up: confirm the log is readable, load the active policies, sign a checkpoint.
    let last = state.store.last_seq().await?;
    state.policies.refresh(state.store.as_ref()).await?;
    state.policies.refresh_facts(state.store.as_ref()).await?;
    keel_audit::issue_checkpoint(state.store.as_ref(), &state.signer, state.clock.as_ref()).await?;
    // The learned monitor resumes from its saved state (and catches up) before serving.
    if let Err(e) = crate::learn::learn_step(&state).await {
        tracing::warn!(error = %e, "learned monitor did not catch up at start-up");
    }
    if state.config.judge.is_some() {
        crate::judge::resume(&state).await?;
    }
    tracing::info!(%addr, last_seq = last, "keel gateway listening");
    state.set_ready();
    let background = tokio::spawn(crate::background::run(state.clone()));
    // In sim mode the barrier drives the event-driven workers; otherwise timers do.
    let monitor = match &state.sim {
        Some(sim) => {
            *sim.monitor.lock().await = crate::background::load_monitor(&state).await;
            tokio::spawn(async {})
        }
        None => tokio::spawn(crate::background::monitor(state.clone())),
    };
    let learner = match &state.sim {
        Some(_) => tokio::spawn(async {}),
        None => tokio::spawn(crate::learn::worker(state.clone())),
    };
    let rollouts = match &state.sim {
        Some(_) => tokio::spawn(async {}),
        None => tokio::spawn(crate::background::rollouts(state.clone())),
    };
    let judge = match (&state.sim, &state.config.judge) {
        (None, Some(_)) => tokio::spawn(crate::judge::worker(state.clone())),
        _ => tokio::spawn(async {}),
    };
    let app = build_router(state.clone());
    let (stop, mut stopped) = watch::channel(false);
    let draining = state.draining.clone();
    let mut grace_rx = stop.subscribe();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
            draining.store(true, Ordering::SeqCst);
            tracing::info!("shutting down: draining in-flight requests");
        };
        // TCP_NODELAY: without it Nagle's algorithm holds the body behind the headers until
        // the client's delayed ACK, adding tens of milliseconds to every reply.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set");
            }
        });
        let server = axum::serve(listener, app).with_graceful_shutdown(shutdown);
        let result = std::future::IntoFuture::into_future(server);
        tokio::pin!(result);
        let served = tokio::select! {
            r = &mut result => r.map_err(|e| GatewayError::Internal(e.to_string())),
            _ = async {
                // Bound the drain: after the grace period, stop waiting for slow streams.
                let _ = grace_rx.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            } => Ok(()),
        };
        background.abort();
        monitor.abort();
        learner.abort();
        rollouts.abort();
        judge.abort();
        store.close().await;
        tracing::info!("store flushed; gateway stopped");
        served
    });
    Ok(ServeHandle {
        addr,
        state,
        stop,
        task,
    })
}
