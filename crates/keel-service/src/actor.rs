//! Who performs an operation: the name recorded on events, the person the two-person rule and
//! reviewer agreement compare, the role and the tenant scope. Authorization is decided here.

use keel_core::auth::ALL_TENANTS;
use keel_core::{ApiKeyRecord, Role};

use crate::error::ServiceError;

/// Roles that may read the loop's state (queue, facts, KPIs, proposals, rollouts, history).
pub const READERS: &[Role] = &[Role::Reviewer, Role::Admin, Role::Auditor];
/// Roles that change policy, facts and rollouts.
pub const ADMIN: &[Role] = &[Role::Admin];
/// Roles that claim and label review items.
pub const REVIEWERS: &[Role] = &[Role::Reviewer];

/// The caller of a service operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Recorded as the actor of the events the operation appends.
    pub who: String,
    /// The person: the key's name, else its id (compared by the two-person rule).
    pub person: String,
    pub role: Role,
    /// The tenant the actor acts for, or `*` for every tenant.
    pub tenant: String,
}

impl Actor {
    /// The holder of an API key.
    pub fn from_key(k: &ApiKeyRecord) -> Self {
        Self {
            who: k.actor(),
            person: k.name.clone().unwrap_or_else(|| k.key_id.clone()),
            role: k.role,
            tenant: k.tenant.clone(),
        }
    }

    /// An operator with access to the database (the CLI): an admin of every tenant, recorded
    /// as `who` and compared as `person`.
    pub fn operator(who: &str, person: &str) -> Self {
        Self {
            who: who.to_string(),
            person: person.to_string(),
            role: Role::Admin,
            tenant: ALL_TENANTS.to_string(),
        }
    }

    /// Fails with a 403 unless the actor has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ServiceError> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ServiceError::Forbidden(format!(
            "This endpoint needs a key with role {}; this key has role {}.",
            names.join(" or "),
            self.role.as_str()
        )))
    }

    /// `None` when the actor sees every tenant, else its tenant (for store filters).
    pub fn tenant_filter(&self) -> Option<&str> {
        (self.tenant != ALL_TENANTS).then_some(self.tenant.as_str())
    }

    /// Whether the actor may see an object of `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        self.tenant == ALL_TENANTS || self.tenant == tenant
    }
}
