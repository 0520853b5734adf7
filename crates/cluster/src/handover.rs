//! Taking a cart over from the node that holds its claim.
//!
//! Before a grain activates here while another node holds the cart's claim,
//! that node is asked (ConfirmOwner) to flush and passivate its grain, and
//! refuses if this node is not in its view. If it does not answer (dead,
//! cut off), the cart is taken over only once its serving lease has surely
//! run out: [`ClusterOptions::takeover_wait`] after this node last heard
//! from it. A holder evicted more recently than that is not even asked (it
//! went silent; asking would only stall the request): the request is
//! refused as retryable at once. So a cart is served by one node at a time,
//! reads included; the claim epoch fences a stale owner's appends whatever
//! happens.
//!
//! [`ClusterOptions::takeover_wait`]: crate::ClusterOptions::takeover_wait

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cart_grain::{CartId, Clock, GrainError, Handover};

use crate::client::Peers;
use crate::membership::{LastHeard, Membership};
use crate::node::NodeAddr;
use crate::proto::control::OwnerChangeRequest;
use crate::takeovers::{Takeovers, Way};

/// How asking a holder to hand a cart over went.
enum Asked {
    /// It answered: accepted or not, and why.
    Answered(bool, String),
    /// Nothing listens at its address.
    NobodyThere,
    /// No answer in time.
    Silent,
}

/// The cluster's [`Handover`].
pub struct ConfirmOwner {
    membership: Arc<Membership>,
    peers: Arc<Peers>,
    clock: Arc<dyn Clock>,
    /// See [`crate::ClusterOptions::takeover_wait`].
    wait_ms: u64,
    /// When this node started (monotonic ms): a holder never heard from may
    /// have been serving until then.
    started_ms: u64,
    /// Carts taken over, for the summary the ping loop logs.
    takeovers: Arc<Takeovers>,
}

impl ConfirmOwner {
    /// Asks previous owners through `peers`; takes over from a silent one
    /// `wait` after it was last heard from.
    pub fn new(
        membership: Arc<Membership>,
        peers: Arc<Peers>,
        clock: Arc<dyn Clock>,
        wait: Duration,
        takeovers: Arc<Takeovers>,
    ) -> Self {
        let started_ms = clock.monotonic_ms();
        let wait_ms = wait.as_millis() as u64;
        ConfirmOwner { membership, peers, clock, wait_ms, started_ms, takeovers }
    }

    /// Whether a holder last heard from `heard`, were it silent, can no
    /// longer be serving.
    fn lease_surely_over(&self, heard: LastHeard) -> Result<(), GrainError> {
        let since = match heard {
            LastHeard::Closed => return Ok(()),
            LastHeard::At(at) => at,
            LastHeard::Never => self.started_ms,
        };
        let now = self.clock.monotonic_ms();
        if now >= since.saturating_add(self.wait_ms) {
            Ok(())
        } else {
            Err(GrainError::PreviousOwnerMayServe)
        }
    }

    /// Asks `previous` to hand `cart` over, within half the deadline (this
    /// runs inside a turn that may itself be a forwarded request under the
    /// full deadline).
    async fn ask(&self, cart: &CartId, previous: &NodeAddr) -> Asked {
        let Ok(mut client) = self.peers.control(previous) else { return Asked::Silent };
        let request = self.peers.request(OwnerChangeRequest {
            cart_id: cart.to_string(),
            new_host: self.membership.me().to_string(),
        });
        let call = client.confirm_owner(request);
        match tokio::time::timeout(self.peers.deadline() / 2, call).await {
            Ok(Ok(ack)) => {
                let ack = ack.into_inner();
                Asked::Answered(ack.accepted, ack.message)
            }
            Ok(Err(status)) if crate::client::connection_refused(&status) => Asked::NobodyThere,
            Ok(Err(status)) => {
                tracing::debug!(cart = %cart, from = %previous, code = ?status.code(), "ConfirmOwner failed");
                Asked::Silent
            }
            Err(_) => Asked::Silent,
        }
    }
}

#[async_trait]
impl Handover for ConfirmOwner {
    async fn take_over(&self, cart: &CartId, previous_owner: &str) -> Result<(), GrainError> {
        let me = self.membership.me();
        let Some(previous) = claim_holder(previous_owner) else {
            return Ok(());
        };
        let heard = self.membership.last_heard(&previous);
        if previous == *me || heard == LastHeard::Closed {
            return Ok(());
        }
        if !self.membership.is_member(&previous) && matches!(heard, LastHeard::At(_)) {
            // Evicted lately: silent, and maybe still serving until its
            // lease runs out.
            self.lease_surely_over(heard)?;
        }
        let asked = self.ask(cart, &previous).await;
        match asked {
            Asked::Answered(true, _) => {
                tracing::debug!(cart = %cart, from = %previous, to = %me, "ownership moved");
                self.takeovers.record(&previous, Way::HandedOver);
                Ok(())
            }
            Asked::Answered(false, message) => {
                tracing::warn!(cart = %cart, from = %previous, reason = %message, "ConfirmOwner refused");
                Err(GrainError::HandoverRefused(message))
            }
            // A process this node never heard of, and nothing listens at
            // its address: no cart-actor serves there (a restart on new
            // ports, a replaced pod).
            Asked::NobodyThere if heard == LastHeard::Never => {
                tracing::debug!(cart = %cart, from = %previous, "taking over a cart from a node that is gone");
                self.takeovers.record(&previous, Way::HolderGone);
                Ok(())
            }
            Asked::NobodyThere | Asked::Silent => {
                // Read again: it may have answered a ping while we asked.
                self.lease_surely_over(self.membership.last_heard(&previous))?;
                tracing::debug!(cart = %cart, from = %previous, "taking over a cart from a silent node whose lease has run out");
                self.takeovers.record(&previous, Way::LeaseRanOut);
                Ok(())
            }
        }
    }
}

/// The node behind a claim's owner name (`host[:grpc:control]#incarnation`,
/// see `RuntimeOptions::node`; the ports are left out when they are the
/// defaults). `None` for a claim no node holds: the migrate tool's, or a
/// name that is no address.
fn claim_holder(owner: &str) -> Option<NodeAddr> {
    if owner == cart_store::TOOL_OWNER {
        return None;
    }
    let address = owner.split_once('#').map_or(owner, |(a, _)| a);
    address.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_name_nodes_with_or_without_their_ports_and_tools_are_nobody() {
        let default_ports: NodeAddr = "10.0.0.1:1337:1338".parse().unwrap();
        assert_eq!(
            default_ports.to_string(),
            "10.0.0.1",
            "how a node on the default ports names itself"
        );
        assert_eq!(claim_holder("10.0.0.1#42"), Some(default_ports.clone()));
        assert_eq!(
            claim_holder("10.0.0.1"),
            Some(default_ports),
            "a claim from before incarnations"
        );
        assert_eq!(claim_holder("h:1:2#9"), Some("h:1:2".parse().unwrap()));
        assert_eq!(claim_holder(cart_store::TOOL_OWNER), None);
        assert_eq!(claim_holder("not an address!"), None);
    }
}
