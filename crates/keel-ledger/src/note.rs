//! C2SP signed notes with Ed25519 keys: key names and ids, verifier/signer key strings, signing,
//! parsing and verification.
//!
//! A signed note is `text` (non-empty, ends with `\n`, no blank lines), one blank line, then one
//! or more signature lines `— <key name> <base64(key id || signature)>\n` (U+2014 EM DASH, space).
//! The key id is the first 4 bytes of `SHA-256(key name || 0x0A || 0x01 || public key)`, `0x01`
//! being the Ed25519 algorithm byte, and the signature is Ed25519 over the text bytes (including
//! the final newline). Base64 is standard padded base64 (RFC 4648 §4) throughout.
//!
//! Key strings follow the same conventions as Go's `golang.org/x/mod/sumdb/note`:
//! verifier key `<name>+<8 hex key id>+<base64(0x01 || public key)>`, signer key
//! `PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 || 32-byte seed)>`.

use std::fmt;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use crate::hash::{decode_base64, encode_base64, sha256};
use crate::LedgerError;

/// Algorithm byte of Ed25519 keys in key ids and key strings.
pub const ALG_ED25519: u8 = 0x01;

/// Start of every signature line: U+2014 EM DASH and a space.
pub const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Most signature lines accepted on one note (as in Go's implementation).
pub const MAX_SIGNATURES: usize = 100;

const SIGNER_KEY_PREFIX: &str = "PRIVATE+KEY+";

/// A 4-byte key id.
pub type KeyId = [u8; 4];

/// Checks a key name: non-empty, no whitespace, no `+`, no control characters.
pub fn validate_key_name(name: &str) -> Result<(), LedgerError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
    {
        return Err(LedgerError::InvalidKeyName(name.to_owned()));
    }
    Ok(())
}

/// Key id: first 4 bytes of `SHA-256(name || 0x0A || 0x01 || public key)`.
pub fn key_id(name: &str, key: &VerifyingKey) -> KeyId {
    let h = sha256(&[name.as_bytes(), b"\n", &[ALG_ED25519], key.as_bytes()]);
    [h[0], h[1], h[2], h[3]]
}

/// Ed25519 signing key from its 32-byte seed (secret key bytes).
pub fn signing_key_from_bytes(seed: &[u8]) -> Result<SigningKey, LedgerError> {
    let seed: [u8; 32] = seed.try_into().map_err(|_| {
        LedgerError::InvalidKey(format!("expected a 32-byte seed, got {} bytes", seed.len()))
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

fn hex_id(id: KeyId) -> String {
    format!("{:08x}", u32::from_be_bytes(id))
}

fn parse_hex_id(text: &str) -> Result<KeyId, LedgerError> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LedgerError::InvalidKey(format!(
            "key id {text:?} is not 8 hex digits"
        )));
    }
    u32::from_str_radix(text, 16)
        .map(u32::to_be_bytes)
        .map_err(|e| LedgerError::InvalidKey(format!("key id {text:?}: {e}")))
}

/// Decodes `base64(0x01 || 32 bytes)`.
fn parse_alg_key(text: &str) -> Result<[u8; 32], LedgerError> {
    let raw = decode_base64(text).map_err(LedgerError::InvalidKey)?;
    match raw.split_first() {
        Some((&ALG_ED25519, rest)) => rest.try_into().map_err(|_| {
            LedgerError::InvalidKey(format!("expected 32 key bytes, got {}", rest.len()))
        }),
        Some((alg, _)) => Err(LedgerError::InvalidKey(format!(
            "unsupported key algorithm {alg:#04x}"
        ))),
        None => Err(LedgerError::InvalidKey("empty key".to_owned())),
    }
}

fn alg_key_base64(key: &[u8; 32]) -> String {
    let mut raw = Vec::with_capacity(33);
    raw.push(ALG_ED25519);
    raw.extend_from_slice(key);
    encode_base64(&raw)
}

/// A named Ed25519 verifier key (what an auditor is given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: KeyId,
    key: VerifyingKey,
}

impl VerifierKey {
    /// A verifier key for `key` under `name` (validated with [`validate_key_name`]).
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, LedgerError> {
        validate_key_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            id: key_id(name, &key),
            key,
        })
    }

    /// Parses `<name>+<8 hex key id>+<base64(0x01 || public key)>`, checking that the key id
    /// matches the name and key.
    pub fn parse(text: &str) -> Result<Self, LedgerError> {
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(LedgerError::InvalidKey(
                "expected <name>+<key id>+<key>".to_owned(),
            ));
        };
        validate_key_name(name)?;
        let id = parse_hex_id(hex)?;
        let bytes = parse_alg_key(b64)?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|e| LedgerError::InvalidKey(format!("not an Ed25519 public key: {e}")))?;
        if key_id(name, &key) != id {
            return Err(LedgerError::InvalidKey(
                "key id does not match name and key".to_owned(),
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id.
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// The Ed25519 public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Verifies a signed note and returns its text (the signed body).
    ///
    /// Signature lines from other keys (different name or id) are ignored. Fails with
    /// [`LedgerError::NoMatchingSignature`] if none is from this key, and with
    /// [`LedgerError::BadSignature`] if one from this key does not verify.
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, LedgerError> {
        let (text, signatures) = parse_note(note)?;
        let mut verified = false;
        for sig in signatures
            .iter()
            .filter(|s| s.key_name == self.name && s.key_id == self.id)
        {
            let signature = Signature::from_slice(&sig.signature)
                .map_err(|_| LedgerError::BadSignature(self.name.clone()))?;
            self.key
                .verify_strict(text.as_bytes(), &signature)
                .map_err(|_| LedgerError::BadSignature(self.name.clone()))?;
            verified = true;
        }
        if verified {
            Ok(text)
        } else {
            Err(LedgerError::NoMatchingSignature(self.name.clone()))
        }
    }
}

impl fmt::Display for VerifierKey {
    /// `<name>+<8 hex key id>+<base64(0x01 || public key)>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex_id(self.id),
            alg_key_base64(self.key.as_bytes())
        )
    }
}

/// `<name>+<8 hex key id>+<base64(0x01 || public key)>` for `key` under `name`.
pub fn verifier_key_string(name: &str, key: &VerifyingKey) -> Result<String, LedgerError> {
    Ok(VerifierKey::new(name, *key)?.to_string())
}

/// Parses a verifier key string (see [`VerifierKey::parse`]).
pub fn parse_verifier_key(text: &str) -> Result<VerifierKey, LedgerError> {
    VerifierKey::parse(text)
}

/// `PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 || seed)>`: a key file format compatible with
/// Go's `note.NewSigner`. Secret: store it with mode 0600.
pub fn signer_key_string(name: &str, key: &SigningKey) -> Result<String, LedgerError> {
    validate_key_name(name)?;
    let id = key_id(name, &key.verifying_key());
    Ok(format!(
        "{SIGNER_KEY_PREFIX}{name}+{}+{}",
        hex_id(id),
        alg_key_base64(&key.to_bytes())
    ))
}

/// Parses a signer key string (see [`signer_key_string`]) into its name and signing key,
/// checking the key id.
pub fn parse_signer_key(text: &str) -> Result<(String, SigningKey), LedgerError> {
    let rest = text
        .trim_end_matches('\n')
        .strip_prefix(SIGNER_KEY_PREFIX)
        .ok_or_else(|| {
            LedgerError::InvalidKey("signer key must start with PRIVATE+KEY+".to_owned())
        })?;
    let mut parts = rest.splitn(3, '+');
    let (Some(name), Some(hex), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(LedgerError::InvalidKey(
            "expected PRIVATE+KEY+<name>+<key id>+<key>".to_owned(),
        ));
    };
    validate_key_name(name)?;
    let id = parse_hex_id(hex)?;
    let key = SigningKey::from_bytes(&parse_alg_key(b64)?);
    if key_id(name, &key.verifying_key()) != id {
        return Err(LedgerError::InvalidKey(
            "key id does not match name and key".to_owned(),
        ));
    }
    Ok((name.to_owned(), key))
}

/// One parsed signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub key_name: String,
    /// Key id (first 4 decoded bytes).
    pub key_id: KeyId,
    /// Signature bytes (the rest; 64 bytes for Ed25519).
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The signature line, with its final newline.
    pub fn line(&self) -> String {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id);
        raw.extend_from_slice(&self.signature);
        format!(
            "{SIGNATURE_PREFIX}{} {}\n",
            self.key_name,
            encode_base64(&raw)
        )
    }
}

fn check_text(text: &str) -> Result<(), LedgerError> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(LedgerError::MalformedNote(
            "text must be non-empty and end with a newline".to_owned(),
        ));
    }
    if text.starts_with('\n') || text.contains("\n\n") {
        return Err(LedgerError::MalformedNote(
            "text must not contain blank lines".to_owned(),
        ));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(LedgerError::MalformedNote(
            "text contains control characters".to_owned(),
        ));
    }
    Ok(())
}

/// Signs `text` with `key` under `key_name` and returns the whole note (text, blank line,
/// signature line).
pub fn sign_note(text: &str, key: &SigningKey, key_name: &str) -> Result<String, LedgerError> {
    check_text(text)?;
    validate_key_name(key_name)?;
    let sig = NoteSignature {
        key_name: key_name.to_owned(),
        key_id: key_id(key_name, &key.verifying_key()),
        signature: key.sign(text.as_bytes()).to_bytes().to_vec(),
    };
    Ok(format!("{text}\n{}", sig.line()))
}

fn parse_signature_line(line: &str) -> Result<NoteSignature, LedgerError> {
    let bad = |why: &str| LedgerError::MalformedNote(format!("signature line {line:?}: {why}"));
    let rest = line
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or_else(|| bad("must start with an em dash and a space"))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or_else(|| bad("expected <name> <base64>"))?;
    validate_key_name(name).map_err(|_| bad("invalid key name"))?;
    let raw = decode_base64(b64).map_err(|e| bad(&e))?;
    if raw.len() < 5 {
        return Err(bad("signature too short"));
    }
    let (id, signature) = raw.split_at(4);
    Ok(NoteSignature {
        key_name: name.to_owned(),
        key_id: [id[0], id[1], id[2], id[3]],
        signature: signature.to_vec(),
    })
}

/// Splits a signed note into its text and signature lines, checking the format but no signature.
pub fn parse_note(note: &str) -> Result<(&str, Vec<NoteSignature>), LedgerError> {
    let split = note.find("\n\n").ok_or_else(|| {
        LedgerError::MalformedNote("no blank line before the signatures".to_owned())
    })?;
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    check_text(text)?;
    if sigs.is_empty() || !sigs.ends_with('\n') {
        return Err(LedgerError::MalformedNote(
            "signatures must end with a newline".to_owned(),
        ));
    }
    let lines: Vec<&str> = sigs[..sigs.len() - 1].split('\n').collect();
    if lines.len() > MAX_SIGNATURES {
        return Err(LedgerError::MalformedNote(format!(
            "more than {MAX_SIGNATURES} signatures"
        )));
    }
    let signatures = lines
        .into_iter()
        .map(parse_signature_line)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((text, signatures))
}
