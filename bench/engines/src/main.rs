//! The file store against two maintained embedded engines, redb (a
//! copy-on-write B-tree) and fjall (an LSM tree), on the cart workload:
//! durable appends of one event each from many concurrent writers, with
//! group commit for all three, then the time to reopen and serve carts, and
//! the bytes on disk. Run by `bench/engines.sh`; see docs/BENCHMARKS.md.
//!
//! ```text
//! engines-bench write <file|redb|fjall> <dir> <events> <carts>
//! engines-bench open  <file|redb|fjall> <dir> <carts>
//! ```
//! Every event is 233 bytes of value (what a record of the file store holds
//! besides the cart id and sequence number) under the key (cart, seq). For
//! redb and fjall, a committer thread takes every append waiting, writes
//! them in one transaction (redb) or batch (fjall), syncs once and answers
//! them: the same group commit the file store's committer does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cart_store::{
    EventStore, Fence, FileStore, FileStoreOptions, FsyncPolicy, IdempotencyTag, NewEvent,
};
use redb::ReadableDatabase;
use tokio::sync::oneshot;

const WRITERS: usize = 64;
const PAYLOAD: usize = 180;
const KEY_LEN: usize = 36;
const REDB_EVENTS: redb::TableDefinition<(&str, u64), &[u8]> = redb::TableDefinition::new("events");

type Result<T> = std::result::Result<T, String>;

fn cart_id(n: usize) -> String {
    format!("cart-{n:07}")
}

fn event(seq: u64) -> NewEvent {
    NewEvent {
        kind: 2,
        timestamp_ms: 1_700_000_000_000 + seq as i64,
        payload: (0..PAYLOAD).map(|i| (i as u64 * 31 + seq) as u8).collect(),
        idempotency: Some(IdempotencyTag {
            key: format!("{seq:0width$}", width = KEY_LEN),
            fingerprint: seq,
        }),
    }
}

/// The bytes redb and fjall store for an event: what the file store's
/// record holds besides cart id and sequence number.
fn value(e: &NewEvent) -> Vec<u8> {
    let mut v = Vec::with_capacity(PAYLOAD + 64);
    v.extend_from_slice(&e.timestamp_ms.to_le_bytes());
    v.push(e.kind);
    if let Some(tag) = &e.idempotency {
        v.push(tag.key.len() as u8);
        v.extend_from_slice(tag.key.as_bytes());
        v.extend_from_slice(&tag.fingerprint.to_le_bytes());
    }
    v.extend_from_slice(&e.payload);
    v
}

/// One append waiting for the committer thread.
struct Pending {
    cart: String,
    seq: u64,
    value: Vec<u8>,
    done: oneshot::Sender<Result<()>>,
}

/// An engine that writes a batch of appends and makes it durable.
trait Batched: Send + 'static {
    fn commit(&mut self, batch: &[Pending]) -> Result<()>;
}

struct Redb(redb::Database);

impl Batched for Redb {
    fn commit(&mut self, batch: &[Pending]) -> Result<()> {
        let txn = self.0.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = txn.open_table(REDB_EVENTS).map_err(|e| e.to_string())?;
            for p in batch {
                table
                    .insert((p.cart.as_str(), p.seq), p.value.as_slice())
                    .map_err(|e| e.to_string())?;
            }
        }
        txn.commit().map_err(|e| e.to_string())
    }
}

struct Fjall {
    db: fjall::Database,
    events: fjall::Keyspace,
}

fn fjall_key(cart: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(cart.len() + 9);
    key.extend_from_slice(cart.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

impl Batched for Fjall {
    fn commit(&mut self, batch: &[Pending]) -> Result<()> {
        let mut b = self.db.batch();
        for p in batch {
            b.insert(&self.events, fjall_key(&p.cart, p.seq), p.value.as_slice());
        }
        b.commit().map_err(|e| e.to_string())?;
        self.db.persist(fjall::PersistMode::SyncData).map_err(|e| e.to_string())
    }
}

/// Group commit in front of a [`Batched`] engine.
struct GroupCommit {
    queue: Option<mpsc::Sender<Pending>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GroupCommit {
    fn start(mut engine: impl Batched) -> Self {
        let (queue, rx) = mpsc::channel::<Pending>();
        let thread = std::thread::spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let result = engine.commit(&batch);
                for p in batch {
                    let _ = p.done.send(result.clone());
                }
            }
        });
        GroupCommit { queue: Some(queue), thread: Some(thread) }
    }

    async fn append(&self, cart: &str, seq: u64, e: &NewEvent) -> Result<()> {
        let (done, answer) = oneshot::channel();
        let pending = Pending { cart: cart.to_owned(), seq, value: value(e), done };
        self.queue.as_ref().ok_or("stopped")?.send(pending).map_err(|_| "stopped".to_owned())?;
        answer.await.map_err(|_| "stopped".to_owned())?
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

enum Engine {
    File(FileStore),
    Grouped(GroupCommit),
}

impl Engine {
    async fn append(&self, cart: &str, seq: u64, e: NewEvent) -> Result<()> {
        match self {
            Engine::File(store) => {
                let fence = if seq == 1 { Fence::Claim("bench".into()) } else { Fence::Epoch(1) };
                store
                    .append(cart, seq - 1, fence, vec![e])
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Engine::Grouped(g) => g.append(cart, seq, &e).await,
        }
    }
}

fn open_file(dir: &Path) -> Result<FileStore> {
    let mut options = FileStoreOptions::new(dir, FsyncPolicy::Always);
    options.auto_compaction = None;
    FileStore::open(options).map_err(|e| e.to_string())
}

fn open_fjall(dir: &Path) -> Result<Fjall> {
    let db = fjall::Database::builder(dir).open().map_err(|e| e.to_string())?;
    let events =
        db.keyspace("events", fjall::KeyspaceCreateOptions::default).map_err(|e| e.to_string())?;
    Ok(Fjall { db, events })
}

fn open_redb(dir: &Path) -> Result<redb::Database> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    redb::Database::create(dir.join("events.redb")).map_err(|e| e.to_string())
}

/// Writes `events` events over `carts` carts from [`WRITERS`] concurrent
/// writers, each append durable before the writer's next; prints the rate
/// and latency percentiles.
async fn write(engine: Engine, events: usize, carts: usize) -> Result<()> {
    let engine = Arc::new(engine);
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let engine = Arc::clone(&engine);
        let own: Vec<usize> = (w..carts).step_by(WRITERS).collect();
        let count = events / WRITERS;
        writers.push(tokio::spawn(async move {
            let mut versions = vec![0u64; own.len()];
            let mut latencies = Vec::with_capacity(count);
            for i in 0..count {
                let k = i % own.len();
                versions[k] += 1;
                let t = Instant::now();
                engine.append(&cart_id(own[k]), versions[k], event(versions[k])).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for w in writers {
        latencies.extend(w.await.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "appends={} elapsed_s={:.2} per_s={:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2}",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(0.999)
    );
    drop(engine);
    Ok(())
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Opens the store, then reads 1000 carts; prints both times and the RSS.
async fn open(kind: &str, dir: &Path, carts: usize) -> Result<()> {
    let sample: Vec<String> = (0..1000).map(|i| cart_id(i * 7919 % carts)).collect();
    let started = Instant::now();
    let mut events = 0usize;
    let opened;
    match kind {
        "file" => {
            let before = rss_mb();
            let store = open_file(dir)?;
            opened = started.elapsed();
            // What the index costs per cart, with nothing resident.
            println!(
                "rss_before_open_mb={before:.1} rss_after_open_mb={:.1} index_bytes_per_cart={:.1}",
                rss_mb(),
                (rss_mb() - before) * 1048576.0 / carts as f64
            );
            for c in &sample {
                events += store.load(c).await.map_err(|e| e.to_string())?.events.len();
            }
            // Closing writes the index checkpoint; most of it is the encoding
            // (done under the index's read lock) and writing 100 B per cart.
            let closing = Instant::now();
            drop(store);
            println!("close_with_checkpoint_ms={:.1}", closing.elapsed().as_secs_f64() * 1e3);
        }
        "redb" => {
            let db = open_redb(dir)?;
            opened = started.elapsed();
            let read = db.begin_read().map_err(|e| e.to_string())?;
            let table = read.open_table(REDB_EVENTS).map_err(|e| e.to_string())?;
            for c in &sample {
                let range = table
                    .range((c.as_str(), 0)..=(c.as_str(), u64::MAX))
                    .map_err(|e| e.to_string())?;
                for row in range {
                    let (_, v) = row.map_err(|e| e.to_string())?;
                    events += usize::from(!v.value().is_empty());
                }
            }
        }
        "fjall" => {
            let f = open_fjall(dir)?;
            opened = started.elapsed();
            for c in &sample {
                let mut prefix = c.as_bytes().to_vec();
                prefix.push(0);
                for kv in f.events.prefix(prefix) {
                    let v = kv.value().map_err(|e| e.to_string())?;
                    events += usize::from(!v.is_empty());
                }
            }
        }
        other => return Err(format!("unknown engine {other}")),
    }
    println!(
        "open_ms={:.1} open_and_1000_loads_ms={:.1} events_loaded={events} rss_mb={:.1}",
        opened.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64() * 1e3,
        rss_mb()
    );
    Ok(())
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> Result<T> {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("argument {i} missing or invalid"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (command, kind, dir): (String, String, PathBuf) =
        (arg(&args, 1)?, arg(&args, 2)?, arg(&args, 3)?);
    match command.as_str() {
        "write" => {
            let (events, carts) = (arg(&args, 4)?, arg(&args, 5)?);
            let engine = match kind.as_str() {
                "file" => Engine::File(open_file(&dir)?),
                "redb" => Engine::Grouped(GroupCommit::start(Redb(open_redb(&dir)?))),
                "fjall" => Engine::Grouped(GroupCommit::start(open_fjall(&dir)?)),
                other => return Err(format!("unknown engine {other}")),
            };
            write(engine, events, carts).await?;
            // fjall and redb finish their own work at close.
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(())
        }
        "open" => open(&kind, &dir, arg(&args, 4)?).await,
        other => Err(format!("unknown command {other}")),
    }
}
