//! Roles and API keys: tokens are random 256-bit values, stored and looked up only by SHA-256.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::CoreError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Applications: the OpenAI-compatible `/v1/*` API.
    App,
    /// People who review interactions.
    Reviewer,
    /// Operators: everything under `/api/`.
    Admin,
    /// Read-only oversight: interactions and the ledger.
    Auditor,
}

impl Role {
    /// Parses `app|reviewer|admin|auditor`.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        match s {
            "app" => Ok(Role::App),
            "reviewer" => Ok(Role::Reviewer),
            "admin" => Ok(Role::Admin),
            "auditor" => Ok(Role::Auditor),
            other => Err(CoreError::Invalid(format!(
                "unknown role `{other}`: expected app, reviewer, admin or auditor"
            ))),
        }
    }

    /// The role's lowercase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::App => "app",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }
}

/// The tenant value that lets a key see every tenant.
pub const ALL_TENANTS: &str = "*";

/// A stored key: never the token itself, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub key_id: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    pub tenant: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub created_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<i64>,
}

impl ApiKeyRecord {
    /// Whether this key may see objects of `tenant`.
    pub fn sees_tenant(&self, tenant: &str) -> bool {
        self.tenant == ALL_TENANTS || self.tenant == tenant
    }

    /// The name used as the actor of events this key causes.
    pub fn actor(&self) -> String {
        match &self.name {
            Some(n) => format!("{n} ({})", self.key_id),
            None => self.key_id.clone(),
        }
    }
}

/// A fresh random 256-bit token, `keel_` + 64 hex characters.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("keel_{}", hex::encode(bytes))
}

/// The hex SHA-256 of a token, the only form in which it is stored.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Validates a tenant name given on the CLI (`*` allowed for operators).
pub fn validate_tenant(t: &str) -> Result<(), CoreError> {
    if t == ALL_TENANTS {
        return Ok(());
    }
    let ok = !t.is_empty()
        && t.len() <= 64
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(CoreError::Invalid(format!(
            "invalid tenant `{t}`: use 1-64 characters of a-z, A-Z, 0-9, '-', '_', '.', or '*' for all tenants"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_is_stable() {
        let a = new_token();
        assert_eq!(a.len(), 5 + 64);
        assert_ne!(a, new_token());
        // FIPS 180-2's SHA-256 example ("abc"), hex: the stored hash is plain SHA-256 of the token.
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(hash_token(&a), hash_token(&new_token()));
    }

    #[test]
    fn roles_and_tenants_parse() {
        for r in ["app", "reviewer", "admin", "auditor"] {
            assert_eq!(Role::parse(r).unwrap().as_str(), r);
        }
        assert!(Role::parse("root").is_err());
        assert!(validate_tenant("acme").is_ok());
        assert!(validate_tenant("*").is_ok());
        assert!(validate_tenant("").is_err());
        assert!(validate_tenant("a b").is_err());
    }
}

/// A newly minted key: the token (shown once), its record, and the `KeyCreated` event to append.
#[derive(Debug)]
pub struct MintedKey {
    pub token: String,
    pub record: ApiKeyRecord,
    pub event: crate::NewEvent,
}

/// Mints a key for `tenant` with `role`; the caller appends `event` through the store.
pub fn mint_key(
    tenant: &str,
    role: Role,
    name: Option<String>,
    actor: &str,
    clock: &dyn crate::Clock,
) -> Result<MintedKey, CoreError> {
    validate_tenant(tenant)?;
    if role == Role::App && tenant == ALL_TENANTS {
        return Err(CoreError::Invalid(
            "an app key must belong to one tenant: its interactions are recorded under it".into(),
        ));
    }
    if let Some(n) = &name {
        if n.trim().is_empty() || n.len() > 200 {
            return Err(CoreError::Invalid(
                "--name must be 1-200 characters".to_string(),
            ));
        }
    }
    let token = new_token();
    let at_ms = clock.now_ms();
    let record = ApiKeyRecord {
        key_id: crate::id::new_id("key", clock),
        hash: hash_token(&token),
        tenant: tenant.to_string(),
        role,
        name,
        created_ms: at_ms,
        revoked_ms: None,
    };
    let event = crate::NewEvent {
        kind: crate::EventKind::KEY_CREATED.to_string(),
        actor: actor.to_string(),
        tenant: tenant.to_string(),
        at_ms,
        payload: serde_json::json!({
            "key_id": record.key_id,
            "hash": record.hash,
            "tenant": record.tenant,
            "role": record.role.as_str(),
            "name": record.name,
        }),
    };
    Ok(MintedKey {
        token,
        record,
        event,
    })
}

/// The `KeyRevoked` event for `key`.
pub fn revoke_key_event(
    key: &ApiKeyRecord,
    actor: &str,
    clock: &dyn crate::Clock,
) -> crate::NewEvent {
    crate::NewEvent {
        kind: crate::EventKind::KEY_REVOKED.to_string(),
        actor: actor.to_string(),
        tenant: key.tenant.clone(),
        at_ms: clock.now_ms(),
        payload: serde_json::json!({ "key_id": key.key_id }),
    }
}
