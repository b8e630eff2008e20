//! Human-in-the-loop tables: feedback, handoffs, idempotency keys, the review queue and its
//! labels, all projected from their events in the events' own transactions.
//!
//! Review items appear with the event that causes them (an escalated `InteractionRecorded`, an
//! `AlertRaised` per evidence interaction, a reporting `FeedbackReceived`, a `ReviewSampled`, an
//! `outdated`/`violation` `JudgeVerdict` with its reason and suggested correction),
//! so an item exists as soon as the request that caused it returns. Claims and labels are
//! guarded in SQL: a `ReviewClaimed` on an item someone else holds, or a `ReviewCompleted`
//! without a live claim, violates the `guard` check and the whole append fails, so the log
//! never holds an action that did not take effect.

use sqlx::Row;

use crate::{SqliteMigration, SqliteProjection, StoreError};

inventory::submit! {
    SqliteMigration {
        id: "0007_reviews",
        sql: "CREATE TABLE IF NOT EXISTS feedback (
                id             TEXT PRIMARY KEY,
                seq            INTEGER NOT NULL UNIQUE,
                tenant         TEXT NOT NULL,
                interaction_id TEXT NOT NULL,
                at_ms          INTEGER NOT NULL
              );
              CREATE INDEX IF NOT EXISTS feedback_interaction ON feedback(interaction_id);
              CREATE TABLE IF NOT EXISTS handoffs (
                id              TEXT PRIMARY KEY,
                seq             INTEGER NOT NULL UNIQUE,
                tenant          TEXT NOT NULL,
                conversation_id TEXT NOT NULL,
                event           TEXT NOT NULL,
                at_ms           INTEGER NOT NULL
              );
              CREATE INDEX IF NOT EXISTS handoffs_conv ON handoffs(tenant, conversation_id, at_ms);
              CREATE TABLE IF NOT EXISTS idempotency (
                tenant TEXT NOT NULL,
                scope  TEXT NOT NULL,
                key    TEXT NOT NULL,
                seq    INTEGER NOT NULL,
                PRIMARY KEY (tenant, scope, key)
              );
              CREATE TABLE IF NOT EXISTS review_items (
                id             TEXT PRIMARY KEY,
                seq            INTEGER NOT NULL,
                tenant         TEXT NOT NULL,
                interaction_id TEXT NOT NULL,
                source         TEXT NOT NULL,
                severity       TEXT NOT NULL,
                severity_rank  INTEGER NOT NULL,
                reason         TEXT,
                created_ms     INTEGER NOT NULL,
                status         TEXT NOT NULL DEFAULT 'open',
                claimed_by     TEXT,
                lease_until_ms INTEGER,
                labels         INTEGER NOT NULL DEFAULT 0,
                required       INTEGER NOT NULL DEFAULT 1,
                done_ms        INTEGER,
                updated_seq    INTEGER NOT NULL,
                guard          INTEGER NOT NULL DEFAULT 1 CHECK (guard = 1),
                UNIQUE (interaction_id, source)
              );
              CREATE INDEX IF NOT EXISTS review_items_queue
                ON review_items(tenant, status, severity_rank DESC, created_ms);
              CREATE TABLE IF NOT EXISTS review_labels (
                item_id  TEXT NOT NULL,
                reviewer TEXT NOT NULL,
                seq      INTEGER NOT NULL UNIQUE,
                tenant   TEXT NOT NULL,
                verdict  TEXT NOT NULL,
                category TEXT,
                at_ms    INTEGER NOT NULL,
                PRIMARY KEY (item_id, reviewer)
              );",
    }
}

/// `CASE` turning a severity column into its rank (see `keel_loop::review::severity_rank`).
macro_rules! rank {
    ($col:literal) => {
        concat!(
            "CASE ",
            $col,
            " WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'low' THEN 1 ELSE 2 END"
        )
    };
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::INTERACTION_RECORDED,
        sql: concat!(
            "INSERT OR IGNORE INTO review_items (id, seq, tenant, interaction_id, source, severity, severity_rank,
                                                 reason, created_ms, updated_seq)
             SELECT 'rv_escalation_' || iid, seq, tenant, iid, 'escalation', sev, ", rank!("sev"), ", reason, at_ms, seq
             FROM (SELECT seq, tenant, at_ms, json_extract(payload, '$.id') AS iid,
                          COALESCE(json_extract(payload, '$.decision.input.escalation_severity'),
                                   json_extract(payload, '$.decision.output[0].escalation_severity'), 'medium') AS sev,
                          COALESCE(json_extract(payload, '$.decision.input.deciding_rule'),
                                   json_extract(payload, '$.decision.output[0].deciding_rule')) AS reason
                   FROM ev WHERE json_extract(payload, '$.decision.action') = 'escalate')"
        ),
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::REVIEW_SAMPLED,
        sql: "INSERT OR IGNORE INTO review_items (id, seq, tenant, interaction_id, source, severity, severity_rank,
                                                  reason, created_ms, updated_seq)
              SELECT 'rv_audit_sample_' || json_extract(payload, '$.interaction_id'), seq, tenant,
                     json_extract(payload, '$.interaction_id'), 'audit_sample', 'low', 1,
                     'audit sample at rate ' || json_extract(payload, '$.rate'), at_ms, seq
              FROM ev",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::ALERT_RAISED,
        sql: concat!(
            "INSERT OR IGNORE INTO review_items (id, seq, tenant, interaction_id, source, severity, severity_rank,
                                                 reason, created_ms, updated_seq)
             SELECT 'rv_alert_' || i.id, ev.seq, i.tenant, i.id, 'alert',
                    COALESCE(json_extract(ev.payload, '$.severity'), 'medium'),
                    ", rank!("COALESCE(json_extract(ev.payload, '$.severity'), 'medium')"), ",
                    'alert ' || json_extract(ev.payload, '$.id') || ': ' || json_extract(ev.payload, '$.metric'),
                    ev.at_ms, ev.seq
             FROM ev, json_each(ev.payload, '$.evidence') j JOIN interactions i ON i.id = j.value
             WHERE json_extract(ev.payload, '$.group') IS NULL"
        ),
    }
}

// An alert with a `group` (every alert the monitor drafts now) opens ONE review item per group,
// on its most suspicious interaction (the first evidence id), with the alert's slice and signal
// in the reason; a later alert of the same group finds the item and adds none.
inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::ALERT_RAISED,
        sql: concat!(
            "INSERT OR IGNORE INTO review_items (id, seq, tenant, interaction_id, source, severity, severity_rank,
                                                 reason, created_ms, updated_seq)
             SELECT 'rv_alert_' || json_extract(ev.payload, '$.group'), ev.seq, i.tenant, i.id, 'alert',
                    COALESCE(json_extract(ev.payload, '$.severity'), 'medium'),
                    ", rank!("COALESCE(json_extract(ev.payload, '$.severity'), 'medium')"), ",
                    'alert ' || json_extract(ev.payload, '$.id') || ': ' || json_extract(ev.payload, '$.metric')
                      || COALESCE(' on cluster ' || json_extract(ev.payload, '$.slice.cluster'), ''),
                    ev.at_ms, ev.seq
             FROM ev JOIN interactions i ON i.id = json_extract(ev.payload, '$.evidence[0]')
             WHERE json_extract(ev.payload, '$.group') IS NOT NULL"
        ),
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::JUDGE_VERDICT,
        sql: concat!(
            "INSERT OR IGNORE INTO review_items (id, seq, tenant, interaction_id, source, severity, severity_rank,
                                                 reason, created_ms, updated_seq)
             SELECT 'rv_judge_' || iid, seq, tenant, iid, 'judge', sev, ", rank!("sev"), ",
                    'judge: ' || verdict || ': ' || COALESCE(reason, '')
                      || COALESCE(' | suggested correction: ' || correction, ''),
                    at_ms, seq
             FROM (SELECT seq, tenant, at_ms, json_extract(payload, '$.interaction_id') AS iid,
                          json_extract(payload, '$.verdict') AS verdict,
                          json_extract(payload, '$.reason') AS reason,
                          json_extract(payload, '$.correction') AS correction,
                          CASE json_extract(payload, '$.verdict') WHEN 'violation' THEN 'high' ELSE 'medium' END AS sev
                   FROM ev WHERE json_extract(payload, '$.verdict') IN ('outdated', 'violation'))"
        ),
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::FEEDBACK_RECEIVED,
        sql: "INSERT INTO feedback (id, seq, tenant, interaction_id, at_ms)
              SELECT json_extract(payload, '$.id'), seq, tenant, json_extract(payload, '$.interaction_id'), at_ms FROM ev",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::FEEDBACK_RECEIVED,
        sql: "INSERT INTO idempotency (tenant, scope, key, seq)
              SELECT tenant, 'feedback', json_extract(payload, '$.idempotency_key'), seq FROM ev
              WHERE json_extract(payload, '$.idempotency_key') IS NOT NULL",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::FEEDBACK_RECEIVED,
        sql: concat!(
            "INSERT OR IGNORE INTO review_items (id, seq, tenant, interaction_id, source, severity, severity_rank,
                                                 reason, created_ms, updated_seq)
             SELECT 'rv_user_report_' || iid, seq, tenant, iid, 'user_report', sev, ", rank!("sev"), ", reason, at_ms, seq
             FROM (SELECT seq, tenant, at_ms, json_extract(payload, '$.interaction_id') AS iid,
                          COALESCE(json_extract(payload, '$.severity'), 'medium') AS sev,
                          CASE WHEN json_extract(payload, '$.wrong_answer') THEN 'reported wrong answer'
                               ELSE 'thumbs down' END AS reason
                   FROM ev WHERE json_extract(payload, '$.report'))"
        ),
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::HANDOFF_RECORDED,
        sql: "INSERT INTO handoffs (id, seq, tenant, conversation_id, event, at_ms)
              SELECT json_extract(payload, '$.id'), seq, tenant, json_extract(payload, '$.conversation_id'),
                     json_extract(payload, '$.event'), json_extract(payload, '$.at_ms') FROM ev",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::HANDOFF_RECORDED,
        sql: "INSERT INTO idempotency (tenant, scope, key, seq)
              SELECT tenant, 'handoff', json_extract(payload, '$.idempotency_key'), seq FROM ev
              WHERE json_extract(payload, '$.idempotency_key') IS NOT NULL",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::REVIEW_CLAIMED,
        sql: "UPDATE review_items SET
                guard = CASE WHEN status <> 'done'
                              AND (status = 'open' OR claimed_by = (SELECT actor FROM ev)
                                   OR lease_until_ms <= (SELECT at_ms FROM ev))
                              AND NOT EXISTS (SELECT 1 FROM review_labels l
                                              WHERE l.item_id = review_items.id AND l.reviewer = (SELECT actor FROM ev))
                             THEN 1 ELSE 0 END,
                status = 'claimed',
                claimed_by = (SELECT actor FROM ev),
                lease_until_ms = (SELECT json_extract(payload, '$.lease_until_ms') FROM ev),
                updated_seq = (SELECT seq FROM ev)
              WHERE id = (SELECT json_extract(payload, '$.item_id') FROM ev)",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::REVIEW_COMPLETED,
        sql: "INSERT INTO review_labels (item_id, reviewer, seq, tenant, verdict, category, at_ms)
              SELECT json_extract(payload, '$.item_id'), actor, seq, tenant, json_extract(payload, '$.verdict'),
                     json_extract(payload, '$.category'), at_ms FROM ev",
    }
}

inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::REVIEW_COMPLETED,
        sql: "UPDATE review_items SET
                guard = CASE WHEN status = 'claimed' AND claimed_by = (SELECT actor FROM ev)
                              AND lease_until_ms > (SELECT at_ms FROM ev) THEN 1 ELSE 0 END,
                labels = labels + 1,
                required = MAX(1, COALESCE((SELECT json_extract(payload, '$.required') FROM ev), 1)),
                status = CASE WHEN labels + 1 >= MAX(1, COALESCE((SELECT json_extract(payload, '$.required') FROM ev), 1))
                              THEN 'done' ELSE 'open' END,
                done_ms = CASE WHEN labels + 1 >= MAX(1, COALESCE((SELECT json_extract(payload, '$.required') FROM ev), 1))
                               THEN (SELECT at_ms FROM ev) ELSE NULL END,
                claimed_by = NULL,
                lease_until_ms = NULL,
                updated_seq = (SELECT seq FROM ev)
              WHERE id = (SELECT json_extract(payload, '$.item_id') FROM ev)",
    }
}

/// A filter for the review queue.
#[derive(Debug, Clone, Default)]
pub struct ReviewQuery {
    /// `None` = every tenant.
    pub tenant: Option<String>,
    /// `open`, `claimed` or `done`, as seen at `now_ms` (an expired claim is `open`).
    pub status: Option<String>,
    pub source: Option<String>,
    pub now_ms: i64,
    /// Only items created at or after / before these times.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Only items after this one in queue order (the previous page's last item id).
    pub after_id: Option<String>,
    pub limit: u32,
}

/// One review item, with its interaction's segment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReviewItemRow {
    pub id: String,
    pub seq: i64,
    pub tenant: String,
    pub interaction_id: String,
    pub source: String,
    pub severity: String,
    pub reason: Option<String>,
    pub created_ms: i64,
    /// As stored; see `keel_loop::review::ClaimState` for the status at a given time.
    pub status: String,
    pub claimed_by: Option<String>,
    pub lease_until_ms: Option<i64>,
    pub labels: i64,
    pub required: i64,
    pub done_ms: Option<i64>,
    /// The interaction's `context` (`null` if erased).
    pub context: serde_json::Value,
    pub policy_version: Option<String>,
}

pub(crate) const SELECT_ITEMS: &str =
    "SELECT r.id, r.seq, r.tenant, r.interaction_id, r.source, r.severity, r.reason, r.created_ms, r.status,
            r.claimed_by, r.lease_until_ms, r.labels, r.required, r.done_ms,
            json_extract(e.payload, '$.context') AS context,
            json_extract(e.payload, '$.policy_version') AS policy_version
     FROM review_items r LEFT JOIN interactions i ON i.id = r.interaction_id
     LEFT JOIN events e ON e.seq = i.seq";

/// The status at `?now` as SQL (an expired claim reads as open).
pub(crate) const EFFECTIVE_STATUS: &str =
    "(CASE WHEN r.status = 'claimed' AND r.lease_until_ms <= ?1 THEN 'open' ELSE r.status END)";

pub(crate) fn item_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<ReviewItemRow, StoreError> {
    let json = |col: &str| -> Result<serde_json::Value, StoreError> {
        let t: Option<String> = r.try_get(col)?;
        Ok(match t {
            Some(t) => serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t)),
            None => serde_json::Value::Null,
        })
    };
    Ok(ReviewItemRow {
        id: r.try_get("id")?,
        seq: r.try_get("seq")?,
        tenant: r.try_get("tenant")?,
        interaction_id: r.try_get("interaction_id")?,
        source: r.try_get("source")?,
        severity: r.try_get("severity")?,
        reason: r.try_get("reason")?,
        created_ms: r.try_get("created_ms")?,
        status: r.try_get("status")?,
        claimed_by: r.try_get("claimed_by")?,
        lease_until_ms: r.try_get("lease_until_ms")?,
        labels: r.try_get("labels")?,
        required: r.try_get("required")?,
        done_ms: r.try_get("done_ms")?,
        context: json("context")?,
        policy_version: r.try_get("policy_version")?,
    })
}
