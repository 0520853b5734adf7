//! Reading one cart back: from its newest record along the links (see
//! `record.rs`) to its latest snapshot, or to its first event.

use crate::cart_index::CartIndex;
use crate::record::{Link, SNAPSHOT_KIND, is_chained_kind};
use crate::segments::LogFile;
use crate::{Event, Loaded, Snapshot, StoreError};

/// Most events reserved ahead for one load; more grow the buffer as read.
const RESERVE_EVENTS: usize = 1024;

/// The latest snapshot of `cart` and the events after it, as `entry` (the
/// index's) says it has them. `unlinked` lists the offsets of its events
/// and snapshots when some of its records are of the unlinked format; the
/// links are followed otherwise.
///
/// Fails with [`StoreError::Corrupt`] if a record read is not the cart's,
/// breaks the sequence, or the chain ends before every event was found;
/// with [`StoreError::Io`] if the log cannot be read.
pub(crate) fn read_cart(
    file: &LogFile,
    cart: &str,
    entry: &CartIndex,
    unlinked: Option<Vec<u64>>,
) -> Result<Loaded, StoreError> {
    let snapshot_version = entry.snapshot_version();
    let mut wanted = entry.version();
    let mut snapshot = None;
    let mut events: Vec<Event> =
        Vec::with_capacity((entry.since_snapshot() as usize).min(RESERVE_EVENTS));
    let mut listed = unlinked.map(|offsets| offsets.into_iter().rev());
    let mut at = match &mut listed {
        Some(listed) => listed.next(),
        None => entry.head(),
    };
    let corrupt = |why: String| StoreError::Corrupt(format!("cart {cart}: {why}"));
    while wanted > snapshot_version || (snapshot_version > 0 && snapshot.is_none()) {
        let Some(offset) = at else {
            return Err(corrupt(format!(
                "its records end before version {wanted} (snapshot {snapshot_version})"
            )));
        };
        let record = file.read(offset)?;
        if record.cart != cart {
            return Err(corrupt(format!("the record at offset {offset} is {}'s", record.cart)));
        }
        let e = record.event;
        match e.kind {
            SNAPSHOT_KIND if e.seq == snapshot_version && snapshot.is_none() => {
                snapshot = Some(Snapshot {
                    version: e.seq,
                    timestamp_ms: e.timestamp_ms,
                    state: e.payload,
                });
            }
            // An older snapshot, or one covering less than it could.
            SNAPSHOT_KIND => {}
            kind if is_chained_kind(kind) && e.seq == wanted && wanted > snapshot_version => {
                wanted -= 1;
                events.push(e);
            }
            // An event the snapshot covers; the chain goes on before it.
            kind if is_chained_kind(kind) && e.seq <= snapshot_version => {}
            kind => {
                return Err(corrupt(format!(
                    "the record at offset {offset} (kind {kind}, seq {}) is not version {wanted}",
                    e.seq
                )));
            }
        }
        at = match (&mut listed, record.link) {
            (Some(listed), _) => listed.next(),
            (None, Link::After(prev)) if prev < offset => Some(prev),
            (None, Link::First) => None,
            (None, link) => {
                return Err(corrupt(format!("the record at offset {offset} links {link:?}")));
            }
        };
    }
    events.reverse();
    Ok(Loaded { snapshot, events })
}
