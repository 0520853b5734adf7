//! A cart's whole state as a snapshot (`proto/snapshot.proto`): what
//! activation starts from instead of replaying every event. Unlike
//! [`Cart::restore`] it keeps the id counters, so a cart decoded from a
//! snapshot is a base for new events exactly like the replayed one.

use std::sync::Arc;

use prost::Message;
use thiserror::Error;

use super::{Cart, CartLine, CheckoutState, Delivery};
use crate::item::ItemInterner;

/// Generated from `proto/snapshot.proto`: the stored snapshot format.
pub mod wire {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/snapshot.rs"));
}

/// The snapshot format this code writes.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// An idempotency key inside a snapshot: the request it protects and the
/// version that request produced.
pub type SnapshotKey = wire::Key;

/// Why stored snapshot bytes are not a cart.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// Not a snapshot message.
    #[error("malformed snapshot: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// A format this build cannot read (written by a newer one).
    #[error("snapshot format {0} is unknown to this build")]
    UnknownFormat(u32),
    /// A snapshot that breaks the cart's invariants.
    #[error("invalid snapshot: {0}")]
    Invalid(String),
}

impl Cart {
    /// The cart as snapshot bytes, with the idempotency keys to keep.
    pub fn snapshot(&self, keys: Vec<SnapshotKey>) -> Vec<u8> {
        wire::CartSnapshot {
            format: SNAPSHOT_FORMAT,
            version: self.version,
            lines: self
                .lines
                .iter()
                .map(|l| wire::Line {
                    id: l.id,
                    qty: l.qty,
                    price: l.price,
                    org_price: l.org_price,
                    stock: l.stock,
                    tax: l.tax,
                    product: l.info.encoded.clone(),
                })
                .collect(),
            deliveries: self
                .deliveries
                .iter()
                .map(|d| wire::Delivery {
                    id: d.id,
                    provider: d.provider.to_string(),
                    items: d.items.clone(),
                    price: d.price,
                    tax: d.tax,
                    pickup_point: d.pickup_point.as_deref().cloned().map(Into::into),
                })
                .collect(),
            next_line_id: self.next_line_id,
            next_delivery_id: self.next_delivery_id,
            country: self.market.as_ref().map(|m| m.country.to_string()),
            currency: self.market.as_ref().map(|m| m.currency.to_string()),
            checkout: self.checkout.as_deref().map(|c| wire::Checkout {
                order_id: c.order_id.clone(),
                status: c.status.clone(),
                cart_version: c.cart_version,
                amount: c.amount,
                editing: c.editing,
                completed: c.completed,
                acknowledged: c.acknowledged,
            }),
            keys,
        }
        .encode_to_vec()
    }

    /// The cart `id` and its idempotency keys from snapshot bytes, sharing
    /// product facts through `items`.
    pub fn from_snapshot(
        id: Arc<str>,
        bytes: &[u8],
        items: &ItemInterner,
    ) -> Result<(Cart, Vec<SnapshotKey>), SnapshotError> {
        let s = wire::CartSnapshot::decode(bytes)?;
        if s.format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::UnknownFormat(s.format));
        }
        let invalid = |why: String| SnapshotError::Invalid(why);
        let lines = s
            .lines
            .into_iter()
            .map(|l| {
                let info = items.intern_encoded(&l.product).map_err(|e| invalid(e.to_string()))?;
                Ok(CartLine {
                    id: l.id,
                    qty: l.qty,
                    price: l.price,
                    org_price: l.org_price,
                    stock: l.stock,
                    tax: l.tax,
                    info,
                })
            })
            .collect::<Result<Vec<_>, SnapshotError>>()?;
        let deliveries = s
            .deliveries
            .into_iter()
            .map(|d| Delivery {
                id: d.id,
                provider: d.provider.into(),
                items: d.items,
                price: d.price,
                tax: d.tax,
                pickup_point: d.pickup_point.map(|p| Box::new(p.into())),
            })
            .collect::<Vec<_>>();
        if lines.iter().any(|l| l.id >= s.next_line_id)
            || deliveries.iter().any(|d| d.id >= s.next_delivery_id)
        {
            return Err(invalid("an id at or past its counter".into()));
        }
        let restored = Cart::restore(super::RestoredCart {
            id,
            version: s.version,
            lines,
            deliveries,
            market: s.country.zip(s.currency),
            checkout: s.checkout.map(|c| CheckoutState {
                order_id: c.order_id,
                status: c.status,
                cart_version: c.cart_version,
                amount: c.amount,
                editing: c.editing,
                completed: c.completed,
                acknowledged: c.acknowledged,
            }),
        })
        .map_err(|e| invalid(e.to_string()))?;
        let cart =
            Cart { next_line_id: s.next_line_id, next_delivery_id: s.next_delivery_id, ..restored };
        Ok((cart, s.keys))
    }
}
