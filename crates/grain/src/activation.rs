//! Activation: a grain's state rebuilt from the cart's events, after the
//! cluster's handover when another node held the cart.

use std::sync::Arc;

use cart_domain::{Cart, CartEvent, ItemInterner};
use cart_store::{EventStore, Fence, Loaded, StoreError};

use crate::idempotency::IdempotencyKeys;
use crate::registry::GrainState;
use crate::{CartId, Clock, GrainError};

/// Called before a grain activates on this node while another node holds
/// the cart's claim: the cluster asks that node to flush and passivate its
/// grain (ConfirmOwner).
///
/// Failure contract: an error refuses the activation (the request fails with
/// it and nothing is applied); `Ok` means this node may activate.
#[async_trait::async_trait]
pub trait Handover: Send + Sync + 'static {
    /// Hands `cart` over from `previous_owner` to this node.
    async fn take_over(&self, cart: &CartId, previous_owner: &str) -> Result<(), GrainError>;
}

/// What activating a grain reads: the store, the node's product facts, its
/// name and the cluster's handover step (none on a single node).
pub(crate) struct Activation<'a> {
    pub store: &'a dyn EventStore,
    pub items: &'a ItemInterner,
    pub node: &'a str,
    pub handover: Option<&'a dyn Handover>,
    /// How long idempotency keys protect.
    pub window: std::time::Duration,
    /// The time, read only when a grain activates (not on every turn).
    pub clock: &'a dyn Clock,
    /// The lease generation this request is served under.
    pub generation: u64,
    /// Carts this node handed over moments ago.
    pub released: &'a Released,
}

/// Carts this node handed over within the last [`Released::GUARD_MS`]: their
/// new holder may not have claimed them yet, so the store still names this
/// node, and activating one on that old claim would make two holders. A
/// request for one is sent on to the next node instead.
#[derive(Debug, Default)]
pub(crate) struct Released(std::sync::Mutex<std::collections::HashMap<CartId, u64>>);

impl Released {
    /// How long a handed-over cart is not activated here on its old claim
    /// (its new holder claims it within milliseconds).
    pub const GUARD_MS: u64 = 2_000;

    /// Records that `cart` was handed over at `now` (monotonic ms).
    pub fn add(&self, cart: &CartId, now: u64) {
        let mut released = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        released.retain(|_, at| now.saturating_sub(*at) < Self::GUARD_MS);
        released.insert(cart.clone(), now);
    }

    /// Whether `cart` was handed over within the guard before `now`.
    pub fn contains(&self, cart: &CartId, now: u64) -> bool {
        let released = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        released.get(cart).is_some_and(|at| now.saturating_sub(*at) < Self::GUARD_MS)
    }
}

impl Activation<'_> {
    /// The grain's state, replaying its events first if it is not active.
    pub(crate) async fn activate<'s>(
        &self,
        id: &CartId,
        slot: &'s mut Option<GrainState>,
    ) -> Result<&'s mut GrainState, GrainError> {
        if slot.as_ref().is_some_and(|s| s.generation != self.generation) {
            // Active since before the lease last lapsed: others may have
            // written meanwhile.
            metrics::counter!(crate::families::GRAIN_PASSIVATIONS.name, "reason" => "lease_lapsed")
                .increment(1);
            *slot = None;
        }
        if slot.is_none() {
            let started = std::time::Instant::now();
            let mut epoch = None;
            let mut taken_over = false;
            if let Some(handover) = self.handover
                && let Some(claim) = self.store.claim_of(id.as_str()).await?
            {
                if claim.owner == self.node {
                    if self.released.contains(id, self.clock.monotonic_ms()) {
                        return Err(GrainError::HandoverRefused(
                            "this node handed the cart over moments ago".into(),
                        ));
                    }
                    // This very process claimed it and nobody since: its
                    // epoch still fences everyone else.
                    epoch = Some(claim.epoch);
                } else {
                    handover.take_over(id, &claim.owner).await?;
                    taken_over = true;
                }
            }
            let loaded = self.store.load(id.as_str()).await?;
            let now = self.clock.now_ms() as i64;
            let (cart, mut keys) = replay(id, &loaded, self.items, self.window, now)?;
            if taken_over {
                // Claim it before serving anything, reads included: the
                // store then names the one node that holds the cart active,
                // and the previous holder asks this node before it serves
                // the cart again.
                let claimed = self
                    .store
                    .append(id.as_str(), cart.version(), Fence::Claim(self.node.to_owned()), vec![])
                    .await?;
                epoch = Some(claimed.epoch);
            }
            keys.expire(now, self.window);
            metrics::counter!(crate::families::GRAIN_ACTIVATIONS.name).increment(1);
            metrics::histogram!(crate::families::GRAIN_ACTIVATION_DURATION.name)
                .record(started.elapsed());
            tracing::debug!(cart = %id, events = loaded.events.len(), "grain activated");
            *slot = Some(GrainState {
                cart: Arc::new(cart),
                keys,
                epoch,
                generation: self.generation,
                snapshot_version: loaded.snapshot.as_ref().map_or(0, |s| s.version),
                last_event_ms: last_event_ms(&loaded),
            });
        }
        slot.as_mut().ok_or(GrainError::NotFound)
    }
}

/// When the cart last changed: its latest event, else its snapshot.
pub(crate) fn last_event_ms(loaded: &Loaded) -> i64 {
    loaded
        .events
        .last()
        .map(|e| e.timestamp_ms)
        .or(loaded.snapshot.as_ref().map(|s| s.timestamp_ms))
        .unwrap_or(0)
}

/// The cart and its idempotency keys after its snapshot (if any) and the
/// events after it. An event that does not decode, is refused, or is out
/// of sequence is corruption, never skipped; so is a snapshot this build
/// cannot read (its events may be compacted away).
pub(crate) fn replay(
    id: &CartId,
    loaded: &Loaded,
    items: &ItemInterner,
    window: std::time::Duration,
    now_ms: i64,
) -> Result<(Cart, IdempotencyKeys), GrainError> {
    let (mut cart, mut keys) = match &loaded.snapshot {
        Some(snapshot) => {
            let (cart, keys) =
                Cart::from_snapshot(id.shared(), &snapshot.state, items).map_err(|e| {
                    GrainError::Store(StoreError::Corrupt(format!(
                        "cart {id} snapshot at version {}: {e}",
                        snapshot.version
                    )))
                })?;
            if cart.version() != snapshot.version {
                return Err(GrainError::Store(StoreError::Corrupt(format!(
                    "cart {id}: the snapshot of version {} holds version {}",
                    snapshot.version,
                    cart.version()
                ))));
            }
            (cart, IdempotencyKeys::from_snapshot(keys, now_ms, window))
        }
        None => (Cart::new(id.shared()), IdempotencyKeys::default()),
    };
    for event in &loaded.events {
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
            keys.record(tag, event.seq, event.timestamp_ms, window);
        }
    }
    Ok((cart, keys))
}
