//! The one shape of a successful cart answer: 200, the cart JSON, its version
//! as a strong `ETag`, and `Cache-Control: no-store` (the storefront's service
//! worker must never serve a stale cart).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cart_domain::CartState;

/// The `ETag` of a cart version.
pub fn etag(version: u64) -> HeaderValue {
    // Digits in quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// A 200 answer carrying the cart, rendered as the storefront's JSON (the
/// only place cart JSON is made for HTTP).
pub fn cart(state: CartState) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::ETAG, etag(state.version())),
        ],
        state.to_json(),
    )
        .into_response()
}
