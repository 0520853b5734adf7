//! [`Load`] on the wire: what a node says it carries in its ping replies,
//! so any node's dashboard shows every member's share.

use cart_grain::Load;

use crate::proto::control::{NodeLoad, PingReply};

/// `load` as a ping reply carries it.
pub fn to_wire(load: Load) -> NodeLoad {
    NodeLoad { resident_carts: load.resident, mutations: load.mutations, reads: load.reads }
}

/// The load a ping reply reports, if it reports one (older nodes do not).
pub fn of_reply(reply: &PingReply) -> Option<Load> {
    reply.load.as_ref().map(|l| Load {
        resident: l.resident_carts,
        mutations: l.mutations,
        reads: l.reads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_survives_the_wire_and_an_old_reply_has_none() {
        let load = Load { resident: 3, mutations: 40, reads: 500 };
        let reply = PingReply { load: Some(to_wire(load)), ..PingReply::default() };
        assert_eq!(of_reply(&reply), Some(load));
        assert_eq!(of_reply(&PingReply::default()), None);
    }
}
