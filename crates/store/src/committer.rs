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

use crate::gather::Gather;
use crate::high_water::HighWater;
use crate::log::{PREALLOCATE_BYTES, Shared, trim_preallocated};
use crate::record::{self, CLAIM_KIND};
use crate::sync::{FsyncPolicy, SyncSchedule};
use crate::{AppendRequest, Appended, Event, Fence, StoreError};

/// Most commands taken into one batch.
const MAX_BATCH: usize = 4096;

/// Work for the committer.
pub(crate) enum Command {
    Append(AppendRequest),
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

/// Where an append's answer goes.
type AppendReply = oneshot::Sender<Result<Appended, StoreError>>;

struct Accepted {
    reply: AppendReply,
    cart: String,
    offsets: Vec<u64>,
    claim: Option<(u64, String)>,
    appended: Appended,
}

/// The committer's state; runs on its own thread until every sender is gone.
pub(crate) struct Committer {
    pub file: File,
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
    /// Bytes of whole records in the log.
    pub(crate) log_bytes: Gauge,
    /// Carts the log holds.
    pub(crate) carts: Gauge,
}

impl SyncMetrics {
    /// Registers the handles with the installed recorder (if any).
    pub(crate) fn new() -> Self {
        SyncMetrics {
            duration: metrics::histogram!("cart_log_fsync_duration_seconds"),
            batch_size: metrics::histogram!("cart_log_fsync_batch_size"),
            syncs: metrics::counter!("cart_log_fsyncs_total"),
            log_bytes: metrics::gauge!("cart_log_bytes"),
            carts: metrics::gauge!("cart_log_carts"),
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
        let end = self.shared.index().scanned;
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

    /// Leaves no preallocated space behind after a clean shutdown. Catches up
    /// first, under the lock, so another process's appends are never cut.
    fn trim_on_exit(&self) {
        if self.lock.lock().is_err() {
            return;
        }
        let mut index = self.shared.index_mut();
        let trimmed = self
            .shared
            .catch_up(&mut index, Some(&self.file))
            .and_then(|()| trim_preallocated(self.shared.path(), &self.file, index.scanned));
        drop(index);
        if let Err(e) = trimmed {
            tracing::warn!(error = %e, "could not trim the event log's preallocated tail");
        }
        let _ = self.lock.unlock();
    }

    fn periodic_sync(&mut self, schedule: &mut Option<SyncSchedule>) {
        // Whatever was written before the sync is on disk after it, by
        // whichever process wrote it: one file, one page cache.
        let end = self.shared.index().scanned;
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
    fn record_high_water(&mut self, synced: u64) {
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
        let (appends, flushes): (Vec<_>, Vec<_>) =
            batch.into_iter().partition(|c| matches!(c, Command::Append(_)));
        if !appends.is_empty() {
            if let Err(e) = self.lock.lock() {
                let reason = format!("cannot lock the data directory: {e}");
                for command in appends {
                    if let Command::Append(req) = command {
                        let _ = req.reply.send(Err(StoreError::Unavailable(reason.clone())));
                    }
                }
            } else {
                let answers = self.commit_locked(appends, buf, schedule);
                if let Err(e) = self.lock.unlock() {
                    self.shared.poison(format!("cannot unlock the data directory: {e}"));
                }
                for (reply, answer) in answers {
                    let _ = reply.send(answer);
                }
            }
        }
        let flushes: Vec<_> = flushes
            .into_iter()
            .filter_map(|c| match c {
                Command::Flush(reply) => Some(reply),
                Command::Append(_) => None,
            })
            .collect();
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
    }

    /// Checks, writes and publishes a batch of appends while holding the
    /// directory lock. Refusals are answered at once; the answers to the
    /// accepted appends are returned, to be sent once the lock is released.
    ///
    /// The index is locked only to check the batch and, after the write and
    /// sync, to publish it: readers are never held up by an `fdatasync`.
    fn commit_locked(
        &mut self,
        appends: Vec<Command>,
        buf: &mut Vec<u8>,
        schedule: &mut Option<SyncSchedule>,
    ) -> Vec<(AppendReply, Result<Appended, StoreError>)> {
        let shared = Arc::clone(&self.shared);
        let mut index = shared.index_mut();
        if let Err(e) = self.shared.catch_up(&mut index, Some(&self.file)) {
            self.shared.poison(format!("cannot read other writers' appends: {e}"));
        }
        let len = index.scanned;
        buf.clear();
        let mut accepted: Vec<Accepted> = Vec::new();
        // Version and epoch of carts appended to earlier in this batch.
        let mut pending: HashMap<String, (u64, u64)> = HashMap::new();
        for command in appends {
            let Command::Append(req) = command else {
                continue;
            };
            if let Some(reason) = self.shared.poisoned() {
                let _ = req.reply.send(Err(StoreError::Unavailable(reason)));
                continue;
            }
            let (version, epoch) = match pending.get(&req.cart) {
                Some(state) => *state,
                None => index
                    .carts
                    .get(req.cart.as_str())
                    .map_or((0, 0), |c| (c.offsets.len() as u64, c.epoch())),
            };
            if let Err(e) = req.check(version, epoch) {
                let _ = req.reply.send(Err(e));
                continue;
            }
            let (epoch, claim) = match req.fence {
                Fence::Epoch(e) => (e, None),
                Fence::Claim(owner) => {
                    let claimed = epoch + 1;
                    let record = Event {
                        seq: claimed,
                        kind: CLAIM_KIND,
                        timestamp_ms: 0,
                        payload: owner.clone().into_bytes(),
                        idempotency: None,
                    };
                    record::encode(buf, &req.cart, &record);
                    (claimed, Some((claimed, owner)))
                }
            };
            let mut offsets = Vec::with_capacity(req.events.len());
            for (i, new) in req.events.into_iter().enumerate() {
                offsets.push(len + buf.len() as u64);
                let event = Event {
                    seq: version + i as u64 + 1,
                    kind: new.kind,
                    timestamp_ms: new.timestamp_ms,
                    payload: new.payload,
                    idempotency: new.idempotency,
                };
                record::encode(buf, &req.cart, &event);
            }
            let appended = Appended { version: version + offsets.len() as u64, epoch };
            pending.insert(req.cart.clone(), (appended.version, epoch));
            accepted.push(Accepted { reply: req.reply, cart: req.cart, offsets, claim, appended });
        }
        if accepted.is_empty() {
            return Vec::new();
        }
        index.committing = true;
        drop(index);
        let written = self.write_and_sync(buf, len, accepted.len(), schedule);
        let mut index = shared.index_mut();
        index.committing = false;
        let mut answers = Vec::with_capacity(accepted.len());
        if let Err(e) = written {
            let reason = e.to_string();
            answers.extend(
                accepted
                    .into_iter()
                    .map(|a| (a.reply, Err(StoreError::Io(std::io::Error::other(reason.clone()))))),
            );
            return answers;
        }
        index.scanned = len + buf.len() as u64;
        self.metrics.log_bytes.set(index.scanned as f64);
        for a in &accepted {
            let entry = index.carts.entry(a.cart.as_str().into()).or_default();
            entry.offsets.extend_from_slice(&a.offsets);
            if let Some((epoch, owner)) = &a.claim {
                entry.claim = Some((*epoch, owner.as_str().into()));
            }
        }
        self.metrics.carts.set(index.carts.len() as f64);
        drop(index);
        answers.extend(accepted.into_iter().map(|a| (a.reply, Ok(a.appended))));
        answers
    }

    /// Writes [`PREALLOCATE_BYTES`] of zeros at `end`. Failing (a full disk)
    /// only costs speed: the records before it are whole either way.
    fn preallocate(&self, end: u64) {
        let zeros = vec![0u8; PREALLOCATE_BYTES as usize];
        if let Err(e) = self.file.write_all_at(&zeros, end) {
            tracing::warn!(error = %e, "could not preallocate space for the event log");
        }
    }

    /// Writes `buf` and syncs per policy. On failure the store is poisoned
    /// when the file may hold records the index does not know.
    fn write_and_sync(
        &mut self,
        buf: &[u8],
        len: u64,
        appends: usize,
        schedule: &mut Option<SyncSchedule>,
    ) -> std::io::Result<()> {
        if let Err(e) = self.file.write_all_at(buf, len) {
            // Cut off a partial write so the log stays a sequence of whole records.
            if let Err(cut) = self.file.set_len(len) {
                self.shared.poison(format!("write failed ({e}) and truncation failed ({cut})"));
            }
            return Err(e);
        }
        let end = len + buf.len() as u64;
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
            FsyncPolicy::Always => {
                if let Err(e) = self.sync(appends) {
                    // The records may or may not be on disk; appending more
                    // could reuse their sequence numbers. Refuse all writes.
                    self.shared.poison(format!("fdatasync failed: {e}"));
                    return Err(e);
                }
                self.record_high_water(end);
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
                        self.record_high_water(end);
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
