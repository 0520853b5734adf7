//! The mutation kinds: one table from which the kind enum, its persisted
//! codes, its names, the stored events and their codec all come.
//!
//! The numeric codes are the persisted format (GRPC-MIGRATION-PLAN.md
//! section 6) and the wire's `MutationType`: they never change, and 3 is
//! unused. Adding a mutation is adding a row here (and its rule in
//! [`crate::cart`]).

use prost::Message;
use thiserror::Error;

use crate::proto;

/// A stored or received payload that is not a valid mutation.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The type code names no mutation of this kind of message.
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
    /// A well-formed message that this side must not accept (for example a
    /// replace-all request that still names products by SKU, stored).
    #[error("{kind} cannot carry {what}")]
    NotAllowed {
        /// The mutation type name.
        kind: &'static str,
        /// What it carried.
        what: &'static str,
    },
}

macro_rules! mutation_kinds {
    (
        command_only { $( $(#[$cdoc:meta])* $cvariant:ident = $ccode:literal, $cname:literal; )* }
        events { $( $(#[$doc:meta])* $variant:ident = $code:literal, $name:literal, $msg:ident; )* }
    ) => {
        /// The kind of a mutation, with its fixed numeric code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum MutationType {
            $( $(#[$cdoc])* $cvariant = $ccode, )*
            $( $(#[$doc])* $variant = $code, )*
        }

        impl MutationType {
            /// Every mutation type, in table order.
            pub const ALL: &'static [MutationType] =
                &[ $( MutationType::$cvariant, )* $( MutationType::$variant, )* ];

            /// The persisted numeric code.
            pub fn code(self) -> u8 {
                self as u8
            }

            /// The type with this numeric code, if any.
            pub fn from_code(code: u32) -> Option<Self> {
                match code {
                    $( $ccode => Some(MutationType::$cvariant), )*
                    $( $code => Some(MutationType::$variant), )*
                    _ => None,
                }
            }

            /// A stable snake_case name, for logs and metric labels.
            pub fn name(self) -> &'static str {
                match self {
                    $( MutationType::$cvariant => $cname, )*
                    $( MutationType::$variant => $name, )*
                }
            }

            /// Whether events of this type are stored (every type but the
            /// command-only ones).
            pub fn is_event(self) -> bool {
                match self {
                    $( MutationType::$cvariant => false, )*
                    $( MutationType::$variant => true, )*
                }
            }
        }

        /// What a cart's log records: one resolved change. Replay applies
        /// events only; every event is fully resolved (no catalogue lookup).
        // Events live for one request; boxing the large AddItem would cost an
        // allocation per add to save a few hundred bytes of stack.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, PartialEq)]
        pub enum CartEvent {
            $( $(#[$doc])* $variant(proto::$msg), )*
        }

        impl CartEvent {
            /// This event's type.
            pub fn kind(&self) -> MutationType {
                match self {
                    $( CartEvent::$variant(_) => MutationType::$variant, )*
                }
            }

            /// The protobuf encoding of the message (without its type code).
            pub fn encode_payload(&self) -> Vec<u8> {
                match self {
                    $( CartEvent::$variant(m) => m.encode_to_vec(), )*
                }
            }

            /// Decodes a payload of the given numeric type code.
            pub fn decode(code: u32, payload: &[u8]) -> Result<Self, DecodeError> {
                let kind = MutationType::from_code(code).ok_or(DecodeError::UnknownType(code))?;
                let malformed = |source| DecodeError::Malformed { kind: kind.name(), source };
                let event = match kind {
                    $( MutationType::$cvariant => return Err(DecodeError::UnknownType(code)), )*
                    $( MutationType::$variant =>
                        CartEvent::$variant(proto::$msg::decode(payload).map_err(malformed)?), )*
                };
                event.check_resolved()?;
                Ok(event)
            }

            /// The message's fields as JSON (camelCase names), for
            /// operators' views of a cart's history.
            pub fn to_json(&self) -> serde_json::Value {
                let value = match self {
                    $( CartEvent::$variant(m) => serde_json::to_value(m), )*
                };
                value.unwrap_or(serde_json::Value::Null)
            }
        }
    };
}

mutation_kinds! {
    command_only {
        /// Add by SKU: a command only, resolved into [`MutationType::AddItem`]
        /// before anything is stored.
        AddRequest = 1, "add_request";
    }
    events {
        /// Add a resolved line (or raise the quantity of the same product).
        AddItem = 2, "add_item", AddItem;
        /// Remove a line.
        RemoveItem = 4, "remove_item", RemoveItem;
        /// Remove a delivery.
        RemoveDelivery = 5, "remove_delivery", RemoveDelivery;
        /// Change a line's quantity.
        ChangeQuantity = 6, "change_quantity", ChangeQuantity;
        /// Set a delivery for some lines.
        SetDelivery = 7, "set_delivery", SetDelivery;
        /// Set a delivery's pickup point.
        SetPickupPoint = 8, "set_pickup_point", SetPickupPoint;
        /// A checkout order was created, updated, or left to edit the cart.
        CreateCheckoutOrder = 9, "create_checkout_order", CreateCheckoutOrder;
        /// Replace all lines with resolved items.
        SetCartItems = 10, "set_cart_items", SetCartItems;
        /// The checkout order was completed (or its completion acknowledged).
        OrderCompleted = 11, "order_completed", OrderCompleted;
    }
}

impl CartEvent {
    /// Refuses an event that still names products by SKU only.
    fn check_resolved(&self) -> Result<(), DecodeError> {
        match self {
            CartEvent::SetCartItems(s) if !s.requests.is_empty() => Err(DecodeError::NotAllowed {
                kind: self.kind().name(),
                what: "unresolved requests",
            }),
            _ => Ok(()),
        }
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
        for &t in MutationType::ALL {
            assert_eq!(MutationType::from_code(u32::from(t.code())), Some(t));
        }
        assert!(!MutationType::AddRequest.is_event());
        assert!(MutationType::OrderCompleted.is_event());
    }

    #[test]
    fn payload_round_trips() {
        let e = CartEvent::ChangeQuantity(proto::ChangeQuantity { id: 3, quantity: 7 });
        let bytes = e.encode_payload();
        let back = CartEvent::decode(u32::from(e.kind().code()), &bytes).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn garbage_and_commands_are_not_events() {
        assert!(matches!(CartEvent::decode(3, &[]), Err(DecodeError::UnknownType(3))));
        assert!(matches!(CartEvent::decode(1, &[]), Err(DecodeError::UnknownType(1))));
        assert!(matches!(
            CartEvent::decode(2, &[0xff, 0xff, 0xff]),
            Err(DecodeError::Malformed { .. })
        ));
        let unresolved = proto::SetCartItems {
            requests: vec![proto::AddRequest {
                sku: "1".into(),
                quantity: 1,
                ..Default::default()
            }],
            items: vec![],
        };
        assert!(matches!(
            CartEvent::decode(10, &unresolved.encode_to_vec()),
            Err(DecodeError::NotAllowed { .. })
        ));
    }
}
