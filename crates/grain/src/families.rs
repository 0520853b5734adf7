//! The grain runtime's metric families (see `cart_metrics`).

cart_metrics::families! {
    /// Labelled `type` (every mutation type) and `outcome`; those series
    /// are registered by `turn_metrics.rs`, which knows the types.
    MUTATIONS = Counter("cart_mutations_total",
        "Mutations by type and outcome: ok, refused (answered 4xx) or failed (5xx).");
    LOG_APPEND_DURATION = Histogram("cart_log_append_duration_seconds",
        "Time a turn's append took until durable.");
    GRAIN_ACTIVATIONS = Counter("cart_grain_activations_total",
        "Grains activated: a cart's snapshot and events read into memory.");
    GRAIN_ACTIVATION_DURATION = Histogram("cart_grain_activation_duration_seconds",
        "Time one activation took.");
    GRAIN_PASSIVATIONS = Counter("cart_grain_passivations_total",
        "Grains dropped from memory, by reason.",
        "reason" => ["idle", "evicted", "moved", "handover", "lease_lapsed"]);
    GRAIN_FENCED = Counter("cart_grain_fenced_total",
        "Appends refused because another node has claimed the cart since.");
    GRAINS_RESIDENT = Gauge("cart_grains_resident", "Grains in memory on this node.");
    LEASE_GRANTS_AFTER_LAPSE = Counter("cart_lease_grants_after_lapse_total",
        "Serving leases granted while none was held (the first grant counts).");
    ERASED = Counter("cart_erased_total", "Carts erased, by reason.",
        "reason" => ["request", "expired"]);
    SNAPSHOTS = Counter("cart_snapshots_total", "Cart snapshots written.");
    SNAPSHOTS_DROPPED = Counter("cart_snapshots_dropped_total",
        "Cart snapshots not written (the queue was full); the cart replays longer.");
    SNAPSHOT_BYTES = Histogram("cart_snapshot_bytes", "Size of the cart snapshots written.");
    WATCHERS = Gauge("cart_watchers", "Open watch streams on this node.");
    WATCHERS_REFUSED = Counter("cart_watchers_refused_total",
        "Watch streams refused at the --max-watchers bound.");
}
