//! Keel's integration tests: the real binary, the real gateway over HTTP, the mock upstream.
//!
//! One test binary (ripgrep style); each module covers one boundary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod alerts;
mod api;
mod bad_input;
mod chat;
mod claims;
mod cli;
mod demo_table;
mod durability;
mod facts;
mod faults;
mod fixture;
mod judge;
mod knobs;
mod learn;
mod ledger;
mod policy;
mod review;
mod scope;
mod sdk;
mod sim;
mod sim_mode;
mod support;
mod update;
mod watch;
