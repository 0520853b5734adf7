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

use async_trait::async_trait;
use cart_grain::{CartId, CartSnapshot, Carts, GrainError, GrainRuntime, MutateRequest};

use crate::client::{Peers, never_delivered};
use crate::mapping;
use crate::membership::Membership;
use crate::node::NodeAddr;
use crate::placement;
use crate::proto::cart::StateRequest;

/// Status a node answers a forwarded request with when it cannot serve it
/// (closing, or its takeover was refused): "ask the next node".
pub const MISDIRECTED: u16 = 421;

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
}

impl ClusterCarts {
    /// Routes over `membership`'s view, serving owned carts from `runtime`.
    pub fn new(runtime: Arc<GrainRuntime>, membership: Arc<Membership>, peers: Arc<Peers>) -> Self {
        ClusterCarts { runtime, membership, peers }
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

    /// Serves a request forwarded by another node (never forwards it again).
    pub async fn serve_forwarded_get(&self, id: &CartId) -> Result<CartSnapshot, GrainError> {
        misdirected_if_moving(self.runtime.get(id).await)
    }

    /// See [`ClusterCarts::serve_forwarded_get`].
    pub async fn serve_forwarded_mutate(
        &self,
        id: &CartId,
        request: MutateRequest,
    ) -> Result<CartSnapshot, GrainError> {
        misdirected_if_moving(self.runtime.mutate(id, request).await)
    }

    /// Runs `attempt` on the cart's owner, and once more on the next owner
    /// when the first attempt certainly did not apply.
    async fn routed<T, F, Fut>(&self, id: &CartId, attempt: F) -> Result<T, GrainError>
    where
        F: Fn(NodeAddr) -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
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
            Attempt::Reroute { why, .. } => Err(why),
        }
    }

    async fn try_get(&self, owner: NodeAddr, id: &CartId) -> Attempt<CartSnapshot> {
        let owner = &owner;
        if self.is_me(owner) {
            return local(self.runtime.get(id).await);
        }
        let mut client = match self.peers.cart(owner) {
            Ok(c) => c,
            Err(e) => return Attempt::Done(Err(GrainError::Unreachable(e.to_string()))),
        };
        let request = self.peers.request(StateRequest { cart_id: id.to_string(), forwarded: true });
        remote(
            owner,
            client.get_state(request).await.map(|r| {
                let r = r.into_inner();
                mapping::from_reply(r.status_code, r.payload, r.version)
            }),
        )
    }

    async fn try_mutate(
        &self,
        owner: NodeAddr,
        id: &CartId,
        request: &Arc<MutateRequest>,
    ) -> Attempt<CartSnapshot> {
        let owner = &owner;
        if self.is_me(owner) {
            return local(self.runtime.mutate(id, Arc::clone(request)).await);
        }
        let wire = mapping::encode_request(id, request, true);
        let result = self
            .peers
            .mutate(owner, wire)
            .await
            .map(|r| mapping::from_reply(r.status_code, r.payload, r.version));
        if let Ok(Err(e)) = &result
            && e.status() >= 500
        {
            let types: Vec<&str> = request.mutations.iter().map(|m| m.kind().name()).collect();
            tracing::warn!(cart = %id, owner = %owner, types = ?types, error = %e, "remote mutation failed");
        }
        remote(owner, result)
    }
}

fn misdirected_if_moving(
    result: Result<CartSnapshot, GrainError>,
) -> Result<CartSnapshot, GrainError> {
    match result {
        Err(e @ (GrainError::ShuttingDown | GrainError::HandoverRefused(_))) => {
            Err(GrainError::Remote { status: MISDIRECTED, message: e.to_string() })
        }
        other => other,
    }
}

fn local<T>(result: Result<T, GrainError>) -> Attempt<T> {
    match result {
        // Nothing was applied. Fenced or behind: another node wrote the
        // cart; this node reloads and, still the owner by its view, tries
        // once more.
        Err(why @ (GrainError::Fenced | GrainError::Conflict)) => {
            Attempt::Reroute { why, skip_owner: false }
        }
        // The previous owner does not know this node yet: let it serve.
        Err(why @ GrainError::HandoverRefused(_)) => Attempt::Reroute { why, skip_owner: true },
        other => Attempt::Done(other),
    }
}

fn remote<T>(owner: &NodeAddr, result: Result<Result<T, GrainError>, tonic::Status>) -> Attempt<T> {
    match result {
        Ok(Err(GrainError::Remote { status: MISDIRECTED, message })) => {
            Attempt::Reroute { why: GrainError::Remote { status: 503, message }, skip_owner: true }
        }
        Ok(other) => Attempt::Done(other),
        Err(status) if never_delivered(&status) => Attempt::Reroute {
            why: GrainError::Unreachable(format!("{owner} refused the connection")),
            skip_owner: true,
        },
        Err(status) => {
            tracing::warn!(owner = %owner, code = ?status.code(), message = status.message(), "call to the cart's owner failed");
            Attempt::Done(Err(GrainError::Unreachable(format!("{owner}: {}", status.message()))))
        }
    }
}

#[async_trait]
impl Carts for ClusterCarts {
    async fn get(&self, id: &CartId) -> Result<CartSnapshot, GrainError> {
        self.routed(id, |owner| self.try_get(owner, id)).await
    }

    async fn mutate(
        &self,
        id: &CartId,
        request: MutateRequest,
    ) -> Result<CartSnapshot, GrainError> {
        // Resolve add-by-SKU here, at the entry node, so the owner's turn
        // does no catalogue I/O within the forwarding deadline.
        let mutations = self.runtime.resolve(request.mutations).await?;
        let request = Arc::new(MutateRequest { mutations, ..request });
        self.routed(id, |owner| self.try_mutate(owner, id, &request)).await
    }
}
