//! Every HTTP request counted by route and status, and timed by route.
//! The route is the matched route's template (a bounded set), never the
//! path a client sent; requests matching no route count as `unmatched`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::families::{HTTP_REQUEST_DURATION, HTTP_REQUESTS};

/// Middleware for every route (`route_layer`): records the request.
pub(crate) async fn record(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS.name, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION.name, "route" => route).record(started.elapsed());
    response
}

/// The answer to a request no route matches: 404, counted.
pub(crate) async fn unmatched() -> Response {
    metrics::counter!(HTTP_REQUESTS.name, "route" => "unmatched", "status" => "404").increment(1);
    (StatusCode::NOT_FOUND, "no such resource").into_response()
}
