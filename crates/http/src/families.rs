//! The HTTP edge's metric families (see `cart_metrics`).

cart_metrics::families! {
    /// Labelled `route` (the matched route, or `unmatched`) and `status`:
    /// series appear with the first request of each.
    HTTP_REQUESTS = Counter("cart_http_requests_total", "HTTP requests answered, by route and status.");
    /// Labelled `route`.
    HTTP_REQUEST_DURATION = Histogram("cart_http_request_duration_seconds",
        "Time an HTTP request took until its response head, by route.");
    HTTP_FAILURES = Counter("cart_http_failures_total",
        "Requests this node answered with a 5xx, by reason: the failure's kind.",
        "reason" => ["unavailable", "bad_gateway", "internal", "checkout_provider", "other"]);
    HTTP_UNAUTHORIZED = Counter("cart_http_unauthorized_total",
        "Internal-listener requests refused for a missing or wrong token.");
    HTTP_CONNECTIONS_REFUSED = Counter("cart_http_connections_refused_total",
        "HTTP connections refused at the --max-connections bound.");
}
