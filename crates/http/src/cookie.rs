//! The `cartid` cookie that names the storefront's cart.

use axum::http::{HeaderMap, HeaderValue, header};
use cart_grain::CartId;

/// The cookie's name, as the storefront knows it.
pub const NAME: &str = "cartid";
/// How long the browser keeps the cookie: 90 days, so a cart survives a
/// browser restart.
pub const MAX_AGE_SECONDS: u64 = 90 * 24 * 60 * 60;

/// The cart id in the request's `cartid` cookie, if present and valid.
pub fn cart_id(headers: &HeaderMap) -> Option<CartId> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == NAME)
        .and_then(|(_, value)| CartId::parse(value.trim_matches('"')).ok())
}

/// `Set-Cookie` for a new cart: `Path=/`, host-only (no `Domain`), not
/// `HttpOnly` (the storefront deletes it from JavaScript), `SameSite=Lax`.
pub fn set(id: &CartId) -> HeaderValue {
    // Cart ids are ASCII alphanumerics, `_` and `-`, always a valid header.
    HeaderValue::from_str(&format!("{NAME}={id}; Path=/; Max-Age={MAX_AGE_SECONDS}; SameSite=Lax"))
        .unwrap_or_else(|_| HeaderValue::from_static("cartid=; Path=/"))
}

/// `Set-Cookie` that deletes the cookie.
pub fn clear() -> HeaderValue {
    HeaderValue::from_static("cartid=; Path=/; Max-Age=0; SameSite=Lax")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; cartid=Abc123; b=2"));
        assert_eq!(cart_id(&h).unwrap().as_str(), "Abc123");
        h.insert(header::COOKIE, HeaderValue::from_static("cartid=../etc"));
        assert!(cart_id(&h).is_none());
        assert!(cart_id(&HeaderMap::new()).is_none());
    }
}
