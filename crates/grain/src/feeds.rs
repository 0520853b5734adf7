//! Live cart states for watchers: one latest-state channel per watched cart,
//! fed after every committed turn, and the cap on watchers.
//!
//! A channel holds only the newest state (a slow watcher skips versions and
//! never holds up a mutation), and a state never replaces a newer one, so a
//! watcher never goes backwards. Carts nobody watches cost one atomic load
//! per turn.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cart_domain::CartState;
use tokio::sync::watch;

use crate::{CartId, GrainError};

/// A committed state as its watchers get it. Its JSON is rendered at most
/// once, by the first watcher that needs it, however many watchers send it.
#[derive(Debug)]
pub struct Published {
    state: CartState,
    json: OnceLock<Box<str>>,
}

impl Published {
    /// `state`, not rendered yet.
    pub fn new(state: CartState) -> Arc<Self> {
        Arc::new(Published { state, json: OnceLock::new() })
    }

    /// The state.
    pub fn state(&self) -> &CartState {
        &self.state
    }

    /// The state's version.
    pub fn version(&self) -> u64 {
        self.state.version()
    }

    /// The state's storefront JSON, rendered on first use.
    pub fn json(&self) -> &str {
        self.json.get_or_init(|| String::from_utf8_lossy(&self.state.to_json()).into())
    }
}

/// The newest known state of one cart; `None` until one is known.
pub type StateReceiver = watch::Receiver<Option<Arc<Published>>>;

/// A state channel's sending side.
pub type StateSender = watch::Sender<Option<Arc<Published>>>;

/// Offers a published state to a channel unless it already holds a newer
/// one (passing the same `Published` on keeps one rendering for all).
pub fn offer(tx: &StateSender, published: &Arc<Published>) {
    offer_with(tx, published.version(), || Arc::clone(published));
}

/// Offers `state`, wrapped only if the channel takes it.
pub fn offer_state(tx: &StateSender, state: &CartState) {
    offer_with(tx, state.version(), || Published::new(Arc::clone(state)));
}

fn offer_with(tx: &StateSender, version: u64, published: impl FnOnce() -> Arc<Published>) {
    tx.send_if_modified(|current| {
        let newer = current.as_ref().is_none_or(|c| c.version() < version);
        if newer {
            *current = Some(published());
        }
        newer
    });
}

/// The channels of the carts watched on this node, fed by its own turns.
#[derive(Default)]
pub struct Feeds {
    senders: Mutex<HashMap<CartId, StateSender>>,
    watched: AtomicUsize,
}

impl Feeds {
    /// The channel of `id`, created if it has none.
    pub fn subscribe(&self, id: &CartId) -> StateReceiver {
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        let rx = match senders.get(id) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(None);
                senders.insert(id.clone(), tx);
                rx
            }
        };
        self.watched.store(senders.len(), Ordering::Relaxed);
        rx
    }

    /// Offers a committed state to `id`'s watchers, if it has any.
    pub fn publish(&self, id: &CartId, state: &CartState) {
        if self.watched.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = senders.get(id) else { return };
        if tx.receiver_count() == 0 {
            senders.remove(id);
            self.watched.store(senders.len(), Ordering::Relaxed);
            return;
        }
        offer_state(tx, state);
    }

    /// Ends the watches of carts for which `closes` holds (this node stopped
    /// serving them): their receivers see the channel close and follow the
    /// cart to its new owner. Channels nobody watches any more go as well.
    pub fn close_where(&self, closes: impl Fn(&CartId) -> bool) {
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        senders.retain(|id, tx| tx.receiver_count() > 0 && !closes(id));
        self.watched.store(senders.len(), Ordering::Relaxed);
    }

    /// Drops `id`'s channel if nobody watches it (after a refused watch).
    pub fn release(&self, id: &CartId) {
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        if senders.get(id).is_some_and(|tx| tx.receiver_count() == 0) {
            senders.remove(id);
            self.watched.store(senders.len(), Ordering::Relaxed);
        }
    }

    /// Drops every channel nobody watches any more (watchers that left while
    /// their cart did not change); run periodically.
    pub fn sweep(&self) {
        self.close_where(|_| false);
    }
}

/// The cap on concurrent watchers of one node.
pub struct Watchers {
    max: usize,
    active: Arc<AtomicUsize>,
}

/// One admitted watcher; dropping it frees its place.
#[derive(Debug)]
pub struct WatchPermit {
    active: Arc<AtomicUsize>,
}

impl Watchers {
    /// At most `max` watchers at once.
    pub fn new(max: usize) -> Self {
        metrics::gauge!(crate::families::WATCHERS.name).set(0.0);
        Watchers { max, active: Arc::new(AtomicUsize::new(0)) }
    }

    /// Admits one more watcher, or refuses when the cap is reached.
    pub fn admit(&self) -> Result<WatchPermit, GrainError> {
        let admitted = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1));
        match admitted {
            Ok(n) => {
                metrics::gauge!(crate::families::WATCHERS.name).set((n + 1) as f64);
                Ok(WatchPermit { active: Arc::clone(&self.active) })
            }
            Err(_) => {
                metrics::counter!(crate::families::WATCHERS_REFUSED.name).increment(1);
                Err(GrainError::Overloaded)
            }
        }
    }
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        let left = self.active.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        metrics::gauge!(crate::families::WATCHERS.name).set(left as f64);
    }
}

/// A watch of one cart: the channel of its newest state (the current state
/// first, then every change that is newer) and this watcher's place under
/// the cap.
#[derive(Debug)]
pub struct CartWatch {
    /// The newest state; changes whenever a newer one is known.
    pub updates: StateReceiver,
    /// Held for as long as the watch lives.
    pub permit: WatchPermit,
}

#[cfg(test)]
mod tests {
    use super::*;
    use cart_domain::Cart;

    fn state(version: u64) -> CartState {
        let mut cart = Cart::new("c".into());
        let items = cart_domain::ItemInterner::new();
        for _ in 0..version {
            let add =
                cart_domain::proto::AddItem { sku: "1".into(), quantity: 1, ..Default::default() };
            cart.apply(&cart_domain::CartEvent::AddItem(add), &items).unwrap();
        }
        Arc::new(cart)
    }

    #[test]
    fn channels_nobody_watches_are_released_and_swept() {
        let feeds = Feeds::default();
        let id = CartId::parse("c").unwrap();
        let rx = feeds.subscribe(&id);
        drop(rx);
        feeds.release(&id);
        assert_eq!(feeds.watched.load(Ordering::Relaxed), 0, "a refused watch leaves nothing");
        let other = CartId::parse("d").unwrap();
        let watcher = feeds.subscribe(&id);
        drop(feeds.subscribe(&other));
        feeds.sweep();
        assert_eq!(feeds.watched.load(Ordering::Relaxed), 1, "only the watched channel stays");
        drop(watcher);
    }

    #[test]
    fn a_state_never_replaces_a_newer_one() {
        let feeds = Feeds::default();
        let id = CartId::parse("c").unwrap();
        let mut rx = feeds.subscribe(&id);
        feeds.publish(&id, &state(2));
        feeds.publish(&id, &state(1));
        assert_eq!(rx.borrow_and_update().as_ref().map(|s| s.version()), Some(2));
        let published = rx.borrow().clone().unwrap();
        assert!(std::ptr::eq(published.json(), published.json()), "rendered once");
        assert!(!rx.has_changed().unwrap());
    }
}
