//! The resident grains of a node: find or create, the resident cap with
//! eviction of idle grains, passivation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use cart_domain::CartState;

use crate::idempotency::IdempotencyKeys;
use crate::{CartId, GrainError};

/// One cart's grain: its state (once activated) behind the turn lock.
pub(crate) struct Grain {
    pub state: tokio::sync::Mutex<Option<GrainState>>,
    pub last_used_ms: AtomicU64,
}

/// An active grain's state.
pub(crate) struct GrainState {
    /// The cart; shared with readers, copied on write only while a reader
    /// still holds the previous state.
    pub cart: CartState,
    pub keys: IdempotencyKeys,
    /// The claim epoch this node holds on the cart; `None` until its first
    /// append, which claims the cart.
    pub epoch: Option<u64>,
    /// The lease generation it was activated under: a grain from an older
    /// one may be stale and is reloaded before it answers.
    pub generation: u64,
    /// The version of the cart's latest stored snapshot (0: none).
    pub snapshot_version: u64,
    /// When the cart last changed (its latest event), ms since the epoch.
    pub last_event_ms: i64,
}

/// The grains of a node, by cart id.
pub(crate) struct Registry {
    grains: Mutex<HashMap<CartId, Arc<Grain>>>,
    max: usize,
}

impl Registry {
    /// An empty registry holding at most `max` grains.
    pub fn new(max: usize) -> Self {
        Registry { grains: Mutex::new(HashMap::new()), max }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CartId, Arc<Grain>>> {
        self.grains.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The grain of `id`, created (inactive) if needed; at the cap, evicts
    /// the least recently used sixteenth of idle grains first.
    pub fn grain(&self, id: &CartId, now: u64) -> Result<Arc<Grain>, GrainError> {
        let mut grains = self.lock();
        if let Some(g) = grains.get(id) {
            g.last_used_ms.store(now, Ordering::Relaxed);
            return Ok(Arc::clone(g));
        }
        if grains.len() >= self.max {
            let evicted = evict_idle(&mut grains, self.max / 16);
            metrics::counter!(crate::families::GRAIN_PASSIVATIONS.name, "reason" => "evicted")
                .increment(evicted as u64);
            if grains.len() >= self.max {
                return Err(GrainError::Overloaded);
            }
        }
        let grain = Arc::new(Grain {
            state: tokio::sync::Mutex::new(None),
            last_used_ms: AtomicU64::new(now),
        });
        grains.insert(id.clone(), Arc::clone(&grain));
        metrics::gauge!(crate::families::GRAINS_RESIDENT.name).set(grains.len() as f64);
        Ok(grain)
    }

    /// The grain of `id`, if resident.
    pub fn get(&self, id: &CartId) -> Option<Arc<Grain>> {
        self.lock().get(id).cloned()
    }

    /// Removes `id`'s grain if no request holds it.
    pub fn forget_if_unused(&self, id: &CartId) {
        let mut grains = self.lock();
        if grains.get(id).is_some_and(|g| Arc::strong_count(g) == 1) {
            grains.remove(id);
            metrics::gauge!(crate::families::GRAINS_RESIDENT.name).set(grains.len() as f64);
        }
    }

    /// Removes grains no request holds and `keep` rejects; returns them.
    pub fn retain_unused(
        &self,
        keep: impl Fn(&CartId, &Grain) -> bool,
    ) -> Vec<(CartId, Arc<Grain>)> {
        let mut grains = self.lock();
        let removed: Vec<CartId> = grains
            .iter()
            .filter(|(id, g)| Arc::strong_count(g) == 1 && !keep(id, g))
            .map(|(id, _)| id.clone())
            .collect();
        let removed =
            removed.into_iter().filter_map(|id| grains.remove(&id).map(|g| (id, g))).collect();
        metrics::gauge!(crate::families::GRAINS_RESIDENT.name).set(grains.len() as f64);
        removed
    }

    /// Ids of the resident grains.
    pub fn ids(&self) -> Vec<CartId> {
        self.lock().keys().cloned().collect()
    }

    /// How many grains are resident.
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Removes up to `want` (at least one) idle grains, least recently used
/// first. Returns how many were removed.
fn evict_idle(grains: &mut HashMap<CartId, Arc<Grain>>, want: usize) -> usize {
    let mut idle: Vec<(u64, CartId)> = grains
        .iter()
        .filter(|(_, g)| Arc::strong_count(g) == 1)
        .map(|(id, g)| (g.last_used_ms.load(Ordering::Relaxed), id.clone()))
        .collect();
    let want = want.max(1).min(idle.len());
    if want == 0 {
        return 0;
    }
    idle.select_nth_unstable_by_key(want - 1, |(used, _)| *used);
    for (_, id) in &idle[..want] {
        grains.remove(id);
    }
    want
}
