//! The service face: carts by id under `/api/carts/{id}`, for other services
//! (shipping, admin tools). Reads carry an `ETag`; writes honour `If-Match`
//! and `Idempotency-Key`.

use axum::Router;
use axum::extract::FromRequestParts;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, put};
use cart_domain::CartCommand;
use cart_grain::{CartId, MutateRequest};
use cart_store::IdempotencyTag;

use crate::body::JsonWithBytes;
use crate::error::ApiError;
use cart_domain::PickupPoint;

use crate::requests::{self, AddBody, DeliveryBody, ItemsBody, QuantityBody};
use crate::{AppState, response};

pub use cart_grain::request::MAX_IDEMPOTENCY_KEY_LEN;

/// The `/api/carts` routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/carts/{id}", get(get_cart).delete(erase_cart))
        .route("/api/carts/{id}/events", get(crate::events::by_id))
        .route("/api/carts/{id}/history", get(crate::history::get))
        .route("/api/carts/{id}/items", put(set_items).post(add_item))
        .route("/api/carts/{id}/items/{line}", patch(change_quantity).delete(remove_item))
        .route("/api/carts/{id}/deliveries", axum::routing::post(set_delivery))
        .route("/api/carts/{id}/deliveries/{delivery}", delete(remove_delivery))
        .route("/api/carts/{id}/deliveries/{delivery}/pickup-point", put(set_pickup_point))
}

fn cart_id(raw: &str) -> Result<CartId, ApiError> {
    Ok(CartId::parse(raw)?)
}

async fn get_cart(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = cart_id(&id)?;
    let state = s.carts.get(&id).await.map_err(|e| ApiError::from(e).about(&id, vec![]))?;
    Ok(response::cart(state))
}

/// `DELETE /api/carts/{id}`: erases the cart and all its data (204); 404
/// if there is none.
async fn erase_cart(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = cart_id(&id)?;
    let erased =
        s.carts.erase(&id).await.map_err(|e| ApiError::from(e).about(&id, vec!["erase"]))?;
    if erased {
        Ok(axum::http::StatusCode::NO_CONTENT.into_response())
    } else {
        Err(cart_grain::GrainError::NotFound.into())
    }
}

/// The write preconditions of a request: `If-Match`, and the
/// `Idempotency-Key` with what identifies the request (method and path; the
/// body is added by [`mutate`]).
pub struct WriteHeaders {
    if_match: Option<u64>,
    key: Option<String>,
    method: Method,
    path: String,
}

impl<S: Send + Sync> FromRequestParts<S> for WriteHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(WriteHeaders {
            if_match: if_match(&parts.headers)?,
            key: idempotency_key(&parts.headers)?,
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
        })
    }
}

async fn mutate(
    s: &AppState,
    id: &str,
    write: WriteHeaders,
    body: &[u8],
    mutations: Vec<CartCommand>,
) -> Result<Response, ApiError> {
    let id = cart_id(id)?;
    let idempotency = write.key.map(|key| IdempotencyTag {
        key,
        fingerprint: fingerprint(&[write.method.as_str().as_bytes(), write.path.as_bytes(), body]),
    });
    let types: Vec<&'static str> = mutations.iter().map(|m| m.kind().name()).collect();
    let request = MutateRequest { mutations, if_match: write.if_match, idempotency };
    let state =
        s.carts.mutate(&id, request).await.map_err(|e| ApiError::from(e).about(&id, types))?;
    Ok(response::cart(state))
}

/// A version no cart ever has: what an `If-Match` entity tag that names no
/// version of ours (a weak tag, or not a number) compares as, so the cart
/// answers 412 with its current version, as RFC 9110 says.
const NEVER_MATCHES: u64 = u64::MAX;

/// The version `If-Match` requires: `None` when absent or `*`. A strong
/// entity tag with a version (`"5"`, or a bare `5` as older clients send)
/// matches that version; a weak tag (`W/"5"`: If-Match compares strongly)
/// or any other tag never matches. Only a header that is not an entity-tag
/// list at all is a bad request.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("if-match") else {
        return Ok(None);
    };
    let broken = || {
        ApiError::BadRequest(
            "If-Match must be * or entity tags such as \"3\" (the cart's ETag)".to_owned(),
        )
    };
    let text = value.to_str().map_err(|_| broken())?.trim();
    if text == "*" {
        return Ok(None);
    }
    let mut versions = Vec::new();
    for tag in text.split(',').map(str::trim) {
        let (weak, opaque) = match tag.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, tag),
        };
        let quoted = opaque.len() >= 2 && opaque.starts_with('"') && opaque.ends_with('"');
        let inner = if quoted { &opaque[1..opaque.len() - 1] } else { opaque };
        let well_formed = !inner.is_empty()
            && inner.bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80);
        if !well_formed || (!quoted && (weak || !inner.bytes().all(|b| b.is_ascii_digit()))) {
            return Err(broken());
        }
        match inner.parse::<u64>() {
            Ok(v) if !weak => versions.push(v),
            _ => {}
        }
    }
    match versions.as_slice() {
        [] => Ok(Some(NEVER_MATCHES)),
        [one] => Ok(Some(*one)),
        _ => Err(ApiError::BadRequest("If-Match may name one cart version".to_owned())),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

/// 64-bit FNV-1a over the parts, each followed by a separator: stable across
/// builds and Rust versions, unlike the standard library's hasher.
fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(std::iter::once(&0xff)) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

async fn add_item(
    State(s): State<AppState>,
    Path(id): Path<String>,
    write: WriteHeaders,
    body: JsonWithBytes<AddBody>,
) -> Result<Response, ApiError> {
    mutate(&s, &id, write, &body.bytes, vec![requests::add(body.value)]).await
}

async fn set_items(
    State(s): State<AppState>,
    Path(id): Path<String>,
    write: WriteHeaders,
    body: JsonWithBytes<ItemsBody>,
) -> Result<Response, ApiError> {
    mutate(&s, &id, write, &body.bytes, vec![requests::set_items(body.value)]).await
}

async fn change_quantity(
    State(s): State<AppState>,
    Path((id, line)): Path<(String, i64)>,
    write: WriteHeaders,
    body: JsonWithBytes<QuantityBody>,
) -> Result<Response, ApiError> {
    let m = requests::change_quantity(line, body.value.quantity);
    mutate(&s, &id, write, &body.bytes, vec![m]).await
}

async fn remove_item(
    State(s): State<AppState>,
    Path((id, line)): Path<(String, i64)>,
    write: WriteHeaders,
) -> Result<Response, ApiError> {
    mutate(&s, &id, write, &[], vec![requests::remove_item(line)]).await
}

async fn set_delivery(
    State(s): State<AppState>,
    Path(id): Path<String>,
    write: WriteHeaders,
    body: JsonWithBytes<DeliveryBody>,
) -> Result<Response, ApiError> {
    mutate(&s, &id, write, &body.bytes, vec![requests::set_delivery_trusted(body.value)]).await
}

async fn remove_delivery(
    State(s): State<AppState>,
    Path((id, delivery)): Path<(String, i64)>,
    write: WriteHeaders,
) -> Result<Response, ApiError> {
    mutate(&s, &id, write, &[], vec![requests::remove_delivery(delivery)]).await
}

async fn set_pickup_point(
    State(s): State<AppState>,
    Path((id, delivery)): Path<(String, i64)>,
    write: WriteHeaders,
    body: JsonWithBytes<PickupPoint>,
) -> Result<Response, ApiError> {
    let m = requests::set_pickup_point(delivery, body.value);
    mutate(&s, &id, write, &body.bytes, vec![m]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_separate_parts() {
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
        assert_eq!(fingerprint(&[b"POST", b"/x", b"{}"]), fingerprint(&[b"POST", b"/x", b"{}"]));
    }

    /// Idempotency fingerprints are stored with events and compared after
    /// upgrades: they never change.
    #[test]
    fn golden_fingerprints() {
        assert_eq!(
            fingerprint(&[b"POST", b"/api/carts/c1/items", b"{\"sku\":\"861200\"}"]),
            8_677_890_325_391_858_321
        );
        assert_eq!(fingerprint(&[]), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn parses_if_match_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h).unwrap(), None);
        let mut set = |v: &'static str| {
            h.insert("if-match", v.parse().unwrap());
            if_match(&h)
        };
        for v in ["\"5\"", "5", "\"x\", \"5\""] {
            assert_eq!(set(v).unwrap(), Some(5), "{v}");
        }
        assert_eq!(set("*").unwrap(), None);
        // Well-formed tags that are no version of ours never match (412).
        for v in ["\"not-the-version\"", "W/\"5\"", "\"v1\""] {
            assert_eq!(set(v).unwrap(), Some(NEVER_MATCHES), "{v}");
        }
        // Broken headers are 400s.
        for v in ["\"unterminated", "v1", "W/5", "\"\"", "\"a\"b\"", "\"5\", \"6\""] {
            assert!(set(v).is_err(), "{v}");
        }
    }
}
