//! The live cluster dashboard on the internal listener: the page at
//! `/admin` (plain HTML, CSS and JavaScript compiled into the binary, no
//! build step) and the stream it follows, `GET /api/cluster/stream`.
//!
//! The page and its assets hold no data, so they are served without the
//! internal token; the page asks for the token and sends it with every
//! request it makes (as a header, so no cookie can be ridden by another
//! site). The data comes from `/api/cluster/stream`, `/api/carts/{id}`,
//! `/api/carts/{id}/history` and `/api/carts/{id}/events`, all behind the
//! token. Every value is put into the page as text, never as markup.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::Stream;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::AppState;

/// How often the stream sends the cluster view.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Most dashboard streams open at once on a node; more are refused (503).
pub const MAX_STATUS_STREAMS: usize = 32;

/// What the page may load and talk to: only this origin, no inline code,
/// never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The paths of the page and its assets: the only ones of the internal
/// listener served without the token.
pub const PAGE_PATHS: [&str; 3] = ["/admin", "/admin/app.js", "/admin/app.css"];

/// The page, its assets and the stream it follows.
pub fn routes() -> Router<AppState> {
    let [page, script, style] = PAGE_PATHS;
    Router::new()
        .route(page, get(|| async { asset("text/html; charset=utf-8", PAGE) }))
        .route(script, get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route(style, get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/api/cluster/stream", get(status_stream))
}

const PAGE: &str = include_str!("admin/index.html");
const SCRIPT: &str = include_str!("admin/app.js");
const STYLE: &str = include_str!("admin/app.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The open streams of this process.
static STREAMS: Semaphore = Semaphore::const_new(MAX_STATUS_STREAMS);

/// `GET /api/cluster/stream`: `event: cluster` with the JSON of
/// `/api/cluster`, at once and then every [`STATUS_INTERVAL`], until the
/// node starts to leave (then the page reconnects to whichever node the
/// address reaches next).
async fn status_stream(State(s): State<AppState>) -> Response {
    let Some(status) = s.cluster.clone() else {
        return (StatusCode::NOT_FOUND, "not clustered").into_response();
    };
    let Ok(permit) = STREAMS.try_acquire() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many dashboard streams").into_response();
    };
    let mut response = Sse::new(views(status, permit))
        .keep_alive(KeepAlive::new().interval(crate::events::HEARTBEAT).text("heartbeat"))
        .into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn views(
    status: crate::ClusterStatus,
    permit: SemaphorePermit<'static>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let mut ticks = tokio::time::interval(STATUS_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures_util::stream::unfold(
        (ticks, status, permit),
        |(mut ticks, status, permit)| async move {
            ticks.tick().await;
            let view = status();
            if view["closing"].as_bool().unwrap_or(false) {
                return None;
            }
            let event = Event::default().event("cluster").data(view.to_string());
            Some((Ok(event), (ticks, status, permit)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test(start_paused = true)]
    async fn the_stream_sends_the_view_every_interval_and_ends_when_the_node_leaves() {
        let closing = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&closing);
        let status: crate::ClusterStatus =
            Arc::new(move || serde_json::json!({"closing": flag.load(Ordering::SeqCst)}));
        static ONE: Semaphore = Semaphore::const_new(1);
        let permit = ONE.try_acquire().unwrap();
        let mut views = Box::pin(views(status, permit));
        let started = tokio::time::Instant::now();
        assert!(views.next().await.is_some());
        assert!(views.next().await.is_some());
        assert_eq!(started.elapsed(), STATUS_INTERVAL);
        closing.store(true, Ordering::SeqCst);
        assert!(views.next().await.is_none(), "a leaving node ends the stream");
    }

    #[test]
    fn the_page_refers_only_to_its_own_assets() {
        assert!(PAGE.contains(r#"src="/admin/app.js""#));
        assert!(PAGE.contains(r#"href="/admin/app.css""#));
        assert!(!PAGE.contains("<script>"), "no inline script: the policy forbids it");
        assert!(!SCRIPT.contains("innerHTML"), "values go in as text, never markup");
    }
}
