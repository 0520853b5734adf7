//! Live carts over Server-Sent Events: `GET /cart/events` (the storefront
//! cookie's cart) and `GET /api/carts/{id}/events`.
//!
//! Each message is `id: <version>`, `event: cart`, `data: <the same JSON as
//! GET>`. The first is the current state (only versions above
//! `Last-Event-ID` when the client reconnects with one); then every newer
//! state, the newest winning when the client reads slower than the cart
//! changes. Comments every [`HEARTBEAT`] keep idle streams open through
//! proxies. The watch follows the cart wherever it lives.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cart_grain::{CartId, CartWatch, GrainError};
use futures_util::Stream;

use crate::error::ApiError;
use crate::{AppState, cookie};

/// How often an idle stream gets a comment line.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// `GET /cart/events`.
pub async fn storefront(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = cookie::cart_id(&headers).ok_or(ApiError::Grain(GrainError::NotFound))?;
    open(&s, &id, &headers).await
}

/// `GET /api/carts/{id}/events`.
pub async fn by_id(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = CartId::parse(&id)?;
    open(&s, &id, &headers).await
}

async fn open(s: &AppState, id: &CartId, headers: &HeaderMap) -> Result<Response, ApiError> {
    let last = last_event_id(headers);
    let watch = s.carts.watch(id).await?;
    let mut response = Sse::new(events(watch, last))
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Tells nginx-style proxies not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The version in `Last-Event-ID`; 0 (send the current state) when absent
/// or not one of ours.
fn last_event_id(headers: &HeaderMap) -> u64 {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn events(watch: CartWatch, after: u64) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold((watch, after), |(mut watch, last)| async move {
        loop {
            let state = watch.updates.borrow_and_update().clone();
            if let Some(state) = state.filter(|s| s.version() > last) {
                let version = state.version();
                let json = String::from_utf8(state.to_json()).unwrap_or_default();
                let event = Event::default().id(version.to_string()).event("cart").data(json);
                return Some((Ok(event), (watch, version)));
            }
            watch.updates.changed().await.ok()?;
        }
    })
}
