//! The single writer of the log: batches concurrent appends into one write
//! and one `fdatasync` (group commit).
//!
//! Appends arrive on a channel. The committer takes everything that is
//! waiting, checks each append's expected version, writes all accepted
//! records with one `write`, syncs once per the [`FsyncPolicy`], publishes the
//! new offsets and only then answers. While it syncs, new appends queue up and
//! form the next batch, so throughput grows with concurrency instead of being
//! capped at one sync per request.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::file::Shared;
use crate::record::{self, MAX_KEY_LEN};
use crate::sync::{FsyncPolicy, SyncSchedule};
use crate::{Event, NewEvent, StoreError};

/// Most commands taken into one batch.
const MAX_BATCH: usize = 4096;

/// Work for the committer.
pub(crate) enum Command {
    Append(AppendRequest),
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

/// One conditional append waiting for its answer.
pub(crate) struct AppendRequest {
    pub cart: String,
    pub expected: u64,
    pub events: Vec<NewEvent>,
    pub reply: oneshot::Sender<Result<u64, StoreError>>,
}

struct Accepted {
    reply: oneshot::Sender<Result<u64, StoreError>>,
    cart: String,
    offsets: Vec<u64>,
    version: u64,
}

/// The committer's state; runs on its own thread until every sender is gone.
pub(crate) struct Committer {
    pub file: File,
    pub len: u64,
    pub shared: Arc<Shared>,
    pub policy: FsyncPolicy,
}

impl Committer {
    pub(crate) fn run(mut self, rx: Receiver<Command>) {
        let mut schedule = match self.policy {
            FsyncPolicy::Batch(interval) => Some(SyncSchedule::new(interval, Instant::now())),
            _ => None,
        };
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
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
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            self.commit(batch, &mut buf, &mut schedule);
        }
        if let Err(e) = self.file.sync_data() {
            tracing::error!(error = %e, "final sync of the event log failed");
        }
    }

    fn periodic_sync(&mut self, schedule: &mut Option<SyncSchedule>) {
        if let Err(e) = self.sync(1) {
            self.shared
                .poison(format!("periodic fdatasync failed: {e}"));
        }
        if let Some(s) = schedule {
            s.synced(Instant::now());
        }
    }

    fn sync(&self, appends: usize) -> std::io::Result<()> {
        let started = Instant::now();
        let result = self.file.sync_data();
        metrics::histogram!("cart_log_fsync_duration_seconds").record(started.elapsed());
        metrics::histogram!("cart_log_fsync_batch_size").record(appends as f64);
        metrics::counter!("cart_log_fsyncs_total").increment(1);
        result
    }

    fn commit(
        &mut self,
        batch: Vec<Command>,
        buf: &mut Vec<u8>,
        schedule: &mut Option<SyncSchedule>,
    ) {
        buf.clear();
        let mut accepted: Vec<Accepted> = Vec::new();
        let mut flushes = Vec::new();
        let mut pending: HashMap<String, u64> = HashMap::new();
        for command in batch {
            match command {
                Command::Flush(reply) => flushes.push(reply),
                Command::Append(req) => {
                    if let Some(reason) = self.shared.poisoned() {
                        let _ = req.reply.send(Err(StoreError::Unavailable(reason)));
                        continue;
                    }
                    let current = match pending.get(&req.cart) {
                        Some(v) => *v,
                        None => self.shared.version(&req.cart),
                    };
                    if let Err(e) = check(&req, current) {
                        let _ = req.reply.send(Err(e));
                        continue;
                    }
                    let mut offsets = Vec::with_capacity(req.events.len());
                    for (i, new) in req.events.into_iter().enumerate() {
                        offsets.push(self.len + buf.len() as u64);
                        let event = Event {
                            seq: current + i as u64 + 1,
                            kind: new.kind,
                            timestamp_ms: new.timestamp_ms,
                            payload: new.payload,
                            idempotency: new.idempotency,
                        };
                        record::encode(buf, &req.cart, &event);
                    }
                    let version = current + offsets.len() as u64;
                    pending.insert(req.cart.clone(), version);
                    accepted.push(Accepted {
                        reply: req.reply,
                        cart: req.cart,
                        offsets,
                        version,
                    });
                }
            }
        }
        if !accepted.is_empty() {
            if let Err(e) = self.write_and_sync(buf, accepted.len(), schedule) {
                let reason = e.to_string();
                for a in accepted {
                    let _ = a
                        .reply
                        .send(Err(StoreError::Io(std::io::Error::other(reason.clone()))));
                }
                for f in flushes {
                    let _ = f.send(Err(StoreError::Unavailable(reason.clone())));
                }
                return;
            }
            self.shared.publish(
                accepted
                    .iter()
                    .map(|a| (a.cart.as_str(), a.offsets.as_slice())),
            );
            for a in accepted {
                let _ = a.reply.send(Ok(a.version));
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
    }

    /// Writes `buf` and syncs per policy. On failure the store is poisoned
    /// when the file may hold records the index does not know.
    fn write_and_sync(
        &mut self,
        buf: &[u8],
        appends: usize,
        schedule: &mut Option<SyncSchedule>,
    ) -> std::io::Result<()> {
        if let Err(e) = self.file.write_all(buf) {
            // Cut off a partial write so the log stays a sequence of whole records.
            if let Err(cut) = self.file.set_len(self.len) {
                self.shared
                    .poison(format!("write failed ({e}) and truncation failed ({cut})"));
            }
            return Err(e);
        }
        self.len += buf.len() as u64;
        match self.policy {
            FsyncPolicy::Always => {
                if let Err(e) = self.sync(appends) {
                    // The records may or may not be on disk; appending more
                    // could reuse their sequence numbers. Refuse all writes.
                    self.shared.poison(format!("fdatasync failed: {e}"));
                    return Err(e);
                }
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
                    }
                }
            }
            FsyncPolicy::Never => {}
        }
        Ok(())
    }
}

fn check(req: &AppendRequest, current: u64) -> Result<(), StoreError> {
    if req.expected != current {
        return Err(StoreError::Conflict {
            expected: req.expected,
            actual: current,
        });
    }
    if req.cart.is_empty() || req.cart.len() > MAX_KEY_LEN {
        return Err(StoreError::Invalid(format!(
            "cart id must be 1..={MAX_KEY_LEN} bytes"
        )));
    }
    if req.events.is_empty() {
        return Err(StoreError::Invalid(
            "an append needs at least one event".into(),
        ));
    }
    if req.events.iter().any(|e| {
        e.idempotency
            .as_ref()
            .is_some_and(|t| t.key.len() > MAX_KEY_LEN)
    }) {
        return Err(StoreError::Invalid(format!(
            "idempotency key must be at most {MAX_KEY_LEN} bytes"
        )));
    }
    Ok(())
}
