//! Builds one node from its flags: store, catalogue, grains, cluster,
//! checkout and the HTTP app, with its three listeners bound. Nothing runs
//! yet; [`super::serve`] starts it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use cart_catalog::{Catalog, FileCatalog, HttpCatalog, HttpCatalogOptions, Markets, Resolver};
use cart_checkout::{Checkout, KlarnaClient, KlarnaConfig};
use cart_cluster::discovery::{Discovery, DnsPeers, StaticPeers};
use cart_cluster::kubernetes::KubernetesPeers;
use cart_cluster::tls::{ClusterTls, TlsFiles};
use cart_cluster::{Cluster, ClusterOptions, NodeAddr};
use cart_grain::{Clock, GrainRuntime, RuntimeOptions, SystemClock};
use cart_http::AppState;
use cart_http::auth::BearerToken;
use cart_store::EventStore;
use tokio::net::TcpListener;

use crate::config::{DiscoveryKind, ServeArgs};
use crate::stores::StoreSpec;

/// A node built and bound, not yet serving.
pub(super) struct Node {
    /// Where its events are kept.
    pub store: Arc<dyn EventStore>,
    /// Its grains.
    pub grains: Arc<GrainRuntime>,
    /// Its cluster face.
    pub cluster: Arc<Cluster>,
    /// The public HTTP face: storefront, checkout, probes.
    pub public: axum::Router,
    /// The internal HTTP face: carts by id, metrics, cluster view.
    pub internal_app: axum::Router,
    /// Set when shutdown begins: `/readyz` then says no.
    pub draining: Arc<AtomicBool>,
    /// The public listener (`--http-addr`).
    pub http: TcpListener,
    /// The internal listener (`--internal-addr`).
    pub internal: TcpListener,
    /// The CartActor and ControlPlane listeners.
    pub grpc: [TcpListener; 2],
}

/// Builds the node `args` describe, binding its ports.
pub(super) async fn build(
    args: &ServeArgs,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<Node> {
    let markets =
        Markets::new(args.markets.0.clone(), &args.default_country).map_err(anyhow::Error::msg)?;
    let resolver = Resolver::new(catalog(args).context("cannot load the catalogue")?, markets)
        .with_deliveries(args.delivery_options.clone());
    let store_spec = StoreSpec::parse(&args.store, &args.data_dir)?;
    let password = args.store_password_file.as_deref().map(secret_file).transpose()?;
    let store = store_spec
        .open(args.fsync, args.commit_wait, args.pg_pool_size, password, args.compact_above_bytes)
        .await?;

    let (http, http_addr) = bind(args.http_addr, "HTTP").await?;
    let (internal, internal_addr) = bind(args.internal_addr, "internal HTTP").await?;
    let (grpc, grpc_addr) = bind(args.grpc_addr, "CartActor gRPC").await?;
    let (control, control_addr) = bind(args.control_addr, "ControlPlane gRPC").await?;
    let me = NodeAddr {
        host: advertise_host(args),
        grpc_port: grpc_addr.port(),
        control_port: control_addr.port(),
    };

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut cluster_options = ClusterOptions::new(me.clone());
    let grains = GrainRuntime::new(
        Arc::clone(&store),
        resolver,
        Arc::clone(&clock),
        RuntimeOptions {
            idle_ttl: args.idle_ttl,
            max_grains: args.max_grains,
            max_watchers: args.max_watchers,
            node: format!("{me}#{}", cluster_options.incarnation),
            idempotency_window: args.idempotency_window,
            leased: true,
            snapshot_every: args.snapshot_every,
        },
    );
    cluster_options.tls = cluster_tls(args)?;
    cluster_options.ping_interval = args.ping_interval;
    cluster_options.max_misses = args.ping_misses;
    cluster_options.rpc_deadline = args.rpc_deadline;
    cluster_options.discovery_interval = args.discovery_interval;
    if args.lease < args.ping_interval + args.rpc_deadline {
        anyhow::bail!(
            "--lease {:?} is shorter than a ping round (--ping-interval {:?} + --rpc-deadline {:?}): the lease would lapse between rounds",
            args.lease,
            args.ping_interval,
            args.rpc_deadline
        );
    }
    cluster_options.lease = args.lease;
    cluster_options.store_id = store_identity(store.as_ref()).await?;
    let cluster =
        Cluster::new(cluster_options, Arc::clone(&grains), discovery(args, &me).await?, clock);

    let draining = Arc::new(AtomicBool::new(false));
    let state = app_state(args, &cluster, &store, &draining, metrics).await?;
    let token = internal_token(args)?;
    if token.is_none() && !args.internal_addr.ip().is_loopback() {
        tracing::warn!(%internal_addr, "the internal listener is reachable beyond loopback without --internal-token-file");
    }
    let internal_app = cart_http::internal(state.clone(), token);
    let public = cart_http::public(state);
    tracing::info!(
        %http_addr, %internal_addr, %grpc_addr, %control_addr, node = %me,
        store = %store_spec.redacted(), fsync = ?args.fsync, catalog = %args.catalog,
        "listening"
    );
    Ok(Node {
        store,
        grains,
        cluster,
        public,
        internal_app,
        draining,
        http,
        internal,
        grpc: [grpc, control],
    })
}

/// The cluster's TLS from the flags. Without it the gRPC ports may listen
/// only on loopback, unless `--insecure-cluster` says otherwise.
fn cluster_tls(args: &ServeArgs) -> anyhow::Result<Option<Arc<ClusterTls>>> {
    if let (Some(cert), Some(key), Some(ca)) =
        (&args.cluster_tls_cert, &args.cluster_tls_key, &args.cluster_tls_ca)
    {
        let files = TlsFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone() };
        let tls = ClusterTls::load(files).context("cannot use the cluster TLS files")?;
        tracing::info!(cert = %cert.display(), ca = %ca.display(), "node-to-node traffic uses mutual TLS");
        return Ok(Some(tls));
    }
    let exposed: Vec<SocketAddr> = [args.grpc_addr, args.control_addr]
        .into_iter()
        .filter(|addr| !addr.ip().is_loopback())
        .collect();
    if exposed.is_empty() {
        return Ok(None);
    }
    if !args.insecure_cluster {
        anyhow::bail!(
            "the gRPC ports listen beyond loopback ({}) without TLS, so anyone who reaches them \
             could act as a node: give --cluster-tls-cert, --cluster-tls-key and \
             --cluster-tls-ca, or --insecure-cluster on a network that is itself secured",
            exposed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        );
    }
    tracing::warn!(
        addrs = ?exposed,
        "--insecure-cluster: node-to-node traffic is plaintext and unauthenticated; anyone who \
         reaches the gRPC ports can act as a node"
    );
    Ok(None)
}

/// A secret kept in a file (as a mounted Kubernetes Secret): its contents
/// without surrounding whitespace. The error names the file, never the
/// contents.
fn secret_file(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the secret file {}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        anyhow::bail!("the secret file {} is empty", path.display());
    }
    Ok(secret.to_owned())
}

/// The internal listener's token, from `--internal-token-file`.
fn internal_token(args: &ServeArgs) -> anyhow::Result<Option<BearerToken>> {
    let Some(path) = &args.internal_token_file else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --internal-token-file {}", path.display()))?;
    let token = BearerToken::new(&text)
        .map_err(|why| anyhow::anyhow!("--internal-token-file {}: {why}", path.display()))?;
    Ok(Some(token))
}

/// What both HTTP faces serve from.
async fn app_state(
    args: &ServeArgs,
    cluster: &Arc<Cluster>,
    store: &Arc<dyn EventStore>,
    draining: &Arc<AtomicBool>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<AppState> {
    let ready = {
        let (cluster, draining, store) =
            (Arc::clone(cluster), Arc::clone(draining), Arc::clone(store));
        Arc::new(move || cluster.is_ready() && store.healthy() && !draining.load(Ordering::SeqCst))
    };
    let process = metrics_process::Collector::default();
    process.describe();
    let render = {
        let store = Arc::clone(store);
        Arc::new(move || {
            process.collect();
            let healthy = f64::from(u8::from(store.healthy()));
            metrics::gauge!(cart_store::families::STORE_HEALTHY.name).set(healthy);
            metrics.render()
        })
    };
    let status = {
        let cluster = Arc::clone(cluster);
        Arc::new(move || cluster.status())
    };
    let carts: Arc<dyn cart_grain::Carts> = cluster.carts();
    let checkout = match &args.klarna_url {
        Some(url) => {
            let client = KlarnaClient::new(KlarnaConfig {
                base_url: url.clone(),
                username: args.klarna_username.clone(),
                password: match &args.klarna_password_file {
                    Some(path) => secret_file(path)?,
                    None => args.klarna_password.clone(),
                },
                timeout: args.klarna_timeout,
            })?;
            Some(Arc::new(Checkout::new(Arc::clone(&carts), client, args.public_url.clone())))
        }
        None => None,
    };
    let secret = store
        .secret(cart_grain::mint::SECRET_NAME)
        .await
        .context("cannot read or make the cart-id key in the store")?;
    let ids = Arc::new(cart_grain::CartIdMint::new(&secret));
    let store = Arc::clone(store);
    Ok(AppState { carts, cluster: Some(status), ready, metrics: render, checkout, ids, store })
}

/// The event store's identity: the first bytes of a random value the store
/// keeps (made on first use), the same for every node that shares it.
async fn store_identity(store: &dyn cart_store::EventStore) -> anyhow::Result<String> {
    let id = store.secret("store-id").await.context("cannot read or make the store's identity")?;
    Ok(id[..8].iter().map(|b| format!("{b:02x}")).collect())
}

fn catalog(args: &ServeArgs) -> anyhow::Result<Arc<dyn Catalog>> {
    let spec = args.catalog.as_str();
    Ok(if spec == "sample" {
        Arc::new(FileCatalog::sample()?)
    } else if spec.starts_with("http://") || spec.starts_with("https://") {
        let mut options = HttpCatalogOptions::new(spec);
        options.timeout = args.catalog_timeout;
        Arc::new(HttpCatalog::new(options)?)
    } else {
        Arc::new(FileCatalog::from_path(Path::new(spec))?)
    })
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// The host peers reach this node at.
fn advertise_host(args: &ServeArgs) -> String {
    if let Some(host) = &args.advertise_host {
        return host.clone();
    }
    if let Ok(ip) = std::env::var("POD_IP") {
        return ip;
    }
    if !args.grpc_addr.ip().is_unspecified() {
        return args.grpc_addr.ip().to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

async fn discovery(args: &ServeArgs, me: &NodeAddr) -> anyhow::Result<Arc<dyn Discovery>> {
    Ok(match args.discovery {
        DiscoveryKind::Static => Arc::new(StaticPeers(args.peers.clone())),
        DiscoveryKind::Dns => Arc::new(DnsPeers {
            name: args.dns_name.clone().context("--discovery dns needs --dns-name")?,
            grpc_port: me.grpc_port,
            control_port: me.control_port,
        }),
        DiscoveryKind::Kubernetes => Arc::new(
            KubernetesPeers::in_cluster(
                args.k8s_namespace.as_deref(),
                &args.k8s_selector,
                me.grpc_port,
                me.control_port,
            )
            .await
            .map_err(anyhow::Error::msg)?,
        ),
    })
}
