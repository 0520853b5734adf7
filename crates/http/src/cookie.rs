//! The `cartid` cookie that names the storefront's cart.

use axum::http::{HeaderMap, HeaderValue, header};
use cart_grain::{CartId, CartIdMint};

/// The cookie's name, as the storefront knows it.
pub const NAME: &str = "cartid";
/// How long the browser keeps the cookie: 90 days, so a cart survives a
/// browser restart.
pub const MAX_AGE_SECONDS: u64 = 90 * 24 * 60 * 60;

/// The cart id of the request's first valid `cartid` cookie that names a
/// cart this service minted ([`CartIdMint`]). Cookies are parsed by the
/// `cookie` crate; a malformed, invalid or self-chosen `cartid` (a stale
/// one from another path, or an attacker's) does not hide a valid one
/// after it, and is otherwise as good as no cookie.
pub fn cart_id(headers: &HeaderMap, mint: &CartIdMint) -> Option<CartId> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == NAME)
        .filter_map(|c| CartId::parse(c.value_trimmed()).ok())
        .find(|id| mint.minted(id))
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
    fn finds_the_first_minted_cookie_among_others() {
        let mint = CartIdMint::new(b"test secret");
        let (a, b) = (mint.mint(1), mint.mint(2));
        let h = |cookies: &[String]| {
            let mut h = HeaderMap::new();
            for c in cookies {
                h.append(header::COOKIE, HeaderValue::from_str(c).unwrap());
            }
            h
        };
        let found = |cookies: &[String]| cart_id(&h(cookies), &mint).map(|id| id.to_string());
        assert_eq!(found(&[format!("x=1; cartid={a}; y=2")]), Some(a.to_string()));
        assert_eq!(found(&["cartid=../etc".into()]), None);
        assert_eq!(found(&[]), None);
        assert_eq!(found(&[format!("cartid=../etc; cartid={a}")]), Some(a.to_string()));
        assert_eq!(
            found(&["cartid=bad id".into(), format!("cartid=\"{b}\"")]),
            Some(b.to_string())
        );
        assert_eq!(found(&[format!("cartid={a}; cartid={b}")]), Some(a.to_string()));
        // A cart id the service did not mint is no cart at all.
        assert_eq!(found(&["cartid=anything".into()]), None);
        assert_eq!(found(&[format!("cartid=chosen-by-me; cartid={b}")]), Some(b.to_string()));
        let foreign = CartIdMint::new(b"another secret").mint(1);
        assert_eq!(found(&[format!("cartid={foreign}")]), None);
    }
}
