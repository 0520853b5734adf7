//! A server span per HTTP request (on [`cart_trace::TARGET`]): named by
//! method and route template, continuing the caller's trace when the
//! request carries W3C `traceparent`, so a storefront's trace goes on
//! through this node, the forward to the cart's owner and its turn.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// Routes never traced: probes and scrapes, which would bury the
/// requests worth a trace under one root trace every few seconds each.
pub const UNTRACED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Middleware: runs the request inside its span.
pub async fn traced(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
    if UNTRACED.contains(&route) {
        return next.run(request).await;
    }
    let span = tracing::info_span!(
        target: cart_trace::TARGET,
        "http",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    if span.is_disabled() {
        return next.run(request).await;
    }
    cart_trace::continue_trace(&span, cart_trace::from_headers(request.headers()).as_ref());
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}
