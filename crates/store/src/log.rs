//! The log on disk and its in-memory index, shared by the committer thread
//! (which writes) and the store's readers: scanning, catching up with other
//! processes' appends, and recovery from a torn or preallocated tail.
//!
//! The file format and its invariants are described with the `file` module.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::record::{self, CLAIM_KIND, HEADER_LEN};
use crate::{Claim, Event, StoreError};

/// The log file grows by this many zeroed bytes at a time.
pub const PREALLOCATE_BYTES: u64 = 4 << 20;

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
    /// State for the log at `path`, indexed as far as `index` says.
    pub(crate) fn new(path: PathBuf, index: LogIndex) -> std::io::Result<Self> {
        Ok(Shared {
            index: RwLock::new(index),
            reader: File::open(&path)?,
            path,
            poisoned: Mutex::new(None),
        })
    }

    pub(crate) fn index_mut(&self) -> RwLockWriteGuard<'_, LogIndex> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn index(&self) -> RwLockReadGuard<'_, LogIndex> {
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
    pub(crate) fn current_index(
        &self,
    ) -> Result<Option<RwLockReadGuard<'_, LogIndex>>, StoreError> {
        let index = self.index();
        Ok((index.committing || !self.has_unread(&index)?).then_some(index))
    }

    /// The cart's claim, from the index.
    pub(crate) fn claim_in(index: &LogIndex, cart: &str) -> Option<Claim> {
        index.carts.get(cart).and_then(|c| {
            c.claim.as_ref().map(|(epoch, owner)| Claim { epoch: *epoch, owner: owner.to_string() })
        })
    }

    /// The index, caught up with other processes' appends. While this
    /// process commits, it holds the directory lock, so nobody else can have
    /// appended: the index is current as it is.
    pub(crate) fn caught_up(&self) -> Result<RwLockReadGuard<'_, LogIndex>, StoreError> {
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

    pub(crate) fn read_event(&self, offset: u64) -> Result<(String, Event), StoreError> {
        let mut header = [0u8; HEADER_LEN];
        self.reader.read_exact_at(&mut header, offset)?;
        let corrupt = |why: &str| StoreError::Corrupt(format!("record at offset {offset}: {why}"));
        let h = record::decode_header(&header).map_err(corrupt)?;
        let mut body = vec![0u8; h.body_len];
        self.reader.read_exact_at(&mut body, offset + HEADER_LEN as u64)?;
        record::decode_body(h, &body).map_err(corrupt)
    }
}

/// Indexes the whole log at `path` and repairs its tail: a torn record is
/// cut off, preallocated space trimmed. The log's first `acknowledged` bytes
/// were synced and acknowledged (the high-water mark): a log that ends
/// before them, or is damaged within them, is refused, the damaged bytes
/// copied aside first. Only called while holding the directory lock.
pub(crate) fn recover(
    path: &Path,
    file: &File,
    index: &mut LogIndex,
    acknowledged: u64,
) -> Result<(), StoreError> {
    match scan(path, index, true)?.problem {
        Some(why) if index.scanned < acknowledged => {
            let aside = quarantine(path, index.scanned)?;
            tracing::error!(
                path = %path.display(),
                offset = index.scanned,
                reason = why,
                acknowledged,
                copied_to = %aside.display(),
                "damaged record in the acknowledged part of the event log"
            );
            Err(StoreError::Corrupt(format!(
                "{}: the record at offset {} is damaged ({why}), inside the {acknowledged} bytes \
                 that were acknowledged; its bytes are copied to {}. {}",
                path.display(),
                index.scanned,
                aside.display(),
                crate::high_water::lost_acknowledged(path, index.scanned, acknowledged)
            )))
        }
        Some(why) => truncate_torn_tail(path, file, index.scanned, why),
        None => {
            trim_preallocated(path, file, index.scanned)?;
            if index.scanned < acknowledged {
                return Err(crate::high_water::shorter_than_acknowledged(
                    path,
                    index.scanned,
                    acknowledged,
                ));
            }
            Ok(())
        }
    }
}

/// Copies the log's bytes from `at` to its end (without trailing
/// preallocated zeros) to `events.log.damaged-at-<at>`, synced; returns
/// that path.
fn quarantine(path: &Path, at: u64) -> Result<std::path::PathBuf, StoreError> {
    let mut rest = Vec::new();
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(at))?;
    f.read_to_end(&mut rest)?;
    let end = rest.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".damaged-at-{at}"));
    let aside = path.with_file_name(name);
    std::fs::write(&aside, &rest[..end])?;
    File::open(&aside)?.sync_all()?;
    Ok(aside)
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
