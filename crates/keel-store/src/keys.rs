//! API keys: the `api_keys` projection of `KeyCreated` / `KeyRevoked` events and its queries.

use keel_core::{ApiKeyRecord, Role};
use sqlx::Row;

use crate::{SqliteMigration, SqliteProjection, StoreError};

inventory::submit! {
    SqliteMigration {
        id: "0002_api_keys",
        sql: "CREATE TABLE IF NOT EXISTS api_keys (
                key_id     TEXT PRIMARY KEY,
                hash       TEXT NOT NULL UNIQUE,
                tenant     TEXT NOT NULL,
                role       TEXT NOT NULL,
                name       TEXT,
                created_ms INTEGER NOT NULL,
                revoked_ms INTEGER
              );",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::KEY_CREATED,
        sql: "INSERT INTO api_keys (key_id, hash, tenant, role, name, created_ms)
              SELECT json_extract(payload, '$.key_id'), json_extract(payload, '$.hash'),
                     json_extract(payload, '$.tenant'), json_extract(payload, '$.role'),
                     json_extract(payload, '$.name'), at_ms
              FROM ev",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::KEY_REVOKED,
        sql: "UPDATE api_keys SET revoked_ms = (SELECT at_ms FROM ev)
              WHERE key_id = (SELECT json_extract(payload, '$.key_id') FROM ev)
                AND revoked_ms IS NULL",
    }
}

pub(crate) const SELECT_KEYS: &str =
    "SELECT key_id, hash, tenant, role, name, created_ms, revoked_ms FROM api_keys";

pub(crate) fn key_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ApiKeyRecord, StoreError> {
    let role: String = row.try_get("role")?;
    Ok(ApiKeyRecord {
        key_id: row.try_get("key_id")?,
        hash: row.try_get("hash")?,
        tenant: row.try_get("tenant")?,
        role: Role::parse(&role).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        name: row.try_get("name")?,
        created_ms: row.try_get("created_ms")?,
        revoked_ms: row.try_get("revoked_ms")?,
    })
}
