//! The cluster's metric families (see `cart_metrics`).

cart_metrics::families! {
    GRPC_MUTATE_CALLS = Counter("cart_grpc_mutate_calls_total",
        "Mutate and MutateBatch calls served (a batch counts once).");
    GRPC_MUTATE_DURATION = Histogram("cart_grpc_mutate_duration_seconds",
        "Time a Mutate or MutateBatch call took to serve.");
    GRPC_MUTATE_ERRORS = Counter("cart_grpc_mutate_errors_total",
        "Mutate calls that failed (the call, or a mutation in it, 5xx).");
    GRPC_MUTATE_BATCH = Histogram("cart_grpc_mutate_batch_size", "Mutations in one MutateBatch call.");
    GRPC_STATE_CALLS = Counter("cart_grpc_state_calls_total",
        "GetState and Erase calls served.");
    GRPC_STATE_DURATION = Histogram("cart_grpc_state_duration_seconds",
        "Time a GetState or Erase call took to serve.");
    GRPC_CONTROL_CALLS = Counter("cart_grpc_control_calls_total",
        "ControlPlane calls served, by method.",
        "method" => ["Ping", "Negotiate", "GetCartIds", "ConfirmOwner", "Closing", "unknown"]);
    GRPC_CONTROL_DURATION = Histogram("cart_grpc_control_duration_seconds",
        "Time a ControlPlane call took to serve, by method.",
        "method" => ["Ping", "Negotiate", "GetCartIds", "ConfirmOwner", "Closing", "unknown"]);
    GRPC_CONTROL_ERRORS = Counter("cart_grpc_control_errors_total",
        "ControlPlane calls that failed, by method.",
        "method" => ["Ping", "Negotiate", "GetCartIds", "ConfirmOwner", "Closing", "unknown"]);
    GRPC_EXPIRED = Counter("cart_grpc_expired_total",
        "Forwarded mutations that arrived after their sender had given up; not applied.");
    REMOTE_HOSTS = Gauge("cart_remote_hosts", "Other members in this node's view of the cluster.");
    IN_MAJORITY = Gauge("cart_cluster_in_majority",
        "1 while this node reaches a majority of the cluster, else 0.");
    TLS_REFUSED = Counter("cart_cluster_tls_refused_total",
        "Cluster connections refused before TLS was up, by reason.",
        "reason" => ["busy", "handshake", "timeout"]);
    WATCH_FOLLOWED = Gauge("cart_watch_followed_carts",
        "Carts this node follows on their owner for its own watchers.");
    WATCH_STATES_SENT = Counter("cart_watch_states_sent_total",
        "Cart states sent to other nodes' followers.");
    FORWARD_DURATION = Histogram("cart_forward_duration_seconds",
        "Time a call to the cart's owner took, seen from the node that forwarded it, by call.",
        "call" => ["get", "mutate", "erase"]);
    FORWARD_ERRORS = Counter("cart_forward_errors_total",
        "Calls to the cart's owner that did not get an answer, by call and reason: refused \
         (nothing was sent; the next node is asked) or failed (timeout, reset).",
        "call" => ["get", "mutate", "erase"], "reason" => ["refused", "failed"]);
}
