//! Rollouts and proposal decisions, projected from `RolloutChanged` and `ProposalDecided`.
//! Transitions are guarded in SQL: a step from a state that does not allow it (promoting a
//! rollout that was rolled back meanwhile; a canary's next step only raises its share), a second live canary for one scope, or a second
//! decision on one proposal fails the append, so the log never holds a step that did not
//! take effect.

use sqlx::Row;

use crate::{SqliteMigration, SqliteProjection, StoreError};

inventory::submit! {
    SqliteMigration {
        id: "0011_rollouts",
        sql: "CREATE TABLE IF NOT EXISTS rollouts (
                id          TEXT PRIMARY KEY,
                seq         INTEGER NOT NULL,
                updated_seq INTEGER NOT NULL,
                scope_key   TEXT NOT NULL,
                tenant      TEXT,
                locale      TEXT,
                version     TEXT NOT NULL,
                baseline    TEXT,
                percent     REAL NOT NULL,
                state       TEXT NOT NULL,
                proposal    TEXT,
                started_ms  INTEGER NOT NULL,
                updated_ms  INTEGER NOT NULL,
                actor       TEXT NOT NULL,
                guard       INTEGER NOT NULL DEFAULT 1 CHECK (guard = 1)
              );
              CREATE UNIQUE INDEX IF NOT EXISTS rollouts_one_canary ON rollouts(scope_key)
                WHERE state = 'canary';
              CREATE TABLE IF NOT EXISTS proposal_decisions (
                id       TEXT PRIMARY KEY,
                seq      INTEGER NOT NULL,
                decision TEXT NOT NULL
              );",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::ROLLOUT_CHANGED,
        sql: "INSERT INTO rollouts (id, seq, updated_seq, scope_key, tenant, locale, version, baseline,
                                    percent, state, proposal, started_ms, updated_ms, actor, guard)
              SELECT json_extract(payload, '$.id'), seq, seq, json_extract(payload, '$.scope_key'),
                     json_extract(payload, '$.scope.tenant'), json_extract(payload, '$.scope.locale'),
                     json_extract(payload, '$.version'), json_extract(payload, '$.baseline'),
                     json_extract(payload, '$.percent'), json_extract(payload, '$.state'),
                     json_extract(payload, '$.proposal'), json_extract(payload, '$.started_ms'),
                     at_ms, actor, 1
              FROM ev WHERE true
              ON CONFLICT(id) DO UPDATE SET
                guard = CASE WHEN rollouts.state = 'canary'
                                  AND excluded.state IN ('promoted', 'rolled_back', 'superseded') THEN 1
                             WHEN rollouts.state = 'canary' AND excluded.state = 'canary'
                                  AND excluded.percent > rollouts.percent THEN 1
                             WHEN rollouts.state IN ('active', 'promoted')
                                  AND excluded.state IN ('rolled_back', 'superseded') THEN 1
                             ELSE 0 END,
                state = excluded.state, percent = excluded.percent,
                updated_seq = excluded.updated_seq, updated_ms = excluded.updated_ms,
                actor = excluded.actor",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::PROPOSAL_DECIDED,
        sql: "INSERT INTO proposal_decisions (id, seq, decision)
              SELECT json_extract(payload, '$.id'), seq, json_extract(payload, '$.decision') FROM ev",
    }
}

/// A rollout's current state.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RolloutRow {
    pub id: String,
    /// The event that started it.
    pub seq: i64,
    /// The event of its latest step.
    pub updated_seq: i64,
    pub tenant: Option<String>,
    pub locale: Option<String>,
    pub version: String,
    pub baseline: Option<String>,
    pub percent: f64,
    pub state: String,
    pub proposal: Option<String>,
    pub started_ms: i64,
    pub updated_ms: i64,
    /// Who took the latest step.
    pub actor: String,
}

pub(crate) const SELECT_ROLLOUTS: &str =
    "SELECT id, seq, updated_seq, tenant, locale, version, baseline, percent, state, proposal,
            started_ms, updated_ms, actor FROM rollouts";

pub(crate) fn rollout_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<RolloutRow, StoreError> {
    Ok(RolloutRow {
        id: r.try_get("id")?,
        seq: r.try_get("seq")?,
        updated_seq: r.try_get("updated_seq")?,
        tenant: r.try_get("tenant")?,
        locale: r.try_get("locale")?,
        version: r.try_get("version")?,
        baseline: r.try_get("baseline")?,
        percent: r.try_get("percent")?,
        state: r.try_get("state")?,
        proposal: r.try_get("proposal")?,
        started_ms: r.try_get("started_ms")?,
        updated_ms: r.try_get("updated_ms")?,
        actor: r.try_get("actor")?,
    })
}
