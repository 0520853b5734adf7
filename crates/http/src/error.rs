//! The one place failures become HTTP responses: a status code (from the
//! failure's kind, exhaustively), a short human-readable text body (the
//! storefront shows it to the shopper), and `Retry-After` on 503.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cart_checkout::CheckoutError;
use cart_grain::{ErrorKind, GrainError};

/// A failed request.
#[derive(Debug)]
pub enum ApiError {
    /// The grain runtime or the cluster refused or failed.
    Grain(GrainError),
    /// A checkout step failed.
    Checkout(CheckoutError),
    /// The request itself is malformed.
    BadRequest(String),
    /// The body exceeds [`crate::MAX_BODY_BYTES`].
    TooLarge,
    /// A resource of this node is missing for a moment; retry.
    Unavailable(String),
    /// A failure of a request about one cart, with what it asked, for the
    /// log line.
    About {
        /// The cart.
        cart: String,
        /// The mutation types asked for (none for a read).
        mutations: Vec<&'static str>,
        /// The failure itself.
        error: Box<ApiError>,
    },
}

impl From<GrainError> for ApiError {
    fn from(e: GrainError) -> Self {
        ApiError::Grain(e)
    }
}

impl From<CheckoutError> for ApiError {
    fn from(e: CheckoutError) -> Self {
        match e {
            CheckoutError::Cart(e) => ApiError::Grain(e),
            other => ApiError::Checkout(other),
        }
    }
}

fn status_of(kind: ErrorKind) -> StatusCode {
    StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A cart failure's status and text. A retryable ownership change that
/// still reached here is "retry shortly"; damaged data is not described.
fn grain_parts(e: &GrainError) -> (StatusCode, String) {
    match e.kind() {
        ErrorKind::Internal => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error; the cart was not changed".into())
        }
        ErrorKind::Misdirected => (status_of(ErrorKind::Unavailable), e.to_string()),
        kind @ (ErrorKind::Invalid
        | ErrorKind::NotFound
        | ErrorKind::Conflict
        | ErrorKind::PreconditionFailed
        | ErrorKind::CheckoutLocked
        | ErrorKind::Completed
        | ErrorKind::IdempotencyKeyReused
        | ErrorKind::Fenced
        | ErrorKind::Unavailable
        | ErrorKind::BadGateway) => (status_of(kind), e.to_string()),
    }
}

impl ApiError {
    /// This failure, as one of a request about `cart` asking `mutations`.
    pub fn about(self, cart: &impl std::fmt::Display, mutations: Vec<&'static str>) -> ApiError {
        ApiError::About { cart: cart.to_string(), mutations, error: Box::new(self) }
    }

    /// The `reason` label of `cart_http_failures_total` for a 5xx.
    fn failure_reason(&self) -> &'static str {
        match self {
            ApiError::About { error, .. } => error.failure_reason(),
            ApiError::Grain(e) | ApiError::Checkout(CheckoutError::Cart(e)) => match e.kind() {
                ErrorKind::Unavailable | ErrorKind::Misdirected => "unavailable",
                ErrorKind::BadGateway => "bad_gateway",
                ErrorKind::Internal => "internal",
                ErrorKind::Invalid
                | ErrorKind::NotFound
                | ErrorKind::Conflict
                | ErrorKind::PreconditionFailed
                | ErrorKind::CheckoutLocked
                | ErrorKind::Completed
                | ErrorKind::IdempotencyKeyReused
                | ErrorKind::Fenced => "other",
            },
            ApiError::Checkout(CheckoutError::Provider(_)) => "checkout_provider",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Checkout(_) | ApiError::BadRequest(_) | ApiError::TooLarge => "other",
        }
    }

    /// The status and the text shown to the client.
    fn parts(&self) -> (StatusCode, String) {
        match self {
            ApiError::About { error, .. } => error.parts(),
            ApiError::Grain(e) => grain_parts(e),
            ApiError::Checkout(e) => {
                let status = match e {
                    CheckoutError::Cart(e) => return grain_parts(e),
                    CheckoutError::EmptyCart | CheckoutError::Unpayable(_) => {
                        StatusCode::BAD_REQUEST
                    }
                    CheckoutError::Provider(_) => StatusCode::BAD_GATEWAY,
                    CheckoutError::UnknownOrder(_) => StatusCode::NOT_FOUND,
                    CheckoutError::Mismatch(_) => StatusCode::CONFLICT,
                };
                (status, e.to_string())
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
            let reason = self.failure_reason();
            metrics::counter!(crate::families::HTTP_FAILURES.name, "reason" => reason).increment(1);
            let (cart, mutations, error) = match &self {
                ApiError::About { cart, mutations, error } => {
                    (cart.as_str(), &mutations[..], &**error)
                }
                other => ("", &[][..], other),
            };
            tracing::warn!(
                status = status.as_u16(),
                cart,
                mutation_types = mutations.join(","),
                reason = %text,
                error = ?error,
                "request failed"
            );
        }
        let mut response = (status, text).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
        }
        response
    }
}
