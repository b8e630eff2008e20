//! Upstream model servers: selection by model, bounded retries with backoff, then fallback.

use std::time::{Duration, Instant};

use crate::config::UpstreamConfig;
use crate::error::GatewayError;
use crate::telemetry;

/// One configured upstream.
#[derive(Debug)]
pub struct Upstream {
    pub config: UpstreamConfig,
    api_key: Option<String>,
    chat_url: String,
}

impl Upstream {
    /// Whether this upstream serves `model`.
    pub fn serves(&self, model: &str) -> bool {
        self.config.models.iter().any(|p| model_matches(p, model))
    }

    /// The per-attempt (and per-chunk) time limit.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms.max(1))
    }
}

/// `*` matches all, `prefix*` a prefix, anything else exactly.
pub fn model_matches(pattern: &str, model: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => pattern == model,
    }
}

/// All upstreams and the shared HTTP client.
#[derive(Debug)]
pub struct Upstreams {
    pub list: Vec<Upstream>,
    client: reqwest::Client,
}

/// A response obtained from an upstream (any status below 500 other than 429).
#[derive(Debug)]
pub struct UpstreamResponse {
    pub upstream: String,
    pub response: reqwest::Response,
    pub attempts: u32,
    pub timeout: Duration,
}

/// Every upstream failed.
#[derive(Debug)]
pub struct UpstreamFailure {
    pub error: GatewayError,
    pub attempts: u32,
    pub upstream: Option<String>,
}

impl Upstreams {
    /// Builds the client and reads each upstream's API key from its environment variable.
    pub fn from_config(configs: &[UpstreamConfig]) -> Result<Self, GatewayError> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| GatewayError::Config(format!("http client: {e}")))?;
        let list = configs
            .iter()
            .map(|c| Upstream {
                api_key: c
                    .api_key_env
                    .as_ref()
                    .and_then(|var| std::env::var(var).ok()),
                chat_url: format!("{}/chat/completions", c.base_url.trim_end_matches('/')),
                config: c.clone(),
            })
            .collect();
        Ok(Self { list, client })
    }

    /// Whether any upstream serves `model`.
    pub fn serves(&self, model: &str) -> bool {
        self.list.iter().any(|u| u.serves(model))
    }

    /// Model names listed explicitly in the config (patterns excluded).
    pub fn named_models(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for u in &self.list {
            for m in &u.config.models {
                if !m.ends_with('*') && !out.iter().any(|(n, _)| n == m) {
                    out.push((m.clone(), u.config.name.clone()));
                }
            }
        }
        out
    }

    /// Asks wildcard upstreams for their models (best effort, short timeout).
    pub async fn discovered_models(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for u in self
            .list
            .iter()
            .filter(|u| u.config.models.iter().any(|m| m.ends_with('*')))
        {
            let url = format!("{}/models", u.config.base_url.trim_end_matches('/'));
            let mut req = self.client.get(url).timeout(Duration::from_secs(2));
            if let Some(k) = &u.api_key {
                req = req.bearer_auth(k);
            }
            let Ok(resp) = req.send().await else { continue };
            let Ok(v) = resp.json::<serde_json::Value>().await else {
                continue;
            };
            for id in v["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["id"].as_str())
            {
                if u.serves(id) {
                    out.push((id.to_string(), u.config.name.clone()));
                }
            }
        }
        out
    }

    /// Sends `body` to the upstreams serving `model`: each gets `1 + retries` attempts with
    /// exponential backoff on connect errors, timeouts, 429 and 5xx, then the next one.
    pub async fn send(
        &self,
        model: &str,
        body: &serde_json::Value,
    ) -> Result<UpstreamResponse, UpstreamFailure> {
        self.send_routed(model, body, None).await
    }

    /// Like [`Upstreams::send`], but a policy `route` names the upstream to use (it must be
    /// configured; it need not list the model).
    pub async fn send_routed(
        &self,
        model: &str,
        body: &serde_json::Value,
        route: Option<&str>,
    ) -> Result<UpstreamResponse, UpstreamFailure> {
        let bytes = serde_json::to_vec(body).map_err(|e| UpstreamFailure {
            error: GatewayError::Internal(e.to_string()),
            attempts: 0,
            upstream: None,
        })?;
        let bytes = bytes::Bytes::from(bytes);
        let mut attempts = 0u32;
        let mut last: Option<(GatewayError, String)> = None;
        let candidates: Vec<&Upstream> = match route {
            Some(name) => self.list.iter().filter(|u| u.config.name == name).collect(),
            None => self.list.iter().filter(|u| u.serves(model)).collect(),
        };
        if route.is_some() && candidates.is_empty() {
            return Err(UpstreamFailure {
                error: GatewayError::Upstream(format!(
                    "the policy routes to upstream `{}`, which is not configured",
                    route.unwrap_or_default()
                )),
                attempts: 0,
                upstream: None,
            });
        }
        for u in candidates {
            for attempt in 0..=u.config.retries {
                if attempt > 0 {
                    let factor = 1u64 << (attempt - 1).min(16);
                    tokio::time::sleep(Duration::from_millis(
                        u.config.backoff_ms.saturating_mul(factor),
                    ))
                    .await;
                }
                attempts += 1;
                let started = Instant::now();
                let mut req = self
                    .client
                    .post(&u.chat_url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(bytes.clone());
                if let Some(k) = &u.api_key {
                    req = req.bearer_auth(k);
                }
                let result = tokio::time::timeout(u.timeout(), req.send()).await;
                let name = u.config.name.clone();
                match result {
                    Err(_) => {
                        telemetry::upstream_attempt(&name, "timeout", started.elapsed());
                        last = Some((
                            GatewayError::UpstreamTimeout(format!(
                                "upstream `{name}` did not answer within {} ms",
                                u.config.timeout_ms
                            )),
                            name,
                        ));
                    }
                    Ok(Err(e)) => {
                        let kind = if e.is_connect() {
                            "connect"
                        } else {
                            "transport"
                        };
                        telemetry::upstream_attempt(&name, kind, started.elapsed());
                        last = Some((
                            GatewayError::Upstream(format!(
                                "upstream `{name}` failed: {}",
                                error_chain(&e)
                            )),
                            name,
                        ));
                    }
                    Ok(Ok(resp)) => {
                        let status = resp.status();
                        if status.is_server_error() || status.as_u16() == 429 {
                            telemetry::upstream_attempt(&name, "status_5xx", started.elapsed());
                            last = Some((
                                GatewayError::Upstream(format!(
                                    "upstream `{name}` answered {}",
                                    status.as_u16()
                                )),
                                name,
                            ));
                            continue;
                        }
                        let result = if status.is_success() {
                            "ok"
                        } else {
                            "status_4xx"
                        };
                        telemetry::upstream_attempt(&name, result, started.elapsed());
                        return Ok(UpstreamResponse {
                            upstream: name,
                            response: resp,
                            attempts,
                            timeout: u.timeout(),
                        });
                    }
                }
            }
        }
        let (error, upstream) = match last {
            Some((e, n)) => (e, Some(n)),
            None => (GatewayError::ModelNotFound(model.to_string()), None),
        };
        Err(UpstreamFailure {
            error,
            attempts,
            upstream,
        })
    }
}

/// Why one direct attempt ([`Upstreams::post_json`]) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptError {
    /// No answer within the time limit.
    Timeout,
    /// A non-success status; `retry`: 429 or 5xx.
    Status { status: u16, retry: bool },
    /// Connect or transport failure, or a body that is not JSON.
    Transport(String),
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Timeout => write!(f, "timed out"),
            AttemptError::Status { status, .. } => write!(f, "answered status {status}"),
            AttemptError::Transport(e) => write!(f, "{e}"),
        }
    }
}

impl Upstreams {
    /// One attempt of a chat completion at the upstream named `name` (no retries, no fallback;
    /// callers such as the judge worker apply their own), the whole JSON answer read within
    /// `timeout`.
    pub async fn post_json(
        &self,
        name: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, AttemptError> {
        let Some(u) = self.list.iter().find(|u| u.config.name == name) else {
            return Err(AttemptError::Transport(format!(
                "upstream `{name}` is not configured"
            )));
        };
        let mut req = self.client.post(&u.chat_url).json(body);
        if let Some(k) = &u.api_key {
            req = req.bearer_auth(k);
        }
        let call = async {
            let resp = req
                .send()
                .await
                .map_err(|e| AttemptError::Transport(error_chain(&e)))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(AttemptError::Status {
                    status: status.as_u16(),
                    retry: status.is_server_error() || status.as_u16() == 429,
                });
            }
            resp.json::<serde_json::Value>().await.map_err(|e| {
                AttemptError::Transport(format!("unreadable body: {}", error_chain(&e)))
            })
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| AttemptError::Timeout)?
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::model_matches;

    #[test]
    fn patterns() {
        for (p, m, want) in [
            ("*", "gpt-4o", true),
            ("gpt-*", "gpt-4o", true),
            ("gpt-*", "llama3", false),
            ("llama3", "llama3", true),
            ("llama3", "llama3.1", false),
        ] {
            assert_eq!(model_matches(p, m), want, "{p} vs {m}");
        }
    }
}
