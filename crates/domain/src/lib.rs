//! The cart domain: cart state, what a client may ask ([`CartCommand`]), what
//! the log records ([`CartEvent`]) and the rules that accept or refuse an
//! event. Pure: no I/O, no clocks, no async.
//!
//! A cart is event sourced. [`Cart::apply`] takes one [`CartEvent`] and
//! either changes the cart (and bumps its [`Cart::version`]) or returns a
//! [`CartError`] and leaves the cart exactly as it was. Replaying the stored
//! events of a cart in order rebuilds the same state.

pub mod cart;
pub mod command;
pub mod error;
pub mod item;
pub mod kinds;
pub mod limits;
pub mod money;
mod view;

/// Code generated from `proto/messages.proto`: the persisted mutation messages.
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/messages.rs"));
}

pub use cart::{Cart, CartLine, CartState, CheckoutState, Delivery, PickupPoint, RestoredCart};
pub use command::CartCommand;
pub use error::CartError;
pub use item::{ItemInfo, ItemInterner};
pub use kinds::{CartEvent, DecodeError, MutationType};
