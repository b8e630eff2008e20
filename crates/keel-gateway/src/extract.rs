//! Extractors whose rejections use OpenAI's error shape (bodies, queries, paths).

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::error::GatewayError;

/// Reads the whole body, enforcing the configured size limit (413 past it).
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .map(|s| s.is::<http_body_util::LengthLimitError>())
            .unwrap_or(false)
            || e.to_string().contains("length limit");
        if too_large {
            GatewayError::PayloadTooLarge { limit }
        } else {
            GatewayError::bad(format!("could not read the request body: {e}"))
        }
    })
}

/// Parses a body as a JSON value: empty, invalid UTF-8 or malformed JSON are 400s.
pub fn parse_json_value(bytes: &[u8]) -> Result<serde_json::Value, GatewayError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(GatewayError::bad(
            "The request body is empty: expected a JSON object.",
        ));
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(GatewayError::bad("The request body is not valid UTF-8."));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        GatewayError::bad(format!(
            "We could not parse the JSON body of your request: {e}"
        ))
    })
}

/// A JSON body deserialised into `T`; every failure is an OpenAI-shaped 400/413.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = GatewayError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req.into_body(), state.config.server.max_body_bytes).await?;
        let value = parse_json_value(&bytes)?;
        serde_json::from_value(value)
            .map(JsonBody)
            .map_err(|e| GatewayError::bad(format!("invalid request body: {e}")))
    }
}

/// A query string deserialised into `T`; failures are OpenAI-shaped 400s.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| GatewayError::bad(format!("invalid query string: {}", e.body_text())))
    }
}

/// A path parameter. An id that cannot even be decoded matches nothing: a 404, like any unknown id.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| {
                GatewayError::NotFound(format!("Nothing matches this path: {}", e.body_text()))
            })
    }
}

/// `limit` (1–500, default 50) from a query string.
pub fn page_limit(limit: Option<&str>) -> Result<u32, GatewayError> {
    match limit {
        None => Ok(50),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| {
                GatewayError::bad_param(
                    "limit",
                    "Invalid 'limit': expected an integer from 1 to 500.",
                )
            }),
    }
}

/// An optional query parameter that must be one of `allowed` (a 400 naming them otherwise).
pub fn one_of(name: &str, value: Option<&str>, allowed: &[&str]) -> Result<(), GatewayError> {
    match value {
        Some(v) if !allowed.contains(&v) => Err(GatewayError::bad_param(
            name,
            format!("Invalid '{name}': expected one of {}.", allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}

/// `cursor` (a `next_cursor` from a previous page: a positive sequence number).
pub fn page_cursor(cursor: Option<&str>) -> Result<Option<i64>, GatewayError> {
    match cursor {
        None | Some("") => Ok(None),
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| {
                GatewayError::bad_param(
                    "cursor",
                    "Invalid 'cursor': use next_cursor from a previous page.",
                )
            }),
    }
}
