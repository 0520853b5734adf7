//! The log's files: one address space of *logical* offsets, kept in
//! segment files.
//!
//! Every offset the store keeps (the index's newest record of a cart, the
//! links between a cart's records, checkpoints, the high-water mark) is a
//! logical offset, and it never changes. The files cover the address space
//! in order:
//!
//! - `compacted-<end>.log` (at most one current): what compaction kept of
//!   the log before offset `end`, each record still at its logical offset
//!   (`compacted.rs`);
//! - plain segments, each the log from its `base` on, byte for byte:
//!   `events.log` is the one at base 0 (a store from before segments may
//!   name it `events-<generation>.log`), `segment-<base>.log` the others.
//!   Every segment but the last (the *active* one, which the committer
//!   appends to) ends with a seal record (`SEALED_KIND`); the next begins
//!   right after it.
//!
//! Compaction rewrites the sealed segments into a new compacted file and
//! deletes them; the active segment is never touched, so appends go on.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::StoreError;
use crate::compacted::CompactedFile;
use crate::record::{self, Decoded, HEADER_LEN};
use std::os::unix::fs::FileExt;

/// Name of the plain segment that starts at logical offset `base`.
pub fn segment_file_name(base: u64) -> String {
    if base == 0 { "events.log".to_owned() } else { format!("segment-{base:020}.log") }
}

/// Name of the compacted file of the log before logical offset `end`.
pub fn compacted_file_name(end: u64) -> String {
    format!("compacted-{end:020}.log")
}

/// Name of a compaction's temporary file for `end`, unique to this process
/// (two processes may compact at once; the one reaching further wins).
pub(crate) fn compacted_temporary_name(end: u64) -> String {
    format!("{}.{}.tmp", compacted_file_name(end), std::process::id())
}

/// What a file name in the data directory is, as far as the log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogName {
    /// A plain segment starting at this logical offset.
    Segment(u64),
    /// A log of the store's format before segments: generation `n`
    /// (`events.log` is generation 0 and also the segment at base 0).
    Legacy(u64),
    /// A compacted file of the log before this offset.
    Compacted(u64),
    /// A compaction's temporary file for this end.
    Temporary(u64),
}

impl LogName {
    /// What `name` is, if it is part of the log.
    pub(crate) fn parse(name: &str) -> Option<LogName> {
        let number =
            |s: &str| s.parse::<u64>().ok().filter(|_| s.bytes().all(|b| b.is_ascii_digit()));
        if name == "events.log" {
            return Some(LogName::Legacy(0));
        }
        if let Some(base) = name.strip_prefix("segment-").and_then(|s| s.strip_suffix(".log")) {
            return number(base).filter(|b| *b > 0).map(LogName::Segment);
        }
        if let Some(g) = name.strip_prefix("events-").and_then(|s| s.strip_suffix(".log")) {
            return number(g).filter(|g| *g > 0).map(LogName::Legacy);
        }
        let rest = name.strip_prefix("compacted-")?;
        if let Some(end) = rest.strip_suffix(".log") {
            return number(end).filter(|e| *e > 0).map(LogName::Compacted);
        }
        let (file, _process) = rest.strip_suffix(".tmp")?.rsplit_once('.')?;
        number(file.strip_suffix(".log")?).map(LogName::Temporary)
    }
}

/// The log's files in a data directory, as listed once.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Ends of compacted files, ascending.
    pub compacted: Vec<u64>,
    /// Bases of plain segments after the first, ascending.
    pub segments: Vec<u64>,
    /// Legacy generations (0 is `events.log`), ascending.
    pub legacy: Vec<u64>,
    /// Ends of compactions' temporary files, with their names.
    pub temporaries: Vec<(u64, String)>,
}

impl Listing {
    /// Lists `dir`.
    pub(crate) fn read(dir: &Path) -> std::io::Result<Listing> {
        let mut listing = Listing::default();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            match LogName::parse(&name) {
                Some(LogName::Segment(b)) => listing.segments.push(b),
                Some(LogName::Legacy(g)) => listing.legacy.push(g),
                Some(LogName::Compacted(e)) => listing.compacted.push(e),
                Some(LogName::Temporary(e)) => listing.temporaries.push((e, name)),
                None => {}
            }
        }
        listing.compacted.sort_unstable();
        listing.segments.sort_unstable();
        listing.legacy.sort_unstable();
        Ok(listing)
    }

    /// Whether the directory holds a log at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.compacted.is_empty() && self.segments.is_empty() && self.legacy.is_empty()
    }

    /// Where the newest compacted file ends: the log's generation (0: none).
    pub(crate) fn generation(&self) -> u64 {
        self.compacted.last().copied().unwrap_or(0)
    }

    /// Name of the plain segment at base 0 now: the newest legacy
    /// generation, if the log has one and nothing compacted covers it.
    pub(crate) fn first_segment_name(&self) -> Option<String> {
        if self.generation() > 0 {
            return None;
        }
        self.legacy
            .last()
            .map(|g| if *g == 0 { "events.log".to_owned() } else { format!("events-{g}.log") })
    }

    /// The files a log of generation `generation` no longer needs:
    /// compacted files before it, segments it covers, legacy generations
    /// but the current first segment, and temporaries of compactions that
    /// can no longer win.
    pub(crate) fn superseded(&self, generation: u64) -> Vec<String> {
        let first = if generation == 0 { self.legacy.last().copied() } else { None };
        let mut names = Vec::new();
        names.extend(
            self.compacted.iter().filter(|e| **e < generation).map(|e| compacted_file_name(*e)),
        );
        names.extend(
            self.segments.iter().filter(|b| **b < generation).map(|b| segment_file_name(*b)),
        );
        names.extend(
            self.legacy
                .iter()
                .filter(|g| Some(**g) != first)
                .map(|g| if *g == 0 { "events.log".to_owned() } else { format!("events-{g}.log") }),
        );
        names.extend(
            self.temporaries.iter().filter(|(e, _)| *e <= generation).map(|(_, n)| n.clone()),
        );
        names
    }
}

/// One file of the log, open for reading.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    /// The logical offset it starts at.
    pub base: u64,
    pub path: PathBuf,
    pub reader: Arc<File>,
    /// Set for a compacted file: how its records are found.
    pub compacted: Option<Arc<CompactedFile>>,
}

impl Segment {
    /// Opens the plain segment at `base` in `dir` (named `name`).
    pub(crate) fn open_plain(dir: &Path, base: u64, name: &str) -> std::io::Result<Segment> {
        let path = dir.join(name);
        Ok(Segment { base, reader: Arc::new(File::open(&path)?), path, compacted: None })
    }
}

/// The log's files as one reader of logical offsets: the compacted file (if
/// any), then the plain segments in order. Cheap to clone; a clone keeps
/// its files open, so a reader is never cut off by a compaction that
/// deletes them.
#[derive(Debug, Clone)]
pub(crate) struct LogFile {
    /// Where the compacted part ends (0: nothing is compacted).
    pub generation: u64,
    /// Sorted by base; the last is the active segment.
    pub segments: Arc<[Segment]>,
}

impl LogFile {
    /// A log of `segments` (at least one, sorted by base).
    pub(crate) fn new(generation: u64, segments: Vec<Segment>) -> LogFile {
        LogFile { generation, segments: segments.into() }
    }

    /// The data directory.
    pub(crate) fn dir(&self) -> &Path {
        self.active().path.parent().unwrap_or(Path::new("."))
    }

    /// The segment appended to.
    pub(crate) fn active(&self) -> &Segment {
        // `new` is never given an empty list.
        &self.segments[self.segments.len() - 1]
    }

    /// The segment holding logical offset `offset` (the last one whose
    /// base is at or before it).
    pub(crate) fn segment_at(&self, offset: u64) -> &Segment {
        let after = self.segments.partition_point(|s| s.base <= offset);
        &self.segments[after.saturating_sub(1)]
    }

    /// The segment starting exactly at `base`, if this log has it.
    pub(crate) fn segment_starting(&self, base: u64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.base == base && s.compacted.is_none())
    }

    /// This log with `segment` appended (it starts where the log ends).
    pub(crate) fn with_segment(&self, segment: Segment) -> LogFile {
        let mut segments = self.segments.to_vec();
        segments.push(segment);
        LogFile::new(self.generation, segments)
    }

    /// This log with `compacted` in place of everything before its end.
    pub(crate) fn with_compacted(&self, compacted: Segment, end: u64) -> LogFile {
        let mut segments = vec![compacted];
        segments.extend(self.segments.iter().filter(|s| s.base >= end).cloned());
        LogFile::new(end, segments)
    }

    /// The file and position holding the record at logical `offset`.
    fn locate(&self, offset: u64) -> Result<(&Segment, u64), StoreError> {
        let segment = self.segment_at(offset);
        if offset < segment.base {
            return Err(StoreError::Corrupt(format!("no log segment holds offset {offset}")));
        }
        let at = match &segment.compacted {
            Some(c) => c.find(&segment.reader, offset)?,
            None => offset - segment.base,
        };
        Ok((segment, at))
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
        let (segment, at) = self.locate(offset)?;
        let mut header = [0u8; HEADER_LEN];
        segment.reader.read_exact_at(&mut header, at)?;
        let h = record::decode_header(&header)
            .map_err(|why| StoreError::Corrupt(format!("record at offset {offset}: {why}")))?;
        let mut body = vec![0u8; h.body_len];
        segment.reader.read_exact_at(&mut body, at + HEADER_LEN as u64)?;
        Ok((header, body))
    }

    /// Bytes the log takes on disk when it reaches logical offset `end`:
    /// the compacted file, the sealed segments and the active one.
    pub(crate) fn disk_bytes(&self, end: u64) -> u64 {
        let mut bytes = 0;
        for (i, s) in self.segments.iter().enumerate() {
            let until = self.segments.get(i + 1).map_or(end, |next| next.base);
            bytes += match &s.compacted {
                Some(c) => c.file_len(),
                None => until.saturating_sub(s.base),
            };
        }
        bytes
    }
}

/// The newest log generation in `dir` (the end of its newest compacted
/// file; 0 if there is none).
pub(crate) fn newest_generation(dir: &Path) -> std::io::Result<u64> {
    Ok(Listing::read(dir)?.generation())
}

/// Whether `dir` holds an event log of the file store.
pub fn holds_log(dir: &Path) -> bool {
    Listing::read(dir).is_ok_and(|l| !l.is_empty())
}
