//! The loop's operations, shared by every surface (HTTP, CLI, simulator, a console): each is a
//! function over `&dyn Store`, `&dyn Clock` and an [`Actor`], never over a server's state.
//! Authorization and tenant scoping are decided here, once; errors are one [`ServiceError`]
//! that knows its HTTP status. The rules themselves live in the pure crates (`keel-loop`,
//! `keel-policy`, `keel-learn`, `keel-audit`).

pub mod actor;
pub mod alerts;
pub mod audit;
pub mod backtests;
pub mod error;
pub mod facts;
pub mod floor;
pub mod history;
pub mod keys;
pub mod kpis;
pub mod learn;
pub mod proposals;
pub mod review_view;
pub mod reviews;
pub mod rollouts;
pub mod store;
pub mod telemetry;

pub use actor::Actor;
pub use error::ServiceError;
pub use store::open_store;
