//! The node's way out, in order: on SIGTERM or SIGINT it stops being ready,
//! leaves the cluster (peers acknowledge before it drains), ends its watch
//! streams and drains in-flight HTTP requests (at most `--shutdown-timeout`);
//! then it keeps answering forwarded calls for two RPC deadlines, stops the
//! gRPC servers and its loops, and flushes the event log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cart_cluster::Cluster;
use cart_grain::{GrainRuntime, OwnedTask};
use cart_http::serve::ConnectionLimits;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What shutdown stops after the HTTP drain.
pub(super) struct Running {
    /// Set to stop the gRPC servers.
    pub stop_grpc: watch::Sender<bool>,
    /// The CartActor and ControlPlane servers (each logs its own failure).
    pub grpc_servers: JoinSet<()>,
    /// Discovery, ping and view loops.
    pub cluster_loops: Vec<OwnedTask>,
    /// The idle-grain sweep.
    pub passivation: OwnedTask,
    /// The expired-cart sweep.
    pub expiry: OwnedTask,
}

/// Waits for the signal, then turns the node away from new work: not ready
/// at once, still serving for `drain_delay` (so load balancers and
/// Kubernetes endpoints stop sending to it before it stops taking
/// requests), then out of the cluster, watches ended.
pub(super) async fn begin(
    mut signals: Signals,
    cluster: Arc<Cluster>,
    grains: Arc<GrainRuntime>,
    draining: Arc<AtomicBool>,
    drain_delay: Duration,
) {
    signals.recv().await;
    draining.store(true, Ordering::SeqCst);
    cluster.stop_serving().await;
    if !drain_delay.is_zero() {
        tracing::info!(?drain_delay, "shutting down: not ready; serving on while endpoints update");
        tokio::time::sleep(drain_delay).await;
    }
    tracing::info!("shutting down: leaving the cluster, draining in-flight requests");
    cluster.leave().await;
    grains.begin_shutdown();
}

/// Serves every `(listener, app)` until `begin` has run and their in-flight
/// requests have drained, or `timeout` after `begin` ended.
pub(super) async fn serve_http_until_drained(
    servers: Vec<(tokio::net::TcpListener, axum::Router)>,
    limits: ConnectionLimits,
    begin: impl Future<Output = ()> + Send + 'static,
    timeout: Duration,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let (drain, draining) = watch::channel(false);
    // The accept loops run on worker threads, not the main thread's
    // `block_on`; the set cancels them if the drain times out.
    let mut running = JoinSet::new();
    for (listener, app) in servers {
        let mut draining = draining.clone();
        let stop = async move {
            let _ = draining.wait_for(|d| *d).await;
        };
        running.spawn(cart_http::serve::serve(listener, app, limits, stop));
    }
    let all_drained = async {
        while let Some(result) = running.join_next().await {
            result.context("HTTP server task failed")?;
        }
        anyhow::Ok(())
    };
    tokio::select! {
        result = all_drained => result,
        () = async {
            begin.await;
            drain.send_replace(true);
            tokio::time::sleep(timeout).await;
        } => {
            tracing::warn!("in-flight requests did not finish within the shutdown timeout");
            Ok(())
        }
    }
}

/// Stops what still runs after the HTTP drain and flushes the log.
pub(super) async fn finish(
    mut running: Running,
    grains: &GrainRuntime,
    rpc_deadline: Duration,
    timeout: Duration,
) -> anyhow::Result<()> {
    use anyhow::Context;
    // Peers acknowledged Closing before the drain began; keep answering
    // forwarded calls that were already on their way (with "ask the next
    // node") for two deadlines before the gRPC servers stop.
    tokio::time::sleep(rpc_deadline * 2).await;
    running.stop_grpc.send_replace(true);
    let stopped = tokio::time::timeout(timeout, async {
        while let Some(result) = running.grpc_servers.join_next().await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "gRPC server task failed");
            }
        }
    })
    .await;
    if stopped.is_err() {
        tracing::warn!("gRPC servers did not stop in time");
        running.grpc_servers.shutdown().await;
    }
    for task in running.cluster_loops {
        task.stop().await;
    }
    running.expiry.stop().await;
    running.passivation.stop().await;
    grains.flush().await.context("final flush of the event log failed")?;
    tracing::info!("stopped; every acknowledged mutation is on disk");
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment the process starts serving
/// (installed before the node is built): a signal during start-up is a
/// clean shutdown once the node is up, never the default of dying at once.
pub(super) struct Signals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    pub(super) fn install() -> anyhow::Result<Signals> {
        use anyhow::Context;
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    /// Resolves on the first SIGTERM or SIGINT (also one that came before).
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}
