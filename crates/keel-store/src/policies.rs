//! Policy versions and activations, projected from `PolicyPublished` / `PolicyActivated` events.
//! The bundle's files live in the `PolicyPublished` payload, so the ledger seals them.

use sqlx::Row;

use crate::{SqliteMigration, SqliteProjection, StoreError};

inventory::submit! {
    SqliteMigration {
        id: "0006_policies",
        sql: "CREATE TABLE IF NOT EXISTS policy_versions (
                version      TEXT PRIMARY KEY,
                seq          INTEGER NOT NULL UNIQUE,
                name         TEXT NOT NULL,
                owner        TEXT NOT NULL,
                actor        TEXT NOT NULL,
                reason       TEXT NOT NULL,
                published_ms INTEGER NOT NULL
              );
              CREATE TABLE IF NOT EXISTS policy_activations (
                scope   TEXT PRIMARY KEY,
                version TEXT NOT NULL,
                seq     INTEGER NOT NULL,
                actor   TEXT NOT NULL,
                at_ms   INTEGER NOT NULL
              );",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::POLICY_PUBLISHED,
        sql: "INSERT OR IGNORE INTO policy_versions (version, seq, name, owner, actor, reason, published_ms)
              SELECT json_extract(payload, '$.version'), seq, json_extract(payload, '$.name'),
                     json_extract(payload, '$.owner'), actor, json_extract(payload, '$.reason'), at_ms
              FROM ev",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::POLICY_ACTIVATED,
        sql: "INSERT INTO policy_activations (scope, version, seq, actor, at_ms)
              SELECT json_extract(payload, '$.scope'), json_extract(payload, '$.version'), seq, actor, at_ms FROM ev
              WHERE true
              ON CONFLICT(scope) DO UPDATE SET version = excluded.version, seq = excluded.seq,
                actor = excluded.actor, at_ms = excluded.at_ms",
    }
}

/// A published policy version.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PolicyVersionRow {
    pub version: String,
    pub seq: i64,
    pub name: String,
    pub owner: String,
    pub actor: String,
    pub reason: String,
    pub published_ms: i64,
}

/// Which version is active for a scope (`*` = every tenant without its own).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ActivationRow {
    pub scope: String,
    pub version: String,
    pub seq: i64,
    pub actor: String,
    pub at_ms: i64,
}

pub(crate) fn version_from_row(
    r: &sqlx::sqlite::SqliteRow,
) -> Result<PolicyVersionRow, StoreError> {
    Ok(PolicyVersionRow {
        version: r.try_get("version")?,
        seq: r.try_get("seq")?,
        name: r.try_get("name")?,
        owner: r.try_get("owner")?,
        actor: r.try_get("actor")?,
        reason: r.try_get("reason")?,
        published_ms: r.try_get("published_ms")?,
    })
}

pub(crate) fn activation_from_row(
    r: &sqlx::sqlite::SqliteRow,
) -> Result<ActivationRow, StoreError> {
    Ok(ActivationRow {
        scope: r.try_get("scope")?,
        version: r.try_get("version")?,
        seq: r.try_get("seq")?,
        actor: r.try_get("actor")?,
        at_ms: r.try_get("at_ms")?,
    })
}
