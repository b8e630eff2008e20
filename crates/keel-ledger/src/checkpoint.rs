//! C2SP tlog checkpoints (`<origin>\n<size>\n<base64 root>\n`) signed as C2SP signed notes.
//!
//! A signed checkpoint looks like:
//!
//! ```text
//! keel.example/ledger
//! 42
//! 4T1RzlsnvA6t7PMNO5hzFxPhNXyJRcTPWsAcRwo4uCk=
//!
//! — keel.example/ledger Az3grlgAAAA...base64(key id || Ed25519 signature)...
//! ```
//!
//! The body has exactly three lines (extension lines are rejected: Keel never writes them), the
//! size is canonical decimal (no sign, no leading zeros) and the root is canonical padded base64 of
//! 32 bytes. Parsing requires the body to equal [`Checkpoint::body`] of the parsed value, so a
//! checkpoint has exactly one accepted text form.

use ed25519_dalek::SigningKey;

use crate::hash::{decode_hash, encode_hash, Hash};
use crate::note::{parse_note, sign_note, NoteSignature, VerifierKey};
use crate::LedgerError;

/// A tree head: origin (log name), size and root.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    /// Log identity, e.g. `keel.example/ledger`: non-empty, one line, no control characters.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// Root hash of the first `size` leaves.
    pub root: Hash,
}

/// Checks a checkpoint origin: non-empty, no newline or other control character.
pub fn validate_origin(origin: &str) -> Result<(), LedgerError> {
    if origin.is_empty() || origin.chars().any(char::is_control) {
        return Err(LedgerError::InvalidOrigin(origin.to_owned()));
    }
    Ok(())
}

impl Checkpoint {
    /// A checkpoint, validating the origin.
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Self, LedgerError> {
        validate_origin(origin)?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// The note body: `<origin>\n<size>\n<base64 root>\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            encode_hash(&self.root)
        )
    }

    /// Parses a checkpoint body (the note text, not the whole signed note).
    pub fn parse_body(body: &str) -> Result<Self, LedgerError> {
        let bad = |why: &str| LedgerError::MalformedCheckpoint(why.to_owned());
        let lines = body
            .strip_suffix('\n')
            .ok_or_else(|| bad("body must end with a newline"))?;
        let mut it = lines.split('\n');
        let (Some(origin), Some(size), Some(root)) = (it.next(), it.next(), it.next()) else {
            return Err(bad("expected origin, size and root lines"));
        };
        if it.next().is_some() {
            return Err(bad("extension lines are not supported"));
        }
        validate_origin(origin).map_err(|_| bad("invalid origin line"))?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("size is not a decimal number"));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| bad("size does not fit in 64 bits"))?;
        let root = decode_hash(root)
            .map_err(|e| LedgerError::MalformedCheckpoint(format!("root: {e}")))?;
        let checkpoint = Self {
            origin: origin.to_owned(),
            size,
            root,
        };
        if checkpoint.body() != body {
            return Err(bad("body is not in canonical form"));
        }
        Ok(checkpoint)
    }

    /// Signs the body and returns the full signed note (body, blank line, one signature line).
    pub fn sign(&self, key: &SigningKey, key_name: &str) -> Result<String, LedgerError> {
        validate_origin(&self.origin)?;
        sign_note(&self.body(), key, key_name)
    }
}

/// Parses a signed checkpoint without checking signatures: the checkpoint and its signature lines.
pub fn parse_signed_checkpoint(
    text: &str,
) -> Result<(Checkpoint, Vec<NoteSignature>), LedgerError> {
    let (body, signatures) = parse_note(text)?;
    Ok((Checkpoint::parse_body(body)?, signatures))
}

/// Verifies a signed checkpoint against a verifier key string
/// (`<name>+<hex key id>+<base64(0x01 || public key)>`) and returns the checkpoint.
pub fn verify_checkpoint(text: &str, verifier_key: &str) -> Result<Checkpoint, LedgerError> {
    verify_checkpoint_with(text, &VerifierKey::parse(verifier_key)?)
}

/// Like [`verify_checkpoint`] with an already parsed [`VerifierKey`].
pub fn verify_checkpoint_with(
    text: &str,
    verifier: &VerifierKey,
) -> Result<Checkpoint, LedgerError> {
    let body = verifier.open(text)?;
    Checkpoint::parse_body(body)
}
