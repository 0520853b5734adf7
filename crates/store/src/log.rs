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
    self, CLAIM_KIND, COMPACTED_KIND, Decoded, ERASED_KIND, HEADER_LEN, Link, MOVED_KIND,
    SEALED_KIND, SNAPSHOT_KIND,
};
use crate::segments::{LogFile, Segment, compacted_file_name, segment_file_name};
use crate::{Claim, StoreError};

/// A segment file grows by this many zeroed bytes at a time.
pub const PREALLOCATE_BYTES: u64 = 4 << 20;

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
    /// Read from a compacted file, where a cart's first record kept may
    /// be an event past version 1 (the snapshot covering the events
    /// before it can come later in the log; see `compaction.rs`).
    pub seeds: bool,
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
    /// The log's files the offsets point into.
    pub file: LogFile,
    /// The scan ended at a seal and the next segment did not exist yet
    /// (its writer is creating it, or died before it could).
    pub awaiting_segment: bool,
}

/// Taking a record into the index stopped the scan.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The record breaks the log's rules (why).
    Invalid(&'static str),
    /// A log of the format before segments was replaced by this
    /// generation.
    Moved(u64),
    /// The segment ends here; the next one starts after this record.
    Sealed,
    /// The log before this offset was compacted (a note for processes
    /// sharing the log).
    Compacted(u64),
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
            awaiting_segment: false,
        }
    }

    /// Takes one record of `cart` into the index: the one place that says
    /// what each kind of record means for a cart.
    pub(crate) fn apply(&mut self, cart: &str, r: Indexed<'_>) -> Result<(), Stop> {
        match r.kind {
            MOVED_KIND => return Err(Stop::Moved(r.seq)),
            SEALED_KIND => return Err(Stop::Sealed),
            COMPACTED_KIND => return Err(Stop::Compacted(r.seq)),
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
                let fresh = entry.version() == 0 && entry.since_snapshot() == 0;
                if r.seeds && fresh && r.seq > 1 {
                    entry.seed(r.seq - 1).map_err(out_of_range)?;
                }
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

    /// Indexes what was appended since the last scan, into the segments
    /// that follow and past compactions made by other processes. With
    /// `repair` (only while holding the directory lock) a torn tail is
    /// truncated and a segment its writer died before creating is created;
    /// without it, reading stops before an incomplete record.
    pub(crate) fn catch_up(&self, index: &mut LogIndex, repair: bool) -> Result<(), StoreError> {
        loop {
            if !has_unread(index)? {
                return Ok(());
            }
            match scan(index, repair)? {
                ScanEnd::Compacted(end) => follow_compaction(index, end, repair)?,
                ScanEnd::Sealed if repair => create_next_segment(index)?,
                ScanEnd::Lost => {
                    // Another process compacted the segments this one had
                    // not reached yet, and deleted them: read the log anew.
                    *index = reopen(&self.dir, repair)?;
                    tracing::info!(
                        generation = index.file.generation,
                        "following the event log past a compaction of segments not yet read"
                    );
                }
                ScanEnd::Moved(generation) => {
                    if repair {
                        let (path, at) = index.active_position();
                        unfinished_compaction(&path, at, generation)?;
                    }
                    return Ok(());
                }
                ScanEnd::Problem(why) if repair => {
                    let (path, at) = index.active_position();
                    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
                    return truncate_torn_tail(&path, &file, at, why);
                }
                ScanEnd::Problem(_) | ScanEnd::End | ScanEnd::Sealed => return Ok(()),
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

impl LogIndex {
    /// Starts the owner table again with only the owners that still hold
    /// claims (after a compaction left the others' claims behind).
    pub(crate) fn renumber_owners(&mut self) {
        let old = std::mem::take(&mut self.owners);
        let owners = &mut self.owners;
        for c in self.carts.values_mut() {
            if c.owner_id() > 0 {
                let id = old.name(c.owner_id()).and_then(|name| owners.id(name)).unwrap_or(0);
                c.set_owner(id);
            }
        }
    }

    /// The active segment's path and where in it the index ends.
    pub(crate) fn active_position(&self) -> (PathBuf, u64) {
        let active = self.file.active();
        (active.path.clone(), self.scanned.saturating_sub(active.base))
    }
}

/// Whether a record starts where the index ends: another process
/// appended. One byte is read: a zero or the end of the file means no.
fn has_unread(index: &LogIndex) -> std::io::Result<bool> {
    if index.awaiting_segment {
        return Ok(index.file.dir().join(segment_file_name(index.scanned)).exists());
    }
    let segment = index.file.segment_at(index.scanned);
    if segment.compacted.is_some() {
        return Ok(true);
    }
    let mut next = [0u8; 1];
    let at = index.scanned - segment.base;
    Ok(segment.reader.read_at(&mut next, at)? == 1 && next[0] != 0)
}

/// Switches `index` to the compacted file of the log before `end` that
/// another process wrote (it has the same records at the same offsets as
/// the segments it replaces, so the index stands); reads the log anew if
/// a later compaction already replaced that file.
fn follow_compaction(index: &mut LogIndex, end: u64, repair: bool) -> Result<(), StoreError> {
    if end <= index.file.generation {
        return Ok(());
    }
    let dir = index.file.dir().to_owned();
    match open_compacted(&dir, end) {
        Ok(compacted) => {
            index.file = index.file.with_compacted(compacted, end);
            // Compaction links every record it keeps.
            index.unlinked.clear();
            index.renumber_owners();
            tracing::info!(generation = end, "following the compacted event log");
            Ok(())
        }
        Err(StoreError::Io(e)) if e.kind() == ErrorKind::NotFound => {
            *index = reopen(&dir, repair)?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Opens the compacted file of the log before `end` in `dir`.
pub(crate) fn open_compacted(dir: &Path, end: u64) -> Result<Segment, StoreError> {
    let path = dir.join(compacted_file_name(end));
    let reader = File::open(&path)?;
    let layout = crate::compacted::CompactedFile::open(&reader, &path)?;
    if layout.end != end {
        return Err(StoreError::Corrupt(format!(
            "{}: covers the log up to {}, not {end}",
            path.display(),
            layout.end
        )));
    }
    Ok(Segment { base: 0, path, reader: Arc::new(reader), compacted: Some(Arc::new(layout)) })
}

/// The log in `dir` as its files are now, indexed whole (for a process
/// whose unread segments were compacted away meanwhile). Without the lock
/// another compaction may delete a file while it is listed: tried again.
fn reopen(dir: &Path, locked: bool) -> Result<LogIndex, StoreError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = open_files(dir).and_then(|file| {
            let mut index = LogIndex::new(file);
            loop {
                match scan(&mut index, locked)? {
                    ScanEnd::Compacted(_) => continue,
                    ScanEnd::Lost => return Err(StoreError::Unavailable("segments moved".into())),
                    _ => return Ok(index),
                }
            }
        });
        match result {
            Ok(index) => return Ok(index),
            Err(e) if attempts < 5 && !matches!(e, StoreError::Corrupt(_)) => {
                tracing::debug!(error = %e, "the event log changed while it was read; again");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Opens the log's current files in `dir`: the newest compacted file and
/// the plain segments after it (or the first segment), checking that they
/// follow each other. Creates `events.log` in a directory without a log.
pub(crate) fn open_files(dir: &Path) -> Result<LogFile, StoreError> {
    let listing = crate::segments::Listing::read(dir)?;
    let generation = listing.generation();
    let mut segments = Vec::new();
    if generation > 0 {
        segments.push(open_compacted(dir, generation)?);
    } else {
        if listing.legacy.is_empty()
            && let Some(base) = listing.segments.first()
        {
            return Err(StoreError::Corrupt(format!(
                "{}: the log's first part is missing (no events.log and no compacted file), \
                 and {} follows: acknowledged carts would be lost. Restore the data directory \
                 from a backup.",
                dir.display(),
                segment_file_name(*base)
            )));
        }
        let first = listing.first_segment_name().unwrap_or_else(|| segment_file_name(0));
        if listing.is_empty() {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .append(true)
                .open(dir.join(&first))?;
        }
        segments.push(Segment::open_plain(dir, 0, &first)?);
    }
    for base in listing.segments.iter().filter(|b| **b >= generation) {
        segments.push(Segment::open_plain(dir, *base, &segment_file_name(*base))?);
    }
    if generation > 0 && segments.get(1).is_none_or(|s| s.base != generation) {
        let first = segments.get(1).map_or("none".to_owned(), |s| s.path.display().to_string());
        return Err(StoreError::Corrupt(format!(
            "{}: the log is compacted up to offset {generation}, but no segment starts there \
             (the first is {first}): a segment file is missing. Restore the data directory \
             from a backup.",
            dir.display()
        )));
    }
    Ok(LogFile::new(generation, segments))
}

/// Creates the segment that a seal the scan just read says comes next
/// (its writer died between the seal and the new file). Only called while
/// holding the directory lock.
fn create_next_segment(index: &mut LogIndex) -> Result<(), StoreError> {
    let dir = index.file.dir().to_owned();
    let name = segment_file_name(index.scanned);
    std::fs::OpenOptions::new().create(true).truncate(false).append(true).open(dir.join(&name))?;
    File::open(&dir)?.sync_all()?;
    index.file = index.file.with_segment(Segment::open_plain(&dir, index.scanned, &name)?);
    index.awaiting_segment = false;
    Ok(())
}

/// Indexes the whole log and repairs its tail: a torn record is cut off,
/// preallocated space trimmed, a missing next segment created. The log's
/// first `acknowledged` bytes were synced and acknowledged (the high-water
/// mark): a log that ends before them, or is damaged within them, is
/// refused, the damaged bytes copied aside first; so is one whose scan
/// stops before a segment that follows. Only called while holding the
/// directory lock.
pub(crate) fn recover(index: &mut LogIndex, acknowledged: u64) -> Result<(), StoreError> {
    let end = loop {
        match scan(index, true)? {
            // The listing found the newest compacted file already.
            ScanEnd::Compacted(_) => continue,
            end => break end,
        }
    };
    if let Some(later) = index.file.segments.iter().find(|s| s.base > index.scanned) {
        let (path, at) = index.active_position_before(later.base);
        return Err(StoreError::Corrupt(format!(
            "{}: the log ends at offset {at} of this segment ({end:?}) without a seal, but {} \
             follows: a segment is damaged or missing, and acknowledged carts would be lost. \
             Restore the data directory from a backup.",
            path.display(),
            later.path.display()
        )));
    }
    let (path, at) = index.active_position();
    match end {
        ScanEnd::Problem(why) if index.scanned < acknowledged => {
            let aside = quarantine(&path, at)?;
            tracing::error!(
                path = %path.display(),
                offset = at,
                reason = why,
                acknowledged,
                copied_to = %aside.display(),
                "damaged record in the acknowledged part of the event log"
            );
            Err(StoreError::Corrupt(format!(
                "{}: the record at offset {at} is damaged ({why}), inside the {acknowledged} bytes \
                 that were acknowledged; its bytes are copied to {}. {}",
                path.display(),
                aside.display(),
                crate::high_water::lost_acknowledged(&path, index.scanned, acknowledged)
            )))
        }
        ScanEnd::Problem(why) => {
            let file = std::fs::OpenOptions::new().write(true).open(&path)?;
            truncate_torn_tail(&path, &file, at, why)
        }
        // Opened as the newest generation: the one it names never came to be.
        ScanEnd::Moved(generation) => unfinished_compaction(&path, at, generation),
        ScanEnd::Sealed if index.scanned < acknowledged => {
            Err(crate::high_water::shorter_than_acknowledged(&path, index.scanned, acknowledged))
        }
        ScanEnd::Sealed => create_next_segment(index),
        ScanEnd::Lost => Err(StoreError::Corrupt(format!(
            "{}: a segment the log reaches is missing",
            path.display()
        ))),
        ScanEnd::End | ScanEnd::Compacted(_) => {
            let file = std::fs::OpenOptions::new().write(true).open(&path)?;
            trim_preallocated(&path, &file, at)?;
            if index.scanned < acknowledged {
                return Err(crate::high_water::shorter_than_acknowledged(
                    &path,
                    index.scanned,
                    acknowledged,
                ));
            }
            Ok(())
        }
    }
}

impl LogIndex {
    /// The path of the segment the index ends in and where in it, when a
    /// later segment (starting at `later`) exists.
    fn active_position_before(&self, later: u64) -> (PathBuf, u64) {
        let segment = self.file.segment_at(later.saturating_sub(1));
        (segment.path.clone(), self.scanned.saturating_sub(segment.base))
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
    /// At the end of the active segment or at zeroed (preallocated) space.
    End,
    /// At a record that is incomplete, invalid or out of order (why).
    Problem(&'static str),
    /// At the record saying a compaction of the format before segments
    /// moved the log to this generation.
    Moved(u64),
    /// Past a seal, whose next segment does not exist yet.
    Sealed,
    /// Past the note that the log before this offset was compacted.
    Compacted(u64),
    /// Past a seal, whose next segment is gone: a compaction replaced it
    /// before it was read.
    Lost,
}

/// Indexes records from `index.scanned` on, segment after segment, up to
/// the first incomplete or invalid record, the end, or a compaction note.
/// When `locked` (no other process can be writing), refuses with `Corrupt`
/// if a valid record follows an invalid one.
fn scan(index: &mut LogIndex, locked: bool) -> Result<ScanEnd, StoreError> {
    loop {
        if index.awaiting_segment {
            match next_segment(index)? {
                Some(end) => return Ok(end),
                None => index.awaiting_segment = false,
            }
        }
        let segment = index.file.segment_at(index.scanned).clone();
        if let Some(compacted) = &segment.compacted {
            if index.scanned < compacted.end {
                scan_compacted(&segment, compacted, index)?;
            }
            if index.file.segment_starting(index.scanned).is_none() {
                return Ok(ScanEnd::End);
            }
            continue;
        }
        match scan_plain(&segment, index, locked)? {
            ScanEnd::Sealed => index.awaiting_segment = true,
            end => return Ok(end),
        }
    }
}

/// Moves `index` into the segment a seal said comes next, opening it if
/// this log does not have it yet; the scan's end if it does not exist.
fn next_segment(index: &mut LogIndex) -> Result<Option<ScanEnd>, StoreError> {
    if index.file.segment_starting(index.scanned).is_some() {
        return Ok(None);
    }
    let dir = index.file.dir().to_owned();
    match Segment::open_plain(&dir, index.scanned, &segment_file_name(index.scanned)) {
        Ok(segment) => {
            index.file = index.file.with_segment(segment);
            Ok(None)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let newest = crate::segments::newest_generation(&dir)?;
            Ok(Some(if newest > index.scanned { ScanEnd::Lost } else { ScanEnd::Sealed }))
        }
        Err(e) => Err(e.into()),
    }
}

/// Indexes the records of a compacted file, each at its logical offset.
/// Its records were checked when it was written: any fault is `Corrupt`.
fn scan_compacted(
    segment: &Segment,
    compacted: &crate::compacted::CompactedFile,
    index: &mut LogIndex,
) -> Result<(), StoreError> {
    let path = &segment.path;
    let corrupt = |at: u64, why: &str| {
        StoreError::Corrupt(format!("{}: the record at offset {at}: {why}", path.display()))
    };
    for entry in compacted.entries(Arc::clone(&segment.reader), path) {
        let entry = entry?;
        let h = record::decode_header(&entry.header).map_err(|why| corrupt(entry.logical, why))?;
        let Decoded { cart, event, link } =
            record::decode_body(h, &entry.body).map_err(|why| corrupt(entry.logical, why))?;
        let indexed = Indexed {
            kind: event.kind,
            seq: event.seq,
            timestamp_ms: event.timestamp_ms,
            payload: &event.payload,
            offset: entry.logical,
            linked: link != Link::Unlinked,
            seeds: true,
        };
        match index.apply(&cart, indexed) {
            Ok(()) => {}
            Err(Stop::Invalid(why)) => return Err(corrupt(entry.logical, why)),
            Err(stop) => return Err(corrupt(entry.logical, &format!("a marker kept ({stop:?})"))),
        }
    }
    index.scanned = compacted.end;
    Ok(())
}

/// Indexes the records of a plain segment from `index.scanned` to its end,
/// a seal, or the first incomplete or invalid record.
fn scan_plain(
    segment: &Segment,
    index: &mut LogIndex,
    locked: bool,
) -> Result<ScanEnd, StoreError> {
    // Through the open file, not its name: compaction may have deleted the
    // name of a segment this process has not left yet.
    let start = index.scanned - segment.base;
    let at = ReadAt { file: Arc::clone(&segment.reader), position: start };
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
            seeds: false,
        };
        let len = (HEADER_LEN + h.body_len) as u64;
        match index.apply(&cart, indexed) {
            Ok(()) => {}
            Err(Stop::Invalid(why)) => break ScanEnd::Problem(why),
            // `scanned` stays at the marker: it is cut off if the
            // generation it names never came to be.
            Err(Stop::Moved(generation)) => break ScanEnd::Moved(generation),
            Err(Stop::Sealed) => {
                index.scanned += len;
                break ScanEnd::Sealed;
            }
            Err(Stop::Compacted(end)) => {
                index.scanned += len;
                break ScanEnd::Compacted(end);
            }
        }
        index.scanned += len;
    };
    // Without the lock, another process may be writing the rest of this very
    // batch: stop at the incomplete record and read it next time.
    let at = index.scanned - segment.base;
    if locked
        && let ScanEnd::Problem(why) = end
        && let Some(valid) = valid_record_after(&segment.path, at + 1)?
    {
        return Err(StoreError::Corrupt(format!(
            "{}: record at offset {at} is damaged ({why}) but a valid record follows at offset \
             {valid}; refusing to drop acknowledged events. Restore the file from a backup or \
             move it aside.",
            segment.path.display(),
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
pub(crate) struct ReadAt {
    pub file: Arc<File>,
    pub position: u64,
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
pub(crate) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
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
