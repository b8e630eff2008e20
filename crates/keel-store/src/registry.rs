//! Per-module registration of migrations and projections (collected with `inventory`).

/// A schema change, applied once per database in ascending `id` order.
#[derive(Debug)]
pub struct SqliteMigration {
    /// Globally ordered id, e.g. `0001_events`. Never change an applied migration: add one.
    pub id: &'static str,
    pub sql: &'static str,
}

/// SQL run in an event's own write transaction for every event of `kind`, so the table it
/// maintains is read-after-write consistent. The statement reads the event from a CTE named
/// `ev(seq, kind, actor, tenant, at_ms, payload)`; write it as `INSERT … SELECT … FROM ev` or
/// `UPDATE … WHERE … (SELECT … FROM ev)`. A statement that starts with `INSERT` must be correct
/// when `ev` holds several events of the kind (consecutive in the log): the writer batches them.
/// Other statements run once per event.
#[derive(Debug)]
pub struct SqliteProjection {
    pub kind: &'static str,
    pub sql: &'static str,
}

inventory::collect!(SqliteMigration);
inventory::collect!(SqliteProjection);

/// All registered migrations, sorted by id.
pub fn sqlite_migrations() -> Vec<&'static SqliteMigration> {
    let mut all: Vec<_> = inventory::iter::<SqliteMigration>.into_iter().collect();
    all.sort_by_key(|m| m.id);
    all
}

/// All registered projections for `kind`.
pub fn sqlite_projections(kind: &str) -> impl Iterator<Item = &'static SqliteProjection> + '_ {
    inventory::iter::<SqliteProjection>
        .into_iter()
        .filter(move |p| p.kind == kind)
}

inventory::submit! {
    SqliteMigration {
        id: "0001_events",
        sql: "CREATE TABLE IF NOT EXISTS events (
                seq     INTEGER PRIMARY KEY,
                kind    TEXT    NOT NULL,
                actor   TEXT    NOT NULL,
                tenant  TEXT    NOT NULL,
                at_ms   INTEGER NOT NULL,
                payload TEXT
              );
              CREATE INDEX IF NOT EXISTS events_kind ON events(kind, seq);",
    }
}
