//! The grain runtime: one logical actor per cart.
//!
//! A grain is a cart's in-memory state behind its own lock. Every request for
//! a cart runs as one *turn* under that lock, so concurrent requests to one
//! cart are serialised and never lose an update, while different carts run in
//! parallel. A grain activates on first use by replaying its events from the
//! [`cart_store::EventStore`], passivates after an idle TTL, and the number of
//! resident grains is capped.
//!
//! A mutation: resolve the client's commands into events (add-by-SKU through
//! the catalogue, here and nowhere else), then one turn: apply (a refusal
//! changes nothing; several events go onto a copy, all or nothing), append
//! the events conditionally on the version the grain held, and answer only
//! after the store acknowledges. A failed append drops the grain's state, so
//! the next request rebuilds it from the log. Committed states go to the
//! cart's watchers.
//!
//! - [`registry`]: the grain map, the resident cap, passivation.
//! - [`activation`]: replaying a cart's events.
//! - [`runtime`]: resolution, turns, handover.
//! - [`lease`]: whether this node may answer for its carts.
//! - [`feeds`]: live states for watchers, and their cap.
//! - [`error`], [`error_kind`]: failures and their closed set of kinds.

pub mod activation;
pub mod cart_id;
pub mod carts;
pub mod clock;
pub mod error;
pub mod error_kind;
pub mod families;
pub mod feeds;
mod idempotency;
pub mod lease;
pub mod load;
pub mod mint;
mod registry;
pub mod request;
pub mod runtime;
mod snapshots;
pub mod task;
mod turn_metrics;

pub use activation::Handover;
pub use cart_domain::CartState;
pub use cart_id::CartId;
pub use carts::Carts;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::GrainError;
pub use error_kind::ErrorKind;
pub use feeds::{
    CartWatch, Published, StateReceiver, StateSender, WatchPermit, offer, offer_state,
};
pub use lease::Lease;
pub use load::Load;
pub use mint::CartIdMint;
pub use request::{MutateRequest, ResolvedRequest};
pub use runtime::{Expiry, GrainRuntime, RuntimeOptions};
pub use task::OwnedTask;
