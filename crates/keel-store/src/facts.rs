//! Facts with effective dates: the `facts` index projected from `FactSet` events. The fact
//! itself (value, scope, dates, subjects) lives in the event's payload, so the ledger seals
//! every version and the history is the list of events; the table only indexes them.

use sqlx::Row;

use crate::{SqliteMigration, SqliteProjection, StoreError};

inventory::submit! {
    SqliteMigration {
        id: "0008_facts",
        sql: "CREATE TABLE IF NOT EXISTS facts (
                seq            INTEGER PRIMARY KEY,
                key            TEXT NOT NULL,
                tenant         TEXT NOT NULL,
                actor          TEXT NOT NULL,
                reason         TEXT NOT NULL,
                effective_from TEXT NOT NULL,
                at_ms          INTEGER NOT NULL
              );
              CREATE INDEX IF NOT EXISTS facts_key ON facts(key, seq);",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::FACT_SET,
        sql: "INSERT OR IGNORE INTO facts (seq, key, tenant, actor, reason, effective_from, at_ms)
              SELECT seq, json_extract(payload, '$.fact.key'), tenant, actor,
                     COALESCE(json_extract(payload, '$.reason'), ''),
                     COALESCE(json_extract(payload, '$.fact.effective_from'), ''), at_ms
              FROM ev",
    }
}

/// One `FactSet` event: who set which version of a fact, when and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FactRow {
    pub seq: i64,
    pub key: String,
    /// The tenant the event was recorded for (`*` for facts of every tenant).
    pub tenant: String,
    pub actor: String,
    pub reason: String,
    pub at_ms: i64,
    /// The fact as set (`null` if the payload was erased).
    pub fact: serde_json::Value,
}

pub(crate) const SELECT_FACTS: &str =
    "SELECT f.seq, f.key, f.tenant, f.actor, f.reason, f.at_ms, e.payload
     FROM facts f JOIN events e ON e.seq = f.seq";

pub(crate) fn fact_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<FactRow, StoreError> {
    let payload: Option<String> = row.try_get("payload")?;
    let fact = match payload {
        Some(t) => {
            let mut v: serde_json::Value =
                serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            v.get_mut("fact")
                .map(serde_json::Value::take)
                .unwrap_or(serde_json::Value::Null)
        }
        None => serde_json::Value::Null,
    };
    Ok(FactRow {
        seq: row.try_get("seq")?,
        key: row.try_get("key")?,
        tenant: row.try_get("tenant")?,
        actor: row.try_get("actor")?,
        reason: row.try_get("reason")?,
        at_ms: row.try_get("at_ms")?,
        fact,
    })
}
