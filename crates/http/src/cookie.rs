//! The `cartid` cookie that names the storefront's cart.

use axum::http::{HeaderMap, HeaderValue, header};
use cart_grain::CartId;

/// The cookie's name, as the storefront knows it.
pub const NAME: &str = "cartid";
/// How long the browser keeps the cookie: 90 days, so a cart survives a
/// browser restart.
pub const MAX_AGE_SECONDS: u64 = 90 * 24 * 60 * 60;

/// The cart id of the request's first valid `cartid` cookie. Cookies are
/// parsed by the `cookie` crate; a malformed or invalid `cartid` (a stale
/// one from another path, say) does not hide a valid one after it.
pub fn cart_id(headers: &HeaderMap) -> Option<CartId> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == NAME)
        .find_map(|c| CartId::parse(c.value_trimmed()).ok())
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

    fn with(cookies: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(header::COOKIE, HeaderValue::from_static(c));
        }
        h
    }

    #[test]
    fn finds_the_first_valid_cookie_among_others() {
        assert_eq!(cart_id(&with(&["a=1; cartid=Abc123; b=2"])).unwrap().as_str(), "Abc123");
        assert!(cart_id(&with(&["cartid=../etc"])).is_none());
        assert!(cart_id(&HeaderMap::new()).is_none());
        assert_eq!(cart_id(&with(&["cartid=../etc; cartid=Good1"])).unwrap().as_str(), "Good1");
        assert_eq!(
            cart_id(&with(&["cartid=bad id", "cartid=\"Good2\""])).unwrap().as_str(),
            "Good2"
        );
        assert_eq!(cart_id(&with(&["cartid=First; cartid=Second"])).unwrap().as_str(), "First");
    }
}
