//! The single writer task: drains queued appends and commits them in one transaction each batch.

use std::time::Instant;

use keel_core::{NewEvent, StoredEvent};
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use crate::ledger;
use crate::registry::sqlite_projections;
use crate::StoreError;

pub(crate) struct Job {
    pub events: Vec<NewEvent>,
    /// A worker's state (`key`, JSON) committed atomically with the events.
    pub state: Option<(String, String)>,
    pub reply: Option<oneshot::Sender<Result<Vec<StoredEvent>, StoreError>>>,
}

pub(crate) enum WriterMsg {
    Job(Job),
    Close(oneshot::Sender<()>),
}

pub(crate) async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<WriterMsg>, max: usize) {
    // The tree's right edge after our last commit; reused only if the ledger still has exactly
    // that size when the next transaction starts (another process may have appended).
    let mut frontier: Option<keel_ledger::Frontier> = None;
    let mut batch: Vec<Job> = Vec::with_capacity(64);
    let mut closing: Option<oneshot::Sender<()>> = None;
    while closing.is_none() {
        let Some(first) = rx.recv().await else { break };
        match first {
            WriterMsg::Job(j) => batch.push(j),
            WriterMsg::Close(done) => closing = Some(done),
        }
        let mut n: usize = batch.iter().map(|j| j.events.len()).sum();
        while closing.is_none() && n < max {
            match rx.try_recv() {
                Ok(WriterMsg::Job(j)) => {
                    n += j.events.len();
                    batch.push(j);
                }
                Ok(WriterMsg::Close(done)) => closing = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(&mut conn, &mut batch, &mut frontier).await;
        }
    }
    let _ = conn.close().await;
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

async fn commit_batch(
    conn: &mut SqliteConnection,
    batch: &mut Vec<Job>,
    cached: &mut Option<keel_ledger::Frontier>,
) {
    let started = Instant::now();
    let events: usize = batch.iter().map(|j| j.events.len()).sum();
    let mut results: Vec<Result<Vec<StoredEvent>, StoreError>> = Vec::with_capacity(batch.len());
    let outcome = write_all(conn, batch, &mut results, cached).await;
    if outcome.is_err() {
        *cached = None;
    }
    let results: Vec<Result<Vec<StoredEvent>, StoreError>> = match outcome {
        Ok(()) => results,
        Err(e) => {
            tracing::error!(error = %e, events, "store batch commit failed");
            metrics::counter!(crate::telemetry::STORE_COMMIT_ERRORS).increment(1);
            let msg = e.to_string();
            batch
                .iter()
                .map(|_| Err(StoreError::Corrupt(format!("commit failed: {msg}"))))
                .collect()
        }
    };
    metrics::histogram!(crate::telemetry::STORE_BATCH_EVENTS).record(events as f64);
    metrics::histogram!(crate::telemetry::STORE_COMMIT_SECONDS)
        .record(started.elapsed().as_secs_f64());
    for (job, res) in batch.drain(..).zip(results) {
        match job.reply {
            Some(reply) => {
                let _ = reply.send(res);
            }
            None => {
                if let Err(e) = res {
                    tracing::error!(error = %e, "async append lost");
                    metrics::counter!(crate::telemetry::STORE_ASYNC_LOST).increment(1);
                }
            }
        }
    }
}

async fn write_all(
    conn: &mut SqliteConnection,
    batch: &[Job],
    results: &mut Vec<Result<Vec<StoredEvent>, StoreError>>,
    cached: &mut Option<keel_ledger::Frontier>,
) -> Result<(), StoreError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    // The sequence is read inside the write transaction, never cached across transactions, so
    // another process appending between our batches cannot fork it.
    let row = sqlx::query(
        "SELECT (SELECT COALESCE(MAX(seq), 0) FROM events) AS s,
                (SELECT COALESCE(MAX(ledger_index) + 1, 0) FROM ledger_leaves) AS n",
    )
    .fetch_one(&mut *tx)
    .await?;
    let mut seq: i64 = row.try_get("s")?;
    // Every event is a leaf: the ledger's size equals the event count, or the log is corrupt.
    let size: i64 = row.try_get("n")?;
    if size != seq {
        return Err(StoreError::Corrupt(format!(
            "the ledger has {size} leaves but the log has {seq} events; run `keel audit verify`"
        )));
    }
    let mut frontier = match cached.take() {
        Some(f) if f.size() == size as u64 => f,
        _ => ledger::load_frontier(&mut tx, size as u64).await?,
    };
    // Fast path: the whole batch in a few multi-row statements. If anything fails, it is rolled
    // back and the per-job path below isolates the job at fault.
    {
        let mut sp = tx.begin().await?;
        let mut candidate = frontier.clone();
        match write_batch(&mut sp, &mut candidate, seq, batch).await {
            Ok(per_job) => {
                sp.commit().await?;
                results.extend(per_job.into_iter().map(Ok));
                tx.commit().await?;
                *cached = Some(candidate);
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(error = %e, "batched write failed; retrying job by job");
                sp.rollback().await?;
            }
        }
    }
    for job in batch {
        let mut sp = tx.begin().await?;
        let mut stored = Vec::with_capacity(job.events.len());
        let mut failed = None;
        let saved = frontier.clone();
        for ev in &job.events {
            match write_event(&mut sp, &mut frontier, seq + 1, ev).await {
                Ok(s) => {
                    seq += 1;
                    stored.push(s);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if failed.is_none() {
            if let Some((key, value)) = &job.state {
                if let Err(e) = save_state(&mut sp, key, value, seq).await {
                    failed = Some(e);
                }
            }
        }
        match failed {
            None => {
                sp.commit().await?;
                results.push(Ok(stored));
            }
            Some(e) => {
                sp.rollback().await?;
                frontier = saved;
                seq -= stored.len() as i64;
                results.push(Err(e));
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Rows per multi-row INSERT (SQLite allows 32,766 bound parameters).
const ROWS_PER_INSERT: usize = 400;

fn values_clause(rows: usize, cols: usize) -> String {
    let one = format!("({})", vec!["?"; cols].join(", "));
    vec![one; rows].join(", ")
}

/// Writes every job of the batch: events, leaves and nodes with multi-row INSERTs, then each
/// event's projections and each job's worker state. Returns the stored events per job.
async fn write_batch(
    conn: &mut SqliteConnection,
    frontier: &mut keel_ledger::Frontier,
    mut seq: i64,
    batch: &[Job],
) -> Result<Vec<Vec<StoredEvent>>, StoreError> {
    struct Row<'a> {
        seq: i64,
        ev: &'a NewEvent,
        payload: String,
        leaf: ledger::SealedLeaf,
    }
    let mut rows: Vec<Row> = Vec::with_capacity(batch.iter().map(|j| j.events.len()).sum());
    let mut job_ends = Vec::with_capacity(batch.len());
    for job in batch {
        for ev in &job.events {
            seq += 1;
            let payload = serde_json::to_string(&ev.payload)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let leaf = ledger::prepare_leaf(frontier, seq, ev, &payload);
            rows.push(Row {
                seq,
                ev,
                payload,
                leaf,
            });
        }
        job_ends.push((rows.len(), seq));
    }
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO events (seq, kind, actor, tenant, at_ms, payload) VALUES {}",
            values_clause(chunk.len(), 6)
        );
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = bind_event(q, r.seq, r.ev, &r.payload);
        }
        q.execute(&mut *conn).await?;
        let sql = format!(
            "INSERT INTO ledger_leaves (ledger_index, seq, salt, payload_hash, leaf_hash) VALUES {}",
            values_clause(chunk.len(), 5)
        );
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q
                .bind(r.leaf.index as i64)
                .bind(r.seq)
                .bind(&r.leaf.salt[..])
                .bind(&r.leaf.payload_hash[..])
                .bind(&r.leaf.leaf_hash[..]);
        }
        q.execute(&mut *conn).await?;
    }
    let nodes: Vec<&keel_ledger::Node> = rows.iter().flat_map(|r| r.leaf.nodes.iter()).collect();
    for chunk in nodes.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO ledger_nodes (level, idx, hash) VALUES {}",
            values_clause(chunk.len(), 3)
        );
        let mut q = sqlx::query(&sql);
        for n in chunk {
            q = q
                .bind(i64::from(n.level))
                .bind(n.index as i64)
                .bind(&n.hash[..]);
        }
        q.execute(&mut *conn).await?;
    }
    // Projections, in log order. A run of consecutive events of one kind shares one statement
    // per INSERT projection (`ev` then holds several rows); other projections run per event.
    let mut i = 0;
    while i < rows.len() {
        let kind = &rows[i].ev.kind;
        let mut j = i + 1;
        while j < rows.len() && &rows[j].ev.kind == kind && j - i < ROWS_PER_INSERT {
            j += 1;
        }
        let run = &rows[i..j];
        for p in sqlite_projections(kind) {
            if run.len() > 1
                && p.sql
                    .trim_start()
                    .to_ascii_uppercase()
                    .starts_with("INSERT")
            {
                let sql = format!(
                    "WITH ev(seq, kind, actor, tenant, at_ms, payload) AS (VALUES {}) {}",
                    values_clause(run.len(), 6),
                    p.sql
                );
                let mut q = sqlx::query(&sql);
                for r in run {
                    q = bind_event(q, r.seq, r.ev, &r.payload);
                }
                q.execute(&mut *conn).await?;
            } else {
                for r in run {
                    project_one(conn, p, r.seq, r.ev, &r.payload).await?;
                }
            }
        }
        i = j;
    }
    let mut out = Vec::with_capacity(batch.len());
    let mut start = 0;
    for (job, (end, last_seq)) in batch.iter().zip(job_ends) {
        if let Some((key, value)) = &job.state {
            save_state(conn, key, value, last_seq).await?;
        }
        out.push(
            rows[start..end]
                .iter()
                .map(|r| StoredEvent {
                    seq: r.seq,
                    kind: r.ev.kind.clone(),
                    actor: r.ev.actor.clone(),
                    tenant: r.ev.tenant.clone(),
                    at_ms: r.ev.at_ms,
                    payload: r.ev.payload.clone(),
                })
                .collect(),
        );
        start = end;
    }
    Ok(out)
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Binds one event's six columns (seq, kind, actor, tenant, at_ms, payload), in that order.
fn bind_event<'q>(q: Query<'q>, seq: i64, ev: &'q NewEvent, payload: &'q str) -> Query<'q> {
    q.bind(seq)
        .bind(ev.kind.as_str())
        .bind(ev.actor.as_str())
        .bind(ev.tenant.as_str())
        .bind(ev.at_ms)
        .bind(payload)
}

/// Replaces a worker's saved state, in the same transaction as its events.
async fn save_state(
    conn: &mut SqliteConnection,
    key: &str,
    value: &str,
    seq: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO worker_state (key, value, seq) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, seq = excluded.seq",
    )
    .bind(key)
    .bind(value)
    .bind(seq)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Runs one projection for one event.
async fn project_one(
    conn: &mut SqliteConnection,
    p: &crate::SqliteProjection,
    seq: i64,
    ev: &NewEvent,
    payload: &str,
) -> Result<(), StoreError> {
    let sql = format!(
        "WITH ev(seq, kind, actor, tenant, at_ms, payload) AS (SELECT ?1, ?2, ?3, ?4, ?5, ?6) {}",
        p.sql
    );
    bind_event(sqlx::query(&sql), seq, ev, payload)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Runs every registered projection for one event.
async fn project(
    conn: &mut SqliteConnection,
    seq: i64,
    ev: &NewEvent,
    payload: &str,
) -> Result<(), StoreError> {
    for p in sqlite_projections(&ev.kind) {
        project_one(conn, p, seq, ev, payload).await?;
    }
    Ok(())
}

async fn write_event(
    conn: &mut SqliteConnection,
    frontier: &mut keel_ledger::Frontier,
    seq: i64,
    ev: &NewEvent,
) -> Result<StoredEvent, StoreError> {
    let payload =
        serde_json::to_string(&ev.payload).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    bind_event(
        sqlx::query(
            "INSERT INTO events (seq, kind, actor, tenant, at_ms, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        ),
        seq,
        ev,
        &payload,
    )
    .execute(&mut *conn)
    .await?;
    ledger::seal(conn, frontier, seq, ev, &payload).await?;
    project(conn, seq, ev, &payload).await?;
    Ok(StoredEvent {
        seq,
        kind: ev.kind.clone(),
        actor: ev.actor.clone(),
        tenant: ev.tenant.clone(),
        at_ms: ev.at_ms,
        payload: ev.payload.clone(),
    })
}
