//! RFC 6962 / RFC 9162 hashing (SHA-256 with 0x00 leaf and 0x01 node prefixes) and base64 codecs.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::LedgerError;

/// A SHA-256 output: leaf hashes, node hashes and roots.
pub type Hash = [u8; 32];

/// Length of a [`Hash`](type@Hash) in bytes.
pub const HASH_LEN: usize = 32;

/// Domain-separation prefix of leaf hashes (RFC 6962 §2.1).
pub const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of interior node hashes (RFC 6962 §2.1).
pub const NODE_PREFIX: u8 = 0x01;

/// Leaf hash: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(data);
    h.finalize().into()
}

/// Interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Plain SHA-256 (no prefix), for key ids and payload commitments.
pub(crate) fn sha256(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Standard padded base64 (RFC 4648 §4) of a hash.
pub fn encode_hash(hash: &Hash) -> String {
    STANDARD.encode(hash)
}

/// Decodes standard padded base64 (RFC 4648 §4) into a 32-byte hash.
///
/// Errors with [`LedgerError::InvalidHash`] on bad base64, non-canonical encodings or a length
/// other than 32 bytes.
pub fn decode_hash(text: &str) -> Result<Hash, LedgerError> {
    let bytes = decode_base64(text).map_err(LedgerError::InvalidHash)?;
    Hash::try_from(bytes.as_slice())
        .map_err(|_| LedgerError::InvalidHash(format!("expected 32 bytes, got {}", bytes.len())))
}

/// Standard padded base64 of arbitrary bytes.
pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decodes standard padded base64 (canonical only); the error is a human-readable reason.
pub(crate) fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(text)
        .map_err(|e| format!("bad base64: {e}"))
}
