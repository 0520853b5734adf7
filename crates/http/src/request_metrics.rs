//! Every HTTP request counted by route and status, and timed by route.
//! The route is the matched route's template (a bounded set), never the
//! path a client sent; requests matching no route count as `unmatched`.
//!
//! This is on every request's path, so it is a plain tower layer (no boxed
//! middleware), and the metric handles are kept per route and status in a
//! short table found by the route template's address (axum hands every
//! request of a route the same shared string): a request costs a read lock,
//! a scan of a few words and two atomic updates, not a hash of its path or
//! a registry lookup with freshly allocated labels.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};
use tower::{Layer, Service};

use crate::families::{HTTP_REQUEST_DURATION, HTTP_REQUESTS};

/// The route label of a request no route matches.
const UNMATCHED: &str = "unmatched";

/// One route's handles: its latency, and its count per status.
struct RouteHandles {
    /// The route template's address (0: unmatched).
    key: usize,
    duration: Histogram,
    by_status: Vec<(u16, Counter)>,
}

/// The handles of one listener's routes (bounded: route templates times
/// the statuses they answer).
#[derive(Default)]
pub(crate) struct RequestMetrics {
    routes: RwLock<Vec<RouteHandles>>,
}

fn key(route: Option<&MatchedPath>) -> usize {
    route.map_or(0, |r| r.as_str().as_ptr() as usize)
}

impl RequestMetrics {
    fn observe(&self, route: Option<&MatchedPath>, status: u16, took: Option<Duration>) {
        let key = key(route);
        let record = |handles: &RouteHandles, count: &Counter| {
            count.increment(1);
            if let Some(took) = took {
                handles.duration.record(took);
            }
        };
        {
            let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(handles) = routes.iter().find(|h| h.key == key)
                && let Some((_, count)) = handles.by_status.iter().find(|(s, _)| *s == status)
            {
                return record(handles, count);
            }
        }
        let name = route.map_or(UNMATCHED, MatchedPath::as_str).to_owned();
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let at = match routes.iter().position(|h| h.key == key) {
            Some(at) => at,
            None => {
                routes.push(RouteHandles {
                    key,
                    duration: metrics::histogram!(HTTP_REQUEST_DURATION.name, "route" => name.clone()),
                    by_status: Vec::new(),
                });
                routes.len() - 1
            }
        };
        let handles = &mut routes[at];
        if !handles.by_status.iter().any(|(s, _)| *s == status) {
            let labels = [("route", name), ("status", status.to_string())];
            handles.by_status.push((status, metrics::counter!(HTTP_REQUESTS.name, &labels)));
        }
        let handles = &routes[at];
        if let Some((_, count)) = handles.by_status.iter().find(|(s, _)| *s == status) {
            record(handles, count);
        }
    }
}

/// The layer for every route (`route_layer`): records each request.
#[derive(Clone)]
pub(crate) struct Record(Arc<RequestMetrics>);

impl<S> Layer<S> for Record {
    type Service = Recorded<S>;

    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded { inner, metrics: Arc::clone(&self.0) }
    }
}

/// A route's service, recording its requests.
#[derive(Clone)]
pub(crate) struct Recorded<S> {
    inner: S,
    metrics: Arc<RequestMetrics>,
}

impl<S> Service<Request> for Recorded<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Recording<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        Recording {
            inner: self.inner.call(request),
            metrics: Arc::clone(&self.metrics),
            route,
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being served; records it when the response is ready.
    pub(crate) struct Recording<F> {
        #[pin]
        inner: F,
        metrics: Arc<RequestMetrics>,
        route: Option<MatchedPath>,
        started: Instant,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Recording<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            let took = Some(this.started.elapsed());
            this.metrics.observe(this.route.as_ref(), response.status().as_u16(), took);
        }
        Poll::Ready(result)
    }
}

/// The answer to a request no route matches: 404, counted.
pub(crate) fn unmatched(metrics: &RequestMetrics) -> Response {
    metrics.observe(None, 404, None);
    (StatusCode::NOT_FOUND, "no such resource").into_response()
}

/// Counts every request of `router`'s routes, and those matching none;
/// traces them when traces are on ([`crate::trace`]).
pub(crate) fn counted<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
) -> axum::Router<S> {
    let metrics = Arc::new(RequestMetrics::default());
    let fallback = Arc::clone(&metrics);
    let router = if cart_trace::enabled() {
        router.route_layer(axum::middleware::from_fn(crate::trace::traced))
    } else {
        router
    };
    router.route_layer(Record(metrics)).fallback(move || {
        let metrics = Arc::clone(&fallback);
        async move { unmatched(&metrics) }
    })
}
