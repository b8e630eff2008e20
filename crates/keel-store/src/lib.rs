//! Durable event storage: the [`Store`] trait and its SQLite implementation.
//!
//! Every state change is an event appended through [`Store::append`]; the sequence number is
//! assigned inside the write transaction. Projections (tables the APIs read) are written in the
//! event's own transaction by SQL that modules register with [`inventory`], as are migrations,
//! so a new module adds its tables without editing a central list. The store holds no business
//! rules: it writes what it is given and answers queries.

pub mod error;
pub mod ledger;
pub mod registry;
pub mod sqlite;
pub mod telemetry;

mod alerts;
pub mod facts;
mod interactions;
mod keys;
pub mod policies;
pub mod reviews;
pub mod rollouts;

use async_trait::async_trait;
use keel_core::{ApiKeyRecord, NewEvent, StoredEvent};
use serde::Serialize;

pub use error::StoreError;
pub use facts::FactRow;
pub use ledger::{LeafRow, LedgerRow, StoredCheckpoint};
pub use policies::{ActivationRow, PolicyVersionRow};
pub use registry::{SqliteMigration, SqliteProjection};
pub use reviews::{ReviewItemRow, ReviewQuery};
pub use rollouts::RolloutRow;
pub use sqlite::{SqliteOptions, SqliteStore};

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Committed and fsynced (`synchronous=FULL`) before `append` returns.
    #[default]
    Durable,
    /// Queued for the writer; `submit` returns at once and the commit is not fsynced
    /// (`synchronous=NORMAL`). A crash can lose the last moments of acknowledged events.
    Async,
}

/// A filter for listing interactions.
#[derive(Debug, Clone, Default)]
pub struct InteractionQuery {
    /// `None` = every tenant.
    pub tenant: Option<String>,
    pub conversation_id: Option<String>,
    /// Only interactions recorded at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Only interactions with a sequence number below this (paging, newest first).
    pub before_seq: Option<i64>,
    pub limit: u32,
}

/// Which events an erasure selects (only those whose payload is still present).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqFilter {
    LedgerIndex(u64),
    Conversation(String),
    User(String),
    /// Recorded before this time (Unix ms).
    Before(i64),
}

/// A filter for listing alerts.
#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    pub tenant: Option<String>,
    pub metric: Option<String>,
    /// `open`, `acknowledged` or `resolved`; `None` = any.
    pub status: Option<String>,
    pub before_seq: Option<i64>,
    pub limit: u32,
}

/// One alert (its `AlertRaised` payload) and where it is in its lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRow {
    pub id: String,
    pub seq: i64,
    pub tenant: String,
    pub at_ms: i64,
    /// `open`, `acknowledged` or `resolved`.
    pub status: String,
    pub acknowledged: Option<AlertAction>,
    pub resolved: Option<AlertAction>,
    pub alert: serde_json::Value,
}

/// Who acknowledged or resolved an alert, when and why (and the proposal a resolution links).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertAction {
    pub by: String,
    pub at_ms: i64,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposal: Option<String>,
}

/// One interaction as the read API returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InteractionRow {
    pub id: String,
    pub seq: i64,
    /// The interaction's leaf in the ledger.
    pub ledger_index: Option<i64>,
    pub tenant: String,
    pub at_ms: i64,
    /// The `InteractionRecorded` payload (`null` if erased).
    pub record: serde_json::Value,
}

/// The event store. One implementation per database; callers see only this trait.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Appends events atomically (all or none) and returns them with their sequence numbers,
    /// once committed with the store's durability.
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<StoredEvent>, StoreError>;

    /// Appends events and, in the same transaction, replaces a worker's saved state (so a
    /// monitor's cursor never disagrees with the alerts it raised).
    async fn append_with_state(
        &self,
        events: Vec<NewEvent>,
        key: &str,
        state: String,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// A worker's saved state.
    async fn load_state(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Alerts matching `q`, newest first.
    async fn list_alerts(&self, q: &AlertQuery) -> Result<Vec<AlertRow>, StoreError>;

    /// One alert by id.
    async fn alert(&self, id: &str) -> Result<Option<AlertRow>, StoreError>;

    /// How many alerts are open (raised, not acknowledged or resolved).
    async fn count_alerts(&self) -> Result<u64, StoreError>;

    /// `FactSet` events in log order: all of them, or one key's history.
    async fn fact_events(&self, key: Option<&str>) -> Result<Vec<FactRow>, StoreError>;

    /// `(count, last seq)` of `FactSet` events: cheap, for deciding whether to reload facts.
    async fn fact_fingerprint(&self) -> Result<(i64, i64), StoreError>;

    /// Every published policy version, oldest first.
    async fn policy_versions(&self) -> Result<Vec<PolicyVersionRow>, StoreError>;

    /// The `PolicyPublished` payload of `version` (its files included).
    async fn policy_bundle(&self, version: &str) -> Result<Option<serde_json::Value>, StoreError>;

    /// The active version per scope.
    async fn policy_activations(&self) -> Result<Vec<ActivationRow>, StoreError>;

    /// Every rollout (canaries, activations), oldest first.
    async fn rollouts(&self) -> Result<Vec<RolloutRow>, StoreError>;

    /// The event an idempotency key of `scope` (`feedback`, `handoff`) was first used for.
    async fn idempotent_event(
        &self,
        tenant: &str,
        scope: &str,
        key: &str,
    ) -> Result<Option<StoredEvent>, StoreError>;

    /// Events of `kinds` recorded in `[from_ms, to_ms)`, of one tenant or all, in order.
    async fn events_in_range(
        &self,
        kinds: &[&str],
        tenant: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Review items matching `q`, by priority: severity, then age.
    async fn review_items(&self, q: &ReviewQuery) -> Result<Vec<ReviewItemRow>, StoreError>;

    /// One review item by id.
    async fn review_item(&self, id: &str) -> Result<Option<ReviewItemRow>, StoreError>;

    /// The `ReviewCompleted` events of an item, oldest first.
    async fn review_labels(&self, item_id: &str) -> Result<Vec<StoredEvent>, StoreError>;

    /// Queues events for the writer without waiting for the commit (the `async` durability
    /// mode). Errors in the later commit are logged and counted, not returned.
    fn submit(&self, events: Vec<NewEvent>) -> Result<(), StoreError>;

    /// The highest committed sequence number (0 when empty).
    async fn last_seq(&self) -> Result<i64, StoreError>;

    /// Events with `seq > after`, in order, at most `limit`.
    async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError>;

    /// Events of `kinds` with `seq > after`, in order, at most `limit` (uses the kind index:
    /// a worker that needs one kind does not read every payload).
    async fn events_of_kinds_after(
        &self,
        kinds: &[&str],
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// The key whose token hashes to `hash`, revoked or not.
    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// The key with this id.
    async fn key_by_id(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Every key, oldest first.
    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// One interaction by id.
    async fn interaction(&self, id: &str) -> Result<Option<InteractionRow>, StoreError>;

    /// Interactions matching `q`, newest first.
    async fn list_interactions(
        &self,
        q: &InteractionQuery,
    ) -> Result<Vec<InteractionRow>, StoreError>;

    /// Number of leaves in the ledger (committed).
    async fn ledger_size(&self) -> Result<u64, StoreError>;

    /// The Merkle root of the first `size` leaves.
    async fn ledger_root(&self, size: u64) -> Result<keel_ledger::Hash, StoreError>;

    /// An inclusion proof for leaf `index` in the tree of `size` leaves.
    async fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> Result<Vec<keel_ledger::Hash>, StoreError>;

    /// A consistency proof between tree sizes `from` and `to`.
    async fn consistency_proof(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<keel_ledger::Hash>, StoreError>;

    /// Leaves with `ledger_index >= from`, in order, at most `limit`.
    async fn leaves(&self, from: u64, limit: u32) -> Result<Vec<LeafRow>, StoreError>;

    /// Events with `seq > after` exactly as stored (raw payload text), for verification.
    async fn ledger_rows(&self, after: i64, limit: u32) -> Result<Vec<LedgerRow>, StoreError>;

    /// Sequence numbers of events of `kinds` matching `filter` whose payload is still present.
    async fn erasable_seqs(
        &self,
        filter: &SeqFilter,
        kinds: &[&str],
    ) -> Result<Vec<i64>, StoreError>;

    /// Stores a signed checkpoint (idempotent per size).
    async fn save_checkpoint(&self, cp: &StoredCheckpoint) -> Result<(), StoreError>;

    /// The checkpoint with the largest size.
    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError>;

    /// Every checkpoint, by size.
    async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError>;

    /// Waits until every queued write is committed, then stops the writer.
    async fn close(&self);
}
