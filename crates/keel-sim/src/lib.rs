//! Keel's stress-test simulator: value-change scenarios replayed through the real gateway.
//!
//! A scenario (TOML, `docs/scenarios.md`) describes traffic, a frozen model fixed at its
//! cut-off, a ground-truth timeline of changes (norms, laws, facts), users, reviewers and what
//! the operator is told. The runner starts the gateway in-process with a manual clock, serves the
//! frozen model on 127.0.0.1, sends simulated users' requests through the public HTTP API, grades
//! every reply against the truth at that simulated time, and writes `results.json` and
//! `report.html`. After setup (config, store, keys) it talks to the gateway only over HTTP.

pub mod error;
pub mod grade;
pub mod judge;
pub mod metrics;
pub mod model;
pub mod report;
pub mod rng;
pub mod runner;
pub mod scenario;
pub mod traffic;
pub mod update;

pub use error::SimError;
pub use scenario::Scenario;
