//! Kubernetes discovery: watches the pods matching a label selector in one
//! namespace (kube-rs reflector) and proposes every running pod's IP as a
//! peer. Readiness is not required (a node becomes ready only after it has a
//! member view, so requiring it would deadlock a cold start); the member
//! view's own pings decide who is alive.

use std::sync::Arc;

use async_trait::async_trait;
use cart_grain::OwnedTask;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::discovery::Discovery;
use crate::node::NodeAddr;

/// Peers from a pod watch.
pub struct KubernetesPeers {
    pods: Store<Pod>,
    grpc_port: u16,
    control_port: u16,
    _watch: OwnedTask,
}

impl KubernetesPeers {
    /// Starts watching pods matching `selector` in `namespace`; peers are
    /// reached on the given ports.
    pub fn start(
        client: Client,
        namespace: &str,
        selector: &str,
        grpc_port: u16,
        control_port: u16,
    ) -> Self {
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let (pods, writer) = reflector::store();
        let config = watcher::Config::default().labels(selector);
        let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
        let watch = OwnedTask::spawn(async move {
            stream
                .for_each(|event| async move {
                    if let Err(e) = event {
                        tracing::warn!(error = %e, "kubernetes pod watch failed; retrying");
                    }
                })
                .await;
        });
        KubernetesPeers { pods, grpc_port, control_port, _watch: watch }
    }

    /// Watches with the pod's own credentials (in-cluster config, or the
    /// local kubeconfig): `namespace` defaults to the pod's namespace.
    pub async fn in_cluster(
        namespace: Option<&str>,
        selector: &str,
        grpc_port: u16,
        control_port: u16,
    ) -> Result<Self, String> {
        let client =
            Client::try_default().await.map_err(|e| format!("no Kubernetes API access: {e}"))?;
        let namespace =
            namespace.map_or_else(|| client.default_namespace().to_owned(), str::to_owned);
        tracing::info!(%namespace, %selector, "discovering peers from Kubernetes pods");
        Ok(Self::start(client, &namespace, selector, grpc_port, control_port))
    }

    fn peer(&self, pod: &Arc<Pod>) -> Option<NodeAddr> {
        if pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let status = pod.status.as_ref()?;
        if status.phase.as_deref() != Some("Running") {
            return None;
        }
        let ip = status.pod_ip.as_deref().filter(|ip| !ip.is_empty())?;
        Some(NodeAddr {
            host: ip.to_owned(),
            grpc_port: self.grpc_port,
            control_port: self.control_port,
        })
    }
}

#[async_trait]
impl Discovery for KubernetesPeers {
    async fn peers(&self) -> Result<Vec<NodeAddr>, String> {
        let mut peers: Vec<NodeAddr> =
            self.pods.state().iter().filter_map(|p| self.peer(p)).collect();
        peers.sort();
        peers.dedup();
        Ok(peers)
    }
}
