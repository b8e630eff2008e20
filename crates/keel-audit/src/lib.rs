//! The ledger's operations, shared by the server and the CLI: the signing key, signed
//! checkpoints, full verification of the stored log, and payload erasure.
//!
//! The Merkle math is `keel-ledger` (pure); storage is `keel-store`; this crate composes them.
//! It never talks HTTP.

pub mod checkpoint;
pub mod erase;
pub mod error;
pub mod signer;
pub mod verify;

pub use checkpoint::{issue_checkpoint, CheckpointPolicy};
pub use erase::{erase_events, EraseTarget};
pub use error::AuditError;
pub use signer::LedgerSigner;
pub use verify::{verify_log, Finding, FindingKind, VerifyReport};
