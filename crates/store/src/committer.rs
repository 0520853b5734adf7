//! The single writer of the log in this process: batches concurrent appends
//! into one write and one `fdatasync` (group commit).
//!
//! Appends arrive on a channel. The committer takes everything that is
//! waiting, locks the data directory against other processes, catches up with
//! what they appended, checks each append's expected version and claim epoch,
//! writes all accepted records with one `write`, syncs once per the
//! [`FsyncPolicy`], publishes the new offsets, unlocks and only then answers.
//! Records are written at the end of the log, inside the file's preallocated
//! zeroed space; when a batch would reach past it, another
//! [`PREALLOCATE_BYTES`] of zeros are written after it.
//! While it syncs, new appends queue up and form the next batch, so throughput
//! grows with concurrency instead of being capped at one sync per request;
//! under [`FsyncPolicy::Always`] the batch also waits briefly for the clients
//! just answered (see [`Gather`]).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use metrics::{Counter, Gauge, Histogram};
use tokio::sync::oneshot;

use crate::cart_index::MAX_VERSION;
use crate::compaction::{self, Prepared, Sealed};
use crate::gather::Gather;
use crate::high_water::{HighWater, Mark};
use crate::log::{Indexed, LogIndex, PREALLOCATE_BYTES, Shared, trim_preallocated};
use crate::record::{self, CLAIM_KIND, COMPACTED_KIND, ERASED_KIND, SEALED_KIND};
use crate::segments::{Segment, segment_file_name};
use crate::sync::{FsyncPolicy, SyncSchedule};
use crate::{
    AppendRequest, Appended, Compacted, Event, Fence, Loaded, Snapshot, StoreError, TOOL_OWNER,
};

/// Most commands taken into one batch.
const MAX_BATCH: usize = 4096;

/// Work for the committer.
pub(crate) enum Command {
    /// Records to write under the directory lock.
    Write(Write),
    /// Sync what was written.
    Flush(oneshot::Sender<Result<(), StoreError>>),
    /// Seal the active segment for a compaction (if anything was written
    /// to it) and answer with the log as it is then.
    Seal(oneshot::Sender<Result<Sealed, StoreError>>),
    /// Switch to the compacted file the compactor prepared.
    FinishCompaction(Box<Prepared>, oneshot::Sender<Result<Compacted, StoreError>>),
}

/// A change to the log, checked against the caught-up index under the lock.
pub(crate) enum Write {
    Append(AppendRequest),
    Snapshot { cart: String, snapshot: Snapshot, reply: oneshot::Sender<Result<(), StoreError>> },
    Erase { cart: String, reply: oneshot::Sender<Result<bool, StoreError>> },
    Import { cart: String, loaded: Loaded, reply: AppendReply },
}

/// Where an append's answer goes.
type AppendReply = oneshot::Sender<Result<Appended, StoreError>>;

/// A checked write's answer, sent once its records are durable.
enum Answer {
    Appended(AppendReply, Appended),
    Snapshot(oneshot::Sender<Result<(), StoreError>>),
    Erased(oneshot::Sender<Result<bool, StoreError>>, bool),
}

impl Answer {
    fn send(self) {
        match self {
            Answer::Appended(reply, appended) => drop(reply.send(Ok(appended))),
            Answer::Snapshot(reply) => drop(reply.send(Ok(()))),
            Answer::Erased(reply, existed) => drop(reply.send(Ok(existed))),
        }
    }

    fn fail(self, e: StoreError) {
        match self {
            Answer::Appended(reply, _) => drop(reply.send(Err(e))),
            Answer::Snapshot(reply) => drop(reply.send(Err(e))),
            Answer::Erased(reply, _) => drop(reply.send(Err(e))),
        }
    }
}

impl Write {
    /// Answers with `e` unwritten.
    fn refuse(self, e: StoreError) {
        match self {
            Write::Append(req) => drop(req.reply.send(Err(e))),
            Write::Snapshot { reply, .. } => drop(reply.send(Err(e))),
            Write::Erase { reply, .. } => drop(reply.send(Err(e))),
            Write::Import { reply, .. } => drop(reply.send(Err(e))),
        }
    }
}

/// A record written in this batch, to take into the index once durable.
struct Written {
    cart: String,
    kind: u8,
    seq: u64,
    timestamp_ms: i64,
    /// A claim's owner.
    owner: Option<String>,
    offset: u64,
}

/// A cart as this batch has left it so far.
#[derive(Clone, Copy)]
struct View {
    version: u64,
    epoch: u64,
    snapshot_version: u64,
    /// Where its newest event or snapshot is: the next one links to it.
    head: Option<u64>,
    exists: bool,
}

impl View {
    /// A cart the log does not have.
    const NONE: View =
        View { version: 0, epoch: 0, snapshot_version: 0, head: None, exists: false };

    fn of(index: &LogIndex, cart: &str) -> View {
        index.carts.get(cart).map_or(View::NONE, |c| View {
            version: c.version(),
            epoch: c.epoch(),
            snapshot_version: c.snapshot_version(),
            head: c.head(),
            exists: true,
        })
    }

    /// Refuses a write that would take the cart past what the index can
    /// hold: `events` more events, `claims` more claims.
    fn check_room(&self, events: u64, claims: u64) -> Result<(), StoreError> {
        let since = self.version - self.snapshot_version + events;
        if self.version + events > MAX_VERSION
            || since > u64::from(u32::MAX)
            || self.epoch + claims > u64::from(u32::MAX)
        {
            return Err(StoreError::Invalid(format!(
                "the cart has reached the store's limits (version {}, {} events since its \
                 snapshot, claim epoch {})",
                self.version,
                self.version - self.snapshot_version,
                self.epoch
            )));
        }
        Ok(())
    }
}

/// The committer's state; runs on its own thread until every sender is gone.
pub(crate) struct Committer {
    /// The active segment, for writing.
    pub file: File,
    /// The logical offset `file` starts at.
    pub base: u64,
    /// The active segment is sealed and a new one started once it holds
    /// this many bytes.
    pub segment_bytes: u64,
    /// `data/LOCK`, held exclusively while a batch is checked and written.
    pub lock: File,
    pub shared: Arc<Shared>,
    pub policy: FsyncPolicy,
    pub gather: Gather,
    pub metrics: SyncMetrics,
    /// How much of the log is known synced, for the next open's check.
    pub high_water: HighWater,
}

/// Handles of the metrics recorded per sync, registered once.
pub(crate) struct SyncMetrics {
    duration: Histogram,
    batch_size: Histogram,
    syncs: Counter,
    /// Bytes the log takes on disk.
    pub(crate) log_bytes: Gauge,
    /// Files the log is kept in.
    pub(crate) segments: Gauge,
    /// Carts the log holds.
    pub(crate) carts: Gauge,
    /// Time a compaction held the committer.
    compaction_pause: Histogram,
}

impl SyncMetrics {
    /// Records the log's size, files and carts as `index` has them.
    pub(crate) fn record_size(&self, index: &LogIndex) {
        self.log_bytes.set(index.file.disk_bytes(index.scanned) as f64);
        self.segments.set(index.file.segments.len() as f64);
        self.carts.set(index.carts.len() as f64);
    }

    /// Registers the handles with the installed recorder (if any).
    pub(crate) fn new() -> Self {
        SyncMetrics {
            duration: metrics::histogram!(crate::families::LOG_FSYNC_DURATION.name),
            batch_size: metrics::histogram!(crate::families::LOG_FSYNC_BATCH.name),
            syncs: metrics::counter!(crate::families::LOG_FSYNCS.name),
            log_bytes: metrics::gauge!(crate::families::LOG_BYTES.name),
            segments: metrics::gauge!(crate::families::LOG_SEGMENTS.name),
            carts: metrics::gauge!(crate::families::LOG_CARTS.name),
            compaction_pause: metrics::histogram!(crate::families::LOG_COMPACTION_PAUSE.name),
        }
    }
}

impl Committer {
    pub(crate) fn run(mut self, rx: Receiver<Command>) {
        let mut schedule = match self.policy {
            FsyncPolicy::Batch(interval) => Some(SyncSchedule::new(interval, Instant::now())),
            _ => None,
        };
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut batch = Vec::new();
        loop {
            // What queued up during the previous commit.
            take_queued(&rx, &mut batch);
            let queued = batch.len();
            if batch.is_empty() {
                let wait = schedule.as_ref().and_then(|s| s.wait(Instant::now()));
                let first = match wait {
                    Some(wait) => match rx.recv_timeout(wait) {
                        Ok(command) => command,
                        Err(RecvTimeoutError::Timeout) => {
                            self.periodic_sync(&mut schedule);
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    },
                    None => match rx.recv() {
                        Ok(command) => command,
                        Err(_) => break,
                    },
                };
                batch.push(first);
                take_queued(&rx, &mut batch);
            }
            if self.policy == FsyncPolicy::Always {
                self.gather_more(&rx, &mut batch, queued);
            }
            let answered = batch.len();
            self.commit(std::mem::take(&mut batch), &mut buf, &mut schedule);
            self.gather.committed(answered, Instant::now());
        }
        let end = self.end();
        match self.file.sync_data() {
            Ok(()) => {
                if let Err(e) = self.high_water.record_now(end, Instant::now()) {
                    tracing::warn!(error = %e, "could not record the event log's high-water mark");
                }
            }
            Err(e) => tracing::error!(error = %e, "final sync of the event log failed"),
        }
        self.trim_on_exit();
    }

    /// Adds appends to `batch` for as long as [`Gather`] says to wait.
    fn gather_more(&self, rx: &Receiver<Command>, batch: &mut Vec<Command>, queued: usize) {
        let mut latest = Instant::now();
        while let Some(deadline) = self.gather.wait_until(queued, batch.len(), latest, latest) {
            if batch.len() >= MAX_BATCH {
                return;
            }
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(command) => {
                    batch.push(command);
                    take_queued(rx, batch);
                    latest = Instant::now();
                }
                Err(_) => return,
            }
        }
    }

    /// Where the log this committer writes ends, as a mark.
    fn end(&self) -> Mark {
        Mark { bytes: self.shared.index().scanned }
    }

    /// Catches up under the lock, and follows the log into the segment
    /// another process started.
    fn catch_up_locked(&mut self, index: &mut LogIndex) -> Result<(), StoreError> {
        self.shared.catch_up(index, true)?;
        let active = index.file.active();
        if active.base != self.base {
            self.file = std::fs::OpenOptions::new().read(true).write(true).open(&active.path)?;
            self.base = active.base;
        }
        Ok(())
    }

    /// Seals the active segment and starts the next one after the seal.
    /// Holding the lock, with `index` caught up. A failure part way leaves
    /// a log the next catch-up under the lock completes.
    fn roll(&mut self, index: &mut LogIndex) -> Result<(), StoreError> {
        let seal = record::marker(SEALED_KIND, 0);
        let at = index.scanned - self.base;
        self.file.write_all_at(&seal, at)?;
        self.file.set_len(at + seal.len() as u64)?;
        self.file.sync_data()?;
        let next = index.scanned + seal.len() as u64;
        let dir = index.file.dir().to_owned();
        let name = segment_file_name(next);
        let writer = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join(&name))?;
        File::open(&dir)?.sync_all()?;
        index.file = index.file.with_segment(Segment::open_plain(&dir, next, &name)?);
        index.scanned = next;
        self.file = writer;
        self.base = next;
        self.record_high_water(Mark { bytes: next });
        tracing::debug!(base = next, "event log segment started");
        Ok(())
    }

    /// Seals the active segment for a compaction if anything was written
    /// to it; the log as it is then.
    fn seal(&mut self) -> Result<Sealed, StoreError> {
        self.lock.lock()?;
        let shared = Arc::clone(&self.shared);
        let mut index = shared.index_mut();
        let result = self.catch_up_locked(&mut index).and_then(|()| {
            if index.scanned > self.base {
                self.roll(&mut index)?;
            }
            compaction::crash_point("sealed");
            Ok(Sealed { end: index.scanned, file: index.file.clone(), carts: index.carts.clone() })
        });
        drop(index);
        if let Err(e) = self.lock.unlock() {
            self.shared.poison(format!("cannot unlock the data directory: {e}"));
        }
        result
    }

    /// Leaves no preallocated space behind after a clean shutdown. Catches up
    /// first, under the lock, so another process's appends are never cut.
    fn trim_on_exit(&mut self) {
        if self.lock.lock().is_err() {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let mut index = shared.index_mut();
        let trimmed = self.catch_up_locked(&mut index).and_then(|()| {
            let (path, at) = index.active_position();
            trim_preallocated(&path, &self.file, at)
        });
        drop(index);
        if let Err(e) = trimmed {
            tracing::warn!(error = %e, "could not trim the event log's preallocated tail");
        }
        let _ = self.lock.unlock();
    }

    fn periodic_sync(&mut self, schedule: &mut Option<SyncSchedule>) {
        // Whatever was written before the sync is on disk after it, by
        // whichever process wrote it: one file, one page cache.
        let end = self.end();
        match self.sync(1) {
            Ok(()) => self.record_high_water(end),
            Err(e) => self.shared.poison(format!("periodic fdatasync failed: {e}")),
        }
        if let Some(s) = schedule {
            s.synced(Instant::now());
        }
    }

    /// Moves the high-water mark up to `synced`; a failure only weakens the
    /// next open's check, so it is logged, not fatal.
    fn record_high_water(&mut self, synced: Mark) {
        if let Err(e) = self.high_water.record(synced, Instant::now()) {
            tracing::warn!(error = %e, "could not record the event log's high-water mark");
        }
    }

    fn sync(&mut self, appends: usize) -> std::io::Result<()> {
        let started = Instant::now();
        let result = self.file.sync_data();
        let took = started.elapsed();
        self.gather.synced(took);
        self.metrics.duration.record(took);
        self.metrics.batch_size.record(appends as f64);
        self.metrics.syncs.increment(1);
        result
    }

    fn commit(
        &mut self,
        batch: Vec<Command>,
        buf: &mut Vec<u8>,
        schedule: &mut Option<SyncSchedule>,
    ) {
        let mut writes = Vec::new();
        let mut flushes = Vec::new();
        let mut compactions = Vec::new();
        let mut seals = Vec::new();
        for command in batch {
            match command {
                Command::Write(w) => writes.push(w),
                Command::Flush(reply) => flushes.push(reply),
                Command::FinishCompaction(prepared, reply) => compactions.push((*prepared, reply)),
                Command::Seal(reply) => seals.push(reply),
            }
        }
        if !writes.is_empty() {
            if let Err(e) = self.lock.lock() {
                let reason = format!("cannot lock the data directory: {e}");
                for w in writes {
                    w.refuse(StoreError::Unavailable(reason.clone()));
                }
            } else {
                let answers = self.commit_locked(writes, buf, schedule);
                if let Err(e) = self.lock.unlock() {
                    self.shared.poison(format!("cannot unlock the data directory: {e}"));
                }
                for answer in answers {
                    match answer {
                        Ok(answer) => answer.send(),
                        Err((answer, e)) => answer.fail(e),
                    }
                }
            }
        }
        if !flushes.is_empty() {
            let result = self.sync(0).map_err(StoreError::Io);
            if let (Ok(()), Some(s)) = (&result, schedule.as_mut()) {
                s.synced(Instant::now());
            }
            for f in flushes {
                let _ = f.send(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(StoreError::Unavailable(e.to_string())),
                });
            }
        }
        for reply in seals {
            let started = Instant::now();
            let sealed = self.seal();
            self.metrics.compaction_pause.record(started.elapsed());
            let _ = reply.send(sealed);
        }
        for (prepared, reply) in compactions {
            let started = Instant::now();
            let compacted = self.finish_compaction(prepared);
            self.metrics.compaction_pause.record(started.elapsed());
            let _ = reply.send(compacted);
        }
    }

    /// Switches to a compacted file under the directory lock (see
    /// `compaction.rs`) and appends the note other processes follow;
    /// appends wait meanwhile. The compactor deletes the files it replaced.
    fn finish_compaction(&mut self, prepared: Prepared) -> Result<Compacted, StoreError> {
        self.lock.lock()?;
        let shared = Arc::clone(&self.shared);
        let mut index = shared.index_mut();
        let result = self.catch_up_locked(&mut index).and_then(|()| {
            let report = compaction::switch(prepared, &mut index)?;
            let note = record::marker(COMPACTED_KIND, index.file.generation);
            let at = index.scanned - self.base;
            self.file.write_all_at(&note, at)?;
            index.scanned += note.len() as u64;
            compaction::crash_point("marked");
            self.metrics.record_size(&index);
            Ok(report)
        });
        drop(index);
        if let Err(e) = self.lock.unlock() {
            self.shared.poison(format!("cannot unlock the data directory: {e}"));
        }
        result
    }

    /// Checks, writes and publishes a batch of writes while holding the
    /// directory lock. Refusals are answered at once; the answers to the
    /// accepted writes are returned, to be sent once the lock is released.
    ///
    /// The index is locked only to check the batch and, after the write and
    /// sync, to publish it: readers are never held up by an `fdatasync`.
    #[allow(clippy::type_complexity)]
    fn commit_locked(
        &mut self,
        writes: Vec<Write>,
        buf: &mut Vec<u8>,
        schedule: &mut Option<SyncSchedule>,
    ) -> Vec<Result<Answer, (Answer, StoreError)>> {
        let shared = Arc::clone(&self.shared);
        let mut index = shared.index_mut();
        if let Err(e) = self.catch_up_locked(&mut index) {
            self.shared.poison(format!("cannot read other writers' appends: {e}"));
        }
        if self.shared.poisoned().is_none()
            && index.scanned - self.base >= self.segment_bytes
            && let Err(e) = self.roll(&mut index)
        {
            self.shared.poison(format!("cannot start a new log segment: {e}"));
        }
        let len = index.scanned;
        buf.clear();
        let mut written: Vec<Written> = Vec::new();
        let mut answers: Vec<Answer> = Vec::new();
        // Carts written to earlier in this batch.
        let mut pending: HashMap<String, View> = HashMap::new();
        for w in writes {
            if let Some(reason) = self.shared.poisoned() {
                w.refuse(StoreError::Unavailable(reason));
                continue;
            }
            let cart = match &w {
                Write::Append(req) => req.cart.clone(),
                Write::Snapshot { cart, .. }
                | Write::Erase { cart, .. }
                | Write::Import { cart, .. } => cart.clone(),
            };
            let view = pending.get(&cart).copied().unwrap_or_else(|| View::of(&index, &cart));
            if let Some(owner) = claimant(&w)
                && !index.owners.has_room_for(owner, MAX_BATCH)
            {
                w.refuse(StoreError::Unavailable(
                    "the log names too many claim owners; it takes a compaction to go on".into(),
                ));
                continue;
            }
            let mut out = Out { buf, len, cart: &cart, written: &mut written };
            match check_and_encode(w, view, &mut out) {
                Ok((answer, view)) => {
                    pending.insert(cart, view);
                    answers.push(answer);
                }
                Err(refused) => {
                    let (w, e) = *refused;
                    w.refuse(e);
                }
            }
        }
        if answers.is_empty() {
            return Vec::new();
        }
        index.committing = true;
        drop(index);
        // Snapshots alone need no sync: a lost one costs a longer replay.
        let durable = answers.iter().any(|a| !matches!(a, Answer::Snapshot(_)));
        let synced = self.write_and_sync(buf, len, answers.len(), durable, schedule);
        let mut index = shared.index_mut();
        index.committing = false;
        if let Err(e) = synced {
            let reason = e.to_string();
            return answers
                .into_iter()
                .map(|a| Err((a, StoreError::Io(std::io::Error::other(reason.clone())))))
                .collect();
        }
        index.scanned = len + buf.len() as u64;
        for r in &written {
            let indexed = Indexed {
                kind: r.kind,
                seq: r.seq,
                timestamp_ms: r.timestamp_ms,
                payload: r.owner.as_deref().unwrap_or_default().as_bytes(),
                offset: r.offset,
                linked: true,
                seeds: false,
            };
            if let Err(e) = index.apply(&r.cart, indexed) {
                self.shared.poison(format!("the index refused a record it checked: {e:?}"));
            }
        }
        self.metrics.record_size(&index);
        drop(index);
        answers.into_iter().map(Ok).collect()
    }

    /// Writes [`PREALLOCATE_BYTES`] of zeros at `end` of the active
    /// segment's file. Failing (a full disk) only costs speed: the records
    /// before it are whole either way.
    fn preallocate(&self, end: u64) {
        let zeros = vec![0u8; PREALLOCATE_BYTES as usize];
        if let Err(e) = self.file.write_all_at(&zeros, end) {
            tracing::warn!(error = %e, "could not preallocate space for the event log");
        }
    }

    /// Writes `buf` and syncs per policy (unless nothing in it needs to be
    /// `durable`: snapshots only). On failure the store is poisoned when the
    /// file may hold records the index does not know.
    fn write_and_sync(
        &mut self,
        buf: &[u8],
        len: u64,
        appends: usize,
        durable: bool,
        schedule: &mut Option<SyncSchedule>,
    ) -> std::io::Result<()> {
        let at = len - self.base;
        if let Err(e) = self.file.write_all_at(buf, at) {
            // Cut off a partial write so the log stays a sequence of whole records.
            if let Err(cut) = self.file.set_len(at) {
                self.shared.poison(format!("write failed ({e}) and truncation failed ({cut})"));
            }
            return Err(e);
        }
        let end = at + buf.len() as u64;
        let synced = Mark { bytes: len + buf.len() as u64 };
        // Is there preallocated space after the batch? Asked with a read,
        // never a stat: once a file's times have been queried, the kernel
        // stamps the next write with a fresh fine-grained mtime, and that
        // inode change would cost every fdatasync an extra write.
        // A failed probe only means preallocating once more than needed.
        let mut next = [0u8; 1];
        if !matches!(self.file.read_at(&mut next, end), Ok(n) if n > 0) {
            self.preallocate(end);
        }
        match self.policy {
            FsyncPolicy::Always if !durable => {}
            FsyncPolicy::Always => {
                if let Err(e) = self.sync(appends) {
                    // The records may or may not be on disk; appending more
                    // could reuse their sequence numbers. Refuse all writes.
                    self.shared.poison(format!("fdatasync failed: {e}"));
                    return Err(e);
                }
                self.record_high_water(synced);
            }
            FsyncPolicy::Batch(_) => {
                if let Some(s) = schedule.as_mut() {
                    s.wrote();
                    if s.due(Instant::now()) {
                        if let Err(e) = self.sync(appends) {
                            self.shared.poison(format!("fdatasync failed: {e}"));
                            return Err(e);
                        }
                        s.synced(Instant::now());
                        self.record_high_water(synced);
                    }
                }
            }
            FsyncPolicy::Never => {}
        }
        Ok(())
    }
}

/// Moves what is waiting on the channel into `batch`, up to [`MAX_BATCH`].
fn take_queued(rx: &Receiver<Command>, batch: &mut Vec<Command>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(command) => batch.push(command),
            Err(_) => break,
        }
    }
}

/// Where a checked write's records go.
struct Out<'a> {
    buf: &'a mut Vec<u8>,
    /// The log offset `buf` starts at.
    len: u64,
    cart: &'a str,
    written: &'a mut Vec<Written>,
}

impl Out<'_> {
    /// Encodes a record linked to `head` (if it is of a chained kind) and
    /// moves `head` to it.
    fn record(&mut self, head: &mut Option<u64>, event: Event) {
        let offset = self.len + self.buf.len() as u64;
        let Event { seq, kind, timestamp_ms, .. } = event;
        let owner =
            (kind == CLAIM_KIND).then(|| String::from_utf8_lossy(&event.payload).into_owned());
        record::encode(self.buf, self.cart, &event, *head);
        if record::is_chained_kind(kind) {
            *head = Some(offset);
        }
        self.written.push(Written {
            cart: self.cart.to_owned(),
            kind,
            seq,
            timestamp_ms,
            owner,
            offset,
        });
    }

    fn claim(&mut self, epoch: u64, owner: &str) {
        let claim = Event {
            seq: epoch,
            kind: CLAIM_KIND,
            timestamp_ms: 0,
            payload: owner.as_bytes().to_vec(),
            idempotency: None,
        };
        self.record(&mut None, claim);
    }
}

/// The owner a write claims the cart for, if it does.
fn claimant(w: &Write) -> Option<&str> {
    match w {
        Write::Append(AppendRequest { fence: Fence::Claim(owner), .. }) => Some(owner),
        Write::Import { .. } => Some(TOOL_OWNER),
        _ => None,
    }
}

/// Checks one write against the cart as the batch left it and encodes its
/// records; returns the answer to send once they are durable and the cart
/// after it, or the write back with its refusal.
fn check_and_encode(
    w: Write,
    view: View,
    out: &mut Out<'_>,
) -> Result<(Answer, View), Box<(Write, StoreError)>> {
    match w {
        Write::Append(req) => {
            let claims = u64::from(matches!(req.fence, Fence::Claim(_)));
            if let Err(e) = req
                .check(view.version, view.epoch)
                .and_then(|()| view.check_room(req.events.len() as u64, claims))
            {
                return Err(Box::new((Write::Append(req), e)));
            }
            let epoch = match &req.fence {
                Fence::Epoch(e) => *e,
                Fence::Claim(owner) => {
                    out.claim(view.epoch + 1, owner);
                    view.epoch + 1
                }
            };
            let count = req.events.len() as u64;
            let mut head = view.head;
            for (i, new) in req.events.into_iter().enumerate() {
                let event = Event {
                    seq: view.version + i as u64 + 1,
                    kind: new.kind,
                    timestamp_ms: new.timestamp_ms,
                    payload: new.payload,
                    idempotency: new.idempotency,
                };
                out.record(&mut head, event);
            }
            let appended = Appended { version: view.version + count, epoch };
            let after = View { version: appended.version, epoch, head, exists: true, ..view };
            Ok((Answer::Appended(req.reply, appended), after))
        }
        Write::Snapshot { cart, snapshot, reply } => {
            if !view.exists || view.version == 0 {
                return Err(Box::new((
                    Write::Snapshot { cart, snapshot, reply },
                    StoreError::NotFound,
                )));
            }
            if snapshot.version > view.version {
                let e = StoreError::Invalid(format!(
                    "a snapshot at version {} of a cart at version {}",
                    snapshot.version, view.version
                ));
                return Err(Box::new((Write::Snapshot { cart, snapshot, reply }, e)));
            }
            if snapshot.version <= view.snapshot_version {
                return Ok((Answer::Snapshot(reply), view));
            }
            let mut head = view.head;
            let snapshot_version = snapshot.version;
            out.record(&mut head, record::snapshot_event(snapshot));
            let after = View { snapshot_version, head, ..view };
            Ok((Answer::Snapshot(reply), after))
        }
        Write::Erase { reply, .. } => {
            if !view.exists {
                return Ok((Answer::Erased(reply, false), view));
            }
            let erased = Event {
                seq: 0,
                kind: ERASED_KIND,
                timestamp_ms: 0,
                payload: vec![],
                idempotency: None,
            };
            out.record(&mut None, erased);
            Ok((Answer::Erased(reply, view.version > 0), View::NONE))
        }
        Write::Import { cart, loaded, reply } => {
            if view.version > 0 || view.snapshot_version > 0 {
                let e = StoreError::Conflict { expected: 0, actual: view.version };
                return Err(Box::new((Write::Import { cart, loaded, reply }, e)));
            }
            let version = loaded.version();
            let snapshot_version = loaded.snapshot.as_ref().map_or(0, |s| s.version);
            let fresh = View { version: snapshot_version, snapshot_version, ..view };
            if let Err(e) = check_import(&cart, &loaded)
                .and_then(|()| fresh.check_room(loaded.events.len() as u64, 1))
            {
                return Err(Box::new((Write::Import { cart, loaded, reply }, e)));
            }
            let epoch = view.epoch + 1;
            out.claim(epoch, TOOL_OWNER);
            let mut head = None;
            if let Some(s) = loaded.snapshot {
                out.record(&mut head, record::snapshot_event(s));
            }
            for e in loaded.events {
                out.record(&mut head, e);
            }
            let after = View { version, epoch, snapshot_version, head, exists: true };
            Ok((Answer::Appended(reply, Appended { version, epoch }), after))
        }
    }
}

/// Refuses an import whose events do not follow its snapshot one by one,
/// or that breaks a record limit.
pub(crate) fn check_import(cart: &str, loaded: &Loaded) -> Result<(), StoreError> {
    let mut version = loaded.snapshot.as_ref().map_or(0, |s| s.version);
    if loaded.is_empty() {
        return Err(StoreError::Invalid("an import needs a snapshot or events".into()));
    }
    for e in &loaded.events {
        if e.seq != version + 1 || record::is_reserved_kind(e.kind) {
            return Err(StoreError::Invalid(format!(
                "cart {cart}: imported event {} does not follow version {version}",
                e.seq
            )));
        }
        version = e.seq;
    }
    crate::check_append(cart, 0, &Fence::Claim(TOOL_OWNER.into()), &[], 0, 0)
}
