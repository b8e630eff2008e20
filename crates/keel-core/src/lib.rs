//! The Keel vocabulary: events, ids, time, request context, scopes, roles and interaction
//! records.
//!
//! This crate does no IO and knows nothing about HTTP or SQL; every other crate speaks in its
//! types. Time only ever comes from a [`Clock`].

pub mod auth;
pub mod clock;
pub mod context;
pub mod error;
pub mod event;
pub mod id;
pub mod interaction;
pub mod scope;

pub use auth::{ApiKeyRecord, Role};
pub use clock::{Clock, ManualClock, SystemClock};
pub use context::RequestContext;
pub use error::CoreError;
pub use event::{EventKind, NewEvent, StoredEvent};
pub use interaction::{InteractionRecord, Outcome, TokenUsage};
pub use scope::{scopes_overlap, tag_covers, Scope, Segment};
