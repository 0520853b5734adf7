//! One request to change a cart, before and after the runtime resolved its
//! commands into events.

use cart_domain::{CartCommand, CartEvent};
use cart_store::IdempotencyTag;

/// Longest `Idempotency-Key` accepted, on every face.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// One request to change a cart: `mutations` applied all or nothing, in
/// order. Clients send commands ([`CartCommand`], the default); the runtime
/// resolves them into events ([`CartEvent`]), and an entry node forwards the
/// resolved request to the cart's owner.
#[derive(Debug, Clone)]
pub struct MutateRequest<T = CartCommand> {
    /// The changes, applied all or nothing, in order.
    pub mutations: Vec<T>,
    /// Apply only if the cart is at this version.
    pub if_match: Option<u64>,
    /// Apply at most once per key; a retry gets the first result.
    pub idempotency: Option<IdempotencyTag>,
}

impl<T> Default for MutateRequest<T> {
    fn default() -> Self {
        MutateRequest { mutations: Vec::new(), if_match: None, idempotency: None }
    }
}

impl<T> MutateRequest<T> {
    /// A request of these changes, with no preconditions.
    pub fn of(mutations: Vec<T>) -> Self {
        MutateRequest { mutations, ..Default::default() }
    }
}

/// A request whose commands are resolved: what a grain's turn applies.
pub type ResolvedRequest = MutateRequest<CartEvent>;
