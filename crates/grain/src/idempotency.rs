//! Remembered idempotency keys of one cart, for a time window.
//!
//! A key protects its request for [`DEFAULT_WINDOW`] (configurable) after
//! the request was applied: a retry with the same key and request within it
//! answers the state that request produced, a different request with the
//! same key is refused. Keys come from the log (each keyed append stores its
//! tag), so they survive restarts and owner moves. A cart remembers at most
//! [`MAX_KEYS_PER_CART`] keys within the window; a further keyed request is
//! refused rather than a key forgotten early.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use cart_store::IdempotencyTag;

/// How long a key protects by default: a day.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// Most keys one cart remembers within the window.
pub const MAX_KEYS_PER_CART: usize = 10_000;

/// What a key was first used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Same request: its result is the cart at this version.
    Replay(u64),
    /// Same key, different request.
    Reused,
}

#[derive(Debug, Clone)]
struct Entry {
    fingerprint: u64,
    version: u64,
    at_ms: i64,
}

/// The keys of a cart used within the window, and the versions they
/// produced.
#[derive(Debug, Default, Clone)]
pub struct IdempotencyKeys {
    by_key: HashMap<Box<str>, Entry>,
    /// Keys in the order they were used, to forget them when they expire.
    order: VecDeque<(i64, Box<str>)>,
}

impl IdempotencyKeys {
    /// Records that the request `tag` produced `version` at `at_ms`, and
    /// forgets keys that expired by then.
    pub fn record(&mut self, tag: &IdempotencyTag, version: u64, at_ms: i64, window: Duration) {
        self.expire(at_ms, window);
        let key: Box<str> = tag.key.as_str().into();
        self.order.push_back((at_ms, key.clone()));
        self.by_key.insert(key, Entry { fingerprint: tag.fingerprint, version, at_ms });
    }

    /// Forgets keys used before `now_ms - window`.
    pub fn expire(&mut self, now_ms: i64, window: Duration) {
        let oldest = now_ms.saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
        while let Some((at, _)) = self.order.front()
            && *at < oldest
        {
            if let Some((at, key)) = self.order.pop_front()
                && self.by_key.get(&key).is_some_and(|e| e.at_ms == at)
            {
                self.by_key.remove(&key);
            }
        }
    }

    /// Whether `tag`'s key was used within the window, and with what.
    pub fn check(&self, tag: &IdempotencyTag) -> Option<Seen> {
        let entry = self.by_key.get(tag.key.as_str())?;
        Some(if entry.fingerprint == tag.fingerprint {
            Seen::Replay(entry.version)
        } else {
            Seen::Reused
        })
    }

    /// The keys in the order they were used, for a snapshot.
    pub fn to_snapshot(&self) -> Vec<cart_domain::cart::snapshot::SnapshotKey> {
        self.order
            .iter()
            .filter_map(|(at, key)| {
                let e = self.by_key.get(key).filter(|e| e.at_ms == *at)?;
                Some(cart_domain::cart::snapshot::SnapshotKey {
                    key: key.to_string(),
                    fingerprint: e.fingerprint,
                    version: e.version,
                    at_ms: e.at_ms,
                })
            })
            .collect()
    }

    /// Keys read back from a snapshot (those still inside the window at
    /// `now_ms`).
    pub fn from_snapshot(
        keys: Vec<cart_domain::cart::snapshot::SnapshotKey>,
        now_ms: i64,
        window: Duration,
    ) -> Self {
        let mut out = IdempotencyKeys::default();
        for k in keys {
            let tag = IdempotencyTag { key: k.key, fingerprint: k.fingerprint };
            out.record(&tag, k.version, k.at_ms, window);
        }
        out.expire(now_ms, window);
        out
    }

    /// Whether the cart holds as many keys as it may (after `expire`).
    pub fn is_full(&self) -> bool {
        self.by_key.len() >= MAX_KEYS_PER_CART
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(key: &str, fingerprint: u64) -> IdempotencyTag {
        IdempotencyTag { key: key.into(), fingerprint }
    }

    const HOUR: i64 = 3_600_000;

    #[test]
    fn replays_same_request_and_refuses_different_one() {
        let mut keys = IdempotencyKeys::default();
        keys.record(&tag("k", 1), 5, 0, DEFAULT_WINDOW);
        assert_eq!(keys.check(&tag("k", 1)), Some(Seen::Replay(5)));
        assert_eq!(keys.check(&tag("k", 2)), Some(Seen::Reused));
        assert_eq!(keys.check(&tag("other", 1)), None);
    }

    #[test]
    fn a_key_protects_for_the_window_however_many_keys_follow() {
        let mut keys = IdempotencyKeys::default();
        keys.record(&tag("first", 1), 1, 0, DEFAULT_WINDOW);
        for i in 0..5_000u64 {
            keys.record(&tag(&i.to_string(), i), i + 2, i as i64, DEFAULT_WINDOW);
        }
        assert_eq!(keys.check(&tag("first", 1)), Some(Seen::Replay(1)), "not a count of keys");
        keys.expire(23 * HOUR, DEFAULT_WINDOW);
        assert_eq!(keys.check(&tag("first", 1)), Some(Seen::Replay(1)), "23 h later");
        keys.expire(24 * HOUR + 1, DEFAULT_WINDOW);
        assert_eq!(keys.check(&tag("first", 1)), None, "forgotten after the window");
        keys.expire(25 * HOUR, DEFAULT_WINDOW);
        assert!(keys.by_key.is_empty() && keys.order.is_empty());
    }

    #[test]
    fn keys_survive_a_snapshot_in_order() {
        let mut keys = IdempotencyKeys::default();
        keys.record(&tag("a", 1), 1, 0, DEFAULT_WINDOW);
        keys.record(&tag("b", 2), 2, HOUR, DEFAULT_WINDOW);
        keys.record(&tag("a", 1), 3, 2 * HOUR, DEFAULT_WINDOW);
        let back = IdempotencyKeys::from_snapshot(keys.to_snapshot(), 2 * HOUR, DEFAULT_WINDOW);
        assert_eq!(back.check(&tag("a", 1)), Some(Seen::Replay(3)));
        assert_eq!(back.check(&tag("b", 2)), Some(Seen::Replay(2)));
        let later = IdempotencyKeys::from_snapshot(
            keys.to_snapshot(),
            24 * HOUR + HOUR + 1,
            DEFAULT_WINDOW,
        );
        assert_eq!(later.check(&tag("b", 2)), None, "expired keys are not brought back");
        assert_eq!(later.check(&tag("a", 1)), Some(Seen::Replay(3)));
    }

    #[test]
    fn a_full_cart_says_so() {
        let mut keys = IdempotencyKeys::default();
        for i in 0..MAX_KEYS_PER_CART {
            keys.record(&tag(&i.to_string(), 0), 1, 0, DEFAULT_WINDOW);
        }
        assert!(keys.is_full());
        keys.expire(25 * HOUR, DEFAULT_WINDOW);
        assert!(!keys.is_full());
    }
}
