//! What every node-to-node call shares: its deadline and when its payload is
//! compressed.

use std::time::Duration;

/// Payloads larger than this are compressed.
pub const COMPRESS_ABOVE_BYTES: usize = 8 * 1024;

/// A client span for one call forwarded to `peer` (on
/// [`cart_trace::TARGET`]: a no-op unless traces are on).
pub fn forward_span(call: &'static str, peer: &crate::node::NodeAddr) -> tracing::Span {
    tracing::info_span!(
        target: cart_trace::TARGET,
        "forward",
        otel.name = format!("forward {call}"),
        otel.kind = "client",
        rpc.system = "grpc",
        server.address = %peer,
    )
}

/// `request` carrying `span`'s trace context as `traceparent` and
/// `tracestate` metadata, when the span is traced.
pub fn traced<T>(mut request: tonic::Request<T>, span: &tracing::Span) -> tonic::Request<T> {
    if let Some(context) = cart_trace::of(span) {
        let metadata = request.metadata_mut();
        if let Ok(v) = context.traceparent.parse() {
            metadata.insert("traceparent", v);
        }
        if !context.tracestate.is_empty()
            && let Ok(v) = context.tracestate.parse()
        {
            metadata.insert("tracestate", v);
        }
    }
    request
}

/// A request carrying `deadline` as its gRPC timeout.
pub fn with_deadline<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}
