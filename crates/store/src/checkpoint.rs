//! Checkpoints of the log's index, so that opening a store reads the index
//! as it was at the checkpoint and scans only the log written after it:
//! start-up time depends on what was written since the last checkpoint, not
//! on the log's history.
//!
//! A checkpoint is a file `index-<generation>.checkpoint` in the data
//! directory:
//!
//! ```text
//! magic "CARTIDX" 2 | generation u64 | scanned u64 | fingerprint u32
//! owners u32 | per owner: len u32 | name            (ids 1, 2, ... in order)
//! carts u64  | per cart: id_len u8 | id | head u64 (u64::MAX: none)
//!              | version u64 | since_snapshot u32 | epoch u32
//!              | touched_s u32 | owner u16 (0: no claim)
//! unlinked u64 | per cart: id_len u8 | id | records u32 | offset u64 × records
//! crc32 of all of the above, u32 LE
//! ```
//! The `unlinked` part lists, for carts whose records include some of the
//! first, unlinked format, the offsets of their events and snapshots.
//! All integers little-endian. `scanned` is how far into that generation's
//! log the index reaches; `fingerprint` is the CRC-32 of the log's last
//! [`FINGERPRINT_SPAN`] bytes before it (a checksum, so no log contents are
//! copied into the checkpoint).
//!
//! A checkpoint is a cache, never the truth: it is used only if its
//! checksum holds, it is for the newest generation, and that log still has
//! the same bytes before `scanned`; otherwise a warning is logged and the
//! log is scanned whole. It is written with the log synced up to `scanned`
//! first, to a temporary file that is synced and renamed into place, so a
//! crash leaves the previous checkpoint or the new one. Erased carts are in
//! no checkpoint written after the erasure, and compaction deletes the
//! checkpoints of the generations it replaces.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use crate::StoreError;
use crate::cart_index::{CartIndex, CartMap, MAX_OWNERS, Owners};
use crate::log::{LogIndex, Shared};
use crate::record::put_short;
use crate::segments::LogFile;

/// First bytes of every checkpoint; the last is the format version (a
/// checkpoint of another version is ignored: the log is scanned).
const MAGIC: &[u8; 8] = b"CARTIDX\x03";
/// Bytes of the log before `scanned` that the fingerprint covers.
pub(crate) const FINGERPRINT_SPAN: u64 = 4096;
/// Marks a cart without events or snapshots.
const NO_HEAD: u64 = u64::MAX;

/// Name of the checkpoint of generation `generation`'s index.
pub(crate) fn file_name(generation: u64) -> String {
    format!("index-{generation}.checkpoint")
}

/// A temporary checkpoint older than this was abandoned by a process that
/// died while writing it (writing one takes well under a second).
pub(crate) const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// The generation a checkpoint (or a temporary one being written) is for,
/// and whether it is a temporary one, if `name` is either.
pub(crate) fn generation_of(name: &str) -> Option<(u64, bool)> {
    let rest = name.strip_prefix("index-")?;
    let (generation, suffix) = rest.split_once('.')?;
    let temporary = suffix
        .strip_prefix("checkpoint.")
        .and_then(|s| s.strip_suffix(".tmp"))
        .is_some_and(|pid| pid.bytes().all(|b| b.is_ascii_digit()));
    (suffix == "checkpoint" || temporary).then(|| Some((generation.parse().ok()?, temporary)))?
}

/// Where a checkpoint was taken: the generation and how far into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Position {
    pub generation: u64,
    pub scanned: u64,
}

/// What a checkpoint file holds.
#[derive(Debug)]
struct Decoded {
    position: Position,
    fingerprint: u32,
    carts: CartMap,
    owners: Owners,
    unlinked: HashMap<Box<str>, Vec<u64>>,
}

/// The CRC-32 of the log's last [`FINGERPRINT_SPAN`] bytes before
/// `scanned`, within the plain segment they are in; the compacted file's
/// own checksum if `scanned` is where that ends.
fn fingerprint(file: &LogFile, scanned: u64) -> std::io::Result<u32> {
    let segment = file.segment_at(scanned.saturating_sub(1));
    if let Some(compacted) = &segment.compacted {
        return Ok(compacted.crc);
    }
    let from = scanned.saturating_sub(FINGERPRINT_SPAN).max(segment.base);
    let mut bytes = vec![0u8; (scanned - from) as usize];
    segment.reader.read_exact_at(&mut bytes, from - segment.base)?;
    Ok(crc32fast::hash(&bytes))
}

/// The checkpoint of `index`, whose log has `fingerprint` before
/// `index.scanned`.
fn encode(index: &LogIndex, fingerprint: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + index.carts.len() * 48);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&index.file.generation.to_le_bytes());
    out.extend_from_slice(&index.scanned.to_le_bytes());
    out.extend_from_slice(&fingerprint.to_le_bytes());
    let owners = index.owners.names();
    out.extend_from_slice(&(owners.len() as u32).to_le_bytes());
    for owner in owners {
        out.extend_from_slice(&(owner.len() as u32).to_le_bytes());
        out.extend_from_slice(owner.as_bytes());
    }
    out.extend_from_slice(&(index.carts.len() as u64).to_le_bytes());
    for (id, cart) in index.carts.iter() {
        put_short(&mut out, id.as_bytes());
        out.extend_from_slice(&cart.head().unwrap_or(NO_HEAD).to_le_bytes());
        out.extend_from_slice(&cart.version().to_le_bytes());
        out.extend_from_slice(&cart.since_snapshot().to_le_bytes());
        out.extend_from_slice(&(cart.epoch() as u32).to_le_bytes());
        out.extend_from_slice(&cart.touched_s().to_le_bytes());
        out.extend_from_slice(&cart.owner_id().to_le_bytes());
    }
    out.extend_from_slice(&(index.unlinked.len() as u64).to_le_bytes());
    for (id, offsets) in &index.unlinked {
        put_short(&mut out, id.as_bytes());
        out.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
        for offset in offsets {
            out.extend_from_slice(&offset.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Reads a checkpoint's fields in order, checksumming what it reads, and
/// never further than its `left` bytes (so a damaged count cannot make it
/// allocate beyond the file's size).
struct Source<R> {
    inner: R,
    /// Bytes before the trailing checksum not read yet.
    left: u64,
    crc: crc32fast::Hasher,
}

impl<R: Read> Source<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), &'static str> {
        if buf.len() as u64 > self.left {
            return Err("too short");
        }
        self.inner.read_exact(buf).map_err(|_| "cannot be read")?;
        self.crc.update(buf);
        self.left -= buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let mut out = [0; N];
        self.fill(&mut out)?;
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self, len: usize) -> Result<Vec<u8>, &'static str> {
        if len as u64 > self.left {
            return Err("too short");
        }
        let mut out = vec![0; len];
        self.fill(&mut out)?;
        Ok(out)
    }

    /// Checks that everything was read and the checksum holds.
    fn finish(mut self) -> Result<(), &'static str> {
        if self.left != 0 {
            return Err("bytes after the last cart");
        }
        let mut crc = [0u8; 4];
        self.inner.read_exact(&mut crc).map_err(|_| "too short")?;
        if self.crc.finalize() != u32::from_le_bytes(crc) {
            return Err("checksum mismatch");
        }
        Ok(())
    }
}

/// Parses a checkpoint of `len` bytes from `input`, or says why it is not
/// a whole, consistent one. It is streamed (a checkpoint is tens of MB for
/// a large store) and trusted only once its checksum, at the end, holds.
fn decode(input: impl Read, len: u64) -> Result<Decoded, &'static str> {
    let mut r = Source {
        inner: input,
        left: len.checked_sub(4).ok_or("too short")?,
        crc: Default::default(),
    };
    if &r.array::<8>()? != MAGIC {
        return Err("not an index checkpoint of this format");
    }
    let position = Position { generation: r.u64()?, scanned: r.u64()? };
    let fingerprint = r.u32()?;
    let owner_count = r.u32()?;
    if u64::from(owner_count) > r.left / 4 || owner_count as usize > MAX_OWNERS {
        return Err("owner count out of range");
    }
    let mut owners = Owners::default();
    for expected in 1..=owner_count {
        let len = r.u32()? as usize;
        let name = r.bytes(len)?;
        let name = std::str::from_utf8(&name).map_err(|_| "owner is not UTF-8")?;
        if owners.id(name).map(u32::from) != Some(expected) {
            return Err("an owner appears twice");
        }
    }
    let count = r.u64()?;
    // Each cart takes at least 32 bytes: a count beyond that is a lie.
    if count > r.left / 32 {
        return Err("cart count out of range");
    }
    let mut carts = CartMap::with_capacity(count as usize);
    let inside = |o: &u64| *o < position.scanned;
    for _ in 0..count {
        let id = id(&mut r)?;
        let head = Some(r.u64()?).filter(|h| *h != NO_HEAD);
        let version = r.u64()?;
        let since_snapshot = r.u32()?;
        let epoch = r.u32()?;
        let touched_s = r.u32()?;
        let owner = u16::from_le_bytes(r.array()?);
        if !head.iter().all(inside) {
            return Err("offset beyond the checkpoint");
        }
        if (owner == 0) != (epoch == 0) || (owner > 0 && owners.name(owner).is_none()) {
            return Err("claim names an unknown owner");
        }
        let cart = CartIndex::restored(head, version, since_snapshot, epoch, touched_s, owner)
            .map_err(|e| e.0)?;
        if carts.contains_key(&id) {
            return Err("a cart appears twice");
        }
        carts.insert(&id, cart);
    }
    let unlinked_count = r.u64()?;
    if unlinked_count > r.left / 5 {
        return Err("unlinked cart count out of range");
    }
    let mut unlinked = HashMap::new();
    for _ in 0..unlinked_count {
        let id = id(&mut r)?;
        let records = u64::from(r.u32()?);
        if records > r.left / 8 {
            return Err("record count out of range");
        }
        let offsets = (0..records).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
        if !offsets.iter().all(inside) {
            return Err("offset beyond the checkpoint");
        }
        if !carts.contains_key(&id) || unlinked.insert(id.into_boxed_str(), offsets).is_some() {
            return Err("unlinked records of an unknown or repeated cart");
        }
    }
    r.finish()?;
    Ok(Decoded { position, fingerprint, carts, owners, unlinked })
}

/// A cart id as a checkpoint holds it.
fn id<R: Read>(r: &mut Source<R>) -> Result<String, &'static str> {
    let len = r.array::<1>()?[0] as usize;
    match String::from_utf8(r.bytes(len)?) {
        Ok(id) if !id.is_empty() => Ok(id),
        _ => Err("cart id is empty or not UTF-8"),
    }
}

/// Writes the checkpoint of this process's index of the log in `dir` and
/// returns where it was taken and its size in bytes. The index is read-locked while it is
/// encoded (appends wait for that, not for the disk).
pub(crate) fn write(shared: &Shared) -> Result<(Position, u64), StoreError> {
    let started = Instant::now();
    let (bytes, position, file) = {
        let index = shared.index();
        // The bytes the index covers are never rewritten within a
        // generation, so the fingerprint may be taken under the read lock
        // without racing the committer.
        let fingerprint = fingerprint(&index.file, index.scanned)?;
        let position = Position { generation: index.file.generation, scanned: index.scanned };
        (encode(&index, fingerprint), position, index.file.clone())
    };
    // The checkpoint must never reach further than the durable log.
    file.active().reader.sync_data()?;
    let dir = shared.dir();
    let path = dir.join(file_name(position.generation));
    let tmp = dir.join(format!("{}.{}.tmp", file_name(position.generation), std::process::id()));
    std::fs::write(&tmp, &bytes)?;
    File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    // A compaction may have replaced this generation meanwhile and already
    // deleted its checkpoints: this one must not outlive it (it may name
    // carts erased since).
    if crate::segments::newest_generation(dir)? > position.generation {
        std::fs::remove_file(&path)?;
    }
    metrics::gauge!(crate::families::LOG_CHECKPOINT_BYTES.name).set(bytes.len() as f64);
    tracing::debug!(
        generation = position.generation,
        scanned = position.scanned,
        bytes = bytes.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "index checkpoint written"
    );
    Ok((position, bytes.len() as u64))
}

/// The index of `file` as its checkpoint in `dir` has it, if there is one
/// that can be trusted; the caller scans the log from `scanned` on. A
/// checkpoint that cannot be used is logged and ignored.
pub(crate) fn load(dir: &Path, file: &LogFile) -> Option<LogIndex> {
    let path = dir.join(file_name(file.generation));
    let (input, len) = match File::open(&path).and_then(|f| Ok((f.metadata()?.len(), f))) {
        Ok((len, f)) => (BufReader::with_capacity(256 << 10, f), len),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return ignored(&path, &e.to_string()),
    };
    let decoded = match decode(input, len) {
        Ok(decoded) => decoded,
        Err(why) => return ignored(&path, why),
    };
    if decoded.position.generation != file.generation || decoded.position.scanned < file.generation
    {
        return ignored(&path, "it is for another generation of the log");
    }
    match fingerprint(file, decoded.position.scanned) {
        Ok(f) if f == decoded.fingerprint => {}
        Ok(_) => return ignored(&path, "the log's bytes before it have changed"),
        Err(_) => return ignored(&path, "the log is shorter than the checkpoint"),
    }
    let mut index = LogIndex::new(file.clone());
    index.carts = decoded.carts;
    index.owners = decoded.owners;
    index.unlinked = decoded.unlinked;
    index.scanned = decoded.position.scanned;
    Some(index)
}

fn ignored(path: &Path, why: &str) -> Option<LogIndex> {
    tracing::warn!(
        path = %path.display(),
        reason = why,
        "ignoring the index checkpoint; scanning the whole log instead"
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(dir: &Path, carts: Vec<(&str, CartIndex)>, scanned: u64) -> LogIndex {
        let path = dir.join("events.log");
        std::fs::write(&path, vec![7u8; scanned as usize]).unwrap();
        let mut index = LogIndex::new(crate::log::open_files(dir).unwrap());
        index.scanned = scanned;
        for (id, c) in carts {
            index.carts.insert(id, c);
        }
        index
    }

    fn cart(head: u64, owner: u16) -> CartIndex {
        let epoch = u32::from(owner) * 2;
        CartIndex::restored(Some(head), 7, 2, epoch, 1_700_000_000, owner).unwrap()
    }

    /// Two carts, one with a claim by `n1`, one with unlinked records.
    fn sample(dir: &Path) -> LogIndex {
        let mut index = index_of(dir, vec![("c1", cart(20, 1)), ("c2", cart(10, 0))], 30);
        assert_eq!(index.owners.id("n1"), Some(1));
        index.unlinked.insert("c2".into(), vec![3, 10]);
        index
    }

    /// The checkpoint format is what existing data directories hold: these
    /// bytes never change (a new format gets a new magic).
    #[test]
    fn golden_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = index_of(dir.path(), vec![("c1", cart(20, 1))], 30);
        index.owners.id("n1");
        index.unlinked.insert("c1".into(), vec![10]);
        let hex: String = encode(&index, 0xAABBCCDD).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN);
    }

    const GOLDEN: &str = "434152544944580300000000000000001e00000000000000ddccbbaa010000000200\
                          00006e31010000000000000002633114000000000000000700000000000000020000\
                          000200000000f1536501000100000000000000026331010000000a00000000000000\
                          6919141d";

    #[test]
    fn round_trips_and_rejects_every_damage() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample(dir.path());
        let bytes = encode(&index, 9);
        let decoded = decode(&bytes[..], bytes.len() as u64).unwrap();
        assert_eq!(decoded.position, Position { generation: 0, scanned: 30 });
        assert_eq!(decoded.fingerprint, 9);
        assert_eq!(decoded.carts.get("c1"), Some(&cart(20, 1)));
        assert_eq!(decoded.carts.get("c2"), Some(&cart(10, 0)));
        assert_eq!(decoded.owners.name(1).map(|o| &**o), Some("n1"));
        assert_eq!(decoded.unlinked.get("c2").map(|o| &o[..]), Some(&[3, 10][..]));
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes[..cut], cut as u64).is_err(),
                "accepted a checkpoint cut at {cut}"
            );
        }
        for i in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[i / 8] ^= 1 << (i % 8);
            assert!(
                decode(&flipped[..], flipped.len() as u64).is_err(),
                "accepted a flipped bit {i}"
            );
        }
    }

    #[test]
    fn a_checkpoint_for_changed_or_shorter_log_bytes_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let index = sample(dir.path());
        let shared = Shared::new(dir.path().to_owned(), index);
        assert_eq!(write(&shared).unwrap().0, Position { generation: 0, scanned: 30 });
        let file = crate::log::open_files(dir.path()).unwrap();
        assert_eq!(load(dir.path(), &file).map(|i| i.carts.len()), Some(2));

        let log = dir.path().join("events.log");
        std::fs::write(&log, [vec![7u8; 29], vec![8]].concat()).unwrap();
        assert!(load(dir.path(), &crate::log::open_files(dir.path()).unwrap()).is_none());
        std::fs::write(&log, vec![7u8; 29]).unwrap();
        assert!(load(dir.path(), &crate::log::open_files(dir.path()).unwrap()).is_none());
        // Longer is fine: the rest is scanned.
        std::fs::write(&log, vec![7u8; 40]).unwrap();
        assert!(load(dir.path(), &crate::log::open_files(dir.path()).unwrap()).is_some());
    }

    #[test]
    fn names() {
        assert_eq!(generation_of(&file_name(3)), Some((3, false)));
        assert_eq!(generation_of("index-3.checkpoint.123.tmp"), Some((3, true)));
        assert_eq!(generation_of("index-3.checkpointx"), None);
        assert_eq!(generation_of("index-x.checkpoint"), None);
        assert_eq!(generation_of("events-3.log"), None);
    }
}
