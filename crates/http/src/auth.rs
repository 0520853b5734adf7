//! The internal listener's bearer token (`--internal-token-file`): every
//! request must carry `Authorization: Bearer <token>`, compared in constant
//! time; anything else is 401 before a handler runs. The one exception is
//! the dashboard's page and assets ([`crate::admin::PAGE_PATHS`]): they hold
//! no data, and the page asks for the token itself.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// Shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_LEN: usize = 16;

/// A secret the internal listener requires.
#[derive(Clone)]
pub struct BearerToken(Arc<[u8]>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    /// The token in `text` (surrounding whitespace, such as a file's final
    /// newline, is not part of it). Refuses one shorter than
    /// [`MIN_TOKEN_LEN`] or with characters a header cannot carry.
    pub fn new(text: &str) -> Result<Self, String> {
        let token = text.trim();
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!("the internal token must be at least {MIN_TOKEN_LEN} characters"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the internal token must be visible ASCII characters".into());
        }
        Ok(BearerToken(token.as_bytes().into()))
    }

    fn matches(&self, header: Option<&HeaderValue>) -> bool {
        let Some(given) = header.and_then(|v| v.as_bytes().strip_prefix(b"Bearer ")) else {
            return false;
        };
        bool::from(given.ct_eq(&self.0))
    }
}

/// Middleware: lets the request through only with the token.
pub async fn require(State(token): State<BearerToken>, request: Request, next: Next) -> Response {
    let page = request.method() == axum::http::Method::GET
        && crate::admin::PAGE_PATHS.contains(&request.uri().path());
    if page || token.matches(request.headers().get(header::AUTHORIZATION)) {
        return next.run(request).await;
    }
    metrics::counter!(crate::families::HTTP_UNAUTHORIZED.name).increment(1);
    let mut response =
        (StatusCode::UNAUTHORIZED, "this listener needs Authorization: Bearer <token>")
            .into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let token = BearerToken::new("  s3cret-token-of-some-length\n").unwrap();
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        assert!(token.matches(Some(&header("Bearer s3cret-token-of-some-length"))));
        for wrong in [
            "Bearer s3cret-token-of-some-lengt",
            "Bearer s3cret-token-of-some-length2",
            "bearer s3cret-token-of-some-length",
            "Basic s3cret-token-of-some-length",
            "s3cret-token-of-some-length",
            "Bearer ",
        ] {
            assert!(!token.matches(Some(&header(wrong))), "{wrong}");
        }
        assert!(!token.matches(None));
        assert!(BearerToken::new("short").is_err());
        assert!(BearerToken::new("has a space in the middle").is_err());
    }
}
