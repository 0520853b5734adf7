//! One node of the cluster: its gRPC servers and the loops that keep its
//! member view current.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cart_grain::{Clock, GrainRuntime, OwnedTask};
use futures_util::future::join_all;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::client::Peers;
use crate::discovery::Discovery;
use crate::handover::ConfirmOwner;
use crate::membership::Membership;
use crate::metrics_layer::GrpcMetricsLayer;
use crate::node::NodeAddr;
use crate::placement;
use crate::proto::cart::cart_actor_server::{CartActorServer, SERVICE_NAME as CART_SERVICE};
use crate::proto::control::control_plane_server::{
    ControlPlaneServer, SERVICE_NAME as CONTROL_SERVICE,
};
use crate::proto::control::{ClosingNotice, NegotiateRequest};
use crate::router::ClusterCarts;
use crate::server::{CartActorService, ControlPlaneService};
use crate::takeovers::Takeovers;
use crate::tls::{self, ClusterTls};

/// Settings of a node.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// This node's address as peers reach it.
    pub me: NodeAddr,
    /// How often every member is pinged.
    pub ping_interval: Duration,
    /// Missed pings in a row before a member is evicted.
    pub max_misses: u32,
    /// Deadline of every node-to-node call.
    pub rpc_deadline: Duration,
    /// How often discovery is polled and the view negotiated.
    pub discovery_interval: Duration,
    /// Mutual TLS for every node-to-node connection, in and out; `None`
    /// is plaintext (loopback, or `--insecure-cluster`).
    pub tls: Option<Arc<ClusterTls>>,
    /// How long a ping round that reached a majority lets this node serve
    /// its carts (from the round's start). Longer than a round, so a
    /// healthy node's lease never lapses; a dead or cut-off owner's carts
    /// are taken over [`ClusterOptions::takeover_wait`] after it was last
    /// heard from.
    pub lease: Duration,
    /// The identity of this node's event store (`EventStore::secret`
    /// derived); peers answering with another one are refused. Empty: not
    /// checked.
    pub store_id: String,
    /// Which run of the process this is (peers tell a restart from the
    /// node that said Closing by it); by default the start time in
    /// nanoseconds.
    pub incarnation: u64,
}

impl ClusterOptions {
    /// Defaults for `me`: ping every 300 ms, evict after 3 misses (a dead
    /// node's carts move within about 1 to 2 s, a stall shorter than about
    /// 1 s causes no churn), 400 ms deadlines, discovery every 2 s.
    pub fn new(me: NodeAddr) -> Self {
        ClusterOptions {
            me,
            ping_interval: Duration::from_millis(300),
            max_misses: 3,
            rpc_deadline: Duration::from_millis(400),
            discovery_interval: Duration::from_secs(2),
            lease: Duration::from_secs(1),
            store_id: String::new(),
            tls: None,
            incarnation: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
        }
    }
}

impl ClusterOptions {
    /// How long after this node last heard from a cart's previous owner it
    /// may take the cart over without the owner's consent: the owner's lease
    /// began at the latest one ping round (interval + deadline) after that,
    /// and runs for [`ClusterOptions::lease`]; 100 ms cover clock rates and
    /// scheduling.
    pub fn takeover_wait(&self) -> Duration {
        self.lease + self.ping_interval + self.rpc_deadline + Duration::from_millis(100)
    }
}

/// A running cluster node.
pub struct Cluster {
    options: ClusterOptions,
    membership: Arc<Membership>,
    peers: Arc<Peers>,
    runtime: Arc<GrainRuntime>,
    carts: Arc<ClusterCarts>,
    discovery: Arc<dyn Discovery>,
    clock: Arc<dyn Clock>,
    /// Whether the first discovery round is done.
    ready: tokio::sync::watch::Sender<bool>,
    /// Carts taken over since the last ping round's summary.
    takeovers: Arc<Takeovers>,
    /// gRPC health of this node's services: SERVING until it drains.
    health: tonic_health::server::HealthReporter,
    /// Whether the node drains; held while the health status is set, so a
    /// server starting late cannot report SERVING after the drain began.
    draining: tokio::sync::Mutex<bool>,
}

/// Why serving gRPC failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listener or a connection failed.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not read the services' descriptors.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// The gRPC services' health names: each service, and the server as a
/// whole (`""`).
const HEALTH_NAMES: [&str; 3] = [CART_SERVICE, CONTROL_SERVICE, ""];

impl Cluster {
    /// A node serving `runtime`'s grains; installs the ConfirmOwner handover.
    pub fn new(
        options: ClusterOptions,
        runtime: Arc<GrainRuntime>,
        discovery: Arc<dyn Discovery>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let membership = Arc::new(
            Membership::with_incarnation(
                options.me.clone(),
                options.max_misses,
                options.incarnation,
            )
            .with_store_id(options.store_id.clone())
            .with_clock(Arc::clone(&clock)),
        );
        let peers = Arc::new(Peers::new(options.rpc_deadline, options.tls.clone()));
        let takeovers = Arc::new(Takeovers::default());
        runtime.set_handover(Arc::new(ConfirmOwner::new(
            Arc::clone(&membership),
            Arc::clone(&peers),
            Arc::clone(&clock),
            options.takeover_wait(),
            Arc::clone(&takeovers),
        )));
        let carts = Arc::new(ClusterCarts::new(
            Arc::clone(&runtime),
            Arc::clone(&membership),
            Arc::clone(&peers),
            Arc::clone(&clock),
        ));
        Arc::new(Cluster {
            options,
            membership,
            peers,
            runtime,
            carts,
            discovery,
            clock,
            ready: tokio::sync::watch::channel(false).0,
            takeovers,
            health: tonic_health::server::HealthReporter::new(),
            draining: tokio::sync::Mutex::new(false),
        })
    }

    /// The cluster-wide carts, for the HTTP API.
    pub fn carts(&self) -> Arc<ClusterCarts> {
        Arc::clone(&self.carts)
    }

    /// Whether this node serves `cart` in its current view (for work each
    /// node does for its own carts only, such as expiry).
    pub fn owner_check(&self) -> Arc<dyn Fn(&cart_grain::CartId) -> bool + Send + Sync> {
        let membership = Arc::clone(&self.membership);
        Arc::new(move |cart| {
            let view = membership.view();
            crate::placement::owner(cart.as_str(), &view, &[]) == Some(membership.me())
        })
    }

    /// This node's settings.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// This node's member view.
    pub fn membership(&self) -> &Arc<Membership> {
        &self.membership
    }

    /// Whether the node has a member view (after its first discovery and
    /// negotiation round), holds its serving lease, and is not closing.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow() && !self.membership.is_closing() && self.has_lease()
    }

    /// Waits (at most `within`) until this node holds its serving lease;
    /// returns whether it does.
    pub async fn wait_for_lease(&self, within: Duration) -> bool {
        self.runtime.lease().wait_held(within, || self.clock.monotonic_ms()).await
    }

    /// Whether this node holds its serving lease now.
    pub fn has_lease(&self) -> bool {
        self.runtime.lease().held(self.clock.monotonic_ms()).is_some()
    }

    /// Serves CartActor, ControlPlane and gRPC health on `listener` until
    /// `shutdown` resolves. Both services are served on both ports, so one
    /// channel per host reaches both.
    pub async fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        {
            let draining = self.draining.lock().await;
            if !*draining {
                self.set_health(tonic_health::ServingStatus::Serving).await;
            }
        }
        let health = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(self.health.clone()),
        );
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::DESCRIPTORS)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let cart = CartActorServer::new(CartActorService::new(
            Arc::clone(&self.carts),
            Arc::clone(&self.runtime),
            Arc::clone(&self.clock),
        ))
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let control = ControlPlaneServer::new(ControlPlaneService::new(
            Arc::clone(&self.membership),
            Arc::clone(&self.runtime),
            Arc::clone(&self.peers),
            Arc::clone(&self.clock),
        ));
        let router = Server::builder()
            .tcp_nodelay(true)
            .layer(GrpcMetricsLayer)
            .add_service(health)
            .add_service(reflection)
            .add_service(cart)
            .add_service(control);
        match &self.options.tls {
            Some(tls) => {
                router
                    .serve_with_incoming_shutdown(
                        tls::incoming(listener, Arc::clone(tls)),
                        shutdown,
                    )
                    .await?
            }
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, shutdown).await?
            }
        }
        Ok(())
    }

    /// Reports every service NOT_SERVING over gRPC health: the node drains
    /// (it still answers until it stops).
    pub async fn stop_serving(&self) {
        let mut draining = self.draining.lock().await;
        *draining = true;
        self.set_health(tonic_health::ServingStatus::NotServing).await;
    }

    async fn set_health(&self, status: tonic_health::ServingStatus) {
        for name in HEALTH_NAMES {
            self.health.set_service_status(name, status).await;
        }
    }

    /// Starts the discovery/negotiation, ping and view-change loops (and
    /// the TLS files' reload check); they
    /// run while the returned handles live.
    pub fn spawn_loops(self: &Arc<Self>) -> Vec<OwnedTask> {
        let node = Arc::clone(self);
        let discovery = OwnedTask::spawn(async move { node.discovery_loop().await });
        let node = Arc::clone(self);
        let pings = OwnedTask::spawn(async move { node.ping_loop().await });
        let node = Arc::clone(self);
        let views = OwnedTask::spawn(async move { node.view_loop().await });
        let mut loops = vec![discovery, pings, views];
        if let Some(tls) = &self.options.tls {
            loops.push(tls.spawn_reloader(crate::tls::RELOAD_INTERVAL));
        }
        loops
    }

    async fn discovery_loop(&self) {
        let mut tick = tokio::time::interval(self.options.discovery_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.membership.is_closing() {
                return;
            }
            self.discovery_round().await;
            if !self.ready.send_replace(true) {
                tracing::info!(view = ?self.view_names(), "member view established; ready");
            }
        }
    }

    fn view_names(&self) -> Vec<String> {
        self.membership.view().iter().map(ToString::to_string).collect()
    }

    /// Asks discovery for hosts, negotiates with everyone known, and pings
    /// new candidates so they can join this round.
    async fn discovery_round(&self) {
        match self.discovery.peers().await {
            Ok(found) => {
                self.membership.discovered(found.iter().cloned());
                self.membership.learn(found, self.clock.monotonic_ms());
            }
            Err(e) => tracing::warn!(error = %e, "discovery failed"),
        }
        let targets = self.membership.ping_targets();
        let known_hosts = self.view_names();
        let known_hosts = &known_hosts;
        let rounds = targets.iter().map(|host| async move {
            let Ok(mut client) = self.peers.control(host) else {
                return;
            };
            let request = self.peers.request(NegotiateRequest { known_hosts: known_hosts.clone() });
            match client.negotiate(request).await {
                Ok(reply) => {
                    let offered = reply
                        .into_inner()
                        .hosts
                        .iter()
                        .filter_map(|h| h.parse().ok())
                        .collect::<Vec<NodeAddr>>();
                    let learned = self.membership.learn(offered, self.clock.monotonic_ms());
                    tracing::debug!(with = %host, learned = learned.len(), "negotiation round");
                }
                Err(status) => {
                    tracing::debug!(with = %host, code = ?status.code(), "negotiation failed")
                }
            }
        });
        join_all(rounds).await;
        // New hosts are pinged now so they can join this round; members
        // are pinged only by the ping loop, so a miss counts once.
        let _ = self.ping(self.membership.candidates()).await;
    }

    async fn ping_loop(&self) {
        // Before discovery has named the cluster, a node cannot know what a
        // majority of it is.
        let _ = self.ready.subscribe().wait_for(|ready| *ready).await;
        let mut tick = tokio::time::interval(self.options.ping_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.membership.is_closing() {
                return;
            }
            let started = self.clock.monotonic_ms();
            let answered = self.ping(self.membership.ping_targets()).await;
            let now = self.clock.monotonic_ms();
            if self.membership.record_round(answered, now) {
                let until = started.saturating_add(self.options.lease.as_millis() as u64);
                self.runtime.grant_lease(now, until);
            }
            self.takeovers.summarise();
        }
    }

    /// Pings `hosts` and records each outcome (the one place misses are
    /// counted); returns how many of them that were members answered.
    async fn ping(&self, hosts: Vec<NodeAddr>) -> usize {
        let pings = hosts.into_iter().map(|host| async move {
            let member = self.membership.is_member(&host);
            // A ping slower than the interval is a miss: rounds keep their
            // schedule, so a dead peer never delays the lease's renewal.
            let within = self.options.ping_interval.min(self.options.rpc_deadline);
            let me = Some(self.membership.me());
            if let Some(reply) = self.peers.ping(&host, me, within).await {
                let now = self.clock.monotonic_ms();
                let load = crate::load::of_reply(&reply);
                self.membership.ping_answered(&host, now, reply.incarnation, &reply.store_id, load)
                    && member
            } else {
                self.membership.ping_failed(&host);
                if !self.membership.is_member(&host) {
                    // Evicted: release its channels and forwarder.
                    self.peers.forget(&host);
                }
                false
            }
        });
        join_all(pings).await.into_iter().filter(|answered| *answered).count()
    }

    /// On every view change, passivates idle grains this node no longer owns.
    async fn view_loop(&self) {
        let mut changes = self.membership.subscribe();
        while changes.changed().await.is_ok() {
            let view = self.membership.view();
            let me = self.membership.me().clone();
            let moved = self
                .runtime
                .passivate_unless(|id| placement::owner(id.as_str(), &view, &[]) == Some(&me));
            if moved > 0 {
                tracing::info!(
                    passivated = moved,
                    view_version = self.membership.version(),
                    "passivated carts that moved to other nodes"
                );
            }
        }
    }

    /// Leaves the cluster: drops out of its own view (so requests it takes
    /// route elsewhere) and tells every peer, waiting for their acks so no
    /// peer forwards to it afterwards.
    pub async fn leave(&self) {
        self.membership.close();
        self.carts.end_watches();
        let notice = ClosingNotice {
            host: self.membership.me().to_string(),
            incarnation: self.membership.incarnation(),
        };
        let notices = self.membership.peers().into_iter().map(|host| {
            let notice = notice.clone();
            async move {
                let Ok(mut client) = self.peers.control(&host) else { return };
                if let Err(status) = client.closing(self.peers.request(notice)).await {
                    tracing::warn!(peer = %host, code = ?status.code(), "Closing notice not delivered");
                }
            }
        });
        join_all(notices).await;
        self.takeovers.summarise();
        tracing::info!("left the cluster");
    }

    /// This node's view as JSON, for `GET /api/cluster`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "node": self.membership.me().to_string(),
            "ready": self.is_ready(),
            "closing": self.membership.is_closing(),
            "viewVersion": self.membership.version(),
            "lease": self.has_lease(),
            "members": self.membership.status(self.clock.monotonic_ms(), self.runtime.load()),
            "localGrains": self.runtime.resident(),
            "recentChanges": self.membership.recent_changes(),
        })
    }
}
