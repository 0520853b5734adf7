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
    /// The address of the route template's shared string (0: unmatched).
    key: usize,
    /// The template, for requests whose string is not the shared one.
    name: Box<str>,
    duration: Histogram,
    by_status: Vec<(u16, Counter)>,
}

/// The handles of one listener's routes, one entry per route template
/// (bounded: templates times the statuses they answer).
#[derive(Default)]
pub(crate) struct RequestMetrics {
    routes: RwLock<Vec<RouteHandles>>,
}

impl RequestMetrics {
    fn observe(&self, route: Option<&MatchedPath>, status: u16, took: Option<Duration>) {
        let key = route.map_or(0, |r| r.as_str().as_ptr() as usize);
        let name = route.map_or(UNMATCHED, MatchedPath::as_str);
        // The address finds a route at once; the name finds it when axum
        // built the string for this request (a router nested as a service),
        // so the table never grows past one entry per template.
        let same = |h: &RouteHandles| h.key == key || *h.name == *name;
        let record = |handles: &RouteHandles, count: &Counter| {
            count.increment(1);
            if let Some(took) = took {
                handles.duration.record(took);
            }
        };
        {
            let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(handles) = routes.iter().find(|h| same(h))
                && let Some((_, count)) = handles.by_status.iter().find(|(s, _)| *s == status)
            {
                return record(handles, count);
            }
        }
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let at = match routes.iter().position(same) {
            Some(at) => at,
            None => {
                let duration =
                    metrics::histogram!(HTTP_REQUEST_DURATION.name, "route" => name.to_owned());
                routes.push(RouteHandles { key, name: name.into(), duration, by_status: vec![] });
                routes.len() - 1
            }
        };
        let handles = &mut routes[at];
        let count = match handles.by_status.iter().find(|(s, _)| *s == status) {
            Some((_, count)) => count.clone(),
            None => {
                let labels = [("route", name.to_owned()), ("status", status.to_string())];
                let count = metrics::counter!(HTTP_REQUESTS.name, &labels);
                handles.by_status.push((status, count.clone()));
                count
            }
        };
        record(handles, &count);
    }

    /// How many routes have handles.
    #[cfg(test)]
    fn routes(&self) -> usize {
        self.routes.read().unwrap_or_else(PoisonError::into_inner).len()
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_route_whose_template_is_built_per_request_keeps_one_entry() {
        let metrics = Arc::new(RequestMetrics::default());
        // In a router nested as a service axum builds the matched path for
        // every request: a new address each time, the same template.
        let inner = Router::new()
            .route("/x", get(|| async { "ok" }))
            .route_layer(Record(Arc::clone(&metrics)));
        let app = Router::new().nest_service("/n", inner);
        for _ in 0..5 {
            let request = axum::http::Request::get("/n/x").body(Body::empty()).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
        assert_eq!(metrics.routes(), 1, "one entry per route template");
    }
}
