//! Cart ids: short, URL-safe strings.

use std::fmt;
use std::sync::Arc;

use crate::GrainError;

/// Longest cart id accepted.
pub const MAX_CART_ID_LEN: usize = 64;

/// A validated cart id: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CartId(Arc<str>);

impl CartId {
    /// Validates `s` as a cart id.
    pub fn parse(s: &str) -> Result<Self, GrainError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_CART_ID_LEN
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok { Ok(CartId(s.into())) } else { Err(GrainError::InvalidCartId) }
    }

    /// An id made by this crate from characters it knows are valid.
    pub(crate) fn made(s: &str) -> Self {
        debug_assert!(Self::parse(s).is_ok(), "{s}");
        CartId(s.into())
    }

    /// A new random id: a base62 rendering of 64 random bits.
    pub fn random(random: u64) -> Self {
        const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut n = random;
        let mut out = Vec::with_capacity(11);
        loop {
            out.push(DIGITS[(n % 62) as usize]);
            n /= 62;
            if n == 0 {
                break;
            }
        }
        out.reverse();
        CartId(String::from_utf8_lossy(&out).into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string, for the cart state.
    pub fn shared(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }
}

impl fmt::Display for CartId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_ids() {
        assert!(CartId::parse("abc-DEF_123").is_ok());
        assert!(CartId::parse("").is_err());
        assert!(CartId::parse("a/b").is_err());
        assert!(CartId::parse("ä").is_err());
        assert!(CartId::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn random_ids_are_valid_base62() {
        for n in [0, 61, 62, u64::MAX] {
            let id = CartId::random(n);
            assert!(CartId::parse(id.as_str()).is_ok(), "{id}");
        }
        assert_eq!(CartId::random(62).as_str(), "10");
        assert_eq!(CartId::random(u64::MAX).as_str().len(), 11);
    }
}
