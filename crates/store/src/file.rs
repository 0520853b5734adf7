//! The embedded backend: every cart's events in one append-only log, kept
//! in segment files (`segments.rs`), safe to share between processes.
//!
//! One shared log (rather than a file per cart) is what makes group commit
//! work: a single `fdatasync` covers the appends of many carts. An in-memory
//! index maps each cart to its newest record, its version and its claim;
//! it is built by scanning the log and kept current by reading what other
//! processes appended ("catching up"). Each cart's entry is a few bytes: its
//! records are linked, newest first, so the index holds where the newest
//! one is, not an offset per event (`chain.rs`, `cart_index.rs`).
//!
//! Several processes may use one data directory (a cluster on a shared
//! volume). Each commit batch runs under an exclusive `flock` of
//! `data/LOCK`: catch up, check every append's expected version and claim
//! epoch against the now-current index, write, sync, release. A writer that is
//! behind, or whose claim was superseded, gets a conflict or is fenced; it can
//! never fork a cart's log.
//!
//! The active segment grows in preallocated steps of zeroed bytes
//! ([`PREALLOCATE_BYTES`]): a commit then writes inside the file, so its
//! `fdatasync` has no new file size to persist, which halves its cost on
//! ext4. A zero byte where a record would start is the end of the log.
//! Opening the log (and a clean shutdown) trims the preallocated tail.
//!
//! Recovery: a record that fails its length or checksum check, with nothing
//! valid after it and beyond the high-water mark (`high_water.rs`: what was
//! synced and acknowledged), is a torn tail from a crash mid-write. While holding the
//! lock (at open and before every commit) the file is truncated to the last
//! whole record and a warning is logged; without the lock the reader just
//! stops there, as another process may be writing it. A bad record *followed
//! by* valid ones, or within the high-water mark, is damage in acknowledged
//! data, and a log shorter than the mark (deleted, emptied, replaced) lost
//! acknowledged data: the store refuses to open (or to write) rather than
//! silently drop it, copying damaged bytes aside first.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::committer::{Command, Committer, SyncMetrics, Write};
use crate::gather::Gather;
use crate::high_water::{HighWater, Mark, Recorded};
use crate::log::{LogIndex, Shared};
use crate::segments::Listing;
use crate::sync::FsyncPolicy;
use crate::{
    AppendRequest, Appended, Claim, Compacted, EventStore, Fence, Loaded, NewEvent, SECRET_LEN,
    Snapshot, StoreError, check_secret_name,
};
use crate::{checkpoint, compaction};

/// Name of the log's first segment inside the data directory (see
/// `segments.rs` for the others).
pub const LOG_FILE: &str = "events.log";
/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "LOCK";
pub use crate::compaction::{CRASH_AT_ENV, CRASH_POINTS};
pub use crate::high_water::HIGH_WATER_FILE;
pub use crate::log::PREALLOCATE_BYTES;
pub use crate::segments::{compacted_file_name, holds_log, segment_file_name};

/// When the store compacts by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoCompaction {
    /// Never below this log size.
    pub min_bytes: u64,
    /// Once the log has grown to this many times its size after the last
    /// compaction (or at open).
    pub growth: u64,
    /// How often the size is looked at.
    pub check_every: Duration,
}

impl Default for AutoCompaction {
    fn default() -> Self {
        AutoCompaction { min_bytes: 64 << 20, growth: 2, check_every: Duration::from_secs(10) }
    }
}

/// Settings of a [`FileStore`].
#[derive(Debug, Clone)]
pub struct FileStoreOptions {
    /// Directory holding the log; created if missing.
    pub dir: PathBuf,
    /// When appends are synced.
    pub fsync: FsyncPolicy,
    /// Under [`FsyncPolicy::Always`], the longest the committer waits after
    /// a commit for the clients it answered to write again, so their appends
    /// share the next sync (it waits no longer than the last sync took, and
    /// stops when appends pause; see `gather.rs`). Zero commits whatever is
    /// queued at once.
    pub commit_wait: Duration,
    /// When to compact without being asked; `None`: only when asked.
    pub auto_compaction: Option<AutoCompaction>,
    /// Write a checkpoint of the index (`checkpoint.rs`) once the log has
    /// grown by this many bytes since the last one (looked at every
    /// [`AutoCompaction::check_every`], or every 10 s), after every
    /// compaction and when the store closes; opening then scans only the log
    /// after the checkpoint. `None`: never.
    pub checkpoint_every: Option<u64>,
    /// The active segment is sealed, and the next begun, once it holds
    /// this many bytes; compaction rewrites sealed segments only.
    pub segment_bytes: u64,
}

impl FileStoreOptions {
    /// Default of [`FileStoreOptions::commit_wait`].
    pub const DEFAULT_COMMIT_WAIT: Duration = Duration::from_millis(2);
    /// Default of [`FileStoreOptions::checkpoint_every`]: scanning this much
    /// log takes about 50 ms.
    pub const DEFAULT_CHECKPOINT_EVERY: u64 = 16 << 20;
    /// Default of [`FileStoreOptions::segment_bytes`].
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

    /// Options for a store in `dir` with the default commit wait and
    /// automatic compaction.
    pub fn new(dir: impl Into<PathBuf>, fsync: FsyncPolicy) -> Self {
        FileStoreOptions {
            dir: dir.into(),
            fsync,
            commit_wait: Self::DEFAULT_COMMIT_WAIT,
            auto_compaction: Some(AutoCompaction::default()),
            checkpoint_every: Some(Self::DEFAULT_CHECKPOINT_EVERY),
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// The embedded event store: a checksummed append-only log in segments
/// with group commit, whose sealed segments are compacted.
pub struct FileStore {
    dir: PathBuf,
    shared: Arc<Shared>,
    /// `None` only while dropping.
    commands: Option<mpsc::Sender<Command>>,
    committer: Option<std::thread::JoinHandle<()>>,
    /// `None` only while dropping.
    compactions: Option<mpsc::Sender<CompactRequest>>,
    /// Returns where it last checkpointed the index.
    compactor: Option<std::thread::JoinHandle<checkpoint::Position>>,
    checkpoints: bool,
}

/// A caller waiting for a compaction.
type CompactRequest = oneshot::Sender<Result<Compacted, StoreError>>;

impl Drop for FileStore {
    /// Stops the compactor, then lets the committer finish what is queued,
    /// sync and trim the preallocated tail before the store is gone; then
    /// checkpoints the index, unless the last checkpoint already has it.
    fn drop(&mut self) {
        self.compactions = None;
        let checkpointed = self.compactor.take().and_then(|compactor| {
            compactor.join().map_err(|_| tracing::error!("the event log compactor panicked")).ok()
        });
        self.commands = None;
        if let Some(committer) = self.committer.take()
            && committer.join().is_err()
        {
            tracing::error!("the event log committer panicked");
        }
        let now = {
            let index = self.shared.index();
            checkpoint::Position { generation: index.file.generation, scanned: index.scanned }
        };
        if self.checkpoints
            && now.scanned > 0
            && checkpointed != Some(now)
            && let Err(e) = checkpoint::write(&self.shared)
        {
            tracing::warn!(error = %e, "could not checkpoint the event log's index at close");
        }
    }
}

impl FileStore {
    /// Opens (or creates) the store in `options.dir`, recovering from a torn
    /// tail or an unfinished compaction. Fails if the log is damaged in the
    /// middle or shorter than what was acknowledged.
    pub fn open(options: FileStoreOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&options.dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(options.dir.join(LOCK_FILE))?;
        let started = Instant::now();
        lock.lock()?;
        let opened = open_locked(&options.dir);
        lock.unlock()?;
        let (file, index, high_water, checkpointed) = opened?;
        let events: u64 = index.carts.values().map(|c| u64::from(c.since_snapshot())).sum();
        tracing::info!(
            path = %index.file.active().path.display(),
            segments = index.file.segments.len(),
            generation = index.file.generation,
            carts = index.carts.len(),
            events_since_snapshots = events,
            bytes = index.scanned,
            from_checkpoint = checkpointed.scanned,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "event log opened"
        );
        let metrics = SyncMetrics::new();
        let size_at_open = index.file.disk_bytes(index.scanned);
        metrics.record_size(&index);
        metrics::gauge!(crate::families::LOG_OPEN_DURATION.name)
            .set(started.elapsed().as_secs_f64());
        let base = index.file.active().base;
        let shared = Arc::new(Shared::new(options.dir.clone(), index));
        let (commands, rx) = mpsc::channel();
        let committer = Committer {
            file,
            base,
            segment_bytes: options.segment_bytes.max(1),
            lock,
            shared: Arc::clone(&shared),
            policy: options.fsync,
            gather: Gather::new(options.commit_wait),
            metrics,
            high_water,
        };
        let committer = std::thread::Builder::new()
            .name("event-log-committer".into())
            .spawn(move || committer.run(rx))?;
        let (compactions, requests) = mpsc::channel();
        let compactor = Compactor {
            shared: Arc::clone(&shared),
            commands: commands.clone(),
            auto: options.auto_compaction,
            baseline: size_at_open,
            checkpoint_every: options.checkpoint_every,
            checkpointed,
            checkpoint_bytes: 0,
        };
        let compactor = std::thread::Builder::new()
            .name("event-log-compactor".into())
            .spawn(move || compactor.run(requests))?;
        Ok(FileStore {
            dir: options.dir,
            shared,
            commands: Some(commands),
            committer: Some(committer),
            compactions: Some(compactions),
            compactor: Some(compactor),
            checkpoints: options.checkpoint_every.is_some(),
        })
    }

    fn send(&self, command: Command) -> Result<(), StoreError> {
        self.commands.as_ref().and_then(|commands| commands.send(command).ok()).ok_or_else(stopped)
    }

    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Write,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Write(make(reply)))?;
        answer.await.map_err(|_| stopped())?
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| StoreError::Unavailable(format!("log reader failed: {e}")))?
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the event log committer has stopped".into())
}

/// Opens the log under the directory lock: checks it against the
/// high-water mark, reads its index checkpoint and scans the log after it,
/// recovers its tail, deletes the files it no longer needs. Returns the
/// active segment for writing and where the checkpoint was (`scanned` 0
/// without one).
fn open_locked(
    dir: &std::path::Path,
) -> Result<(std::fs::File, LogIndex, HighWater, checkpoint::Position), StoreError> {
    let (mut high_water, mark) = HighWater::open(dir)?;
    let listing = Listing::read(dir)?;
    let acknowledged = match mark {
        Some(Recorded::Logical(bytes)) => bytes,
        // A store from before segments: its mark counts bytes of one
        // generation of the log, which is the first segment now.
        Some(Recorded::Legacy { generation, bytes }) if listing.generation() == 0 => {
            let newest = listing.legacy.last().copied().unwrap_or(0);
            if generation > newest {
                return Err(StoreError::Corrupt(format!(
                    "{}: generation {generation} of the log was acknowledged, but the newest log \
                     here is generation {newest}: the compacted log was deleted. Restore the \
                     data directory from a backup; or, to accept the loss, delete {}.",
                    dir.display(),
                    dir.join(HIGH_WATER_FILE).display(),
                )));
            }
            // A compaction renamed its log into place and died before
            // moving the mark: the new log was synced whole before.
            if generation < newest { 0 } else { bytes }
        }
        Some(Recorded::Legacy { bytes, .. }) => bytes,
        None => 0,
    };
    let log = crate::log::open_files(dir)?;
    let generation = log.generation;
    let mut index = checkpoint::load(dir, &log).unwrap_or_else(|| LogIndex::new(log));
    let checkpointed = checkpoint::Position { generation, scanned: index.scanned };
    crate::log::recover(&mut index, acknowledged)?;
    high_water.record_now(Mark { bytes: index.scanned }, Instant::now())?;
    compaction::remove_superseded(dir, generation);
    // Not O_APPEND: commits write at the end of the log, inside the
    // preallocated part of the file.
    let file = OpenOptions::new().read(true).write(true).open(&index.file.active().path)?;
    Ok((file, index, high_water, checkpointed))
}

/// Runs `work` on a thread of its own at a lower CPU priority (nice 10; on
/// Linux the nice value is a thread's own) and waits for it: the copy of a
/// compaction is background work that on a machine of two cores would
/// otherwise take a core from the requests. Only work that holds no lock
/// the committer or readers take may run so (a thread preempted while
/// holding one would stall them: priority inversion); a thread's nice
/// value cannot be raised back without privilege, hence the thread. A
/// failure to lower it only costs that, so it is logged.
fn at_lower_priority<T: Send>(work: impl FnOnce() -> T + Send) -> Result<T, StoreError> {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new().name("cart-compaction".into()).spawn_scoped(
            scope,
            || {
                let thread = rustix::thread::gettid();
                if let Err(e) = rustix::process::setpriority_process(Some(thread), COMPACTION_NICE)
                {
                    tracing::debug!(error = %e, "could not lower the compaction's priority");
                }
                work()
            },
        )?;
        Ok(worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })
}

/// The nice value compaction copies at.
const COMPACTION_NICE: i32 = 10;

/// How often the log's size is looked at when only checkpoints are
/// automatic.
const CHECKPOINT_CHECK_EVERY: Duration = Duration::from_secs(10);

/// The store's maintenance thread: runs compactions when asked and, per
/// [`AutoCompaction`], when the log has grown; checkpoints the index per
/// [`FileStoreOptions::checkpoint_every`].
struct Compactor {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    auto: Option<AutoCompaction>,
    /// The log's size after the last compaction (or at open).
    baseline: u64,
    checkpoint_every: Option<u64>,
    /// Where the last checkpoint was taken (or read at open).
    checkpointed: checkpoint::Position,
    /// The size of the last checkpoint written (0 before the first).
    checkpoint_bytes: u64,
}

impl Compactor {
    /// Serves until the store closes; returns where it last checkpointed.
    fn run(mut self, requests: mpsc::Receiver<CompactRequest>) -> checkpoint::Position {
        let tick = match (self.auto, self.checkpoint_every) {
            (Some(auto), _) => Some(auto.check_every),
            (None, Some(_)) => Some(CHECKPOINT_CHECK_EVERY),
            (None, None) => None,
        };
        // A log opened without a checkpoint (or far past it) gets one now,
        // not only after the first tick.
        self.checkpoint_if_due();
        loop {
            let request = match tick {
                Some(tick) => match requests.recv_timeout(tick) {
                    Ok(request) => Some(request),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return self.checkpointed,
                },
                None => match requests.recv() {
                    Ok(request) => Some(request),
                    Err(_) => return self.checkpointed,
                },
            };
            match request {
                Some(reply) => {
                    let result = self.compact();
                    let _ = reply.send(result);
                }
                None if self.due() => {
                    if let Err(e) = self.compact() {
                        tracing::warn!(error = %e, "automatic compaction of the event log failed");
                    }
                }
                None => {
                    // Another process's appends are read now and then even
                    // when nothing here asks, so this one is never a whole
                    // compaction behind.
                    if let Err(e) = self.shared.caught_up() {
                        tracing::warn!(error = %e, "could not read the event log's new records");
                    }
                    self.checkpoint_if_due();
                }
            }
        }
    }

    /// Checkpoints the index if the log moved to a new generation or grew
    /// by `checkpoint_every` since the last checkpoint, and by four times
    /// that checkpoint's size: appends wait while the index is encoded,
    /// which costs in proportion to the carts, so a large index is
    /// checkpointed less often (the log scanned at open stays within four
    /// times the checkpoint read).
    fn checkpoint_if_due(&mut self) {
        let Some(every) = self.checkpoint_every else {
            return;
        };
        let now = {
            let index = self.shared.index();
            checkpoint::Position { generation: index.file.generation, scanned: index.scanned }
        };
        let grown = now.scanned.saturating_sub(self.checkpointed.scanned);
        let due = grown >= every.max(1).max(self.checkpoint_bytes.saturating_mul(4));
        if now.generation == self.checkpointed.generation && !due {
            return;
        }
        match checkpoint::write(&self.shared) {
            Ok((position, bytes)) => {
                self.checkpointed = position;
                self.checkpoint_bytes = bytes;
            }
            Err(e) => tracing::warn!(error = %e, "could not checkpoint the event log's index"),
        }
    }

    fn due(&self) -> bool {
        let size = {
            let index = self.shared.index();
            index.file.disk_bytes(index.scanned)
        };
        self.auto.is_some_and(|a| {
            size >= a.min_bytes && size >= self.baseline.saturating_mul(a.growth.max(1))
        })
    }

    fn compact(&mut self) -> Result<Compacted, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Seal(reply)).map_err(|_| stopped())?;
        let sealed = answer.blocking_recv().map_err(|_| stopped())??;
        if sealed.end == sealed.file.generation {
            // Nothing was written since the last compaction.
            let bytes = sealed.file.disk_bytes(sealed.end);
            let carts = sealed.carts.values().filter(|c| c.version() > 0).count() as u64;
            return Ok(Compacted { bytes_before: bytes, bytes_after: bytes, carts });
        }
        let sealed_generation = sealed.end;
        let dir = self.shared.dir();
        let prepared = at_lower_priority(|| compaction::prepare(dir, sealed))??;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::FinishCompaction(Box::new(prepared), reply))
            .map_err(|_| stopped())?;
        let compacted = answer.blocking_recv().map_err(|_| stopped())??;
        // Off the committer, so appends do not wait for the deletions.
        compaction::remove_superseded(self.shared.dir(), sealed_generation);
        compaction::crash_point("removed");
        self.baseline = compacted.bytes_after;
        self.checkpoint_if_due();
        Ok(compacted)
    }
}

#[async_trait]
impl EventStore for FileStore {
    async fn load(&self, cart: &str) -> Result<Loaded, StoreError> {
        // A new cart (the common activation) is answered without a trip to
        // the blocking pool: the index alone says it has no events.
        if let Some(index) = self.shared.current_index()?
            && !index.carts.contains_key(cart)
        {
            return Ok(Loaded::default());
        }
        let cart = cart.to_owned();
        self.blocking(move |shared| {
            let (file, entry, unlinked) = {
                let index = shared.caught_up()?;
                match index.carts.get(cart.as_str()) {
                    Some(c) => (index.file.clone(), *c, index.unlinked.get(cart.as_str()).cloned()),
                    None => return Ok(Loaded::default()),
                }
            };
            crate::chain::read_cart(&file, &cart, &entry, unlinked)
        })
        .await
    }

    async fn append(
        &self,
        cart: &str,
        expected_version: u64,
        fence: Fence,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        let (request, answer) = AppendRequest::new(cart, expected_version, fence, events);
        self.send(Command::Write(Write::Append(request)))?;
        answer.await.map_err(|_| stopped())?
    }

    async fn save_snapshot(&self, cart: &str, snapshot: Snapshot) -> Result<(), StoreError> {
        crate::check_cart_id(cart)?;
        let cart = cart.to_owned();
        self.write(|reply| Write::Snapshot { cart, snapshot, reply }).await
    }

    async fn erase(&self, cart: &str) -> Result<bool, StoreError> {
        crate::check_cart_id(cart)?;
        let cart = cart.to_owned();
        self.write(|reply| Write::Erase { cart, reply }).await
    }

    async fn idle_carts(&self, before_ms: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        self.blocking(move |shared| {
            let index = shared.caught_up()?;
            let mut idle: Vec<(i64, &str)> = index
                .carts
                .iter()
                .filter(|(_, c)| c.version() > 0 && c.touched_ms() < before_ms)
                .map(|(id, c)| (c.touched_ms(), id))
                .collect();
            idle.sort_unstable();
            Ok(idle.into_iter().take(limit).map(|(_, id)| id.to_owned()).collect())
        })
        .await
    }

    async fn import(&self, cart: &str, loaded: Loaded) -> Result<Appended, StoreError> {
        let cart = cart.to_owned();
        self.write(|reply| Write::Import { cart, loaded, reply }).await
    }

    async fn compact(&self) -> Result<Compacted, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.compactions
            .as_ref()
            .and_then(|c| c.send(reply).ok())
            .ok_or_else(|| StoreError::Unavailable("the event log compactor has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the event log compactor has stopped".into()))?
    }

    async fn claim_of(&self, cart: &str) -> Result<Option<Claim>, StoreError> {
        if let Some(index) = self.shared.current_index()? {
            return Ok(Shared::claim_in(&index, cart));
        }
        let cart = cart.to_owned();
        self.blocking(move |shared| {
            let index = shared.caught_up()?;
            Ok(Shared::claim_in(&index, &cart))
        })
        .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Flush(reply))?;
        answer.await.map_err(|_| stopped())?
    }

    async fn secret_or_insert(
        &self,
        name: &str,
        candidate: [u8; SECRET_LEN],
    ) -> Result<[u8; SECRET_LEN], StoreError> {
        check_secret_name(name)?;
        let path = self.dir.join(format!("{name}.secret"));
        tokio::task::spawn_blocking(move || secret_file(&path, candidate))
            .await
            .map_err(|e| StoreError::Unavailable(format!("secret reader failed: {e}")))?
    }

    async fn cart_ids(&self) -> Result<Vec<String>, StoreError> {
        self.blocking(|shared| {
            let index = shared.caught_up()?;
            Ok(index
                .carts
                .iter()
                .filter(|(_, c)| c.version() > 0)
                .map(|(k, _)| k.to_string())
                .collect())
        })
        .await
    }
}

/// The secret in `path`, stored as `candidate` first if the file does not
/// exist. Processes racing to make it agree: each writes its candidate to a
/// file of its own and hard-links it into place, which only the first does;
/// the others read it.
fn secret_file(
    path: &std::path::Path,
    candidate: [u8; SECRET_LEN],
) -> Result<[u8; SECRET_LEN], StoreError> {
    if !path.exists() {
        let hex: String = candidate.iter().map(|b| format!("{b:02x}")).collect();
        let candidate =
            path.with_extension(format!("secret.{}.{}", &hex[..16], std::process::id()));
        std::fs::write(&candidate, hex)?;
        std::fs::File::open(&candidate)?.sync_all()?;
        let linked = std::fs::hard_link(&candidate, path);
        std::fs::remove_file(&candidate)?;
        match linked {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
    let text = std::fs::read_to_string(path)?;
    let corrupt = || StoreError::Corrupt(format!("{}: not a secret", path.display()));
    let text = text.trim();
    if text.len() != SECRET_LEN * 2 {
        return Err(corrupt());
    }
    let mut secret = [0u8; SECRET_LEN];
    for (i, byte) in secret.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2).ok_or_else(corrupt)?, 16)
            .map_err(|_| corrupt())?;
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
    }

    #[test]
    fn only_the_work_runs_at_the_lower_priority() {
        let before = own_nice();
        let inside = at_lower_priority(own_nice).unwrap();
        // (A caller already below it may stay there: raising needs privilege.)
        assert!(before > COMPACTION_NICE || inside == COMPACTION_NICE, "{before} → {inside}");
        assert_eq!(own_nice(), before, "the calling thread keeps its priority");
    }
}
