//! The ledger's entry points for every surface: verify the whole log, issue a checkpoint, and
//! erase payloads (auditors and admins over HTTP; the operator at the CLI). The work is in
//! `keel_audit`.

use keel_audit::{EraseTarget, LedgerSigner, VerifyReport};
use keel_core::{Clock, Role};
use keel_ledger::VerifierKey;
use keel_store::{Store, StoredCheckpoint};

use crate::actor::Actor;
use crate::error::ServiceError;

/// Roles that read the ledger and issue checkpoints.
pub const AUDITORS: &[Role] = &[Role::Auditor, Role::Admin];

/// Recomputes every leaf and the tree and checks every checkpoint against `verifier`.
pub async fn verify(
    store: &dyn Store,
    actor: &Actor,
    verifier: &VerifierKey,
    progress: impl FnMut(u64, u64),
) -> Result<VerifyReport, ServiceError> {
    actor.require(AUDITORS)?;
    Ok(keel_audit::verify_log(store, verifier, progress).await?)
}

/// Signs and stores a checkpoint of the current tree.
pub async fn checkpoint(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    signer: &LedgerSigner,
) -> Result<StoredCheckpoint, ServiceError> {
    actor.require(AUDITORS)?;
    Ok(keel_audit::issue_checkpoint(store, signer, clock).await?)
}

/// Erases the payloads `target` names (appending `PayloadErased` events; the ledger keeps the
/// commitments). Only an operator of every tenant erases. Returns how many were erased.
pub async fn erase(
    store: &dyn Store,
    clock: &dyn Clock,
    actor: &Actor,
    target: &EraseTarget,
    reason: &str,
) -> Result<usize, ServiceError> {
    actor.require(&[Role::Admin])?;
    if actor.tenant_filter().is_some() {
        return Err(ServiceError::Forbidden(
            "only an operator of every tenant erases payloads".into(),
        ));
    }
    Ok(keel_audit::erase_events(store, target, reason, &actor.who, clock).await?)
}
