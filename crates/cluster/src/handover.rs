//! ConfirmOwner: before a grain activates on this node while another live
//! node holds the cart's claim, that node flushes and passivates its grain.
//!
//! Safety does not depend on it (the claim epoch fences a stale owner's
//! appends whatever happens); it keeps a cart active on one node only, so a
//! stale owner never serves stale reads and GetCartIds never shows a cart
//! twice.

use std::sync::Arc;

use async_trait::async_trait;
use cart_grain::{CartId, GrainError, Handover};

use crate::client::Peers;
use crate::membership::Membership;
use crate::node::NodeAddr;
use crate::proto::control::OwnerChangeRequest;

/// The cluster's [`Handover`].
pub struct ConfirmOwner {
    membership: Arc<Membership>,
    peers: Arc<Peers>,
}

impl ConfirmOwner {
    /// Asks previous owners through `peers`.
    pub fn new(membership: Arc<Membership>, peers: Arc<Peers>) -> Self {
        ConfirmOwner { membership, peers }
    }
}

#[async_trait]
impl Handover for ConfirmOwner {
    async fn take_over(&self, cart: &CartId, previous_owner: &str) -> Result<(), GrainError> {
        let me = self.membership.me();
        let Ok(previous) = previous_owner.parse::<NodeAddr>() else {
            return Ok(());
        };
        if previous == *me {
            return Ok(());
        }
        if !self.membership.is_member(&previous) {
            tracing::info!(cart = %cart, from = %previous, "taking over a cart from a departed node");
            return Ok(());
        }
        let mut client =
            self.peers.control(&previous).map_err(|e| GrainError::Unreachable(e.to_string()))?;
        let request = self
            .peers
            .request(OwnerChangeRequest { cart_id: cart.to_string(), new_host: me.to_string() });
        // Half the deadline: this runs inside a turn that may itself be a
        // forwarded request under the full deadline.
        let mut request = request;
        request.set_timeout(self.peers.deadline() / 2);
        match client.confirm_owner(request).await {
            Ok(ack) if ack.get_ref().accepted => {
                tracing::info!(cart = %cart, from = %previous, to = %me, "ownership moved");
                Ok(())
            }
            Ok(ack) => {
                let message = ack.into_inner().message;
                tracing::warn!(cart = %cart, from = %previous, %message, "ConfirmOwner refused");
                Err(GrainError::HandoverRefused(message))
            }
            Err(status) => {
                // The claim fences the previous owner whether it answered or not.
                tracing::warn!(cart = %cart, from = %previous, code = ?status.code(), "previous owner did not answer ConfirmOwner; taking over");
                Ok(())
            }
        }
    }
}
