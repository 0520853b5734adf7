//! Channels to other nodes: one lazily connected HTTP/2 channel per remote
//! host (over mutual TLS when the cluster has it), shared by the CartActor and ControlPlane clients, with a per-RPC
//! deadline. Forwarded mutations go through a per-host [`Forwarder`], which
//! batches them. Request payloads above 8 KiB are gzip-compressed; small ones
//! (nearly all mutations) are not.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

use crate::batch::{Answer, Forwarder};
pub use crate::call::{COMPRESS_ABOVE_BYTES, with_deadline};
use crate::node::NodeAddr;
use crate::proto::cart::MutationRequest;
use crate::proto::cart::cart_actor_client::CartActorClient;
use crate::proto::control::control_plane_client::ControlPlaneClient;
use crate::proto::control::{PingReply, PingRequest};
use crate::tls::{ClusterTls, TlsConnect};

/// The channels of this node to its peers.
pub struct Peers {
    channels: Mutex<HashMap<NodeAddr, Channel>>,
    /// Channels without a per-call timeout, for long-lived watch streams.
    streams: Mutex<HashMap<NodeAddr, Channel>>,
    forwarders: Mutex<HashMap<NodeAddr, Forwarder>>,
    deadline: Duration,
    tls: Option<Arc<ClusterTls>>,
}

impl Peers {
    /// Peers with this per-RPC deadline, reached over mutual TLS when
    /// `tls` is given.
    pub fn new(deadline: Duration, tls: Option<Arc<ClusterTls>>) -> Self {
        Peers {
            channels: Mutex::new(HashMap::new()),
            streams: Mutex::new(HashMap::new()),
            forwarders: Mutex::new(HashMap::new()),
            deadline,
            tls,
        }
    }

    /// The per-RPC deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    fn channel(&self, addr: &NodeAddr) -> Result<Channel, tonic::Status> {
        self.channel_in(&self.channels, addr, Some(self.deadline))
    }

    fn channel_in(
        &self,
        channels: &Mutex<HashMap<NodeAddr, Channel>>,
        addr: &NodeAddr,
        timeout: Option<Duration>,
    ) -> Result<Channel, tonic::Status> {
        let mut channels = channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let mut endpoint = Endpoint::from_shared(addr.grpc_uri())
            .map_err(|e| tonic::Status::invalid_argument(format!("bad peer address {addr}: {e}")))?
            .connect_timeout(self.deadline)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        if let Some(timeout) = timeout {
            endpoint = endpoint.timeout(timeout);
        }
        let channel = match &self.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(TlsConnect(Arc::clone(tls))),
            None => endpoint.connect_lazy(),
        };
        channels.insert(addr.clone(), channel.clone());
        Ok(channel)
    }

    /// A CartActor client for long-lived watch streams to `addr` (no
    /// per-call deadline; HTTP/2 keep-alive notices a dead peer).
    pub fn watch_client(&self, addr: &NodeAddr) -> Result<CartActorClient<Channel>, tonic::Status> {
        let channel = self.channel_in(&self.streams, addr, None)?;
        Ok(CartActorClient::new(channel))
    }

    /// A CartActor client for `addr`.
    pub fn cart(&self, addr: &NodeAddr) -> Result<CartActorClient<Channel>, tonic::Status> {
        Ok(CartActorClient::new(self.channel(addr)?).accept_compressed(CompressionEncoding::Gzip))
    }

    /// Forwards a mutation to `addr`, batched with others bound there.
    pub async fn mutate(&self, addr: &NodeAddr, request: MutationRequest) -> Answer {
        let forwarder = {
            let mut forwarders = self.forwarders.lock().unwrap_or_else(PoisonError::into_inner);
            match forwarders.get(addr) {
                Some(f) => f.clone(),
                None => {
                    let f = Forwarder::start(self.channel(addr)?, self.deadline);
                    forwarders.insert(addr.clone(), f.clone());
                    f
                }
            }
        };
        forwarder.mutate(request).await
    }

    /// A ControlPlane client for `addr`.
    pub fn control(&self, addr: &NodeAddr) -> Result<ControlPlaneClient<Channel>, tonic::Status> {
        Ok(ControlPlaneClient::new(self.channel(addr)?))
    }

    /// Pings `host` within `within` (a timeout of its own, not only the
    /// server's: a partitioned host must not hold the caller up), saying
    /// who asks when `from` is given. `None`: no answer in time.
    pub async fn ping(
        &self,
        host: &NodeAddr,
        from: Option<&NodeAddr>,
        within: Duration,
    ) -> Option<PingReply> {
        let mut client = self.control(host).ok()?;
        let request = PingRequest { host: from.map(ToString::to_string).unwrap_or_default() };
        let call = client.ping(self.request(request));
        tokio::time::timeout(within, call).await.ok()?.ok().map(tonic::Response::into_inner)
    }

    /// Drops the channels and the forwarder of a departed or evicted host.
    pub fn forget(&self, addr: &NodeAddr) {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner).remove(addr);
        self.streams.lock().unwrap_or_else(PoisonError::into_inner).remove(addr);
        self.forwarders.lock().unwrap_or_else(PoisonError::into_inner).remove(addr);
    }

    /// A request with the per-RPC deadline set.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        with_deadline(message, self.deadline)
    }
}

/// Whether the call failed because nothing listens at the peer's address.
pub fn connection_refused(status: &tonic::Status) -> bool {
    let mut source = status.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether a failed call certainly was never processed by the peer, so
/// retrying elsewhere cannot apply a request twice: the connection was
/// refused, or the peer refused the stream (`REFUSED_STREAM`, or a GOAWAY
/// from a peer shutting down, which only fails streams it did not process).
pub fn never_delivered(status: &tonic::Status) -> bool {
    if connection_refused(status) {
        return true;
    }
    let mut source = status.source();
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>()
            && (h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM))
        {
            return true;
        }
        source = e.source();
    }
    false
}
