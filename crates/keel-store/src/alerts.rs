//! Alerts: the `alerts` index projected from `AlertRaised` events, and worker state.

use sqlx::Row;

use crate::{AlertRow, SqliteMigration, SqliteProjection, StoreError};

inventory::submit! {
    SqliteMigration {
        id: "0005_alerts",
        sql: "CREATE TABLE IF NOT EXISTS alerts (
                id          TEXT PRIMARY KEY,
                seq         INTEGER NOT NULL UNIQUE,
                tenant      TEXT NOT NULL,
                metric      TEXT NOT NULL,
                segment_key TEXT NOT NULL,
                severity    TEXT NOT NULL,
                at_ms       INTEGER NOT NULL
              );
              CREATE INDEX IF NOT EXISTS alerts_tenant ON alerts(tenant, seq);
              CREATE TABLE IF NOT EXISTS worker_state (
                key   TEXT PRIMARY KEY,
                value TEXT NOT NULL,
                seq   INTEGER NOT NULL
              );",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::ALERT_RAISED,
        sql: "INSERT INTO alerts (id, seq, tenant, metric, segment_key, severity, at_ms)
              SELECT json_extract(payload, '$.id'), seq, tenant, json_extract(payload, '$.metric'),
                     json_extract(payload, '$.segment_key'), json_extract(payload, '$.severity'), at_ms
              FROM ev",
    }
}

pub(crate) fn alert_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<AlertRow, StoreError> {
    let payload: Option<String> = row.try_get("payload")?;
    Ok(AlertRow {
        id: row.try_get("id")?,
        seq: row.try_get("seq")?,
        tenant: row.try_get("tenant")?,
        at_ms: row.try_get("at_ms")?,
        alert: match payload {
            Some(t) => serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            None => serde_json::Value::Null,
        },
    })
}
