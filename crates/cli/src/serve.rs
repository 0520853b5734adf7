//! `cart-actor serve`: wires store, catalogue, grains and HTTP together and
//! runs until SIGTERM or SIGINT, then drains and flushes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use cart_catalog::{Catalog, FileCatalog, HttpCatalog, HttpCatalogOptions, Markets, Resolver};
use cart_grain::{GrainRuntime, RuntimeOptions, SystemClock};
use cart_http::AppState;
use cart_store::{FileStore, FileStoreOptions};

use crate::config::ServeArgs;
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

async fn serve(
    args: ServeArgs,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    let markets =
        Markets::new(args.markets.0.clone(), &args.default_country).map_err(anyhow::Error::msg)?;
    let resolver = Resolver::new(
        catalog(&args).context("cannot load the catalogue")?,
        markets,
    );
    let options = FileStoreOptions {
        dir: args.data_dir.clone(),
        fsync: args.fsync,
    };
    let store = tokio::task::spawn_blocking(move || FileStore::open(options))
        .await?
        .with_context(|| format!("cannot open the event store in {}", args.data_dir.display()))?;
    let grains = GrainRuntime::new(
        Arc::new(store),
        resolver,
        Arc::new(SystemClock),
        RuntimeOptions {
            idle_ttl: args.idle_ttl,
            max_grains: args.max_grains,
            node: "local".into(),
        },
    );
    grains.spawn_passivation();

    let ready = Arc::new(AtomicBool::new(false));
    let render = Arc::new(move || {
        if let Some(rss) = telemetry::resident_bytes() {
            metrics::gauge!("process_resident_memory_bytes").set(rss as f64);
        }
        metrics.render()
    });
    let app = cart_http::router(AppState {
        carts: Arc::new(Arc::clone(&grains)),
        cluster: None,
        ready: Arc::clone(&ready),
        metrics: render,
    });
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.http_addr))?;
    let http_addr = listener.local_addr()?;
    ready.store(true, Ordering::SeqCst);
    tracing::info!(%http_addr, data_dir = %args.data_dir.display(), fsync = ?args.fsync, catalog = %args.catalog, "listening");

    let stopping = Arc::new(tokio::sync::Notify::new());
    let drain = {
        let grains = Arc::clone(&grains);
        let ready = Arc::clone(&ready);
        let stopping = Arc::clone(&stopping);
        async move {
            shutdown_signal().await;
            tracing::info!("shutting down: draining in-flight requests");
            ready.store(false, Ordering::SeqCst);
            grains.begin_shutdown();
            stopping.notify_one();
        }
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(drain);
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
    grains
        .flush()
        .await
        .context("final flush of the event log failed")?;
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
