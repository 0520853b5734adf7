//! The one place failures become HTTP responses: a status code, a short
//! human-readable text body (the storefront shows it to the shopper), and
//! `Retry-After` on 503.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cart_grain::GrainError;

/// A failed request.
#[derive(Debug)]
pub enum ApiError {
    /// The grain runtime refused or failed.
    Grain(GrainError),
    /// A checkout step failed.
    Checkout(cart_checkout::CheckoutError),
    /// The request itself is malformed.
    BadRequest(String),
    /// The body exceeds [`crate::MAX_BODY_BYTES`].
    TooLarge,
    /// A resource of this node is missing for a moment; retry.
    Unavailable(String),
}

impl From<GrainError> for ApiError {
    fn from(e: GrainError) -> Self {
        ApiError::Grain(e)
    }
}

impl From<cart_checkout::CheckoutError> for ApiError {
    fn from(e: cart_checkout::CheckoutError) -> Self {
        match e {
            cart_checkout::CheckoutError::Cart(e) => ApiError::Grain(e),
            other => ApiError::Checkout(other),
        }
    }
}

impl ApiError {
    /// The status and the text shown to the client.
    fn parts(&self) -> (StatusCode, String) {
        match self {
            ApiError::Grain(e) => {
                let status =
                    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let text = if status == StatusCode::INTERNAL_SERVER_ERROR {
                    "internal error; the cart was not changed".to_owned()
                } else {
                    e.to_string()
                };
                (status, text)
            }
            ApiError::Checkout(e) => {
                (StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY), e.to_string())
            }
            ApiError::BadRequest(text) => (StatusCode::BAD_REQUEST, text.clone()),
            ApiError::Unavailable(text) => (StatusCode::SERVICE_UNAVAILABLE, text.clone()),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body too large (at most {} KiB)", crate::MAX_BODY_BYTES / 1024),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, text) = self.parts();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = ?self, "request failed");
        }
        let mut response = (status, text).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let seconds = match &self {
                ApiError::Grain(e) => e.retry_after().unwrap_or(1),
                _ => 1,
            };
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
