//! Configuration: one TOML file, nested keys overridable as `KEEL_SECTION__KEY`.
//!
//! Unknown keys are errors that name the key and the file. Only `KEEL_<SECTION>__<KEY>` (and the
//! top-level `KEEL_LISTEN`, `KEEL_DATA_DIR`) are config overrides; the variables the binary reads
//! itself ([`RESERVED_ENV`]: `KEEL_CONFIG`, `KEEL_LOG`, `KEEL_KEY`, `KEEL_API_KEY`,
//! `KEEL_SERVER`) and any other `KEEL_*` variable are never config keys.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use keel_store::Durability;
use serde::{Deserialize, Serialize};

use crate::error::GatewayError;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the gateway listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory for the database, keys and other state.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub storage: StorageConfig,
    /// Upstream model servers, tried in order for a model they serve.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub ledger: LedgerConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Which detector watches which metric, and the false-alarm controls.
    #[serde(default)]
    pub monitors: keel_loop::watch::MonitorConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// The review queue: audit sampling, leases, reviewers per item.
    #[serde(default)]
    pub review: ReviewConfig,
    /// Simulated time for the stress-test simulator (off in production).
    #[serde(default)]
    pub sim: SimConfig,
    /// The learned monitor: classifiers trained on completed reviews (`docs/learned.md`).
    #[serde(default)]
    pub learn: keel_learn::Config,
    /// The update pipeline: proposals (two-person rule) and canary guards.
    #[serde(default)]
    pub update: keel_loop::update::rollout::UpdateConfig,
    /// How canaries conclude: analysis steps (percentages, sample target, analysis interval,
    /// maximum duration per step), with per-tenant overrides (`docs/rollouts.md`).
    #[serde(default)]
    pub rollouts: keel_loop::update::rollout::RolloutsConfig,
    /// The judge: a second model auditing a sample of replies in the background (off unless
    /// set; `docs/judge.md`).
    #[serde(default)]
    pub judge: Option<keel_loop::judge::JudgeConfig>,
}

/// `[sim]`: with `manual_clock = true` the gateway runs on a manual clock that only
/// `POST /api/sim/clock` moves, its event-driven workers run only when `GET /api/sim/barrier`
/// drives them, and ids derive from what they name; both endpoints answer 404 otherwise.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    #[serde(default)]
    pub manual_clock: bool,
    /// Where the manual clock starts (Unix ms); default: the injected clock's time at start-up.
    #[serde(default)]
    pub start_ms: Option<i64>,
}

/// `[review]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewConfig {
    /// Share of interactions put in the review queue as an audit sample (0 to 1, e.g. 0.01),
    /// where no `[[review.sample]]` rule matches. Off (0) unless set.
    #[serde(default = "default_sample_rate")]
    pub sample_rate: f64,
    /// Per-segment sample rates; the first rule whose given fields all match wins.
    #[serde(default)]
    pub sample: Vec<SampleRule>,
    /// How long a reviewer's claim on an item lasts before the item returns to the queue.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: i64,
    /// Labels from different reviewers an item needs before it is done (agreement is measured
    /// when this is above 1).
    #[serde(default = "default_reviewers")]
    pub reviewers_per_item: u32,
}

impl Default for ReviewConfig {
    fn default() -> Self {
        Self {
            sample_rate: default_sample_rate(),
            sample: Vec::new(),
            lease_ms: default_lease_ms(),
            reviewers_per_item: default_reviewers(),
        }
    }
}

/// `[[review.sample]]`: a sample rate for a segment (omitted fields match anything).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleRule {
    #[serde(default)]
    pub tenant: Option<String>,
    /// `ja` matches `ja-JP`.
    #[serde(default)]
    pub locale: Option<String>,
    /// `JP` matches `JP-13`.
    #[serde(default)]
    pub jurisdiction: Option<String>,
    pub rate: f64,
}

fn prefix_match(want: &Option<String>, got: Option<&str>) -> bool {
    match want {
        None => true,
        Some(w) => got.is_some_and(|g| keel_core::tag_covers(w, g)),
    }
}

impl ReviewConfig {
    /// The audit sample rate for a segment.
    pub fn sample_rate_for(
        &self,
        tenant: &str,
        locale: Option<&str>,
        jurisdiction: Option<&str>,
    ) -> f64 {
        self.sample
            .iter()
            .find(|r| {
                r.tenant.as_deref().is_none_or(|t| t == tenant)
                    && prefix_match(&r.locale, locale)
                    && prefix_match(&r.jurisdiction, jurisdiction)
            })
            .map(|r| r.rate)
            .unwrap_or(self.sample_rate)
    }

    fn validate(&self) -> Result<(), GatewayError> {
        let ok = |r: f64| (0.0..=1.0).contains(&r);
        if !ok(self.sample_rate) || self.sample.iter().any(|r| !ok(r.rate)) {
            return Err(GatewayError::Config(
                "review: sample rates must be between 0 and 1".into(),
            ));
        }
        if self.lease_ms <= 0 {
            return Err(GatewayError::Config(
                "review.lease_ms must be positive".into(),
            ));
        }
        if !(1..=10).contains(&self.reviewers_per_item) {
            return Err(GatewayError::Config(
                "review.reviewers_per_item must be from 1 to 10".into(),
            ));
        }
        Ok(())
    }
}

fn default_sample_rate() -> f64 {
    0.0
}
fn default_lease_ms() -> i64 {
    15 * 60 * 1000
}
fn default_reviewers() -> u32 {
    1
}

/// `[alerts]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// POST each new alert as JSON here (retried with backoff; never blocks the monitor).
    #[serde(default)]
    pub webhook_url: Option<String>,
}

/// `[ledger]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// The checkpoint origin line (names this log).
    #[serde(default = "default_origin")]
    pub origin: String,
    /// The signing key's name in signature lines and the verifier key.
    #[serde(default = "default_key_name")]
    pub key_name: String,
    /// Issue a checkpoint after this many new events…
    #[serde(default = "default_cp_events")]
    pub checkpoint_every_events: u64,
    /// …or this often while the tree grows.
    #[serde(default = "default_cp_ms")]
    pub checkpoint_every_ms: i64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            origin: default_origin(),
            key_name: default_key_name(),
            checkpoint_every_events: default_cp_events(),
            checkpoint_every_ms: default_cp_ms(),
        }
    }
}

/// `[retention]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Erase interaction payloads older than this many days (proofs stay valid). Off if unset.
    #[serde(default)]
    pub payload_days: Option<u32>,
}

fn default_origin() -> String {
    "keel.local/ledger".to_string()
}
fn default_key_name() -> String {
    "keel".to_string()
}
fn default_cp_events() -> u64 {
    256
}
fn default_cp_ms() -> i64 {
    5_000
}

/// `[storage]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite://PATH`; created, with its directory, and migrated if absent.
    /// Defaults to `sqlite://<data_dir>/keel.db`.
    #[serde(default)]
    pub url: Option<String>,
    /// `durable` (commit + fsync before the response) or `async`.
    #[serde(default)]
    pub durability: Durability,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: None,
            durability: Durability::Durable,
        }
    }
}

/// `[[upstreams]]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    /// Base URL of an OpenAI-compatible API, ending before `/chat/completions`.
    pub base_url: String,
    /// Model names this upstream serves: exact names, `prefix*` patterns, or `*`.
    #[serde(default = "default_models")]
    pub models: Vec<String>,
    /// Name of the environment variable holding this upstream's API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Time limit for one attempt, until the response headers (and between stream chunks).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra attempts on connect errors, timeouts and 5xx before moving to the next upstream.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First retry delay; doubles each retry.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Largest accepted request body.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How long a graceful shutdown waits for in-flight requests.
    #[serde(default = "default_grace_ms")]
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            shutdown_grace_ms: default_grace_ms(),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json` (logs go to stderr either way).
    #[serde(default)]
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./keel-data")
}
fn default_models() -> Vec<String> {
    vec!["*".to_string()]
}
fn default_timeout_ms() -> u64 {
    60_000
}
fn default_retries() -> u32 {
    2
}
fn default_backoff_ms() -> u64 {
    50
}
fn default_max_body() -> usize {
    4 * 1024 * 1024
}
fn default_grace_ms() -> u64 {
    10_000
}

/// `KEEL_*` variables the binary (or a script around it) reads itself: never config keys.
pub const RESERVED_ENV: &[&str] = &[
    "KEEL_CONFIG",
    "KEEL_LOG",
    "KEEL_KEY",
    "KEEL_API_KEY",
    "KEEL_SERVER",
];

/// Top-level config keys that may be overridden without a section.
const TOP_LEVEL_ENV: &[&str] = &["LISTEN", "DATA_DIR"];

/// Whether the environment variable `name` (e.g. `KEEL_STORAGE__URL`) is a config override:
/// `KEEL_<SECTION>__<KEY>` or a top-level key, never a reserved variable.
pub fn is_config_env(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let Some(key) = upper.strip_prefix("KEEL_") else {
        return false;
    };
    if RESERVED_ENV.contains(&upper.as_str()) {
        return false;
    }
    let sectioned = key
        .split_once("__")
        .is_some_and(|(section, rest)| !section.is_empty() && !rest.is_empty());
    sectioned || TOP_LEVEL_ENV.contains(&key)
}

impl Config {
    /// Loads `path`, then applies `KEEL_SECTION__KEY` overrides from the environment.
    pub fn load(path: &Path) -> Result<Self, GatewayError> {
        if !path.is_file() {
            return Err(GatewayError::Config(format!(
                "config file {} does not exist or is not a file",
                path.display()
            )));
        }
        let figment = Figment::new().merge(Toml::file_exact(path)).merge(
            Env::prefixed("KEEL_")
                .filter(|key| is_config_env(&format!("KEEL_{key}")))
                .split("__"),
        );
        Self::from_figment(figment, &path.display().to_string())
    }

    /// Parses a config from TOML text (no environment overrides); for tests and tools.
    pub fn from_toml_str(text: &str) -> Result<Self, GatewayError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)), "<inline>")
    }

    fn from_figment(figment: Figment, origin: &str) -> Result<Self, GatewayError> {
        let config: Config = figment
            .extract()
            .map_err(|e| GatewayError::Config(crate::config_error::describe(origin, e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), GatewayError> {
        let mut names = std::collections::HashSet::new();
        for u in &self.upstreams {
            if !names.insert(u.name.as_str()) {
                return Err(GatewayError::Config(format!(
                    "upstreams: the name `{}` is used twice",
                    u.name
                )));
            }
            if !(u.base_url.starts_with("http://") || u.base_url.starts_with("https://")) {
                return Err(GatewayError::Config(format!(
                    "upstreams.{}.base_url: `{}` is not an http(s) URL",
                    u.name, u.base_url
                )));
            }
        }
        self.monitors
            .validate()
            .map_err(|e| GatewayError::Config(e.to_string()))?;
        self.review.validate()?;
        self.learn
            .validate()
            .map_err(|e| GatewayError::Config(format!("learn: {e}")))?;
        self.update.validate().map_err(GatewayError::Config)?;
        self.rollouts.validate().map_err(GatewayError::Config)?;
        if let Some(j) = &self.judge {
            j.validate().map_err(GatewayError::Config)?;
            if !self.upstreams.iter().any(|u| u.name == j.upstream) {
                let names: Vec<&str> = self.upstreams.iter().map(|u| u.name.as_str()).collect();
                let hint = crate::config_error::closest(&j.upstream, &names)
                    .map(|c| format!(" (did you mean {c}?)"))
                    .unwrap_or_else(|| format!(" (configured: {})", names.join(", ")));
                return Err(GatewayError::Config(format!(
                    "judge.upstream: `{}` is not a configured upstream{hint}",
                    j.upstream
                )));
            }
        }
        if self.server.max_body_bytes == 0 {
            return Err(GatewayError::Config(
                "server.max_body_bytes must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The effective config as TOML, with secrets masked (a password in `storage.url`), for
    /// `keel config check`.
    pub fn effective_toml(&self) -> Result<String, GatewayError> {
        let mut shown = self.clone();
        shown.storage.url = shown.storage.url.as_deref().map(mask_url_password);
        toml::to_string_pretty(&shown)
            .map_err(|e| GatewayError::Config(format!("cannot print the config: {e}")))
    }

    /// The storage URL, defaulting to `sqlite://<data_dir>/keel.db`.
    pub fn storage_url(&self) -> String {
        match &self.storage.url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("keel.db").display()),
        }
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`; other URLs unchanged.
fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{is_config_env, mask_url_password};

    #[test]
    fn passwords_in_storage_urls_are_masked() {
        for (url, expected) in [
            (
                "postgres://keel:s3cret@db:5432/keel",
                "postgres://keel:***@db:5432/keel",
            ),
            ("postgres://keel@db/keel", "postgres://keel@db/keel"),
            (
                "sqlite:///var/lib/keel/keel.db",
                "sqlite:///var/lib/keel/keel.db",
            ),
            ("postgres://u:p@ss@h/d", "postgres://u:***@h/d"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(mask_url_password(url), expected, "{url}");
        }
    }

    fn check(name: &str, expected: bool) {
        assert_eq!(is_config_env(name), expected, "{name}");
    }

    #[test]
    fn only_sectioned_and_top_level_keel_variables_are_config_keys() {
        for (name, expected) in [
            ("KEEL_STORAGE__URL", true),
            ("KEEL_STORAGE__DURABILITY", true),
            ("keel_server__max_body_bytes", true),
            ("KEEL_DATA_DIR", true),
            ("KEEL_LISTEN", true),
            ("KEEL_CONFIG", false),
            ("KEEL_LOG", false),
            ("KEEL_KEY", false),
            ("KEEL_API_KEY", false),
            ("KEEL_SERVER", false),
            ("KEEL_SOMETHING_ELSE", false),
            ("KEEL___URL", false),
            ("KEEL_STORAGE__", false),
            ("OTHER_STORAGE__URL", false),
        ] {
            check(name, expected);
        }
    }
}
