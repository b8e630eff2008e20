//! Rollouts: one state machine for canaries and activations (`activate V` is a rollout at
//! 100 %). The split is sticky: a request goes to the canary when a stable hash (FNV-1a, 64
//! bit) of the rollout id and its conversation id (else its interaction id) falls below the
//! percentage, so a conversation stays on one arm. Guard metrics are counted per arm from the
//! event log ([`Tracker`]) and judged with the always-valid interval of
//! [`sequential`](super::sequential); the tracker's state serialises so a worker resumes where
//! it stopped. Canaries conclude by analysis steps ([`plan`]): each step ends when its sample
//! target or maximum duration is reached and no guard shows harm, and moves the canary to the
//! next percentage until 100 % (promoted).
//!
//! States: `canary` → `promoted` | `rolled_back` | `superseded`; `active` (started at 100 %)
//! → `rolled_back` | `superseded`; `promoted` → `rolled_back`.

mod guards;
mod plan;
mod state;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
mod tracker;

pub use guards::*;
pub use plan::*;
pub use state::*;
pub use tracker::*;

/// The event kind of every rollout step.
pub const ROLLOUT_CHANGED: &str = keel_core::EventKind::ROLLOUT_CHANGED;

/// The arm a request was served by.
pub const CANARY: &str = "canary";
pub const BASELINE: &str = "baseline";

/// A stable bucket in `0..10_000` for `key` (a conversation or interaction id) in a rollout.
pub fn bucket(rollout_id: &str, key: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in rollout_id
        .as_bytes()
        .iter()
        .chain(&[0x1f])
        .chain(key.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Fold the high bits in: FNV's low bits alone are weak for short keys.
    ((h ^ (h >> 32)) % 10_000) as u32
}

/// Whether `key` is served the canary of a rollout at `percent`.
pub fn in_canary(rollout_id: &str, key: &str, percent: f64) -> bool {
    let threshold = (percent.clamp(0.0, 100.0) * 100.0).round() as u32;
    bucket(rollout_id, key) < threshold
}
