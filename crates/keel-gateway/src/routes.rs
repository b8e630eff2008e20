//! Per-module route registration: each module submits a [`RouteModule`].

use axum::Router;

use crate::app::AppState;

/// A module's routes and the OpenAPI `paths` it documents.
pub struct RouteModule {
    pub name: &'static str,
    pub router: fn() -> Router<AppState>,
    /// OpenAPI 3.1 `paths` entries for this module's `/api/` routes (an object).
    pub openapi_paths: fn() -> serde_json::Value,
}

inventory::collect!(RouteModule);

/// Every registered module, in name order.
pub fn modules() -> Vec<&'static RouteModule> {
    let mut all: Vec<_> = inventory::iter::<RouteModule>.into_iter().collect();
    all.sort_by_key(|m| m.name);
    all
}
