//! The compacted file: what compaction kept of the log before a logical
//! offset, each record at the logical offset it had (so no link, index
//! entry or checkpoint that points at it changes).
//!
//! ```text
//! header  = magic "CARTCMP\x01" | end u64
//! entry   = gap varint | record                           (logical ascending)
//! fence   = per fence: logical u64 | position u64
//! trailer = fence_at u64 | fences u64 | crc32(header, fence, fence_at, fences) u32
//! ```
//! Integers little-endian; `gap` is a zigzag LEB128 varint: the bytes
//! compaction dropped between the previous entry's record (or offset 0) and
//! this one, so an entry's logical offset is the previous one's end plus its
//! gap, and a run of records kept together costs one byte each. The gap is
//! signed because a legacy record compaction links is longer than it was in
//! the log, so its successor may start before its end; starts only ascend. A record is as in
//! the log (`record.rs`), with its own checksum. The fence names the first
//! entry starting in each [`FENCE_SPAN`] of the file, and the last entry,
//! with their logical offsets; it is kept in memory (16 bytes per span), so finding a record
//! reads one span. A damaged gap is caught where the offsets it shifts
//! meet the next fence, or by the cart's own checks (its id and sequence)
//! for a record found through a wrong offset.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::StoreError;
use crate::record::{self, HEADER_LEN};

const MAGIC: &[u8; 8] = b"CARTCMP\x01";
const HEADER: u64 = 16;
const TRAILER: u64 = 20;
/// Most bytes of an entry's gap.
const MAX_GAP_LEN: usize = 10;
/// A fence entry every this many bytes of the file (at most).
pub(crate) const FENCE_SPAN: u64 = 16 << 10;

/// An open compacted file's layout.
#[derive(Debug)]
pub(crate) struct CompactedFile {
    /// The logical offset it covers the log up to.
    pub end: u64,
    len: u64,
    fence_at: u64,
    /// (logical offset, file position) of the first entry of each span.
    fence: Arc<[(u64, u64)]>,
    /// The trailer's checksum: what a checkpoint's fingerprint names.
    pub crc: u32,
}

/// One entry read in order.
pub(crate) struct Entry {
    pub logical: u64,
    pub header: [u8; HEADER_LEN],
    pub body: Vec<u8>,
}

fn corrupt(path: &Path, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{}: {why}", path.display()))
}

fn word(bytes: &[u8], at: usize) -> u64 {
    bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes)
}

impl CompactedFile {
    /// Reads the layout of the compacted file `file` at `path`, checking its
    /// header, fence and trailer.
    pub(crate) fn open(file: &File, path: &Path) -> Result<CompactedFile, StoreError> {
        let len = file.metadata()?.len();
        if len < HEADER + TRAILER {
            return Err(corrupt(path, "too short for a compacted log"));
        }
        let mut header = [0u8; HEADER as usize];
        file.read_exact_at(&mut header, 0)?;
        if &header[..8] != MAGIC {
            return Err(corrupt(path, "not a compacted log of this format"));
        }
        let end = word(&header, 8);
        let mut trailer = [0u8; TRAILER as usize];
        file.read_exact_at(&mut trailer, len - TRAILER)?;
        let (fence_at, fences) = (word(&trailer, 0), word(&trailer, 8));
        let crc = u32::from_le_bytes([trailer[16], trailer[17], trailer[18], trailer[19]]);
        let fence_len = (len - TRAILER).checked_sub(fence_at);
        if fence_at < HEADER || fence_len != fences.checked_mul(16) {
            return Err(corrupt(path, "its fence does not fit the file"));
        }
        let mut bytes = vec![0u8; (len - TRAILER - fence_at) as usize];
        file.read_exact_at(&mut bytes, fence_at)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header);
        hasher.update(&bytes);
        hasher.update(&trailer[..16]);
        if hasher.finalize() != crc {
            return Err(corrupt(path, "checksum mismatch in its header or fence"));
        }
        let fence: Vec<(u64, u64)> =
            bytes.chunks_exact(16).map(|c| (word(c, 0), word(c, 8))).collect();
        let ordered = fence.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let inside = fence.iter().all(|(l, p)| *l < end && *p >= HEADER && *p < fence_at);
        let starts = fence.first().is_none_or(|(_, p)| *p == HEADER);
        if !ordered || !inside || !starts || (fence.is_empty() && fence_at != HEADER) {
            return Err(corrupt(path, "its fence is out of order"));
        }
        Ok(CompactedFile { end, len, fence_at, fence: fence.into(), crc })
    }

    /// The file's size.
    pub(crate) fn file_len(&self) -> u64 {
        self.len
    }

    /// Where in `file` the record at logical offset `logical` starts.
    ///
    /// Fails with [`StoreError::Corrupt`] if compaction did not keep one
    /// there, or an entry on the way is damaged.
    pub(crate) fn find(&self, file: &File, logical: u64) -> Result<u64, StoreError> {
        let missing = || StoreError::Corrupt(format!("no record at offset {logical} (compacted)"));
        let span = self.fence.partition_point(|(l, _)| *l <= logical);
        if span == 0 {
            return Err(missing());
        }
        let (mut at_logical, from) = self.fence[span - 1];
        let until = self.fence.get(span).map_or(self.fence_at, |(_, p)| *p);
        let read_to = (until + (MAX_GAP_LEN + HEADER_LEN) as u64).min(self.fence_at);
        let mut window = vec![0u8; (read_to - from) as usize];
        file.read_exact_at(&mut window, from)?;
        let mut at = 0usize;
        let mut previous: Option<(u64, u64)> = None;
        while (from + at as u64) < until {
            let damaged = || StoreError::Corrupt(format!("damaged entry at {}", from + at as u64));
            let (gap, head, record_len) = entry_at(&window, at).ok_or_else(damaged)?;
            if let Some((start, end)) = previous {
                at_logical = next_offset(Some(start), end, gap, self.end).ok_or_else(damaged)?;
            }
            if at_logical == logical {
                return Ok(from + (at + head) as u64);
            }
            if at_logical > logical {
                break;
            }
            at += head + record_len;
            previous = Some((at_logical, at_logical + record_len as u64));
        }
        Err(missing())
    }

    /// The entries of `file` in order, for a sequential read.
    pub(crate) fn entries(&self, file: Arc<File>, path: &Path) -> Entries {
        let reader = ReadRange { file, position: HEADER, end: self.fence_at };
        Entries {
            reader: BufReader::with_capacity(256 << 10, reader),
            path: path.to_owned(),
            next_logical: 0,
            previous: None,
            position: HEADER,
            fence: Arc::clone(&self.fence),
            next_fence: 0,
            end: self.end,
        }
    }
}

/// The logical offset of an entry with `gap` after an entry that started at
/// `previous` (`None` before the first) and ended at `previous_end`, if it
/// comes after it and before `end`.
fn next_offset(previous: Option<u64>, previous_end: u64, gap: u64, end: u64) -> Option<u64> {
    let signed = (gap >> 1) as i64 ^ -((gap & 1) as i64);
    let logical = previous_end.checked_add_signed(signed)?;
    (previous.is_none_or(|p| logical > p) && logical < end).then_some(logical)
}

/// The zigzag encoding of the distance from `previous_end` to `logical`.
fn gap(previous_end: u64, logical: u64) -> Option<u64> {
    let signed = i64::try_from(i128::from(logical) - i128::from(previous_end)).ok()?;
    Some(((signed << 1) ^ (signed >> 63)) as u64)
}

/// The gap, the length of the gap's varint and the record's length of the
/// entry at `at` in `window`, if its gap and record header are whole.
fn entry_at(window: &[u8], at: usize) -> Option<(u64, usize, usize)> {
    let mut rest = window.get(at..)?;
    let before = rest.len();
    let gap = prost::encoding::decode_varint(&mut rest).ok()?;
    let head = before - rest.len();
    let header: [u8; HEADER_LEN] = rest.get(..HEADER_LEN)?.try_into().ok()?;
    let h = record::decode_header(&header).ok()?;
    Some((gap, head, HEADER_LEN + h.body_len))
}

/// A compacted file's entries, read in order.
pub(crate) struct Entries {
    reader: BufReader<ReadRange>,
    path: std::path::PathBuf,
    /// Where the previous entry's record ends, logically.
    next_logical: u64,
    /// Where the previous entry's record starts, logically.
    previous: Option<u64>,
    /// Where the next entry starts in the file.
    position: u64,
    fence: Arc<[(u64, u64)]>,
    next_fence: usize,
    end: u64,
}

impl Iterator for Entries {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut first = [0u8; 1];
        match read_exact_or_end(&mut self.reader, &mut first) {
            Ok(false) => return None,
            Ok(true) => {}
            Err(e) => return Some(Err(e.into())),
        }
        Some(self.entry(first[0]))
    }
}

impl Entries {
    fn entry(&mut self, first: u8) -> Result<Entry, StoreError> {
        let path = self.path.clone();
        let cut = |_| corrupt(&path, "an entry is cut");
        let mut gap_bytes = [first; MAX_GAP_LEN];
        let mut len = 1;
        while gap_bytes[len - 1] & 0x80 != 0 {
            if len == MAX_GAP_LEN {
                return Err(corrupt(&path, "a damaged entry"));
            }
            self.reader.read_exact(&mut gap_bytes[len..=len]).map_err(cut)?;
            len += 1;
        }
        let gap = prost::encoding::decode_varint(&mut &gap_bytes[..len])
            .map_err(|_| corrupt(&path, "a damaged entry"))?;
        let logical = next_offset(self.previous, self.next_logical, gap, self.end)
            .ok_or_else(|| corrupt(&path, "entries out of order"))?;
        if let Some((fenced, at)) = self.fence.get(self.next_fence).copied()
            && at == self.position
        {
            if fenced != logical {
                return Err(corrupt(&path, "an entry's offset disagrees with the fence"));
            }
            self.next_fence += 1;
        }
        let mut header = [0u8; HEADER_LEN];
        self.reader.read_exact(&mut header).map_err(cut)?;
        let h = record::decode_header(&header).map_err(|why| corrupt(&path, why))?;
        let mut body = vec![0u8; h.body_len];
        self.reader.read_exact(&mut body).map_err(cut)?;
        let record_len = (HEADER_LEN + h.body_len) as u64;
        self.next_logical = logical + record_len;
        self.previous = Some(logical);
        self.position += len as u64 + record_len;
        Ok(Entry { logical, header, body })
    }
}

/// Fills `buf`; `false` if the input ended before its first byte.
fn read_exact_or_end(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "cut")),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// A range of a shared file, read with `pread`.
struct ReadRange {
    file: Arc<File>,
    position: u64,
    end: u64,
}

impl Read for ReadRange {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.end.saturating_sub(self.position);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}

/// Writes a compacted file: entries in logical order, then the fence and
/// the trailer.
pub(crate) struct Writer<'a> {
    out: BufWriter<&'a File>,
    end: u64,
    written: u64,
    /// Where the previous record ends, logically (0 before the first).
    next_logical: u64,
    /// Where the previous record starts, logically.
    previous: Option<u64>,
    /// Where the previous entry starts in the file.
    previous_position: u64,
    fence: Vec<(u64, u64)>,
    gap: Vec<u8>,
}

impl<'a> Writer<'a> {
    /// A writer of the compacted log before `end` into the empty `file`.
    pub(crate) fn new(file: &'a File, end: u64) -> std::io::Result<Writer<'a>> {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(MAGIC)?;
        out.write_all(&end.to_le_bytes())?;
        let (written, next_logical, previous, gap) = (HEADER, 0, None, Vec::new());
        let (previous_position, fence) = (HEADER, Vec::new());
        Ok(Writer { out, end, written, next_logical, previous, previous_position, fence, gap })
    }

    /// Appends `record` (whole, as encoded) at logical offset `logical`,
    /// which is past the previous record's start and before the end.
    pub(crate) fn push(&mut self, logical: u64, record: &[u8]) -> Result<(), StoreError> {
        let ascending = self.previous.is_none_or(|p| logical > p) && logical < self.end;
        let Some(gap) = gap(self.next_logical, logical).filter(|_| ascending) else {
            return Err(StoreError::Corrupt(format!(
                "compaction kept offset {logical} out of order"
            )));
        };
        let position = self.written;
        if self.fence.last().is_none_or(|(_, p)| position >= p + FENCE_SPAN) {
            self.fence.push((logical, position));
        }
        self.gap.clear();
        prost::encoding::encode_varint(gap, &mut self.gap);
        self.out.write_all(&self.gap)?;
        self.out.write_all(record)?;
        self.written += (self.gap.len() + record.len()) as u64;
        self.next_logical = logical + record.len() as u64;
        self.previous = Some(logical);
        self.previous_position = position;
        Ok(())
    }

    /// Writes the fence and trailer and flushes; returns the file's size.
    pub(crate) fn finish(mut self) -> std::io::Result<u64> {
        // The last entry is fenced too, so a damaged gap after the last
        // span's first entry is caught by a sequential read as well.
        if let Some(last) = self.previous
            && self.fence.last() != Some(&(last, self.previous_position))
        {
            self.fence.push((last, self.previous_position));
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(MAGIC);
        hasher.update(&self.end.to_le_bytes());
        let fence_at = self.written;
        for (logical, position) in &self.fence {
            let mut pair = [0u8; 16];
            pair[..8].copy_from_slice(&logical.to_le_bytes());
            pair[8..].copy_from_slice(&position.to_le_bytes());
            hasher.update(&pair);
            self.out.write_all(&pair)?;
        }
        let mut tail = [0u8; 16];
        tail[..8].copy_from_slice(&fence_at.to_le_bytes());
        tail[8..].copy_from_slice(&(self.fence.len() as u64).to_le_bytes());
        hasher.update(&tail);
        self.out.write_all(&tail)?;
        self.out.write_all(&hasher.finalize().to_le_bytes())?;
        self.out.flush()?;
        Ok(fence_at + self.fence.len() as u64 * 16 + TRAILER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    fn record(cart: &str, seq: u64, payload: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let payload = vec![7; payload];
        let event = Event { seq, kind: 1, timestamp_ms: 5, payload, idempotency: None };
        record::encode(&mut out, cart, &event, None);
        out
    }

    /// Records at the offsets given, each shorter than the step between.
    fn spaced(count: u64, step: u64, payload: impl Fn(u64) -> usize) -> Vec<(u64, Vec<u8>)> {
        let records: Vec<_> =
            (0..count).map(|i| (i * step + 17, record("c", i + 1, payload(i)))).collect();
        assert!(records.iter().all(|(_, r)| (r.len() as u64) < step), "records do not overlap");
        records
    }

    fn written(records: &[(u64, Vec<u8>)]) -> (tempfile::TempDir, std::path::PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let options = File::options().create(true).truncate(true).read(true).write(true).clone();
        let file = options.open(&path).unwrap();
        let mut writer = Writer::new(&file, 1 << 40).unwrap();
        for (logical, r) in records {
            writer.push(*logical, r).unwrap();
        }
        let len = writer.finish().unwrap();
        assert_eq!(len, file.metadata().unwrap().len());
        (dir, path, file)
    }

    #[test]
    fn every_kept_record_is_found_and_none_other() {
        let mut records = spaced(2_000, 1_000, |i| (i % 300) as usize);
        // A run of records kept together, each right after the one before.
        let mut at = 2_000 * 1_000 + 17;
        for seq in 0..500 {
            let r = record("run", seq + 1, 40);
            let len = r.len() as u64;
            records.push((at, r));
            at += len;
        }
        let (_dir, path, file) = written(&records);
        let layout = CompactedFile::open(&file, &path).unwrap();
        assert!(layout.fence.len() > 10, "a fence per span");
        for (logical, r) in &records {
            let at = layout.find(&file, *logical).unwrap();
            let mut back = vec![0u8; r.len()];
            file.read_exact_at(&mut back, at).unwrap();
            assert_eq!(&back, r);
            assert!(layout.find(&file, logical + 1).is_err());
        }
        assert!(layout.find(&file, 0).is_err());
        let read: Vec<u64> =
            layout.entries(Arc::new(file), &path).map(|e| e.unwrap().logical).collect();
        assert_eq!(read, records.iter().map(|(l, _)| *l).collect::<Vec<_>>());
        let kept: usize = records.iter().map(|(_, r)| r.len() + 1).sum();
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        assert!(len < kept + kept / 50 + 64, "about one byte per entry: {len} for {kept}");
    }

    #[test]
    fn an_empty_compacted_file_opens() {
        let (_dir, path, file) = written(&[]);
        let layout = CompactedFile::open(&file, &path).unwrap();
        assert!(layout.find(&file, 3).is_err());
        assert_eq!(layout.entries(Arc::new(file), &path).count(), 0);
    }

    #[test]
    fn a_damaged_header_fence_or_trailer_is_refused() {
        let (_dir, path, file) = written(&spaced(200, 300, |_| 200));
        let bytes = std::fs::read(&path).unwrap();
        let layout = CompactedFile::open(&file, &path).unwrap();
        let fence_at = layout.fence_at as usize;
        for at in (0..16).chain(fence_at..bytes.len()) {
            let mut copy = bytes.clone();
            copy[at] ^= 0x10;
            std::fs::write(&path, &copy).unwrap();
            let f = File::open(&path).unwrap();
            assert!(CompactedFile::open(&f, &path).is_err(), "accepted a flip at {at}");
        }
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(CompactedFile::open(&File::open(&path).unwrap(), &path).is_err());
    }

    #[test]
    fn a_damaged_gap_is_caught_at_the_next_fence() {
        let records = spaced(400, 300, |_| 200);
        let (_dir, path, file) = written(&records);
        let layout = CompactedFile::open(&file, &path).unwrap();
        // The second entry's gap (its first byte after the first record).
        let second = HEADER as usize + 1 + records[0].1.len();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[second] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        let read: Result<Vec<Entry>, StoreError> = layout.entries(file, &path).collect();
        assert!(matches!(read, Err(StoreError::Corrupt(_))), "the shifted offsets are caught");
    }

    #[test]
    fn a_damaged_gap_in_the_last_span_is_caught_at_the_last_entry() {
        let records = spaced(400, 300, |_| 200);
        let (_dir, path, file) = written(&records);
        let layout = CompactedFile::open(&file, &path).unwrap();
        assert_eq!(layout.fence.last().map(|(l, _)| *l), records.last().map(|(l, _)| *l));
        // The gap of the entry before the last (each entry is a one-byte
        // gap and its record).
        let entry_len = 1 + records[0].1.len();
        let before_last = layout.fence_at as usize - 2 * entry_len;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[before_last] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        let read: Result<Vec<Entry>, StoreError> = layout.entries(file, &path).collect();
        assert!(matches!(read, Err(StoreError::Corrupt(_))), "the shifted offset is caught");
    }

    #[test]
    fn out_of_order_entries_are_refused_when_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("c.log")).unwrap();
        let mut writer = Writer::new(&file, 200).unwrap();
        writer.push(10, &record("c", 1, 1)).unwrap();
        assert!(writer.push(10, &record("c", 2, 1)).is_err(), "the same start");
        assert!(writer.push(5, &record("c", 2, 1)).is_err(), "before the previous");
        assert!(writer.push(200, &record("c", 2, 1)).is_err(), "at the end");
        writer.push(11, &record("c", 2, 1)).unwrap();
    }

    /// A legacy record gains a link when compaction keeps it, so it may
    /// reach past where the next record starts.
    #[test]
    fn a_record_longer_than_its_place_is_kept_with_its_successors() {
        let records: Vec<_> = (0..3_000u64)
            .map(|i| (i * 50 + (i % 7) * 200, record("c", i + 1, 60 + (i % 5) as usize)))
            .filter({
                let mut last = None;
                move |(l, _)| {
                    let ascending = last.is_none_or(|p| *l > p);
                    if ascending {
                        last = Some(*l);
                    }
                    ascending
                }
            })
            .collect();
        assert!(records.windows(2).any(|w| w[0].0 + w[0].1.len() as u64 > w[1].0));
        let (_dir, path, file) = written(&records);
        let layout = CompactedFile::open(&file, &path).unwrap();
        for (logical, r) in &records {
            let at = layout.find(&file, *logical).unwrap();
            let mut back = vec![0u8; r.len()];
            file.read_exact_at(&mut back, at).unwrap();
            assert_eq!(&back, r);
        }
        let read: Vec<u64> =
            layout.entries(Arc::new(file), &path).map(|e| e.unwrap().logical).collect();
        assert_eq!(read, records.iter().map(|(l, _)| *l).collect::<Vec<_>>());
    }
}
