//! Compaction of the file store: the sealed segments (and the compacted
//! file before them) are rewritten as one new compacted file holding, for
//! every cart the log has, its latest claim, its latest snapshot and the
//! events after it. Events a snapshot covers, superseded snapshots and
//! claims, erased carts and the log's markers are left behind, and with
//! the files they were in they leave the disk.
//!
//! Every record kept stays at its logical offset (see `segments.rs`), so
//! the index, the links of later records and checkpoints stay true, and the
//! active segment is never touched: appends wait only while the active
//! segment is sealed at the start and a note is appended at the end. Each
//! cart's kept records are linked to each other anew (a kept record may
//! have linked to one left behind).
//!
//! 1. **Seal** (the committer, holding the directory lock): the active
//!    segment is sealed and a new one started at offset `E`; the index as it
//!    is at `E` is copied.
//! 2. **Copy** (the compactor, without the lock): the erasures in the plain
//!    segments before `E` are read, then every record before `E` is read
//!    in order and kept if it is one of its cart's latest claim, latest
//!    snapshot or events after it as of `E`, and not of an incarnation that
//!    an erasure ended. What is kept goes to
//!    `compacted-<E>.log.<pid>.tmp`, which is synced and checked: every
//!    cart's newest record and claim must have been kept.
//! 3. **Switch** (the committer, holding the lock): the file is renamed to
//!    `compacted-<E>.log`, the directory synced, the index pointed at it;
//!    a note (`COMPACTED_KIND`) is appended for other processes sharing
//!    the log, which switch when they read it.
//! 4. **Delete** (the compactor, without the lock): the files it replaces
//!    are deleted (so are the index checkpoints of older generations,
//!    which may name erased carts).
//!
//! A crash at any point leaves a store that opens whole: before the
//! rename the sealed segments stand and the temporary file is garbage;
//! after it the newest compacted file supersedes the segments before its
//! end, which are deleted at open. `crash_point` lets a test kill the
//! process at each of these steps.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::cart_index::CartMap;
use crate::compacted::{CompactedFile, Writer};
use crate::log::{LogIndex, ReadAt, read_full};
use crate::record::{self, CLAIM_KIND, Decoded, ERASED_KIND, HEADER_LEN, SNAPSHOT_KIND};
use crate::segments::{Listing, LogFile, Segment, compacted_file_name, compacted_temporary_name};
use crate::{Compacted, StoreError};

/// Environment variable naming the step at which a compaction aborts the
/// process (for crash tests only; see [`crash_point`]).
pub const CRASH_AT_ENV: &str = "CART_STORE_CRASH_AT";

/// The steps a crash test can stop a compaction at, in order.
pub const CRASH_POINTS: &[&str] = &["sealed", "copied", "prepared", "renamed", "marked", "removed"];

/// Aborts the process here if [`CRASH_AT_ENV`] names `step`: a real crash
/// (no destructors, no flushing), for the tests that kill a compaction at
/// every step. Read only during compaction, never on the write path.
pub(crate) fn crash_point(step: &str) {
    if std::env::var(CRASH_AT_ENV).is_ok_and(|at| at == step) {
        eprintln!("crashing at compaction step {step}");
        std::process::abort();
    }
}

/// The log as the committer sealed it for a compaction.
pub(crate) struct Sealed {
    /// Where the new active segment starts: everything before is compacted.
    pub end: u64,
    /// The log's files at that point.
    pub file: LogFile,
    /// The index's carts as they were at `end`.
    pub carts: CartMap,
}

/// A compacted file written and synced, waiting for the committer to
/// switch to it.
pub(crate) struct Prepared {
    end: u64,
    tmp: PathBuf,
    file: File,
    layout: CompactedFile,
    started: Instant,
    carts: u64,
}

/// Step 2: writes the compacted file of everything before `sealed.end`,
/// without the directory lock.
pub(crate) fn prepare(dir: &Path, sealed: Sealed) -> Result<Prepared, StoreError> {
    let started = Instant::now();
    let Sealed { end, file, carts } = sealed;
    let tmp = dir.join(compacted_temporary_name(end));
    let result = write_compacted(&tmp, end, &file, &carts);
    let (out, layout) = match result {
        Ok(written) => written,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    crash_point("prepared");
    let carts = carts.values().filter(|c| c.version() > 0).count() as u64;
    Ok(Prepared { end, tmp, file: out, layout, started, carts })
}

/// Writes, syncs and checks the compacted file at `tmp`.
fn write_compacted(
    tmp: &Path,
    end: u64,
    file: &LogFile,
    carts: &CartMap,
) -> Result<(File, CompactedFile), StoreError> {
    let prefix: Vec<(Segment, u64)> = file
        .segments
        .iter()
        .enumerate()
        .filter(|(_, s)| s.base < end)
        .map(|(i, s)| (s.clone(), file.segments.get(i + 1).map_or(end, |n| n.base)))
        .collect();
    // The last erasure of each cart the log has again: its records before
    // it are of an incarnation that is gone.
    let mut erased_at: HashMap<String, u64> = HashMap::new();
    for (segment, until) in prefix.iter().filter(|(s, _)| s.compacted.is_none()) {
        plain_records(segment, *until, |offset, decoded| {
            if decoded.event.kind == ERASED_KIND && carts.contains_key(&decoded.cart) {
                erased_at.insert(decoded.cart, offset);
            }
            Ok(())
        })?;
    }
    let out = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(tmp)?;
    let mut writer = Writer::new(&out, end)?;
    let mut kept =
        Kept { carts, erased_at: &erased_at, newest: HashMap::new(), claims: 0, buf: Vec::new() };
    for (segment, until) in &prefix {
        match &segment.compacted {
            Some(compacted) => {
                for entry in compacted.entries(Arc::clone(&segment.reader), &segment.path) {
                    let entry = entry?;
                    let decoded = decode(&entry.header, &entry.body, &segment.path, entry.logical)?;
                    kept.take(entry.logical, decoded, &mut writer)?;
                }
            }
            None => plain_records(segment, *until, |offset, decoded| {
                kept.take(offset, decoded, &mut writer)
            })?,
        }
    }
    writer.finish()?;
    crash_point("copied");
    out.sync_data()?;
    kept.check()?;
    let layout = CompactedFile::open(&out, tmp)?;
    Ok((out, layout))
}

/// What compaction keeps, decided record by record in log order.
struct Kept<'a> {
    carts: &'a CartMap,
    erased_at: &'a HashMap<String, u64>,
    /// Each cart's newest event or snapshot kept so far.
    newest: HashMap<String, u64>,
    claims: u64,
    buf: Vec<u8>,
}

impl Kept<'_> {
    /// Writes the record at `offset` if the cart needs it, linked to its
    /// cart's previous record kept.
    fn take(&mut self, offset: u64, d: Decoded, writer: &mut Writer<'_>) -> Result<(), StoreError> {
        let Decoded { cart, event, .. } = d;
        let Some(c) = self.carts.get(&cart) else {
            return Ok(());
        };
        if self.erased_at.get(&cart).is_some_and(|at| offset < *at) {
            return Ok(());
        }
        let needed = match event.kind {
            CLAIM_KIND => event.seq == c.epoch(),
            SNAPSHOT_KIND => c.snapshot_version() > 0 && event.seq == c.snapshot_version(),
            kind if record::is_chained_kind(kind) => {
                event.seq > c.snapshot_version() && event.seq <= c.version()
            }
            _ => false,
        };
        if !needed {
            return Ok(());
        }
        self.buf.clear();
        let previous = self.newest.get(&cart).copied();
        record::encode(&mut self.buf, &cart, &event, previous);
        writer.push(offset, &self.buf)?;
        if event.kind == CLAIM_KIND {
            self.claims += 1;
        } else if let Some(newest) = self.newest.get_mut(&cart) {
            *newest = offset;
        } else {
            self.newest.insert(cart, offset);
        }
        Ok(())
    }

    /// Refuses a compaction that lost a cart's newest record or claim.
    fn check(&self) -> Result<(), StoreError> {
        let mut claims = 0;
        for (cart, c) in self.carts.iter() {
            if c.head() != self.newest.get(cart).copied() {
                return Err(StoreError::Corrupt(format!(
                    "compaction would change cart {cart}; the log is kept as it is"
                )));
            }
            claims += u64::from(c.epoch() > 0);
        }
        if claims != self.claims {
            return Err(StoreError::Corrupt(format!(
                "compaction kept {} claims of {claims}; the log is kept as it is",
                self.claims
            )));
        }
        Ok(())
    }
}

/// Reads the records of a sealed plain segment, which ends (logically) at
/// `until`, in order. A sealed segment holds whole records only.
fn plain_records(
    segment: &Segment,
    until: u64,
    mut f: impl FnMut(u64, Decoded) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let len = until - segment.base;
    let at = ReadAt { file: Arc::clone(&segment.reader), position: 0 };
    let mut reader = BufReader::with_capacity(256 << 10, at);
    let mut position = 0u64;
    let mut body = Vec::new();
    while position < len {
        let mut header = [0u8; HEADER_LEN];
        if read_full(&mut reader, &mut header)? < HEADER_LEN {
            return Err(cut(segment, position));
        }
        let offset = segment.base + position;
        let h = record::decode_header(&header).map_err(|why| {
            StoreError::Corrupt(format!("{}: at {position}: {why}", segment.path.display()))
        })?;
        body.resize(h.body_len, 0);
        if read_full(&mut reader, &mut body)? < h.body_len {
            return Err(cut(segment, position));
        }
        f(offset, decode(&header, &body, &segment.path, position)?)?;
        position += (HEADER_LEN + h.body_len) as u64;
    }
    Ok(())
}

fn cut(segment: &Segment, position: u64) -> StoreError {
    StoreError::Corrupt(format!(
        "{}: a sealed segment is cut at {position}",
        segment.path.display()
    ))
}

fn decode(
    header: &[u8; HEADER_LEN],
    body: &[u8],
    path: &Path,
    at: u64,
) -> Result<Decoded, StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt(format!("{}: at {at}: {why}", path.display()));
    let h = record::decode_header(header).map_err(corrupt)?;
    record::decode_body(h, body).map_err(corrupt)
}

/// Step 3, holding the directory lock with `index` caught up: renames the
/// compacted file into place and points `index` at it. Returns what the
/// compaction did; the committer then appends the note for other
/// processes.
pub(crate) fn switch(prepared: Prepared, index: &mut LogIndex) -> Result<Compacted, StoreError> {
    if index.file.generation >= prepared.end {
        // Another process compacted as far meanwhile; its file stands.
        let _ = std::fs::remove_file(&prepared.tmp);
        return Err(StoreError::Unavailable("another process compacted the log meanwhile".into()));
    }
    let bytes_before = index.file.disk_bytes(index.scanned);
    let path = prepared.tmp.with_file_name(compacted_file_name(prepared.end));
    if let Err(e) = std::fs::rename(&prepared.tmp, &path) {
        let _ = std::fs::remove_file(&prepared.tmp);
        return Err(e.into());
    }
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    crash_point("renamed");
    let segment = Segment {
        base: 0,
        path,
        reader: Arc::new(prepared.file),
        compacted: Some(Arc::new(prepared.layout)),
    };
    index.file = index.file.with_compacted(segment, prepared.end);
    // Compaction linked every record it kept.
    index.unlinked.clear();
    index.renumber_owners();
    let report = Compacted {
        bytes_before,
        bytes_after: index.file.disk_bytes(index.scanned),
        carts: prepared.carts,
    };
    metrics::counter!(crate::families::LOG_COMPACTIONS.name).increment(1);
    metrics::histogram!(crate::families::LOG_COMPACTION_DURATION.name)
        .record(prepared.started.elapsed());
    tracing::info!(
        generation = prepared.end,
        bytes_before = report.bytes_before,
        bytes_after = report.bytes_after,
        carts = report.carts,
        elapsed_ms = prepared.started.elapsed().as_millis() as u64,
        "event log compacted"
    );
    Ok(report)
}

/// Deletes the files a log of generation `current` no longer needs (see
/// [`Listing::superseded`]) and index checkpoints of other generations or
/// abandoned by a process that died writing them (they may name erased
/// carts). A failure leaves garbage, never a wrong store, so it is only
/// logged.
pub(crate) fn remove_superseded(dir: &Path, current: u64) {
    let mut names = match Listing::read(dir) {
        Ok(listing) => listing.superseded(current),
        Err(e) => {
            tracing::warn!(error = %e, "could not list the data directory");
            return;
        }
    };
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if let Some((g, temporary)) = crate::checkpoint::generation_of(name)
                && ((!temporary && g != current)
                    || (temporary && (g < current || abandoned(&entry))))
            {
                names.push(name.to_owned());
            }
        }
    }
    for name in names {
        if let Err(e) = std::fs::remove_file(dir.join(&name))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = name, error = %e, "could not delete an old event log file");
        }
    }
}

/// Whether a temporary checkpoint was last written longer ago than
/// [`crate::checkpoint::ABANDONED_AFTER`].
fn abandoned(entry: &std::fs::DirEntry) -> bool {
    entry
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > crate::checkpoint::ABANDONED_AFTER)
}
