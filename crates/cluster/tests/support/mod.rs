//! An in-process cluster: several nodes in one test process, each with its
//! own grain runtime, file store (all on one data directory, as nodes on a
//! shared volume) and gRPC server on a loopback port, reaching each other
//! over real sockets. Time is injected: every node reads one
//! [`ManualClock`]. With [`Harness::start_tls`] they talk mutual TLS, with
//! certificates made for the test. The member views are set by the test ([`Harness::join`])
//! unless the node's loops run ([`Harness::start_loops`]), so routing
//! decisions are deterministic.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cart_catalog::{FileCatalog, Markets, Resolver};
use cart_cluster::discovery::Discovery;
use cart_cluster::placement;
use cart_cluster::tls::{ClusterTls, TlsFiles};
use cart_cluster::{Cluster, ClusterOptions, NodeAddr};
use cart_domain::CartCommand;
use cart_domain::proto::AddRequest;
use cart_grain::{CartId, GrainRuntime, ManualClock, MutateRequest, OwnedTask, RuntimeOptions};
use cart_store::{FileStore, FileStoreOptions, FsyncPolicy};
use cart_testkit::certs::{NodeFiles, TestCa};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A SKU of the sample catalogue.
pub const SKU: &str = "861200";

/// One node of the harness.
pub struct Node {
    /// Where peers reach it.
    pub addr: NodeAddr,
    /// Its cluster face (routing, membership).
    pub cluster: Arc<Cluster>,
    /// Its grains.
    pub grains: Arc<GrainRuntime>,
    /// Its TLS configuration, when the harness has a CA.
    pub tls: Option<Arc<ClusterTls>>,
    stop_server: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), cart_cluster::cluster::ServeError>>>,
    loops: Vec<OwnedTask>,
}

impl Node {
    /// Stops its gRPC server (peers then see refused connections) and
    /// waits until it has stopped.
    pub async fn stop_serving(&mut self) {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server");
        }
    }
}

/// Hosts the nodes' discovery offers; the test may change it. Counts how
/// often it was asked (discovery rounds, over all nodes).
#[derive(Default)]
pub struct SharedDiscovery(pub Mutex<Vec<NodeAddr>>, pub std::sync::atomic::AtomicU64);

#[async_trait]
impl Discovery for SharedDiscovery {
    async fn peers(&self) -> Result<Vec<NodeAddr>, String> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(self.0.lock().unwrap().clone())
    }
}

/// Nodes in one process over one data directory.
pub struct Harness {
    /// The nodes, in the order they were started.
    pub nodes: Vec<Node>,
    /// The clock every node reads.
    pub clock: Arc<ManualClock>,
    /// What discovery offers every node.
    pub discovery: Arc<SharedDiscovery>,
    /// The shared data directory.
    pub dir: tempfile::TempDir,
    /// The cluster CA when the nodes talk mutual TLS.
    pub ca: Option<TestCa>,
    /// The ping interval of nodes added from now on.
    pub ping_interval: Duration,
    /// Whether nodes added from now on serve only under their lease (as
    /// real nodes do); otherwise always, so tests can set views by hand.
    pub leased: bool,
}

fn resolver() -> Resolver {
    Resolver::new(Arc::new(FileCatalog::sample().unwrap()), Markets::default())
}

/// Opens another store on `dir` (another writer of the same log).
pub fn store(dir: &std::path::Path) -> Arc<FileStore> {
    Arc::new(FileStore::open(FileStoreOptions::new(dir, FsyncPolicy::Never)).unwrap())
}

/// A grain runtime named `node` over its own store on `dir`, with no
/// cluster: a writer outside everyone's view (a partitioned node).
pub fn lone_runtime(
    dir: &std::path::Path,
    node: &str,
    clock: Arc<ManualClock>,
) -> Arc<GrainRuntime> {
    GrainRuntime::new(
        store(dir),
        resolver(),
        clock,
        RuntimeOptions { node: node.into(), ..RuntimeOptions::default() },
    )
}

impl Harness {
    /// Starts `n` serving nodes, each knowing only itself.
    pub async fn start(n: usize) -> Harness {
        Self::start_with(n, None).await
    }

    /// Starts `n` nodes that talk mutual TLS with certificates from `ca`.
    pub async fn start_tls(n: usize, ca: TestCa) -> Harness {
        Self::start_with(n, Some(ca)).await
    }

    /// Starts `n` nodes that serve only under the lease their own ping
    /// rounds grant (the loops must run: see [`Harness::converge`]).
    pub async fn start_leased(n: usize) -> Harness {
        Self::start_with_lease(n, None, true).await
    }

    async fn start_with(n: usize, ca: Option<TestCa>) -> Harness {
        Self::start_with_lease(n, ca, false).await
    }

    async fn start_with_lease(n: usize, ca: Option<TestCa>, leased: bool) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let discovery = Arc::new(SharedDiscovery::default());
        let mut harness = Harness {
            nodes: Vec::new(),
            clock,
            discovery,
            dir,
            ca,
            ping_interval: Duration::from_millis(50),
            leased,
        };
        for _ in 0..n {
            harness.add_node().await;
        }
        harness
    }

    /// Starts one more serving node (in nobody's view yet).
    pub async fn add_node(&mut self) -> usize {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let node = self.node_on(listener).await;
        self.discovery.0.lock().unwrap().push(node.addr.clone());
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Stops node `i` (server and loops) and starts a new process of it on
    /// the same address: a restart, with a new incarnation.
    pub async fn restart(&mut self, i: usize) {
        self.nodes[i].stop_serving().await;
        for task in std::mem::take(&mut self.nodes[i].loops) {
            task.stop().await;
        }
        let port = self.nodes[i].addr.grpc_port;
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        self.nodes[i] = self.node_on(listener).await;
    }

    async fn node_on(&mut self, listener: TcpListener) -> Node {
        let port = listener.local_addr().unwrap().port();
        let addr = NodeAddr { host: "127.0.0.1".into(), grpc_port: port, control_port: port };
        let mut options = ClusterOptions::new(addr.clone());
        let grains = GrainRuntime::new(
            store(self.dir.path()),
            resolver(),
            self.clock.clone(),
            RuntimeOptions {
                node: format!("{addr}#{}", options.incarnation),
                leased: self.leased,
                ..RuntimeOptions::default()
            },
        );
        // Generous deadlines: a loaded CI machine must not turn a slow call
        // into a routing decision the test did not ask for.
        options.rpc_deadline = Duration::from_secs(5);
        options.ping_interval = self.ping_interval;
        options.discovery_interval = Duration::from_millis(100);
        if let Some(ca) = &self.ca {
            let certs = self.dir.path().join(format!("certs-{port}"));
            options.tls = Some(ClusterTls::load(tls_files(ca.write_node(&certs, "node"))).unwrap());
        }
        let tls = options.tls.clone();
        let cluster =
            Cluster::new(options, Arc::clone(&grains), self.discovery.clone(), self.clock.clone());
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = {
            let cluster = Arc::clone(&cluster);
            tokio::spawn(async move {
                cluster
                    .serve(listener, async move {
                        let _ = stopped.await;
                    })
                    .await
            })
        };
        Node {
            addr,
            cluster,
            grains,
            tls,
            stop_server: Some(stop_server),
            server: Some(server),
            loops: Vec::new(),
        }
    }

    /// Makes every listed node a member of every listed node's view, as a
    /// successful ping would.
    pub fn join(&self, nodes: &[usize]) {
        let now = cart_grain::Clock::now_ms(self.clock.as_ref());
        for &i in nodes {
            let membership = self.nodes[i].cluster.membership();
            for &j in nodes {
                if i != j {
                    let peer = &self.nodes[j].addr;
                    membership.learn([peer.clone()], now);
                    let incarnation = self.nodes[j].cluster.membership().incarnation();
                    membership.ping_ok(peer, now, incarnation);
                }
            }
        }
    }

    /// Runs node `i`'s discovery, ping and view loops.
    pub fn start_loops(&mut self, i: usize) {
        let loops = self.nodes[i].cluster.spawn_loops();
        self.nodes[i].loops = loops;
    }

    /// Starts the loops of every node and waits until each sees all of
    /// them (a converged cluster).
    pub async fn converge(&mut self) {
        for i in 0..self.nodes.len() {
            self.start_loops(i);
        }
        let all = self.nodes.len();
        eventually("every node to see every other", Duration::from_secs(10), || {
            self.nodes
                .iter()
                .all(|n| n.cluster.membership().view().len() == all && n.cluster.has_lease())
        })
        .await;
    }

    /// The addresses of `nodes`, as a view.
    pub fn view(&self, nodes: &[usize]) -> Vec<NodeAddr> {
        let mut view: Vec<NodeAddr> = nodes.iter().map(|&i| self.nodes[i].addr.clone()).collect();
        view.sort();
        view
    }

    /// Which of `nodes` owns `cart` in their view, skipping `avoid`.
    pub fn owner_among(&self, cart: &CartId, nodes: &[usize], avoid: &[usize]) -> usize {
        let view = self.view(nodes);
        let avoid: Vec<NodeAddr> = avoid.iter().map(|&i| self.nodes[i].addr.clone()).collect();
        let owner = placement::owner(cart.as_str(), &view, &avoid).expect("an owner");
        self.nodes.iter().position(|n| n.addr == *owner).expect("a node of the harness")
    }

    /// A fresh cart id owned by `owner` in the view of `nodes`, whose next
    /// node (with `owner` skipped) is `next` when given.
    pub fn cart_owned_by(&self, owner: usize, next: Option<usize>, nodes: &[usize]) -> CartId {
        (0..10_000)
            .map(|n| CartId::parse(&format!("harness-{owner}-{n}")).unwrap())
            .find(|id| {
                self.owner_among(id, nodes, &[]) == owner
                    && next.is_none_or(|next| self.owner_among(id, nodes, &[owner]) == next)
            })
            .expect("some cart id hashes to that node")
    }

    /// Moves the clock past the takeover wait: every node silent since now
    /// has surely lost its lease, so its carts may be taken over.
    pub fn outlast_leases(&self) {
        let wait =
            self.nodes.first().map_or(Duration::ZERO, |n| n.cluster.options().takeover_wait());
        self.clock.advance(wait.as_millis() as u64);
    }

    /// Whether node `i` holds `cart` active.
    pub fn resident(&self, i: usize, cart: &CartId) -> bool {
        self.nodes[i].grains.resident_ids().contains(cart)
    }
}

/// The harness's certificate files as the cluster takes them.
pub fn tls_files(files: NodeFiles) -> TlsFiles {
    TlsFiles { cert: files.cert, key: files.key, ca: files.ca }
}

/// Adds `quantity` of [`SKU`].
pub fn add(quantity: i32) -> MutateRequest {
    MutateRequest {
        mutations: vec![CartCommand::AddSku(AddRequest {
            sku: SKU.into(),
            quantity,
            ..Default::default()
        })],
        ..Default::default()
    }
}

/// The cart's JSON, parsed.
pub fn json(state: &cart_grain::CartState) -> serde_json::Value {
    serde_json::from_slice(&state.to_json()).unwrap()
}

/// Polls `condition` every 10 ms until it holds; panics after `within`.
pub async fn eventually(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
