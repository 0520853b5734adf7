//! The cluster: any node takes any request; each cart lives on exactly one
//! node; nodes talk gRPC.
//!
//! - [`node`]: node addresses (`host[:grpc[:control]]`).
//! - [`membership`]: the member view, failure detection by missed pings,
//!   Closing notices.
//! - [`placement`]: rendezvous hashing of carts over the member view.
//! - [`discovery`]: where candidate members come from (static list, DNS);
//!   [`kubernetes`]: a pod watch.
//! - [`client`]: one gRPC channel per remote host, deadlines, compression.
//! - [`batch`]: forwarded mutations leave for their owner in batches.
//! - [`router`]: the cluster's [`cart_grain::Carts`]: serve locally or forward
//!   to the owner over CartActor, one hop, retried once when an owner change
//!   is certain not to have applied the request.
//! - [`handover`]: ConfirmOwner before a grain activates on a new owner.
//! - [`follow`]: one follower per watched cart, following it to its owner.
//! - [`mapping`], [`state_wire`]: requests, replies and the typed cart on
//!   the wire.
//! - [`server`]: the CartActor and ControlPlane gRPC services;
//!   [`watch_stream`]: a cart's states as a gRPC stream.
//! - [`cluster`]: wires it together and runs the background loops.

pub mod batch;
pub mod call;
pub mod client;
pub mod cluster;
pub mod discovery;
pub mod families;
pub mod follow;
pub mod handover;
pub mod kubernetes;
pub mod load;
pub mod mapping;
pub mod membership;
pub mod metrics_layer;
pub mod node;
pub mod placement;
pub mod router;
pub mod server;
pub mod state_wire;
pub mod takeovers;
pub mod tls;
pub mod watch_stream;

/// Code generated from `proto/cart_actor.proto` and `proto/control_plane.proto`.
pub mod proto {
    /// The CartActor service (port 1337).
    pub mod cart {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("cart");
    }
    /// The ControlPlane service (port 1338).
    pub mod control {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("control");
    }
    /// Both services' encoded descriptors, for gRPC reflection.
    pub const DESCRIPTORS: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/cart_descriptors.bin"));
}

pub use cluster::{Cluster, ClusterOptions};
pub use node::NodeAddr;
