//! Live cart states for watchers: one latest-state channel per watched cart,
//! fed after every committed turn, and the cap on watchers.
//!
//! A channel holds only the newest state (a slow watcher skips versions and
//! never holds up a mutation), and a state never replaces a newer one, so a
//! watcher never goes backwards. Carts nobody watches cost one atomic load
//! per turn.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use cart_domain::CartState;
use tokio::sync::watch;

use crate::{CartId, GrainError};

/// The newest known state of one cart; `None` until one is known.
pub type StateReceiver = watch::Receiver<Option<CartState>>;

/// A state channel's sending side.
pub type StateSender = watch::Sender<Option<CartState>>;

/// Offers `state` to a channel unless it already holds a newer one; returns
/// whether it was taken.
pub fn offer(tx: &StateSender, state: &CartState) -> bool {
    tx.send_if_modified(|current| {
        let newer = current.as_ref().is_none_or(|c| c.version() < state.version());
        if newer {
            *current = Some(Arc::clone(state));
        }
        newer
    })
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
        offer(tx, state);
    }

    /// Ends the watches of carts for which `closes` holds (this node stopped
    /// serving them): their receivers see the channel close and follow the
    /// cart to its new owner.
    pub fn close_where(&self, closes: impl Fn(&CartId) -> bool) {
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        senders.retain(|id, tx| tx.receiver_count() > 0 && !closes(id));
        self.watched.store(senders.len(), Ordering::Relaxed);
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
        metrics::gauge!("cart_watchers").set(0.0);
        Watchers { max, active: Arc::new(AtomicUsize::new(0)) }
    }

    /// Admits one more watcher, or refuses when the cap is reached.
    pub fn admit(&self) -> Result<WatchPermit, GrainError> {
        let admitted = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1));
        match admitted {
            Ok(n) => {
                metrics::gauge!("cart_watchers").set((n + 1) as f64);
                Ok(WatchPermit { active: Arc::clone(&self.active) })
            }
            Err(_) => {
                metrics::counter!("cart_watchers_refused_total").increment(1);
                Err(GrainError::Overloaded)
            }
        }
    }

    /// How many watchers are admitted now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        let left = self.active.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        metrics::gauge!("cart_watchers").set(left as f64);
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
