//! Between the wire and the runtime: request envelopes (client commands or
//! a peer's resolved events) and replies (typed state and error kind, plus
//! the plan's status code and JSON payload).

use cart_domain::{CartCommand, CartEvent, CartState, ItemInterner, MutationType as Kind};
use cart_grain::{CartId, ErrorKind, GrainError, MutateRequest, ResolvedRequest};
use cart_store::IdempotencyTag;

use crate::proto::cart::{
    self as wire, MutationEnvelope, MutationReply, MutationRequest, MutationType, StateReply,
};
use crate::state_wire;

/// The wire enum for a mutation type: the same numbers as the persisted
/// codes, so it needs no list of its own.
pub fn to_wire(kind: Kind) -> MutationType {
    MutationType::try_from(i32::from(kind.code())).unwrap_or(MutationType::Unspecified)
}

/// A decoded request envelope.
pub enum Decoded {
    /// From a client: commands, resolved by this node.
    Client(CartId, MutateRequest<CartCommand>),
    /// From a peer that resolved it: events for this node's grain.
    Forwarded(CartId, ResolvedRequest),
}

fn bad(message: String) -> GrainError {
    GrainError::Remote { kind: ErrorKind::Invalid, message }
}

/// The envelope a node forwards a resolved request in.
pub fn encode_forwarded(
    cart: &CartId,
    request: &ResolvedRequest,
    expires_at_ms: i64,
) -> MutationRequest {
    let mut events = request.mutations.iter();
    let first = events.next();
    MutationRequest {
        cart_id: cart.to_string(),
        r#type: first.map_or(MutationType::Unspecified, |e| to_wire(e.kind())) as i32,
        payload: first.map(CartEvent::encode_payload).unwrap_or_default(),
        client_timestamp: 0,
        more: events
            .map(|e| MutationEnvelope {
                r#type: to_wire(e.kind()) as i32,
                payload: e.encode_payload(),
            })
            .collect(),
        if_match: request.if_match,
        idempotency_key: request.idempotency.as_ref().map(|t| t.key.clone()).unwrap_or_default(),
        idempotency_fingerprint: request.idempotency.as_ref().map_or(0, |t| t.fingerprint),
        forwarded: true,
        expires_at_ms,
        // Set by the router when the forward is traced.
        traceparent: String::new(),
        tracestate: String::new(),
    }
}

/// Most mutations one request may carry (an add of a cart's worth of lines
/// fits: [`cart_domain::limits::MAX_LINES`]).
pub const MAX_MUTATIONS_PER_REQUEST: usize = 512;

/// The cart and request an envelope carries: events when a peer forwarded
/// it, client commands otherwise (resolved lines, checkout and completion
/// are refused from clients).
pub fn decode_request(r: &MutationRequest) -> Result<Decoded, GrainError> {
    let cart = CartId::parse(&r.cart_id)?;
    if r.more.len() >= MAX_MUTATIONS_PER_REQUEST {
        return Err(bad(format!(
            "a request holds at most {MAX_MUTATIONS_PER_REQUEST} mutations, not {}",
            r.more.len() + 1
        )));
    }
    if r.idempotency_key.len() > cart_grain::request::MAX_IDEMPOTENCY_KEY_LEN {
        return Err(bad("idempotency key too long".into()));
    }
    let idempotency = (!r.idempotency_key.is_empty()).then(|| IdempotencyTag {
        key: r.idempotency_key.clone(),
        fingerprint: r.idempotency_fingerprint,
    });
    let parts = std::iter::once((r.r#type, &r.payload[..]))
        .chain(r.more.iter().map(|m| (m.r#type, &m.payload[..])));
    let code = |t: i32| u32::try_from(t).unwrap_or(0);
    let why = |e: cart_domain::DecodeError| bad(format!("cart {}: {e}", r.cart_id));
    Ok(if r.forwarded {
        let mutations = parts
            .map(|(t, p)| CartEvent::decode(code(t), p).map_err(why))
            .collect::<Result<_, _>>()?;
        Decoded::Forwarded(cart, MutateRequest { mutations, if_match: r.if_match, idempotency })
    } else {
        let mutations = parts
            .map(|(t, p)| CartCommand::decode_client(code(t), p).map_err(why))
            .collect::<Result<_, _>>()?;
        Decoded::Client(cart, MutateRequest { mutations, if_match: r.if_match, idempotency })
    })
}

/// What a reply carries: status code, payload, version, typed state and
/// error kind. The JSON payload is rendered only for callers outside the
/// cluster (`with_json`); peers read the typed state.
struct ReplyParts {
    status_code: i32,
    payload: Vec<u8>,
    version: u64,
    state: Option<wire::CartState>,
    error_kind: i32,
}

fn reply_parts(result: &Result<CartState, GrainError>, with_json: bool) -> ReplyParts {
    match result {
        Ok(cart) => ReplyParts {
            status_code: 200,
            payload: if with_json { cart.to_json() } else { Vec::new() },
            version: cart.version(),
            state: Some(state_wire::to_wire(cart)),
            error_kind: 0,
        },
        Err(e) => ReplyParts {
            status_code: i32::from(e.kind().http_status()),
            payload: e.to_string().into_bytes(),
            version: 0,
            state: None,
            error_kind: e.kind().code(),
        },
    }
}

/// A reply to a mutation.
pub fn mutation_reply(result: &Result<CartState, GrainError>, with_json: bool) -> MutationReply {
    let p = reply_parts(result, with_json);
    MutationReply {
        status_code: p.status_code,
        payload: p.payload,
        version: p.version,
        state: p.state,
        error_kind: p.error_kind,
    }
}

/// A reply to a read.
pub fn state_reply(result: &Result<CartState, GrainError>, with_json: bool) -> StateReply {
    let p = reply_parts(result, with_json);
    StateReply {
        status_code: p.status_code,
        payload: p.payload,
        version: p.version,
        state: p.state,
        error_kind: p.error_kind,
    }
}

/// The result a peer's reply carries. A reply without an error kind (an
/// older peer) is read by its status code.
pub fn from_reply(
    status_code: i32,
    payload: Vec<u8>,
    state: Option<wire::CartState>,
    error_kind: i32,
    items: &ItemInterner,
) -> Result<CartState, GrainError> {
    if status_code == 200 {
        let state = state.ok_or_else(|| GrainError::Remote {
            kind: ErrorKind::Internal,
            message: "a peer answered 200 without the cart's state".into(),
        })?;
        return state_wire::from_wire(state, items);
    }
    Err(remote_error(status_code, error_kind, &payload))
}

/// The error a peer's reply carries, by its error kind (or, from an older
/// peer, its status code), its text cut to [`MAX_PEER_MESSAGE`].
fn remote_error(status_code: i32, error_kind: i32, payload: &[u8]) -> GrainError {
    let kind = ErrorKind::from_code(error_kind)
        .unwrap_or_else(|| ErrorKind::from_http_status(status_code));
    let mut message = String::from_utf8_lossy(payload).into_owned();
    if message.len() > MAX_PEER_MESSAGE {
        let mut cut = MAX_PEER_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    GrainError::Remote { kind, message }
}

/// The reply to an erasure: 200 erased, 404 no such cart, else the error.
pub fn erase_reply(result: &Result<bool, GrainError>) -> wire::EraseReply {
    let failed = |kind: ErrorKind, message: String| wire::EraseReply {
        status_code: i32::from(kind.http_status()),
        error_kind: kind.code(),
        message,
    };
    match result {
        Ok(true) => wire::EraseReply { status_code: 200, error_kind: 0, message: String::new() },
        Ok(false) => failed(ErrorKind::NotFound, "no such cart".into()),
        Err(e) => failed(e.kind(), e.to_string()),
    }
}

/// What an erasure reply says: whether the cart was erased, or the error.
pub fn from_erase_reply(r: wire::EraseReply) -> Result<bool, GrainError> {
    if r.status_code == 200 {
        return Ok(true);
    }
    match remote_error(r.status_code, r.error_kind, r.message.as_bytes()) {
        e if e.kind() == ErrorKind::NotFound => Ok(false),
        e => Err(e),
    }
}

/// Longest error text taken from a peer's reply (it reaches clients).
pub const MAX_PEER_MESSAGE: usize = 1024;

/// [`from_reply`] of a mutation reply.
pub fn from_mutation_reply(
    r: MutationReply,
    items: &ItemInterner,
) -> Result<CartState, GrainError> {
    from_reply(r.status_code, r.payload, r.state, r.error_kind, items)
}

/// [`from_reply`] of a state reply.
pub fn from_state_reply(r: StateReply, items: &ItemInterner) -> Result<CartState, GrainError> {
    from_reply(r.status_code, r.payload, r.state, r.error_kind, items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cart_domain::proto::{AddItem, AddRequest, ChangeQuantity};
    use cart_domain::{Cart, CartEvent};
    use std::sync::Arc;

    #[test]
    fn legacy_codes_map_to_the_wire_enum_and_back() {
        for &kind in Kind::ALL {
            assert_eq!(to_wire(kind) as i32, i32::from(kind.code()), "{kind:?}");
        }
        assert_eq!(MutationType::MutationOrderCompleted.as_str_name(), "MUTATION_ORDER_COMPLETED");
    }

    #[test]
    fn error_kinds_are_the_wire_enum() {
        for kind in ErrorKind::ALL {
            let name = wire::ErrorKind::try_from(kind.code()).unwrap().as_str_name();
            let expected = format!("ERROR_KIND_{}", snake(&format!("{kind:?}")));
            assert_eq!(name, expected);
        }
        assert!(wire::ErrorKind::try_from(13).is_err());
    }

    fn snake(camel: &str) -> String {
        let mut out = String::new();
        for (i, c) in camel.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
        }
        out
    }

    #[test]
    fn forwarded_envelopes_carry_events_and_client_ones_commands() {
        let cart = CartId::parse("c-1").unwrap();
        let resolved = MutateRequest {
            mutations: vec![
                CartEvent::AddItem(AddItem { sku: "1".into(), price: 5, ..Default::default() }),
                CartEvent::ChangeQuantity(ChangeQuantity { id: 1, quantity: 3 }),
            ],
            if_match: Some(4),
            idempotency: Some(IdempotencyTag { key: "k".into(), fingerprint: 99 }),
        };
        let wire = encode_forwarded(&cart, &resolved, 0);
        let bytes = prost::Message::encode_to_vec(&wire);
        let received: MutationRequest = prost::Message::decode(bytes.as_slice()).unwrap();
        let Ok(Decoded::Forwarded(id, back)) = decode_request(&received) else { panic!() };
        assert_eq!(
            (id, back.mutations, back.if_match),
            (cart.clone(), resolved.mutations, Some(4))
        );
        assert_eq!(back.idempotency, resolved.idempotency);

        // The same events from outside the cluster are refused: a client may
        // not name a price.
        let mut outside = received.clone();
        outside.forwarded = false;
        let err = decode_request(&outside).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Invalid);

        let add = AddRequest { sku: "861200".into(), quantity: 2, ..Default::default() };
        let wire = MutationRequest {
            cart_id: cart.to_string(),
            r#type: MutationType::MutationAddRequest as i32,
            payload: prost::Message::encode_to_vec(&add),
            ..Default::default()
        };
        let Ok(Decoded::Client(_, back)) = decode_request(&wire) else { panic!() };
        assert_eq!(back.mutations, vec![CartCommand::AddSku(add)]);
    }

    #[test]
    fn bad_envelopes_are_invalid() {
        let mut wire = encode_forwarded(
            &CartId::parse("c").unwrap(),
            &MutateRequest::of(vec![CartEvent::ChangeQuantity(ChangeQuantity {
                id: 1,
                quantity: 1,
            })]),
            0,
        );
        wire.r#type = 3;
        assert_eq!(decode_request(&wire).err().unwrap().kind(), ErrorKind::Invalid);
        wire.r#type = MutationType::MutationAddItem as i32;
        wire.payload = vec![0xff, 0xff];
        assert_eq!(decode_request(&wire).err().unwrap().kind(), ErrorKind::Invalid);
        wire.cart_id = "bad id".into();
        assert_eq!(decode_request(&wire).err().unwrap().kind(), ErrorKind::Invalid);
    }

    #[test]
    fn replies_carry_the_typed_state_and_error_kinds() {
        let items = ItemInterner::new();
        let mut cart = Cart::new("c1".into());
        let add = AddItem {
            sku: "1".into(),
            name: "One".into(),
            price: 1250,
            quantity: 2,
            tax: 2500,
            currency: "SEK".into(),
            country: "se".into(),
            ..Default::default()
        };
        cart.apply(&CartEvent::AddItem(add), &items).unwrap();
        let state: CartState = Arc::new(cart);
        let ok = mutation_reply(&Ok(Arc::clone(&state)), false);
        assert_eq!((ok.status_code, ok.version, ok.payload.len()), (200, 1, 0));
        let back = from_mutation_reply(ok, &ItemInterner::new()).unwrap();
        assert_eq!(back.to_json(), state.to_json());
        let with_json = mutation_reply(&Ok(Arc::clone(&state)), true);
        assert_eq!(with_json.payload, state.to_json());

        let err = mutation_reply(&Err(GrainError::NotFound), true);
        assert_eq!((err.status_code, err.error_kind), (404, ErrorKind::NotFound.code()));
        let back = from_mutation_reply(err, &items).unwrap_err();
        assert_eq!(back.kind(), ErrorKind::NotFound);
        // An older peer's reply: status only.
        let old = from_reply(409, b"no".to_vec(), None, 0, &items).unwrap_err();
        assert_eq!(old.kind(), ErrorKind::Conflict);
    }

    #[test]
    fn requests_with_too_many_mutations_or_a_long_key_are_refused() {
        let m = |more: usize, key: usize| MutationRequest {
            cart_id: "c1".into(),
            r#type: 6,
            payload: Vec::new(),
            more: (0..more)
                .map(|_| crate::proto::cart::MutationEnvelope { r#type: 6, payload: Vec::new() })
                .collect(),
            idempotency_key: "k".repeat(key),
            ..Default::default()
        };
        assert!(decode_request(&m(MAX_MUTATIONS_PER_REQUEST - 1, 128)).is_ok());
        assert!(decode_request(&m(MAX_MUTATIONS_PER_REQUEST, 0)).is_err());
        assert!(decode_request(&m(0, 129)).is_err());
    }

    #[test]
    fn a_peers_unknown_status_is_an_internal_error_never_an_http_status() {
        let items = ItemInterner::new();
        for status in [101, 302, 999, -1, 0, 201] {
            let e = from_reply(status, b"look at me".to_vec(), None, 0, &items).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Internal, "status {status}");
            assert_eq!(e.kind().http_status(), 500);
        }
        let e = from_reply(400, b"x".to_vec(), None, 9999, &items).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid, "an unknown kind falls back to the status");
        let long = "\u{e5}".repeat(MAX_PEER_MESSAGE);
        let e = from_reply(404, long.into_bytes(), None, 0, &items).unwrap_err();
        assert!(e.to_string().len() <= MAX_PEER_MESSAGE, "a peer's text is bounded");
        let e = from_reply(200, Vec::new(), None, 0, &items).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal, "200 without a state");
    }
}
