//! The embedded backend: every cart's events in one append-only log file.
//!
//! One shared log (rather than a file per cart) is what makes group commit
//! work: a single `fdatasync` covers the appends of many carts. An in-memory
//! index maps each cart to the offsets of its records; it is rebuilt by
//! scanning the log when the store opens.
//!
//! Recovery on open: a record that fails its length or checksum check, with
//! nothing valid after it, is a torn tail from a crash mid-write: the file is
//! truncated to the last whole record and a warning is logged. A bad record
//! *followed by* valid ones is damage in the middle of acknowledged data:
//! the store refuses to open rather than silently drop it.
//!
//! The data directory is locked for the lifetime of the store, so two
//! processes can never write one log.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, mpsc};
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::committer::{AppendRequest, Command, Committer};
use crate::record::{self, HEADER_LEN};
use crate::sync::FsyncPolicy;
use crate::{Event, EventStore, NewEvent, StoreError};

/// Name of the log file inside the data directory.
pub const LOG_FILE: &str = "events.log";
/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// Settings of a [`FileStore`].
#[derive(Debug, Clone)]
pub struct FileStoreOptions {
    /// Directory holding the log; created if missing.
    pub dir: PathBuf,
    /// When appends are synced.
    pub fsync: FsyncPolicy,
}

/// State shared by the committer thread and readers.
pub(crate) struct Shared {
    index: RwLock<HashMap<Box<str>, Vec<u64>>>,
    reader: File,
    poisoned: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn version(&self, cart: &str) -> u64 {
        let index = self.index.read().unwrap_or_else(PoisonError::into_inner);
        index.get(cart).map_or(0, |offsets| offsets.len() as u64)
    }

    pub(crate) fn publish<'a>(&self, appended: impl Iterator<Item = (&'a str, &'a [u64])>) {
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        for (cart, offsets) in appended {
            match index.get_mut(cart) {
                Some(existing) => existing.extend_from_slice(offsets),
                None => {
                    index.insert(cart.into(), offsets.to_vec());
                }
            }
        }
    }

    pub(crate) fn poison(&self, reason: String) {
        tracing::error!(%reason, "event log refuses further writes");
        let mut poisoned = self.poisoned.lock().unwrap_or_else(PoisonError::into_inner);
        poisoned.get_or_insert(reason);
    }

    pub(crate) fn poisoned(&self) -> Option<String> {
        self.poisoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn read_event(&self, offset: u64) -> Result<(String, Event), StoreError> {
        let mut header = [0u8; HEADER_LEN];
        self.reader.read_exact_at(&mut header, offset)?;
        let corrupt = |why: &str| StoreError::Corrupt(format!("record at offset {offset}: {why}"));
        let h = record::decode_header(&header).map_err(corrupt)?;
        let mut body = vec![0u8; h.body_len];
        self.reader
            .read_exact_at(&mut body, offset + HEADER_LEN as u64)?;
        record::decode_body(h, &body).map_err(corrupt)
    }
}

/// The embedded event store: a checksummed append-only log with group commit.
pub struct FileStore {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    _lock: File,
}

impl FileStore {
    /// Opens (or creates) the store in `options.dir`, recovering from a torn
    /// tail. Fails if another process holds the directory or the log is
    /// damaged in the middle.
    pub fn open(options: FileStoreOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&options.dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(options.dir.join(LOCK_FILE))?;
        lock.try_lock().map_err(|_| {
            StoreError::Unavailable(format!(
                "data directory {} is in use by another process",
                options.dir.display()
            ))
        })?;
        let path = options.dir.join(LOG_FILE);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let started = Instant::now();
        let (index, len) = scan(&path, &file)?;
        let events: usize = index.values().map(Vec::len).sum();
        tracing::info!(
            path = %path.display(),
            carts = index.len(),
            events,
            bytes = len,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "event log opened"
        );
        let shared = Arc::new(Shared {
            index: RwLock::new(index),
            reader: File::open(&path)?,
            poisoned: Mutex::new(None),
        });
        let (commands, rx) = mpsc::channel();
        let committer = Committer {
            file,
            len,
            shared: Arc::clone(&shared),
            policy: options.fsync,
        };
        std::thread::Builder::new()
            .name("event-log-committer".into())
            .spawn(move || committer.run(rx))?;
        Ok(FileStore {
            shared,
            commands,
            _lock: lock,
        })
    }

    fn send(&self, command: Command) -> Result<(), StoreError> {
        self.commands
            .send(command)
            .map_err(|_| StoreError::Unavailable("the event log committer has stopped".into()))
    }
}

#[async_trait]
impl EventStore for FileStore {
    async fn load(&self, cart: &str) -> Result<Vec<Event>, StoreError> {
        let offsets = {
            let index = self
                .shared
                .index
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            match index.get(cart) {
                Some(offsets) => offsets.clone(),
                None => return Ok(Vec::new()),
            }
        };
        let shared = Arc::clone(&self.shared);
        let cart = cart.to_owned();
        tokio::task::spawn_blocking(move || {
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
        .map_err(|e| StoreError::Unavailable(format!("log reader failed: {e}")))?
    }

    async fn append(
        &self,
        cart: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<u64, StoreError> {
        let started = Instant::now();
        let (reply, answer) = oneshot::channel();
        self.send(Command::Append(AppendRequest {
            cart: cart.to_owned(),
            expected: expected_version,
            events,
            reply,
        }))?;
        let result = answer
            .await
            .map_err(|_| StoreError::Unavailable("the event log committer has stopped".into()))?;
        metrics::histogram!("cart_log_append_duration_seconds").record(started.elapsed());
        result
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Flush(reply))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the event log committer has stopped".into()))?
    }

    async fn cart_ids(&self) -> Result<Vec<String>, StoreError> {
        let index = self
            .shared
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(index.keys().map(|k| k.to_string()).collect())
    }
}

type Index = HashMap<Box<str>, Vec<u64>>;

/// Reads the whole log, building the index. Truncates a torn tail; refuses
/// damage that is followed by valid records.
fn scan(path: &Path, file: &File) -> Result<(Index, u64), StoreError> {
    let mut index: Index = HashMap::new();
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut pos: u64 = 0;
    let mut body = Vec::new();
    let problem = loop {
        let mut header = [0u8; HEADER_LEN];
        match read_full(&mut reader, &mut header)? {
            0 => break None,
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
        let offsets = index.entry(cart.into_boxed_str()).or_default();
        if event.seq != offsets.len() as u64 + 1 {
            break Some("sequence number out of order");
        }
        offsets.push(pos);
        pos += (HEADER_LEN + h.body_len) as u64;
    };
    if let Some(why) = problem {
        let file_len = file.metadata()?.len();
        if let Some(valid) = valid_record_after(path, pos + 1)? {
            return Err(StoreError::Corrupt(format!(
                "{}: record at offset {pos} is damaged ({why}) but a valid record follows at \
                 offset {valid}; refusing to drop acknowledged events. Restore the file from \
                 a backup or move it aside.",
                path.display()
            )));
        }
        tracing::warn!(
            path = %path.display(),
            offset = pos,
            dropped_bytes = file_len - pos,
            reason = why,
            "torn tail in the event log: truncating to the last whole record"
        );
        file.set_len(pos)?;
        file.sync_all()?;
    }
    Ok((index, pos))
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
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(from))?;
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
