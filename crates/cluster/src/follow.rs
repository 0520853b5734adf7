//! Following a cart for this node's watchers, wherever it lives.
//!
//! Each watched cart has one follower per node, however many watchers it
//! has here: a task that serves the cart's states into one latest-state
//! channel. While this node owns the cart it reads the grain's own feed;
//! otherwise it holds a `CartActor.Watch` stream (`forwarded`) to the owner.
//! When the owner changes (a view change, the owner closing the stream, the
//! owner dying) the follower asks the new owner, resuming from the last
//! version it has, so watchers never reconnect and never go backwards. The
//! task ends when the cart's last watcher here goes away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use cart_domain::CartState;
use cart_grain::{
    CartId, GrainRuntime, OwnedTask, Published, StateReceiver, StateSender, offer, offer_state,
};
use tokio::sync::watch;

use crate::client::{Peers, never_delivered};
use crate::membership::Membership;
use crate::node::NodeAddr;
use crate::placement;
use crate::proto::cart::WatchRequest;
use crate::state_wire;

/// Longest pause between attempts to reach a cart's owner.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// First pause after a failed attempt.
const MIN_BACKOFF: Duration = Duration::from_millis(25);
/// A source that lasted less than this before it moved counts as failed.
const STEADY: Duration = Duration::from_secs(1);

struct Followed {
    tx: StateSender,
    _task: OwnedTask,
}

/// The followers of this node, one per watched cart.
pub struct Followers {
    runtime: Arc<GrainRuntime>,
    membership: Arc<Membership>,
    peers: Arc<Peers>,
    followed: Mutex<HashMap<CartId, Followed>>,
    myself: Weak<Followers>,
}

/// How one attempt to follow the cart from its owner ended.
enum Source {
    /// The source ended in order (owner changed, stream closed): ask again
    /// at once.
    Moved,
    /// The owner could not be reached; `avoid` it when it certainly never
    /// took the call.
    Failed { avoid: Option<NodeAddr> },
    /// Nobody watches any more.
    Unwatched,
}

impl Followers {
    /// Followers serving from `runtime` (owned carts) or through `peers`.
    pub fn new(
        runtime: Arc<GrainRuntime>,
        membership: Arc<Membership>,
        peers: Arc<Peers>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|myself| Followers {
            runtime,
            membership,
            peers,
            followed: Mutex::new(HashMap::new()),
            myself: myself.clone(),
        })
    }

    /// The channel of `id`'s newest state, starting at `current` (or newer),
    /// following the cart until the returned receiver and every other one of
    /// this cart are dropped.
    pub fn follow(&self, id: &CartId, current: &CartState) -> StateReceiver {
        let mut followed = self.followed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = followed.get(id) {
            offer_state(&f.tx, current);
            return f.tx.subscribe();
        }
        let (tx, rx) = watch::channel(Some(Published::new(Arc::clone(current))));
        let task = OwnedTask::spawn(run(self.myself.clone(), id.clone(), tx.clone()));
        followed.insert(id.clone(), Followed { tx, _task: task });
        metrics::gauge!(crate::families::WATCH_FOLLOWED.name).set(followed.len() as f64);
        rx
    }

    /// The channel of `id` if this node already follows it and knows a
    /// state: a further watcher joins without asking the owner again.
    pub fn join(&self, id: &CartId) -> Option<StateReceiver> {
        let followed = self.followed.lock().unwrap_or_else(PoisonError::into_inner);
        let f = followed.get(id)?;
        f.tx.borrow().is_some().then(|| f.tx.subscribe())
    }

    /// Ends every watch followed here (this node is leaving): the watchers'
    /// channels close, so their clients reconnect to another node.
    pub fn close_all(&self) {
        let mut followed = self.followed.lock().unwrap_or_else(PoisonError::into_inner);
        followed.clear();
        metrics::gauge!(crate::families::WATCH_FOLLOWED.name).set(0.0);
    }

    /// Removes `id`'s follower if nobody watches; whether it did.
    fn remove_if_unwatched(&self, id: &CartId) -> bool {
        let mut followed = self.followed.lock().unwrap_or_else(PoisonError::into_inner);
        let unwatched = followed.get(id).is_none_or(|f| f.tx.receiver_count() == 0);
        if unwatched {
            // This drops the task's own handle; it ends right after.
            followed.remove(id);
            metrics::gauge!(crate::families::WATCH_FOLLOWED.name).set(followed.len() as f64);
        }
        unwatched
    }

    /// Follows the cart from its owner by the current view until that
    /// source ends.
    async fn follow_once(&self, id: &CartId, tx: &StateSender, avoid: &[NodeAddr]) -> Source {
        let mut views = self.membership.subscribe();
        let view = self.membership.view();
        let Some(owner) = placement::owner(id.as_str(), &view, avoid).cloned() else {
            return Source::Failed { avoid: None };
        };
        let moved = || {
            let view = self.membership.view();
            placement::owner(id.as_str(), &view, avoid) != Some(&owner)
        };
        if owner == *self.membership.me() {
            let Ok(mut feed) = self.runtime.feed(id).await else {
                return Source::Failed { avoid: None };
            };
            loop {
                if let Some(state) = feed.borrow_and_update().clone() {
                    offer(tx, &state);
                }
                tokio::select! {
                    changed = feed.changed() => {
                        if changed.is_err() {
                            return Source::Moved;
                        }
                    }
                    changed = views.changed() => {
                        if changed.is_err() || moved() {
                            return Source::Moved;
                        }
                    }
                    () = tx.closed() => return Source::Unwatched,
                }
            }
        }
        let from_version = tx.borrow().as_ref().map_or(0, |s| s.version());
        let request = WatchRequest { cart_id: id.to_string(), from_version, forwarded: true };
        let mut client = match self.peers.watch_client(&owner) {
            Ok(client) => client,
            Err(_) => return Source::Failed { avoid: Some(owner) },
        };
        let mut stream = tokio::select! {
            opened = client.watch(request) => match opened {
                Ok(stream) => stream.into_inner(),
                Err(status) => {
                    let avoid = never_delivered(&status).then_some(owner);
                    return Source::Failed { avoid };
                }
            },
            () = tx.closed() => return Source::Unwatched,
        };
        loop {
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(state)) => match state_wire::from_wire(state, self.runtime.items()) {
                        Ok(state) => offer_state(tx, &state),
                        Err(e) => {
                            tracing::warn!(cart = %id, owner = %owner, error = %e, "a watched cart's owner sent a bad state");
                            return Source::Failed { avoid: None };
                        }
                    },
                    Ok(None) => return Source::Moved,
                    Err(status) => {
                        tracing::debug!(cart = %id, owner = %owner, code = ?status.code(), "watch stream from the owner broke");
                        return Source::Failed { avoid: never_delivered(&status).then_some(owner) };
                    }
                },
                changed = views.changed() => {
                    if changed.is_err() || moved() {
                        return Source::Moved;
                    }
                }
                () = tx.closed() => return Source::Unwatched,
            }
        }
    }
}

/// A follower's life: follow the owner, again after every move, with a
/// growing pause after failures, until nobody watches.
async fn run(followers: Weak<Followers>, id: CartId, tx: StateSender) {
    let mut backoff = MIN_BACKOFF;
    let mut avoid: Vec<NodeAddr> = Vec::new();
    loop {
        let Some(f) = followers.upgrade() else { return };
        let started = tokio::time::Instant::now();
        let source = f.follow_once(&id, &tx, &avoid).await;
        // A source that ends at once (nodes disagreeing on the owner, each
        // handing the cart to the other) is paced like a failure.
        let source = match source {
            Source::Moved if started.elapsed() < STEADY => Source::Failed { avoid: None },
            other => other,
        };
        match source {
            Source::Moved => {
                backoff = MIN_BACKOFF;
                avoid.clear();
            }
            Source::Failed { avoid: unreachable } => {
                if let Some(node) = unreachable {
                    avoid.push(node);
                } else {
                    avoid.clear();
                }
                drop(f);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = tx.closed() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Source::Unwatched => {
                if f.remove_if_unwatched(&id) {
                    return;
                }
            }
        }
        if tx.receiver_count() == 0 && f.remove_if_unwatched(&id) {
            return;
        }
    }
}
