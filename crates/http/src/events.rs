//! Live carts over Server-Sent Events: `GET /cart/events` (the storefront
//! cookie's cart) and `GET /api/carts/{id}/events`.
//!
//! Each message is `id: <version>`, `event: cart`, `data: <the same JSON as
//! GET>`. The first is the current state (only versions above
//! `Last-Event-ID` when the client reconnects with one; if the cart is now
//! *behind* that version, it was reset since, and the current state comes as
//! `event: reset`, which a client applies like `cart`); then every newer
//! state, the newest winning when the client reads slower than the cart
//! changes or the cart changes faster than [`MIN_EVENT_INTERVAL`]. Comments
//! every [`HEARTBEAT`] keep idle streams open through proxies. The watch
//! follows the cart wherever it lives.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cart_grain::{CartId, CartWatch, GrainError, Published};
use futures_util::{Stream, StreamExt};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::{AppState, cookie};

/// How often an idle stream gets a comment line.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Least time between two events of one stream. The first change after a
/// quiet spell goes out at once; a cart changing faster (a script, an
/// import) costs each watcher at most one event per interval, so a thousand
/// watchers do not take the CPU its mutations need.
pub const MIN_EVENT_INTERVAL: Duration = Duration::from_millis(100);

/// `GET /cart/events`.
pub async fn storefront(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = cookie::cart_id(&headers, &s.ids).ok_or(ApiError::Grain(GrainError::NotFound))?;
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
    let reset = reset_since(&watch, after);
    let after = if reset { 0 } else { after };
    states(watch, after).enumerate().map(move |(n, published)| {
        let event = Event::default()
            .id(published.version().to_string())
            .event(if reset && n == 0 { "reset" } else { "cart" })
            .data(published.json());
        Ok(event)
    })
}

/// Whether the cart is behind the version the client last saw: it was
/// reset since (its log restored or replaced), so "only newer versions"
/// would leave the client on a state that no longer exists.
fn reset_since(watch: &CartWatch, seen: u64) -> bool {
    watch.updates.borrow().as_ref().is_some_and(|p| p.version() < seen)
}

/// The states a stream sends: those above `after`, the newest first, then
/// each newer one, at most one per [`MIN_EVENT_INTERVAL`] (a cart changing
/// faster is sent as its newest state when the interval is over).
fn states(watch: CartWatch, after: u64) -> impl Stream<Item = Arc<Published>> {
    let start = (watch, after, None::<Instant>);
    futures_util::stream::unfold(start, |(mut watch, last, sent_at)| async move {
        loop {
            let newer = watch.updates.borrow().as_ref().is_some_and(|p| p.version() > last);
            if newer {
                if let Some(at) = sent_at
                    && at.elapsed() < MIN_EVENT_INTERVAL
                {
                    tokio::time::sleep_until(at + MIN_EVENT_INTERVAL).await;
                }
                let published = watch.updates.borrow_and_update().clone()?;
                let version = published.version();
                return Some((published, (watch, version, Some(Instant::now()))));
            }
            watch.updates.changed().await.ok()?;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cart_domain::proto::AddItem;
    use cart_domain::{Cart, CartEvent, ItemInterner};
    use cart_grain::feeds::Watchers;
    use cart_grain::offer_state;
    use futures_util::StreamExt;

    fn cart(version: u64) -> cart_domain::CartState {
        let items = ItemInterner::new();
        let mut cart = Cart::new("c1".into());
        for _ in 0..version {
            let add = AddItem { sku: "1".into(), quantity: 1, ..Default::default() };
            cart.apply(&CartEvent::AddItem(add), &items).unwrap();
        }
        Arc::new(cart)
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_cart_costs_a_watcher_one_event_per_interval_ending_at_the_newest() {
        let (tx, updates) = tokio::sync::watch::channel(None);
        let permit = Watchers::new(1).admit().unwrap();
        offer_state(&tx, &cart(1));
        let mut stream = Box::pin(states(CartWatch { updates, permit }, 0));
        let started = Instant::now();
        assert_eq!(stream.next().await.unwrap().version(), 1);
        assert_eq!(started.elapsed(), Duration::ZERO, "the first change goes out at once");
        for v in 2..=20 {
            offer_state(&tx, &cart(v));
        }
        assert_eq!(stream.next().await.unwrap().version(), 20, "the newest, never a stale one");
        assert_eq!(started.elapsed(), MIN_EVENT_INTERVAL);
        // After a quiet spell a change goes out at once again.
        tokio::time::sleep(MIN_EVENT_INTERVAL * 3).await;
        let quiet = Instant::now();
        offer_state(&tx, &cart(21));
        assert_eq!(stream.next().await.unwrap().version(), 21);
        assert_eq!(quiet.elapsed(), Duration::ZERO);
        drop(tx);
        assert!(stream.next().await.is_none(), "the stream ends with its channel");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_past_the_carts_version_gets_its_state_as_a_reset() {
        let (tx, updates) = tokio::sync::watch::channel(None);
        let permit = Watchers::new(1).admit().unwrap();
        offer_state(&tx, &cart(2));
        let mut stream = Box::pin(events(CartWatch { updates, permit }, 9));
        let first = format!("{:?}", stream.next().await.unwrap().unwrap());
        assert!(first.contains("id: 2\\nevent: reset\\n"), "{first}");
        offer_state(&tx, &cart(3));
        let next = format!("{:?}", stream.next().await.unwrap().unwrap());
        assert!(next.contains("id: 3\\nevent: cart\\n"), "{next}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_gets_only_newer_versions() {
        let (tx, updates) = tokio::sync::watch::channel(None);
        let permit = Watchers::new(1).admit().unwrap();
        offer_state(&tx, &cart(3));
        let mut stream = Box::pin(states(CartWatch { updates, permit }, 3));
        offer_state(&tx, &cart(4));
        assert_eq!(stream.next().await.unwrap().version(), 4);
    }
}
