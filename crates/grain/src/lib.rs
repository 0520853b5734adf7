//! The grain runtime: one logical actor per cart.
//!
//! A grain is a cart's in-memory state behind its own lock. Every request for
//! a cart runs as one *turn* under that lock, so concurrent requests to one
//! cart are serialised and never lose an update, while different carts run in
//! parallel. A grain activates on first use by replaying its events from the
//! [`cart_store::EventStore`], passivates after an idle TTL, and the number of
//! resident grains is capped.
//!
//! A mutation turn: resolve add-by-SKU through the catalogue, apply (a
//! refusal changes nothing; several mutations go onto a copy, all or
//! nothing), append the events conditionally on the version the grain held,
//! and answer only after the store acknowledges. A failed append drops the
//! grain's state, so the next request rebuilds it from the log.

pub mod cart_id;
pub mod carts;
pub mod clock;
pub mod error;
mod idempotency;
pub mod runtime;
mod turn_metrics;

pub use cart_id::CartId;
pub use carts::Carts;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::GrainError;
pub use runtime::{CartSnapshot, GrainRuntime, Handover, MutateRequest, RuntimeOptions};
