//! What a client may ask of a cart. A command is never stored: the grain
//! runtime turns it into [`crate::CartEvent`]s (resolving SKUs through the
//! catalogue, in one place) and the log records those.

use prost::Message;

use crate::kinds::{DecodeError, MutationType};
use crate::proto;

/// One request to change a cart.
#[derive(Debug, Clone, PartialEq)]
pub enum CartCommand {
    /// Add a product by SKU (resolved into an AddItem event).
    AddSku(proto::AddRequest),
    /// Replace every line with these products by SKU (resolved into a
    /// SetCartItems event holding the resolved items).
    SetItems(Vec<proto::AddRequest>),
    /// Change a line's quantity; 0 removes it.
    ChangeQuantity(proto::ChangeQuantity),
    /// Remove a line.
    RemoveItem(proto::RemoveItem),
    /// Deliver some lines with a provider; its fee and VAT rate are this
    /// service's (the request's `price` and `tax` are ignored).
    SetDelivery(proto::SetDelivery),
    /// Deliver some lines at the fee given: only trusted services (the
    /// by-id API; a shipping service prices deliveries itself) issue it;
    /// never decoded from a client.
    SetDeliveryWithFee(proto::SetDelivery),
    /// Remove a delivery.
    RemoveDelivery(proto::RemoveDelivery),
    /// Set a delivery's pickup point.
    SetPickupPoint(proto::SetPickupPoint),
    /// Start checkout with the provider's order, or leave it to edit the
    /// cart (`editing`). Issued by this service's checkout integration only:
    /// never decoded from a client.
    Checkout(proto::CreateCheckoutOrder),
    /// The provider completed the order (or its completion was
    /// acknowledged). Issued by the checkout integration only.
    CompleteOrder(proto::OrderCompleted),
}

impl CartCommand {
    /// The type of the event this command becomes (an add by SKU is an
    /// `add_item`), for metrics and logs.
    pub fn kind(&self) -> MutationType {
        match self {
            CartCommand::AddSku(_) => MutationType::AddItem,
            CartCommand::SetItems(_) => MutationType::SetCartItems,
            CartCommand::ChangeQuantity(_) => MutationType::ChangeQuantity,
            CartCommand::RemoveItem(_) => MutationType::RemoveItem,
            CartCommand::SetDelivery(_) | CartCommand::SetDeliveryWithFee(_) => {
                MutationType::SetDelivery
            }
            CartCommand::RemoveDelivery(_) => MutationType::RemoveDelivery,
            CartCommand::SetPickupPoint(_) => MutationType::SetPickupPoint,
            CartCommand::Checkout(_) => MutationType::CreateCheckoutOrder,
            CartCommand::CompleteOrder(_) => MutationType::OrderCompleted,
        }
    }

    /// Decodes a command a client sent over the wire (CartActor.Mutate from
    /// outside the cluster): add or replace by SKU, quantities, deliveries and
    /// pickup points. Resolved lines, checkout and completion are refused:
    /// prices, fees and payment state are decided by this service (a
    /// delivery's `price` is ignored, see [`CartCommand::SetDelivery`]).
    pub fn decode_client(code: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        let kind = MutationType::from_code(code).ok_or(DecodeError::UnknownType(code))?;
        let malformed = |source| DecodeError::Malformed { kind: kind.name(), source };
        let refused = |what| DecodeError::NotAllowed { kind: kind.name(), what };
        Ok(match kind {
            MutationType::AddRequest => {
                CartCommand::AddSku(proto::AddRequest::decode(payload).map_err(malformed)?)
            }
            MutationType::SetCartItems => {
                let m = proto::SetCartItems::decode(payload).map_err(malformed)?;
                if !m.items.is_empty() {
                    return Err(refused("resolved items from a client; send requests by SKU"));
                }
                CartCommand::SetItems(m.requests)
            }
            MutationType::ChangeQuantity => CartCommand::ChangeQuantity(
                proto::ChangeQuantity::decode(payload).map_err(malformed)?,
            ),
            MutationType::RemoveItem => {
                CartCommand::RemoveItem(proto::RemoveItem::decode(payload).map_err(malformed)?)
            }
            MutationType::SetDelivery => {
                CartCommand::SetDelivery(proto::SetDelivery::decode(payload).map_err(malformed)?)
            }
            MutationType::RemoveDelivery => CartCommand::RemoveDelivery(
                proto::RemoveDelivery::decode(payload).map_err(malformed)?,
            ),
            MutationType::SetPickupPoint => CartCommand::SetPickupPoint(
                proto::SetPickupPoint::decode(payload).map_err(malformed)?,
            ),
            MutationType::AddItem => return Err(refused("a resolved line from a client")),
            MutationType::CreateCheckoutOrder => return Err(refused("checkout from a client")),
            MutationType::OrderCompleted => return Err(refused("a completion from a client")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_commands_decode_and_trusted_ones_are_refused() {
        let add = CartCommand::AddSku(proto::AddRequest {
            sku: "861200".into(),
            quantity: 2,
            ..Default::default()
        });
        let CartCommand::AddSku(request) = &add else { unreachable!() };
        let payload = request.encode_to_vec();
        assert_eq!(CartCommand::decode_client(1, &payload).unwrap(), add);
        for code in [2, 9, 11] {
            assert!(matches!(
                CartCommand::decode_client(code, &[]),
                Err(DecodeError::NotAllowed { .. })
            ));
        }
        let resolved = proto::SetCartItems { requests: vec![], items: vec![Default::default()] };
        assert!(CartCommand::decode_client(10, &resolved.encode_to_vec()).is_err());
        // A client's delivery is one this service prices, whatever it says.
        let free =
            proto::SetDelivery { provider: "postnord".into(), price: 0, ..Default::default() };
        assert!(matches!(
            CartCommand::decode_client(7, &free.encode_to_vec()),
            Ok(CartCommand::SetDelivery(_))
        ));
    }
}
