//! `cart-actor serve`: wires store, catalogue, grains, cluster and HTTP
//! together and runs until SIGTERM or SIGINT, then leaves the cluster, drains
//! and flushes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use cart_catalog::{Catalog, FileCatalog, HttpCatalog, HttpCatalogOptions, Markets, Resolver};
use cart_checkout::{Checkout, KlarnaClient, KlarnaConfig};
use cart_cluster::discovery::{Discovery, DnsPeers, StaticPeers};
use cart_cluster::kubernetes::KubernetesPeers;
use cart_cluster::{Cluster, ClusterOptions, NodeAddr};
use cart_grain::{Clock, GrainRuntime, RuntimeOptions, SystemClock};
use cart_http::AppState;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{DiscoveryKind, ServeArgs};
use crate::stores::StoreSpec;
use crate::telemetry;

/// Runs the service.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init_logs(args.log_format, &args.log)?;
    let metrics = telemetry::init_metrics()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args, metrics))
}

fn catalog(args: &ServeArgs) -> anyhow::Result<Arc<dyn Catalog>> {
    let spec = args.catalog.as_str();
    Ok(if spec == "sample" {
        Arc::new(FileCatalog::sample()?)
    } else if spec.starts_with("http://") || spec.starts_with("https://") {
        let mut options = HttpCatalogOptions::new(spec);
        options.timeout = args.catalog_timeout;
        Arc::new(HttpCatalog::new(options)?)
    } else {
        Arc::new(FileCatalog::from_path(Path::new(spec))?)
    })
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// The host peers reach this node at.
fn advertise_host(args: &ServeArgs) -> String {
    if let Some(host) = &args.advertise_host {
        return host.clone();
    }
    if let Ok(ip) = std::env::var("POD_IP") {
        return ip;
    }
    if !args.grpc_addr.ip().is_unspecified() {
        return args.grpc_addr.ip().to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

async fn discovery(args: &ServeArgs, me: &NodeAddr) -> anyhow::Result<Arc<dyn Discovery>> {
    Ok(match args.discovery {
        DiscoveryKind::Static => Arc::new(StaticPeers(args.peers.clone())),
        DiscoveryKind::Dns => Arc::new(DnsPeers {
            name: args.dns_name.clone().context("--discovery dns needs --dns-name")?,
            grpc_port: me.grpc_port,
            control_port: me.control_port,
        }),
        DiscoveryKind::Kubernetes => Arc::new(
            KubernetesPeers::in_cluster(
                args.k8s_namespace.as_deref(),
                &args.k8s_selector,
                me.grpc_port,
                me.control_port,
            )
            .await
            .map_err(anyhow::Error::msg)?,
        ),
    })
}

async fn serve(
    args: ServeArgs,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    let markets =
        Markets::new(args.markets.0.clone(), &args.default_country).map_err(anyhow::Error::msg)?;
    let resolver = Resolver::new(catalog(&args).context("cannot load the catalogue")?, markets);
    let store_spec = StoreSpec::parse(&args.store, &args.data_dir);
    let store = store_spec.open(args.fsync, args.commit_wait, args.pg_pool_size).await?;

    let (http_listener, http_addr) = bind(args.http_addr, "HTTP").await?;
    let (grpc_listener, grpc_addr) = bind(args.grpc_addr, "CartActor gRPC").await?;
    let (control_listener, control_addr) = bind(args.control_addr, "ControlPlane gRPC").await?;
    let me = NodeAddr {
        host: advertise_host(&args),
        grpc_port: grpc_addr.port(),
        control_port: control_addr.port(),
    };

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let grains = GrainRuntime::new(
        Arc::clone(&store),
        resolver,
        Arc::clone(&clock),
        RuntimeOptions {
            idle_ttl: args.idle_ttl,
            max_grains: args.max_grains,
            max_watchers: args.max_watchers,
            node: me.to_string(),
        },
    );
    let passivation = grains.spawn_passivation();
    let mut cluster_options = ClusterOptions::new(me.clone());
    cluster_options.ping_interval = args.ping_interval;
    cluster_options.max_misses = args.ping_misses;
    cluster_options.rpc_deadline = args.rpc_deadline;
    cluster_options.discovery_interval = args.discovery_interval;
    let cluster =
        Cluster::new(cluster_options, Arc::clone(&grains), discovery(&args, &me).await?, clock);

    let (stop_grpc, grpc_stopped) = watch::channel(false);
    let mut grpc_servers = Vec::new();
    for listener in [grpc_listener, control_listener] {
        let cluster = Arc::clone(&cluster);
        let mut stopped = grpc_stopped.clone();
        grpc_servers.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            cluster.serve(listener, shutdown).await
        }));
    }
    let cluster_loops = cluster.spawn_loops();

    let draining = Arc::new(AtomicBool::new(false));
    let ready = {
        let (cluster, draining) = (Arc::clone(&cluster), Arc::clone(&draining));
        let store = Arc::clone(&store);
        Arc::new(move || cluster.is_ready() && store.healthy() && !draining.load(Ordering::SeqCst))
    };
    let render = Arc::new(move || {
        if let Some(rss) = telemetry::resident_bytes() {
            metrics::gauge!("process_resident_memory_bytes").set(rss as f64);
        }
        metrics.render()
    });
    let status = {
        let cluster = Arc::clone(&cluster);
        Arc::new(move || cluster.status())
    };
    let carts: Arc<dyn cart_grain::Carts> = cluster.carts();
    let checkout = match &args.klarna_url {
        Some(url) => {
            let client = KlarnaClient::new(KlarnaConfig {
                base_url: url.clone(),
                username: args.klarna_username.clone(),
                password: args.klarna_password.clone(),
                timeout: args.klarna_timeout,
            })?;
            Some(Arc::new(Checkout::new(Arc::clone(&carts), client, args.public_url.clone())))
        }
        None => None,
    };
    let app = cart_http::router(AppState {
        carts,
        cluster: Some(status),
        ready,
        metrics: render,
        checkout,
    });
    tracing::info!(
        %http_addr, %grpc_addr, %control_addr, node = %me,
        store = %store_spec.redacted(), fsync = ?args.fsync, catalog = %args.catalog,
        "listening"
    );

    let stopping = Arc::new(tokio::sync::Notify::new());
    let drain = {
        let (grains, cluster, draining, stopping) = (
            Arc::clone(&grains),
            Arc::clone(&cluster),
            Arc::clone(&draining),
            Arc::clone(&stopping),
        );
        async move {
            shutdown_signal().await;
            tracing::info!("shutting down: leaving the cluster, draining in-flight requests");
            draining.store(true, Ordering::SeqCst);
            cluster.leave().await;
            grains.begin_shutdown();
            stopping.notify_one();
        }
    };
    let server = axum::serve(http_listener, app).with_graceful_shutdown(drain);
    let server = tokio::spawn(async move { server.await });
    let outcome = tokio::select! {
        result = server => result.context("HTTP server task failed")?.context("HTTP server failed"),
        () = async {
            stopping.notified().await;
            tokio::time::sleep(args.shutdown_timeout).await;
        } => {
            tracing::warn!("in-flight requests did not finish within the shutdown timeout");
            Ok(())
        }
    };
    // Peers acknowledged Closing before the drain began; keep answering
    // forwarded calls that were already on their way (with 421, "ask the next
    // node") for two deadlines before the gRPC servers stop.
    tokio::time::sleep(args.rpc_deadline * 2).await;
    stop_grpc.send_replace(true);
    for server in grpc_servers {
        match tokio::time::timeout(args.shutdown_timeout, server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server task failed"),
            Err(_) => tracing::warn!("gRPC server did not stop in time"),
        }
    }
    for task in cluster_loops {
        task.stop().await;
    }
    passivation.stop().await;
    grains.flush().await.context("final flush of the event log failed")?;
    tracing::info!("stopped; every acknowledged mutation is on disk");
    outcome
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
