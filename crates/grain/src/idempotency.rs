//! Remembered idempotency keys of one cart.

use cart_store::IdempotencyTag;

/// Most keys remembered per cart; older ones are forgotten first.
pub const MAX_KEYS_PER_CART: usize = 64;

/// What a key was first used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Same request: its result is the cart at this version.
    Replay(u64),
    /// Same key, different request.
    Reused,
}

/// The recent idempotency keys of a cart and the versions they produced.
#[derive(Debug, Default, Clone)]
pub struct IdempotencyKeys {
    keys: Vec<(Box<str>, u64, u64)>,
}

impl IdempotencyKeys {
    /// Records that the request `tag` produced `version`.
    pub fn record(&mut self, tag: &IdempotencyTag, version: u64) {
        if self.keys.len() >= MAX_KEYS_PER_CART {
            self.keys.remove(0);
        }
        self.keys.push((tag.key.as_str().into(), tag.fingerprint, version));
    }

    /// Whether `tag`'s key was seen, and with what.
    pub fn check(&self, tag: &IdempotencyTag) -> Option<Seen> {
        let (_, fingerprint, version) = self.keys.iter().rev().find(|(k, _, _)| **k == *tag.key)?;
        Some(if *fingerprint == tag.fingerprint { Seen::Replay(*version) } else { Seen::Reused })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(key: &str, fingerprint: u64) -> IdempotencyTag {
        IdempotencyTag { key: key.into(), fingerprint }
    }

    #[test]
    fn replays_same_request_and_refuses_different_one() {
        let mut keys = IdempotencyKeys::default();
        keys.record(&tag("k", 1), 5);
        assert_eq!(keys.check(&tag("k", 1)), Some(Seen::Replay(5)));
        assert_eq!(keys.check(&tag("k", 2)), Some(Seen::Reused));
        assert_eq!(keys.check(&tag("other", 1)), None);
    }

    #[test]
    fn forgets_the_oldest_key_beyond_the_limit() {
        let mut keys = IdempotencyKeys::default();
        for i in 0..=MAX_KEYS_PER_CART as u64 {
            keys.record(&tag(&i.to_string(), i), i);
        }
        assert_eq!(keys.check(&tag("0", 0)), None);
        assert_eq!(keys.check(&tag("1", 1)), Some(Seen::Replay(1)));
    }
}
