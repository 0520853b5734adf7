//! The store's metric families (see `cart_metrics`).

cart_metrics::families! {
    LOG_FSYNCS = Counter("cart_log_fsyncs_total",
        "fdatasync calls on the event log; each makes a whole commit batch durable.");
    LOG_FSYNC_DURATION = Histogram("cart_log_fsync_duration_seconds",
        "Time one fdatasync of the event log took.");
    LOG_FSYNC_BATCH = Histogram("cart_log_fsync_batch_size",
        "Appends made durable together: by one sync (file store) or one commit (PostgreSQL).");
    LOG_BYTES = Gauge("cart_log_bytes",
        "Bytes the event log takes on disk: its compacted file and its segments.");
    LOG_SEGMENTS = Gauge("cart_log_segments",
        "Files the event log is kept in: its compacted file (if any) and its segments.");
    LOG_CARTS = Gauge("cart_log_carts", "Carts the event log holds, resident or not.");
    LOG_OPEN_DURATION = Gauge("cart_log_open_duration_seconds",
        "Time the event log took to open: its index checkpoint read and the log after it scanned.");
    LOG_CHECKPOINT_BYTES = Gauge("cart_log_checkpoint_bytes",
        "Size of the latest index checkpoint written.");
    LOG_COMPACTIONS = Counter("cart_log_compactions_total", "Compactions of the event log finished.");
    LOG_COMPACTION_DURATION = Histogram("cart_log_compaction_duration_seconds",
        "Time one compaction took, from its start to the switch to the new log.");
    LOG_COMPACTION_PAUSE = Histogram("cart_log_compaction_pause_seconds",
        "Time a compaction held appends back: its seal of the active segment, or its switch to the new log.");
    PG_COMMIT_DURATION = Histogram("cart_pg_commit_duration_seconds",
        "Time one PostgreSQL commit batch took.");
    STORE_HEALTHY = Gauge("cart_store_healthy",
        "1 while the event store accepts writes, 0 once it refuses them (a failed sync or write).");
}
