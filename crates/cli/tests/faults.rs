//! The fault suite: three real nodes (mutual TLS, each in a network
//! namespace of its own), ten clients through a load balancer that lists
//! only ready nodes, the checker of `support/checker.rs`, and one nemesis
//! per run: a partition of one node, SIGKILL, SIGSTOP/SIGCONT, SIGTERM of
//! every node back to back (rolling restart), and a PostgreSQL restart; on
//! the file store (a shared directory) and on PostgreSQL.
//!
//! Each run asserts the targets of docs/ARCHITECTURE.md ("Ownership"): no
//! acknowledged add lost, none applied twice, no forked or divergent log,
//! no stale read, and the nemesis' own (majority serves during a
//! partition, minority refuses quickly, SIGKILL failover under 3 s, a
//! rolling restart fails nothing). `CART_FAULTS_LONG=1` runs each for 40 s
//! (the figures in docs/BENCHMARKS.md); by default a run lasts about 12 s.
//! Needs root (`ip netns`). Runs are serialised: each takes both cores.

mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cart_cluster::{NodeAddr, placement};
use cart_store::{EventStore, FileStore, FileStoreOptions, FsyncPolicy, PgStore, PgStoreOptions};
use cart_testkit::certs::TestCa;
use support::checker::{self, Attempt, Clients, Lb, Outcome, Verdict};
use support::net::Net;
use support::{Server, client, wait_until};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const NODES: usize = 3;
const CARTS: usize = 50;
const CLIENTS: usize = 10;
/// The node the nemesis strikes (0-based; node 3 of the namespaces).
const VICTIM: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Nemesis {
    Partition,
    Kill,
    Pause,
    Rolling,
    StoreRestart,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Store {
    File,
    Postgres,
}

/// When the fault starts and how long it lasts, and the whole run.
struct Timing {
    fault_at: Duration,
    fault_for: Duration,
    total: Duration,
}

fn timing() -> Timing {
    if std::env::var("CART_FAULTS_LONG").is_ok_and(|v| v == "1") {
        Timing {
            fault_at: Duration::from_secs(10),
            fault_for: Duration::from_secs(20),
            total: Duration::from_secs(40),
        }
    } else {
        Timing {
            fault_at: Duration::from_secs(3),
            fault_for: Duration::from_secs(5),
            total: Duration::from_secs(12),
        }
    }
}

/// Each running node's public and internal URL, by node.
type Endpoints = Arc<Mutex<Vec<Option<(String, String)>>>>;

/// Three nodes, their network, store and load balancer.
struct Fleet {
    net: Net,
    ca: TestCa,
    data: PathBuf,
    store: String,
    pg: Option<cart_testkit::PgServer>,
    nodes: Vec<Option<Server>>,
    /// What the balancer's readiness poller checks: each running node's
    /// public and internal URL.
    endpoints: Endpoints,
    lb: Arc<Lb>,
    /// Log lines of every node process that has ended, by node.
    logs: Vec<Vec<String>>,
    _dir: tempfile::TempDir,
}

impl Fleet {
    fn start(store: Store) -> Fleet {
        let net = Net::new(NODES);
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (pg, store) = match store {
            Store::File => (None, "file".to_owned()),
            Store::Postgres => {
                let pg = cart_testkit::PgServer::start_with(cart_testkit::PgSetup {
                    listen: Some(net.host()),
                    ..cart_testkit::PgSetup::default()
                })
                .expect("PostgreSQL starts");
                let url = format!("postgres://postgres@{}:{}/postgres", net.host(), pg.port);
                (Some(pg), url)
            }
        };
        let mut fleet = Fleet {
            net,
            ca: TestCa::new("faults"),
            data,
            store,
            pg,
            nodes: (0..NODES).map(|_| None).collect(),
            endpoints: Arc::new(Mutex::new(vec![None; NODES])),
            lb: Lb::new(NODES),
            logs: vec![Vec::new(); NODES],
            _dir: dir,
        };
        for i in 0..NODES {
            fleet.start_node(i);
        }
        fleet
    }

    fn addr(&self, i: usize) -> String {
        format!("{}:1337:1338", self.net.addr(i + 1))
    }

    /// Starts node `i` (again), on its address, knowing the others.
    fn start_node(&mut self, i: usize) {
        let host = self.net.addr(i + 1);
        let peers: Vec<String> = (0..NODES).filter(|j| *j != i).map(|j| self.addr(j)).collect();
        let (grpc, control) = (format!("{host}:1337"), format!("{host}:1338"));
        let peers = peers.join(",");
        let args = [
            "--grpc-addr",
            &grpc,
            "--control-addr",
            &control,
            "--peers",
            &peers,
            "--store",
            &self.store,
            "--drain-delay",
            "1s",
        ];
        let ns = self.net.ns(i + 1);
        let server = tokio::task::block_in_place(|| {
            Server::start_tls_at(Some(&ns), &host, &self.data, &self.ca, &args)
        });
        self.endpoints.lock().unwrap()[i] = Some((server.url.clone(), server.internal_url.clone()));
        self.nodes[i] = Some(server);
    }

    fn node(&self, i: usize) -> &Server {
        self.nodes[i].as_ref().expect("node running")
    }

    fn internal_urls(&self) -> Vec<String> {
        self.nodes.iter().flatten().map(|n| n.internal_url.clone()).collect()
    }

    /// The balancer's readiness poller: lists a node while its `/readyz`
    /// answers 200 (as Kubernetes endpoints do), every 100 ms.
    fn spawn_poller(&self) -> tokio::task::JoinHandle<()> {
        let (endpoints, lb) = (Arc::clone(&self.endpoints), Arc::clone(&self.lb));
        tokio::spawn(async move {
            let http = client();
            loop {
                let now: Vec<Option<(String, String)>> = endpoints.lock().unwrap().clone();
                for (i, e) in now.into_iter().enumerate() {
                    let listed = match e {
                        Some((public, internal)) => {
                            let ready = http
                                .get(format!("{public}/readyz"))
                                .timeout(Duration::from_millis(300))
                                .send()
                                .await
                                .is_ok_and(|r| r.status() == 200);
                            ready.then_some(internal)
                        }
                        None => None,
                    };
                    lb.set(i, listed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    /// Waits until every node sees all three and holds its lease (ready).
    async fn converged(&self) {
        let http = client();
        wait_until("the cluster to converge", Duration::from_secs(30), || async {
            for n in self.nodes.iter().flatten() {
                let Ok(r) = http.get(format!("{}/api/cluster", n.internal_url)).send().await else {
                    return false;
                };
                let Ok(v) = r.json::<serde_json::Value>().await else { return false };
                let members = v["members"].as_array().map_or(0, Vec::len);
                if members != NODES || v["ready"] != true {
                    return false;
                }
            }
            true
        })
        .await;
    }

    fn signal(&self, i: usize, signal: i32) {
        self.node(i).signal(signal);
    }

    fn kill(&mut self, i: usize) {
        self.endpoints.lock().unwrap()[i] = None;
        if let Some(server) = self.nodes[i].take() {
            self.logs[i].extend(server.logs());
            let _ = tokio::task::block_in_place(|| server.kill());
        }
    }

    /// SIGTERM and wait for a clean exit; the poller unlists the node as
    /// soon as it turns unready.
    fn terminate(&mut self, i: usize) {
        if let Some(server) = self.nodes[i].take() {
            self.logs[i].extend(server.logs());
            let status = tokio::task::block_in_place(|| server.terminate());
            assert!(status.success(), "node {i} exited with {status}");
        }
        self.endpoints.lock().unwrap()[i] = None;
    }

    async fn open_store(&self) -> Arc<dyn EventStore> {
        match &self.pg {
            None => Arc::new(
                FileStore::open(FileStoreOptions::new(&self.data, FsyncPolicy::Never)).unwrap(),
            ),
            Some(_) => Arc::new(PgStore::open(PgStoreOptions::new(&self.store)).await.unwrap()),
        }
    }
}

/// What one run measured.
#[derive(Debug)]
struct Report {
    nemesis: Nemesis,
    store: Store,
    verdict: Verdict,
    stale: Vec<String>,
    divergent: Vec<String>,
    attempts: usize,
    /// Failed attempts through nodes other than the victim, from 2 s after
    /// the fault began until it ended.
    majority_errors: usize,
    majority_attempts: usize,
    /// Failed attempts of any kind, over the whole run.
    all_errors: usize,
    /// The first few of them, to say what failed.
    first_errors: Vec<Attempt>,
    /// Operations given up on.
    gave_up: u64,
    /// Adds refused with a 4xx (a cart at its limits).
    refused: u64,
    /// The victim's answers while cut off: statuses and their latency.
    minority: Vec<(u16, u64)>,
    /// Longest time a cart waited for its first acknowledged add after the
    /// fault began (SIGKILL failover), ms.
    served_again_ms: u64,
    p99_before_us: u64,
    p99_during_us: u64,
    claims_bound: u64,
}

impl Report {
    fn row(&self) -> String {
        let mut minority: Vec<u64> = self.minority.iter().map(|(_, l)| *l).collect();
        let minority_503 = self.minority.iter().filter(|(s, _)| *s == 503).count();
        format!(
            "| {:?} | {:?} | {} | {} | {} | {} | {} | {} | {} | {:.2} % | {} | {}/{} 503, p99 {} ms | {} ms | {} / {} ms | {} (bound {}) |",
            self.nemesis,
            self.store,
            self.verdict.acked,
            self.verdict.lost.len(),
            self.verdict.double_applied.len(),
            self.verdict.forked.len(),
            self.divergent.len(),
            self.stale.len(),
            self.attempts,
            100.0 * self.majority_errors as f64 / self.majority_attempts.max(1) as f64,
            self.all_errors,
            minority_503,
            self.minority.len(),
            checker::percentile(&mut minority, 99.0) / 1000,
            self.served_again_ms,
            self.p99_before_us / 1000,
            self.p99_during_us / 1000,
            self.verdict.claims,
            self.claims_bound,
        )
    }
}

/// An attempt that failed for a reason of the cluster's (a 4xx is the
/// workload's own doing and counted apart, as `refused`).
fn failed(a: &Attempt) -> bool {
    !matches!(a.outcome, Outcome::Ok | Outcome::Status(400..=499, _))
}

async fn run(nemesis: Nemesis, store: Store) -> Report {
    let _serial = SERIAL.lock().await;
    let t = timing();
    let mut fleet = Fleet::start(store);
    fleet.converged().await;
    let poller = fleet.spawn_poller();
    wait_until("the balancer to list every node", Duration::from_secs(10), || async {
        (0..NODES).all(|i| fleet.lb.pick(i).is_some_and(|(n, _)| n == i))
    })
    .await;
    let tag = format!("{nemesis:?}-{store:?}").to_lowercase();
    let carts: Arc<Vec<String>> = Arc::new((0..CARTS).map(|k| format!("{tag}-{k}")).collect());
    let clients = Clients::start(CLIENTS, Arc::clone(&carts), Arc::clone(&fleet.lb));

    tokio::time::sleep(t.fault_at).await;
    let fault_ms = clients.now_ms();
    let mut minority = Vec::new();
    let fault_end = Instant::now() + t.fault_for;
    match nemesis {
        Nemesis::Partition => {
            fleet.net.isolate(VICTIM + 1);
            // The test reaches the cut-off node directly: it must refuse,
            // and quickly, once its lease has run out.
            let url = fleet.node(VICTIM).internal_url.clone();
            let http = client();
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            while Instant::now() < fault_end {
                let began = Instant::now();
                let status = match http
                    .get(format!("{url}/api/carts/{}", carts[minority.len() % CARTS]))
                    .timeout(Duration::from_secs(3))
                    .send()
                    .await
                {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                minority.push((status, began.elapsed().as_micros() as u64));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            fleet.net.heal(VICTIM + 1);
        }
        Nemesis::Kill => {
            fleet.kill(VICTIM);
            tokio::time::sleep_until(fault_end.into()).await;
            fleet.start_node(VICTIM);
        }
        Nemesis::Pause => {
            fleet.signal(VICTIM, libc::SIGSTOP);
            tokio::time::sleep_until(fault_end.into()).await;
            fleet.signal(VICTIM, libc::SIGCONT);
        }
        Nemesis::Rolling => {
            for i in 0..NODES {
                fleet.terminate(i);
                fleet.start_node(i);
                wait_until("the restarted node to be listed", Duration::from_secs(20), || async {
                    fleet.lb.pick(i).is_some_and(|(n, _)| n == i)
                })
                .await;
            }
        }
        Nemesis::StoreRestart => {
            let pg = fleet.pg.as_mut().expect("PostgreSQL");
            tokio::task::block_in_place(|| pg.stop());
            tokio::time::sleep_until(fault_end.into()).await;
            tokio::task::block_in_place(|| pg.resume()).expect("PostgreSQL restarts");
        }
    }
    let fault_end_ms = clients.now_ms();
    let rest = t.total.saturating_sub(Duration::from_millis(fault_end_ms));
    tokio::time::sleep(rest.max(Duration::from_secs(2))).await;
    let (history, _) = clients.stop().await;
    poller.abort();

    fleet.converged().await;
    let divergent = checker::divergent(&fleet.internal_urls(), &carts).await;
    for i in 0..NODES {
        fleet.terminate(i);
    }
    let store = fleet.open_store().await;
    let verdict = checker::check(&history, &carts, store.as_ref()).await;

    let attempts = history.attempts.lock().unwrap().clone();
    let window = |a: &Attempt| a.at_ms >= fault_ms + 2_000 && a.at_ms < fault_end_ms;
    let majority: Vec<&Attempt> =
        attempts.iter().filter(|a| a.node != VICTIM && window(a)).collect();
    if std::env::var("CART_FAULTS_TRACE").is_ok() {
        for a in attempts.iter().filter(|a| failed(a) || a.latency_us > 500_000) {
            eprintln!(
                "attempt +{} ms node {} {:?} {} ms{}",
                a.at_ms as i64 - fault_ms as i64,
                a.node,
                a.outcome,
                a.latency_us / 1000,
                if a.read { " read" } else { "" }
            );
        }
    }
    let ok_latency = |from: u64, to: u64| {
        let mut v: Vec<u64> = attempts
            .iter()
            .filter(|a| !failed(a) && !a.read && a.at_ms >= from && a.at_ms < to)
            .map(|a| a.latency_us)
            .collect();
        checker::percentile(&mut v, 99.0)
    };
    let acks_at = history.acks_at.lock().unwrap().clone();
    let served_again_ms = acks_at
        .values()
        .filter_map(|times| times.iter().find(|at| **at >= fault_ms).map(|at| at - fault_ms))
        .max()
        .unwrap_or(0);
    let view: Vec<NodeAddr> = (0..NODES).map(|i| fleet.addr(i).parse().unwrap()).collect();
    let victim_carts =
        carts.iter().filter(|c| placement::owner(c, &view, &[]) == Some(&view[VICTIM])).count()
            as u64;
    // Every cart claimed once when created; the victim's carts move away
    // and back (a restart of every node moves every cart away and back,
    // and a cart may pass through a node restarted later).
    let moves = match nemesis {
        Nemesis::StoreRestart => 0,
        Nemesis::Rolling => 3 * CARTS as u64,
        _ => 2 * victim_carts,
    };
    let claims_bound = (CARTS as u64 + moves) * 11 / 10;
    if std::env::var("CART_FAULTS_TRACE").is_ok() {
        for c in carts.iter() {
            let claim = store.claim_of(c).await.unwrap();
            let victim = placement::owner(c, &view, &[]) == Some(&view[VICTIM]);
            eprintln!("claims {c} victim={victim} {claim:?}");
        }
        for (i, n) in fleet.logs.iter().enumerate() {
            for l in n.iter().filter(|l| {
                l.contains("ownership moved")
                    || l.contains("taking over")
                    || l.contains("handed the cart")
                    || l.contains("fenced")
                    || l.contains("another writer")
                    || l.contains("lease")
                    || l.contains("majority")
                    || l.contains("membership")
                    || l.contains("passivated")
            }) {
                eprintln!("log {i} {l}");
            }
        }
    }
    let report = Report {
        nemesis,
        store: if fleet.pg.is_some() { Store::Postgres } else { Store::File },
        verdict,
        stale: history.stale.lock().unwrap().clone(),
        divergent,
        attempts: attempts.len(),
        majority_errors: majority.iter().filter(|a| failed(a)).count(),
        majority_attempts: majority.len(),
        all_errors: attempts.iter().filter(|a| failed(a)).count(),
        first_errors: attempts.iter().filter(|a| failed(a)).take(5).cloned().collect(),
        gave_up: history.gave_up.load(std::sync::atomic::Ordering::SeqCst),
        refused: history.refused.load(std::sync::atomic::Ordering::SeqCst),
        minority,
        served_again_ms,
        p99_before_us: ok_latency(0, fault_ms),
        p99_during_us: ok_latency(fault_ms, fault_end_ms),
        claims_bound,
    };
    println!("{}", report.row());
    report
}

/// The checker's promises, for every nemesis.
fn assert_safe(r: &Report) {
    let v = &r.verdict;
    assert!(v.acked > 100, "the clients made progress: {r:?}");
    assert!(v.lost.is_empty(), "acknowledged adds lost: {:?}", v.lost);
    assert!(v.double_applied.is_empty(), "keys applied twice: {:?}", v.double_applied);
    assert!(v.forked.is_empty(), "forked logs: {:?}", v.forked);
    assert_eq!(v.unknown, 0, "events nobody sent");
    assert_eq!(r.refused, 0, "the workload stayed within the carts' limits: {r:?}");
    assert!(r.divergent.is_empty(), "nodes disagree: {:?}", r.divergent);
    assert!(r.stale.is_empty(), "stale reads: {:?}", r.stale);
    assert!(v.claims <= r.claims_bound, "ownership moved back and forth: {r:?}");
}

async fn partition(store: Store) {
    let r = run(Nemesis::Partition, store).await;
    assert_safe(&r);
    assert!(
        r.majority_errors * 100 <= r.majority_attempts,
        "the majority serves (at most 1 % errors after the first 2 s): {r:?}"
    );
    assert!(!r.minority.is_empty());
    let mut slow: Vec<u64> = r.minority.iter().map(|(_, l)| *l).collect();
    assert!(r.minority.iter().all(|(s, _)| *s == 503), "the cut-off node refuses: {r:?}");
    assert!(checker::percentile(&mut slow, 99.0) < 100_000, "and quickly: {r:?}");
}

async fn sigkill(store: Store) {
    let r = run(Nemesis::Kill, store).await;
    assert_safe(&r);
    assert!(r.served_again_ms < 3_000, "carts served again within 3 s: {r:?}");
}

async fn pause(store: Store) {
    let r = run(Nemesis::Pause, store).await;
    assert_safe(&r);
}

async fn rolling(store: Store) {
    let r = run(Nemesis::Rolling, store).await;
    assert_safe(&r);
    assert_eq!(
        r.all_errors, 0,
        "a rolling restart fails no request: {:?} in {r:?}",
        r.first_errors
    );
    assert_eq!(r.gave_up, 0);
    // The target is twice the p99 before; below 10 ms this 2-core machine's
    // scheduling noise (a restarting node scans the log while the others
    // serve) is larger than the effect, so the bound never drops below 20 ms.
    assert!(
        r.p99_during_us <= 2 * r.p99_before_us.max(10_000),
        "p99 during the restart at most twice the p99 before: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_file() {
    partition(Store::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_postgres() {
    partition(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_file() {
    sigkill(Store::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_postgres() {
    sigkill(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_file() {
    pause(Store::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_postgres() {
    pause(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_file() {
    rolling(Store::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_postgres() {
    rolling(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart() {
    let r = run(Nemesis::StoreRestart, Store::Postgres).await;
    assert_safe(&r);
}
