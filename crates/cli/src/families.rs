//! The binary's own metric families (see `cart_metrics`); process metrics
//! (`process_*`) come from the `metrics-process` collector.

cart_metrics::families! {
    STARTUP_DURATION = Gauge("cart_startup_duration_seconds",
        "Time from process start to the first serving lease (ready to serve).");
    /// Labelled `version`, set at start.
    BUILD_INFO = Gauge("cart_build_info", "Always 1; labelled with the version this node runs.");
}

/// Every crate's families, for registration at start and for the tests.
pub fn all() -> [&'static [cart_metrics::Family]; 6] {
    [
        cart_store::families::FAMILIES,
        cart_grain::families::FAMILIES,
        cart_cluster::families::FAMILIES,
        cart_http::families::FAMILIES,
        cart_checkout::families::FAMILIES,
        FAMILIES,
    ]
}
