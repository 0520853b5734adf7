//! The shared PostgreSQL backend (`--store postgres://...`).
//!
//! Schema (applied at start-up, versioned in `cart_schema`):
//!
//! - `cart_heads(cart_id PK, version, epoch, owner)`: each cart's current
//!   version and ownership claim, the row every append locks;
//! - `cart_events(cart_id, seq, kind, ts_ms, payload, idem_key, idem_fp)`,
//!   primary key `(cart_id, seq)`: the events, with idempotency keys kept
//!   beside them;
//! - `cart_snapshots(cart_id PK, version, ts_ms, state)`: each cart's latest
//!   snapshot; saving one deletes the events it covers;
//! - `cart_heads.touched_ms` (version 3): the latest event's time, indexed,
//!   for expiry.
//!
//! Group commit: one committer task takes every queued append, and in one
//! transaction creates missing head rows, locks the heads of all carts in the
//! batch (`FOR UPDATE`, in id order), checks each append's claim epoch and
//! expected version, inserts all accepted events with one multi-row `INSERT`
//! (`unnest`), updates the heads and commits. Nothing is acknowledged before
//! the commit; the `(cart_id, seq)` key backs up the version check, so a stale
//! writer can never fork a log. Reads use a connection pool.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Timeouts};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::pg_tls;

use crate::{
    AppendRequest, Appended, Claim, Event, EventStore, Fence, IdempotencyTag, Loaded, NewEvent,
    SECRET_LEN, Snapshot, StoreError, check_secret_name,
};

/// Appends waiting for the committer before further appends wait to queue.
const MAX_QUEUED: usize = 4096;
/// Most appends committed in one transaction.
const MAX_BATCH: usize = 1024;

/// Version 2: service secrets (see [`EventStore::secret`]).
const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS cart_secrets (
    name text PRIMARY KEY,
    value bytea NOT NULL
);
";

/// Version 3: snapshots, and each cart's last activity for expiry.
const SCHEMA_V3: &str = "
ALTER TABLE cart_heads ADD COLUMN IF NOT EXISTS touched_ms bigint NOT NULL DEFAULT 0;
UPDATE cart_heads h SET touched_ms = e.ts
    FROM (SELECT cart_id, max(ts_ms) AS ts FROM cart_events GROUP BY cart_id) e
    WHERE h.cart_id = e.cart_id;
CREATE INDEX IF NOT EXISTS cart_heads_touched ON cart_heads (touched_ms) WHERE version > 0;
CREATE TABLE IF NOT EXISTS cart_snapshots (
    cart_id text PRIMARY KEY,
    version bigint NOT NULL,
    ts_ms bigint NOT NULL,
    state bytea NOT NULL
);
";

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS cart_heads (
    cart_id text PRIMARY KEY,
    version bigint NOT NULL,
    epoch bigint NOT NULL,
    owner text NOT NULL
);
CREATE TABLE IF NOT EXISTS cart_events (
    cart_id text NOT NULL,
    seq bigint NOT NULL,
    kind smallint NOT NULL,
    ts_ms bigint NOT NULL,
    payload bytea NOT NULL,
    idem_key text,
    idem_fp bigint,
    PRIMARY KEY (cart_id, seq)
);
";

/// Settings of a [`PgStore`]. Its `Debug` shows no credentials.
#[derive(Clone)]
pub struct PgStoreOptions {
    /// `postgres://user[:password]@host:port/database[?sslmode=...]`; see
    /// [`crate::pg_tls`] for `sslmode` and `sslrootcert`.
    pub url: String,
    /// The password, when it is kept out of the URL (a password file).
    pub password: Option<String>,
    /// Connections in the pool (the committer uses one).
    pub pool_size: usize,
    /// How long a request waits for a connection or for connecting before it
    /// fails with [`StoreError::Unavailable`].
    pub timeout: Duration,
}

impl std::fmt::Debug for PgStoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStoreOptions")
            .field("url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PgStoreOptions {
    /// Defaults for `url`: 8 connections, 1 s timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        PgStoreOptions {
            url: url.into(),
            password: None,
            pool_size: 8,
            timeout: Duration::from_secs(1),
        }
    }
}

/// The PostgreSQL event store.
pub struct PgStore {
    pool: Pool,
    appends: mpsc::Sender<AppendRequest>,
    healthy: Arc<AtomicBool>,
    /// The committer and the health probe; dropping the store cancels them
    /// (no append is waiting then: each borrows the store until answered).
    _tasks: JoinSet<()>,
}

/// The error with its causes: a driver error reads only "db error"; the
/// server's message is in its source.
fn unavailable(e: impl std::error::Error) -> StoreError {
    let mut text = format!("PostgreSQL: {e}");
    let mut cause = e.source();
    while let Some(c) = cause {
        // Wrappers often repeat their cause in their own text.
        let more = c.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    StoreError::Unavailable(text)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Connects, applies the schema and starts the committer. Fails if the
    /// database cannot be reached.
    pub async fn open(options: PgStoreOptions) -> Result<Self, StoreError> {
        let (url, tls) = pg_tls::split_url(&options.url)?;
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Invalid(format!("bad PostgreSQL URL: {e}")))?;
        config.connect_timeout(options.timeout);
        config.application_name("cart-actor");
        config.ssl_mode(tls.ssl_mode());
        if let Some(password) = &options.password {
            config.password(password.as_bytes());
        }
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = match tls.client_config()? {
            Some(client) => {
                Manager::from_config(config, MakeRustlsConnect::new(client), manager_config)
            }
            None => Manager::from_config(config, NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(options.timeout),
                create: Some(options.timeout),
                recycle: Some(options.timeout),
            })
            .build()
            .map_err(unavailable)?;
        migrate(&pool).await?;
        let healthy = Arc::new(AtomicBool::new(true));
        let (appends, rx) = mpsc::channel(MAX_QUEUED);
        let mut tasks = JoinSet::new();
        tasks.spawn(committer(pool.clone(), rx, Arc::clone(&healthy)));
        tasks.spawn(health_probe(pool.clone(), Arc::clone(&healthy)));
        Ok(PgStore { pool, appends, healthy, _tasks: tasks })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            self.healthy.store(false, Ordering::SeqCst);
            unavailable(e)
        })
    }

    fn failed(&self, e: tokio_postgres::Error) -> StoreError {
        if e.is_closed() || e.as_db_error().is_none() {
            self.healthy.store(false, Ordering::SeqCst);
        }
        unavailable(e)
    }
}

async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(unavailable)?;
    let tx = client.transaction().await.map_err(unavailable)?;
    // One migrator at a time across nodes starting together.
    tx.batch_execute("SELECT pg_advisory_xact_lock(4242001); CREATE TABLE IF NOT EXISTS cart_schema (version int PRIMARY KEY)")
        .await
        .map_err(unavailable)?;
    let applied: Option<i32> = tx
        .query_one("SELECT max(version) FROM cart_schema", &[])
        .await
        .map_err(unavailable)?
        .get(0);
    if applied.unwrap_or(0) < 1 {
        tx.batch_execute(SCHEMA_V1).await.map_err(unavailable)?;
        tx.execute("INSERT INTO cart_schema (version) VALUES (1)", &[])
            .await
            .map_err(unavailable)?;
        tracing::info!("PostgreSQL schema migrated to version 1");
    }
    if applied.unwrap_or(0) < 2 {
        tx.batch_execute(SCHEMA_V2).await.map_err(unavailable)?;
        tx.execute("INSERT INTO cart_schema (version) VALUES (2)", &[])
            .await
            .map_err(unavailable)?;
        tracing::info!("PostgreSQL schema migrated to version 2");
    }
    if applied.unwrap_or(0) < 3 {
        tx.batch_execute(SCHEMA_V3).await.map_err(unavailable)?;
        tx.execute("INSERT INTO cart_schema (version) VALUES (3)", &[])
            .await
            .map_err(unavailable)?;
        tracing::info!("PostgreSQL schema migrated to version 3");
    }
    tx.commit().await.map_err(unavailable)
}

/// While the database is unreachable, checks every 500 ms whether it is back.
async fn health_probe(pool: Pool, healthy: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if healthy.load(Ordering::SeqCst) {
            continue;
        }
        if let Ok(client) = pool.get().await
            && client.simple_query("SELECT 1").await.is_ok()
        {
            tracing::info!("PostgreSQL is reachable again");
            healthy.store(true, Ordering::SeqCst);
        }
    }
}

async fn committer(pool: Pool, mut rx: mpsc::Receiver<AppendRequest>, healthy: Arc<AtomicBool>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let size = batch.len();
        let replies = match commit(&pool, &batch).await {
            Ok(results) => {
                healthy.store(true, Ordering::SeqCst);
                results
            }
            Err(e) => {
                if !matches!(e, StoreError::Conflict { .. }) {
                    healthy.store(false, Ordering::SeqCst);
                    tracing::warn!(error = %e, appends = size, "PostgreSQL batch failed; nothing of it was acknowledged");
                }
                batch.iter().map(|_| Err(StoreError::Unavailable(e.to_string()))).collect()
            }
        };
        metrics::histogram!(crate::families::LOG_FSYNC_BATCH.name).record(size as f64);
        metrics::histogram!(crate::families::PG_COMMIT_DURATION.name).record(started.elapsed());
        for (request, result) in batch.into_iter().zip(replies) {
            let _ = request.reply.send(result);
        }
    }
}

/// A cart's head row as a batch changes it.
struct Head {
    version: u64,
    epoch: u64,
    /// The new claim's owner, if the batch claims the cart.
    owner: Option<String>,
    /// The latest event time the batch appends.
    touched_ms: i64,
}

/// Commits one batch; returns each append's outcome in order.
async fn commit(
    pool: &Pool,
    batch: &[AppendRequest],
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    let mut client = pool.get().await.map_err(unavailable)?;
    let tx = client.transaction().await.map_err(unavailable)?;
    let mut carts: Vec<&str> = batch.iter().map(|r| r.cart.as_str()).collect();
    carts.sort_unstable();
    carts.dedup();
    tx.execute(
        "INSERT INTO cart_heads (cart_id, version, epoch, owner) \
         SELECT c, 0, 0, '' FROM unnest($1::text[]) AS c ORDER BY c ON CONFLICT DO NOTHING",
        &[&carts],
    )
    .await
    .map_err(unavailable)?;
    let rows = tx
        .query(
            "SELECT cart_id, version, epoch FROM cart_heads WHERE cart_id = ANY($1) ORDER BY cart_id FOR UPDATE",
            &[&carts],
        )
        .await
        .map_err(unavailable)?;
    let mut heads: HashMap<String, Head> = rows
        .iter()
        .map(|r| {
            let version: i64 = r.get(1);
            let epoch: i64 = r.get(2);
            let head =
                Head { version: version as u64, epoch: epoch as u64, owner: None, touched_ms: 0 };
            (r.get::<_, String>(0), head)
        })
        .collect();
    let mut results = Vec::with_capacity(batch.len());
    let (mut ids, mut seqs, mut kinds, mut stamps, mut payloads, mut keys, mut fps) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for request in batch {
        let Some(head) = heads.get_mut(&request.cart) else {
            results.push(Err(StoreError::Unavailable("cart head row missing".into())));
            continue;
        };
        let (version, epoch) = (head.version, head.epoch);
        if let Err(e) = request.check(version, epoch) {
            results.push(Err(e));
            continue;
        }
        let epoch = match &request.fence {
            Fence::Epoch(e) => *e,
            Fence::Claim(owner) => {
                head.owner = Some(owner.clone());
                epoch + 1
            }
        };
        for (i, event) in request.events.iter().enumerate() {
            ids.push(request.cart.as_str());
            seqs.push(to_i64(version + i as u64 + 1));
            kinds.push(i16::from(event.kind));
            stamps.push(event.timestamp_ms);
            payloads.push(event.payload.as_slice());
            keys.push(event.idempotency.as_ref().map(|t| t.key.as_str()));
            fps.push(event.idempotency.as_ref().map(|t| t.fingerprint as i64));
            head.touched_ms = head.touched_ms.max(event.timestamp_ms);
        }
        head.version = version + request.events.len() as u64;
        head.epoch = epoch;
        results.push(Ok(Appended { version: head.version, epoch }));
    }
    if !ids.is_empty() {
        tx.execute(
            "INSERT INTO cart_events (cart_id, seq, kind, ts_ms, payload, idem_key, idem_fp) \
             SELECT * FROM unnest($1::text[], $2::int8[], $3::int2[], $4::int8[], $5::bytea[], $6::text[], $7::int8[])",
            &[&ids, &seqs, &kinds, &stamps, &payloads, &keys, &fps],
        )
        .await
        .map_err(unavailable)?;
    }
    let (mut h_ids, mut h_versions, mut h_epochs, mut h_owners, mut h_touched) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (cart, head) in &heads {
        h_ids.push(cart.as_str());
        h_versions.push(to_i64(head.version));
        h_epochs.push(to_i64(head.epoch));
        h_owners.push(head.owner.as_deref());
        h_touched.push(head.touched_ms);
    }
    tx.execute(
        "UPDATE cart_heads h SET version = v.version, epoch = v.epoch, owner = coalesce(v.owner, h.owner), \
         touched_ms = greatest(h.touched_ms, v.touched_ms) \
         FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], $5::int8[]) AS v(cart_id, version, epoch, owner, touched_ms) \
         WHERE h.cart_id = v.cart_id",
        &[&h_ids, &h_versions, &h_epochs, &h_owners, &h_touched],
    )
    .await
    .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    Ok(results)
}

/// The cart's version, its head row locked for the transaction; `None`
/// without a head row.
async fn head_version(
    tx: &tokio_postgres::Transaction<'_>,
    cart: &str,
) -> Result<Option<u64>, tokio_postgres::Error> {
    let row = tx
        .query_opt("SELECT version FROM cart_heads WHERE cart_id = $1 FOR UPDATE", &[&cart])
        .await?;
    Ok(row.map(|r| r.get::<_, i64>(0) as u64))
}

#[async_trait]
impl EventStore for PgStore {
    async fn load(&self, cart: &str) -> Result<Loaded, StoreError> {
        let client = self.client().await?;
        // One statement, so the snapshot and the events after it are read
        // as of one moment (a snapshot saved meanwhile deletes events).
        let rows = client
            .query(
                "WITH s AS (SELECT version, ts_ms, state FROM cart_snapshots WHERE cart_id = $1) \
                 SELECT 0 AS part, version AS seq, 0::int2 AS kind, ts_ms, state AS payload, \
                        NULL::text AS idem_key, NULL::int8 AS idem_fp FROM s \
                 UNION ALL \
                 SELECT 1, seq, kind, ts_ms, payload, idem_key, idem_fp FROM cart_events \
                 WHERE cart_id = $1 AND seq > coalesce((SELECT version FROM s), 0) \
                 ORDER BY 1, 2",
                &[&cart],
            )
            .await
            .map_err(|e| self.failed(e))?;
        let mut loaded = Loaded::default();
        for r in &rows {
            let part: i32 = r.get(0);
            let seq = r.get::<_, i64>(1) as u64;
            if part == 0 {
                loaded.snapshot =
                    Some(Snapshot { version: seq, timestamp_ms: r.get(3), state: r.get(4) });
                continue;
            }
            let kind: i16 = r.get(2);
            let key: Option<String> = r.get(5);
            let fp: Option<i64> = r.get(6);
            loaded.events.push(Event {
                seq,
                kind: u8::try_from(kind)
                    .map_err(|_| StoreError::Corrupt(format!("event kind {kind}")))?,
                timestamp_ms: r.get(3),
                payload: r.get(4),
                idempotency: key
                    .map(|key| IdempotencyTag { key, fingerprint: fp.unwrap_or(0) as u64 }),
            });
        }
        Ok(loaded)
    }

    async fn save_snapshot(&self, cart: &str, snapshot: Snapshot) -> Result<(), StoreError> {
        crate::check_cart_id(cart)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.failed(e))?;
        let version = head_version(&tx, cart).await.map_err(|e| self.failed(e))?;
        match version {
            None | Some(0) => return Err(StoreError::NotFound),
            Some(v) if snapshot.version > v => {
                return Err(StoreError::Invalid(format!(
                    "a snapshot at version {} of a cart at version {v}",
                    snapshot.version
                )));
            }
            Some(_) => {}
        }
        let covered = to_i64(snapshot.version);
        tx.execute(
            "INSERT INTO cart_snapshots (cart_id, version, ts_ms, state) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (cart_id) DO UPDATE SET version = excluded.version, ts_ms = excluded.ts_ms, \
             state = excluded.state WHERE cart_snapshots.version < excluded.version",
            &[&cart, &covered, &snapshot.timestamp_ms, &snapshot.state],
        )
        .await
        .map_err(|e| self.failed(e))?;
        tx.execute("DELETE FROM cart_events WHERE cart_id = $1 AND seq <= $2", &[&cart, &covered])
            .await
            .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))
    }

    async fn erase(&self, cart: &str) -> Result<bool, StoreError> {
        crate::check_cart_id(cart)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.failed(e))?;
        let Some(version) = head_version(&tx, cart).await.map_err(|e| self.failed(e))? else {
            return Ok(false);
        };
        for statement in [
            "DELETE FROM cart_events WHERE cart_id = $1",
            "DELETE FROM cart_snapshots WHERE cart_id = $1",
            "DELETE FROM cart_heads WHERE cart_id = $1",
        ] {
            tx.execute(statement, &[&cart]).await.map_err(|e| self.failed(e))?;
        }
        tx.commit().await.map_err(|e| self.failed(e))?;
        Ok(version > 0)
    }

    async fn idle_carts(&self, before_ms: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT cart_id FROM cart_heads WHERE version > 0 AND touched_ms < $1 \
                 ORDER BY touched_ms LIMIT $2",
                &[&before_ms, &limit],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn import(&self, cart: &str, loaded: Loaded) -> Result<Appended, StoreError> {
        crate::committer::check_import(cart, &loaded)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.failed(e))?;
        tx.execute(
            "INSERT INTO cart_heads (cart_id, version, epoch, owner) VALUES ($1, 0, 0, '') \
             ON CONFLICT DO NOTHING",
            &[&cart],
        )
        .await
        .map_err(|e| self.failed(e))?;
        let row = tx
            .query_one(
                "SELECT h.version, h.epoch, (SELECT count(*) FROM cart_snapshots s WHERE s.cart_id = $1) \
                 FROM cart_heads h WHERE h.cart_id = $1 FOR UPDATE",
                &[&cart],
            )
            .await
            .map_err(|e| self.failed(e))?;
        let (version, epoch, snapshots): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if version > 0 || snapshots > 0 {
            return Err(StoreError::Conflict { expected: 0, actual: version as u64 });
        }
        let touched = loaded
            .events
            .iter()
            .map(|e| e.timestamp_ms)
            .chain(loaded.snapshot.as_ref().map(|s| s.timestamp_ms))
            .max()
            .unwrap_or(0);
        let imported = loaded.version();
        if let Some(s) = &loaded.snapshot {
            tx.execute(
                "INSERT INTO cart_snapshots (cart_id, version, ts_ms, state) VALUES ($1, $2, $3, $4)",
                &[&cart, &to_i64(s.version), &s.timestamp_ms, &s.state],
            )
            .await
            .map_err(|e| self.failed(e))?;
        }
        for e in &loaded.events {
            tx.execute(
                "INSERT INTO cart_events (cart_id, seq, kind, ts_ms, payload, idem_key, idem_fp) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &cart,
                    &to_i64(e.seq),
                    &i16::from(e.kind),
                    &e.timestamp_ms,
                    &e.payload,
                    &e.idempotency.as_ref().map(|t| t.key.as_str()),
                    &e.idempotency.as_ref().map(|t| t.fingerprint as i64),
                ],
            )
            .await
            .map_err(|e| self.failed(e))?;
        }
        let epoch = epoch as u64 + 1;
        tx.execute(
            "UPDATE cart_heads SET version = $2, epoch = $3, owner = $4, touched_ms = $5 WHERE cart_id = $1",
            &[&cart, &to_i64(imported), &to_i64(epoch), &crate::TOOL_OWNER, &touched],
        )
        .await
        .map_err(|e| self.failed(e))?;
        tx.commit().await.map_err(|e| self.failed(e))?;
        Ok(Appended { version: imported, epoch })
    }

    async fn append(
        &self,
        cart: &str,
        expected_version: u64,
        fence: Fence,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        let stopped = || StoreError::Unavailable("the PostgreSQL committer has stopped".into());
        let (request, answer) = AppendRequest::new(cart, expected_version, fence, events);
        self.appends.send(request).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn claim_of(&self, cart: &str) -> Result<Option<Claim>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT epoch, owner FROM cart_heads WHERE cart_id = $1 AND epoch > 0",
                &[&cart],
            )
            .await
            .map_err(|e| self.failed(e))?;
        Ok(row.map(|r| Claim { epoch: r.get::<_, i64>(0) as u64, owner: r.get(1) }))
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every acknowledged append is committed already.
        Ok(())
    }

    async fn secret_or_insert(
        &self,
        name: &str,
        candidate: [u8; SECRET_LEN],
    ) -> Result<[u8; SECRET_LEN], StoreError> {
        check_secret_name(name)?;
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO cart_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &candidate.as_slice()],
            )
            .await
            .map_err(|e| self.failed(e))?;
        let row = client
            .query_one("SELECT value FROM cart_secrets WHERE name = $1", &[&name])
            .await
            .map_err(|e| self.failed(e))?;
        let value: Vec<u8> = row.get(0);
        value
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("secret {name:?} is not {SECRET_LEN} bytes")))
    }

    async fn cart_ids(&self) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT cart_id FROM cart_heads WHERE version > 0", &[])
            .await
            .map_err(|e| self.failed(e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        cause: Option<Box<Layer>>,
    }

    #[test]
    fn unavailable_names_every_cause_once() {
        let server = Layer { text: "FATAL: database \"nope\" does not exist", cause: None };
        let driver = Layer { text: "db error", cause: Some(Box::new(server)) };
        let pool = Layer { text: "creating a connection: db error", cause: Some(Box::new(driver)) };
        let StoreError::Unavailable(text) = unavailable(pool) else { panic!("not Unavailable") };
        assert_eq!(
            text,
            "PostgreSQL: creating a connection: db error: FATAL: database \"nope\" does not exist"
        );
    }
}
