//! Event leaves: the canonical, length-prefixed header encoding of an event and the salted payload
//! commitment, so a payload can be erased later while every proof stays valid.
//!
//! # Canonical encoding (version 1)
//!
//! [`EventLeaf::canonical_bytes`] is the concatenation of, in this order (all integers big-endian):
//!
//! | field | encoding |
//! | --- | --- |
//! | tag | the 14 ASCII bytes `keel-event/v1\n` ([`EVENT_LEAF_TAG`]) |
//! | `seq` | u64, 8 bytes |
//! | `ledger_index` | u64, 8 bytes |
//! | `at_unix_ms` | i64 two's complement, 8 bytes |
//! | `kind` | u64 byte length, then the UTF-8 bytes |
//! | `actor` | u64 byte length, then the UTF-8 bytes |
//! | `tenant` | u64 byte length, then the UTF-8 bytes |
//! | `payload_hash` | 32 raw bytes |
//!
//! Every field has a fixed size or a length prefix, so two different leaves never encode to the
//! same bytes. The Merkle leaf hash is `SHA-256(0x00 || canonical_bytes)` ([`EventLeaf::leaf_hash`]).
//!
//! # Payload commitment
//!
//! [`payload_commitment`] is `SHA-256("keel-payload/v1\n" || u64be(len(salt)) || salt || payload)`.
//! The salt (use [`SALT_LEN`] random bytes per event) is stored next to the payload and erased
//! with it; without the salt, a short or guessable erased payload cannot be confirmed by brute
//! force from the commitment.

use crate::hash::{leaf_hash, sha256, Hash};

/// Domain-separation tag at the start of every event leaf encoding.
pub const EVENT_LEAF_TAG: &[u8] = b"keel-event/v1\n";

/// Domain-separation tag of payload commitments.
pub const PAYLOAD_TAG: &[u8] = b"keel-payload/v1\n";

/// Recommended salt length in bytes for [`payload_commitment`] (callers generate it randomly).
pub const SALT_LEN: usize = 32;

/// Salted commitment to an event payload:
/// `SHA-256("keel-payload/v1\n" || u64be(len(salt)) || salt || payload)`.
pub fn payload_commitment(salt: &[u8], payload: &[u8]) -> Hash {
    let salt_len = (salt.len() as u64).to_be_bytes();
    sha256(&[PAYLOAD_TAG, &salt_len, salt, payload])
}

/// What the ledger commits to for one event: its canonical header plus the payload commitment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventLeaf {
    /// The event's sequence number in the event log.
    pub seq: u64,
    /// The leaf's position in the ledger (binds the event to its place in the tree).
    pub ledger_index: u64,
    /// Event time, milliseconds since the Unix epoch (UTC).
    pub at_unix_ms: i64,
    /// Event kind, e.g. `Interaction`, `PolicyPublished`, `PayloadErased`.
    pub kind: String,
    /// Who caused the event (user, API key, `system`).
    pub actor: String,
    /// Tenant the event belongs to.
    pub tenant: String,
    /// [`payload_commitment`] of the payload.
    pub payload_hash: Hash,
}

impl EventLeaf {
    /// The canonical byte encoding (see the module docs).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let strings = self.kind.len() + self.actor.len() + self.tenant.len();
        let mut out = Vec::with_capacity(EVENT_LEAF_TAG.len() + 24 + 24 + strings + 32);
        out.extend_from_slice(EVENT_LEAF_TAG);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.ledger_index.to_be_bytes());
        out.extend_from_slice(&self.at_unix_ms.to_be_bytes());
        for s in [&self.kind, &self.actor, &self.tenant] {
            out.extend_from_slice(&(s.len() as u64).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(&self.payload_hash);
        out
    }

    /// The Merkle leaf hash: `SHA-256(0x00 || canonical_bytes())`.
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.canonical_bytes())
    }
}
