//! The compacted file: what compaction kept of the log before a logical
//! offset, each record at the logical offset it had (so no link, index
//! entry or checkpoint that points at it changes).
//!
//! ```text
//! header  = magic "CARTCMP\x01" | end u64
//! entry   = logical u64 | crc32(logical) u32 | record      (logical ascending)
//! fence   = per fence: logical u64 | position u64
//! trailer = fence_at u64 | fences u64 | crc32(header, fence, fence_at, fences) u32
//! ```
//! All integers little-endian. A record is as in the log (`record.rs`),
//! with its own checksum. The fence names the first entry starting in each
//! [`FENCE_SPAN`] of the file; it is kept in memory (16 bytes per span), so
//! finding a record reads one span.

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
/// Bytes before an entry's record.
const ENTRY_HEAD: usize = 12;
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
    fence: Vec<(u64, u64)>,
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
        let end = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let mut trailer = [0u8; TRAILER as usize];
        file.read_exact_at(&mut trailer, len - TRAILER)?;
        let word = |i: usize| u64::from_le_bytes(trailer[i..i + 8].try_into().unwrap_or_default());
        let (fence_at, fences) = (word(0), word(8));
        let crc = u32::from_le_bytes(trailer[16..20].try_into().unwrap_or_default());
        if fence_at < HEADER
            || fence_at > len - TRAILER
            || fences != (len - TRAILER - fence_at) / 16
            || !(len - TRAILER - fence_at).is_multiple_of(16)
        {
            return Err(corrupt(path, "its fence does not fit the file"));
        }
        let mut bytes = vec![0u8; (fences * 16) as usize];
        file.read_exact_at(&mut bytes, fence_at)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header);
        hasher.update(&bytes);
        hasher.update(&trailer[..16]);
        if hasher.finalize() != crc {
            return Err(corrupt(path, "checksum mismatch in its header or fence"));
        }
        let fence: Vec<(u64, u64)> = bytes
            .chunks_exact(16)
            .map(|c| {
                let half =
                    |i: usize| u64::from_le_bytes(c[i..i + 8].try_into().unwrap_or_default());
                (half(0), half(8))
            })
            .collect();
        let ordered = fence.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let inside = fence.iter().all(|(l, p)| *l < end && *p >= HEADER && *p < fence_at);
        if !ordered || !inside || (fence.is_empty() && fence_at != HEADER) {
            return Err(corrupt(path, "its fence is out of order"));
        }
        Ok(CompactedFile { end, len, fence_at, fence, crc })
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
        let from = self.fence[span - 1].1;
        let until = self.fence.get(span).map_or(self.fence_at, |(_, p)| *p);
        let read_to = (until + (ENTRY_HEAD + HEADER_LEN) as u64).min(self.fence_at);
        let mut window = vec![0u8; (read_to - from) as usize];
        file.read_exact_at(&mut window, from)?;
        let mut at = 0usize;
        while (from + at as u64) < until {
            let (entry_logical, record_len) = entry_at(&window, at).ok_or_else(|| {
                StoreError::Corrupt(format!("damaged entry at {}", from + at as u64))
            })?;
            if entry_logical == logical {
                return Ok(from + (at + ENTRY_HEAD) as u64);
            }
            if entry_logical > logical {
                break;
            }
            at += ENTRY_HEAD + record_len;
        }
        Err(missing())
    }

    /// The entries of `file` in order, for a sequential read.
    pub(crate) fn entries(&self, file: Arc<File>, path: &Path) -> Entries {
        let reader = ReadRange { file, position: HEADER, end: self.fence_at };
        Entries {
            reader: BufReader::with_capacity(256 << 10, reader),
            path: path.to_owned(),
            previous: None,
            end: self.end,
        }
    }
}

/// The logical offset and record length of the entry at `at` in `window`,
/// if its head is whole and its checksum holds.
fn entry_at(window: &[u8], at: usize) -> Option<(u64, usize)> {
    let head = window.get(at..at + ENTRY_HEAD + HEADER_LEN)?;
    let logical = u64::from_le_bytes(head[..8].try_into().ok()?);
    let crc = u32::from_le_bytes(head[8..12].try_into().ok()?);
    if crc32fast::hash(&head[..8]) != crc {
        return None;
    }
    let header: [u8; HEADER_LEN] = head[ENTRY_HEAD..].try_into().ok()?;
    let h = record::decode_header(&header).ok()?;
    Some((logical, HEADER_LEN + h.body_len))
}

/// A compacted file's entries, read in order.
pub(crate) struct Entries {
    reader: BufReader<ReadRange>,
    path: std::path::PathBuf,
    previous: Option<u64>,
    end: u64,
}

impl Iterator for Entries {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut head = [0u8; ENTRY_HEAD + HEADER_LEN];
        match read_exact_or_end(&mut self.reader, &mut head) {
            Ok(false) => return None,
            Ok(true) => {}
            Err(e) => return Some(Err(e.into())),
        }
        Some(self.entry(head))
    }
}

impl Entries {
    fn entry(&mut self, head: [u8; ENTRY_HEAD + HEADER_LEN]) -> Result<Entry, StoreError> {
        let (logical, _) =
            entry_at(&head, 0).ok_or_else(|| corrupt(&self.path, "a damaged entry"))?;
        if logical >= self.end || self.previous.is_some_and(|p| p >= logical) {
            return Err(corrupt(&self.path, "entries out of order"));
        }
        self.previous = Some(logical);
        let header: [u8; HEADER_LEN] = head[ENTRY_HEAD..].try_into().unwrap_or_default();
        let h = record::decode_header(&header).map_err(|why| corrupt(&self.path, why))?;
        let mut body = vec![0u8; h.body_len];
        self.reader.read_exact(&mut body).map_err(|_| corrupt(&self.path, "an entry is cut"))?;
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
    previous: Option<u64>,
    fence: Vec<(u64, u64)>,
}

impl<'a> Writer<'a> {
    /// A writer of the compacted log before `end` into the empty `file`.
    pub(crate) fn new(file: &'a File, end: u64) -> std::io::Result<Writer<'a>> {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(MAGIC)?;
        out.write_all(&end.to_le_bytes())?;
        Ok(Writer { out, end, written: HEADER, previous: None, fence: Vec::new() })
    }

    /// Appends `record` (whole, as encoded) at logical offset `logical`,
    /// which is past the previous one's and before the end.
    pub(crate) fn push(&mut self, logical: u64, record: &[u8]) -> Result<(), StoreError> {
        if logical >= self.end || self.previous.is_some_and(|p| p >= logical) {
            return Err(StoreError::Corrupt(format!(
                "compaction kept offset {logical} out of order"
            )));
        }
        self.previous = Some(logical);
        let due = self.fence.last().is_none_or(|(_, p)| self.written >= p + FENCE_SPAN);
        if due {
            self.fence.push((logical, self.written));
        }
        let bytes = logical.to_le_bytes();
        self.out.write_all(&bytes)?;
        self.out.write_all(&crc32fast::hash(&bytes).to_le_bytes())?;
        self.out.write_all(record)?;
        self.written += (ENTRY_HEAD + record.len()) as u64;
        Ok(())
    }

    /// Writes the fence and trailer and flushes; returns the file's size.
    pub(crate) fn finish(mut self) -> std::io::Result<u64> {
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
        let event =
            Event { seq, kind: 1, timestamp_ms: 5, payload: vec![7; payload], idempotency: None };
        record::encode(&mut out, cart, &event, None);
        out
    }

    fn written(records: &[(u64, Vec<u8>)]) -> (tempfile::TempDir, std::path::PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let file =
            File::options().create(true).truncate(true).read(true).write(true).open(&path).unwrap();
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
        let records: Vec<(u64, Vec<u8>)> = (0..2_000u64)
            .map(|i| (i * 1_000 + 17, record("c", i + 1, (i % 300) as usize)))
            .collect();
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
        let records: Vec<(u64, Vec<u8>)> =
            (0..200u64).map(|i| (i * 100, record("c", i + 1, 200))).collect();
        let (_dir, path, file) = written(&records);
        let bytes = std::fs::read(&path).unwrap();
        let layout = CompactedFile::open(&file, &path).unwrap();
        let fence_at = layout.fence_at as usize;
        let damaged_at = (0..16).chain(fence_at..bytes.len());
        for at in damaged_at {
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
    fn out_of_order_entries_are_refused_when_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("c.log")).unwrap();
        let mut writer = Writer::new(&file, 100).unwrap();
        writer.push(10, &record("c", 1, 1)).unwrap();
        assert!(writer.push(10, &record("c", 2, 1)).is_err());
        assert!(writer.push(100, &record("c", 2, 1)).is_err(), "at the end");
    }
}
