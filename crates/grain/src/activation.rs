//! Activation: a grain's state rebuilt from the cart's events, after the
//! cluster's handover when another node held the cart.

use std::sync::Arc;

use cart_domain::{Cart, CartEvent, ItemInterner};
use cart_store::{Event, StoreError};

use crate::idempotency::IdempotencyKeys;
use crate::registry::GrainState;
use crate::runtime::GrainRuntime;
use crate::{CartId, GrainError};

impl GrainRuntime {
    /// The grain's state, replaying its events first if it is not active.
    pub(crate) async fn activate<'a>(
        &self,
        id: &CartId,
        slot: &'a mut Option<GrainState>,
    ) -> Result<&'a mut GrainState, GrainError> {
        if slot.is_none() {
            let started = std::time::Instant::now();
            if let Some(handover) = self.handover.get()
                && let Some(claim) = self.store.claim_of(id.as_str()).await?
                && claim.owner != self.options.node
            {
                handover.take_over(id, &claim.owner).await?;
            }
            let events = self.store.load(id.as_str()).await?;
            let (cart, keys) = replay(id, &events, &self.items)?;
            metrics::counter!("cart_grain_activations_total").increment(1);
            metrics::histogram!("cart_grain_activation_duration_seconds").record(started.elapsed());
            tracing::debug!(cart = %id, events = events.len(), "grain activated");
            *slot = Some(GrainState { cart: Arc::new(cart), keys, epoch: None });
        }
        slot.as_mut().ok_or(GrainError::NotFound)
    }
}

/// The cart and its idempotency keys after `events`. An event that does not
/// decode, is refused, or is out of sequence is corruption, never skipped.
pub(crate) fn replay(
    id: &CartId,
    events: &[Event],
    items: &ItemInterner,
) -> Result<(Cart, IdempotencyKeys), GrainError> {
    let mut cart = Cart::new(id.shared());
    let mut keys = IdempotencyKeys::default();
    for event in events {
        let corrupt = |why: String| {
            GrainError::Store(StoreError::Corrupt(format!("cart {id} event {}: {why}", event.seq)))
        };
        let e = CartEvent::decode(u32::from(event.kind), &event.payload)
            .map_err(|e| corrupt(e.to_string()))?;
        cart.apply(&e, items).map_err(|e| corrupt(format!("refused on replay: {e}")))?;
        if cart.version() != event.seq {
            return Err(corrupt(format!("replay reached version {}", cart.version())));
        }
        if let Some(tag) = &event.idempotency {
            keys.record(tag, event.seq);
        }
    }
    Ok((cart, keys))
}
