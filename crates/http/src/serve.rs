//! Serving a router on a listener with bounds a client cannot stretch:
//! every connection is HTTP/1.1 whose request head must arrive within
//! [`ConnectionLimits::header_timeout`] (hyper's header read timeout, which
//! also closes a keep-alive connection that sends nothing), whose request
//! body must arrive within [`ConnectionLimits::body_timeout`], and whose
//! buffers are capped at [`MAX_CONNECTION_BUFFER`]. At most
//! [`ConnectionLimits::max_connections`] are open at once; one more is
//! answered `503 Service Unavailable` with `Retry-After` and closed, never
//! left hanging.
//!
//! Every connection's task belongs to the serving future: a graceful
//! shutdown lets in-flight requests finish (idle connections close at
//! once); dropping the future cancels them all.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceBuilder;
use tower_http::timeout::RequestBodyDeadlineLayer;

/// Most bytes hyper buffers for one connection's reads and writes.
pub const MAX_CONNECTION_BUFFER: usize = 64 * 1024;
/// Connections over the cap being told so at once; beyond these (a flood)
/// an extra connection is closed without an answer.
const MAX_REFUSING: usize = 64;

/// What one listener allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest a request head may take to arrive, and longest an idle
    /// keep-alive connection stays open.
    pub header_timeout: Duration,
    /// Longest a request body may take to arrive.
    pub body_timeout: Duration,
    /// Most connections open at once on this listener.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    /// 10 s for a head, 10 s for a body, 16,384 connections.
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 16_384,
        }
    }
}

const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
Content-Type: text/plain\r\nContent-Length: 34\r\nConnection: close\r\n\r\n\
too many connections; retry later\n";

/// Serves `app` on `listener` within `limits` until `shutdown` resolves,
/// then until the requests in flight have finished.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_CONNECTION_BUFFER)
        .keep_alive(true);
    let service = ServiceBuilder::new()
        .layer(RequestBodyDeadlineLayer::new(limits.body_timeout))
        .service(app);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off, go on.
                tracing::warn!(error = %e, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!(crate::families::HTTP_CONNECTIONS_REFUSED.name).increment(1);
            if let Ok(permit) = Arc::clone(&refusing).try_acquire_owned() {
                connections.spawn(async move {
                    refuse(stream).await;
                    drop(permit);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service.clone()));
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    while connections.join_next().await.is_some() {}
}

/// Tells a connection over the cap to come back later, and closes it.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
    let _ = stream.shutdown().await;
}
