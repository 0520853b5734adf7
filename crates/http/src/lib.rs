//! The HTTP API: two faces over the same grains, on two listeners.
//!
//! - [`public`]: the *storefront face* ([`storefront`]), exactly what the
//!   web storefront calls (`/cart/...`, the cart named by the `cartid`
//!   cookie), the checkout pages and the provider's callbacks
//!   ([`checkout`]), and the probes. This is what the internet reaches.
//! - [`internal`]: the *service face* ([`service`]), carts by id under
//!   `/api/carts/{id}` for trusted services, with `ETag`/`If-Match` and
//!   `Idempotency-Key`, plus `/metrics` and `/api/cluster`; optionally
//!   behind a bearer token ([`auth`]). A route of one listener is 404 on the
//!   other.
//! - [`events`] streams live carts (Server-Sent Events) on both faces.
//!
//! Both faces turn request bodies into the same domain mutations
//! ([`requests`]) and report failures through one error type ([`error`]).

pub mod admin;
pub mod auth;
pub mod body;
pub mod checkout;
pub mod cookie;
pub mod error;
pub mod events;
pub mod families;
pub mod history;
pub mod ops;
mod request_metrics;
pub mod requests;
pub mod response;
pub mod serve;
pub mod service;
pub mod storefront;
pub mod trace;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use cart_grain::Carts;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Renders the Prometheus exposition text.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// Says whether the node should receive traffic.
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

/// Describes the cluster as JSON for `GET /api/cluster`.
pub type ClusterStatus = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    /// The carts: local grains, or the cluster router.
    pub carts: Arc<dyn Carts>,
    /// This node's view of the cluster, when clustered.
    pub cluster: Option<ClusterStatus>,
    /// Whether this node should receive traffic (`/readyz`).
    pub ready: Readiness,
    /// Renders `/metrics`.
    pub metrics: MetricsRenderer,
    /// The checkout integration, when configured.
    pub checkout: Option<Arc<cart_checkout::Checkout>>,
    /// Mints storefront cart ids and recognises them in cookies.
    pub ids: Arc<cart_grain::CartIdMint>,
    /// This node's store, for `POST /api/admin/compact`.
    pub store: Arc<dyn cart_store::EventStore>,
}

/// The public listener: storefront, checkout, probes.
pub fn public(state: AppState) -> Router {
    let routes =
        Router::new().merge(storefront::routes()).merge(checkout::routes()).merge(ops::probes());
    request_metrics::counted(routes).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)).with_state(state)
}

/// The internal listener: carts by id, metrics, the cluster view, the
/// dashboard and the probes; every request but for the dashboard's page
/// (which holds no data) needs `token` when one is set.
pub fn internal(state: AppState, token: Option<auth::BearerToken>) -> Router {
    let routes = Router::new()
        .merge(service::routes())
        .merge(ops::internals())
        .merge(admin::routes())
        .merge(ops::probes());
    let router = request_metrics::counted(routes)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    match token {
        Some(token) => router.layer(axum::middleware::from_fn_with_state(token, auth::require)),
        None => router,
    }
}
