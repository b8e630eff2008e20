//! Watch: turn events into metric observations per segment, run a drift detector per
//! (metric, segment), and draft `AlertRaised` events.
//!
//! False-alarm control, because many segments must not flood alerts:
//! 1. a segment's stream raises nothing before `min_samples` observations;
//! 2. ADWIN's `delta` (and Page-Hinkley's `threshold`, multiplied) is scaled by the number of
//!    segments active when the stream starts (a Bonferroni correction: with k segments the
//!    family-wise false-alarm rate stays near the configured one);
//! 3. alerts are deduplicated per (metric, segment) with a cooldown on event time.
//!
//! Low rates (feedback, learned scores, stale facts, judge verdicts) run per slice instead
//! ([`slices`]: (segment, answer cluster), (segment, topic) and two roll-ups, a rate CUSUM
//! against each slice's own baseline, Benjamini–Hochberg across slices, one alert per group
//! per cooldown).

pub mod metrics;
pub mod monitor;
pub mod slices;

pub use metrics::{observations, MetricSource, Observation, Segment};
pub use monitor::{AlertDraft, Monitor, MonitorConfig, MonitorRule};
pub use slices::{Level, SliceConfig, SliceKey};
