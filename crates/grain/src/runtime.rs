//! Grain activation, turns, passivation and the resident-grain cap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cart_catalog::Resolver;
use cart_domain::cart::{validate_add_request, validate_set_cart_items};
use cart_domain::proto::SetCartItems;
use cart_domain::{Cart, CartError, ItemInterner, Mutation, MutationType};
use cart_store::{Event, EventStore, Fence, IdempotencyTag, NewEvent, StoreError};

use crate::idempotency::{IdempotencyKeys, Seen};
use crate::turn_metrics::{Outcome, TurnMetrics};
use crate::{CartId, Clock, GrainError};

/// Settings of a [`GrainRuntime`].
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// A grain unused this long is passivated.
    pub idle_ttl: Duration,
    /// Most grains resident at once.
    pub max_grains: usize,
    /// This node's name, recorded in the store when it claims a cart.
    pub node: String,
}

impl Default for RuntimeOptions {
    /// 15 minutes idle TTL, 200 000 grains, node name `local`.
    fn default() -> Self {
        RuntimeOptions {
            idle_ttl: Duration::from_secs(15 * 60),
            max_grains: 200_000,
            node: "local".into(),
        }
    }
}

/// Called before a grain activates on this node while another node holds
/// the cart's claim: the cluster asks that node to flush and passivate its
/// grain (ConfirmOwner). An error refuses the activation.
#[async_trait::async_trait]
pub trait Handover: Send + Sync + 'static {
    /// Hands `cart` over from `previous_owner` to this node.
    async fn take_over(&self, cart: &CartId, previous_owner: &str) -> Result<(), GrainError>;
}

/// A cart as answered to a client: its JSON and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartSnapshot {
    /// The cart's version (events applied).
    pub version: u64,
    /// The storefront JSON of the cart.
    pub json: Vec<u8>,
}

impl CartSnapshot {
    fn of(cart: &Cart) -> Self {
        CartSnapshot { version: cart.version(), json: cart.to_json() }
    }
}

/// One request to change a cart.
#[derive(Debug, Clone, Default)]
pub struct MutateRequest {
    /// Mutations applied all-or-nothing, in order.
    pub mutations: Vec<Mutation>,
    /// Apply only if the cart is at this version.
    pub if_match: Option<u64>,
    /// Apply at most once per key; a retry gets the first result.
    pub idempotency: Option<IdempotencyTag>,
}

struct Grain {
    state: tokio::sync::Mutex<Option<GrainState>>,
    last_used_ms: AtomicU64,
}

struct GrainState {
    cart: Cart,
    keys: IdempotencyKeys,
    /// The claim epoch this node holds on the cart; `None` until its first
    /// append, which claims the cart.
    epoch: Option<u64>,
}

/// The grains of this node.
pub struct GrainRuntime {
    store: Arc<dyn EventStore>,
    resolver: Resolver,
    clock: Arc<dyn Clock>,
    items: ItemInterner,
    grains: Mutex<HashMap<CartId, Arc<Grain>>>,
    options: RuntimeOptions,
    closing: AtomicBool,
    handover: std::sync::OnceLock<Arc<dyn Handover>>,
    metrics: TurnMetrics,
}

impl GrainRuntime {
    /// A runtime over `store`, resolving SKUs with `resolver`.
    pub fn new(
        store: Arc<dyn EventStore>,
        resolver: Resolver,
        clock: Arc<dyn Clock>,
        options: RuntimeOptions,
    ) -> Arc<Self> {
        Arc::new(GrainRuntime {
            store,
            resolver,
            clock,
            items: ItemInterner::new(),
            grains: Mutex::new(HashMap::new()),
            options,
            closing: AtomicBool::new(false),
            handover: std::sync::OnceLock::new(),
            metrics: TurnMetrics::new(),
        })
    }

    /// Installs the cluster's handover step (once).
    pub fn set_handover(&self, handover: Arc<dyn Handover>) {
        let _ = self.handover.set(handover);
    }

    /// The cart's current state; [`GrainError::NotFound`] if it has no events.
    pub async fn get(&self, id: &CartId) -> Result<CartSnapshot, GrainError> {
        let grain = self.grain(id)?;
        let result = {
            let mut slot = grain.state.lock().await;
            match self.activate(id, &mut slot).await {
                Ok(state) if state.cart.version() == 0 => Err(GrainError::NotFound),
                Ok(state) => Ok(CartSnapshot::of(&state.cart)),
                Err(e) => Err(e),
            }
        };
        if matches!(result, Err(GrainError::NotFound)) {
            // Reads of unknown ids must not fill memory with empty grains.
            drop(grain);
            self.forget_if_unused(id);
        }
        result
    }

    /// Applies `request` to the cart as one turn and returns the new state.
    ///
    /// The turn runs on its own task: if the caller goes away mid-turn, the
    /// turn still finishes, so the grain never misses its own append. A
    /// caller that may retry elsewhere passes an `Arc` and keeps a handle
    /// instead of copying the request.
    pub async fn mutate(
        self: &Arc<Self>,
        id: &CartId,
        request: impl Into<Arc<MutateRequest>>,
    ) -> Result<CartSnapshot, GrainError> {
        let request = request.into();
        if self.closing.load(Ordering::SeqCst) {
            return Err(GrainError::ShuttingDown);
        }
        if request.mutations.is_empty() {
            return Err(CartError::InvalidField { field: "mutations", reason: "is empty" }.into());
        }
        let runtime = Arc::clone(self);
        let id = id.clone();
        tokio::spawn(async move { runtime.turn(&id, request).await })
            .await
            .map_err(|e| GrainError::Store(StoreError::Unavailable(format!("turn failed: {e}"))))?
    }

    async fn turn(
        &self,
        id: &CartId,
        request: Arc<MutateRequest>,
    ) -> Result<CartSnapshot, GrainError> {
        let grain = self.grain(id)?;
        if let Some(tag) = &request.idempotency {
            let mut slot = grain.state.lock().await;
            let state = self.activate(id, &mut slot).await?;
            if let Some(answer) = self.replay_of(id, state, tag).await {
                return answer;
            }
        }
        let kinds: Vec<MutationType> = request.mutations.iter().map(Mutation::kind).collect();
        // The cluster resolves adds where they enter; only a request that
        // reaches the runtime directly still needs the catalogue here.
        let resolved;
        let mutations = if request.mutations.iter().any(needs_catalogue) {
            resolved = match self.resolve(request.mutations.clone()).await {
                Ok(resolved) => resolved,
                Err(e) => return Err(self.count_failure(id, &kinds, e)),
            };
            &resolved
        } else {
            &request.mutations
        };
        let mut slot = grain.state.lock().await;
        let result = self
            .apply_turn(id, &mut slot, mutations, request.if_match, request.idempotency.as_ref())
            .await;
        match result {
            Ok(snapshot) => {
                for kind in &kinds {
                    self.metrics.count(*kind, Outcome::Ok);
                }
                Ok(snapshot)
            }
            Err(e) => Err(self.count_failure(id, &kinds, e)),
        }
    }

    async fn apply_turn(
        &self,
        id: &CartId,
        slot: &mut Option<GrainState>,
        mutations: &[Mutation],
        if_match: Option<u64>,
        idempotency: Option<&IdempotencyTag>,
    ) -> Result<CartSnapshot, GrainError> {
        let state = self.activate(id, slot).await?;
        if let Some(tag) = &idempotency
            && let Some(answer) = self.replay_of(id, state, tag).await
        {
            return answer;
        }
        if let Some(expected) = if_match
            && expected != state.cart.version()
        {
            return Err(GrainError::PreconditionFailed { current: state.cart.version() });
        }
        let base = state.cart.version();
        // A refused mutation leaves the cart unchanged, so a single one is
        // applied in place; several are staged on a copy, all or nothing.
        let staged = match mutations {
            [single] => {
                state.cart.apply(single, &self.items)?;
                None
            }
            _ => {
                let mut next = state.cart.clone();
                for m in mutations {
                    next.apply(m, &self.items)?;
                }
                Some(next)
            }
        };
        let now = self.clock.now_ms() as i64;
        let last = mutations.len() - 1;
        let events = mutations
            .iter()
            .enumerate()
            .map(|(i, m)| NewEvent {
                kind: m.kind().code(),
                timestamp_ms: now,
                payload: m.encode_payload(),
                idempotency: if i == last { idempotency.cloned() } else { None },
            })
            .collect();
        let fence = match state.epoch {
            Some(epoch) => Fence::Epoch(epoch),
            None => Fence::Claim(self.options.node.clone()),
        };
        let started = std::time::Instant::now();
        let appended = self.store.append(id.as_str(), base, fence, events).await;
        self.metrics.append_duration.record(started.elapsed());
        // After a failed append the grain may be ahead of the log (or, when
        // the outcome is unknown, behind it): it is dropped and the next
        // request rebuilds it from the log.
        let failed = match appended {
            Ok(appended) => {
                state.epoch = Some(appended.epoch);
                None
            }
            Err(StoreError::Conflict { expected, actual }) => {
                tracing::warn!(cart = %id, expected, actual, "another writer appended first; reloading the grain");
                Some(GrainError::Conflict)
            }
            Err(StoreError::Fenced { held, current }) => {
                tracing::warn!(cart = %id, held, current, "fenced: another node claimed the cart; dropping the grain");
                metrics::counter!("cart_grain_fenced_total").increment(1);
                Some(GrainError::Fenced)
            }
            Err(e) => {
                tracing::error!(cart = %id, error = %e, "append failed; the grain reloads from the log");
                Some(e.into())
            }
        };
        if let Some(e) = failed {
            *slot = None;
            return Err(e);
        }
        if let Some(next) = staged {
            state.cart = next;
        }
        if let Some(tag) = &idempotency {
            state.keys.record(tag, state.cart.version());
        }
        Ok(CartSnapshot::of(&state.cart))
    }

    /// Counts a turn's mutations as refused (4xx) or failed (5xx), logging
    /// failures, and hands the error back.
    fn count_failure(&self, id: &CartId, kinds: &[MutationType], e: GrainError) -> GrainError {
        let outcome = if e.status() < 500 { Outcome::Refused } else { Outcome::Failed };
        for kind in kinds {
            self.metrics.count(*kind, outcome);
        }
        if e.status() >= 500 {
            tracing::warn!(cart = %id, types = ?kinds, error = %e, "mutation failed");
        }
        e
    }

    /// The stored answer for a retried idempotent request, if it is one.
    async fn replay_of(
        &self,
        id: &CartId,
        state: &GrainState,
        tag: &IdempotencyTag,
    ) -> Option<Result<CartSnapshot, GrainError>> {
        match state.keys.check(tag)? {
            Seen::Reused => Some(Err(GrainError::IdempotencyKeyReused)),
            Seen::Replay(version) if version == state.cart.version() => {
                Some(Ok(CartSnapshot::of(&state.cart)))
            }
            Seen::Replay(version) => Some(self.snapshot_at(id, version).await),
        }
    }

    /// The cart as it was at `version`, rebuilt from the log.
    async fn snapshot_at(&self, id: &CartId, version: u64) -> Result<CartSnapshot, GrainError> {
        let events = self.store.load(id.as_str()).await?;
        let upto: Vec<Event> = events.into_iter().take_while(|e| e.seq <= version).collect();
        let (cart, _) = self.replay(id, &upto)?;
        Ok(CartSnapshot::of(&cart))
    }

    /// Resolves add-by-SKU requests through the catalogue.
    pub async fn resolve(&self, mutations: Vec<Mutation>) -> Result<Vec<Mutation>, GrainError> {
        let mut out = Vec::with_capacity(mutations.len());
        for m in mutations {
            out.push(match m {
                Mutation::AddRequest(r) => {
                    validate_add_request(&r)?;
                    Mutation::AddItem(self.resolver.resolve(&r).await?)
                }
                Mutation::SetCartItems(s) if !s.requests.is_empty() => {
                    validate_set_cart_items(&s)?;
                    let mut items = s.items;
                    for r in &s.requests {
                        items.push(self.resolver.resolve(r).await?);
                    }
                    Mutation::SetCartItems(SetCartItems { requests: Vec::new(), items })
                }
                other => other,
            });
        }
        Ok(out)
    }

    /// The grain's state, replaying its events first if it is not active.
    async fn activate<'a>(
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
            let (cart, keys) = self.replay(id, &events)?;
            metrics::counter!("cart_grain_activations_total").increment(1);
            metrics::histogram!("cart_grain_activation_duration_seconds").record(started.elapsed());
            tracing::debug!(cart = %id, events = events.len(), "grain activated");
            *slot = Some(GrainState { cart, keys, epoch: None });
        }
        slot.as_mut().ok_or(GrainError::NotFound)
    }

    fn replay(&self, id: &CartId, events: &[Event]) -> Result<(Cart, IdempotencyKeys), GrainError> {
        let mut cart = Cart::new(id.shared());
        let mut keys = IdempotencyKeys::default();
        for event in events {
            let corrupt = |why: String| {
                GrainError::Store(StoreError::Corrupt(format!(
                    "cart {id} event {}: {why}",
                    event.seq
                )))
            };
            let m = Mutation::decode(u32::from(event.kind), &event.payload)
                .map_err(|e| corrupt(e.to_string()))?;
            cart.apply(&m, &self.items).map_err(|e| corrupt(format!("refused on replay: {e}")))?;
            if cart.version() != event.seq {
                return Err(corrupt(format!("replay reached version {}", cart.version())));
            }
            if let Some(tag) = &event.idempotency {
                keys.record(tag, event.seq);
            }
        }
        Ok((cart, keys))
    }

    /// The grain for `id`, creating it (inactive) if needed; evicts idle
    /// grains when at the cap.
    fn grain(&self, id: &CartId) -> Result<Arc<Grain>, GrainError> {
        let now = self.clock.now_ms();
        let mut grains = self.grains.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(g) = grains.get(id) {
            g.last_used_ms.store(now, Ordering::Relaxed);
            return Ok(Arc::clone(g));
        }
        if grains.len() >= self.options.max_grains {
            let evicted = evict_idle(&mut grains, self.options.max_grains / 16);
            metrics::counter!("cart_grain_passivations_total", "reason" => "evicted")
                .increment(evicted as u64);
            if grains.len() >= self.options.max_grains {
                return Err(GrainError::Overloaded);
            }
        }
        let grain = Arc::new(Grain {
            state: tokio::sync::Mutex::new(None),
            last_used_ms: AtomicU64::new(now),
        });
        grains.insert(id.clone(), Arc::clone(&grain));
        metrics::gauge!("cart_grains_resident").set(grains.len() as f64);
        Ok(grain)
    }

    fn forget_if_unused(&self, id: &CartId) {
        let mut grains = self.grains.lock().unwrap_or_else(PoisonError::into_inner);
        if grains.get(id).is_some_and(|g| Arc::strong_count(g) == 1) {
            grains.remove(id);
            metrics::gauge!("cart_grains_resident").set(grains.len() as f64);
        }
    }

    /// Passivates grains idle for the TTL (by this runtime's clock) that no
    /// request is using. Returns how many were passivated.
    pub fn passivate_idle(&self) -> usize {
        let now = self.clock.now_ms();
        let ttl = self.options.idle_ttl.as_millis() as u64;
        let passivated = {
            let mut grains = self.grains.lock().unwrap_or_else(PoisonError::into_inner);
            let before = grains.len();
            grains.retain(|_, g| {
                Arc::strong_count(g) > 1
                    || now.saturating_sub(g.last_used_ms.load(Ordering::Relaxed)) < ttl
            });
            metrics::gauge!("cart_grains_resident").set(grains.len() as f64);
            before - grains.len()
        };
        if passivated > 0 {
            metrics::counter!("cart_grain_passivations_total", "reason" => "idle")
                .increment(passivated as u64);
            tracing::debug!(passivated, "passivated idle grains");
            self.items.sweep();
        }
        passivated
    }

    /// Runs [`GrainRuntime::passivate_idle`] periodically until the runtime is
    /// dropped.
    pub fn spawn_passivation(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let period =
            (self.options.idle_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(runtime) => {
                        runtime.passivate_idle();
                    }
                    None => return,
                }
            }
        })
    }

    /// Flushes and passivates `id`'s grain (after its current turn) so that
    /// another node can take the cart over. Returns whether it was resident.
    pub async fn hand_over(&self, id: &CartId) -> Result<bool, GrainError> {
        let grain = {
            let grains = self.grains.lock().unwrap_or_else(PoisonError::into_inner);
            grains.get(id).cloned()
        };
        let Some(grain) = grain else { return Ok(false) };
        *grain.state.lock().await = None;
        self.store.flush().await?;
        drop(grain);
        self.forget_if_unused(id);
        metrics::counter!("cart_grain_passivations_total", "reason" => "handover").increment(1);
        Ok(true)
    }

    /// Passivates idle grains whose carts `keep` rejects (after a membership
    /// change, the carts this node no longer owns). Returns how many.
    pub fn passivate_unless(&self, keep: impl Fn(&CartId) -> bool) -> usize {
        let mut grains = self.grains.lock().unwrap_or_else(PoisonError::into_inner);
        let before = grains.len();
        grains.retain(|id, g| Arc::strong_count(g) > 1 || keep(id));
        let passivated = before - grains.len();
        metrics::gauge!("cart_grains_resident").set(grains.len() as f64);
        metrics::counter!("cart_grain_passivations_total", "reason" => "moved")
            .increment(passivated as u64);
        passivated
    }

    /// Ids of the resident grains.
    pub fn resident_ids(&self) -> Vec<CartId> {
        self.grains.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect()
    }

    /// How many grains are resident.
    pub fn resident(&self) -> usize {
        self.grains.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Refuses new mutations from now on (reads still work).
    pub fn begin_shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Makes every acknowledged mutation durable.
    pub async fn flush(&self) -> Result<(), GrainError> {
        Ok(self.store.flush().await?)
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

/// Whether a mutation still names products by SKU only.
fn needs_catalogue(m: &Mutation) -> bool {
    match m {
        Mutation::AddRequest(_) => true,
        Mutation::SetCartItems(s) => !s.requests.is_empty(),
        _ => false,
    }
}
