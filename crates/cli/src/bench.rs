//! `cart-actor bench`: a load generator for a running service.
//!
//! Each connection is its own HTTP/1.1 keep-alive connection driven by one
//! task, sending the next request as soon as the previous one is answered
//! (closed loop), like `wrk` or `redis-benchmark -c N`. Latencies go into an
//! HDR histogram; the report gives throughput and p50/p99/p99.9.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use cart_cluster::{NodeAddr, placement};

use crate::config::parse_duration;

/// What the load consists of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Storefront adds (`POST /cart/` with a `cartid` cookie) spread over
    /// `--carts` carts: every request is a durable mutation.
    Mutate,
    /// Storefront reads (`GET /cart/`) of `--carts` pre-filled hot carts.
    Read,
    /// `GET /healthz`: a trivial axum handler, the baseline for reads.
    Healthz,
    /// Creates `--carts` carts of `--lines` lines each, then reports the
    /// server's resident memory per cart (from its `/metrics`).
    Fill,
    /// Mints `--carts` storefront carts (one add each, placed as
    /// `--placement` asks) and prints their ids, one per line: cookies for
    /// other load generators (`bench/mutate.lua`).
    Mint,
    /// Creates `--carts` carts of `--events` events each, waits
    /// `--idle-wait` (start the server with a shorter `--idle-ttl` so they
    /// passivate), then times the first read of each: the activation (load
    /// and replay) latency.
    Activation,
}

/// Which node owns the carts the benchmark uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Placement {
    /// Any cart id.
    Any,
    /// Carts the target node owns.
    Local,
    /// Carts another node owns.
    Remote,
}

/// Flags of `cart-actor bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Base URL of the service's public listener (storefront requests).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Base URL of its internal listener (`/api/cluster`, `/metrics`,
    /// carts by id).
    #[arg(long, default_value = "http://127.0.0.1:8090")]
    pub internal_url: String,
    /// What to send.
    #[arg(long, value_enum, default_value_t = Workload::Mutate)]
    pub workload: Workload,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before measuring starts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Number of distinct carts.
    #[arg(long, default_value_t = 10_000)]
    pub carts: usize,
    /// Which carts to use on a cluster: `any`, only those the target node
    /// owns (`local`), or only those another node owns (`remote`, every
    /// request forwarded one hop).
    #[arg(long, value_enum, default_value_t = Placement::Any)]
    pub placement: Placement,
    /// Events per cart for `activation`.
    #[arg(long, default_value_t = 200)]
    pub events: usize,
    /// How long `activation` waits for the carts to passivate.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub idle_wait: Duration,
    /// Lines per cart: `fill` and `read` carts have this many, `mutate`
    /// carts draw from this many products.
    #[arg(long, default_value_t = 5)]
    pub lines: usize,
}

/// SKUs of the shipped sample catalogue, which the default server serves.
fn skus() -> anyhow::Result<Vec<String>> {
    Ok(cart_catalog::FileCatalog::sample()?.skus().into_iter().filter(|s| s != "999001").collect())
}

/// The `k`th of the `--lines` products cart number `cart` draws from. The
/// first is the product every cart was minted with (`skus[0]`), so a cart
/// holds `--lines` distinct lines, as before carts had to be minted.
fn cart_sku(skus: &[String], cart: usize, k: usize) -> &str {
    if k == 0 { &skus[0] } else { &skus[(cart + k) % skus.len()] }
}

/// Runs the benchmark and prints its report.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(bench(args))
}

struct Target {
    host: String,
    authority: String,
}

fn target(url: &str) -> anyhow::Result<Target> {
    let authority = url
        .strip_prefix("http://")
        .context("--url and --internal-url must start with http://")?
        .trim_end_matches('/')
        .to_owned();
    Ok(Target { host: authority.clone(), authority })
}

/// One keep-alive connection.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    authority: String,
}

impl Conn {
    async fn open(t: &Target) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(&t.host).await.context("connect")?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn { sender, authority: t.authority.clone() })
    }

    /// Adds `sku` with no cookie: the service makes a cart and answers its
    /// minted id in `Set-Cookie`.
    async fn mint(&mut self, sku: &str) -> anyhow::Result<String> {
        let body = format!(r#"{{"sku":"{sku}","quantity":1}}"#);
        let req = Request::builder()
            .method(Method::POST)
            .uri("/cart/")
            .header("host", &self.authority)
            .body(Full::new(Bytes::from(body)))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(req).await?;
        let status = response.status().as_u16();
        let cookie = response
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("cartid="))
            .and_then(|v| v.split(';').next())
            .map(str::to_owned);
        response.into_body().collect().await?;
        match cookie {
            Some(id) if status == 200 => Ok(id),
            _ => bail!("minting a cart failed: status {status}, no cartid cookie"),
        }
    }

    /// Sends one request; returns the status and body.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<(u16, Bytes)> {
        let mut req = Request::builder().method(method).uri(path).header("host", &self.authority);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        self.sender.ready().await?;
        let response = self.sender.send_request(req.body(Full::new(body))?).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// A small, fast, seedable generator (xorshift64*), enough for picking carts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn run_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("b{}", cart_grain::CartId::random(nanos))
}

/// Which cart ids `placement` wants, from the target's `/api/cluster`
/// view; `None` takes every id.
type Wanted = Option<Box<dyn Fn(&str) -> bool + Send + Sync>>;

async fn wanted(internal: &Target, placement: Placement) -> anyhow::Result<Wanted> {
    if placement == Placement::Any {
        return Ok(None);
    }
    let mut conn = Conn::open(internal).await?;
    let (status, body) = conn.send(Method::GET, "/api/cluster", None, Bytes::new()).await?;
    if status != 200 {
        bail!("--placement needs the target's /api/cluster (status {status})");
    }
    let view: serde_json::Value = serde_json::from_slice(&body)?;
    let me: NodeAddr = view["node"]
        .as_str()
        .context("no node in /api/cluster")?
        .parse()
        .map_err(anyhow::Error::msg)?;
    let members: Vec<NodeAddr> = view["members"]
        .as_array()
        .context("no members in /api/cluster")?
        .iter()
        .filter_map(|m| m["host"].as_str()?.parse().ok())
        .collect();
    if placement == Placement::Remote && members.len() < 2 {
        bail!("--placement remote needs a cluster of at least two nodes");
    }
    let want_local = placement == Placement::Local;
    Ok(Some(Box::new(move |name: &str| {
        (placement::owner(name, &members, &[]) == Some(&me)) == want_local
    })))
}

/// `count` cart ids of the service's by-id API (chosen here: trusted
/// callers may), placed as `placement` asks.
async fn cart_names(
    internal: &Target,
    placement: Placement,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let prefix = run_prefix();
    let wanted = wanted(internal, placement).await?;
    let all = (0..).map(|i| format!("{prefix}-{i}"));
    Ok(all.filter(|n| wanted.as_ref().is_none_or(|w| w(n))).take(count).collect())
}

/// `count` storefront carts minted by the service (see [`Conn::mint`]),
/// placed as `placement` asks; carts that land elsewhere are left behind.
/// Also returns how many carts were made (each a durable mutation).
async fn minted_carts(
    t: &Target,
    internal: &Target,
    args: &BenchArgs,
    sku: &str,
) -> anyhow::Result<(Vec<String>, u64)> {
    let wanted = Arc::new(wanted(internal, args.placement).await?);
    let found = Arc::new(std::sync::Mutex::new(Vec::with_capacity(args.carts)));
    let attempts = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.connections.clamp(1, 32) {
        let mut conn = Conn::open(t).await?;
        let (wanted, found, sku, count) =
            (Arc::clone(&wanted), Arc::clone(&found), sku.to_owned(), args.carts);
        let attempts = Arc::clone(&attempts);
        tasks.push(tokio::spawn(async move {
            loop {
                if found.lock().map_or(true, |f| f.len() >= count) {
                    return anyhow::Ok(());
                }
                let id = conn.mint(&sku).await?;
                attempts.fetch_add(1, Ordering::Relaxed);
                if (*wanted).as_ref().is_none_or(|w| w(&id))
                    && let Ok(mut found) = found.lock()
                    && found.len() < count
                {
                    found.push(id);
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let found = found.lock().map_err(|_| anyhow::anyhow!("a minting task panicked"))?;
    Ok((found.clone(), attempts.load(Ordering::Relaxed)))
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let t = target(&args.url)?;
    let internal = target(&args.internal_url)?;
    let skus = Arc::new(skus()?);
    if args.workload == Workload::Activation {
        let names = Arc::new(cart_names(&internal, args.placement, args.carts).await?);
        return activation(&internal, &args, &skus, &names).await;
    }
    if args.workload == Workload::Fill {
        return fill(&t, &internal, &args, &skus).await;
    }
    let (names, minted) = match args.workload {
        Workload::Healthz => (Vec::new(), 0),
        _ => minted_carts(&t, &internal, &args, &skus[0]).await?,
    };
    let names = Arc::new(names);
    match args.workload {
        Workload::Mint => {
            for name in names.iter() {
                println!("{name}");
            }
            return Ok(());
        }
        Workload::Read => prefill(&t, &args, &skus, &names).await?,
        _ => {}
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let mut conn = Conn::open(&t).await?;
        let (skus, names) = (Arc::clone(&skus), Arc::clone(&names));
        let (measuring, stop) = (Arc::clone(&measuring), Arc::clone(&stop));
        let (workload, carts, lines) = (args.workload, args.carts, args.lines);
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (c as u64 + 1));
            let (mut ok, mut failed, mut sent) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let cart = rng.below(carts);
                let cookie = || format!("cartid={}", names[cart]);
                let started = Instant::now();
                let (status, _) = match workload {
                    Workload::Mutate => {
                        // Each cart draws from its own `lines` products, so
                        // carts stay realistically small however long it runs.
                        let sku = cart_sku(&skus, cart, rng.below(lines));
                        let body = format!(r#"{{"sku":"{sku}","quantity":1}}"#);
                        conn.send(Method::POST, "/cart/", Some(&cookie()), Bytes::from(body))
                            .await?
                    }
                    Workload::Read => {
                        conn.send(Method::GET, "/cart/", Some(&cookie()), Bytes::new()).await?
                    }
                    _ => conn.send(Method::GET, "/healthz", None, Bytes::new()).await?,
                };
                sent += 1;
                if measuring.load(Ordering::Relaxed) {
                    hist.record(started.elapsed().as_micros() as u64)?;
                    if status == 200 { ok += 1 } else { failed += 1 }
                }
            }
            anyhow::Ok((hist, ok, failed, sent))
        }));
    }
    tokio::time::sleep(args.warmup).await;
    measuring.store(true, Ordering::SeqCst);
    let started = Instant::now();
    tokio::time::sleep(args.duration).await;
    measuring.store(false, Ordering::SeqCst);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut ok, mut failed, mut sent) = (0, 0, 0);
    for task in tasks {
        let (h, o, f, s) = task.await??;
        hist.add(h)?;
        ok += o;
        failed += f;
        sent += s;
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    // Every request the server handled, minting included, so CPU per
    // request can be computed from the server's CPU time over the run.
    sent += minted;
    println!(
        "workload={:?} placement={:?} connections={} carts={} duration={:.1}s ok={ok} failed={failed} \
         throughput={:.0}/s p50={:.2}ms p99={:.2}ms p99.9={:.2}ms sent={sent}",
        args.workload,
        args.placement,
        args.connections,
        args.carts,
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
    );
    if failed > 0 {
        bail!("{failed} requests failed");
    }
    Ok(())
}

/// Fills `carts` carts with `lines` lines each, over all connections.
async fn populate(
    t: &Target,
    args: &BenchArgs,
    skus: &Arc<Vec<String>>,
    names: &Arc<Vec<String>>,
) -> anyhow::Result<()> {
    let conns = args.connections.min(args.carts).max(1);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let mut conn = Conn::open(t).await?;
        let (skus, names, lines, carts) =
            (Arc::clone(skus), Arc::clone(names), args.lines, args.carts);
        tasks.push(tokio::spawn(async move {
            for cart in (c..carts).step_by(conns) {
                let items: Vec<String> = (0..lines)
                    .map(|l| format!(r#"{{"sku":"{}","quantity":1}}"#, cart_sku(&skus, cart, l)))
                    .collect();
                let body = format!(r#"{{"items":[{}]}}"#, items.join(","));
                let cookie = format!("cartid={}", names[cart]);
                let (status, text) =
                    conn.send(Method::POST, "/cart/add", Some(&cookie), Bytes::from(body)).await?;
                if status != 200 {
                    bail!(
                        "filling cart {cart} failed: {status} {}",
                        String::from_utf8_lossy(&text)
                    );
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

async fn prefill(
    t: &Target,
    args: &BenchArgs,
    skus: &Arc<Vec<String>>,
    names: &Arc<Vec<String>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    populate(t, args, skus, names).await?;
    eprintln!(
        "prefilled {} carts of {} lines in {:.1}s",
        args.carts,
        args.lines,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn resident_bytes(t: &Target) -> anyhow::Result<f64> {
    let mut conn = Conn::open(t).await?;
    let (_, body) = conn.send(Method::GET, "/metrics", None, Bytes::new()).await?;
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .context("the server's /metrics has no process_resident_memory_bytes")
}

async fn fill(
    t: &Target,
    internal: &Target,
    args: &BenchArgs,
    skus: &Arc<Vec<String>>,
) -> anyhow::Result<()> {
    let before = resident_bytes(internal).await?;
    let started = Instant::now();
    let names = Arc::new(minted_carts(t, internal, args, &skus[0]).await?.0);
    populate(t, args, skus, &names).await?;
    let elapsed = started.elapsed();
    let after = resident_bytes(internal).await?;
    println!(
        "workload=Fill carts={} lines={} took={:.1}s rss_before={:.1}MiB rss_after={:.1}MiB per_cart={:.0}B",
        args.carts,
        args.lines,
        elapsed.as_secs_f64(),
        before / 1048576.0,
        after / 1048576.0,
        (after - before) / args.carts as f64,
    );
    Ok(())
}

/// Builds long carts, lets them passivate, then times their activation.
async fn activation(
    t: &Target,
    args: &BenchArgs,
    skus: &Arc<Vec<String>>,
    names: &Arc<Vec<String>>,
) -> anyhow::Result<()> {
    let mut conn = Conn::open(t).await?;
    for (c, name) in names.iter().enumerate() {
        for e in 0..args.events {
            let sku = &skus[(c + e % args.lines.max(1)) % skus.len()];
            let body = Bytes::from(format!(r#"{{"sku":"{sku}","quantity":1}}"#));
            let (status, text) =
                conn.send(Method::POST, &format!("/api/carts/{name}/items"), None, body).await?;
            if status != 200 {
                bail!("building cart {name} failed: {status} {}", String::from_utf8_lossy(&text));
            }
        }
    }
    tokio::time::sleep(args.idle_wait).await;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for name in names.iter() {
        let started = Instant::now();
        let (status, _) =
            conn.send(Method::GET, &format!("/api/carts/{name}"), None, Bytes::new()).await?;
        if status != 200 {
            bail!("reading cart {name} failed: {status}");
        }
        hist.record(started.elapsed().as_micros() as u64)?;
    }
    println!(
        "workload=Activation carts={} events={} first_read_p50={:.2}ms p99={:.2}ms max={:.2}ms",
        names.len(),
        args.events,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
    );
    Ok(())
}
