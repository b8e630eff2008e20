//! The SQLite store: one writer task that group-commits with `BEGIN IMMEDIATE`, a read pool.

mod writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use keel_core::{ApiKeyRecord, NewEvent, StoredEvent};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use crate::alerts::{alert_from_row, ALERT_COLUMNS};
use crate::facts::{fact_from_row, FactRow, SELECT_FACTS};
use crate::interactions::{interaction_from_row, SELECT_INTERACTIONS};
use crate::keys::{key_from_row, SELECT_KEYS};
use crate::ledger::{checkpoint_from_row, leaf_from_row, ledger_row, with_nodes};
use crate::policies::{activation_from_row, version_from_row};
use crate::registry::sqlite_migrations;
use crate::reviews::{item_from_row, EFFECTIVE_STATUS, SELECT_ITEMS};
use crate::{ActivationRow, PolicyVersionRow};
use crate::{AlertQuery, AlertRow, LeafRow, LedgerRow, SeqFilter, StoredCheckpoint};
use crate::{Durability, InteractionQuery, InteractionRow, Store, StoreError};
use crate::{ReviewItemRow, ReviewQuery};
use keel_ledger::Hash;

use writer::{Job, WriterMsg};

/// How to open a SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// `sqlite://PATH` (a relative PATH is relative to the working directory).
    pub url: String,
    pub durability: Durability,
    /// Most events committed in one transaction.
    pub max_batch: usize,
    /// Read connections.
    pub read_connections: u32,
    /// How long a writer waits for another process's write lock.
    pub busy_timeout: Duration,
}

impl SqliteOptions {
    /// Defaults for `url` with the given durability.
    pub fn new(url: impl Into<String>, durability: Durability) -> Self {
        Self {
            url: url.into(),
            durability,
            max_batch: 512,
            read_connections: 4,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// The SQLite implementation of [`Store`].
#[derive(Debug)]
pub struct SqliteStore {
    tx: mpsc::Sender<WriterMsg>,
    reads: SqlitePool,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    path: PathBuf,
}

/// Extracts the file path from a `sqlite://PATH` url.
pub fn sqlite_path(url: &str) -> Result<PathBuf, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::UnsupportedUrl(url.to_string()))?;
    let rest = rest.split('?').next().unwrap_or_default();
    if rest.is_empty() || rest == ":memory:" {
        return Err(StoreError::UnsupportedUrl(url.to_string()));
    }
    Ok(PathBuf::from(rest))
}

impl SqliteStore {
    /// Opens (creating and migrating if absent) the database and starts the writer task.
    pub async fn open(opts: SqliteOptions) -> Result<Self, StoreError> {
        let path = sqlite_path(&opts.url)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let sync = match opts.durability {
            Durability::Durable => SqliteSynchronous::Full,
            Durability::Async => SqliteSynchronous::Normal,
        };
        let base = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .busy_timeout(opts.busy_timeout)
            .foreign_keys(true);
        let mut conn = SqliteConnection::connect_with(
            &base
                .clone()
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(sync),
        )
        .await?;
        migrate(&mut conn).await?;
        let reads = SqlitePoolOptions::new()
            .max_connections(opts.read_connections.max(1))
            .min_connections(1)
            .connect_with(base.read_only(true))
            .await?;
        let (tx, rx) = mpsc::channel(16_384);
        let handle = tokio::spawn(writer::run(conn, rx, opts.max_batch.max(1)));
        Ok(Self {
            tx,
            reads,
            writer: Mutex::new(Some(handle)),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn check_size(&self, size: u64) -> Result<(), StoreError> {
        let current = self.ledger_size().await?;
        if size > current {
            return Err(StoreError::Ledger(
                keel_ledger::LedgerError::SizeBeyondTree {
                    requested: size,
                    size: current,
                },
            ));
        }
        Ok(())
    }

    /// A short-lived write connection for rows that are not events (checkpoints).
    async fn reads_writer(&self) -> Result<SqliteConnection, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&self.path)
            .busy_timeout(Duration::from_secs(10));
        Ok(SqliteConnection::connect_with(&opts).await?)
    }

    /// The read pool, for modules that add their own queries.
    pub fn read_pool(&self) -> &SqlitePool {
        &self.reads
    }
}

/// Applies every registered migration not yet applied, in one `BEGIN IMMEDIATE` transaction so
/// concurrent processes never race.
async fn migrate(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS _keel_migrations (id TEXT PRIMARY KEY, applied_ms INTEGER NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    for m in sqlite_migrations() {
        let done = sqlx::query("SELECT 1 FROM _keel_migrations WHERE id = ?1")
            .bind(m.id)
            .fetch_optional(&mut *tx)
            .await?;
        if done.is_some() {
            continue;
        }
        sqlx::raw_sql(m.sql)
            .execute(&mut *tx)
            .await
            .map_err(|source| StoreError::Migration {
                id: m.id.to_string(),
                source,
            })?;
        sqlx::query("INSERT INTO _keel_migrations (id, applied_ms) VALUES (?1, 0)")
            .bind(m.id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

fn event_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<StoredEvent, StoreError> {
    let payload: Option<String> = row.try_get("payload")?;
    Ok(StoredEvent {
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        actor: row.try_get("actor")?,
        tenant: row.try_get("tenant")?,
        at_ms: row.try_get("at_ms")?,
        payload: match payload {
            Some(t) => serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            None => serde_json::Value::Null,
        },
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<StoredEvent>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WriterMsg::Job(Job {
                events,
                state: None,
                reply: Some(reply),
            }))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn append_with_state(
        &self,
        events: Vec<NewEvent>,
        key: &str,
        state: String,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WriterMsg::Job(Job {
                events,
                state: Some((key.to_string(), state)),
                reply: Some(reply),
            }))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn load_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM worker_state WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.reads)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    async fn list_alerts(&self, q: &AlertQuery) -> Result<Vec<AlertRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts a JOIN events e ON e.seq = a.seq
             WHERE (?1 IS NULL OR a.tenant = ?1) AND (?2 IS NULL OR a.seq < ?2)
               AND (?3 IS NULL OR a.metric = ?3) AND (?5 IS NULL OR a.status = ?5)
             ORDER BY a.seq DESC LIMIT ?4"
        ))
        .bind(q.tenant.as_deref())
        .bind(q.before_seq)
        .bind(q.metric.as_deref())
        .bind(i64::from(q.limit))
        .bind(q.status.as_deref())
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(alert_from_row).collect()
    }

    async fn alert(&self, id: &str) -> Result<Option<AlertRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts a JOIN events e ON e.seq = a.seq WHERE a.id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.reads)
        .await?;
        row.as_ref().map(alert_from_row).transpose()
    }

    async fn count_alerts(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM alerts WHERE status = 'open'")
            .fetch_one(&self.reads)
            .await?;
        let n: i64 = row.try_get("n")?;
        Ok(n as u64)
    }

    async fn fact_events(&self, key: Option<&str>) -> Result<Vec<FactRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SELECT_FACTS} WHERE (?1 IS NULL OR f.key = ?1) ORDER BY f.seq"
        ))
        .bind(key)
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(fact_from_row).collect()
    }

    async fn fact_fingerprint(&self) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n, COALESCE(MAX(seq), 0) AS last FROM facts")
            .fetch_one(&self.reads)
            .await?;
        Ok((row.try_get("n")?, row.try_get("last")?))
    }

    async fn policy_versions(&self) -> Result<Vec<PolicyVersionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, seq, name, owner, actor, reason, published_ms FROM policy_versions ORDER BY seq",
        )
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    async fn policy_bundle(&self, version: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let row = sqlx::query(
            "SELECT e.payload FROM policy_versions v JOIN events e ON e.seq = v.seq WHERE v.version = ?1",
        )
        .bind(version)
        .fetch_optional(&self.reads)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let text: Option<String> = row.try_get("payload")?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    async fn policy_activations(&self) -> Result<Vec<ActivationRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT scope, version, seq, actor, at_ms FROM policy_activations ORDER BY scope",
        )
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(activation_from_row).collect()
    }

    async fn rollouts(&self) -> Result<Vec<crate::RolloutRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "{} ORDER BY seq",
            crate::rollouts::SELECT_ROLLOUTS
        ))
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(crate::rollouts::rollout_from_row).collect()
    }

    async fn idempotent_event(
        &self,
        tenant: &str,
        scope: &str,
        key: &str,
    ) -> Result<Option<StoredEvent>, StoreError> {
        let row = sqlx::query(
            "SELECT e.seq, e.kind, e.actor, e.tenant, e.at_ms, e.payload FROM idempotency k
             JOIN events e ON e.seq = k.seq WHERE k.tenant = ?1 AND k.scope = ?2 AND k.key = ?3",
        )
        .bind(tenant)
        .bind(scope)
        .bind(key)
        .fetch_optional(&self.reads)
        .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn events_in_range(
        &self,
        kinds: &[&str],
        tenant: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let kinds_json =
            serde_json::to_string(kinds).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT seq, kind, actor, tenant, at_ms, payload FROM events
             WHERE kind IN (SELECT value FROM json_each(?1)) AND (?2 IS NULL OR tenant = ?2)
               AND at_ms >= ?3 AND at_ms < ?4 ORDER BY seq",
        )
        .bind(kinds_json)
        .bind(tenant)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn events_of_kinds_after(
        &self,
        kinds: &[&str],
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let kinds_json =
            serde_json::to_string(kinds).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT seq, kind, actor, tenant, at_ms, payload FROM events
             WHERE kind IN (SELECT value FROM json_each(?1)) AND seq > ?2
             ORDER BY seq LIMIT ?3",
        )
        .bind(kinds_json)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn review_items(&self, q: &ReviewQuery) -> Result<Vec<ReviewItemRow>, StoreError> {
        let sql = format!(
            "{SELECT_ITEMS}
             WHERE (?2 IS NULL OR r.tenant = ?2) AND (?3 IS NULL OR {EFFECTIVE_STATUS} = ?3)
               AND (?4 IS NULL OR r.source = ?4) AND (?5 IS NULL OR r.created_ms >= ?5)
               AND (?6 IS NULL OR r.created_ms < ?6)
               AND (?8 IS NULL OR (-r.severity_rank, r.created_ms, r.id) >
                    (SELECT -c.severity_rank, c.created_ms, c.id FROM review_items c WHERE c.id = ?8))
             ORDER BY r.severity_rank DESC, r.created_ms, r.id LIMIT ?7"
        );
        let rows = sqlx::query(&sql)
            .bind(q.now_ms)
            .bind(q.tenant.as_deref())
            .bind(q.status.as_deref())
            .bind(q.source.as_deref())
            .bind(q.from_ms)
            .bind(q.to_ms)
            .bind(i64::from(q.limit))
            .bind(q.after_id.as_deref())
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(item_from_row).collect()
    }

    async fn review_item(&self, id: &str) -> Result<Option<ReviewItemRow>, StoreError> {
        let row = sqlx::query(&format!("{SELECT_ITEMS} WHERE r.id = ?1"))
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        row.as_ref().map(item_from_row).transpose()
    }

    async fn review_labels(&self, item_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.seq, e.kind, e.actor, e.tenant, e.at_ms, e.payload FROM review_labels l
             JOIN events e ON e.seq = l.seq WHERE l.item_id = ?1 ORDER BY l.seq",
        )
        .bind(item_id)
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    fn submit(&self, events: Vec<NewEvent>) -> Result<(), StoreError> {
        self.tx
            .try_send(WriterMsg::Job(Job {
                events,
                state: None,
                reply: None,
            }))
            .map_err(|_| StoreError::Closed)
    }

    async fn last_seq(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS s FROM events")
            .fetch_one(&self.reads)
            .await?;
        Ok(row.try_get("s")?)
    }

    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, actor, tenant, at_ms, payload FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(&format!("{SELECT_KEYS} WHERE hash = ?1"))
            .bind(hash)
            .fetch_optional(&self.reads)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn key_by_id(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let row = sqlx::query(&format!("{SELECT_KEYS} WHERE key_id = ?1"))
            .bind(key_id)
            .fetch_optional(&self.reads)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(&format!("{SELECT_KEYS} ORDER BY created_ms, key_id"))
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn interaction(&self, id: &str) -> Result<Option<InteractionRow>, StoreError> {
        let row = sqlx::query(&format!("{SELECT_INTERACTIONS} WHERE i.id = ?1"))
            .bind(id)
            .fetch_optional(&self.reads)
            .await?;
        row.as_ref().map(interaction_from_row).transpose()
    }

    async fn list_interactions(
        &self,
        q: &InteractionQuery,
    ) -> Result<Vec<InteractionRow>, StoreError> {
        let sql = format!(
            "{SELECT_INTERACTIONS}
             WHERE (?1 IS NULL OR i.tenant = ?1)
               AND (?2 IS NULL OR i.conversation_id = ?2)
               AND (?3 IS NULL OR i.at_ms >= ?3)
               AND (?4 IS NULL OR i.seq < ?4)
             ORDER BY i.seq DESC LIMIT ?5"
        );
        let rows = sqlx::query(&sql)
            .bind(q.tenant.as_deref())
            .bind(q.conversation_id.as_deref())
            .bind(q.since_ms)
            .bind(q.before_seq)
            .bind(i64::from(q.limit))
            .fetch_all(&self.reads)
            .await?;
        rows.iter().map(interaction_from_row).collect()
    }

    async fn ledger_size(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(ledger_index) + 1, 0) AS n FROM ledger_leaves")
            .fetch_one(&self.reads)
            .await?;
        let n: i64 = row.try_get("n")?;
        Ok(n as u64)
    }

    async fn ledger_root(&self, size: u64) -> Result<Hash, StoreError> {
        self.check_size(size).await?;
        with_nodes(&self.reads, |r| keel_ledger::root(r, size)).await
    }

    async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
        self.check_size(size).await?;
        with_nodes(&self.reads, |r| {
            keel_ledger::inclusion_proof(r, index, size)
        })
        .await
    }

    async fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, StoreError> {
        self.check_size(to).await?;
        with_nodes(&self.reads, |r| keel_ledger::consistency_proof(r, from, to)).await
    }

    async fn leaves(&self, from: u64, limit: u32) -> Result<Vec<LeafRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT ledger_index, seq, salt, payload_hash, leaf_hash FROM ledger_leaves
             WHERE ledger_index >= ?1 ORDER BY ledger_index LIMIT ?2",
        )
        .bind(from as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(leaf_from_row).collect()
    }

    async fn ledger_rows(&self, after: i64, limit: u32) -> Result<Vec<LedgerRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, actor, tenant, at_ms, payload FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reads)
        .await?;
        rows.iter().map(ledger_row).collect()
    }

    async fn erasable_seqs(
        &self,
        filter: &SeqFilter,
        kinds: &[&str],
    ) -> Result<Vec<i64>, StoreError> {
        let kinds_json =
            serde_json::to_string(kinds).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (cond, arg): (&str, Option<String>) = match filter {
            SeqFilter::LedgerIndex(i) => (
                "e.seq = (SELECT seq FROM ledger_leaves WHERE ledger_index = ?2)",
                Some(i.to_string()),
            ),
            SeqFilter::Conversation(c) => (
                "e.seq IN (SELECT seq FROM interactions WHERE conversation_id = ?2)",
                Some(c.clone()),
            ),
            SeqFilter::User(u) => (
                "json_extract(e.payload, '$.context.user') = ?2",
                Some(u.clone()),
            ),
            SeqFilter::Before(ms) => ("e.at_ms < CAST(?2 AS INTEGER)", Some(ms.to_string())),
        };
        let sql = format!(
            "SELECT e.seq FROM events e WHERE e.payload IS NOT NULL
               AND e.kind IN (SELECT value FROM json_each(?1)) AND {cond} ORDER BY e.seq"
        );
        let rows = sqlx::query(&sql)
            .bind(kinds_json)
            .bind(arg)
            .fetch_all(&self.reads)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<i64, _>("seq").map_err(StoreError::from))
            .collect()
    }

    async fn save_checkpoint(&self, cp: &StoredCheckpoint) -> Result<(), StoreError> {
        // Checkpoints are attestations over the log, not state changes: written directly (one
        // small row), idempotent per size.
        let mut conn = self.reads_writer().await?;
        sqlx::query(
            "INSERT OR IGNORE INTO ledger_checkpoints (size, root, note, issued_ms) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(cp.size as i64)
        .bind(&cp.root[..])
        .bind(&cp.note)
        .bind(cp.issued_ms)
        .execute(&mut conn)
        .await?;
        let _ = conn.close().await;
        Ok(())
    }

    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let row = sqlx::query(
            "SELECT size, root, note, issued_ms FROM ledger_checkpoints ORDER BY size DESC LIMIT 1",
        )
        .fetch_optional(&self.reads)
        .await?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        let rows =
            sqlx::query("SELECT size, root, note, issued_ms FROM ledger_checkpoints ORDER BY size")
                .fetch_all(&self.reads)
                .await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(WriterMsg::Close(done)).await.is_ok() {
            let _ = rx.await;
        }
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let _ = h.await;
        }
        self.reads.close().await;
    }
}
