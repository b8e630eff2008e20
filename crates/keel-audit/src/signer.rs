//! The checkpoint signing key: created on first start in `data_dir` (mode 0600), then reused.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use keel_ledger::{parse_signer_key, signer_key_string, verifier_key_string, Checkpoint};
use rand::RngCore;

use crate::AuditError;

/// File name of the signing key inside `data_dir`.
pub const KEY_FILE: &str = "ledger-signing.key";

/// The key that signs checkpoints, with its note name and the log's origin line.
#[derive(Debug)]
pub struct LedgerSigner {
    pub name: String,
    pub origin: String,
    key: SigningKey,
}

impl LedgerSigner {
    /// Loads `data_dir/ledger-signing.key`, creating it (mode 0600) if absent.
    pub fn load_or_create(data_dir: &Path, name: &str, origin: &str) -> Result<Self, AuditError> {
        keel_ledger::validate_key_name(name)?;
        keel_ledger::validate_origin(origin)?;
        let path = data_dir.join(KEY_FILE);
        let err = |message: String| AuditError::Key {
            path: path.display().to_string(),
            message,
        };
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
            let (stored_name, key) =
                parse_signer_key(text.trim()).map_err(|e| err(e.to_string()))?;
            if stored_name != name {
                return Err(err(format!(
                    "the key is named `{stored_name}` but [ledger] key_name is `{name}`"
                )));
            }
            return Ok(Self {
                name: name.to_string(),
                origin: origin.to_string(),
                key,
            });
        }
        std::fs::create_dir_all(data_dir).map_err(|e| err(e.to_string()))?;
        let mut seed = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut seed);
        let key = SigningKey::from_bytes(&seed);
        let text = signer_key_string(name, &key)?;
        write_private(&path, text.as_bytes()).map_err(|e| err(e.to_string()))?;
        tracing::info!(path = %path.display(), "created the ledger signing key");
        Ok(Self {
            name: name.to_string(),
            origin: origin.to_string(),
            key,
        })
    }

    /// The verifier key string `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.
    pub fn verifier_key(&self) -> Result<String, AuditError> {
        Ok(verifier_key_string(&self.name, &self.key.verifying_key())?)
    }

    /// Signs a checkpoint note for a tree of `size` leaves with `root`.
    pub fn sign(&self, size: u64, root: keel_ledger::Hash) -> Result<String, AuditError> {
        let cp = Checkpoint::new(&self.origin, size, root)?;
        Ok(cp.sign(&self.key, &self.name)?)
    }

    /// Where the key lives under `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(KEY_FILE)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
