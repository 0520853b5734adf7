//! A cart's state channel as a gRPC stream of typed states.

use std::pin::Pin;

use cart_grain::{StateReceiver, WatchPermit};
use futures_util::Stream;
use tonic::Status;

use crate::proto::cart as wire;
use crate::state_wire;

/// The stream type of `CartActor.Watch`.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<wire::CartState, Status>> + Send>>;

/// The states of `updates` newer than `from_version`: the current one first
/// (when newer), then each newer one; ends when the channel closes. Holds
/// `permit` (this stream's place under the watcher cap) while it lives.
pub fn states(updates: StateReceiver, from_version: u64, permit: WatchPermit) -> WatchStream {
    let start = (updates, from_version, permit);
    Box::pin(futures_util::stream::unfold(start, |(mut updates, last, permit)| async move {
        loop {
            let published = updates.borrow_and_update().clone();
            if let Some(published) = published.filter(|p| p.version() > last) {
                metrics::counter!(crate::families::WATCH_STATES_SENT.name).increment(1);
                let state = state_wire::to_wire(published.state());
                return Some((Ok(state), (updates, published.version(), permit)));
            }
            updates.changed().await.ok()?;
        }
    }))
}
