//! `GET /api/carts/{id}/history` (internal listener): what the store holds
//! of one cart, for the dashboard's inspector: its snapshot, if any, and the
//! events after it, newest last, each with its version, type, time and
//! contents. Event sourcing makes this a read of the log.
//!
//! The store is shared by every node, so any node answers without asking
//! the owner; a mutation acknowledged anywhere is in the next answer.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use cart_domain::CartEvent;
use cart_grain::{CartId, GrainError};
use serde::Serialize;

use crate::AppState;
use crate::error::ApiError;

/// Most events one answer lists (the newest); older ones are counted in
/// `omitted`.
pub const MAX_HISTORY_EVENTS: usize = 200;

/// One cart's history.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// The cart.
    pub id: String,
    /// Its version: the last event's.
    pub version: u64,
    /// The snapshot the events start after.
    pub snapshot: Option<SnapshotView>,
    /// Events after the snapshot not listed (only the newest
    /// [`MAX_HISTORY_EVENTS`] are).
    pub omitted: usize,
    /// The events, oldest first.
    pub events: Vec<EventView>,
}

/// Where the listed history starts.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotView {
    /// The version it covers.
    pub version: u64,
    /// When it was taken, ms since the Unix epoch.
    pub at_ms: i64,
}

/// One stored event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// The cart version it made.
    pub version: u64,
    /// Its mutation type (`add_item`, ...), or `unknown`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When it was accepted, ms since the Unix epoch.
    pub at_ms: i64,
    /// Whether it was made with an idempotency key.
    pub idempotent: bool,
    /// Its contents; `null` when it does not decode.
    pub data: serde_json::Value,
    /// Why it does not decode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn view(event: &cart_store::Event) -> EventView {
    let decoded = CartEvent::decode(u32::from(event.kind), &event.payload);
    let (kind, data, error) = match decoded {
        Ok(e) => (e.kind().name(), e.to_json(), None),
        Err(e) => ("unknown", serde_json::Value::Null, Some(e.to_string())),
    };
    EventView {
        version: event.seq,
        kind,
        at_ms: event.timestamp_ms,
        idempotent: event.idempotency.is_some(),
        data,
        error,
    }
}

/// `GET /api/carts/{id}/history`; 404 when the store holds nothing of it.
pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = CartId::parse(&id)?;
    let loaded = s.store.load(id.as_str()).await.map_err(GrainError::from)?;
    if loaded.is_empty() {
        return Err(GrainError::NotFound.into());
    }
    let omitted = loaded.events.len().saturating_sub(MAX_HISTORY_EVENTS);
    let history = History {
        id: id.as_str().to_owned(),
        version: loaded.version(),
        snapshot: loaded
            .snapshot
            .as_ref()
            .map(|s| SnapshotView { version: s.version, at_ms: s.timestamp_ms }),
        omitted,
        events: loaded.events[omitted..].iter().map(view).collect(),
    };
    Ok(Json(history).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cart_domain::proto::{AddItem, RemoveItem};

    fn stored(seq: u64, event: &CartEvent) -> cart_store::Event {
        cart_store::Event {
            seq,
            kind: event.kind().code(),
            timestamp_ms: 1_700_000_000_000 + seq as i64,
            payload: event.encode_payload(),
            idempotency: None,
        }
    }

    #[test]
    fn an_event_shows_its_type_and_fields() {
        let add = CartEvent::AddItem(AddItem {
            sku: "861200".into(),
            quantity: 2,
            seller_id: "498".into(),
            ..AddItem::default()
        });
        let v = serde_json::to_value(view(&stored(1, &add))).unwrap();
        assert_eq!(v["type"], "add_item");
        assert_eq!(v["version"], 1);
        assert_eq!(v["data"]["sku"], "861200");
        assert_eq!(v["data"]["quantity"], 2);
        assert_eq!(v["data"]["sellerId"], "498");
        assert!(v.get("error").is_none());
        let remove = CartEvent::RemoveItem(RemoveItem { id: 1 });
        assert_eq!(serde_json::to_value(view(&stored(2, &remove))).unwrap()["data"]["id"], 1);
    }

    #[test]
    fn an_event_that_does_not_decode_is_shown_as_such() {
        let mut bad = stored(3, &CartEvent::RemoveItem(RemoveItem { id: 1 }));
        bad.payload =
            CartEvent::AddItem(AddItem { sku: "x".into(), ..AddItem::default() }).encode_payload();
        bad.payload.push(0xff);
        let v = serde_json::to_value(view(&bad)).unwrap();
        assert_eq!(v["type"], "unknown");
        assert!(v["data"].is_null());
        assert!(v["error"].as_str().unwrap().contains("remove_item"));
        bad.kind = 99;
        assert!(view(&bad).error.unwrap().contains("99"));
    }
}
