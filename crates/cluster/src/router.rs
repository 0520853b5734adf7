//! The cluster's way to a cart: serve it here if this node owns it, else
//! forward it to the owner over CartActor.
//!
//! A forwarded request carries `forwarded = true`, and its receiver always
//! serves it itself: one hop, never a loop. A request is retried once, on the
//! next node in rendezvous order, only when it certainly was not applied: the
//! owner answered 421 (it is closing, or its handover was refused), or the
//! connection to it was refused. A timeout is never retried elsewhere, since
//! the owner may have applied it.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use cart_domain::CartState;
use cart_grain::{
    CartId, CartWatch, Carts, Clock, ErrorKind, GrainError, GrainRuntime, MutateRequest,
    ResolvedRequest,
};

use tracing::Instrument;

use crate::call::{forward_span, traced};
use crate::client::{Peers, never_delivered};
use crate::follow::Followers;
use crate::mapping;
use crate::membership::Membership;
use crate::node::NodeAddr;
use crate::placement;
use crate::proto::cart::{EraseRequest, StateRequest};

/// How one attempt ended.
enum Attempt<T> {
    Done(Result<T, GrainError>),
    /// Certainly not applied; try again, on the next node in rendezvous order
    /// when `skip_owner`.
    Reroute {
        why: GrainError,
        skip_owner: bool,
    },
}

/// Carts across the cluster.
pub struct ClusterCarts {
    runtime: Arc<GrainRuntime>,
    membership: Arc<Membership>,
    peers: Arc<Peers>,
    followers: Arc<Followers>,
    clock: Arc<dyn Clock>,
}

impl ClusterCarts {
    /// Routes over `membership`'s view, serving owned carts from `runtime`;
    /// forwarded requests expire by `clock`.
    pub fn new(
        runtime: Arc<GrainRuntime>,
        membership: Arc<Membership>,
        peers: Arc<Peers>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let followers =
            Followers::new(Arc::clone(&runtime), Arc::clone(&membership), Arc::clone(&peers));
        ClusterCarts { runtime, membership, peers, followers, clock }
    }

    /// Ends the watches followed on this node (it is leaving the cluster).
    pub fn end_watches(&self) {
        self.followers.close_all();
    }

    fn owner(&self, id: &CartId, avoid: &[NodeAddr]) -> Result<NodeAddr, GrainError> {
        let view = self.membership.view();
        placement::owner(id.as_str(), &view, avoid)
            .cloned()
            .ok_or_else(|| GrainError::Unreachable("no live node can serve this cart".into()))
    }

    fn is_me(&self, node: &NodeAddr) -> bool {
        node == self.membership.me()
    }

    /// Serves a read forwarded by another node (never forwards it again).
    pub async fn serve_forwarded_get(&self, id: &CartId) -> Result<CartState, GrainError> {
        misdirected_if_moving(self.runtime.get(id).await)
    }

    /// Serves a resolved mutation forwarded by another node (never forwards
    /// it again). A write that lost to another writer answers `Fenced`; the
    /// entry node retries it, as it would a local one.
    pub async fn serve_forwarded_mutate(
        &self,
        id: &CartId,
        request: ResolvedRequest,
    ) -> Result<CartState, GrainError> {
        misdirected_if_moving(self.runtime.apply(id, request).await)
    }

    /// Serves an erasure forwarded by another node (never forwards it again).
    pub async fn serve_forwarded_erase(&self, id: &CartId) -> Result<bool, GrainError> {
        match self.runtime.erase(id).await {
            Err(e @ (GrainError::ShuttingDown | GrainError::NoLease)) => {
                Err(e.as_kind(ErrorKind::Misdirected))
            }
            other => other,
        }
    }

    async fn try_erase(&self, owner: NodeAddr, id: &CartId) -> Attempt<bool> {
        if self.is_me(&owner) {
            return local(self.runtime.erase(id).await);
        }
        let mut client = match self.peers.cart(&owner) {
            Ok(c) => c,
            Err(e) => return Attempt::Done(Err(GrainError::Unreachable(e.to_string()))),
        };
        let span = forward_span("Erase", &owner);
        let request = self.peers.request(EraseRequest { cart_id: id.to_string(), forwarded: true });
        let request = traced(request, &span);
        let started = Instant::now();
        let result = client
            .erase(request)
            .instrument(span)
            .await
            .map(|r| mapping::from_erase_reply(r.into_inner()));
        record_forward("erase", started, &result);
        remote(&owner, id, result)
    }

    /// Runs `attempt` on the cart's owner, and once more on the next owner
    /// when the first attempt certainly did not apply. A retryable ownership
    /// change whose retry also failed is answered as `Unavailable`: clients
    /// never see it as such.
    async fn routed<T, F, Fut>(&self, id: &CartId, attempt: F) -> Result<T, GrainError>
    where
        F: Fn(NodeAddr) -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        // A node that cannot confirm its own carts cannot trust its view of
        // the others' either: it refuses at once. Only a node that has just
        // started (no lease yet) lets a request wait for its first one.
        let lease = self.runtime.lease();
        let now = || self.clock.monotonic_ms();
        if lease.held(now()).is_none()
            && (lease.ever_granted() || !lease.wait_held(self.peers.deadline(), now).await)
        {
            return Err(GrainError::NoLease);
        }
        let first = self.owner(id, &[])?;
        let (why, skip_owner) = match attempt(first.clone()).await {
            Attempt::Done(result) => return result,
            Attempt::Reroute { why, skip_owner } => (why, skip_owner),
        };
        let avoid = if skip_owner { vec![first.clone()] } else { vec![] };
        let next = self.owner(id, &avoid)?;
        tracing::info!(cart = %id, from = %first, to = %next, reason = %why, "retrying after an owner change");
        match attempt(next).await {
            Attempt::Done(result) => result,
            Attempt::Reroute { why, .. } => Err(why.as_kind(ErrorKind::Unavailable)),
        }
    }

    async fn try_get(&self, owner: NodeAddr, id: &CartId) -> Attempt<CartState> {
        let owner = &owner;
        if self.is_me(owner) {
            return local(self.runtime.get(id).await);
        }
        let mut client = match self.peers.cart(owner) {
            Ok(c) => c,
            Err(e) => return Attempt::Done(Err(GrainError::Unreachable(e.to_string()))),
        };
        let span = forward_span("GetState", owner);
        let request = self.peers.request(StateRequest { cart_id: id.to_string(), forwarded: true });
        let request = traced(request, &span);
        let items = self.runtime.items();
        let started = Instant::now();
        let result = client
            .get_state(request)
            .instrument(span)
            .await
            .map(|r| mapping::from_state_reply(r.into_inner(), items));
        record_forward("get", started, &result);
        remote(owner, id, result)
    }

    async fn try_mutate(
        &self,
        owner: NodeAddr,
        id: &CartId,
        request: &Arc<ResolvedRequest>,
    ) -> Attempt<CartState> {
        let owner = &owner;
        if self.is_me(owner) {
            return local(self.runtime.apply(id, Arc::clone(request)).await);
        }
        // The forwarder gives up after the deadline; so must the owner.
        let expires_at =
            self.clock.now_ms().saturating_add(self.peers.deadline().as_millis() as u64);
        let mut wire =
            mapping::encode_forwarded(id, request, i64::try_from(expires_at).unwrap_or(i64::MAX));
        let span = forward_span("Mutate", owner);
        if let Some(context) = cart_trace::of(&span) {
            wire.traceparent = context.traceparent;
            wire.tracestate = context.tracestate;
        }
        let items = self.runtime.items();
        let started = Instant::now();
        let result = self
            .peers
            .mutate(owner, wire)
            .instrument(span)
            .await
            .map(|r| mapping::from_mutation_reply(r, items));
        record_forward("mutate", started, &result);
        if let Ok(Err(e)) = &result
            && e.kind().is_failure()
        {
            let types: Vec<&str> = request.mutations.iter().map(|m| m.kind().name()).collect();
            tracing::warn!(cart = %id, owner = %owner, types = ?types, error = %e, "remote mutation failed");
        }
        remote(owner, id, result)
    }
}

/// On a node serving a forwarded request, shutting down or holding no lease
/// (not yet, after a restart or a healed partition) means "ask the next
/// node" (a refused handover already is): nothing was applied.
fn misdirected_if_moving(result: Result<CartState, GrainError>) -> Result<CartState, GrainError> {
    match result {
        Err(e @ (GrainError::ShuttingDown | GrainError::NoLease)) => {
            Err(e.as_kind(ErrorKind::Misdirected))
        }
        other => other,
    }
}

/// How a failure that certainly applied nothing is retried: a fenced or
/// stale writer reloads and tries again where it is (`Some(false)`), a
/// node that cannot serve the cart sends it to the next node
/// (`Some(true)`); anything else is the answer (`None`).
fn reroute(e: &GrainError) -> Option<bool> {
    match e.kind() {
        ErrorKind::Fenced => Some(false),
        ErrorKind::Misdirected => Some(true),
        ErrorKind::Invalid
        | ErrorKind::NotFound
        | ErrorKind::Conflict
        | ErrorKind::PreconditionFailed
        | ErrorKind::CheckoutLocked
        | ErrorKind::Completed
        | ErrorKind::IdempotencyKeyReused
        | ErrorKind::Unavailable
        | ErrorKind::BadGateway
        | ErrorKind::Internal => None,
    }
}

fn local<T>(result: Result<T, GrainError>) -> Attempt<T> {
    match result {
        Err(why) => match reroute(&why) {
            Some(skip_owner) => Attempt::Reroute { why, skip_owner },
            None => Attempt::Done(Err(why)),
        },
        ok => Attempt::Done(ok),
    }
}

/// Times a call forwarded to the cart's owner and counts it if it got no
/// answer (`call` is one of the `call` label's values).
fn record_forward<T>(call: &'static str, started: Instant, result: &Result<T, tonic::Status>) {
    use crate::families::{FORWARD_DURATION, FORWARD_ERRORS};
    metrics::histogram!(FORWARD_DURATION.name, "call" => call).record(started.elapsed());
    if let Err(status) = result {
        let reason = if never_delivered(status) { "refused" } else { "failed" };
        metrics::counter!(FORWARD_ERRORS.name, "call" => call, "reason" => reason).increment(1);
    }
}

fn remote<T>(
    owner: &NodeAddr,
    cart: &CartId,
    result: Result<Result<T, GrainError>, tonic::Status>,
) -> Attempt<T> {
    match result {
        Ok(answer) => local(answer),
        Err(status) if never_delivered(&status) => Attempt::Reroute {
            why: GrainError::Unreachable(format!("{owner} refused the connection")),
            skip_owner: true,
        },
        Err(status) => {
            tracing::warn!(%cart, owner = %owner, code = ?status.code(), reason = status.message(), "call to the cart's owner failed");
            Attempt::Done(Err(GrainError::Unreachable(format!("{owner}: {}", status.message()))))
        }
    }
}

#[async_trait]
impl Carts for ClusterCarts {
    async fn get(&self, id: &CartId) -> Result<CartState, GrainError> {
        self.routed(id, |owner| self.try_get(owner, id)).await
    }

    async fn mutate(&self, id: &CartId, request: MutateRequest) -> Result<CartState, GrainError> {
        // Resolve here, at the entry node, so the owner's turn does no
        // catalogue I/O within the forwarding deadline.
        let request = Arc::new(self.runtime.resolve(id, request).await?);
        self.routed(id, |owner| self.try_mutate(owner, id, &request)).await
    }

    async fn erase(&self, id: &CartId) -> Result<bool, GrainError> {
        self.routed(id, |owner| self.try_erase(owner, id)).await
    }

    async fn watch(&self, id: &CartId) -> Result<CartWatch, GrainError> {
        let permit = self.runtime.admit_watcher()?;
        if let Some(updates) = self.followers.join(id) {
            return Ok(CartWatch { updates, permit });
        }
        let current = self.get(id).await?;
        let updates = self.followers.follow(id, &current);
        Ok(CartWatch { updates, permit })
    }
}
