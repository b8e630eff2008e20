//! Alerts: the `alerts` index projected from `AlertRaised` events with its lifecycle
//! (`AlertAcknowledged`, `AlertResolved`: open → acknowledged → resolved, or open → resolved,
//! guarded in SQL so a transition from the wrong state fails the append), and worker state.

use sqlx::Row;

use crate::{AlertAction, AlertRow, SqliteMigration, SqliteProjection, StoreError};

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

inventory::submit! {
    SqliteMigration {
        id: "0013_alert_lifecycle",
        sql: "ALTER TABLE alerts ADD COLUMN status TEXT NOT NULL DEFAULT 'open';
              ALTER TABLE alerts ADD COLUMN acked_by TEXT;
              ALTER TABLE alerts ADD COLUMN acked_ms INTEGER;
              ALTER TABLE alerts ADD COLUMN ack_reason TEXT;
              ALTER TABLE alerts ADD COLUMN resolved_by TEXT;
              ALTER TABLE alerts ADD COLUMN resolved_ms INTEGER;
              ALTER TABLE alerts ADD COLUMN resolve_reason TEXT;
              ALTER TABLE alerts ADD COLUMN proposal TEXT;
              ALTER TABLE alerts ADD COLUMN guard INTEGER NOT NULL DEFAULT 1 CHECK (guard = 1);
              CREATE INDEX IF NOT EXISTS alerts_status ON alerts(status);",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::ALERT_ACKNOWLEDGED,
        sql: "UPDATE alerts SET
                guard = CASE WHEN status = 'open' THEN 1 ELSE 0 END,
                status = 'acknowledged',
                acked_by = (SELECT actor FROM ev),
                acked_ms = (SELECT at_ms FROM ev),
                ack_reason = (SELECT json_extract(payload, '$.reason') FROM ev)
              WHERE id = (SELECT json_extract(payload, '$.id') FROM ev)",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::ALERT_RESOLVED,
        sql: "UPDATE alerts SET
                guard = CASE WHEN status IN ('open', 'acknowledged') THEN 1 ELSE 0 END,
                status = 'resolved',
                resolved_by = (SELECT actor FROM ev),
                resolved_ms = (SELECT at_ms FROM ev),
                resolve_reason = (SELECT json_extract(payload, '$.reason') FROM ev),
                proposal = (SELECT json_extract(payload, '$.proposal') FROM ev)
              WHERE id = (SELECT json_extract(payload, '$.id') FROM ev)",
    }
}

/// The columns [`alert_from_row`] reads (`a` = alerts, `e` = events).
pub(crate) const ALERT_COLUMNS: &str =
    "a.id, a.seq, a.tenant, a.at_ms, a.status, a.acked_by, a.acked_ms, a.ack_reason,
     a.resolved_by, a.resolved_ms, a.resolve_reason, a.proposal, e.payload";

pub(crate) fn alert_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<AlertRow, StoreError> {
    let payload: Option<String> = row.try_get("payload")?;
    Ok(AlertRow {
        id: row.try_get("id")?,
        seq: row.try_get("seq")?,
        tenant: row.try_get("tenant")?,
        at_ms: row.try_get("at_ms")?,
        status: row.try_get("status")?,
        acknowledged: match row.try_get::<Option<String>, _>("acked_by")? {
            Some(by) => Some(AlertAction {
                by,
                at_ms: row
                    .try_get::<Option<i64>, _>("acked_ms")?
                    .unwrap_or_default(),
                reason: row
                    .try_get::<Option<String>, _>("ack_reason")?
                    .unwrap_or_default(),
                proposal: None,
            }),
            None => None,
        },
        resolved: match row.try_get::<Option<String>, _>("resolved_by")? {
            Some(by) => Some(AlertAction {
                by,
                at_ms: row
                    .try_get::<Option<i64>, _>("resolved_ms")?
                    .unwrap_or_default(),
                reason: row
                    .try_get::<Option<String>, _>("resolve_reason")?
                    .unwrap_or_default(),
                proposal: row.try_get("proposal")?,
            }),
            None => None,
        },
        alert: match payload {
            Some(t) => serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            None => serde_json::Value::Null,
        },
    })
}
