//! Named telemetry: every metric name the gateway emits and the Prometheus recorder.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter: HTTP requests by route, method and status.
pub const HTTP_REQUESTS: &str = "keel_http_requests_total";
/// Histogram: HTTP request duration in seconds by route.
pub const HTTP_DURATION: &str = "keel_http_request_duration_seconds";
/// Counter: upstream attempts by upstream and result (`ok`, `status_5xx`, `status_4xx`,
/// `connect`, `timeout`, `transport`).
pub const UPSTREAM_ATTEMPTS: &str = "keel_upstream_attempts_total";
/// Counter: upstream errors by upstream and kind.
pub const UPSTREAM_ERRORS: &str = "keel_upstream_errors_total";
/// Histogram: upstream latency until response headers, seconds.
pub const UPSTREAM_DURATION: &str = "keel_upstream_duration_seconds";
/// Counter: interactions recorded by outcome.
pub const INTERACTIONS: &str = "keel_interactions_total";
/// Histogram: seconds the response waited for the interaction to be committed.
pub const RECORD_WAIT: &str = "keel_record_wait_seconds";

/// Histogram: seconds spent scoring a reply with the learned monitor (recording path).
pub const LEARNED_SCORE_SECONDS: &str = "keel_learned_score_seconds";
/// Counter: reviews the learned monitor trained on.
pub const LEARNED_REVIEWS: &str = "keel_learned_reviews_total";

/// Counter: judge attempts by result (`ok`, `timeout`, `status`, `transport`, `unreadable`).
pub const JUDGE_REQUESTS: &str = "keel_judge_requests_total";
/// Counter: judge attempts that failed (every result but `ok`), by kind.
pub const JUDGE_FAILURES: &str = "keel_judge_failures_total";
/// Counter: judge attempts that timed out.
pub const JUDGE_TIMEOUTS: &str = "keel_judge_timeouts_total";
/// Counter: sampled replies not judged, by reason (`rate_limit`, `token_budget`, `stale`).
pub const JUDGE_SHED: &str = "keel_judge_shed_total";
/// Counter: verdicts recorded, by verdict (`ok`, `outdated`, `violation`, `unsure`).
pub const JUDGE_VERDICTS: &str = "keel_judge_verdicts_total";
/// Counter: tokens the judge spent (reported by the upstream, else estimated).
pub const JUDGE_TOKENS: &str = "keel_judge_tokens_total";

/// Gauge: alerts raised and not yet resolved.
pub const ALERTS_OPEN: &str = "keel_alerts_open";
/// Automatic rollout steps and live canaries: recorded by the service's rollout worker step.
pub use keel_service::telemetry::{CANARIES_LIVE, ROLLOUT_STEPS};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 30.0,
            ];
            let batch = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(keel_store::telemetry::STORE_BATCH_EVENTS.into()),
                        &batch,
                    )
                })
                .and_then(|b| b.install_recorder())
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()
        })
        .as_ref()
}

/// Records one finished HTTP request.
pub fn http_request(route: &str, method: &str, status: u16, took: Duration) {
    metrics::counter!(HTTP_REQUESTS, "route" => route.to_string(), "method" => method.to_string(), "status" => status.to_string()).increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route.to_string()).record(took.as_secs_f64());
}

/// Records one upstream attempt.
pub fn upstream_attempt(upstream: &str, result: &'static str, took: Duration) {
    metrics::counter!(UPSTREAM_ATTEMPTS, "upstream" => upstream.to_string(), "result" => result)
        .increment(1);
    if result != "ok" {
        metrics::counter!(UPSTREAM_ERRORS, "upstream" => upstream.to_string(), "kind" => result)
            .increment(1);
    }
    metrics::histogram!(UPSTREAM_DURATION, "upstream" => upstream.to_string())
        .record(took.as_secs_f64());
}

/// Records one interaction outcome and how long the response waited for its commit.
pub fn interaction_recorded(outcome: &'static str, wait: Option<Duration>) {
    metrics::counter!(INTERACTIONS, "outcome" => outcome).increment(1);
    if let Some(w) = wait {
        metrics::histogram!(RECORD_WAIT).record(w.as_secs_f64());
    }
}
