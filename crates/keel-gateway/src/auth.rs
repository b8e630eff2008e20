//! Authentication and roles: `Authorization: Bearer <key>`, looked up by SHA-256 on every request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use keel_core::auth::hash_token;
use keel_core::{ApiKeyRecord, Role};

use crate::app::AppState;
use crate::error::GatewayError;

/// Valid keys seen recently, by token hash. Only positive lookups are cached (random tokens
/// cannot grow it); the background worker clears it within 250 ms of any key being created or
/// revoked by any process, so a revocation takes effect within a second.
#[derive(Default)]
pub struct KeyCache {
    entries: std::sync::RwLock<std::collections::HashMap<String, ApiKeyRecord>>,
    fingerprint: std::sync::Mutex<(usize, usize)>,
}

const KEY_CACHE_MAX: usize = 100_000;

impl KeyCache {
    fn get(&self, hash: &str) -> Option<ApiKeyRecord> {
        self.entries.read().ok()?.get(hash).cloned()
    }

    fn put(&self, key: ApiKeyRecord) {
        if let Ok(mut m) = self.entries.write() {
            if m.len() >= KEY_CACHE_MAX {
                m.clear();
            }
            m.insert(key.hash.clone(), key);
        }
    }

    /// Clears the cache if the set of keys changed since the last call.
    pub async fn refresh(&self, store: &dyn keel_store::Store) -> Result<(), GatewayError> {
        let keys = store.list_keys().await?;
        let now = (
            keys.len(),
            keys.iter().filter(|k| k.revoked_ms.is_some()).count(),
        );
        let changed = match self.fingerprint.lock() {
            Ok(mut f) => std::mem::replace(&mut *f, now) != now,
            Err(_) => true,
        };
        if changed {
            if let Ok(mut m) = self.entries.write() {
                m.clear();
            }
        }
        Ok(())
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller(pub ApiKeyRecord);

impl Caller {
    /// Fails with 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), GatewayError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(GatewayError::Forbidden(format!(
                "This endpoint needs a key with role {}; this key has role {}.",
                names.join(" or "),
                self.0.role.as_str()
            )))
        }
    }

    /// `None` when the caller sees every tenant, else its tenant (for store filters).
    pub fn tenant_filter(&self) -> Option<String> {
        if self.0.tenant == keel_core::auth::ALL_TENANTS {
            None
        } else {
            Some(self.0.tenant.clone())
        }
    }

    /// The caller as the service layer sees it.
    pub fn actor(&self) -> keel_service::Actor {
        keel_service::Actor::from_key(&self.0)
    }

    /// Whether the caller may see an object of `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        self.0.sees_tenant(tenant)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = GatewayError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                GatewayError::Unauthorized(
                    "You didn't provide an API key. Send it as `Authorization: Bearer KEY`.".into(),
                )
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                GatewayError::Unauthorized(
                    "Malformed Authorization header: expected `Bearer KEY`.".into(),
                )
            })?;
        let hash = hash_token(token);
        if let Some(key) = state.keys.get(&hash) {
            return Ok(Caller(key));
        }
        let key = state
            .store
            .key_by_hash(&hash)
            .await?
            .filter(|k| k.revoked_ms.is_none())
            .ok_or_else(|| GatewayError::Unauthorized("Incorrect API key provided.".into()))?;
        state.keys.put(key.clone());
        Ok(Caller(key))
    }
}

/// Roles that read Keel's own API.
pub const READERS: &[Role] = &[Role::Reviewer, Role::Admin, Role::Auditor];
/// The application role.
pub const APP: &[Role] = &[Role::App];
