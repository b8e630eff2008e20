//! Interactions: the `interactions` index projected from `InteractionRecorded` events.

use sqlx::Row;

use crate::{InteractionRow, SqliteMigration, SqliteProjection, StoreError};

inventory::submit! {
    SqliteMigration {
        id: "0003_interactions",
        sql: "CREATE TABLE IF NOT EXISTS interactions (
                id              TEXT PRIMARY KEY,
                seq             INTEGER NOT NULL UNIQUE REFERENCES events(seq),
                tenant          TEXT NOT NULL,
                conversation_id TEXT,
                at_ms           INTEGER NOT NULL
              );
              CREATE INDEX IF NOT EXISTS interactions_conv ON interactions(tenant, conversation_id, seq);
              CREATE INDEX IF NOT EXISTS interactions_tenant ON interactions(tenant, seq);",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::INTERACTION_RECORDED,
        sql: "INSERT INTO interactions (id, seq, tenant, conversation_id, at_ms)
              SELECT json_extract(payload, '$.id'), seq, tenant,
                     json_extract(payload, '$.context.conversation_id'), at_ms
              FROM ev",
    }
}

pub(crate) const SELECT_INTERACTIONS: &str =
    "SELECT i.id, i.seq, i.tenant, i.at_ms, e.payload, l.ledger_index FROM interactions i JOIN events e ON e.seq = i.seq LEFT JOIN ledger_leaves l ON l.seq = i.seq";

pub(crate) fn interaction_from_row(
    row: &sqlx::sqlite::SqliteRow,
) -> Result<InteractionRow, StoreError> {
    let payload: Option<String> = row.try_get("payload")?;
    let record = match payload {
        Some(text) => {
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?
        }
        None => serde_json::Value::Null,
    };
    Ok(InteractionRow {
        id: row.try_get("id")?,
        seq: row.try_get("seq")?,
        ledger_index: row.try_get("ledger_index")?,
        tenant: row.try_get("tenant")?,
        at_ms: row.try_get("at_ms")?,
        record,
    })
}
