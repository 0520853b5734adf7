//! The cart domain: cart state, the ten cart mutations and the rules that
//! accept or refuse them. Pure: no I/O, no clocks, no async.
//!
//! A cart is event sourced. [`Cart::apply`] takes one [`Mutation`] and either
//! changes the cart (and bumps its [`Cart::version`]) or returns a
//! [`CartError`] and leaves the cart exactly as it was. Replaying the stored
//! mutations of a cart in order rebuilds the same state.

pub mod cart;
pub mod error;
pub mod item;
pub mod limits;
pub mod money;
pub mod mutation;
mod view;

/// Code generated from `proto/messages.proto`: the persisted mutation messages.
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/messages.rs"));
}

pub use cart::{Cart, CartLine, CheckoutView, Delivery, PickupPoint};
pub use error::CartError;
pub use item::{ItemInfo, ItemInterner};
pub use mutation::{DecodeError, Mutation, MutationType};
