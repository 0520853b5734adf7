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
//! valid after it, is a torn tail from a crash mid-write. While holding the
//! lock (at open and before every commit) the file is truncated to the last
//! whole record and a warning is logged; without the lock the reader just
//! stops there, as another process may be writing it. A bad record *followed
//! by* valid ones is damage in the middle of acknowledged data: the store
//! refuses to open (or to write) rather than silently drop it.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::committer::{Command, Committer, SyncMetrics};
use crate::gather::Gather;
use crate::record::{self, CLAIM_KIND, HEADER_LEN};
use crate::sync::FsyncPolicy;
use crate::{AppendRequest, Appended, Claim, Event, EventStore, Fence, NewEvent, StoreError};

/// Name of the log file inside the data directory.
pub const LOG_FILE: &str = "events.log";
/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "LOCK";
/// The log file grows by this many zeroed bytes at a time.
pub const PREALLOCATE_BYTES: u64 = 4 << 20;

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

/// What the index knows of one cart.
#[derive(Debug, Default)]
pub(crate) struct CartIndex {
    /// Offsets of the cart's event records, in sequence order.
    pub offsets: Vec<u64>,
    /// The latest claim: epoch and owner.
    pub claim: Option<(u64, Box<str>)>,
}

impl CartIndex {
    pub(crate) fn epoch(&self) -> u64 {
        self.claim.as_ref().map_or(0, |(epoch, _)| *epoch)
    }
}

/// The index of the log and how far it has been read.
#[derive(Debug, Default)]
pub(crate) struct LogIndex {
    pub carts: HashMap<Box<str>, CartIndex>,
    /// Bytes of the log indexed so far; the next record starts here.
    pub scanned: u64,
    /// This process's committer is writing a batch after `scanned`, holding
    /// the directory lock: those bytes are its to publish, not to be read.
    pub committing: bool,
}

/// State shared by the committer thread and readers.
pub(crate) struct Shared {
    path: PathBuf,
    pub(crate) index: RwLock<LogIndex>,
    reader: File,
    poisoned: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn index_mut(&self) -> RwLockWriteGuard<'_, LogIndex> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn index(&self) -> RwLockReadGuard<'_, LogIndex> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn poison(&self, reason: String) {
        tracing::error!(%reason, "event log refuses further writes");
        let mut poisoned = self.poisoned.lock().unwrap_or_else(PoisonError::into_inner);
        poisoned.get_or_insert(reason);
    }

    pub(crate) fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Indexes what was appended since the last scan. With `repair` (only
    /// while holding the directory lock) a torn tail is truncated; without
    /// it, reading stops before an incomplete record.
    pub(crate) fn catch_up(
        &self,
        index: &mut LogIndex,
        repair: Option<&File>,
    ) -> Result<(), StoreError> {
        if !self.has_unread(index)? {
            return Ok(());
        }
        let end = scan(&self.path, index, repair.is_some())?;
        if let (Some(why), Some(file)) = (end.problem, repair) {
            truncate_torn_tail(&self.path, file, index.scanned, why)?;
        }
        Ok(())
    }

    /// Whether a record starts where the index ends: another process
    /// appended. One byte is read: a zero or the end of the file means no.
    fn has_unread(&self, index: &LogIndex) -> std::io::Result<bool> {
        let mut next = [0u8; 1];
        Ok(self.reader.read_at(&mut next, index.scanned)? == 1 && next[0] != 0)
    }

    /// The index if it is current (nobody else appended since it was last
    /// read); `None` if it first needs catching up. Costs one cached read.
    fn current_index(&self) -> Result<Option<RwLockReadGuard<'_, LogIndex>>, StoreError> {
        let index = self.index();
        Ok((index.committing || !self.has_unread(&index)?).then_some(index))
    }

    /// The cart's claim, from the index.
    fn claim_in(index: &LogIndex, cart: &str) -> Option<Claim> {
        index.carts.get(cart).and_then(|c| {
            c.claim.as_ref().map(|(epoch, owner)| Claim { epoch: *epoch, owner: owner.to_string() })
        })
    }

    /// The index, caught up with other processes' appends. While this
    /// process commits, it holds the directory lock, so nobody else can have
    /// appended: the index is current as it is.
    fn caught_up(&self) -> Result<RwLockReadGuard<'_, LogIndex>, StoreError> {
        if let Some(index) = self.current_index()? {
            return Ok(index);
        }
        let mut index = self.index_mut();
        if !index.committing {
            self.catch_up(&mut index, None)?;
        }
        drop(index);
        Ok(self.index())
    }

    fn read_event(&self, offset: u64) -> Result<(String, Event), StoreError> {
        let mut header = [0u8; HEADER_LEN];
        self.reader.read_exact_at(&mut header, offset)?;
        let corrupt = |why: &str| StoreError::Corrupt(format!("record at offset {offset}: {why}"));
        let h = record::decode_header(&header).map_err(corrupt)?;
        let mut body = vec![0u8; h.body_len];
        self.reader.read_exact_at(&mut body, offset + HEADER_LEN as u64)?;
        record::decode_body(h, &body).map_err(corrupt)
    }
}

/// The embedded event store: a checksummed append-only log with group commit.
pub struct FileStore {
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
        // Not O_APPEND: commits write at the end of the log, inside the
        // preallocated part of the file.
        let file =
            OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path)?;
        let started = Instant::now();
        let mut index = LogIndex::default();
        lock.lock()?;
        let scanned = scan(&path, &mut index, true).and_then(|end| match end.problem {
            Some(why) => truncate_torn_tail(&path, &file, index.scanned, why),
            None => trim_preallocated(&path, &file, index.scanned),
        });
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
        let shared = Arc::new(Shared {
            index: RwLock::new(index),
            reader: File::open(&path)?,
            path,
            poisoned: Mutex::new(None),
        });
        let (commands, rx) = mpsc::channel();
        let committer = Committer {
            file,
            lock,
            shared: Arc::clone(&shared),
            policy: options.fsync,
            gather: Gather::new(options.commit_wait),
            metrics: SyncMetrics::new(),
        };
        let committer = std::thread::Builder::new()
            .name("event-log-committer".into())
            .spawn(move || committer.run(rx))?;
        Ok(FileStore { shared, commands: Some(commands), committer: Some(committer) })
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

/// Where a scan stopped: at the end of the file, at zeroed (preallocated)
/// space, or at a problem.
struct ScanEnd {
    /// Why it stopped before the end of the file, if it did.
    problem: Option<&'static str>,
}

/// Indexes records from `index.scanned` to the end of the file, stopping at
/// the first incomplete or invalid record. When `locked` (no other process
/// can be writing), refuses with `Corrupt` if a valid record follows an
/// invalid one.
fn scan(path: &Path, index: &mut LogIndex, locked: bool) -> Result<ScanEnd, StoreError> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(index.scanned))?;
    let mut reader = BufReader::with_capacity(64 << 10, file);
    let mut body = Vec::new();
    let problem = loop {
        let mut header = [0u8; HEADER_LEN];
        match read_full(&mut reader, &mut header)? {
            0 => break None,
            _ if header[0] == 0 => break None,
            n if n < HEADER_LEN => break Some("incomplete record header"),
            _ => {}
        }
        let h = match record::decode_header(&header) {
            Ok(h) => h,
            Err(why) => break Some(why),
        };
        body.resize(h.body_len, 0);
        if read_full(&mut reader, &mut body)? < h.body_len {
            break Some("incomplete record body");
        }
        let (cart, event) = match record::decode_body(h, &body) {
            Ok(decoded) => decoded,
            Err(why) => break Some(why),
        };
        let entry = index.carts.entry(cart.into_boxed_str()).or_default();
        if event.kind == CLAIM_KIND {
            if event.seq <= entry.epoch() {
                break Some("claim epoch out of order");
            }
            let owner = String::from_utf8_lossy(&event.payload).into_owned().into_boxed_str();
            entry.claim = Some((event.seq, owner));
        } else {
            if event.seq != entry.offsets.len() as u64 + 1 {
                break Some("sequence number out of order");
            }
            entry.offsets.push(index.scanned);
        }
        index.scanned += (HEADER_LEN + h.body_len) as u64;
    };
    // Without the lock, another process may be writing the rest of this very
    // batch: stop at the incomplete record and read it next time.
    if locked
        && problem.is_some()
        && let Some(valid) = valid_record_after(path, index.scanned + 1)?
    {
        return Err(StoreError::Corrupt(format!(
            "{}: record at offset {} is damaged ({}) but a valid record follows at offset \
             {valid}; refusing to drop acknowledged events. Restore the file from a backup or \
             move it aside.",
            path.display(),
            index.scanned,
            problem.unwrap_or_default(),
        )));
    }
    Ok(ScanEnd { problem })
}

/// Cuts a torn tail off the log. Only called while holding the directory
/// lock, when no other process can be writing.
fn truncate_torn_tail(path: &Path, file: &File, at: u64, why: &str) -> Result<(), StoreError> {
    let file_len = file.metadata()?.len();
    tracing::warn!(
        path = %path.display(),
        offset = at,
        dropped_bytes = file_len.saturating_sub(at),
        reason = why,
        "torn tail in the event log: truncating to the last whole record"
    );
    file.set_len(at)?;
    file.sync_all()?;
    Ok(())
}

/// Cuts the preallocated (zeroed) space after the last record `at` off the
/// log, unless a valid record follows: then a zeroed block hides
/// acknowledged events and the log is refused. Only called while holding
/// the directory lock.
pub(crate) fn trim_preallocated(path: &Path, file: &File, at: u64) -> Result<(), StoreError> {
    if file.metadata()?.len() <= at {
        return Ok(());
    }
    if let Some(valid) = valid_record_after(path, at)? {
        return Err(StoreError::Corrupt(format!(
            "{}: zeroed bytes at offset {at} but a valid record follows at offset {valid}; \
             refusing to drop acknowledged events. Restore the file from a backup or move it \
             aside.",
            path.display(),
        )));
    }
    file.set_len(at)?;
    file.sync_all()?;
    Ok(())
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The offset of the first whole, valid record at or after `from`, if any.
fn valid_record_after(path: &Path, from: u64) -> Result<Option<u64>, StoreError> {
    let mut rest = Vec::new();
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    f.read_to_end(&mut rest)?;
    for start in 0..rest.len() {
        if rest[start] != record::MAGIC || rest.len() - start < HEADER_LEN {
            continue;
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&rest[start..start + HEADER_LEN]);
        let Ok(h) = record::decode_header(&header) else {
            continue;
        };
        let body_start = start + HEADER_LEN;
        let Some(body) = rest.get(body_start..body_start + h.body_len) else {
            continue;
        };
        if record::decode_body(h, body).is_ok() {
            return Ok(Some(from + start as u64));
        }
    }
    Ok(None)
}
