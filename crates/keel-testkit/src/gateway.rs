//! An in-process Keel gateway on 127.0.0.1:0 with its own temporary data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use keel_core::auth::mint_key;
use keel_core::{Clock, Role, SystemClock};
use keel_gateway::server::open_store;
use keel_gateway::{Config, ServeHandle};
use keel_store::Store;

/// Options for [`TestGateway::start`].
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// `(name, base_url)` of each upstream, in order; each serves every model, with fast
    /// retries so fault tests stay quick.
    pub upstreams: Vec<(String, String)>,
    /// Extra TOML appended to the generated config (e.g. `[server]` settings).
    pub extra_toml: String,
    /// `durable` or `async`.
    pub durability: &'static str,
    /// Per-attempt upstream timeout.
    pub timeout_ms: u64,
    pub retries: u32,
    /// Model patterns every upstream serves.
    pub models: Vec<String>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            extra_toml: String::new(),
            durability: "durable",
            timeout_ms: 2_000,
            retries: 1,
            models: vec!["*".into()],
        }
    }
}

impl GatewayOptions {
    /// One upstream named `mock` at `base_url`.
    pub fn with_upstream(base_url: &str) -> Self {
        Self {
            upstreams: vec![("mock".into(), base_url.into())],
            ..Self::default()
        }
    }

    /// The config file text for these options, storing data in `dir`.
    pub fn config_toml(&self, dir: &std::path::Path) -> String {
        let mut s = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{dir}\"\n[storage]\nurl = \"sqlite://{dir}/keel.db\"\ndurability = \"{d}\"\n",
            dir = dir.display(),
            d = self.durability
        );
        let models: Vec<String> = self.models.iter().map(|m| format!("{m:?}")).collect();
        for (name, url) in &self.upstreams {
            s.push_str(&format!(
                "[[upstreams]]\nname = \"{name}\"\nbase_url = \"{url}\"\nmodels = [{}]\ntimeout_ms = {}\nretries = {}\nbackoff_ms = 5\n",
                models.join(", "), self.timeout_ms, self.retries
            ));
        }
        s.push_str(&self.extra_toml);
        s
    }
}

/// A running gateway; dropped → the server task is aborted (use [`TestGateway::shutdown`] to
/// drain and flush).
pub struct TestGateway {
    pub addr: SocketAddr,
    pub config: Config,
    pub config_path: PathBuf,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    handle: Option<ServeHandle>,
    _dir: tempfile::TempDir,
}

impl TestGateway {
    /// Starts a gateway with `opts` on an ephemeral port.
    pub async fn start(opts: GatewayOptions) -> Self {
        Self::start_with_clock(opts, Arc::new(SystemClock)).await
    }

    /// Starts a gateway driven by `clock`.
    pub async fn start_with_clock(opts: GatewayOptions, clock: Arc<dyn Clock>) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("tempdir: {e}")));
        let config_path = dir.path().join("keel.toml");
        std::fs::write(&config_path, opts.config_toml(dir.path()))
            .unwrap_or_else(|e| fail(&format!("write config: {e}")));
        let config = Config::from_toml_str(&opts.config_toml(dir.path()))
            .unwrap_or_else(|e| fail(&format!("config: {e}")));
        let store = open_store(&config)
            .await
            .unwrap_or_else(|e| fail(&format!("store: {e}")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| fail(&format!("bind: {e}")));
        let handle =
            keel_gateway::serve(config.clone(), store.clone(), clock.clone(), Some(listener))
                .await
                .unwrap_or_else(|e| fail(&format!("serve: {e}")));
        Self {
            addr: handle.addr,
            config,
            config_path,
            store,
            clock,
            handle: Some(handle),
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Mints a key (appended through the store like the CLI does) and returns its token.
    pub async fn key(&self, tenant: &str, role: &str, name: Option<&str>) -> String {
        let role = Role::parse(role).unwrap_or_else(|e| fail(&e.to_string()));
        let minted = mint_key(
            tenant,
            role,
            name.map(str::to_string),
            "testkit",
            self.clock.as_ref(),
        )
        .unwrap_or_else(|e| fail(&e.to_string()));
        self.store
            .append(vec![minted.event])
            .await
            .unwrap_or_else(|e| fail(&format!("append key: {e}")));
        minted.token
    }

    /// Graceful shutdown, then a new gateway on the same data directory, config and clock
    /// (a restart: everything it serves must come back from the store).
    pub async fn restart(mut self) -> Self {
        if let Some(h) = self.handle.take() {
            let _ = h.shutdown().await;
        }
        let store = open_store(&self.config)
            .await
            .unwrap_or_else(|e| fail(&format!("store: {e}")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| fail(&format!("bind: {e}")));
        let handle = keel_gateway::serve(
            self.config.clone(),
            store.clone(),
            self.clock.clone(),
            Some(listener),
        )
        .await
        .unwrap_or_else(|e| fail(&format!("serve: {e}")));
        self.addr = handle.addr;
        self.store = store;
        self.handle = Some(handle);
        self
    }

    /// Graceful shutdown: stop accepting, drain, flush the store. Returns the data directory so
    /// the caller can inspect it (it is deleted when the returned value drops).
    pub async fn shutdown(mut self) -> tempfile::TempDir {
        if let Some(h) = self.handle.take() {
            let _ = h.shutdown().await;
        }
        self._dir
    }
}

#[allow(clippy::panic)]
fn fail(msg: &str) -> ! {
    panic!("test gateway: {msg}")
}
