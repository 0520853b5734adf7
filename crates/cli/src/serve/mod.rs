//! `cart-actor serve`: builds the node ([`wiring`]), runs it until SIGTERM
//! or SIGINT, then leaves the cluster, drains and flushes ([`shutdown`]).

mod shutdown;
mod wiring;

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::ServeArgs;
use crate::telemetry;

/// Runs the service.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let telemetry = {
        let _inside = runtime.enter();
        telemetry::init_logs(args.log_format, &args.log)?
    };
    let metrics = telemetry::init_metrics()?;
    let outcome = runtime.block_on(serve(args, metrics));
    // The exporter sends its last spans on the runtime's threads.
    let flushed = runtime.spawn_blocking(move || telemetry.shutdown());
    let _ = runtime.block_on(flushed);
    outcome
}

async fn serve(
    args: ServeArgs,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let signals = shutdown::Signals::install()?;
    let node = wiring::build(&args, metrics).await?;
    let passivation = node.grains.spawn_passivation();
    let expiry = node.grains.spawn_expiry(
        cart_grain::Expiry { expire_after: args.expire_after, keep_completed: args.keep_completed },
        args.expiry_sweep_every,
        node.cluster.owner_check(),
    );
    let (stop_grpc, grpc_stopped) = watch::channel(false);
    let mut grpc_servers = JoinSet::new();
    for listener in node.grpc {
        let cluster = Arc::clone(&node.cluster);
        let mut stopped = grpc_stopped.clone();
        grpc_servers.spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            if let Err(e) = cluster.serve(listener, shutdown).await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        });
    }
    let running = shutdown::Running {
        stop_grpc,
        grpc_servers,
        cluster_loops: node.cluster.spawn_loops(),
        passivation,
        expiry,
    };

    // Connections wait in the listeners' backlog until the node may serve
    // (its first majority round), instead of being refused.
    let within = args.discovery_interval * 2 + args.lease;
    if node.cluster.wait_for_lease(within).await {
        let took = started.elapsed();
        metrics::gauge!(crate::families::STARTUP_DURATION.name).set(took.as_secs_f64());
        tracing::info!(took_ms = took.as_millis() as u64, "ready to serve");
    } else {
        tracing::warn!(waited = ?within, "no majority of the cluster yet; serving 503 until one answers");
    }
    let begin = shutdown::begin(
        signals,
        Arc::clone(&node.cluster),
        Arc::clone(&node.grains),
        Arc::clone(&node.draining),
        args.drain_delay,
    );
    let outcome = shutdown::serve_http_until_drained(
        vec![(node.http, node.public), (node.internal, node.internal_app)],
        cart_http::serve::ConnectionLimits {
            header_timeout: args.header_timeout,
            body_timeout: args.body_timeout,
            max_connections: args.max_connections,
        },
        begin,
        args.shutdown_timeout,
    )
    .await;
    shutdown::finish(running, &node.grains, args.rpc_deadline, args.shutdown_timeout).await?;
    drop(node.store);
    outcome
}
