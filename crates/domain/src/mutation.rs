//! The ten cart mutations and their fixed numeric type codes.

use prost::Message;
use thiserror::Error;

use crate::proto;

/// The kind of a mutation. The numeric codes are the persisted format
/// (GRPC-MIGRATION-PLAN.md section 6) and never change; 3 is unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MutationType {
    /// Add by SKU; resolved into [`MutationType::AddItem`] before it is stored.
    AddRequest = 1,
    /// Add a resolved line.
    AddItem = 2,
    /// Remove a line.
    RemoveItem = 4,
    /// Remove a delivery.
    RemoveDelivery = 5,
    /// Change a line's quantity.
    ChangeQuantity = 6,
    /// Set a delivery for some lines.
    SetDelivery = 7,
    /// Set a delivery's pickup point.
    SetPickupPoint = 8,
    /// A checkout order was created.
    CreateCheckoutOrder = 9,
    /// Replace all lines.
    SetCartItems = 10,
    /// The checkout order was completed.
    OrderCompleted = 11,
}

impl MutationType {
    /// Every mutation type, in code order.
    pub const ALL: [MutationType; 10] = [
        MutationType::AddRequest,
        MutationType::AddItem,
        MutationType::RemoveItem,
        MutationType::RemoveDelivery,
        MutationType::ChangeQuantity,
        MutationType::SetDelivery,
        MutationType::SetPickupPoint,
        MutationType::CreateCheckoutOrder,
        MutationType::SetCartItems,
        MutationType::OrderCompleted,
    ];

    /// The persisted numeric code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The type with this numeric code, if any.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| u32::from(t.code()) == code)
    }

    /// A stable snake_case name, for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            MutationType::AddRequest => "add_request",
            MutationType::AddItem => "add_item",
            MutationType::RemoveItem => "remove_item",
            MutationType::RemoveDelivery => "remove_delivery",
            MutationType::ChangeQuantity => "change_quantity",
            MutationType::SetDelivery => "set_delivery",
            MutationType::SetPickupPoint => "set_pickup_point",
            MutationType::CreateCheckoutOrder => "create_checkout_order",
            MutationType::SetCartItems => "set_cart_items",
            MutationType::OrderCompleted => "order_completed",
        }
    }
}

/// One cart mutation: its type and its message.
// Mutations live for one request; boxing the large AddItem would cost an
// allocation per add to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    /// See [`MutationType::AddRequest`].
    AddRequest(proto::AddRequest),
    /// See [`MutationType::AddItem`].
    AddItem(proto::AddItem),
    /// See [`MutationType::RemoveItem`].
    RemoveItem(proto::RemoveItem),
    /// See [`MutationType::RemoveDelivery`].
    RemoveDelivery(proto::RemoveDelivery),
    /// See [`MutationType::ChangeQuantity`].
    ChangeQuantity(proto::ChangeQuantity),
    /// See [`MutationType::SetDelivery`].
    SetDelivery(proto::SetDelivery),
    /// See [`MutationType::SetPickupPoint`].
    SetPickupPoint(proto::SetPickupPoint),
    /// See [`MutationType::CreateCheckoutOrder`].
    CreateCheckoutOrder(proto::CreateCheckoutOrder),
    /// See [`MutationType::SetCartItems`].
    SetCartItems(proto::SetCartItems),
    /// See [`MutationType::OrderCompleted`].
    OrderCompleted(proto::OrderCompleted),
}

/// A stored or received payload that is not a valid mutation.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The type code names no mutation.
    #[error("unknown mutation type code {0}")]
    UnknownType(u32),
    /// The bytes are not a valid message of that type.
    #[error("malformed {kind} payload: {source}")]
    Malformed {
        /// The mutation type name.
        kind: &'static str,
        /// The protobuf decoder's error.
        source: prost::DecodeError,
    },
}

impl Mutation {
    /// This mutation's type.
    pub fn kind(&self) -> MutationType {
        match self {
            Mutation::AddRequest(_) => MutationType::AddRequest,
            Mutation::AddItem(_) => MutationType::AddItem,
            Mutation::RemoveItem(_) => MutationType::RemoveItem,
            Mutation::RemoveDelivery(_) => MutationType::RemoveDelivery,
            Mutation::ChangeQuantity(_) => MutationType::ChangeQuantity,
            Mutation::SetDelivery(_) => MutationType::SetDelivery,
            Mutation::SetPickupPoint(_) => MutationType::SetPickupPoint,
            Mutation::CreateCheckoutOrder(_) => MutationType::CreateCheckoutOrder,
            Mutation::SetCartItems(_) => MutationType::SetCartItems,
            Mutation::OrderCompleted(_) => MutationType::OrderCompleted,
        }
    }

    /// The protobuf encoding of the message (without its type code).
    pub fn encode_payload(&self) -> Vec<u8> {
        match self {
            Mutation::AddRequest(m) => m.encode_to_vec(),
            Mutation::AddItem(m) => m.encode_to_vec(),
            Mutation::RemoveItem(m) => m.encode_to_vec(),
            Mutation::RemoveDelivery(m) => m.encode_to_vec(),
            Mutation::ChangeQuantity(m) => m.encode_to_vec(),
            Mutation::SetDelivery(m) => m.encode_to_vec(),
            Mutation::SetPickupPoint(m) => m.encode_to_vec(),
            Mutation::CreateCheckoutOrder(m) => m.encode_to_vec(),
            Mutation::SetCartItems(m) => m.encode_to_vec(),
            Mutation::OrderCompleted(m) => m.encode_to_vec(),
        }
    }

    /// Decodes a payload of the given numeric type code.
    pub fn decode(code: u32, payload: &[u8]) -> Result<Self, DecodeError> {
        let kind = MutationType::from_code(code).ok_or(DecodeError::UnknownType(code))?;
        let malformed = |source| DecodeError::Malformed { kind: kind.name(), source };
        Ok(match kind {
            MutationType::AddRequest => {
                Mutation::AddRequest(proto::AddRequest::decode(payload).map_err(malformed)?)
            }
            MutationType::AddItem => {
                Mutation::AddItem(proto::AddItem::decode(payload).map_err(malformed)?)
            }
            MutationType::RemoveItem => {
                Mutation::RemoveItem(proto::RemoveItem::decode(payload).map_err(malformed)?)
            }
            MutationType::RemoveDelivery => {
                Mutation::RemoveDelivery(proto::RemoveDelivery::decode(payload).map_err(malformed)?)
            }
            MutationType::ChangeQuantity => {
                Mutation::ChangeQuantity(proto::ChangeQuantity::decode(payload).map_err(malformed)?)
            }
            MutationType::SetDelivery => {
                Mutation::SetDelivery(proto::SetDelivery::decode(payload).map_err(malformed)?)
            }
            MutationType::SetPickupPoint => {
                Mutation::SetPickupPoint(proto::SetPickupPoint::decode(payload).map_err(malformed)?)
            }
            MutationType::CreateCheckoutOrder => Mutation::CreateCheckoutOrder(
                proto::CreateCheckoutOrder::decode(payload).map_err(malformed)?,
            ),
            MutationType::SetCartItems => {
                Mutation::SetCartItems(proto::SetCartItems::decode(payload).map_err(malformed)?)
            }
            MutationType::OrderCompleted => {
                Mutation::OrderCompleted(proto::OrderCompleted::decode(payload).map_err(malformed)?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_legacy_table() {
        let codes: Vec<u8> = MutationType::ALL.iter().map(|t| t.code()).collect();
        assert_eq!(codes, vec![1, 2, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(MutationType::from_code(3), None);
        assert_eq!(MutationType::from_code(12), None);
        for t in MutationType::ALL {
            assert_eq!(MutationType::from_code(u32::from(t.code())), Some(t));
        }
    }

    #[test]
    fn payload_round_trips() {
        let m = Mutation::ChangeQuantity(proto::ChangeQuantity { id: 3, quantity: 7 });
        let bytes = m.encode_payload();
        let back = Mutation::decode(u32::from(m.kind().code()), &bytes).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(Mutation::decode(3, &[]), Err(DecodeError::UnknownType(3))));
        assert!(matches!(
            Mutation::decode(2, &[0xff, 0xff, 0xff]),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
