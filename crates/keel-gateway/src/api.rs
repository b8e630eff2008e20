//! Keel's own API under `/api/`: role-checked and tenant-scoped.

pub mod alerts;
pub mod facts;
pub mod feedback;
pub mod interactions;
pub mod kpis;
pub mod ledger;
pub mod openapi;
pub mod policies;
pub mod proposals;
pub mod reviews;
pub mod rollouts;
pub mod sim;
