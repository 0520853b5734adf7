//! Which node owns a cart: rendezvous (highest random weight) hashing over the
//! member view.
//!
//! Every node computes the same owner from the same member list, so creating a
//! cart costs no messages at all, and when a member joins or leaves only the
//! carts whose highest-scoring node changed move (about 1/n of them).

use crate::node::NodeAddr;

/// A stable 64-bit hash of `member` and `cart`: FNV-1a over both, then the
/// SplitMix64 finaliser for avalanche. Stable across builds and platforms, as
/// every node must agree.
pub fn score(member: &NodeAddr, cart: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(member.host.as_bytes());
    eat(&member.grpc_port.to_le_bytes());
    eat(&[0xff]);
    eat(cart.as_bytes());
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The owner of `cart` among `members`, skipping `avoid`; `None` if no
/// member is left.
pub fn owner<'a>(cart: &str, members: &'a [NodeAddr], avoid: &[NodeAddr]) -> Option<&'a NodeAddr> {
    members.iter().filter(|m| !avoid.contains(m)).max_by_key(|m| (score(m, cart), *m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: u16) -> Vec<NodeAddr> {
        (0..n).map(|i| format!("10.0.0.1:{}", 4000 + i).parse().unwrap()).collect()
    }

    #[test]
    fn the_owner_is_deterministic_and_independent_of_order() {
        let a = nodes(5);
        let mut b = a.clone();
        b.reverse();
        for i in 0..1000 {
            let cart = format!("cart-{i}");
            assert_eq!(owner(&cart, &a, &[]), owner(&cart, &b, &[]));
        }
    }

    #[test]
    fn removing_a_member_moves_only_its_carts() {
        let all = nodes(4);
        let without: Vec<NodeAddr> = all[..3].to_vec();
        let mut moved = 0;
        for i in 0..4000 {
            let cart = format!("c{i}");
            let before = owner(&cart, &all, &[]).unwrap();
            let after = owner(&cart, &without, &[]).unwrap();
            if before != after {
                assert_eq!(before, &all[3], "only the removed member's carts move");
                moved += 1;
            }
        }
        // About a quarter of the carts were on the removed member.
        assert!((800..1200).contains(&moved), "{moved}");
    }

    #[test]
    fn load_is_spread_evenly() {
        let members = nodes(3);
        let mut counts = [0; 3];
        for i in 0..30_000 {
            let o = owner(&format!("x{i}"), &members, &[]).unwrap();
            counts[members.iter().position(|m| m == o).unwrap()] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn avoiding_the_owner_picks_the_next_best() {
        let members = nodes(3);
        let first = owner("cart", &members, &[]).unwrap().clone();
        let second = owner("cart", &members, std::slice::from_ref(&first)).unwrap();
        assert_ne!(&first, second);
        assert!(owner("cart", &members, &members).is_none());
    }

    /// Placement is a stability contract: every node of every version must
    /// pick the same owner, or carts would have two. These scores never
    /// change.
    #[test]
    fn golden_scores() {
        let node: NodeAddr = "10.0.0.7:1337:1338".parse().unwrap();
        let scores = [score(&node, "cart-1"), score(&node, "Abc123"), score(&node, "")];
        assert_eq!(
            scores,
            [16_871_653_644_305_656_092, 142_528_797_804_949_528, 13_905_630_208_159_512_285]
        );
    }
}
