//! API keys: who a token belongs to (the actor behind a credential), minting, listing and
//! revoking. Keys are stored as SHA-256 hashes only.

use keel_core::auth::{hash_token, mint_key, revoke_key_event, MintedKey};
use keel_core::{ApiKeyRecord, Clock, Role};
use keel_store::Store;

use crate::actor::{Actor, ADMIN};
use crate::error::ServiceError;

/// The actor behind `token` (401 for an unknown or revoked key).
pub async fn actor_for_token(store: &dyn Store, token: &str) -> Result<Actor, ServiceError> {
    store
        .key_by_hash(&hash_token(token.trim()))
        .await?
        .filter(|k| k.revoked_ms.is_none())
        .map(|k| Actor::from_key(&k))
        .ok_or_else(|| ServiceError::Unauthorized("unknown or revoked key".into()))
}

/// Mints a key and appends its `KeyCreated` event (admins of every tenant; the CLI operator).
/// The token in the result is shown once and never stored.
pub async fn create(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    tenant: &str,
    role: Role,
    name: Option<String>,
) -> Result<MintedKey, ServiceError> {
    actor.require(ADMIN)?;
    if actor.tenant_filter().is_some() {
        return Err(ServiceError::Forbidden(
            "only an operator of every tenant creates keys".into(),
        ));
    }
    let minted = mint_key(tenant, role, name, &actor.who, clock)?;
    store.append(vec![minted.event.clone()]).await?;
    Ok(minted)
}

/// Every key the actor may see.
pub async fn list(store: &dyn Store, actor: &Actor) -> Result<Vec<ApiKeyRecord>, ServiceError> {
    actor.require(ADMIN)?;
    Ok(store
        .list_keys()
        .await?
        .into_iter()
        .filter(|k| actor.sees(&k.tenant))
        .collect())
}

/// Revokes a key (404 for an unknown id, 409 when it is revoked already).
pub async fn revoke(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    key_id: &str,
) -> Result<(), ServiceError> {
    actor.require(ADMIN)?;
    let key = store
        .key_by_id(key_id)
        .await?
        .filter(|k| actor.sees(&k.tenant))
        .ok_or_else(|| ServiceError::NotFound(format!("no key with id `{key_id}`")))?;
    if key.revoked_ms.is_some() {
        return Err(ServiceError::Conflict(format!(
            "key `{key_id}` is already revoked"
        )));
    }
    store
        .append(vec![revoke_key_event(&key, &actor.who, clock)])
        .await?;
    Ok(())
}
