//! The crate's single error type, [`LedgerError`], and its HTTP status mapping.

use thiserror::Error;

/// Everything that can go wrong in `keel-ledger`.
///
/// [`LedgerError::http_status`] maps each variant to the status an HTTP API should answer with:
///
/// | status | variants | meaning |
/// | --- | --- | --- |
/// | 400 | [`IndexOutOfRange`](LedgerError::IndexOutOfRange), [`InvalidRange`](LedgerError::InvalidRange), [`SizeBeyondTree`](LedgerError::SizeBeyondTree), [`InvalidHash`](LedgerError::InvalidHash), [`InvalidKeyName`](LedgerError::InvalidKeyName), [`InvalidKey`](LedgerError::InvalidKey), [`InvalidOrigin`](LedgerError::InvalidOrigin), [`MalformedNote`](LedgerError::MalformedNote), [`MalformedCheckpoint`](LedgerError::MalformedCheckpoint) | the caller sent something unusable |
/// | 404 | [`NotFound`](LedgerError::NotFound) | a store says the thing asked for does not exist |
/// | 422 | [`InvalidProof`](LedgerError::InvalidProof), [`RootMismatch`](LedgerError::RootMismatch), [`BadSignature`](LedgerError::BadSignature), [`NoMatchingSignature`](LedgerError::NoMatchingSignature) | well-formed input that fails verification |
/// | 500 | [`MissingNode`](LedgerError::MissingNode), [`Storage`](LedgerError::Storage) | our own storage is incomplete or failing |
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// A leaf index is not below the tree size it was asked against.
    #[error("index {index} is out of range for tree size {size}")]
    IndexOutOfRange {
        /// The leaf index asked for.
        index: u64,
        /// The tree size it was asked against.
        size: u64,
    },
    /// A pair of tree sizes is not usable (e.g. `from > to`, or `from == 0` for consistency).
    #[error("invalid tree size range {from}..{to}: {reason}")]
    InvalidRange {
        /// The first (older) size.
        from: u64,
        /// The second (newer) size.
        to: u64,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// A tree size larger than the tree's current size was asked for.
    #[error("tree size {requested} is beyond the current tree size {size}")]
    SizeBeyondTree {
        /// The size asked for.
        requested: u64,
        /// The tree's current size.
        size: u64,
    },
    /// A hash could not be decoded (bad base64, or not 32 bytes).
    #[error("invalid hash: {0}")]
    InvalidHash(String),
    /// A proof is structurally wrong or does not verify.
    #[error("invalid proof: {0}")]
    InvalidProof(&'static str),
    /// A proof is well-formed but the root it leads to is not the expected one.
    #[error("root mismatch: the proof does not lead to the expected root")]
    RootMismatch,
    /// A note key name is empty or contains a space or a `+`.
    #[error("invalid key name {0:?}: must be non-empty, without whitespace or '+'")]
    InvalidKeyName(String),
    /// A verifier key string, signer key string or key bytes could not be parsed.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A checkpoint origin is empty or contains a newline.
    #[error("invalid checkpoint origin {0:?}")]
    InvalidOrigin(String),
    /// A signed note is not in the C2SP signed-note format.
    #[error("malformed signed note: {0}")]
    MalformedNote(String),
    /// A note body is not a C2SP checkpoint.
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(String),
    /// A signature line from the expected key (same name and key id) does not verify.
    #[error("signature by key {0:?} does not verify")]
    BadSignature(String),
    /// No signature line was made by the expected key (name and key id).
    #[error("no signature by key {0:?} on the note")]
    NoMatchingSignature(String),
    /// A tree node that must exist for the requested size was not found by the [`crate::NodeReader`].
    #[error("tree node level {level} index {index} is missing from storage")]
    MissingNode {
        /// Node level (0 = leaves).
        level: u32,
        /// Node index within its level.
        index: u64,
    },
    /// Something asked for does not exist (for stores wrapping this crate).
    #[error("not found: {0}")]
    NotFound(String),
    /// A storage backend failed (for [`crate::NodeReader`] implementations to wrap their errors).
    #[error("storage error: {0}")]
    Storage(String),
}

impl LedgerError {
    /// The HTTP status an API should answer with for this error (see the table on the type).
    pub fn http_status(&self) -> u16 {
        match self {
            Self::IndexOutOfRange { .. }
            | Self::InvalidRange { .. }
            | Self::SizeBeyondTree { .. }
            | Self::InvalidHash(_)
            | Self::InvalidKeyName(_)
            | Self::InvalidKey(_)
            | Self::InvalidOrigin(_)
            | Self::MalformedNote(_)
            | Self::MalformedCheckpoint(_) => 400,
            Self::NotFound(_) => 404,
            Self::InvalidProof(_)
            | Self::RootMismatch
            | Self::BadSignature(_)
            | Self::NoMatchingSignature(_) => 422,
            Self::MissingNode { .. } | Self::Storage(_) => 500,
        }
    }
}
