//! The gRPC services every node serves: CartActor (carts by id, for other
//! nodes and other services) and ControlPlane (membership and ownership).

use std::sync::Arc;

use cart_grain::{CartId, Carts, Clock, GrainError, GrainRuntime};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::batch::MAX_BATCH;
use crate::client::Peers;
use crate::mapping::{self, Decoded};
use crate::membership::Membership;
use crate::node::NodeAddr;
use crate::placement;
use crate::proto::cart::cart_actor_server::CartActor;
use crate::proto::cart::{EraseReply, EraseRequest};
use crate::proto::cart::{
    MutationBatch, MutationBatchReply, MutationReply, MutationRequest, StateReply, StateRequest,
    WatchRequest,
};
use crate::proto::control::control_plane_server::ControlPlane;
use crate::proto::control::{
    CartIdsReply, ClosingNotice, Empty, NegotiateReply, NegotiateRequest, OwnerChangeAck,
    OwnerChangeRequest, PingReply, PingRequest,
};
use crate::router::ClusterCarts;
use crate::watch_stream::{self, WatchStream};

/// CartActor: a request marked `forwarded` (a peer's, resolved) is served by
/// this node; any other (a client's commands, from outside the cluster) is
/// routed like an HTTP request and answered with the cart JSON as well.
pub struct CartActorService {
    carts: Arc<ClusterCarts>,
    runtime: Arc<GrainRuntime>,
    clock: Arc<dyn Clock>,
}

/// How far apart nodes' clocks may be for request expiry to hold (NTP keeps
/// them within milliseconds): a forwarded request is refused this long after
/// its sender's expiry.
pub const MAX_CLOCK_SKEW_MS: i64 = 1_000;

impl CartActorService {
    /// The service over the cluster's carts and this node's grains, telling
    /// the time (for forwarded requests' expiry) by `clock`.
    pub fn new(
        carts: Arc<ClusterCarts>,
        runtime: Arc<GrainRuntime>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        CartActorService { carts, runtime, clock }
    }

    /// Whether a forwarded request arrived after its sender gave up.
    fn expired(&self, wire: &MutationRequest) -> bool {
        let now = i64::try_from(self.clock.now_ms()).unwrap_or(i64::MAX);
        wire.forwarded
            && wire.expires_at_ms != 0
            && now > wire.expires_at_ms.saturating_add(MAX_CLOCK_SKEW_MS)
    }

    async fn serve_mutation(&self, wire: &MutationRequest) -> MutationReply {
        let span = match cart_trace::from_fields(&wire.traceparent, &wire.tracestate) {
            Some(parent) => cart_trace::server_span("serve Mutate", &parent),
            None => tracing::Span::none(),
        };
        self.serve_mutation_in(wire).instrument(span).await
    }

    async fn serve_mutation_in(&self, wire: &MutationRequest) -> MutationReply {
        let result = match mapping::decode_request(wire) {
            Err(e) => Err(e),
            Ok(Decoded::Forwarded(id, _)) if self.expired(wire) => {
                metrics::counter!(crate::families::GRPC_EXPIRED.name).increment(1);
                tracing::warn!(cart = %id, expires_at_ms = wire.expires_at_ms, "a forwarded mutation arrived after its sender gave up; not applied");
                Err(GrainError::Expired)
            }
            Ok(Decoded::Forwarded(id, request)) => {
                self.carts.serve_forwarded_mutate(&id, request).await
            }
            Ok(Decoded::Client(id, request)) => self.carts.mutate(&id, request).await,
        };
        if let Err(e) = &result
            && e.kind().is_failure()
        {
            metrics::counter!(crate::families::GRPC_MUTATE_ERRORS.name).increment(1);
            tracing::warn!(cart = %wire.cart_id, r#type = wire.r#type, error = %e, "mutation failed");
        }
        mapping::mutation_reply(&result, !wire.forwarded)
    }
}

fn invalid(e: &GrainError) -> Status {
    Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl CartActor for CartActorService {
    async fn mutate(
        &self,
        request: Request<MutationRequest>,
    ) -> Result<Response<MutationReply>, Status> {
        Ok(Response::new(self.serve_mutation(&request.into_inner()).await))
    }

    async fn mutate_batch(
        &self,
        request: Request<MutationBatch>,
    ) -> Result<Response<MutationBatchReply>, Status> {
        let batch = request.into_inner();
        if batch.requests.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "a batch holds at most {MAX_BATCH} mutations, not {}",
                batch.requests.len()
            )));
        }
        metrics::histogram!(crate::families::GRPC_MUTATE_BATCH.name)
            .record(batch.requests.len() as f64);
        let replies =
            futures_util::future::join_all(batch.requests.iter().map(|w| self.serve_mutation(w)))
                .await;
        Ok(Response::new(MutationBatchReply { replies }))
    }

    async fn get_state(
        &self,
        request: Request<StateRequest>,
    ) -> Result<Response<StateReply>, Status> {
        let wire = request.into_inner();
        let result = match CartId::parse(&wire.cart_id) {
            Err(e) => Err(e),
            Ok(id) if wire.forwarded => self.carts.serve_forwarded_get(&id).await,
            Ok(id) => self.carts.get(&id).await,
        };
        Ok(Response::new(mapping::state_reply(&result, !wire.forwarded)))
    }

    async fn erase(&self, request: Request<EraseRequest>) -> Result<Response<EraseReply>, Status> {
        let wire = request.into_inner();
        let result = match CartId::parse(&wire.cart_id) {
            Err(e) => Err(e),
            Ok(id) if wire.forwarded => self.carts.serve_forwarded_erase(&id).await,
            Ok(id) => self.carts.erase(&id).await,
        };
        Ok(Response::new(mapping::erase_reply(&result)))
    }

    type WatchStream = WatchStream;

    /// A peer's follower (`forwarded`) gets this node's own grain states and
    /// the stream ends when this node stops serving the cart; a client gets
    /// the cart followed wherever it lives. Either counts against the
    /// watcher cap.
    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let wire = request.into_inner();
        let id = CartId::parse(&wire.cart_id).map_err(|e| invalid(&e))?;
        let watch = if wire.forwarded {
            self.runtime.watch_served(&id).await
        } else {
            self.carts.watch(&id).await
        };
        let watch = watch.map_err(|e| match e.kind() {
            cart_grain::ErrorKind::NotFound => Status::not_found(e.to_string()),
            cart_grain::ErrorKind::Invalid => invalid(&e),
            _ => Status::unavailable(e.to_string()),
        })?;
        Ok(Response::new(watch_stream::states(watch.updates, wire.from_version, watch.permit)))
    }
}

/// Most hosts a Negotiate may list (the whole view of a large cluster fits;
/// a list meant to make this node dial thousands of hosts does not).
pub const MAX_NEGOTIATE_HOSTS: usize = 256;

/// ControlPlane: ping, negotiation, ownership handover and departures.
pub struct ControlPlaneService {
    membership: Arc<Membership>,
    runtime: Arc<GrainRuntime>,
    peers: Arc<Peers>,
    clock: Arc<dyn Clock>,
}

impl ControlPlaneService {
    /// The service for this node.
    pub fn new(
        membership: Arc<Membership>,
        runtime: Arc<GrainRuntime>,
        peers: Arc<Peers>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        ControlPlaneService { membership, runtime, peers, clock }
    }
}

impl ControlPlaneService {
    /// Whether `host` is a member, admitting it at once if it is a live node
    /// this node had not heard of yet (a node that just started asks before
    /// this node's next ping round). A departed or unreachable host is not.
    async fn admit(&self, host: &NodeAddr) -> bool {
        if self.membership.is_member(host) {
            return true;
        }
        self.membership.learn([host.clone()], self.clock.monotonic_ms());
        // Without our address: the answer must not start the other side's
        // own admission of us (and so on, back and forth).
        let answer = self.peers.ping(host, None, self.peers.deadline() / 4).await;
        // A host that said Closing stays out unless it is a new run of its
        // process (see `Membership::ping_ok`); one on another store, always.
        if let Some(reply) = answer {
            let now = self.clock.monotonic_ms();
            let load = crate::load::of_reply(&reply);
            self.membership.ping_answered(host, now, reply.incarnation, &reply.store_id, load);
        } else {
            self.membership.ping_failed(host);
        }
        self.membership.is_member(host)
    }
}

fn ack(accepted: bool, message: impl Into<String>) -> Response<OwnerChangeAck> {
    Response::new(OwnerChangeAck { accepted, message: message.into() })
}

#[tonic::async_trait]
impl ControlPlane for ControlPlaneService {
    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        if self.membership.is_closing() {
            return Err(Status::unavailable("closing"));
        }
        // A caller outside the view (back from a partition, a pause or a
        // restart) joins now rather than at this node's next round, so the
        // views agree again within a round trip.
        if let Ok(caller) = request.get_ref().host.parse::<NodeAddr>()
            && caller != *self.membership.me()
            && !self.membership.is_member(&caller)
        {
            self.admit(&caller).await;
        }
        let unix_time = i64::try_from(self.clock.now_ms() / 1000).unwrap_or(i64::MAX);
        Ok(Response::new(PingReply {
            host: self.membership.me().to_string(),
            unix_time,
            incarnation: self.membership.incarnation(),
            store_id: self.membership.store_id().to_owned(),
            load: Some(crate::load::to_wire(self.runtime.load())),
        }))
    }

    async fn negotiate(
        &self,
        request: Request<NegotiateRequest>,
    ) -> Result<Response<NegotiateReply>, Status> {
        let known = request.into_inner().known_hosts;
        if known.len() > MAX_NEGOTIATE_HOSTS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_NEGOTIATE_HOSTS} known hosts per Negotiate"
            )));
        }
        let offered: Vec<NodeAddr> = known.iter().filter_map(|h| h.parse().ok()).collect();
        let learned = self.membership.learn(offered, self.clock.monotonic_ms());
        if !learned.is_empty() {
            tracing::info!(learned = ?learned.iter().map(ToString::to_string).collect::<Vec<_>>(), "negotiation: new hosts offered");
        }
        let hosts = self.membership.view().iter().map(ToString::to_string).collect();
        Ok(Response::new(NegotiateReply { hosts }))
    }

    async fn get_cart_ids(&self, _: Request<Empty>) -> Result<Response<CartIdsReply>, Status> {
        let cart_ids = self.runtime.resident_ids().iter().map(ToString::to_string).collect();
        Ok(Response::new(CartIdsReply { cart_ids }))
    }

    async fn confirm_owner(
        &self,
        request: Request<OwnerChangeRequest>,
    ) -> Result<Response<OwnerChangeAck>, Status> {
        let request = request.into_inner();
        let Ok(new_host) = request.new_host.parse::<NodeAddr>() else {
            return Ok(ack(false, format!("bad host {:?}", request.new_host)));
        };
        if !self.admit(&new_host).await {
            return Ok(ack(
                false,
                format!("{new_host} is not a member of {}'s view", self.membership.me()),
            ));
        }
        let Ok(cart) = CartId::parse(&request.cart_id) else {
            return Ok(ack(false, "bad cart id"));
        };
        // A holder that owns the cart by its own view keeps it: the asker's
        // view is behind (a request routed before a view change, or by a
        // node that has not seen the change yet). Handing it over would
        // only move it back on the next request.
        let me = self.membership.me();
        if placement::owner(cart.as_str(), &self.membership.view(), &[]) == Some(me) {
            return Ok(ack(false, format!("{me} owns {cart} in its view")));
        }
        match self.runtime.hand_over(&cart).await {
            Ok(was_active) => {
                tracing::info!(cart = %cart, to = %new_host, was_active, "handed the cart over");
                Ok(ack(true, "passivated"))
            }
            Err(e) => Ok(ack(false, format!("flush failed: {e}"))),
        }
    }

    async fn closing(
        &self,
        request: Request<ClosingNotice>,
    ) -> Result<Response<OwnerChangeAck>, Status> {
        let ClosingNotice { host, incarnation } = request.into_inner();
        let Ok(addr) = host.parse::<NodeAddr>() else {
            return Ok(ack(false, format!("bad host {host:?}")));
        };
        self.membership.departed(&addr, self.clock.monotonic_ms(), incarnation);
        self.peers.forget(&addr);
        Ok(ack(true, "removed"))
    }
}
