//! Logs and metrics set-up.

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global `tracing` subscriber.
pub fn init_logs(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter).context("invalid --log filter")?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stdout);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// Reports the error that ends the process: through the logger, in its
/// format, once `serve` has installed one (so a log collector parses it
/// like any other line); on standard error before that, and for the tools.
pub fn fatal(e: &anyhow::Error) {
    if tracing::dispatcher::has_been_set() {
        tracing::error!(error = format!("{e:#}"), "cart-actor stopped on an error");
    } else {
        eprintln!("Error: {e:#}");
    }
}

/// Installs the global Prometheus recorder. Latency metrics are histograms
/// with few buckets (cheap to scrape); everything else renders as-is.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let latency = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
    let batch = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), &latency)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("batch_size".into()), &batch))
        .context("invalid histogram buckets")?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("a metrics recorder is already installed")?;
    cart_metrics::register(&crate::families::all());
    let version = env!("CARGO_PKG_VERSION");
    metrics::gauge!(crate::families::BUILD_INFO.name, "version" => version).set(1.0);
    Ok(handle)
}
