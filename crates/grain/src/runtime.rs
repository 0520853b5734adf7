//! The grain runtime: turns (one at a time per cart), command resolution,
//! passivation and handover. Activation is in [`crate::activation`], the
//! grain map in [`crate::registry`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cart_catalog::Resolver;
use cart_domain::cart::{validate_add_request, validate_set_cart_items};
use cart_domain::proto::SetCartItems;
use cart_domain::{Cart, CartCommand, CartEvent, CartState, ItemInterner, MutationType};
use cart_store::{EventStore, Fence, IdempotencyTag, NewEvent, Snapshot, StoreError};

use crate::activation::{Activation, Handover, Released, replay};
use crate::feeds::{CartWatch, Feeds, StateReceiver, Watchers};
use crate::idempotency::Seen;
use crate::lease::Lease;
use tracing::Instrument;

use crate::load::Load;
use crate::registry::{GrainState, Registry};
use crate::snapshots::SnapshotWriter;
use crate::task::OwnedTask;
use crate::turn_metrics::{Outcome, TurnMetrics};
use crate::{CartId, Clock, GrainError, MutateRequest, ResolvedRequest};

/// Settings of a [`GrainRuntime`].
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// A grain unused this long is passivated.
    pub idle_ttl: Duration,
    /// Most grains resident at once.
    pub max_grains: usize,
    /// Most watchers (SSE and gRPC watch streams) at once.
    pub max_watchers: usize,
    /// This node's name, recorded in the store when it claims a cart. In a
    /// cluster, its address and the run of its process
    /// (`host:grpc:control#incarnation`): unique among live processes, so
    /// a grain reactivated by the same process keeps its claim, and a
    /// restarted one never mistakes its predecessor's claims for its own.
    pub node: String,
    /// How long an idempotency key protects its request.
    pub idempotency_window: Duration,
    /// Whether this node serves only under a lease the cluster grants
    /// ([`GrainRuntime::grant_lease`]); `false`: a node alone on its store,
    /// always leased.
    pub leased: bool,
    /// A cart's state is snapshotted once this many events follow its last
    /// snapshot (and when its grain passivates); 0: never.
    pub snapshot_every: u64,
}

/// Most carts one expiry round looks at.
pub const EXPIRY_BATCH: usize = 10_000;

/// How long carts are kept unused before they are erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// An idle cart is erased this long after its last change.
    pub expire_after: Duration,
    /// A cart whose order completed is erased this long after its last
    /// change.
    pub keep_completed: Duration,
}

impl Expiry {
    /// Defaults: 30 days idle, 90 days completed.
    pub const DEFAULT: Expiry = Expiry {
        expire_after: Duration::from_secs(30 * 24 * 3600),
        keep_completed: Duration::from_secs(90 * 24 * 3600),
    };

    /// How long `cart` is kept after its last change.
    pub fn keep(&self, cart: &Cart) -> Duration {
        if cart.checkout().is_some_and(|c| c.completed) {
            self.keep_completed
        } else {
            self.expire_after
        }
    }
}

impl Default for RuntimeOptions {
    /// 15 minutes idle TTL, 200 000 grains, 10 000 watchers, node name
    /// `local`.
    fn default() -> Self {
        RuntimeOptions {
            idle_ttl: Duration::from_secs(15 * 60),
            max_grains: 200_000,
            max_watchers: 10_000,
            node: "local".into(),
            idempotency_window: crate::idempotency::DEFAULT_WINDOW,
            leased: false,
            snapshot_every: 50,
        }
    }
}

/// The grains of this node.
pub struct GrainRuntime {
    store: Arc<dyn EventStore>,
    resolver: Resolver,
    clock: Arc<dyn Clock>,
    items: ItemInterner,
    registry: Registry,
    options: RuntimeOptions,
    closing: AtomicBool,
    handover: OnceLock<Arc<dyn Handover>>,
    metrics: TurnMetrics,
    feeds: Feeds,
    watchers: Watchers,
    lease: Lease,
    released: Released,
    snapshots: SnapshotWriter,
}

impl GrainRuntime {
    /// A runtime over `store`, resolving SKUs with `resolver`.
    pub fn new(
        store: Arc<dyn EventStore>,
        resolver: Resolver,
        clock: Arc<dyn Clock>,
        options: RuntimeOptions,
    ) -> Arc<Self> {
        let lease = if options.leased { Lease::none() } else { Lease::unbounded() };
        Arc::new(GrainRuntime {
            store: Arc::clone(&store),
            resolver,
            clock,
            items: ItemInterner::new(),
            registry: Registry::new(options.max_grains),
            watchers: Watchers::new(options.max_watchers),
            options,
            closing: AtomicBool::new(false),
            handover: OnceLock::new(),
            metrics: TurnMetrics::new(),
            feeds: Feeds::default(),
            lease,
            released: Released::default(),
            snapshots: SnapshotWriter::start(Arc::clone(&store)),
        })
    }

    /// Installs the cluster's handover step (once).
    pub fn set_handover(&self, handover: Arc<dyn Handover>) {
        let _ = self.handover.set(handover);
    }

    /// How this runtime activates grains, under lease `generation`.
    fn activation(&self, generation: u64) -> Activation<'_> {
        Activation {
            store: self.store.as_ref(),
            items: &self.items,
            node: &self.options.node,
            handover: self.handover.get().map(|h| h.as_ref()),
            window: self.options.idempotency_window,
            clock: self.clock.as_ref(),
            generation,
            released: &self.released,
        }
    }

    /// The shared product facts of this node's carts (to restore carts that
    /// other nodes report).
    pub fn items(&self) -> &ItemInterner {
        &self.items
    }

    /// This node's serving lease.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Extends this node's lease to `until` (monotonic ms), granted at
    /// `now`. After a lapse, grains activated before it are dropped: they
    /// may be stale.
    pub fn grant_lease(&self, now: u64, until: u64) {
        if self.lease.renew(now, until) {
            let dropped = self.registry.retain_unused(|_, _| false).len();
            metrics::counter!(crate::families::GRAIN_PASSIVATIONS.name, "reason" => "lease_lapsed")
                .increment(dropped as u64);
            metrics::counter!(crate::families::LEASE_GRANTS_AFTER_LAPSE.name).increment(1);
            tracing::info!(dropped, "serving lease granted; carts reload from the store");
        }
    }

    /// The lease generation this request is served under.
    fn leased(&self) -> Result<u64, GrainError> {
        self.lease.held(self.clock.monotonic_ms()).ok_or(GrainError::NoLease)
    }

    /// An answer read under lease `generation`, if the lease still holds.
    fn still_leased<T>(&self, generation: u64, answer: T) -> Result<T, GrainError> {
        if self.lease.still_held(generation, self.clock.monotonic_ms()) {
            Ok(answer)
        } else {
            Err(GrainError::NoLease)
        }
    }

    /// The cart's current state; [`GrainError::NotFound`] if it has no events.
    pub async fn get(&self, id: &CartId) -> Result<CartState, GrainError> {
        let generation = self.leased()?;
        let grain = self.registry.grain(id, self.clock.now_ms())?;
        let result = {
            let mut slot = grain.state.lock().await;
            match self.activation(generation).activate(id, &mut slot).await {
                Ok(state) if state.cart.version() == 0 => Err(GrainError::NotFound),
                Ok(state) => self.still_leased(generation, Arc::clone(&state.cart)),
                Err(e) => Err(e),
            }
        };
        if result.is_ok() {
            self.metrics.count_read();
        }
        if result.is_err() {
            // Reads of unknown ids, or refused ones, must not fill memory
            // with empty grains.
            drop(grain);
            self.registry.forget_if_unused(id);
        }
        result
    }

    /// Resolves commands for cart `id` into events: add-by-SKU and
    /// replace-by-SKU through the catalogue (the only place that happens),
    /// the rest as they are. A refusal or failure here is counted like a
    /// turn's.
    pub async fn resolve(
        &self,
        id: &CartId,
        request: MutateRequest<CartCommand>,
    ) -> Result<ResolvedRequest, GrainError> {
        let MutateRequest { mutations, if_match, idempotency } = request;
        let mut events = Vec::with_capacity(mutations.len());
        let mut commands = mutations.into_iter();
        while let Some(command) = commands.next() {
            let kind = command.kind();
            match self.resolve_one(command).await {
                Ok(event) => events.push(event),
                Err(e) => {
                    let kinds = events
                        .iter()
                        .map(CartEvent::kind)
                        .chain(std::iter::once(kind))
                        .chain(commands.map(|c| c.kind()));
                    return Err(self.count_failure(id, kinds.collect(), e));
                }
            }
        }
        Ok(MutateRequest { mutations: events, if_match, idempotency })
    }

    async fn resolve_one(&self, command: CartCommand) -> Result<CartEvent, GrainError> {
        Ok(match command {
            CartCommand::AddSku(r) => {
                validate_add_request(&r)?;
                CartEvent::AddItem(self.resolver.resolve(&r).await?)
            }
            CartCommand::SetItems(requests) => {
                validate_set_cart_items(&requests)?;
                let mut items = Vec::with_capacity(requests.len());
                for r in &requests {
                    items.push(self.resolver.resolve(r).await?);
                }
                CartEvent::SetCartItems(SetCartItems { requests: Vec::new(), items })
            }
            CartCommand::ChangeQuantity(m) => CartEvent::ChangeQuantity(m),
            CartCommand::RemoveItem(m) => CartEvent::RemoveItem(m),
            CartCommand::SetDelivery(m) => CartEvent::SetDelivery(self.resolver.price_delivery(m)?),
            CartCommand::SetDeliveryWithFee(m) => CartEvent::SetDelivery(m),
            CartCommand::RemoveDelivery(m) => CartEvent::RemoveDelivery(m),
            CartCommand::SetPickupPoint(m) => CartEvent::SetPickupPoint(m),
            CartCommand::Checkout(m) => CartEvent::CreateCheckoutOrder(m),
            CartCommand::CompleteOrder(m) => CartEvent::OrderCompleted(m),
        })
    }

    /// Resolves and applies a client's request (see [`GrainRuntime::apply`]).
    pub async fn mutate(
        self: &Arc<Self>,
        id: &CartId,
        request: MutateRequest<CartCommand>,
    ) -> Result<CartState, GrainError> {
        let resolved = self.resolve(id, request).await?;
        self.apply(id, resolved).await
    }

    /// Applies resolved `request` to the cart as one turn and returns the
    /// new state.
    ///
    /// The turn runs on its own task: if the caller goes away mid-turn, the
    /// turn still finishes, so the grain never misses its own append. A
    /// caller that may retry elsewhere passes an `Arc` and keeps a handle
    /// instead of copying the request.
    pub async fn apply(
        self: &Arc<Self>,
        id: &CartId,
        request: impl Into<Arc<ResolvedRequest>>,
    ) -> Result<CartState, GrainError> {
        let request = request.into();
        if self.closing.load(Ordering::SeqCst) {
            return Err(GrainError::ShuttingDown);
        }
        self.leased()?;
        if request.mutations.is_empty() {
            return Err(cart_domain::CartError::InvalidField {
                field: "mutations",
                reason: "is empty",
            }
            .into());
        }
        // The turn runs to its end even if the caller goes away (a client
        // disconnect never leaves a grain between staging and its append);
        // it is bounded by the store's own deadlines, and shutdown flushes
        // the store after the drain, so it is not left running.
        let span = tracing::info_span!(
            target: cart_trace::TARGET,
            "turn",
            otel.name = "cart turn",
            cart.id = %id,
            mutations = request.mutations.len(),
        );
        let runtime = Arc::clone(self);
        let id = id.clone();
        tokio::spawn(async move { runtime.turn(&id, request).await }.instrument(span))
            .await
            .map_err(|e| GrainError::Store(StoreError::Unavailable(format!("turn failed: {e}"))))?
    }

    async fn turn(
        &self,
        id: &CartId,
        request: Arc<ResolvedRequest>,
    ) -> Result<CartState, GrainError> {
        let result = match self.registry.grain(id, self.clock.now_ms()) {
            Ok(grain) => {
                let mut slot = grain.state.lock().await;
                self.apply_turn(id, &mut slot, &request).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(state) => {
                for event in &request.mutations {
                    self.metrics.count(event.kind(), Outcome::Ok);
                }
                self.feeds.publish(id, &state);
                Ok(state)
            }
            Err(e) => {
                let kinds = request.mutations.iter().map(CartEvent::kind).collect();
                Err(self.count_failure(id, kinds, e))
            }
        }
    }

    async fn apply_turn(
        &self,
        id: &CartId,
        slot: &mut Option<GrainState>,
        request: &ResolvedRequest,
    ) -> Result<CartState, GrainError> {
        let generation = self.leased()?;
        let state = self.activation(generation).activate(id, slot).await?;
        let idempotency = request.idempotency.as_ref();
        if let Some(tag) = idempotency {
            state.keys.expire(self.clock.now_ms() as i64, self.options.idempotency_window);
            if let Some(answer) = self.replay_of(id, state, tag).await {
                // Answered without an append: only a held lease vouches for it.
                return answer.and_then(|a| self.still_leased(generation, a));
            }
            if state.keys.is_full() {
                return Err(GrainError::TooManyKeys { max: crate::idempotency::MAX_KEYS_PER_CART });
            }
        }
        if let Some(expected) = request.if_match
            && expected != state.cart.version()
        {
            return Err(GrainError::PreconditionFailed { current: state.cart.version() });
        }
        let base = state.cart.version();
        let events = &request.mutations;
        // A refused event leaves the cart unchanged, so a single one is
        // applied in place (copied first only if a reader still holds the
        // state); several are staged on a copy, all or nothing.
        let before = state.cart.json_size_hint();
        let staged = match events.as_slice() {
            [single] => {
                let cart = Arc::make_mut(&mut state.cart);
                cart.apply(single, &self.items)?;
                if let Err(e) = cart.check_growth(before) {
                    // Applied in place: the next request rebuilds the grain
                    // from the log, where this event never was.
                    *slot = None;
                    return Err(e.into());
                }
                None
            }
            _ => {
                let mut next = Cart::clone(&state.cart);
                for e in events {
                    next.apply(e, &self.items)?;
                }
                next.check_growth(before)?;
                Some(next)
            }
        };
        let now = self.clock.now_ms() as i64;
        let last = events.len() - 1;
        let records: Vec<NewEvent> = events
            .iter()
            .enumerate()
            .map(|(i, e)| NewEvent {
                kind: e.kind().code(),
                timestamp_ms: now,
                payload: e.encode_payload(),
                idempotency: if i == last { idempotency.cloned() } else { None },
            })
            .collect();
        let fence = match state.epoch {
            Some(epoch) => Fence::Epoch(epoch),
            None => Fence::Claim(self.options.node.clone()),
        };
        let started = std::time::Instant::now();
        let span = tracing::info_span!(
            target: cart_trace::TARGET,
            "store",
            otel.name = "store append",
            events = records.len(),
        );
        let appended = self.store.append(id.as_str(), base, fence, records).instrument(span).await;
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
                metrics::counter!(crate::families::GRAIN_FENCED.name).increment(1);
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
            state.cart = Arc::new(next);
        }
        if let Some(tag) = idempotency {
            state.keys.record(tag, state.cart.version(), now, self.options.idempotency_window);
        }
        state.last_event_ms = now;
        let every = self.options.snapshot_every;
        if every > 0
            && state.cart.version() - state.snapshot_version >= every
            && let Some(snapshot) = Self::snapshot_of(state)
            && self.snapshots.offer(id, snapshot)
        {
            state.snapshot_version = state.cart.version();
        }
        Ok(Arc::clone(&state.cart))
    }

    /// A snapshot of the grain's state, if it has events since its last.
    fn snapshot_of(state: &GrainState) -> Option<Snapshot> {
        let version = state.cart.version();
        (version > state.snapshot_version).then(|| Snapshot {
            version,
            timestamp_ms: state.last_event_ms,
            state: state.cart.snapshot(state.keys.to_snapshot()),
        })
    }

    /// Erases the cart: its events, snapshots and claim, here and in the
    /// store, and ends its watches. Only the cart's owner calls it (the
    /// grain's turn lock orders it after every turn in flight). `false` if
    /// there was no such cart.
    pub async fn erase(&self, id: &CartId) -> Result<bool, GrainError> {
        self.erase_if(id, "request", |_| true).await
    }

    /// Erases the cart if it has been unused longer than `expiry` keeps it
    /// (checked under its turn lock, so a cart used meanwhile is kept).
    pub async fn expire_if_idle(&self, id: &CartId, expiry: Expiry) -> Result<bool, GrainError> {
        let now = self.clock.now_ms() as i64;
        self.erase_if(id, "expired", |state| {
            let keep = i64::try_from(expiry.keep(&state.cart).as_millis()).unwrap_or(i64::MAX);
            now.saturating_sub(state.last_event_ms) >= keep
        })
        .await
    }

    /// Erases the cart, in its turn, if `condition` holds of its state.
    /// Activation runs first: the handover means no other node serves the
    /// cart from memory while it is erased.
    async fn erase_if(
        &self,
        id: &CartId,
        reason: &'static str,
        condition: impl FnOnce(&GrainState) -> bool,
    ) -> Result<bool, GrainError> {
        let generation = self.leased()?;
        let grain = self.registry.grain(id, self.clock.now_ms())?;
        let mut slot = grain.state.lock().await;
        let wanted = match self.activation(generation).activate(id, &mut slot).await {
            Ok(state) => state.cart.version() > 0 && condition(state),
            Err(GrainError::NotFound) => false,
            Err(e) => return Err(e),
        };
        let erased = wanted && self.store.erase(id.as_str()).await?;
        if wanted {
            *slot = None;
        }
        drop(slot);
        drop(grain);
        self.registry.forget_if_unused(id);
        if erased {
            self.feeds.close_where(|watched| watched == id);
            metrics::counter!(crate::families::ERASED.name, "reason" => reason).increment(1);
            tracing::info!(cart = %id, reason, "cart erased");
        }
        Ok(erased)
    }

    /// Counts a turn's mutations as refused (4xx) or failed (5xx), logging
    /// failures, and hands the error back.
    fn count_failure(&self, id: &CartId, kinds: Vec<MutationType>, e: GrainError) -> GrainError {
        let failed = e.kind().is_failure();
        let outcome = if failed { Outcome::Failed } else { Outcome::Refused };
        for &kind in &kinds {
            self.metrics.count(kind, outcome);
        }
        if failed {
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
    ) -> Option<Result<CartState, GrainError>> {
        match state.keys.check(tag)? {
            Seen::Reused => Some(Err(GrainError::IdempotencyKeyReused)),
            Seen::Replay(version) if version == state.cart.version() => {
                Some(Ok(Arc::clone(&state.cart)))
            }
            Seen::Replay(version) => Some(self.state_at(id, version).await),
        }
    }

    /// The cart as it was at `version`, rebuilt from the log. A version
    /// older than the cart's snapshot can no longer be rebuilt (its events
    /// may be compacted away): the retry is answered with the cart as of
    /// the snapshot, the earliest state still stored. It took effect once
    /// either way.
    async fn state_at(&self, id: &CartId, version: u64) -> Result<CartState, GrainError> {
        let mut loaded = self.store.load(id.as_str()).await?;
        loaded.events.retain(|e| e.seq <= version);
        let now = self.clock.now_ms() as i64;
        let (cart, _) = replay(id, &loaded, &self.items, self.options.idempotency_window, now)?;
        Ok(Arc::new(cart))
    }

    /// A watch of a cart served by this node: its current state first, then
    /// every newer committed state. [`GrainError::NotFound`] if the cart has
    /// no events; `Overloaded` when the watcher cap is reached.
    pub async fn watch(&self, id: &CartId) -> Result<CartWatch, GrainError> {
        let watch = self.watch_served(id).await?;
        if watch.updates.borrow().is_none() {
            drop(watch);
            self.feeds.release(id);
            return Err(GrainError::NotFound);
        }
        Ok(watch)
    }

    /// [`GrainRuntime::watch`] for a peer following the cart: a cart with no
    /// events yet is watched too (its first state comes with its first turn).
    pub async fn watch_served(&self, id: &CartId) -> Result<CartWatch, GrainError> {
        let permit = self.watchers.admit()?;
        let updates = self.feed(id).await?;
        Ok(CartWatch { updates, permit })
    }

    /// The feed of `id`'s committed states on this node, holding its current
    /// state (none while the cart has no events), without a watcher permit
    /// (for the cluster's own followers). It closes when this node stops
    /// serving the cart (handover, a move, shutdown).
    pub async fn feed(&self, id: &CartId) -> Result<StateReceiver, GrainError> {
        let updates = self.feeds.subscribe(id);
        match self.get(id).await {
            Ok(current) => self.feeds.publish(id, &current),
            Err(GrainError::NotFound) => {}
            Err(e) => {
                drop(updates);
                self.feeds.release(id);
                return Err(e);
            }
        }
        Ok(updates)
    }

    /// Admits one watcher under this node's cap.
    pub fn admit_watcher(&self) -> Result<crate::feeds::WatchPermit, GrainError> {
        self.watchers.admit()
    }

    /// Passivates grains idle for the TTL (by this runtime's clock) that no
    /// request is using, snapshotting those with events since their last
    /// snapshot. Returns how many were passivated.
    pub async fn passivate_idle(&self) -> usize {
        let now = self.clock.now_ms();
        let ttl = self.options.idle_ttl.as_millis() as u64;
        let removed = self
            .registry
            .retain_unused(|_, g| now.saturating_sub(g.last_used_ms.load(Ordering::Relaxed)) < ttl);
        let passivated = removed.len();
        if self.options.snapshot_every > 0 {
            for (id, grain) in removed {
                let slot = grain.state.lock().await;
                if let Some(state) = slot.as_ref()
                    && self.lease.still_held(state.generation, self.clock.monotonic_ms())
                    && let Some(snapshot) = Self::snapshot_of(state)
                {
                    crate::snapshots::save(self.store.as_ref(), &id, snapshot).await;
                }
            }
        }
        self.feeds.sweep();
        if passivated > 0 {
            metrics::counter!(crate::families::GRAIN_PASSIVATIONS.name, "reason" => "idle")
                .increment(passivated as u64);
            tracing::debug!(passivated, "passivated idle grains");
            self.items.sweep();
        }
        passivated
    }

    /// Runs [`GrainRuntime::passivate_idle`] periodically while the returned
    /// handle lives (and the runtime does).
    pub fn spawn_passivation(self: &Arc<Self>) -> OwnedTask {
        let weak = Arc::downgrade(self);
        let period =
            (self.options.idle_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        OwnedTask::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(runtime) => {
                        runtime.passivate_idle().await;
                    }
                    None => return,
                }
            }
        })
    }

    /// Erases, every `every`, the carts idle longer than `expiry` keeps
    /// them, among those `owns` says this node serves (at most
    /// [`EXPIRY_BATCH`] a round, oldest first), while the returned handle
    /// lives (and the runtime does).
    pub fn spawn_expiry(
        self: &Arc<Self>,
        expiry: Expiry,
        every: Duration,
        owns: Arc<dyn Fn(&CartId) -> bool + Send + Sync>,
    ) -> OwnedTask {
        let weak = Arc::downgrade(self);
        OwnedTask::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(runtime) = weak.upgrade() else { return };
                runtime.expire_round(expiry, owns.as_ref()).await;
            }
        })
    }

    /// One round of [`GrainRuntime::spawn_expiry`]; returns how many carts
    /// it erased.
    pub async fn expire_round(
        &self,
        expiry: Expiry,
        owns: &(dyn Fn(&CartId) -> bool + Send + Sync),
    ) -> usize {
        let shortest = expiry.expire_after.min(expiry.keep_completed);
        let before = (self.clock.now_ms() as i64)
            .saturating_sub(i64::try_from(shortest.as_millis()).unwrap_or(i64::MAX));
        let ids = match self.store.idle_carts(before, EXPIRY_BATCH).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "could not list idle carts to expire");
                return 0;
            }
        };
        let mut erased = 0;
        for id in ids.iter().filter_map(|id| CartId::parse(id).ok()) {
            if !owns(&id) {
                continue;
            }
            match self.expire_if_idle(&id, expiry).await {
                Ok(true) => erased += 1,
                Ok(false) => {}
                Err(e) => tracing::debug!(cart = %id, error = %e, "could not expire a cart"),
            }
        }
        if erased > 0 {
            tracing::info!(erased, listed = ids.len(), "expired idle carts");
        }
        erased
    }

    /// Flushes and passivates `id`'s grain (after its current turn) so that
    /// another node can take the cart over, and ends its watches here.
    /// Returns whether it was resident.
    pub async fn hand_over(&self, id: &CartId) -> Result<bool, GrainError> {
        self.feeds.close_where(|watched| watched == id);
        self.released.add(id, self.clock.monotonic_ms());
        let Some(grain) = self.registry.get(id) else { return Ok(false) };
        *grain.state.lock().await = None;
        self.store.flush().await?;
        drop(grain);
        self.registry.forget_if_unused(id);
        metrics::counter!(crate::families::GRAIN_PASSIVATIONS.name, "reason" => "handover")
            .increment(1);
        Ok(true)
    }

    /// Passivates idle grains whose carts `keep` rejects, and ends their
    /// watches here (after a membership change, the carts this node no
    /// longer owns). Returns how many grains were passivated.
    pub fn passivate_unless(&self, keep: impl Fn(&CartId) -> bool) -> usize {
        self.feeds.close_where(|id| !keep(id));
        let passivated = self.registry.retain_unused(|id, _| keep(id)).len();
        metrics::counter!(crate::families::GRAIN_PASSIVATIONS.name, "reason" => "moved")
            .increment(passivated as u64);
        passivated
    }

    /// Ids of the resident grains.
    pub fn resident_ids(&self) -> Vec<CartId> {
        self.registry.ids()
    }

    /// How many grains are resident.
    pub fn resident(&self) -> usize {
        self.registry.len()
    }

    /// What this node carries: resident grains and the turns served since
    /// it started.
    pub fn load(&self) -> Load {
        self.metrics.load(self.registry.len())
    }

    /// Refuses new mutations from now on (reads still work) and ends the
    /// watches this node serves, so watchers move to another node instead of
    /// holding the shutdown up.
    pub fn begin_shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.feeds.close_where(|_| true);
    }

    /// Makes every acknowledged mutation durable.
    pub async fn flush(&self) -> Result<(), GrainError> {
        Ok(self.store.flush().await?)
    }
}
