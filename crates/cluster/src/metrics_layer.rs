//! A tower layer recording the plan's gRPC metrics for every call:
//! `cart_grpc_mutate_calls_total`, `cart_grpc_mutate_duration_seconds`,
//! `cart_grpc_mutate_errors_total` (gRPC-level failures; the service counts
//! failed replies), and the `cart_grpc_control_*` and `cart_grpc_state_*`
//! equivalents labelled by method. A call that carries W3C trace context
//! (`traceparent` metadata) runs in a server span continuing that trace;
//! one without (pings, batches whose requests carry their own) gets none.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::codegen::http;
use tower::{Layer, Service};
use tracing::Instrument;

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around a gRPC router.
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B, RB> Service<http::Request<B>> for GrpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let started = Instant::now();
        let span = match cart_trace::from_headers(request.headers()) {
            Some(parent) => cart_trace::server_span(path.trim_start_matches('/'), &parent),
            None => tracing::Span::none(),
        };
        let future = span.in_scope(|| self.inner.call(request)).instrument(span);
        Box::pin(async move {
            let result = future.await;
            let failed = match &result {
                Ok(response) => {
                    response.headers().get("grpc-status").is_some_and(|s| s.as_bytes() != b"0")
                }
                Err(_) => true,
            };
            record(&path, started.elapsed(), failed);
            result
        })
    }
}

/// The ControlPlane methods; a label is one of these or `unknown`, so a
/// caller cannot grow the label set by naming paths.
const CONTROL_METHODS: [&str; 5] = ["Ping", "Negotiate", "GetCartIds", "ConfirmOwner", "Closing"];

fn control_method(path: &str) -> &'static str {
    let name = path.strip_prefix("/control.ControlPlane/").unwrap_or_default();
    CONTROL_METHODS.into_iter().find(|m| *m == name).unwrap_or("unknown")
}

fn record(path: &str, elapsed: std::time::Duration, failed: bool) {
    let method = control_method(path);
    if path.starts_with("/cart.CartActor/Mutate") {
        metrics::counter!(crate::families::GRPC_MUTATE_CALLS.name).increment(1);
        metrics::histogram!(crate::families::GRPC_MUTATE_DURATION.name).record(elapsed);
        if failed {
            metrics::counter!(crate::families::GRPC_MUTATE_ERRORS.name).increment(1);
        }
    } else if path.starts_with("/cart.CartActor/") {
        metrics::counter!(crate::families::GRPC_STATE_CALLS.name).increment(1);
        metrics::histogram!(crate::families::GRPC_STATE_DURATION.name).record(elapsed);
    } else if path.starts_with("/control.ControlPlane/") {
        metrics::counter!(crate::families::GRPC_CONTROL_CALLS.name, "method" => method)
            .increment(1);
        metrics::histogram!(crate::families::GRPC_CONTROL_DURATION.name, "method" => method)
            .record(elapsed);
        if failed {
            metrics::counter!(crate::families::GRPC_CONTROL_ERRORS.name, "method" => method)
                .increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_the_known_methods_only() {
        assert_eq!(control_method("/control.ControlPlane/Closing"), "Closing");
        assert_eq!(control_method("/control.ControlPlane/Ping"), "Ping");
        for forged in ["/control.ControlPlane/x-1234", "/control.ControlPlane/", "/other/Ping"] {
            assert_eq!(control_method(forged), "unknown", "{forged}");
        }
    }
}
