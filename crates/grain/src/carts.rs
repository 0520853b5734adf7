//! The interface the HTTP and gRPC front ends use to reach carts, whether the
//! cart lives on this node ([`GrainRuntime`]) or anywhere in a cluster.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{CartId, CartSnapshot, GrainError, GrainRuntime, MutateRequest};

/// Access to carts by id.
#[async_trait]
pub trait Carts: Send + Sync + 'static {
    /// The cart's current state.
    async fn get(&self, id: &CartId) -> Result<CartSnapshot, GrainError>;

    /// Applies `request` to the cart and returns its new state.
    async fn mutate(&self, id: &CartId, request: MutateRequest)
    -> Result<CartSnapshot, GrainError>;
}

/// A single node: every cart is local.
#[async_trait]
impl Carts for Arc<GrainRuntime> {
    async fn get(&self, id: &CartId) -> Result<CartSnapshot, GrainError> {
        GrainRuntime::get(self, id).await
    }

    async fn mutate(
        &self,
        id: &CartId,
        request: MutateRequest,
    ) -> Result<CartSnapshot, GrainError> {
        GrainRuntime::mutate(self, id, request).await
    }
}
