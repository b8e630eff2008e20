//! The continual loop, in modules named after its stages. `watch`: metric streams derived from
//! the event log, drift detectors per segment, and alert drafts.
//! `review`: feedback, handoffs, the review queue's rules, KPIs and
//! datasets. `update`: policy versions as events (publish, activate). `fact_events`: versions of
//! facts with effective dates as `FactSet` events, and bulk import (also reachable as `facts`).
//! `vocab`: violation vs intervention. `judge`: which replies a second model audits, its budget,
//! request and verdict.
//!
//! Pure: the caller feeds events and persists what comes back; time is the events' own time
//! (from the injected clock), so simulated time works. Never knows about HTTP or SQL.

pub mod error;
pub mod fact_events;
pub mod judge;
/// The module's former name, kept so callers' paths still resolve.
pub use fact_events as facts;
pub mod review;
pub mod update;
pub mod vocab;
pub mod watch;

pub use error::LoopError;
