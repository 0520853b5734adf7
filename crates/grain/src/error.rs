//! Why a cart request failed, and the one mapping of failures to their
//! [`ErrorKind`].

use cart_catalog::CatalogError;
use cart_domain::CartError;
use cart_store::StoreError;
use thiserror::Error;

use crate::ErrorKind;

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
    /// The cart took as many keyed requests within the idempotency window
    /// as it remembers; a further one could not be protected.
    #[error(
        "this cart took {max} requests with an Idempotency-Key within the idempotency window; no more until older keys expire"
    )]
    TooManyKeys {
        /// The limit.
        max: usize,
    },
    /// Another writer appended to the cart first; the grain reloads.
    #[error("the cart was changed by another writer; retry")]
    Conflict,
    /// Another node claimed the cart; this node's grain was dropped.
    #[error("the cart moved to another node; retry")]
    Fenced,
    /// The previous owner refused to hand the cart over.
    #[error("the cart's previous owner refused the handover: {0}")]
    HandoverRefused(String),
    /// Another node answered for the cart with this kind and text.
    #[error("{message}")]
    Remote {
        /// What the owner said failed.
        kind: ErrorKind,
        /// The owner's error text.
        message: String,
    },
    /// The cart's owner could not be reached.
    #[error("the cart's node is unreachable: {0}")]
    Unreachable(String),
    /// Too many resident carts and none idle to evict.
    #[error("too many active carts; retry shortly")]
    Overloaded,
    /// A forwarded request arrived after its sender had given up on it; it
    /// was not applied.
    #[error("the request arrived after its sender gave up; it was not applied")]
    Expired,
    /// The node is shutting down.
    #[error("the service is shutting down; retry")]
    ShuttingDown,
    /// This node holds no serving lease (it reaches no majority of the
    /// cluster, or it stood still): it cannot confirm it still owns carts.
    #[error("this node cannot confirm it owns its carts (no majority of the cluster); retry")]
    NoLease,
    /// The cart's previous owner did not answer, and its lease may not have
    /// run out yet: taking the cart over now could make two owners.
    #[error("the cart's previous owner is unreachable and may still hold it; retry shortly")]
    PreviousOwnerMayServe,
    /// Storage failed; nothing was acknowledged.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

impl GrainError {
    /// What kind of failure this is; exhaustive, so a new failure must say
    /// what it means to a client.
    pub fn kind(&self) -> ErrorKind {
        match self {
            GrainError::InvalidCartId => ErrorKind::Invalid,
            GrainError::NotFound => ErrorKind::NotFound,
            GrainError::Cart(e) => match e {
                CartError::LineNotFound(_) | CartError::DeliveryNotFound(_) => ErrorKind::NotFound,
                CartError::CurrencyMismatch { .. } | CartError::OrderMismatch(_) => {
                    ErrorKind::Conflict
                }
                CartError::CheckoutInProgress => ErrorKind::CheckoutLocked,
                CartError::OrderAlreadyCompleted => ErrorKind::Completed,
                CartError::InvalidQuantity { .. }
                | CartError::TooManyLines { .. }
                | CartError::TooLarge { .. }
                | CartError::TooManyDeliveries { .. }
                | CartError::EmptyDelivery
                | CartError::InvalidField { .. } => ErrorKind::Invalid,
            },
            GrainError::Catalog(e) => match e {
                CatalogError::UnknownSku(_) => ErrorKind::NotFound,
                CatalogError::NotForSale(_) => ErrorKind::Conflict,
                CatalogError::UnknownCountry(_)
                | CatalogError::UnknownProvider(_)
                | CatalogError::NoPickupPoints(_) => ErrorKind::Invalid,
                CatalogError::BadResponse(_) => ErrorKind::BadGateway,
                CatalogError::Unavailable(_) => ErrorKind::Unavailable,
            },
            GrainError::PreconditionFailed { .. } => ErrorKind::PreconditionFailed,
            GrainError::IdempotencyKeyReused => ErrorKind::IdempotencyKeyReused,
            GrainError::TooManyKeys { .. } => ErrorKind::Invalid,
            GrainError::Conflict | GrainError::Fenced => ErrorKind::Fenced,
            GrainError::HandoverRefused(_) => ErrorKind::Misdirected,
            GrainError::Remote { kind, .. } => *kind,
            GrainError::Unreachable(_)
            | GrainError::Overloaded
            | GrainError::ShuttingDown
            | GrainError::NoLease
            | GrainError::PreviousOwnerMayServe
            | GrainError::Expired => ErrorKind::Unavailable,
            GrainError::Store(e) => match e {
                StoreError::Conflict { .. } | StoreError::Fenced { .. } => ErrorKind::Fenced,
                StoreError::Invalid(_) => ErrorKind::Invalid,
                StoreError::NotFound => ErrorKind::NotFound,
                StoreError::Corrupt(_) => ErrorKind::Internal,
                StoreError::Io(_) | StoreError::Unavailable(_) => ErrorKind::Unavailable,
            },
        }
    }

    /// This failure as another kind, keeping its text (for example a
    /// retryable ownership change whose retries ran out, as `Unavailable`).
    pub fn as_kind(&self, kind: ErrorKind) -> GrainError {
        GrainError::Remote { kind, message: self.to_string() }
    }
}
