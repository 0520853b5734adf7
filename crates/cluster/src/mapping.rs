//! Between the wire and the domain: mutation type codes, the mutation
//! envelope, and replies that carry HTTP status codes.

use cart_domain::Mutation;
use cart_domain::MutationType as Kind;
use cart_grain::{CartId, CartSnapshot, GrainError, MutateRequest};
use cart_store::IdempotencyTag;

use crate::proto::cart::{
    MutationEnvelope, MutationReply, MutationRequest, MutationType, StateReply,
};

/// The wire enum for a domain mutation type (the same numbers as the
/// persisted codes).
pub fn to_wire(kind: Kind) -> MutationType {
    match kind {
        Kind::AddRequest => MutationType::MutationAddRequest,
        Kind::AddItem => MutationType::MutationAddItem,
        Kind::RemoveItem => MutationType::MutationRemoveItem,
        Kind::RemoveDelivery => MutationType::MutationRemoveDelivery,
        Kind::ChangeQuantity => MutationType::MutationChangeQuantity,
        Kind::SetDelivery => MutationType::MutationSetDelivery,
        Kind::SetPickupPoint => MutationType::MutationSetPickupPoint,
        Kind::CreateCheckoutOrder => MutationType::MutationCreateCheckoutOrder,
        Kind::SetCartItems => MutationType::MutationSetCartItems,
        Kind::OrderCompleted => MutationType::MutationOrderCompleted,
    }
}

/// The domain mutation type of a wire enum value; `None` for
/// `MUTATION_TYPE_UNSPECIFIED` and unknown values.
pub fn from_wire(value: i32) -> Option<Kind> {
    u32::try_from(value).ok().and_then(Kind::from_code)
}

fn decode_one(cart: &str, kind: i32, payload: &[u8]) -> Result<Mutation, GrainError> {
    let kind =
        from_wire(kind).ok_or_else(|| bad(format!("cart {cart}: unknown mutation type {kind}")))?;
    Mutation::decode(u32::from(kind.code()), payload).map_err(|e| bad(e.to_string()))
}

fn bad(message: String) -> GrainError {
    GrainError::Remote { status: 400, message }
}

/// The envelope of a request to mutate `cart`.
pub fn encode_request(cart: &CartId, request: &MutateRequest, forwarded: bool) -> MutationRequest {
    let mut mutations = request.mutations.iter();
    let first = mutations.next();
    MutationRequest {
        cart_id: cart.to_string(),
        r#type: first.map_or(MutationType::Unspecified, |m| to_wire(m.kind())) as i32,
        payload: first.map(Mutation::encode_payload).unwrap_or_default(),
        client_timestamp: 0,
        more: mutations
            .map(|m| MutationEnvelope {
                r#type: to_wire(m.kind()) as i32,
                payload: m.encode_payload(),
            })
            .collect(),
        if_match: request.if_match,
        idempotency_key: request.idempotency.as_ref().map(|t| t.key.clone()).unwrap_or_default(),
        idempotency_fingerprint: request.idempotency.as_ref().map_or(0, |t| t.fingerprint),
        forwarded,
    }
}

/// The cart and request an envelope carries.
pub fn decode_request(r: &MutationRequest) -> Result<(CartId, MutateRequest), GrainError> {
    let cart = CartId::parse(&r.cart_id)?;
    let mut mutations = vec![decode_one(&r.cart_id, r.r#type, &r.payload)?];
    for m in &r.more {
        mutations.push(decode_one(&r.cart_id, m.r#type, &m.payload)?);
    }
    let idempotency = (!r.idempotency_key.is_empty()).then(|| IdempotencyTag {
        key: r.idempotency_key.clone(),
        fingerprint: r.idempotency_fingerprint,
    });
    Ok((cart, MutateRequest { mutations, if_match: r.if_match, idempotency }))
}

/// A reply carrying a result: the cart JSON with 200, or the error's status
/// and text.
pub fn mutation_reply(result: Result<CartSnapshot, GrainError>) -> MutationReply {
    let (status_code, payload, version) = reply_parts(result);
    MutationReply { status_code, payload, version }
}

/// See [`mutation_reply`].
pub fn state_reply(result: Result<CartSnapshot, GrainError>) -> StateReply {
    let (status_code, payload, version) = reply_parts(result);
    StateReply { status_code, payload, version }
}

fn reply_parts(result: Result<CartSnapshot, GrainError>) -> (i32, Vec<u8>, u64) {
    match result {
        Ok(s) => (200, s.json, s.version),
        Err(e) => (i32::from(e.status()), e.to_string().into_bytes(), 0),
    }
}

/// The result a reply carries.
pub fn from_reply(
    status_code: i32,
    payload: Vec<u8>,
    version: u64,
) -> Result<CartSnapshot, GrainError> {
    if status_code == 200 {
        Ok(CartSnapshot { version, json: payload })
    } else {
        Err(GrainError::Remote {
            status: u16::try_from(status_code).unwrap_or(502),
            message: String::from_utf8_lossy(&payload).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cart_domain::proto::{AddRequest, ChangeQuantity};

    #[test]
    fn legacy_codes_map_to_the_wire_enum_and_back() {
        for kind in Kind::ALL {
            let wire = to_wire(kind);
            assert_eq!(wire as i32, i32::from(kind.code()), "{kind:?}");
            assert_eq!(from_wire(wire as i32), Some(kind));
        }
        assert_eq!(from_wire(0), None);
        assert_eq!(from_wire(3), None);
        assert_eq!(from_wire(-1), None);
        assert_eq!(MutationType::MutationOrderCompleted.as_str_name(), "MUTATION_ORDER_COMPLETED");
    }

    #[test]
    fn envelope_round_trip() {
        let cart = CartId::parse("c-1").unwrap();
        let request = MutateRequest {
            mutations: vec![
                Mutation::AddRequest(AddRequest {
                    sku: "861200".into(),
                    quantity: 2,
                    country: Some("se".into()),
                    store_id: None,
                }),
                Mutation::ChangeQuantity(ChangeQuantity { id: 1, quantity: 3 }),
            ],
            if_match: Some(4),
            idempotency: Some(IdempotencyTag { key: "k".into(), fingerprint: 99 }),
        };
        let wire = encode_request(&cart, &request, true);
        assert_eq!(wire.r#type, MutationType::MutationAddRequest as i32);
        // Through the protobuf encoding, as it crosses the network.
        let bytes = prost::Message::encode_to_vec(&wire);
        let received: MutationRequest = prost::Message::decode(bytes.as_slice()).unwrap();
        assert!(received.forwarded);
        let (id, back) = decode_request(&received).unwrap();
        assert_eq!(id, cart);
        assert_eq!(back.mutations, request.mutations);
        assert_eq!(back.if_match, Some(4));
        assert_eq!(back.idempotency, request.idempotency);
    }

    #[test]
    fn bad_envelopes_are_400s() {
        let mut wire = encode_request(
            &CartId::parse("c").unwrap(),
            &MutateRequest {
                mutations: vec![Mutation::ChangeQuantity(ChangeQuantity { id: 1, quantity: 1 })],
                ..Default::default()
            },
            false,
        );
        wire.r#type = 3;
        assert_eq!(decode_request(&wire).unwrap_err().status(), 400);
        wire.r#type = MutationType::MutationAddItem as i32;
        wire.payload = vec![0xff, 0xff];
        assert_eq!(decode_request(&wire).unwrap_err().status(), 400);
        wire.cart_id = "bad id".into();
        assert_eq!(decode_request(&wire).unwrap_err().status(), 400);
    }

    #[test]
    fn replies_carry_http_statuses() {
        let ok = mutation_reply(Ok(CartSnapshot { version: 3, json: b"{}".to_vec() }));
        assert_eq!((ok.status_code, ok.version), (200, 3));
        let err = mutation_reply(Err(GrainError::NotFound));
        assert_eq!(err.status_code, 404);
        assert!(matches!(
            from_reply(err.status_code, err.payload, 0),
            Err(GrainError::Remote { status: 404, .. })
        ));
    }
}
