//! Durable event storage for carts.
//!
//! [`EventStore`] is the contract every backend meets: load a cart's events in
//! order, and append events *conditionally* on the version the writer expects,
//! so a writer that is behind gets [`StoreError::Conflict`] instead of forking
//! the log. Events are opaque here (a type code and payload bytes); the domain
//! gives them meaning.
//!
//! [`FileStore`] is the embedded backend: one checksummed append-only log with
//! group commit (see [`file`]).

mod cart_index;
mod chain;
mod checkpoint;
mod committer;
mod compacted;
mod compaction;
pub mod families;
pub mod file;
mod gather;
mod high_water;
mod log;
pub mod pg_tls;
pub mod postgres;
pub mod record;
mod segments;
pub mod sync;
pub mod tls_verify;

use async_trait::async_trait;
use thiserror::Error;

pub use file::{AutoCompaction, FileStore, FileStoreOptions};
pub use postgres::{PgStore, PgStoreOptions};
pub use sync::FsyncPolicy;

/// A request fingerprint stored with an append, so a retried request can be
/// recognised after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyTag {
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// A hash of the request the key was first used with.
    pub fingerprint: u64,
}

/// An event as stored: its position in the cart's log and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// 1-based position in the cart's log; equals the cart version after it.
    pub seq: u64,
    /// Mutation type code.
    pub kind: u8,
    /// When it was accepted, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Encoded mutation.
    pub payload: Vec<u8>,
    /// Set on the last event of an append made with an idempotency key.
    pub idempotency: Option<IdempotencyTag>,
}

/// A cart's state at a version, encoded by the layer above (the store keeps
/// it opaque): activation starts from it and replays only later events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The cart version it covers: events `1..=version` are folded in.
    pub version: u64,
    /// When it was taken, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The encoded state.
    pub state: Vec<u8>,
}

/// What a store holds of one cart: its latest snapshot (if any) and every
/// event after it, in sequence order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The latest snapshot; `None` when the cart was never snapshotted.
    pub snapshot: Option<Snapshot>,
    /// Events after the snapshot (all events without one), in order.
    pub events: Vec<Event>,
}

impl Loaded {
    /// The cart's version: its last event's, else its snapshot's, else 0.
    pub fn version(&self) -> u64 {
        self.events.last().map(|e| e.seq).or(self.snapshot.as_ref().map(|s| s.version)).unwrap_or(0)
    }

    /// Whether the store holds nothing of the cart.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.events.is_empty()
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Bytes of stored data before.
    pub bytes_before: u64,
    /// Bytes of stored data after.
    pub bytes_after: u64,
    /// Carts kept.
    pub carts: u64,
}

/// Who may write a cart: the node that last claimed it, at an epoch that
/// grows with every claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Grows by one with every claim of the cart.
    pub epoch: u64,
    /// The node that made the claim.
    pub owner: String,
}

/// How an append proves its writer still owns the cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// The writer holds the claim at this epoch; the append fails with
    /// [`StoreError::Fenced`] if anyone has claimed the cart since.
    Epoch(u64),
    /// Claim the cart for this owner (epoch + 1) atomically with the append.
    Claim(String),
}

/// The result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The cart's version after the append.
    pub version: u64,
    /// The writer's claim epoch, to pass as [`Fence::Epoch`] next time.
    pub epoch: u64,
}

/// An event to append; the store assigns its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Mutation type code.
    pub kind: u8,
    /// When it was accepted, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Encoded mutation.
    pub payload: Vec<u8>,
    /// See [`Event::idempotency`].
    pub idempotency: Option<IdempotencyTag>,
}

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The cart's log is not at the version the writer expected.
    #[error("version conflict: expected {expected}, log is at {actual}")]
    Conflict {
        /// The version the writer expected.
        expected: u64,
        /// The log's actual version.
        actual: u64,
    },
    /// The operation needs a cart the store does not hold (for example a
    /// snapshot of an erased cart).
    #[error("no such cart")]
    NotFound,
    /// The input cannot be stored (for example a cart id that is too long).
    #[error("cannot store: {0}")]
    Invalid(String),
    /// Another writer claimed the cart after this writer's claim.
    #[error("fenced: the cart was claimed at epoch {current}, this writer holds epoch {held}")]
    Fenced {
        /// The writer's epoch.
        held: u64,
        /// The cart's current claim epoch.
        current: u64,
    },
    /// The store failed to read or write; nothing of the failed append is
    /// acknowledged.
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// A stored record failed its checksum or could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The store is shut down or has failed and refuses further writes.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// One conditional append waiting for a backend's committer, with the
/// channel its outcome is sent on.
pub(crate) struct AppendRequest {
    pub cart: String,
    pub expected: u64,
    pub fence: Fence,
    pub events: Vec<NewEvent>,
    pub reply: tokio::sync::oneshot::Sender<Result<Appended, StoreError>>,
}

impl AppendRequest {
    /// A request and the receiver of its outcome.
    pub(crate) fn new(
        cart: &str,
        expected: u64,
        fence: Fence,
        events: Vec<NewEvent>,
    ) -> (Self, tokio::sync::oneshot::Receiver<Result<Appended, StoreError>>) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        (AppendRequest { cart: cart.to_owned(), expected, fence, events, reply }, answer)
    }

    /// Applies [`check_append`] against the cart's current version and epoch.
    pub(crate) fn check(&self, version: u64, epoch: u64) -> Result<(), StoreError> {
        check_append(&self.cart, self.expected, &self.fence, &self.events, version, epoch)
    }
}

/// The rules every backend applies to an append, given the cart's current
/// version and claim epoch: fencing first (a writer that lost its claim is
/// told so, whatever its version), then the expected version, then limits.
fn check_append(
    cart: &str,
    expected: u64,
    fence: &Fence,
    events: &[NewEvent],
    version: u64,
    epoch: u64,
) -> Result<(), StoreError> {
    use record::{MAX_BODY_LEN, MAX_KEY_LEN};
    if let Fence::Epoch(held) = *fence
        && held != epoch
    {
        return Err(StoreError::Fenced { held, current: epoch });
    }
    if expected != version {
        return Err(StoreError::Conflict { expected, actual: version });
    }
    check_cart_id(cart)?;
    if events.iter().any(|e| record::is_reserved_kind(e.kind)) {
        return Err(StoreError::Invalid("an event's type code is one the store reserves".into()));
    }
    if let Fence::Claim(owner) = fence
        && owner.len() > MAX_BODY_LEN / 2
    {
        return Err(StoreError::Invalid("owner name too long".into()));
    }
    if events.is_empty() && !matches!(fence, Fence::Claim(_)) {
        return Err(StoreError::Invalid("an append needs at least one event or a claim".into()));
    }
    if events.iter().any(|e| e.idempotency.as_ref().is_some_and(|t| t.key.len() > MAX_KEY_LEN)) {
        return Err(StoreError::Invalid(format!(
            "idempotency key must be at most {MAX_KEY_LEN} bytes"
        )));
    }
    Ok(())
}

/// Refuses a cart id no record can hold.
pub(crate) fn check_cart_id(cart: &str) -> Result<(), StoreError> {
    use record::MAX_KEY_LEN;
    if cart.is_empty() || cart.len() > MAX_KEY_LEN {
        return Err(StoreError::Invalid(format!("cart id must be 1..={MAX_KEY_LEN} bytes")));
    }
    Ok(())
}

/// The claim owner of writes by tools (`cart-actor migrate`, `restore`), not
/// nodes: a node takes such a claim over without asking anyone.
pub const TOOL_OWNER: &str = "migrate";

/// Length of a [`EventStore::secret`].
pub const SECRET_LEN: usize = 32;

/// 32 random bytes for a new secret.
pub(crate) fn new_secret() -> Result<[u8; SECRET_LEN], StoreError> {
    let mut secret = [0u8; SECRET_LEN];
    getrandom::fill(&mut secret)
        .map_err(|e| StoreError::Unavailable(format!("no randomness for a secret: {e}")))?;
    Ok(secret)
}

/// Refuses a secret name that is not a short file-name-safe word.
pub(crate) fn check_secret_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(StoreError::Invalid(format!("bad secret name {name:?}"))) }
}

/// Where cart events are kept.
///
/// Failure contract of every method: an error means nothing of that call
/// took effect that a later successful call could not see as a whole (an
/// append is all or none; an erasure either removed the cart or left it as
/// it was).
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// The latest snapshot of `cart` and the events after it, in sequence
    /// order; empty for an unknown cart. Events a snapshot covers may be
    /// gone (compacted) and are never returned.
    async fn load(&self, cart: &str) -> Result<Loaded, StoreError>;

    /// Stores `snapshot` as the cart's latest if it is newer than the one
    /// held; events it covers become garbage for compaction. Refused with
    /// [`StoreError::NotFound`] for a cart the store does not hold (an
    /// erased cart is never brought back) and with
    /// [`StoreError::Invalid`] if it claims a version the cart has not
    /// reached. Not synced on its own: a snapshot lost in a crash costs a
    /// longer replay, never data.
    async fn save_snapshot(&self, cart: &str, snapshot: Snapshot) -> Result<(), StoreError>;

    /// Removes the cart: its events, snapshot and claim. `false` if the
    /// store did not hold it. Durable per the store's policy before
    /// returning; its bytes leave the disk at the next compaction (at once
    /// in PostgreSQL, whose own vacuum reclaims the space).
    async fn erase(&self, cart: &str) -> Result<bool, StoreError>;

    /// Up to `limit` carts whose last event is older than `before_ms`
    /// (milliseconds since the Unix epoch), oldest first where the store
    /// can tell cheaply.
    async fn idle_carts(&self, before_ms: i64, limit: usize) -> Result<Vec<String>, StoreError>;

    /// Writes a cart copied from another store (migration, restore) into
    /// this one, which must not hold it: a claim by [`TOOL_OWNER`], the
    /// snapshot, then the events. Refused with [`StoreError::Conflict`] if
    /// the cart exists here.
    async fn import(&self, cart: &str, loaded: Loaded) -> Result<Appended, StoreError>;

    /// Rewrites stored data without what snapshots, erasures and expiry
    /// made garbage, and answers when done. A store with nothing to
    /// rewrite (PostgreSQL, whose vacuum does this) returns at once.
    async fn compact(&self) -> Result<Compacted, StoreError> {
        Ok(Compacted::default())
    }

    /// Appends `events` to `cart` if its log is at `expected_version` and the
    /// `fence` holds, all or none, durably per the store's policy before
    /// returning.
    async fn append(
        &self,
        cart: &str,
        expected_version: u64,
        fence: Fence,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError>;

    /// The cart's current claim, if it was ever claimed.
    async fn claim_of(&self, cart: &str) -> Result<Option<Claim>, StoreError>;

    /// Makes everything appended so far durable.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Ids of all carts with at least one event.
    async fn cart_ids(&self) -> Result<Vec<String>, StoreError>;

    /// The service secret named `name` (a short ASCII name): 32 random
    /// bytes made on first use, the same for every process on this store
    /// afterwards, so a cluster shares it with no set-up. Failure contract:
    /// an error means the secret could not be read or made; a stored
    /// secret is never replaced.
    async fn secret(&self, name: &str) -> Result<[u8; SECRET_LEN], StoreError> {
        self.secret_or_insert(name, new_secret()?).await
    }

    /// The secret named `name`, stored as `candidate` first if the store
    /// has none (a restore brings a backup's secrets back this way). Same
    /// failure contract as [`EventStore::secret`]; the answer differs from
    /// `candidate` when the store already had the secret.
    async fn secret_or_insert(
        &self,
        name: &str,
        candidate: [u8; SECRET_LEN],
    ) -> Result<[u8; SECRET_LEN], StoreError>;

    /// Whether the store is reachable right now (for readiness).
    fn healthy(&self) -> bool {
        true
    }
}
