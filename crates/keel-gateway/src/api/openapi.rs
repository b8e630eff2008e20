//! `GET /api/openapi.json`: the OpenAPI description assembled from every route module.

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::routes::{modules, RouteModule};

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for m in modules() {
        if let Value::Object(p) = (m.openapi_paths)() {
            paths.extend(p);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Keel API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Keel's own API. Authenticate with `Authorization: Bearer KEY`; errors use OpenAI's shape."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    })
}

fn router() -> Router<AppState> {
    Router::new().route("/api/openapi.json", get(|| async { Json(document()) }))
}

fn openapi_paths() -> Value {
    json!({"/api/openapi.json": {"get": {"summary": "This document (no key needed).",
        "security": [], "responses": {"200": {"description": "OpenAPI 3.1 JSON"}}}}})
}

inventory::submit! {
    RouteModule { name: "openapi", router, openapi_paths }
}
