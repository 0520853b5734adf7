//! Flags of `cart-actor serve`. Every flag has an environment variable twin.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cart_catalog::market::MarketList;
use cart_store::FsyncPolicy;
use clap::{Args, ValueEnum};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How peers are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiscoveryKind {
    /// The fixed `--peers` list (empty: a single node).
    Static,
    /// Re-resolve `--dns-name` (a headless service) periodically.
    Dns,
    /// Watch the pods matching `--k8s-selector` in the pod's namespace.
    Kubernetes,
}

/// Settings of the cart service.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the public HTTP listener: the storefront, checkout pages
    /// and callbacks, `/healthz` and `/readyz`.
    #[arg(long, env = "CART_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Address of the internal HTTP listener: carts by id (`/api/carts`),
    /// `/metrics` and `/api/cluster`, for trusted services and operators.
    #[arg(long, env = "CART_INTERNAL_ADDR", default_value = "127.0.0.1:8090")]
    pub internal_addr: SocketAddr,

    /// A file holding the token the internal listener requires as
    /// `Authorization: Bearer <token>` (at least 16 visible characters).
    #[arg(long, env = "CART_INTERNAL_TOKEN_FILE")]
    pub internal_token_file: Option<PathBuf>,

    /// Longest a request head may take to arrive on either HTTP listener,
    /// and longest an idle keep-alive connection stays open.
    #[arg(long, env = "CART_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub header_timeout: Duration,

    /// Longest a request body may take to arrive.
    #[arg(long, env = "CART_BODY_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub body_timeout: Duration,

    /// Most connections open at once on each HTTP listener; one more is
    /// answered 503 with Retry-After and closed.
    #[arg(long, env = "CART_MAX_CONNECTIONS", default_value_t = 16_384, value_parser = parse_nonzero::<usize>)]
    pub max_connections: usize,

    /// After SIGTERM, how long the node stays up (unready, still serving)
    /// before it leaves the cluster and drains: long enough for load
    /// balancers and Kubernetes endpoints to stop sending to it (a few
    /// seconds there; 0 when nothing routes by readiness).
    #[arg(long, env = "CART_DRAIN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub drain_delay: Duration,

    /// How long an `Idempotency-Key` protects its request: a retry with
    /// the same key within it is answered, never applied again.
    #[arg(long, env = "CART_IDEMPOTENCY_WINDOW", default_value = "24h", value_parser = parse_positive_duration)]
    pub idempotency_window: Duration,

    /// Address the CartActor gRPC service listens on. Loopback by
    /// default: a cluster listens beyond it only with `--cluster-tls-*`
    /// (or `--insecure-cluster`).
    #[arg(long, env = "CART_GRPC_ADDR", default_value = "127.0.0.1:1337")]
    pub grpc_addr: SocketAddr,

    /// Address the ControlPlane gRPC service listens on.
    #[arg(long, env = "CART_CONTROL_ADDR", default_value = "127.0.0.1:1338")]
    pub control_addr: SocketAddr,

    /// This node's certificate (PEM, optionally followed by intermediates)
    /// for mutual TLS with the other nodes. With `--cluster-tls-key` and
    /// `--cluster-tls-ca`; the files are re-read when they change.
    #[arg(long, env = "CART_CLUSTER_TLS_CERT", requires_all = ["cluster_tls_key", "cluster_tls_ca"])]
    pub cluster_tls_cert: Option<PathBuf>,

    /// The private key of `--cluster-tls-cert` (PEM).
    #[arg(long, env = "CART_CLUSTER_TLS_KEY", requires_all = ["cluster_tls_cert", "cluster_tls_ca"])]
    pub cluster_tls_key: Option<PathBuf>,

    /// The cluster's CA (PEM): both gRPC ports accept only callers with a
    /// certificate it signed, and peers must present one. Dedicate it to
    /// the cluster: whoever holds a certificate from it is a node.
    #[arg(long, env = "CART_CLUSTER_TLS_CA", requires_all = ["cluster_tls_cert", "cluster_tls_key"])]
    pub cluster_tls_ca: Option<PathBuf>,

    /// Let the gRPC ports listen beyond loopback without TLS: anyone who
    /// reaches them can then act as a node. Only for networks that are
    /// themselves authenticated and encrypted.
    #[arg(long, env = "CART_INSECURE_CLUSTER")]
    pub insecure_cluster: bool,

    /// Host (name or IP) other nodes reach this node at. Defaults to
    /// `$POD_IP`, else the listen IP when it is not a wildcard, else the
    /// host name.
    #[arg(long, env = "CART_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,

    /// How peers are found.
    #[arg(long, env = "CART_DISCOVERY", value_enum, default_value_t = DiscoveryKind::Static)]
    pub discovery: DiscoveryKind,

    /// Peers for `--discovery static`, comma separated, each
    /// `host[:grpc_port[:control_port]]`.
    #[arg(long, env = "CART_PEERS", value_delimiter = ',')]
    pub peers: Vec<cart_cluster::NodeAddr>,

    /// Name to resolve for `--discovery dns`; every address is a peer on the
    /// default ports (or those of `--grpc-addr`/`--control-addr`).
    #[arg(long, env = "CART_DNS_NAME")]
    pub dns_name: Option<String>,

    /// Label selector of the cart-actor pods for `--discovery kubernetes`.
    #[arg(long, env = "CART_K8S_SELECTOR", default_value = "app=cart-actor")]
    pub k8s_selector: String,

    /// Namespace to watch for `--discovery kubernetes`; defaults to the pod's.
    #[arg(long, env = "CART_K8S_NAMESPACE")]
    pub k8s_namespace: Option<String>,

    /// How often every member is pinged.
    #[arg(long, env = "CART_PING_INTERVAL", default_value = "300ms", value_parser = parse_positive_duration)]
    pub ping_interval: Duration,

    /// Missed pings in a row before a member is evicted.
    #[arg(long, env = "CART_PING_MISSES", default_value_t = 3, value_parser = parse_nonzero::<u32>)]
    pub ping_misses: u32,

    /// Deadline of every node-to-node call.
    #[arg(long, env = "CART_RPC_DEADLINE", default_value = "400ms", value_parser = parse_positive_duration)]
    pub rpc_deadline: Duration,

    /// How long a ping round that reached a majority of the cluster lets
    /// this node serve its carts. At least one ping interval plus the RPC
    /// deadline; a dead node's carts move this plus about 0.8 s after it
    /// was last heard from.
    #[arg(long, env = "CART_LEASE", default_value = "1s", value_parser = parse_positive_duration)]
    pub lease: Duration,

    /// How often discovery is polled and the member view negotiated.
    #[arg(long, env = "CART_DISCOVERY_INTERVAL", default_value = "2s", value_parser = parse_positive_duration)]
    pub discovery_interval: Duration,

    /// Event store: `file` (the log in `--data-dir`) or a PostgreSQL URL
    /// (`postgres://user:password@host:port/database`), shared by all nodes.
    /// `sslmode=require` or `sslmode=verify-full` (with `sslrootcert=<CA
    /// file>`, else the system's CAs) in the URL's query secure the
    /// connection with TLS. The value never shows in `--help`.
    #[arg(long, env = "CART_STORE", default_value = "file", hide_env_values = true)]
    pub store: String,

    /// A file holding PostgreSQL's password, so the URL needs none.
    #[arg(long, env = "CART_STORE_PASSWORD_FILE")]
    pub store_password_file: Option<PathBuf>,

    /// Connections to PostgreSQL per node.
    #[arg(long, env = "CART_PG_POOL_SIZE", default_value_t = 8, value_parser = parse_nonzero::<usize>)]
    pub pg_pool_size: usize,

    /// Directory of the event log.
    #[arg(long, env = "CART_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Product catalogue: `sample` (the shipped sample catalogue), a path to a
    /// JSON file of items, or the base URL of the catalogue service
    /// (`http://...`, queried at `/api/by-sku/{sku}`).
    #[arg(long, env = "CART_CATALOG", default_value = "sample")]
    pub catalog: String,

    /// Timeout of one catalogue lookup over HTTP.
    #[arg(long, env = "CART_CATALOG_TIMEOUT", default_value = "1s", value_parser = parse_positive_duration)]
    pub catalog_timeout: Duration,

    /// When appends reach the disk: `always` (fdatasync before every
    /// acknowledgement, with group commit), `batch` or `batch:<ms>` (sync at
    /// least every few ms), or `never`.
    #[arg(long, env = "CART_FSYNC", default_value = "always")]
    pub fsync: FsyncPolicy,

    /// With `--fsync always`, the longest the log waits after a sync for the
    /// clients it just answered to write again, so that their writes share
    /// the next sync instead of each waiting for two. It never waits longer
    /// than the last sync took (microseconds on a fast disk), stops when
    /// writes pause, and never delays a store that was idle. `0ms` turns it
    /// off.
    #[arg(long, env = "CART_COMMIT_WAIT", default_value = "2ms", value_parser = parse_duration)]
    pub commit_wait: Duration,

    /// Base URL of the Klarna Checkout v3 API (Klarna's and Kustom's hosts
    /// differ, e.g. `https://api.playground.kustom.co`). Checkout is off
    /// without it.
    #[arg(long, env = "CART_KLARNA_URL", value_parser = parse_http_url)]
    pub klarna_url: Option<String>,

    /// Klarna API username.
    #[arg(long, env = "KLARNA_USERNAME", default_value = "", hide_env_values = true)]
    pub klarna_username: String,

    /// Klarna API password.
    #[arg(
        long,
        env = "KLARNA_PASSWORD",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub klarna_password: String,

    /// A file holding the Klarna API password (instead of
    /// `--klarna-password`).
    #[arg(long, env = "KLARNA_PASSWORD_FILE", conflicts_with = "klarna_password")]
    pub klarna_password_file: Option<PathBuf>,

    /// Timeout of one call to Klarna.
    #[arg(long, env = "CART_KLARNA_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub klarna_timeout: Duration,

    /// Public base URL of this service, as shoppers and Klarna reach it: the
    /// checkout, confirmation and terms pages and the push and validation
    /// callbacks are built from it.
    #[arg(long, env = "CART_PUBLIC_URL", default_value = "http://localhost:8080", value_parser = parse_http_url)]
    pub public_url: String,

    /// Markets as `country:CURRENCY:vat_basis_points`, comma separated.
    #[arg(long, env = "CART_MARKETS", default_value = "se:SEK:2500,no:NOK:2500")]
    pub markets: MarketList,

    /// Delivery providers and their fees, decided by this service: a list
    /// of `provider:fee[:vat_basis_points][:pickup]` (fee in minor units
    /// including VAT; `pickup` if it delivers to pickup points), or the
    /// path of a JSON file of `[{"provider", "fee", "vatRate"?,
    /// "pickupPoints"?}]`. A storefront naming another provider is refused.
    #[arg(long, env = "CART_DELIVERY_OPTIONS", default_value = cart_catalog::delivery::DEFAULT_DELIVERY_OPTIONS, value_parser = cart_catalog::DeliveryOptions::parse)]
    pub delivery_options: cart_catalog::DeliveryOptions,

    /// Market used when a request names no country.
    #[arg(long, env = "CART_DEFAULT_COUNTRY", default_value = "se")]
    pub default_country: String,

    /// A cart's state is snapshotted after this many events (and when it is
    /// passivated), so activation replays at most this many; 0: never.
    #[arg(long, env = "CART_SNAPSHOT_EVERY", default_value_t = 50)]
    pub snapshot_every: u64,

    /// An idle cart is erased (answers 404, its data removed) this long
    /// after its last change.
    #[arg(long, env = "CART_EXPIRE_AFTER", default_value = "30days", value_parser = parse_positive_duration)]
    pub expire_after: Duration,

    /// A cart whose order completed is erased this long after its last
    /// change.
    #[arg(long, env = "CART_KEEP_COMPLETED", default_value = "90days", value_parser = parse_positive_duration)]
    pub keep_completed: Duration,

    /// How often each node looks for carts to expire.
    #[arg(long, env = "CART_EXPIRY_SWEEP_EVERY", default_value = "10m", value_parser = parse_positive_duration)]
    pub expiry_sweep_every: Duration,

    /// The file store compacts by itself once its log is this large and
    /// has doubled since its last compaction; 0 disables it (then only
    /// `POST /api/admin/compact` compacts).
    #[arg(long, env = "CART_COMPACT_ABOVE_BYTES", default_value_t = 64 << 20)]
    pub compact_above_bytes: u64,

    /// A cart unused this long is passivated (unloaded from memory).
    #[arg(long, env = "CART_IDLE_TTL", default_value = "15m", value_parser = parse_positive_duration)]
    pub idle_ttl: Duration,

    /// Most carts resident in memory; beyond it idle carts are evicted, and
    /// when none is idle requests get 503 with Retry-After.
    #[arg(long, env = "CART_MAX_GRAINS", default_value_t = 200_000, value_parser = parse_nonzero::<usize>)]
    pub max_grains: usize,

    /// Most live-cart watchers (SSE streams and gRPC watch streams) at once;
    /// beyond it a new watch gets 503 with Retry-After.
    #[arg(long, env = "CART_MAX_WATCHERS", default_value_t = 10_000, value_parser = parse_nonzero::<usize>)]
    pub max_watchers: usize,

    /// How long shutdown waits for in-flight requests.
    #[arg(long, env = "CART_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub shutdown_timeout: Duration,

    /// Log format.
    #[arg(long, env = "CART_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, in `tracing` env-filter syntax.
    #[arg(long, env = "CART_LOG", default_value = "info")]
    pub log: String,
}

/// [`parse_duration`], refusing zero.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than zero".into()),
        d => Ok(d),
    }
}

/// Parses a count that must be at least one (a limit or pool of zero
/// would refuse everything or never decide).
pub fn parse_nonzero<T: std::str::FromStr + Default + PartialEq>(s: &str) -> Result<T, String> {
    match s.trim().parse::<T>() {
        Ok(n) if n == T::default() => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number in range")),
    }
}

/// Parses an absolute `http://` or `https://` URL with a host, kept as
/// given.
pub fn parse_http_url(s: &str) -> Result<String, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(s.to_owned()),
        (Some("http" | "https"), _) => Err(format!("`{s}` has no host")),
        _ => Err(format!("`{s}` is not an http:// or https:// URL")),
    }
}

/// Parses a duration with `humantime` (`250ms`, `10s`, `15m`, `2h`,
/// `1h 30m`), or a bare number of seconds. Overflow is an error, not a wrap.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("bad duration {s:?}: too large"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("bad duration {s:?}: {e} (use e.g. 250ms, 10s, 15m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5000000000000000000h").is_err(), "overflow must not wrap");
        assert!(parse_duration("99999999999999999999999").is_err());
    }
}
