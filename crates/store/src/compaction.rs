//! Compaction of the file store: the log is rewritten as a new generation
//! that holds, for every cart the index knows, its latest claim, its latest
//! snapshot and the events after it, and nothing of erased carts. Events a
//! snapshot covers, superseded snapshots and claims, and erased carts are
//! left behind, and with the old generation's file they leave the disk.
//!
//! Appends go on while most of the work is done:
//!
//! 1. **Prepare** (the compactor, without the directory lock): every cart as
//!    the index knows it up to offset `E` is copied, record by record with
//!    checksums checked, to `events-<g+1>.log.<pid>.tmp`, which is synced
//!    and indexed.
//! 2. **Finish** (the committer, holding the lock, appends waiting): catch
//!    up; copy the old log's records after `E` (what was appended meanwhile),
//!    each re-linked to its cart's records in the new log; sync; index what was copied and check that every cart
//!    has the same version and claim in it as in the old one; write a
//!    marker record ("moved to `g+1`") at the old log's end and sync it;
//!    rename the new file into place and sync the directory; switch to it.
//!    Other processes read the marker when they next catch up and follow.
//! 3. The old generation's file is deleted.
//!
//! A crash at any point leaves a store that opens whole: before the
//! marker, the old generation is current and the temporary file is
//! garbage; between marker and rename, the marker names a generation that
//! does not exist and is cut off (under the lock, by whoever opens or
//! writes next); after the rename, the newest generation is current and
//! older ones are deleted at open. `crash_point` lets a test kill the
//! process at each of these steps.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use std::collections::HashMap;

use crate::cart_index::CartIndex;
use crate::chain::read_cart;
use crate::log::{
    LogFile, LogIndex, Shared, generation_of, generation_of_temporary, index_rest, index_whole,
    log_file_name, temporary_file_name,
};
use crate::record::{self, CLAIM_KIND, Decoded, ERASED_KIND, HEADER_LEN, MOVED_KIND};
use crate::{Compacted, Event, StoreError};

/// Environment variable naming the step at which a compaction aborts the
/// process (for crash tests only; see [`crash_point`]).
pub const CRASH_AT_ENV: &str = "CART_STORE_CRASH_AT";

/// The steps a crash test can stop a compaction at, in order.
pub const CRASH_POINTS: &[&str] =
    &["copied", "prepared", "tail-copied", "marked", "renamed", "switched"];

/// Aborts the process here if [`CRASH_AT_ENV`] names `step`: a real crash
/// (no destructors, no flushing), for the tests that kill a compaction at
/// every step. Read only during compaction, never on the write path.
fn crash_point(step: &str) {
    if std::env::var(CRASH_AT_ENV).is_ok_and(|at| at == step) {
        eprintln!("crashing at compaction step {step}");
        std::process::abort();
    }
}

/// A compacted generation written up to the old log's offset `copied_upto`,
/// waiting for the committer to finish it.
pub(crate) struct Prepared {
    from_generation: u64,
    generation: u64,
    tmp: PathBuf,
    file: File,
    copied_upto: u64,
    written: u64,
    /// The new generation's index, as far as it was written when prepared.
    index: LogIndex,
    started: Instant,
}

/// What [`finish`] leaves the committer.
pub(crate) struct Finished {
    /// The new generation's file, for writing.
    pub writer: File,
    /// What the compaction did.
    pub report: Compacted,
}

/// One cart as the index had it when preparing.
struct Live {
    cart: Box<str>,
    entry: CartIndex,
    claim: Option<std::sync::Arc<str>>,
    unlinked: Option<Vec<u64>>,
}

/// Step 1: copies every cart of the current generation to a new one,
/// without the directory lock.
pub(crate) fn prepare(shared: &Shared) -> Result<Prepared, StoreError> {
    let started = Instant::now();
    let (live, upto, from) = {
        let index = shared.caught_up()?;
        let live: Vec<Live> = index
            .carts
            .iter()
            .map(|(cart, c)| Live {
                cart: cart.into(),
                entry: *c,
                claim: index.owners.name(c.owner_id()).cloned(),
                unlinked: index.unlinked.get(cart).cloned(),
            })
            .collect();
        // While this process commits, `scanned` is where its batch starts:
        // everything before it is published and immutable.
        (live, index.scanned, index.file.clone())
    };
    let generation = from.generation + 1;
    let tmp = shared.dir().join(temporary_file_name(generation));
    let file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&tmp)?;
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    let mut buf = Vec::with_capacity(64 << 10);
    let mut written = 0u64;
    for cart in live {
        buf.clear();
        if let Some(owner) = &cart.claim {
            let claim = Event {
                seq: cart.entry.epoch(),
                kind: CLAIM_KIND,
                timestamp_ms: 0,
                payload: owner.as_bytes().to_vec(),
                idempotency: None,
            };
            record::encode(&mut buf, &cart.cart, &claim, None);
        }
        let loaded = read_cart(&from, &cart.cart, &cart.entry, cart.unlinked)?;
        let mut head = None;
        for event in loaded.snapshot.map(record::snapshot_event).into_iter().chain(loaded.events) {
            let offset = written + buf.len() as u64;
            record::encode(&mut buf, &cart.cart, &event, head);
            head = Some(offset);
        }
        out.write_all(&buf)?;
        written += buf.len() as u64;
    }
    out.flush()?;
    drop(out);
    crash_point("copied");
    file.sync_data()?;
    // Indexed now, without the lock: under it only the tail is left.
    let index = index_whole(LogFile {
        generation,
        path: tmp.clone(),
        reader: std::sync::Arc::new(file.try_clone()?),
    })?;
    crash_point("prepared");
    Ok(Prepared {
        from_generation: from.generation,
        generation,
        tmp,
        file,
        copied_upto: upto,
        written,
        index,
        started,
    })
}

/// Step 2, holding the directory lock with `index` caught up: appends what
/// was written since preparing, checks the new generation against `index`,
/// marks the old log moved, renames the new one into place and switches
/// `index` to it. `old` is the old generation's file, for writing.
pub(crate) fn finish(
    mut prepared: Prepared,
    index: &mut LogIndex,
    old: &File,
) -> Result<Finished, StoreError> {
    if index.file.generation != prepared.from_generation {
        // Another process compacted meanwhile; its generation stands.
        let _ = std::fs::remove_file(&prepared.tmp);
        return Err(StoreError::Unavailable("another process compacted the log meanwhile".into()));
    }
    let result = finish_current(&mut prepared, index, old);
    if result.is_err() {
        let _ = std::fs::remove_file(&prepared.tmp);
    }
    result
}

fn finish_current(
    prepared: &mut Prepared,
    index: &mut LogIndex,
    old: &File,
) -> Result<Finished, StoreError> {
    let bytes_before = index.scanned;
    let tail_len = usize::try_from(bytes_before - prepared.copied_upto)
        .map_err(|_| StoreError::Invalid("tail too long".into()))?;
    let mut tail = vec![0u8; tail_len];
    index.file.reader.read_exact_at(&mut tail, prepared.copied_upto)?;
    let tail = relink(&tail, prepared.written, &prepared.index)?;
    prepared.file.write_all_at(&tail, prepared.written)?;
    prepared.file.sync_data()?;
    crash_point("tail-copied");
    index_rest(&mut prepared.index)?;
    same_carts(index, &prepared.index)?;
    let mut marker = Vec::new();
    let moved = Event {
        seq: prepared.generation,
        kind: MOVED_KIND,
        timestamp_ms: 0,
        payload: Vec::new(),
        idempotency: None,
    };
    record::encode(&mut marker, "", &moved, None);
    old.write_all_at(&marker, bytes_before)?;
    old.sync_data()?;
    crash_point("marked");
    let path = index.file.path.with_file_name(log_file_name(prepared.generation));
    std::fs::rename(&prepared.tmp, &path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    crash_point("renamed");
    let writer = OpenOptions::new().read(true).write(true).open(&path)?;
    let fresh = std::mem::replace(&mut prepared.index, LogIndex::new(index.file.clone()));
    let report = Compacted {
        bytes_before,
        bytes_after: fresh.scanned,
        carts: fresh.carts.values().filter(|c| c.version() > 0).count() as u64,
    };
    *index = fresh;
    index.file.path = path.clone();
    metrics::counter!(crate::families::LOG_COMPACTIONS.name).increment(1);
    metrics::histogram!(crate::families::LOG_COMPACTION_DURATION.name)
        .record(prepared.started.elapsed());
    tracing::info!(
        generation = prepared.generation,
        bytes_before = report.bytes_before,
        bytes_after = report.bytes_after,
        carts = report.carts,
        elapsed_ms = prepared.started.elapsed().as_millis() as u64,
        "event log compacted"
    );
    crash_point("switched");
    Ok(Finished { writer, report })
}

/// The records of `tail` (whole ones, as the old log has them after what
/// was prepared) re-encoded to follow at offset `at` of the new log, each
/// linked to its cart's previous record there (`new` indexes the new log
/// up to `at`). Checksums are checked as they are read.
fn relink(tail: &[u8], at: u64, new: &LogIndex) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(tail.len() + tail.len() / 16);
    let mut heads: HashMap<String, Option<u64>> = HashMap::new();
    let mut rest = tail;
    while !rest.is_empty() {
        let damaged = |why: &str| StoreError::Corrupt(format!("the log's tail: {why}"));
        let header: [u8; HEADER_LEN] =
            rest.get(..HEADER_LEN).and_then(|h| h.try_into().ok()).ok_or_else(|| damaged("cut"))?;
        let h = record::decode_header(&header).map_err(damaged)?;
        let body = rest.get(HEADER_LEN..HEADER_LEN + h.body_len).ok_or_else(|| damaged("cut"))?;
        let Decoded { cart, event, .. } = record::decode_body(h, body).map_err(damaged)?;
        rest = &rest[HEADER_LEN + h.body_len..];
        let head = heads
            .entry(cart.clone())
            .or_insert_with(|| new.carts.get(&cart).and_then(|c| c.head()));
        let offset = at + out.len() as u64;
        record::encode(&mut out, &cart, &event, *head);
        if event.kind == ERASED_KIND {
            *head = None;
        } else if record::is_chained_kind(event.kind) {
            *head = Some(offset);
        }
    }
    Ok(out)
}

/// Refuses a compacted index that lost or changed a cart.
fn same_carts(old: &LogIndex, new: &LogIndex) -> Result<(), StoreError> {
    let kept = |c: &&CartIndex| c.version() > 0 || c.epoch() > 0;
    let mut count = 0;
    for (cart, c) in old.carts.iter().filter(|(_, c)| kept(c)) {
        count += 1;
        let same = new.carts.get(cart).is_some_and(|n| {
            n.version() == c.version()
                && n.epoch() == c.epoch()
                && new.owners.name(n.owner_id()) == old.owners.name(c.owner_id())
                && n.snapshot_version() == c.snapshot_version()
        });
        if !same {
            return Err(StoreError::Corrupt(format!(
                "compaction would change cart {cart}; the old log is kept"
            )));
        }
    }
    if new.carts.values().filter(kept).count() != count {
        return Err(StoreError::Corrupt("compaction would add carts; the old log is kept".into()));
    }
    Ok(())
}

/// Deletes log generations older than `current` and their index
/// checkpoints, temporary files of compactions that can no longer finish
/// (for `current` or older), and temporary checkpoints of older
/// generations or abandoned by a process that died writing them (they may
/// name erased carts). A failure leaves garbage, never a wrong store, so it
/// is only logged.
pub(crate) fn remove_old_generations(dir: &Path, current: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let stale = match (generation_of_temporary(name), crate::checkpoint::generation_of(name)) {
            (Some(g), _) => g <= current,
            (None, Some((g, temporary))) => g < current || (temporary && abandoned(&entry)),
            (None, None) => generation_of(name).is_some_and(|g| g < current),
        };
        if stale && let Err(e) = std::fs::remove_file(entry.path()) {
            tracing::warn!(file = name, error = %e, "could not delete an old event log");
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
