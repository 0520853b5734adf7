//! Why a cart request failed, and the one mapping of failures to status
//! codes (HTTP meaning; the gRPC replies use the same numbers).

use cart_catalog::CatalogError;
use cart_domain::CartError;
use cart_store::StoreError;
use thiserror::Error;

/// A failed cart request. The cart is unchanged.
#[derive(Debug, Error)]
pub enum GrainError {
    /// The cart id is malformed.
    #[error("invalid cart id: use 1 to 64 characters of A-Z, a-z, 0-9, _ and -")]
    InvalidCartId,
    /// The cart has no events.
    #[error("no such cart")]
    NotFound,
    /// The cart refused the mutation.
    #[error("{0}")]
    Cart(#[from] CartError),
    /// Resolving a SKU failed.
    #[error("{0}")]
    Catalog(#[from] CatalogError),
    /// `If-Match` named another version.
    #[error("the cart is at version {current}, not the version in If-Match")]
    PreconditionFailed {
        /// The cart's version.
        current: u64,
    },
    /// An idempotency key was reused with a different request.
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyKeyReused,
    /// Another writer appended to the cart first; the grain reloads.
    #[error("the cart was changed by another writer; retry")]
    Conflict,
    /// Another node claimed the cart; this node's grain was dropped.
    #[error("the cart moved to another node; retry")]
    Fenced,
    /// The previous owner refused to hand the cart over.
    #[error("the cart's previous owner refused the handover: {0}")]
    HandoverRefused(String),
    /// Another node answered for the cart with this status and text.
    #[error("{message}")]
    Remote {
        /// The owner's status code.
        status: u16,
        /// The owner's error text.
        message: String,
    },
    /// The cart's owner could not be reached.
    #[error("the cart's node is unreachable: {0}")]
    Unreachable(String),
    /// Too many resident carts and none idle to evict.
    #[error("too many active carts; retry shortly")]
    Overloaded,
    /// The node is shutting down.
    #[error("the service is shutting down; retry")]
    ShuttingDown,
    /// Storage failed; nothing was acknowledged.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

impl GrainError {
    /// The HTTP status code this failure answers with.
    pub fn status(&self) -> u16 {
        match self {
            GrainError::InvalidCartId => 400,
            GrainError::NotFound => 404,
            GrainError::Cart(e) => match e {
                CartError::LineNotFound(_) | CartError::DeliveryNotFound(_) => 404,
                CartError::CurrencyMismatch { .. }
                | CartError::OrderMismatch(_)
                | CartError::CheckoutInProgress
                | CartError::OrderAlreadyCompleted => 409,
                _ => 400,
            },
            GrainError::Catalog(e) => match e {
                CatalogError::UnknownSku(_) => 404,
                CatalogError::NotForSale(_) => 409,
                CatalogError::UnknownCountry(_) => 400,
                CatalogError::BadResponse(_) => 502,
                CatalogError::Unavailable(_) => 503,
            },
            GrainError::PreconditionFailed { .. } => 412,
            GrainError::IdempotencyKeyReused => 422,
            GrainError::Conflict | GrainError::Fenced => 409,
            GrainError::HandoverRefused(_) | GrainError::Unreachable(_) => 503,
            GrainError::Remote { status, .. } => *status,
            GrainError::Overloaded | GrainError::ShuttingDown => 503,
            GrainError::Store(e) => match e {
                StoreError::Conflict { .. } | StoreError::Fenced { .. } => 409,
                StoreError::Invalid(_) => 400,
                StoreError::Corrupt(_) => 500,
                StoreError::Io(_) | StoreError::Unavailable(_) => 503,
            },
        }
    }

    /// Seconds a client should wait before retrying, for 503 answers.
    pub fn retry_after(&self) -> Option<u32> {
        (self.status() == 503).then_some(1)
    }
}
