//! Opening the store every surface shares (server, CLI verbs, simulator setup).

use std::sync::Arc;

use keel_store::{Durability, SqliteOptions, SqliteStore, Store};

use crate::error::ServiceError;

/// Opens the store at `url` (`sqlite://PATH`), creating and migrating it if absent.
pub async fn open_store(url: &str, durability: Durability) -> Result<Arc<dyn Store>, ServiceError> {
    let store = SqliteStore::open(SqliteOptions::new(url, durability)).await?;
    Ok(Arc::new(store))
}
