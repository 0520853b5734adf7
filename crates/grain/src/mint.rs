//! Cart ids a shopper cannot choose. The service mints every storefront
//! cart's id as 64 random bits followed by a tag: the first 64 bits of
//! HMAC-SHA256 over them, keyed by a secret the cluster shares through its
//! store ([`cart_store::EventStore::secret`] named [`SECRET_NAME`]). Both
//! halves are base62, 11 characters each, so an id is 22 characters of
//! `0-9 A-Z a-z`. A cookie naming any other id is not a cart of this
//! service: the shopper gets a new one. Forging an id means guessing a
//! 64-bit tag online, one request per guess.

use ring::hmac;
use subtle::ConstantTimeEq;

use crate::CartId;

/// The store secret the tags are keyed with.
pub const SECRET_NAME: &str = "cart-id-key";
/// Characters of each half of a minted id.
const HALF: usize = 11;
const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Mints and recognises this service's cart ids.
pub struct CartIdMint {
    key: hmac::Key,
}

impl std::fmt::Debug for CartIdMint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CartIdMint(<key>)")
    }
}

impl CartIdMint {
    /// A mint keyed by `secret`.
    pub fn new(secret: &[u8]) -> Self {
        CartIdMint { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// The id minted from `random` (64 fresh random bits).
    pub fn mint(&self, random: u64) -> CartId {
        let mut id = base62(random);
        let tag = self.tag(id.as_bytes());
        id.push_str(&base62(tag));
        CartId::made(&id)
    }

    /// Whether this service minted `id`.
    pub fn minted(&self, id: &CartId) -> bool {
        let text = id.as_str().as_bytes();
        if text.len() != 2 * HALF {
            return false;
        }
        let (random, tag) = text.split_at(HALF);
        let expected = base62(self.tag(random));
        bool::from(expected.as_bytes().ct_eq(tag))
    }

    fn tag(&self, random: &[u8]) -> u64 {
        let tag = hmac::sign(&self.key, random);
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag.as_ref()[..8]);
        u64::from_be_bytes(first)
    }
}

/// `n` in base62, zero-padded to [`HALF`] digits (62^11 > 2^64).
fn base62(mut n: u64) -> String {
    let mut out = [b'0'; HALF];
    for digit in out.iter_mut().rev() {
        *digit = DIGITS[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_are_recognised_and_nothing_else_is() {
        let mint = CartIdMint::new(b"a secret of the cluster");
        let other = CartIdMint::new(b"another cluster's secret");
        for random in [0, 1, 42, u64::MAX, 0x1234_5678_9abc_def0] {
            let id = mint.mint(random);
            assert_eq!(id.as_str().len(), 22);
            assert!(mint.minted(&id), "{id}");
            assert!(!other.minted(&id), "another key does not recognise {id}");
            let mut forged = id.as_str().to_owned();
            let last = forged.pop().unwrap();
            forged.push(if last == 'a' { 'b' } else { 'a' });
            assert!(!mint.minted(&CartId::parse(&forged).unwrap()), "{forged}");
        }
        for chosen in ["anything", "f3", "0000000000000000000000", "Abc123"] {
            assert!(!mint.minted(&CartId::parse(chosen).unwrap()), "{chosen}");
        }
        assert_ne!(mint.mint(1), mint.mint(2));
    }

    #[test]
    fn golden_minted_id() {
        // The format is a stability contract: cookies in browsers hold it.
        let mint = CartIdMint::new(&[7u8; 32]);
        assert_eq!(mint.mint(0x0123_4567_89ab_cdef).as_str(), GOLDEN);
    }

    // Computed independently with Python's hmac and hashlib.
    const GOLDEN: &str = "063UfDVRKBz1librGvliEa";
}
