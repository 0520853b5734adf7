//! What the log's index keeps of each cart, in a few bytes: the map from
//! cart id to [`CartIndex`], and the table of claim owners the entries name.
//!
//! The index holds every cart the log has, resident or not, so its entry
//! is what a cart costs in memory at rest. A cart's records are found
//! through its newest one (records are linked, see `record.rs`), so the
//! entry has no per-event part: 30 bytes, plus the id inline when it is at
//! most [`INLINE_ID`] bytes (the ids this service makes are 11).

use std::collections::HashMap;
use std::sync::Arc;

/// Longest cart id kept inline in the map; longer ones are boxed.
pub(crate) const INLINE_ID: usize = 16;
/// Highest event count a cart can reach in the index (48 bits: more than a
/// million appends a second for eight years).
pub(crate) const MAX_VERSION: u64 = (1 << 48) - 1;
/// Most distinct claim owners one log generation can name (compaction
/// starts the table again with the owners still holding claims).
pub(crate) const MAX_OWNERS: usize = u16::MAX as usize;

/// What the index knows of one cart. Packed: it is the bulk of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(2))]
pub(crate) struct CartIndex {
    /// Offset of its newest event or snapshot record; `u64::MAX` if none.
    head: u64,
    /// Its version: the number of its events.
    version: u64,
    /// Its claim epoch (0: never claimed).
    epoch: u32,
    /// Events after its latest snapshot.
    since_snapshot: u32,
    /// The timestamp of its latest event (or imported snapshot), in whole
    /// seconds rounded up, so expiry can only come late, never early.
    touched_s: u32,
    /// Its claim's owner: 1 + the index in [`Owners`]; 0 without a claim.
    owner: u16,
}

/// A value outside what a [`CartIndex`] can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutOfRange(pub &'static str);

impl Default for CartIndex {
    fn default() -> Self {
        CartIndex {
            head: u64::MAX,
            version: 0,
            epoch: 0,
            since_snapshot: 0,
            touched_s: 0,
            owner: 0,
        }
    }
}

impl CartIndex {
    /// An entry as a checkpoint recorded it.
    pub(crate) fn restored(
        head: Option<u64>,
        version: u64,
        since_snapshot: u32,
        epoch: u32,
        touched_s: u32,
        owner: u16,
    ) -> Result<Self, OutOfRange> {
        if version > MAX_VERSION || u64::from(since_snapshot) > version {
            return Err(OutOfRange("version out of range"));
        }
        let head = head.unwrap_or(u64::MAX);
        Ok(CartIndex { head, version, epoch, since_snapshot, touched_s, owner })
    }

    /// Offset of the newest event or snapshot record, if any.
    pub(crate) fn head(&self) -> Option<u64> {
        let head = self.head;
        (head != u64::MAX).then_some(head)
    }

    /// The cart's version: the number of its events.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// The version its latest snapshot covers (0 without one).
    pub(crate) fn snapshot_version(&self) -> u64 {
        self.version - u64::from(self.since_snapshot)
    }

    /// Events after its latest snapshot.
    pub(crate) fn since_snapshot(&self) -> u32 {
        self.since_snapshot
    }

    /// Its claim epoch (0: never claimed).
    pub(crate) fn epoch(&self) -> u64 {
        u64::from(self.epoch)
    }

    /// Its claim's owner in [`Owners`] (0 without a claim).
    pub(crate) fn owner_id(&self) -> u16 {
        self.owner
    }

    /// The timestamp of its latest event, ms (whole seconds, rounded up).
    pub(crate) fn touched_ms(&self) -> i64 {
        i64::from(self.touched_s) * 1000
    }

    /// The same, as stored.
    pub(crate) fn touched_s(&self) -> u32 {
        self.touched_s
    }

    /// Takes in an event: version `version + 1`, at `offset`.
    pub(crate) fn event(&mut self, offset: u64, timestamp_ms: i64) -> Result<(), OutOfRange> {
        let version = self.version;
        if version >= MAX_VERSION {
            return Err(OutOfRange("cart version beyond the index's range"));
        }
        let since = self.since_snapshot.checked_add(1);
        self.since_snapshot = since.ok_or(OutOfRange("too many events since the last snapshot"))?;
        self.version = version + 1;
        self.head = offset;
        self.touch(timestamp_ms);
        Ok(())
    }

    /// Takes in a snapshot covering `covers` (at most the version, checked
    /// by the caller), at `offset`; a snapshot of a cart without events
    /// seeds it at that version.
    pub(crate) fn snapshot(
        &mut self,
        offset: u64,
        covers: u64,
        timestamp_ms: i64,
    ) -> Result<(), OutOfRange> {
        if covers > MAX_VERSION {
            return Err(OutOfRange("snapshot version beyond the index's range"));
        }
        if self.version == 0 {
            self.version = covers;
            self.touch(timestamp_ms);
        }
        let version = self.version;
        // Fewer than the events since the previous snapshot: it fits.
        let since = u32::try_from(version - covers.min(version));
        self.since_snapshot =
            since.map_err(|_| OutOfRange("too many events since the snapshot"))?;
        self.head = offset;
        Ok(())
    }

    /// Starts a cart that has no records yet at `version` (a compacted
    /// log's first event kept for it is `version + 1`; the snapshot that
    /// covers the events before it follows).
    pub(crate) fn seed(&mut self, version: u64) -> Result<(), OutOfRange> {
        let since =
            u32::try_from(version).map_err(|_| OutOfRange("seeded version beyond range"))?;
        if version > MAX_VERSION {
            return Err(OutOfRange("seeded version beyond range"));
        }
        self.version = version;
        self.since_snapshot = since;
        Ok(())
    }

    /// Names its claim's owner by a new id (after the owner table was
    /// started again).
    pub(crate) fn set_owner(&mut self, owner: u16) {
        self.owner = owner;
    }

    /// Takes in a claim of `epoch` by owner `owner` (see [`Owners::id`]).
    pub(crate) fn claim(&mut self, epoch: u64, owner: u16) -> Result<(), OutOfRange> {
        self.epoch = u32::try_from(epoch).map_err(|_| OutOfRange("claim epoch beyond range"))?;
        self.owner = owner;
        Ok(())
    }

    fn touch(&mut self, timestamp_ms: i64) {
        let seconds = (timestamp_ms.max(0) as u64).div_ceil(1000);
        let touched_s = self.touched_s;
        self.touched_s = touched_s.max(u32::try_from(seconds).unwrap_or(u32::MAX));
    }
}

/// Cart id to entry: ids of up to [`INLINE_ID`] bytes inline (zero-padded:
/// an id never holds a zero byte there), longer ones boxed.
#[derive(Debug, Default, Clone)]
pub(crate) struct CartMap {
    inline: HashMap<[u8; INLINE_ID], CartIndex>,
    boxed: HashMap<Box<str>, CartIndex>,
}

/// The inline key of `cart`, if it has one.
fn inline_key(cart: &str) -> Option<[u8; INLINE_ID]> {
    let bytes = cart.as_bytes();
    if bytes.len() > INLINE_ID || bytes.contains(&0) {
        return None;
    }
    let mut key = [0u8; INLINE_ID];
    key[..bytes.len()].copy_from_slice(bytes);
    Some(key)
}

/// The id an inline key holds.
fn inline_id(key: &[u8; INLINE_ID]) -> &str {
    let len = key.iter().position(|b| *b == 0).unwrap_or(INLINE_ID);
    // The key was copied from a `str` whole: it is UTF-8.
    std::str::from_utf8(&key[..len]).unwrap_or_default()
}

impl CartMap {
    /// A map with room for `carts` entries of short ids.
    pub(crate) fn with_capacity(carts: usize) -> Self {
        CartMap { inline: HashMap::with_capacity(carts), boxed: HashMap::new() }
    }

    /// The entry of `cart`.
    pub(crate) fn get(&self, cart: &str) -> Option<&CartIndex> {
        match inline_key(cart) {
            Some(key) => self.inline.get(&key),
            None => self.boxed.get(cart),
        }
    }

    /// The entry of `cart`, made empty if it has none.
    pub(crate) fn get_or_default(&mut self, cart: &str) -> &mut CartIndex {
        match inline_key(cart) {
            Some(key) => self.inline.entry(key).or_default(),
            // Long ids are rare: the key is allocated even when present.
            None => self.boxed.entry(cart.into()).or_default(),
        }
    }

    /// Sets the entry of `cart`.
    pub(crate) fn insert(&mut self, cart: &str, entry: CartIndex) {
        match inline_key(cart) {
            Some(key) => self.inline.insert(key, entry),
            None => self.boxed.insert(cart.into(), entry),
        };
    }

    /// Forgets `cart`.
    pub(crate) fn remove(&mut self, cart: &str) {
        match inline_key(cart) {
            Some(key) => self.inline.remove(&key),
            None => self.boxed.remove(cart),
        };
    }

    /// Whether the map has `cart`.
    pub(crate) fn contains_key(&self, cart: &str) -> bool {
        self.get(cart).is_some()
    }

    /// How many carts it has.
    pub(crate) fn len(&self) -> usize {
        self.inline.len() + self.boxed.len()
    }

    /// Every cart and its entry, in no order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &CartIndex)> {
        let inline = self.inline.iter().map(|(key, c)| (inline_id(key), c));
        inline.chain(self.boxed.iter().map(|(id, c)| (&**id, c)))
    }

    /// Every entry, to change.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut CartIndex> {
        self.inline.values_mut().chain(self.boxed.values_mut())
    }

    /// Every entry.
    pub(crate) fn values(&self) -> impl Iterator<Item = &CartIndex> {
        self.inline.values().chain(self.boxed.values())
    }
}

/// The claim owners one generation names, each once: a cluster has a
/// handful of nodes and many carts.
#[derive(Debug, Default)]
pub(crate) struct Owners {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u16>,
}

impl Owners {
    /// The id of `owner` (1-based), added if new; `None` once the table
    /// holds [`MAX_OWNERS`].
    pub(crate) fn id(&mut self, owner: &str) -> Option<u16> {
        if let Some(id) = self.ids.get(owner) {
            return Some(*id);
        }
        if self.names.len() >= MAX_OWNERS {
            return None;
        }
        let name: Arc<str> = owner.into();
        self.names.push(Arc::clone(&name));
        let id = u16::try_from(self.names.len()).ok()?;
        self.ids.insert(name, id);
        Some(id)
    }

    /// Whether [`Owners::id`] would give `owner` an id, with room for
    /// `more` new owners besides.
    pub(crate) fn has_room_for(&self, owner: &str, more: usize) -> bool {
        self.ids.contains_key(owner) || self.names.len() + more < MAX_OWNERS
    }

    /// The owner with id `id` (0 or unknown: none).
    pub(crate) fn name(&self, id: u16) -> Option<&Arc<str>> {
        self.names.get(usize::from(id).checked_sub(1)?)
    }

    /// Every owner, by id from 1.
    pub(crate) fn names(&self) -> &[Arc<str>] {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_thirty_bytes() {
        assert_eq!(std::mem::size_of::<CartIndex>(), 30);
        assert_eq!(std::mem::size_of::<([u8; INLINE_ID], CartIndex)>(), 46);
    }

    #[test]
    fn short_and_long_ids_are_kept_apart_and_found() {
        let mut map = CartMap::default();
        let long = "x".repeat(40);
        for (i, id) in ["a", "0123456789abcdef", &long, "nul\0id"].into_iter().enumerate() {
            map.get_or_default(id).event(i as u64, 1).unwrap();
        }
        assert_eq!(map.len(), 4);
        assert_eq!(map.get("0123456789abcdef").and_then(|c| c.head()), Some(1));
        assert_eq!(map.get(&long).and_then(|c| c.head()), Some(2));
        assert_eq!(map.get("nul\0id").and_then(|c| c.head()), Some(3));
        assert!(map.get("nul").is_none());
        let mut ids: Vec<&str> = map.iter().map(|(id, _)| id).collect();
        ids.sort();
        assert_eq!(ids, ["0123456789abcdef", "a", "nul\0id", &long]);
        map.remove("a");
        map.remove(&long);
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn expiry_time_rounds_up() {
        let mut c = CartIndex::default();
        c.event(0, 1_001).unwrap();
        assert_eq!(c.touched_ms(), 2_000);
        c.event(1, 500).unwrap();
        assert_eq!(c.touched_ms(), 2_000, "never moves back");
        assert_eq!((c.version(), c.snapshot_version()), (2, 0));
        c.snapshot(2, 1, 0).unwrap();
        assert!(c.snapshot(3, MAX_VERSION + 1, 0).is_err());
        assert_eq!((c.version(), c.snapshot_version(), c.head()), (2, 1, Some(2)));
    }

    #[test]
    fn values_out_of_range_are_refused() {
        let mut c = CartIndex::restored(None, MAX_VERSION, 0, 0, 0, 0).unwrap();
        assert!(c.event(1, 0).is_err());
        assert!(c.claim(1 << 32, 1).is_err());
        assert!(CartIndex::restored(None, 1, 2, 0, 0, 0).is_err());
        let mut owners = Owners::default();
        assert_eq!(owners.id("n1"), Some(1));
        assert_eq!(owners.id("n2"), Some(2));
        assert_eq!(owners.id("n1"), Some(1));
        assert_eq!(owners.name(2).map(|n| &**n), Some("n2"));
        assert!(owners.name(0).is_none());
    }
}
