//! Logs, traces and metrics set-up.
//!
//! Traces are on when an OTLP endpoint is configured by the standard
//! variables (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, gRPC), unless `OTEL_SDK_DISABLED=true`
//! or `OTEL_TRACES_EXPORTER=none`. The SDK reads the rest itself:
//! `OTEL_SERVICE_NAME` (default `cart-actor`), `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default: follow the
//! caller's decision, else sample all), `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT` and the `OTEL_BSP_*` batch settings. Spans
//! go only to the OpenTelemetry layer (the log never shows them), so with
//! traces off no layer wants them and they cost nothing.

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// What must be flushed before the process exits: the spans not yet sent.
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered and stops the exporter. Blocks: call
    /// off the async workers.
    pub fn shutdown(self) {
        if let Some(traces) = self.traces
            && let Err(e) = traces.shutdown()
        {
            tracing::warn!(error = %e, "traces not flushed at exit");
        }
    }
}

/// Installs the global `tracing` subscriber: the log in `format`, and the
/// OTLP trace exporter when configured. Call inside the async runtime (the
/// exporter's client needs it).
pub fn init_logs(format: LogFormat, filter: &str) -> anyhow::Result<Telemetry> {
    let log_filter = EnvFilter::try_new(format!("{filter},{}=off", cart_trace::TARGET))
        .context("invalid --log filter")?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let log = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stdout);
    let log = match format {
        LogFormat::Text => log.with_filter(log_filter).boxed(),
        LogFormat::Json => log.json().flatten_event(true).with_filter(log_filter).boxed(),
    };
    let traces = traces_from_env()?;
    let spans = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("cart-actor"))
            .with_filter(Targets::new().with_target(cart_trace::TARGET, tracing::Level::TRACE))
    });
    tracing_subscriber::registry()
        .with(log)
        .with(spans)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    cart_trace::set_enabled(traces.is_some());
    Ok(Telemetry { traces })
}

/// A variable's value, when set to something.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// The trace pipeline the `OTEL_*` variables ask for, if any.
fn traces_from_env() -> anyhow::Result<Option<SdkTracerProvider>> {
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match var("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => {
            anyhow::bail!("OTEL_TRACES_EXPORTER={other}: only otlp and none are supported")
        }
    }
    if var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Some(protocol) = var(name)
            && protocol != "grpc"
        {
            anyhow::bail!("{name}={protocol}: only grpc is supported");
        }
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .context("invalid OTLP exporter settings (OTEL_EXPORTER_OTLP_*)")?;
    let mut resource = Resource::builder();
    if var("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("cart-actor");
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(Some(
        SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build(),
    ))
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
