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
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::cart_index::{CartMap, OutOfRange, Owners};
use crate::record::{
    self, CLAIM_KIND, Decoded, ERASED_KIND, HEADER_LEN, Link, MOVED_KIND, SNAPSHOT_KIND,
};
use crate::{Claim, StoreError};

/// The log file grows by this many zeroed bytes at a time.
pub const PREALLOCATE_BYTES: u64 = 4 << 20;

/// Name of the log file of generation `generation`: compaction writes each
/// generation whole and moves on to the next; the first is `events.log`.
pub fn log_file_name(generation: u64) -> String {
    if generation == 0 { "events.log".to_owned() } else { format!("events-{generation}.log") }
}

/// Name of a compaction's temporary file for `generation`, unique to this
/// process (two processes may compact at once; one of them wins).
pub(crate) fn temporary_file_name(generation: u64) -> String {
    format!("{}.{}.tmp", log_file_name(generation), std::process::id())
}

/// The generation a compaction's temporary file is for, if it is one.
pub(crate) fn generation_of_temporary(name: &str) -> Option<u64> {
    let (log, _process) = name.strip_suffix(".tmp")?.rsplit_once('.')?;
    generation_of(log)
}

/// The generation a log file name belongs to, if it is one.
pub(crate) fn generation_of(name: &str) -> Option<u64> {
    if name == "events.log" {
        return Some(0);
    }
    name.strip_prefix("events-")?.strip_suffix(".log")?.parse().ok().filter(|g| *g > 0)
}

/// The newest log generation in `dir` (0 if there is none).
pub(crate) fn newest_generation(dir: &Path) -> std::io::Result<u64> {
    let mut newest = 0;
    for entry in std::fs::read_dir(dir)? {
        if let Some(g) = entry?.file_name().to_str().and_then(generation_of) {
            newest = newest.max(g);
        }
    }
    Ok(newest)
}

/// One record as the index takes it in: what it says and where it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Indexed<'a> {
    pub kind: u8,
    pub seq: u64,
    pub timestamp_ms: i64,
    /// The payload; read only for a claim (its owner).
    pub payload: &'a [u8],
    pub offset: u64,
    /// Whether the record links to its cart's previous one (every record
    /// written now does; see `record.rs`).
    pub linked: bool,
}

/// The open file of the current log generation.
#[derive(Debug, Clone)]
pub(crate) struct LogFile {
    pub generation: u64,
    pub path: PathBuf,
    pub reader: Arc<File>,
}

impl LogFile {
    /// Opens generation `generation` in `dir` for reading.
    pub(crate) fn open(dir: &Path, generation: u64) -> std::io::Result<LogFile> {
        let path = dir.join(log_file_name(generation));
        Ok(LogFile { generation, reader: Arc::new(File::open(&path)?), path })
    }

    /// The record at `offset`: its cart id, contents and link.
    pub(crate) fn read(&self, offset: u64) -> Result<Decoded, StoreError> {
        let (header, body) = self.read_raw(offset)?;
        let corrupt = |why: &str| StoreError::Corrupt(format!("record at offset {offset}: {why}"));
        let h = record::decode_header(&header).map_err(corrupt)?;
        record::decode_body(h, &body).map_err(corrupt)
    }

    /// The header and body bytes of the record at `offset`, unchecked.
    pub(crate) fn read_raw(&self, offset: u64) -> Result<([u8; HEADER_LEN], Vec<u8>), StoreError> {
        let mut header = [0u8; HEADER_LEN];
        self.reader.read_exact_at(&mut header, offset)?;
        let h = record::decode_header(&header)
            .map_err(|why| StoreError::Corrupt(format!("record at offset {offset}: {why}")))?;
        let mut body = vec![0u8; h.body_len];
        self.reader.read_exact_at(&mut body, offset + HEADER_LEN as u64)?;
        Ok((header, body))
    }
}

/// The index of the log and how far it has been read.
#[derive(Debug)]
pub(crate) struct LogIndex {
    pub carts: CartMap,
    /// The claim owners the carts name.
    pub owners: Owners,
    /// The offsets of the events and snapshots of carts whose records
    /// include some of the first, unlinked format (in log order, from
    /// their latest snapshot that covers all their events on). A cart
    /// leaves this map at its first linked snapshot covering all its events
    /// (passivation writes one), or at compaction, which links every record.
    pub unlinked: HashMap<Box<str>, Vec<u64>>,
    /// Bytes of the log indexed so far; the next record starts here.
    pub scanned: u64,
    /// This process's committer is writing a batch after `scanned`, holding
    /// the directory lock: those bytes are its to publish, not to be read.
    pub committing: bool,
    /// The log generation the offsets point into.
    pub file: LogFile,
}

/// Taking a record into the index stopped the scan.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The record breaks the log's rules (why).
    Invalid(&'static str),
    /// The log was replaced by this generation.
    Moved(u64),
}

impl LogIndex {
    /// An empty index of `file`.
    pub(crate) fn new(file: LogFile) -> Self {
        LogIndex {
            carts: CartMap::default(),
            owners: Owners::default(),
            unlinked: HashMap::new(),
            scanned: 0,
            committing: false,
            file,
        }
    }

    /// Takes one record of `cart` into the index: the one place that says
    /// what each kind of record means for a cart.
    pub(crate) fn apply(&mut self, cart: &str, r: Indexed<'_>) -> Result<(), Stop> {
        match r.kind {
            MOVED_KIND => return Err(Stop::Moved(r.seq)),
            ERASED_KIND => {
                self.carts.remove(cart);
                self.unlinked.remove(cart);
                return Ok(());
            }
            _ => {}
        }
        let owner = match r.kind {
            CLAIM_KIND => self
                .owners
                .id(&String::from_utf8_lossy(r.payload))
                .ok_or(Stop::Invalid("more claim owners than the index can hold"))?,
            _ => 0,
        };
        let entry = self.carts.get_or_default(cart);
        let out_of_range = |e: OutOfRange| Stop::Invalid(e.0);
        match r.kind {
            CLAIM_KIND => {
                if r.seq <= entry.epoch() {
                    return Err(Stop::Invalid("claim epoch out of order"));
                }
                entry.claim(r.seq, owner).map_err(out_of_range)?;
                return Ok(());
            }
            SNAPSHOT_KIND => {
                let version = entry.version();
                // A snapshot covers events the cart has, or seeds an empty
                // cart (an import).
                if r.seq <= entry.snapshot_version() || (r.seq > version && version > 0) {
                    return Err(Stop::Invalid("snapshot version out of order"));
                }
                entry.snapshot(r.offset, r.seq, r.timestamp_ms).map_err(out_of_range)?;
            }
            _ => {
                if r.seq != entry.version() + 1 {
                    return Err(Stop::Invalid("sequence number out of order"));
                }
                entry.event(r.offset, r.timestamp_ms).map_err(out_of_range)?;
            }
        }
        let covers_all = r.kind == SNAPSHOT_KIND && entry.since_snapshot() == 0;
        if !r.linked || self.unlinked.contains_key(cart) {
            if r.linked && covers_all {
                self.unlinked.remove(cart);
            } else {
                let records = self.unlinked.entry(cart.into()).or_default();
                if covers_all {
                    records.clear();
                }
                records.push(r.offset);
            }
        }
        Ok(())
    }
}

/// State shared by the committer thread, the compactor and readers.
pub(crate) struct Shared {
    dir: PathBuf,
    pub(crate) index: RwLock<LogIndex>,
    poisoned: Mutex<Option<String>>,
}

impl Shared {
    /// State for the log in `dir`, indexed as far as `index` says.
    pub(crate) fn new(dir: PathBuf, index: LogIndex) -> Self {
        Shared { dir, index: RwLock::new(index), poisoned: Mutex::new(None) }
    }

    pub(crate) fn index_mut(&self) -> RwLockWriteGuard<'_, LogIndex> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn index(&self) -> RwLockReadGuard<'_, LogIndex> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The data directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn poison(&self, reason: String) {
        tracing::error!(%reason, "event log refuses further writes");
        let mut poisoned = self.poisoned.lock().unwrap_or_else(PoisonError::into_inner);
        poisoned.get_or_insert(reason);
    }

    pub(crate) fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Indexes what was appended since the last scan, following the log to
    /// the generation compaction moved it to. With `repair` (only while
    /// holding the directory lock) a torn tail is truncated; without it,
    /// reading stops before an incomplete record.
    pub(crate) fn catch_up(&self, index: &mut LogIndex, repair: bool) -> Result<(), StoreError> {
        loop {
            if !has_unread(index)? {
                return Ok(());
            }
            let path = index.file.path.clone();
            match scan(&path, index, repair)? {
                ScanEnd::Moved(generation) => {
                    // Another process compacted: its new log holds every
                    // cart whole, so the index is rebuilt from it.
                    let file = match LogFile::open(&self.dir, generation) {
                        Ok(file) => file,
                        Err(e) if e.kind() == ErrorKind::NotFound => {
                            // The compactor marked the move and died before
                            // renaming its log into place (or is renaming
                            // it now, holding the lock). Under the lock it
                            // is dead: its marker is cut off.
                            if repair {
                                unfinished_compaction(&path, index.scanned, generation)?;
                            }
                            return Ok(());
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let mut fresh = LogIndex::new(file);
                    self.catch_up(&mut fresh, repair)?;
                    tracing::info!(generation, "following the compacted event log");
                    *index = fresh;
                }
                ScanEnd::Problem(why) if repair => {
                    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
                    return truncate_torn_tail(&path, &file, index.scanned, why);
                }
                ScanEnd::Problem(_) | ScanEnd::End => return Ok(()),
            }
        }
    }

    /// The index if it is current (nobody else appended since it was last
    /// read); `None` if it first needs catching up. Costs one cached read.
    pub(crate) fn current_index(
        &self,
    ) -> Result<Option<RwLockReadGuard<'_, LogIndex>>, StoreError> {
        let index = self.index();
        Ok((index.committing || !has_unread(&index)?).then_some(index))
    }

    /// The cart's claim, from the index.
    pub(crate) fn claim_in(index: &LogIndex, cart: &str) -> Option<Claim> {
        let c = index.carts.get(cart)?;
        let owner = index.owners.name(c.owner_id())?;
        Some(Claim { epoch: c.epoch(), owner: owner.to_string() })
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
            self.catch_up(&mut index, false)?;
        }
        drop(index);
        Ok(self.index())
    }
}

/// Whether a record starts where the index ends: another process
/// appended. One byte is read: a zero or the end of the file means no.
fn has_unread(index: &LogIndex) -> std::io::Result<bool> {
    let mut next = [0u8; 1];
    Ok(index.file.reader.read_at(&mut next, index.scanned)? == 1 && next[0] != 0)
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
    match scan(path, index, true)? {
        ScanEnd::Problem(why) if index.scanned < acknowledged => {
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
        ScanEnd::Problem(why) => truncate_torn_tail(path, file, index.scanned, why),
        // Opened as the newest generation: the one it names never came to be.
        ScanEnd::Moved(generation) => unfinished_compaction(path, index.scanned, generation),
        ScanEnd::End => {
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

/// Where a scan stopped.
#[derive(Debug)]
enum ScanEnd {
    /// At the end of the file or at zeroed (preallocated) space.
    End,
    /// At a record that is incomplete, invalid or out of order (why).
    Problem(&'static str),
    /// At the record saying compaction moved the log to this generation.
    Moved(u64),
}

/// Indexes records from `index.scanned` to the end of the file, stopping at
/// the first incomplete or invalid record. When `locked` (no other process
/// can be writing), refuses with `Corrupt` if a valid record follows an
/// invalid one.
fn scan(path: &Path, index: &mut LogIndex, locked: bool) -> Result<ScanEnd, StoreError> {
    // Through the open file, not its name: compaction may have deleted the
    // name of a generation this process has not left yet.
    let at = ReadAt { file: Arc::clone(&index.file.reader), position: index.scanned };
    let mut reader = BufReader::with_capacity(64 << 10, at);
    let mut body = Vec::new();
    let end = loop {
        let mut header = [0u8; HEADER_LEN];
        match read_full(&mut reader, &mut header)? {
            0 => break ScanEnd::End,
            _ if header[0] == 0 => break ScanEnd::End,
            n if n < HEADER_LEN => break ScanEnd::Problem("incomplete record header"),
            _ => {}
        }
        let h = match record::decode_header(&header) {
            Ok(h) => h,
            Err(why) => break ScanEnd::Problem(why),
        };
        body.resize(h.body_len, 0);
        if read_full(&mut reader, &mut body)? < h.body_len {
            break ScanEnd::Problem("incomplete record body");
        }
        let Decoded { cart, event, link } = match record::decode_body(h, &body) {
            Ok(decoded) => decoded,
            Err(why) => break ScanEnd::Problem(why),
        };
        let indexed = Indexed {
            kind: event.kind,
            seq: event.seq,
            timestamp_ms: event.timestamp_ms,
            payload: &event.payload,
            offset: index.scanned,
            linked: link != Link::Unlinked,
        };
        match index.apply(&cart, indexed) {
            Ok(()) => {}
            Err(Stop::Invalid(why)) => break ScanEnd::Problem(why),
            // `scanned` stays at the marker: it is cut off if the
            // generation it names never came to be.
            Err(Stop::Moved(generation)) => break ScanEnd::Moved(generation),
        }
        index.scanned += (HEADER_LEN + h.body_len) as u64;
    };
    // Without the lock, another process may be writing the rest of this very
    // batch: stop at the incomplete record and read it next time.
    if locked
        && let ScanEnd::Problem(why) = end
        && let Some(valid) = valid_record_after(path, index.scanned + 1)?
    {
        return Err(StoreError::Corrupt(format!(
            "{}: record at offset {} is damaged ({why}) but a valid record follows at offset \
             {valid}; refusing to drop acknowledged events. Restore the file from a backup or \
             move it aside.",
            path.display(),
            index.scanned,
        )));
    }
    Ok(end)
}

/// Cuts off the marker of a compaction that died before its log was renamed
/// into place: the log it was to replace is whole and stays current. Only
/// called while holding the directory lock.
fn unfinished_compaction(path: &Path, at: u64, generation: u64) -> Result<(), StoreError> {
    tracing::warn!(
        path = %path.display(),
        generation,
        "a compaction did not finish; going on with the log it was to replace"
    );
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(at)?;
    file.sync_all()?;
    Ok(())
}

/// Indexes the whole of a log that must hold only whole records (a
/// compacted generation before it is put in place).
pub(crate) fn index_whole(file: LogFile) -> Result<LogIndex, StoreError> {
    let mut index = LogIndex::new(file);
    index_rest(&mut index)?;
    Ok(index)
}

/// Indexes the rest of such a log, from where `index` ends.
pub(crate) fn index_rest(index: &mut LogIndex) -> Result<(), StoreError> {
    let path = index.file.path.clone();
    match scan(&path, index, true)? {
        ScanEnd::End => Ok(()),
        end => Err(StoreError::Corrupt(format!(
            "{}: a compacted log must hold whole records only, stopped at offset {} ({end:?})",
            path.display(),
            index.scanned
        ))),
    }
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

/// Reads a shared file from a position of its own (`pread`), so readers
/// never move each other's file offset.
struct ReadAt {
    file: Arc<File>,
    position: u64,
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.position)?;
        self.position += n as u64;
        Ok(n)
    }
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
        if !record::is_magic(rest[start]) || rest.len() - start < HEADER_LEN {
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
