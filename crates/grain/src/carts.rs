//! The interface the HTTP and gRPC front ends use to reach carts, whether the
//! cart lives on this node ([`GrainRuntime`]) or anywhere in a cluster.

use std::sync::Arc;

use async_trait::async_trait;
use cart_domain::CartState;

use crate::{CartId, CartWatch, GrainError, GrainRuntime, MutateRequest};

/// Access to carts by id.
///
/// Failure contract: an `Err` means nothing was applied, or (kind
/// `Unavailable` after a timeout) that the outcome is unknown; a retry with
/// the same idempotency key then takes effect once. A retryable ownership
/// change never surfaces as an error: implementations retry it themselves.
#[async_trait]
pub trait Carts: Send + Sync + 'static {
    /// The cart's current state.
    async fn get(&self, id: &CartId) -> Result<CartState, GrainError>;

    /// Applies `request` (all or nothing) and returns the cart's new state.
    async fn mutate(&self, id: &CartId, request: MutateRequest) -> Result<CartState, GrainError>;

    /// A live view of the cart: its current state, then newer states as they
    /// are committed, wherever the cart lives (following it when its owner
    /// changes).
    async fn watch(&self, id: &CartId) -> Result<CartWatch, GrainError>;

    /// Erases the cart and all its data (on its owner); `false` if there
    /// was no such cart.
    async fn erase(&self, id: &CartId) -> Result<bool, GrainError>;
}

/// A single node: every cart is local.
#[async_trait]
impl Carts for Arc<GrainRuntime> {
    async fn get(&self, id: &CartId) -> Result<CartState, GrainError> {
        GrainRuntime::get(self, id).await
    }

    async fn mutate(&self, id: &CartId, request: MutateRequest) -> Result<CartState, GrainError> {
        GrainRuntime::mutate(self, id, request).await
    }

    async fn watch(&self, id: &CartId) -> Result<CartWatch, GrainError> {
        GrainRuntime::watch(self, id).await
    }

    async fn erase(&self, id: &CartId) -> Result<bool, GrainError> {
        GrainRuntime::erase(self, id).await
    }
}
