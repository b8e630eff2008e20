//! The ledger's storage: every event is sealed as a Merkle leaf in its own write transaction.
//!
//! Tables: `ledger_leaves` (index, seq, salt, payload hash, leaf hash), `ledger_nodes` (perfect
//! subtree hashes, written once), `ledger_checkpoints` (signed notes). The Merkle math lives in
//! `keel-ledger`; this module only persists and fetches what it needs (O(log n) node reads).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use keel_ledger::{EventLeaf, Frontier, Hash, LedgerError, NodeReader};
use rand::RngCore;
use serde::Serialize;
use sqlx::{Row, SqliteConnection};

use crate::{SqliteMigration, SqliteProjection, StoreError};

inventory::submit! {
    SqliteMigration {
        id: "0004_ledger",
        sql: "CREATE TABLE IF NOT EXISTS ledger_leaves (
                ledger_index INTEGER PRIMARY KEY,
                seq          INTEGER NOT NULL UNIQUE,
                salt         BLOB,
                payload_hash BLOB NOT NULL,
                leaf_hash    BLOB NOT NULL
              );
              CREATE TABLE IF NOT EXISTS ledger_nodes (
                level INTEGER NOT NULL,
                idx   INTEGER NOT NULL,
                hash  BLOB NOT NULL,
                PRIMARY KEY (level, idx)
              ) WITHOUT ROWID;
              CREATE TABLE IF NOT EXISTS ledger_checkpoints (
                size      INTEGER PRIMARY KEY,
                root      BLOB NOT NULL,
                note      TEXT NOT NULL,
                issued_ms INTEGER NOT NULL
              );",
    }
}

// Erasure removes payloads and their salts; the payload hash (and so the leaf) stays.
inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::PAYLOAD_ERASED,
        sql: "UPDATE events SET payload = NULL
              WHERE seq IN (SELECT value FROM ev, json_each(ev.payload, '$.seqs'))",
    }
}
inventory::submit! {
    SqliteProjection {
        kind: keel_core::EventKind::PAYLOAD_ERASED,
        sql: "UPDATE ledger_leaves SET salt = NULL
              WHERE seq IN (SELECT value FROM ev, json_each(ev.payload, '$.seqs'))",
    }
}

/// Length of the random salt mixed into each payload commitment.
pub const SALT_LEN: usize = keel_ledger::SALT_LEN;

/// A `NodeReader` over nodes fetched ahead of time.
#[derive(Debug, Default)]
pub struct NodeMap(pub HashMap<(u32, u64), Hash>);

impl NodeReader for NodeMap {
    fn node(&self, level: u32, index: u64) -> Result<Hash, LedgerError> {
        self.0
            .get(&(level, index))
            .copied()
            .ok_or(LedgerError::MissingNode { level, index })
    }
}

/// A `NodeReader` that records which nodes a computation asks for (answering zeros): which
/// nodes a root or proof needs depends only on sizes and indices, never on hash values.
#[derive(Debug, Default)]
struct Recorder(Mutex<HashSet<(u32, u64)>>);

impl NodeReader for Recorder {
    fn node(&self, level: u32, index: u64) -> Result<Hash, LedgerError> {
        if let Ok(mut s) = self.0.lock() {
            s.insert((level, index));
        }
        Ok([0u8; 32])
    }
}

fn ledger_err(e: LedgerError) -> StoreError {
    StoreError::Ledger(e)
}

fn to_hash(bytes: &[u8]) -> Result<Hash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("stored hash has {} bytes", bytes.len())))
}

/// Runs `f` over the nodes it needs, fetched with one query per node (O(log n)).
pub(crate) async fn with_nodes<'c, T, E>(
    conn: E,
    f: impl Fn(&dyn NodeReader) -> Result<T, LedgerError>,
) -> Result<T, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite> + Copy,
{
    let rec = Recorder::default();
    f(&rec).map_err(ledger_err)?;
    let keys: Vec<(u32, u64)> = rec.0.into_inner().unwrap_or_default().into_iter().collect();
    let mut map = NodeMap::default();
    // One round trip per chunk of nodes (a proof needs ~2·log2(n) of them).
    for chunk in keys.chunks(200) {
        let values = vec!["(?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "WITH k(level, idx) AS (VALUES {values})
             SELECT n.level, n.idx, n.hash FROM ledger_nodes n JOIN k ON n.level = k.level AND n.idx = k.idx"
        );
        let mut q = sqlx::query(&sql);
        for (level, index) in chunk {
            q = q.bind(i64::from(*level)).bind(*index as i64);
        }
        for row in q.fetch_all(conn).await? {
            let level: i64 = row.try_get("level")?;
            let idx: i64 = row.try_get("idx")?;
            let h: Vec<u8> = row.try_get("hash")?;
            map.0.insert((level as u32, idx as u64), to_hash(&h)?);
        }
    }
    f(&map).map_err(ledger_err)
}

/// The right edge of the tree of `size` leaves, read inside the write transaction.
pub(crate) async fn load_frontier(
    conn: &mut SqliteConnection,
    size: u64,
) -> Result<Frontier, StoreError> {
    let mut map = NodeMap::default();
    let mut offset = 0u64;
    for level in (0..64u32).rev() {
        let width = 1u64 << level;
        if size & width != 0 {
            let index = offset >> level;
            let row = sqlx::query("SELECT hash FROM ledger_nodes WHERE level = ?1 AND idx = ?2")
                .bind(i64::from(level))
                .bind(index as i64)
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(row) = row {
                let h: Vec<u8> = row.try_get("hash")?;
                map.0.insert((level, index), to_hash(&h)?);
            }
            offset += width;
        }
    }
    Frontier::load(&map, size).map_err(ledger_err)
}

/// A sealed leaf, computed in memory before it is written.
pub(crate) struct SealedLeaf {
    pub index: u64,
    pub salt: [u8; SALT_LEN],
    pub payload_hash: Hash,
    pub leaf_hash: Hash,
    pub nodes: Vec<keel_ledger::Node>,
}

/// Computes one event's leaf (fresh salt, payload commitment, leaf hash) and pushes it onto the
/// frontier, returning the nodes to persist. Pure apart from the random salt.
pub(crate) fn prepare_leaf(
    frontier: &mut Frontier,
    seq: i64,
    ev: &keel_core::NewEvent,
    payload: &str,
) -> SealedLeaf {
    let mut salt = [0u8; SALT_LEN];
    rand::thread_rng().fill_bytes(&mut salt);
    let payload_hash = keel_ledger::payload_commitment(&salt, payload.as_bytes());
    let index = frontier.size();
    let leaf_hash = EventLeaf {
        seq: seq as u64,
        ledger_index: index,
        at_unix_ms: ev.at_ms,
        kind: ev.kind.clone(),
        actor: ev.actor.clone(),
        tenant: ev.tenant.clone(),
        payload_hash,
    }
    .leaf_hash();
    let nodes = frontier.push(leaf_hash);
    SealedLeaf {
        index,
        salt,
        payload_hash,
        leaf_hash,
        nodes,
    }
}

/// Seals one event: salt, payload commitment, leaf, and the nodes it completes (the per-event
/// path; the batched path writes the same rows with multi-row INSERTs). `payload` is `ev`'s
/// payload as stored.
pub(crate) async fn seal(
    conn: &mut SqliteConnection,
    frontier: &mut Frontier,
    seq: i64,
    ev: &keel_core::NewEvent,
    payload: &str,
) -> Result<u64, StoreError> {
    let leaf = prepare_leaf(frontier, seq, ev, payload);
    sqlx::query(
        "INSERT INTO ledger_leaves (ledger_index, seq, salt, payload_hash, leaf_hash) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(leaf.index as i64)
    .bind(seq)
    .bind(&leaf.salt[..])
    .bind(&leaf.payload_hash[..])
    .bind(&leaf.leaf_hash[..])
    .execute(&mut *conn)
    .await?;
    for n in &leaf.nodes {
        sqlx::query("INSERT INTO ledger_nodes (level, idx, hash) VALUES (?1, ?2, ?3)")
            .bind(i64::from(n.level))
            .bind(n.index as i64)
            .bind(&n.hash[..])
            .execute(&mut *conn)
            .await?;
    }
    Ok(leaf.index)
}

/// A stored signed checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredCheckpoint {
    pub size: u64,
    #[serde(with = "b64")]
    pub root: Hash,
    pub note: String,
    pub issued_ms: i64,
}

/// One event joined with its leaf, exactly as stored (for verification).
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    pub seq: i64,
    pub kind: String,
    pub actor: String,
    pub tenant: String,
    pub at_ms: i64,
    /// The exact stored payload text (`None` once erased).
    pub payload: Option<String>,
}

/// One leaf as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LeafRow {
    pub ledger_index: i64,
    pub seq: i64,
    pub salt: Option<Vec<u8>>,
    pub payload_hash: Vec<u8>,
    pub leaf_hash: Vec<u8>,
}

pub(crate) mod b64 {
    //! Serde helper: hashes as standard padded base64.
    pub fn serialize<S: serde::Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&keel_ledger::encode_hash(h))
    }
}

pub(crate) fn checkpoint_from_row(
    row: &sqlx::sqlite::SqliteRow,
) -> Result<StoredCheckpoint, StoreError> {
    let root: Vec<u8> = row.try_get("root")?;
    let size: i64 = row.try_get("size")?;
    Ok(StoredCheckpoint {
        size: size as u64,
        root: to_hash(&root)?,
        note: row.try_get("note")?,
        issued_ms: row.try_get("issued_ms")?,
    })
}

pub(crate) fn leaf_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<LeafRow, StoreError> {
    Ok(LeafRow {
        ledger_index: row.try_get("ledger_index")?,
        seq: row.try_get("seq")?,
        salt: row.try_get("salt")?,
        payload_hash: row.try_get("payload_hash")?,
        leaf_hash: row.try_get("leaf_hash")?,
    })
}

pub(crate) fn ledger_row(row: &sqlx::sqlite::SqliteRow) -> Result<LedgerRow, StoreError> {
    Ok(LedgerRow {
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        actor: row.try_get("actor")?,
        tenant: row.try_get("tenant")?,
        at_ms: row.try_get("at_ms")?,
        payload: row.try_get("payload")?,
    })
}
