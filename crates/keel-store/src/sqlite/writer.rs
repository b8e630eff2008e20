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
            commit_batch(&mut conn, &mut batch).await;
        }
    }
    let _ = conn.close().await;
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

async fn commit_batch(conn: &mut SqliteConnection, batch: &mut Vec<Job>) {
    let started = Instant::now();
    let events: usize = batch.iter().map(|j| j.events.len()).sum();
    let mut results: Vec<Result<Vec<StoredEvent>, StoreError>> = Vec::with_capacity(batch.len());
    let outcome = write_all(conn, batch, &mut results).await;
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
) -> Result<(), StoreError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    // The sequence is read inside the write transaction, never cached across transactions, so
    // another process appending between our batches cannot fork it.
    let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS s FROM events")
        .fetch_one(&mut *tx)
        .await?;
    let mut seq: i64 = row.try_get("s")?;
    // Every event is a leaf: the ledger's size equals the event count, or the log is corrupt.
    let size = ledger::ledger_size(&mut tx).await?;
    if size != seq {
        return Err(StoreError::Corrupt(format!(
            "the ledger has {size} leaves but the log has {seq} events; run `keel audit verify`"
        )));
    }
    let mut frontier = ledger::load_frontier(&mut tx, size as u64).await?;
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
                let r = sqlx::query(
                    "INSERT INTO worker_state (key, value, seq) VALUES (?1, ?2, ?3)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value, seq = excluded.seq",
                )
                .bind(key)
                .bind(value)
                .bind(seq)
                .execute(&mut *sp)
                .await;
                if let Err(e) = r {
                    failed = Some(StoreError::from(e));
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

async fn write_event(
    conn: &mut SqliteConnection,
    frontier: &mut keel_ledger::Frontier,
    seq: i64,
    ev: &NewEvent,
) -> Result<StoredEvent, StoreError> {
    let payload =
        serde_json::to_string(&ev.payload).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query(
        "INSERT INTO events (seq, kind, actor, tenant, at_ms, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(seq)
    .bind(&ev.kind)
    .bind(&ev.actor)
    .bind(&ev.tenant)
    .bind(ev.at_ms)
    .bind(&payload)
    .execute(&mut *conn)
    .await?;
    ledger::seal(
        conn, frontier, seq, ev.at_ms, &ev.kind, &ev.actor, &ev.tenant, &payload,
    )
    .await?;
    for p in sqlite_projections(&ev.kind) {
        let sql = format!(
            "WITH ev(seq, kind, actor, tenant, at_ms, payload) AS (SELECT ?1, ?2, ?3, ?4, ?5, ?6) {}",
            p.sql
        );
        sqlx::query(&sql)
            .bind(seq)
            .bind(&ev.kind)
            .bind(&ev.actor)
            .bind(&ev.tenant)
            .bind(ev.at_ms)
            .bind(&payload)
            .execute(&mut *conn)
            .await?;
    }
    Ok(StoredEvent {
        seq,
        kind: ev.kind.clone(),
        actor: ev.actor.clone(),
        tenant: ev.tenant.clone(),
        at_ms: ev.at_ms,
        payload: ev.payload.clone(),
    })
}
