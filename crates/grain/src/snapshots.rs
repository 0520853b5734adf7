//! Snapshots taken in a turn are stored off the request path: the turn
//! queues one and answers; a writer task stores them in order. A full queue
//! drops the snapshot (the next turn queues another): a snapshot only
//! shortens a later replay, so it never holds a request up.

use std::sync::Arc;

use cart_store::{EventStore, Snapshot, StoreError};
use tokio::sync::mpsc;

use crate::CartId;
use crate::task::OwnedTask;

/// Snapshots waiting for the writer before further ones are dropped.
const QUEUE: usize = 1024;

/// The queue of snapshots and the task that stores them.
pub(crate) struct SnapshotWriter {
    queue: mpsc::Sender<(CartId, Snapshot)>,
    _task: OwnedTask,
}

impl SnapshotWriter {
    /// Starts the writer over `store` on the current runtime.
    pub fn start(store: Arc<dyn EventStore>) -> Self {
        let (queue, mut rx) = mpsc::channel::<(CartId, Snapshot)>(QUEUE);
        let task = OwnedTask::spawn(async move {
            while let Some((id, snapshot)) = rx.recv().await {
                save(store.as_ref(), &id, snapshot).await;
            }
        });
        SnapshotWriter { queue, _task: task }
    }

    /// Queues `snapshot` of `id`; `false` if the queue is full.
    pub fn offer(&self, id: &CartId, snapshot: Snapshot) -> bool {
        let queued = self.queue.try_send((id.clone(), snapshot)).is_ok();
        if !queued {
            metrics::counter!(crate::families::SNAPSHOTS_DROPPED.name).increment(1);
        }
        queued
    }
}

/// Stores one snapshot; returns whether it was stored. A failure costs
/// only a longer replay later, so it is logged, not returned.
pub(crate) async fn save(store: &dyn EventStore, id: &CartId, snapshot: Snapshot) -> bool {
    let bytes = snapshot.state.len();
    match store.save_snapshot(id.as_str(), snapshot).await {
        Ok(()) => {
            metrics::counter!(crate::families::SNAPSHOTS.name).increment(1);
            metrics::histogram!(crate::families::SNAPSHOT_BYTES.name).record(bytes as f64);
            true
        }
        // Erased meanwhile: nothing to keep.
        Err(StoreError::NotFound) => false,
        Err(e) => {
            tracing::warn!(cart = %id, error = %e, "could not store a snapshot");
            false
        }
    }
}
