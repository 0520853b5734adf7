//! The serving lease: whether this node may answer for the carts it owns.
//!
//! In a cluster a node serves (from memory or the store) only while it holds
//! a lease: the cluster grants one for a fixed time from the start of each
//! ping round that reached a majority. A node cut off from the majority, or
//! one that stood still, sees its lease run out before any other node may
//! take its carts over (the takeover rule waits longer than a lease; see
//! `docs/ARCHITECTURE.md`), and refuses from then on. Every lapse starts a new
//! *generation*: grains activated under an older one are reloaded from the
//! store before they answer, so nothing read while the lease was lost is
//! ever served again.
//!
//! Times are monotonic milliseconds ([`crate::Clock::monotonic_ms`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The lease of one node.
#[derive(Debug)]
pub struct Lease {
    /// Valid while `now < until`; `u64::MAX` is a lease that never ends.
    until: AtomicU64,
    generation: AtomicU64,
    /// Serialises renewals so a lapse is seen by exactly one of them.
    renewing: Mutex<()>,
    /// Woken on every grant.
    granted: tokio::sync::Notify,
}

impl Lease {
    /// A lease that never ends: a node alone on its store.
    pub fn unbounded() -> Self {
        Lease::starting_at(u64::MAX)
    }

    /// No lease yet: a cluster node before its first majority round.
    pub fn none() -> Self {
        Lease::starting_at(0)
    }

    fn starting_at(until: u64) -> Self {
        Lease {
            until: AtomicU64::new(until),
            generation: AtomicU64::new(0),
            renewing: Mutex::new(()),
            granted: tokio::sync::Notify::new(),
        }
    }

    /// Whether a lease was ever granted (or never ends).
    pub fn ever_granted(&self) -> bool {
        self.until() != 0
    }

    /// Waits at most `within` for a lease to be held by `now()`; returns
    /// whether one is.
    pub async fn wait_held(&self, within: std::time::Duration, now: impl Fn() -> u64) -> bool {
        let wait = async {
            loop {
                let granted = self.granted.notified();
                tokio::pin!(granted);
                granted.as_mut().enable();
                if self.held(now()).is_some() {
                    return;
                }
                granted.await;
            }
        };
        let _ = tokio::time::timeout(within, wait).await;
        self.held(now()).is_some()
    }

    /// The generation of the lease held at `now`, if one is.
    pub fn held(&self, now: u64) -> Option<u64> {
        let until = self.until.load(Ordering::SeqCst);
        // The generation is read after the deadline: a renewal bumps the
        // generation before it publishes a later deadline.
        let generation = self.generation.load(Ordering::SeqCst);
        (now < until).then_some(generation)
    }

    /// Whether the lease of `generation` is still held at `now`.
    pub fn still_held(&self, generation: u64, now: u64) -> bool {
        self.held(now) == Some(generation)
    }

    /// Until when the lease runs (monotonic ms; 0 for none, `u64::MAX` for
    /// never-ending).
    pub fn until(&self) -> u64 {
        self.until.load(Ordering::SeqCst)
    }

    /// Extends the lease to `until`, as granted at `now`. Returns whether it
    /// had lapsed (the new lease is then a new generation). A deadline
    /// earlier than the current one is ignored.
    pub fn renew(&self, now: u64, until: u64) -> bool {
        let _one = self.renewing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.until.load(Ordering::SeqCst);
        let lapsed = current <= now;
        if lapsed {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        if until > current || lapsed {
            self.until.store(until, Ordering::SeqCst);
        }
        self.granted.notify_waiters();
        lapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_until_its_deadline_and_a_lapse_starts_a_new_generation() {
        let lease = Lease::none();
        assert_eq!(lease.held(10), None, "no lease before the first grant");
        assert!(lease.renew(10, 1_010), "from none is from a lapse");
        let g = lease.held(500).unwrap();
        assert!(lease.still_held(g, 1_009));
        assert!(!lease.still_held(g, 1_010));
        assert!(!lease.renew(900, 1_900), "renewed in time");
        assert!(lease.still_held(g, 1_500), "the same generation");
        assert!(!lease.renew(950, 1_200), "an earlier deadline does not shorten it");
        assert_eq!(lease.until(), 1_900);
        assert!(lease.renew(2_500, 3_500), "renewed too late");
        assert!(!lease.still_held(g, 2_600), "what was read before the lapse is not served");
        assert!(lease.held(2_600).is_some());
    }

    #[test]
    fn an_unbounded_lease_never_ends() {
        let lease = Lease::unbounded();
        assert_eq!(lease.held(u64::MAX - 1), Some(0));
    }
}
