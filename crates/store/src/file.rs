//! The embedded backend: every cart's events in one append-only log file,
//! safe to share between processes.
//!
//! One shared log (rather than a file per cart) is what makes group commit
//! work: a single `fdatasync` covers the appends of many carts. An in-memory
//! index maps each cart to the offsets of its records and its current claim;
//! it is built by scanning the log and kept current by reading what other
//! processes appended ("catching up").
//!
//! Several processes may use one data directory (a cluster on a shared
//! volume). Each commit batch runs under an exclusive `flock` of
//! `data/LOCK`: catch up, check every append's expected version and claim
//! epoch against the now-current index, write, sync, release. A writer that is
//! behind, or whose claim was superseded, gets a conflict or is fenced; it can
//! never fork a cart's log.
//!
//! The file grows in preallocated steps of zeroed bytes
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

use crate::committer::{Command, Committer, SyncMetrics};
use crate::gather::Gather;
use crate::high_water::HighWater;
use crate::log::{LogIndex, Shared};
use crate::sync::FsyncPolicy;
use crate::{
    AppendRequest, Appended, Claim, Event, EventStore, Fence, NewEvent, SECRET_LEN, StoreError,
    check_secret_name,
};

/// Name of the log file inside the data directory.
pub const LOG_FILE: &str = "events.log";
/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "LOCK";
pub use crate::high_water::HIGH_WATER_FILE;
pub use crate::log::PREALLOCATE_BYTES;

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
}

impl FileStoreOptions {
    /// Default of [`FileStoreOptions::commit_wait`].
    pub const DEFAULT_COMMIT_WAIT: Duration = Duration::from_millis(2);

    /// Options for a store in `dir` with the default commit wait.
    pub fn new(dir: impl Into<PathBuf>, fsync: FsyncPolicy) -> Self {
        FileStoreOptions { dir: dir.into(), fsync, commit_wait: Self::DEFAULT_COMMIT_WAIT }
    }
}

/// The embedded event store: a checksummed append-only log with group commit.
pub struct FileStore {
    dir: PathBuf,
    shared: Arc<Shared>,
    /// `None` only while dropping.
    commands: Option<mpsc::Sender<Command>>,
    committer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FileStore {
    /// Lets the committer finish what is queued, sync and trim the
    /// preallocated tail before the store is gone.
    fn drop(&mut self) {
        self.commands = None;
        if let Some(committer) = self.committer.take()
            && committer.join().is_err()
        {
            tracing::error!("the event log committer panicked");
        }
    }
}

impl FileStore {
    /// Opens (or creates) the store in `options.dir`, recovering from a torn
    /// tail. Fails if the log is damaged in the middle.
    pub fn open(options: FileStoreOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&options.dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(options.dir.join(LOCK_FILE))?;
        let path = options.dir.join(LOG_FILE);
        let (mut high_water, acknowledged) = HighWater::open(&options.dir)?;
        // Not O_APPEND: commits write at the end of the log, inside the
        // preallocated part of the file.
        let file =
            OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path)?;
        let started = Instant::now();
        let mut index = LogIndex::default();
        lock.lock()?;
        let scanned = crate::log::recover(&path, &file, &mut index, acknowledged.unwrap_or(0))
            .and_then(|()| Ok(high_water.record_now(index.scanned, Instant::now())?));
        lock.unlock()?;
        scanned?;
        let events: usize = index.carts.values().map(|c| c.offsets.len()).sum();
        tracing::info!(
            path = %path.display(),
            carts = index.carts.len(),
            events,
            bytes = index.scanned,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "event log opened"
        );
        let metrics = SyncMetrics::new();
        metrics.log_bytes.set(index.scanned as f64);
        metrics.carts.set(index.carts.len() as f64);
        metrics::gauge!("cart_log_open_duration_seconds").set(started.elapsed().as_secs_f64());
        let shared = Arc::new(Shared::new(path, index)?);
        let (commands, rx) = mpsc::channel();
        let committer = Committer {
            file,
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
        Ok(FileStore {
            dir: options.dir,
            shared,
            commands: Some(commands),
            committer: Some(committer),
        })
    }

    fn send(&self, command: Command) -> Result<(), StoreError> {
        self.commands
            .as_ref()
            .and_then(|commands| commands.send(command).ok())
            .ok_or_else(|| StoreError::Unavailable("the event log committer has stopped".into()))
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

#[async_trait]
impl EventStore for FileStore {
    async fn load(&self, cart: &str) -> Result<Vec<Event>, StoreError> {
        // A new cart (the common activation) is answered without a trip to
        // the blocking pool: the index alone says it has no events.
        if let Some(index) = self.shared.current_index()?
            && !index.carts.contains_key(cart)
        {
            return Ok(Vec::new());
        }
        let cart = cart.to_owned();
        self.blocking(move |shared| {
            let offsets = match shared.caught_up()?.carts.get(cart.as_str()) {
                Some(c) => c.offsets.clone(),
                None => return Ok(Vec::new()),
            };
            offsets
                .iter()
                .map(|&offset| {
                    let (owner, event) = shared.read_event(offset)?;
                    if owner != cart {
                        return Err(StoreError::Corrupt(format!(
                            "record at offset {offset} belongs to {owner}, not {cart}"
                        )));
                    }
                    Ok(event)
                })
                .collect()
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
        self.send(Command::Append(request))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the event log committer has stopped".into()))?
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
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the event log committer has stopped".into()))?
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
                .filter(|(_, c)| !c.offsets.is_empty())
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
