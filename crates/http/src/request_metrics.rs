//! Every HTTP request counted by route and status, and timed by route.
//! The route is the matched route's template (a bounded set), never the
//! path a client sent; requests matching no route count as `unmatched`.
//! The metric handles are looked up once per route and status and kept,
//! so a request costs a read lock and two atomic updates, not a registry
//! lookup with freshly allocated labels.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};

use crate::families::{HTTP_REQUEST_DURATION, HTTP_REQUESTS};

/// The route label of a request no route matches.
const UNMATCHED: &str = "unmatched";

/// One route's handles: its latency, and its count per status.
struct RouteHandles {
    duration: Histogram,
    by_status: HashMap<u16, Counter>,
}

/// The handles of one listener's routes (bounded: route templates times
/// the statuses they answer).
#[derive(Default)]
pub(crate) struct RequestMetrics {
    routes: RwLock<HashMap<String, RouteHandles>>,
}

impl RequestMetrics {
    fn observe(&self, route: &str, status: u16, took: Option<Duration>) {
        {
            let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(handles) = routes.get(route)
                && let Some(count) = handles.by_status.get(&status)
            {
                count.increment(1);
                if let Some(took) = took {
                    handles.duration.record(took);
                }
                return;
            }
        }
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let handles = routes.entry(route.to_owned()).or_insert_with(|| RouteHandles {
            duration: metrics::histogram!(HTTP_REQUEST_DURATION.name, "route" => route.to_owned()),
            by_status: HashMap::new(),
        });
        let count = handles.by_status.entry(status).or_insert_with(|| {
            let status = status.to_string();
            metrics::counter!(HTTP_REQUESTS.name, "route" => route.to_owned(), "status" => status)
        });
        count.increment(1);
        if let Some(took) = took {
            handles.duration.record(took);
        }
    }
}

/// Middleware for every route (`route_layer`): records the request.
pub(crate) async fn record(
    State(metrics): State<Arc<RequestMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    metrics.observe(route, response.status().as_u16(), Some(started.elapsed()));
    response
}

/// The answer to a request no route matches: 404, counted.
pub(crate) fn unmatched(metrics: &RequestMetrics) -> Response {
    metrics.observe(UNMATCHED, 404, None);
    (StatusCode::NOT_FOUND, "no such resource").into_response()
}

/// Counts every request of `router`'s routes, and those matching none.
pub(crate) fn counted<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
) -> axum::Router<S> {
    let metrics = Arc::new(RequestMetrics::default());
    let fallback = Arc::clone(&metrics);
    router
        .route_layer(axum::middleware::from_fn(crate::trace::traced))
        .route_layer(axum::middleware::from_fn_with_state(metrics, record))
        .fallback(move || {
            let metrics = Arc::clone(&fallback);
            async move { unmatched(&metrics) }
        })
}
