//! Checkout's metric families (see `cart_metrics`).

cart_metrics::families! {
    CHECKOUT_REFUSED = Counter("cart_checkout_refused_total",
        "Provider orders not completed because they do not match the cart, by reason.",
        "reason" => ["amount", "lines", "unpayable"]);
}
