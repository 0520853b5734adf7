//! A Jepsen-style checker: clients add to a fixed set of carts, each add
//! with a unique Idempotency-Key that is retried (same key) through another
//! node on any error, and read carts, remembering the versions acknowledged
//! before each read began. After the run the store itself is read back:
//! every acknowledged add must be in the cart's log exactly once, no key
//! twice, sequence numbers without a gap or fork, every node must answer
//! each cart's final version, and no read may have returned a version older
//! than one acknowledged before it started.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cart_store::EventStore;
use serde_json::{Value, json};

use super::{SKU_A, SKU_B, SKU_C, client};

/// The load balancer in front of the nodes: node `i`'s internal URL while
/// it is listed (ready), `None` while it is not.
#[derive(Default)]
pub struct Lb(Mutex<Vec<Option<String>>>);

impl Lb {
    /// A balancer over `n` unlisted nodes.
    pub fn new(n: usize) -> Arc<Lb> {
        Arc::new(Lb(Mutex::new(vec![None; n])))
    }

    /// Lists (or unlists) node `i`.
    pub fn set(&self, i: usize, url: Option<String>) {
        self.0.lock().unwrap()[i] = url;
    }

    /// The listed node at or after position `n` (round robin).
    pub fn pick(&self, n: usize) -> Option<(usize, String)> {
        let urls = self.0.lock().unwrap();
        (0..urls.len()).map(|k| (n + k) % urls.len()).find_map(|i| urls[i].clone().map(|u| (i, u)))
    }
}

/// How one HTTP attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// 200.
    Ok,
    /// Another status, and what the body said.
    Status(u16, String),
    /// No response (refused, reset, timed out).
    Connection,
}

/// One HTTP attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it started, ms after the run began.
    pub at_ms: u64,
    /// Through which node.
    pub node: usize,
    /// How long it took.
    pub latency_us: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// A read (else an add).
    pub read: bool,
}

/// Everything the clients saw.
#[derive(Default)]
pub struct History {
    /// Key → (cart, acknowledged).
    pub adds: Mutex<HashMap<String, (String, bool)>>,
    /// Per cart, the highest version acknowledged so far.
    pub acked_max: Mutex<HashMap<String, u64>>,
    /// Per cart, when adds to it were acknowledged (ms after start).
    pub acks_at: Mutex<HashMap<String, Vec<u64>>>,
    /// Every attempt.
    pub attempts: Mutex<Vec<Attempt>>,
    /// Reads older than an acknowledged version (what, and why).
    pub stale: Mutex<Vec<String>>,
    /// Operations whose every attempt failed.
    pub gave_up: AtomicU64,
    /// Adds refused with a 4xx (certainly not applied): the workload went
    /// beyond a cart's limits.
    pub refused: AtomicU64,
}

/// A fast, seeded generator for the clients' choices (test only).
struct Choice(u64);

impl Choice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The clients of one run.
pub struct Clients {
    /// What they saw.
    pub history: Arc<History>,
    /// When the run began.
    pub started: Instant,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Attempts per operation before a client gives up on it.
const ATTEMPTS: u32 = 12;

impl Clients {
    /// Starts `clients` clients over `carts`, through `lb`.
    pub fn start(clients: usize, carts: Arc<Vec<String>>, lb: Arc<Lb>) -> Clients {
        let history = Arc::new(History::default());
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let tasks = (0..clients)
            .map(|c| {
                let (history, stop, carts, lb) =
                    (Arc::clone(&history), Arc::clone(&stop), Arc::clone(&carts), Arc::clone(&lb));
                tokio::spawn(async move {
                    let mut client_run = ClientRun {
                        c,
                        http: client(),
                        history,
                        lb,
                        started,
                        choice: Choice(c as u64),
                    };
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let cart = &carts[(client_run.choice.next() % carts.len() as u64) as usize];
                        if client_run.choice.next().is_multiple_of(4) {
                            client_run.read(cart).await;
                        } else {
                            // Three lines of up to 999 each: room for a
                            // long run's adds.
                            let sku = [SKU_A, SKU_B, SKU_C][(n % 3) as usize];
                            client_run.add(cart, sku, &format!("c{c}-{n}")).await;
                            n += 1;
                        }
                    }
                })
            })
            .collect();
        Clients { history, started, stop, tasks }
    }

    /// Milliseconds since the run began.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Stops the clients and waits for their last operations.
    pub async fn stop(self) -> (Arc<History>, Instant) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        (self.history, self.started)
    }
}

/// How one attempt of an operation ended, for the operation.
enum Answer {
    /// 200, with the cart.
    Ok(Value),
    /// A 4xx: certainly not applied, and retrying would not help.
    Refused,
    /// Anything else: try again (through another node).
    Retry,
}

struct ClientRun {
    c: usize,
    http: reqwest::Client,
    history: Arc<History>,
    lb: Arc<Lb>,
    started: Instant,
    choice: Choice,
}

impl ClientRun {
    async fn attempt(
        &mut self,
        k: u32,
        read: bool,
        send: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Answer {
        let Some((node, url)) = self.lb.pick(self.c + k as usize) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Answer::Retry;
        };
        let began = Instant::now();
        let at_ms = self.started.elapsed().as_millis() as u64;
        let response = send(&self.http, &url).timeout(Duration::from_secs(3)).send().await;
        let (outcome, body) = match response {
            Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                Ok(v) => (Outcome::Ok, Some(v)),
                Err(_) => (Outcome::Connection, None),
            },
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                (Outcome::Status(status, text.chars().take(160).collect()), None)
            }
            Err(_) => (Outcome::Connection, None),
        };
        let latency_us = began.elapsed().as_micros() as u64;
        let refused = matches!(outcome, Outcome::Status(s, _) if (400..500).contains(&s));
        self.history.attempts.lock().unwrap().push(Attempt {
            at_ms,
            node,
            latency_us,
            outcome,
            read,
        });
        match body {
            Some(v) => Answer::Ok(v),
            None if refused => Answer::Refused,
            None => {
                tokio::time::sleep(Duration::from_millis(25 * u64::from(k + 1))).await;
                Answer::Retry
            }
        }
    }

    async fn add(&mut self, cart: &str, sku: &str, key: &str) {
        self.history.adds.lock().unwrap().insert(key.to_owned(), (cart.to_owned(), false));
        for k in 0..ATTEMPTS {
            let body = self
                .attempt(k, false, |http, url| {
                    http.post(format!("{url}/api/carts/{cart}/items"))
                        .header("Idempotency-Key", key)
                        .json(&json!({"sku": sku, "quantity": 1}))
                })
                .await;
            if let Answer::Refused = body {
                self.history.refused.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if let Answer::Ok(v) = body {
                let version = v["version"].as_u64().unwrap_or(0);
                let at = self.started.elapsed().as_millis() as u64;
                self.history.adds.lock().unwrap().insert(key.to_owned(), (cart.to_owned(), true));
                let mut max = self.history.acked_max.lock().unwrap();
                let m = max.entry(cart.to_owned()).or_default();
                *m = (*m).max(version);
                self.history.acks_at.lock().unwrap().entry(cart.to_owned()).or_default().push(at);
                return;
            }
        }
        self.history.gave_up.fetch_add(1, Ordering::SeqCst);
    }

    async fn read(&mut self, cart: &str) {
        let floor = self.history.acked_max.lock().unwrap().get(cart).copied().unwrap_or(0);
        if floor == 0 {
            return;
        }
        for k in 0..ATTEMPTS {
            let body = self
                .attempt(k, true, |http, url| http.get(format!("{url}/api/carts/{cart}")))
                .await;
            if let Answer::Ok(v) = body {
                let version = v["version"].as_u64().unwrap_or(0);
                if version < floor {
                    self.history.stale.lock().unwrap().push(format!(
                        "{cart}: read version {version} after version {floor} was acknowledged"
                    ));
                }
                return;
            }
        }
        self.history.gave_up.fetch_add(1, Ordering::SeqCst);
    }
}

/// What the store says about the history.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Adds acknowledged.
    pub acked: usize,
    /// Adds given up on (applied or not).
    pub uncertain: usize,
    /// Acknowledged adds missing from the log.
    pub lost: Vec<String>,
    /// Keys applied more than once (extra applications).
    pub double_applied: Vec<String>,
    /// Carts whose log has a gap or a repeated sequence number.
    pub forked: Vec<String>,
    /// Events with a key no client sent, or none.
    pub unknown: usize,
    /// Claims (ownership changes) made, summed over carts.
    pub claims: u64,
}

/// Reads every cart's log back from `store` and checks `history` against it.
pub async fn check(history: &History, carts: &[String], store: &dyn EventStore) -> Verdict {
    let adds = history.adds.lock().unwrap().clone();
    let mut verdict = Verdict {
        acked: adds.values().filter(|(_, acked)| *acked).count(),
        uncertain: adds.values().filter(|(_, acked)| !*acked).count(),
        ..Verdict::default()
    };
    let mut applied: HashMap<String, u32> = HashMap::new();
    for cart in carts {
        let loaded = store.load(cart).await.expect("the store reads back");
        // A snapshot stands for the events it covers: it keeps their
        // idempotency keys (all within the window in a test).
        let covered = loaded.snapshot.as_ref().map_or(0, |s| s.version);
        let mut keys: Vec<String> = match &loaded.snapshot {
            Some(s) => {
                use prost::Message;
                let snapshot =
                    cart_domain::cart::snapshot::wire::CartSnapshot::decode(&s.state[..])
                        .expect("a snapshot the domain wrote");
                snapshot.keys.into_iter().map(|k| k.key).collect()
            }
            None => Vec::new(),
        };
        let events = &loaded.events;
        if events.iter().enumerate().any(|(i, e)| e.seq != covered + i as u64 + 1) {
            verdict.forked.push(cart.clone());
        }
        for e in events {
            match &e.idempotency {
                Some(tag) => keys.push(tag.key.clone()),
                None => verdict.unknown += 1,
            }
        }
        for key in keys {
            if adds.get(&key).is_some_and(|(c, _)| c == cart) {
                *applied.entry(key).or_default() += 1;
            } else {
                verdict.unknown += 1;
            }
        }
        verdict.claims += store.claim_of(cart).await.expect("claim").map_or(0, |c| c.epoch);
    }
    for (key, (_, acked)) in &adds {
        let times = applied.get(key).copied().unwrap_or(0);
        if *acked && times == 0 {
            verdict.lost.push(key.clone());
        }
        if times > 1 {
            verdict.double_applied.push(key.clone());
        }
    }
    verdict
}

/// Carts whose version differs between the nodes at `urls` (each node
/// asked for every cart).
pub async fn divergent(urls: &[String], carts: &[String]) -> Vec<String> {
    let http = client();
    let mut out = Vec::new();
    for cart in carts {
        let mut versions = Vec::new();
        for url in urls {
            let v = match http.get(format!("{url}/api/carts/{cart}")).send().await {
                Ok(r) if r.status() == 200 => {
                    r.json::<Value>().await.ok().and_then(|v| v["version"].as_u64())
                }
                _ => None,
            };
            versions.push(v);
        }
        if versions.iter().any(|v| *v != versions[0]) {
            out.push(format!("{cart}: {versions:?}"));
        }
    }
    out
}

/// Percentile `p` (0–100) of `values`, 0 when empty.
pub fn percentile(values: &mut [u64], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}
