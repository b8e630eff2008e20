//! The Keel gateway: an axum app serving the OpenAI-compatible API, Keel's own `/api/`, and
//! operations endpoints. Handlers are thin: parse, call the service, map errors.
//!
//! Route modules register themselves with [`inventory`] ([`routes::RouteModule`]), so a later
//! module adds its routes (and their OpenAPI description) without editing a central list.

pub mod api;
pub mod app;
pub mod auth;
pub mod background;
pub mod chat;
pub mod config;
pub mod config_error;
pub mod error;
pub mod extract;
pub mod judge;
pub mod learn;
pub mod ops;
pub mod policy;
pub mod routes;
pub mod server;
pub mod sim;
pub mod sse;
pub mod telemetry;
pub mod upstream;

pub use app::{build_router, AppState};
pub use config::Config;
pub use error::GatewayError;
pub use server::{serve, ServeHandle};
