//! Metric names the service's operations record (the gateway installs the exporter).

/// Counter: automatic rollout steps, labelled `state` (`promoted` | `rolled_back`).
pub const ROLLOUT_STEPS: &str = "keel_rollout_auto_steps_total";
/// Gauge: live canaries.
pub const CANARIES_LIVE: &str = "keel_rollout_canaries_live";
