//! Klarna Checkout v3 (also served by Kustom): turning a cart into a checkout
//! order, keeping it in step with the cart, and completing the cart exactly
//! once when the provider says the order is paid.
//!
//! - [`order`]: the order object and the money mapping from a cart (pure).
//! - [`client`]: the provider's HTTP API (Checkout and Order Management).
//! - [`service`]: the flows behind the storefront routes and callbacks.

pub mod client;
pub mod families;
pub mod order;
pub mod service;

use cart_grain::GrainError;
use thiserror::Error;

pub use client::{KlarnaClient, KlarnaConfig};
pub use service::Checkout;

/// Why a checkout step failed.
#[derive(Debug, Error)]
pub enum CheckoutError {
    /// The cart could not be read or changed.
    #[error("{0}")]
    Cart(#[from] GrainError),
    /// The cart has nothing to pay for.
    #[error("the cart is empty")]
    EmptyCart,
    /// The cart does not fit the provider's rules (amount limits, line count).
    #[error("the cart cannot be paid with this provider: {0}")]
    Unpayable(String),
    /// The provider could not be reached or answered with an error.
    #[error("the payment provider is unavailable: {0}")]
    Provider(String),
    /// No such order at the provider, or it is not this cart's.
    #[error("unknown order {0}")]
    UnknownOrder(String),
    /// The provider's order does not match the cart it was built from.
    #[error("order {0} does not match its cart")]
    Mismatch(String),
}
