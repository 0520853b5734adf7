//! The on-disk record of one event.
//!
//! ```text
//! magic u8 (0xCB) | body_len u32 LE | crc32(magic, body) u32 LE | body
//! body = cart_len u8 | cart | seq u64 | kind u8 | timestamp_ms i64
//!        | prev u64 | key_len u8 | key | [fingerprint u64 if key_len > 0]
//!        | payload
//! ```
//! `prev` links a cart's events and snapshots into a chain, newest first:
//! it is the logical offset (see `segments.rs`) of the cart's previous
//! event or snapshot record (`u64::MAX` for the first, and for every record of the
//! other kinds). So the index keeps one offset per cart, not one per event.
//! Records written before the link existed have magic `0xCA` and no `prev`;
//! they are still read (see [`Link::Unlinked`]), never written.
//!
//! A record is valid only if the magic, the length and the checksum all hold,
//! so a torn write or flipped bit is always detected. A record of kind
//! [`CLAIM_KIND`] is an ownership claim, not a cart event; the other
//! non-event kinds are [`SNAPSHOT_KIND`], [`ERASED_KIND`], and the log's
//! own markers [`SEALED_KIND`], [`COMPACTED_KIND`] and [`MOVED_KIND`].

use crate::{Event, IdempotencyTag, Snapshot};

/// Type code of a claim record: `seq` holds the claim epoch and the payload
/// the owner. Mutation type codes start at 1.
pub const CLAIM_KIND: u8 = 0;
/// Type code of a snapshot record: `seq` holds the version it covers and
/// the payload the encoded state.
pub const SNAPSHOT_KIND: u8 = 255;
/// Type code of an erasure: the cart named is gone; `seq` and payload are
/// unused (0, empty).
pub const ERASED_KIND: u8 = 254;
/// Type code of the last record of a log of the format before segments
/// that its compaction replaced: `seq` holds the generation of the log
/// that took over. Its cart id is empty. Only ever read now.
pub const MOVED_KIND: u8 = 253;
/// Type code of the last record of a segment (see `segments.rs`): the next
/// segment starts right after it. `seq` and payload are unused; its cart
/// id is empty.
pub const SEALED_KIND: u8 = 252;
/// Type code of the note that the log before offset `seq` was compacted
/// into `compacted-<seq>.log`: other processes reading it switch to that
/// file. Its cart id is empty.
pub const COMPACTED_KIND: u8 = 251;
/// Whether `kind` is one of the store's own record kinds, never an event's.
pub fn is_reserved_kind(kind: u8) -> bool {
    matches!(
        kind,
        CLAIM_KIND | SNAPSHOT_KIND | ERASED_KIND | MOVED_KIND | SEALED_KIND | COMPACTED_KIND
    )
}

/// The record of a log marker of `kind` ([`SEALED_KIND`],
/// [`COMPACTED_KIND`]) with `seq`.
pub fn marker(kind: u8, seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    let event = Event { seq, kind, timestamp_ms: 0, payload: Vec::new(), idempotency: None };
    encode(&mut out, "", &event, None);
    out
}

/// First byte of every record written.
pub const MAGIC: u8 = 0xCB;
/// First byte of a record of the first format, without `prev`.
pub const UNLINKED_MAGIC: u8 = 0xCA;
/// `prev` of a record that has no earlier one in its cart's chain.
const NO_PREV: u64 = u64::MAX;
/// Bytes before the body.
pub const HEADER_LEN: usize = 9;
/// Largest body accepted when reading; anything larger is corruption.
pub const MAX_BODY_LEN: usize = 16 * 1024 * 1024;
/// Longest cart id or idempotency key a record can hold.
pub const MAX_KEY_LEN: usize = u8::MAX as usize;

/// Whether records of `kind` are links of their cart's chain: events and
/// snapshots, what loading a cart reads.
pub fn is_chained_kind(kind: u8) -> bool {
    kind == SNAPSHOT_KIND || !is_reserved_kind(kind)
}

/// The record of `snapshot`: its version as `seq`, its state as payload.
pub fn snapshot_event(snapshot: Snapshot) -> Event {
    Event {
        seq: snapshot.version,
        kind: SNAPSHOT_KIND,
        timestamp_ms: snapshot.timestamp_ms,
        payload: snapshot.state,
        idempotency: None,
    }
}

/// Where a record's chain goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The record is the first of its chain (or of a kind not chained).
    First,
    /// The cart's previous event or snapshot record is at this offset.
    After(u64),
    /// A record of the first format: it does not say.
    Unlinked,
}

/// Appends the record of `event` for `cart` to `out`; `prev` is the offset
/// of the cart's previous chained record (see the module doc), ignored for
/// kinds that are not chained.
///
/// The caller guarantees `cart` and the idempotency key are at most
/// [`MAX_KEY_LEN`] bytes.
pub fn encode(out: &mut Vec<u8>, cart: &str, event: &Event, prev: Option<u64>) {
    let start = out.len();
    out.push(MAGIC);
    out.extend_from_slice(&[0; 8]);
    let body = out.len();
    put_short(out, cart.as_bytes());
    out.extend_from_slice(&event.seq.to_le_bytes());
    out.push(event.kind);
    out.extend_from_slice(&event.timestamp_ms.to_le_bytes());
    let prev = prev.filter(|_| is_chained_kind(event.kind)).unwrap_or(NO_PREV);
    out.extend_from_slice(&prev.to_le_bytes());
    match &event.idempotency {
        Some(tag) => {
            put_short(out, tag.key.as_bytes());
            out.extend_from_slice(&tag.fingerprint.to_le_bytes());
        }
        None => out.push(0),
    }
    out.extend_from_slice(&event.payload);
    let len = u32::try_from(out.len() - body).unwrap_or(u32::MAX);
    let crc = checksum(true, &out[body..]);
    out[start + 1..start + 5].copy_from_slice(&len.to_le_bytes());
    out[start + 5..start + 9].copy_from_slice(&crc.to_le_bytes());
}

/// Appends `bytes` (at most [`MAX_KEY_LEN`] of them) after their length byte.
pub(crate) fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len().min(MAX_KEY_LEN);
    out.push(len as u8);
    out.extend_from_slice(&bytes[..len]);
}

/// What the header of a record says, before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Length of the body.
    pub body_len: usize,
    /// Expected checksum of the body.
    pub crc: u32,
    /// Whether the body holds `prev` (magic [`MAGIC`], not
    /// [`UNLINKED_MAGIC`]).
    pub linked: bool,
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The cart it belongs to (empty for a [`MOVED_KIND`] marker).
    pub cart: String,
    /// What it records.
    pub event: Event,
    /// Where its cart's chain goes on.
    pub link: Link,
}

/// Whether `byte` can start a record.
pub fn is_magic(byte: u8) -> bool {
    byte == MAGIC || byte == UNLINKED_MAGIC
}

/// Parses a record header, or says why it is not one.
pub fn decode_header(bytes: &[u8; HEADER_LEN]) -> Result<Header, &'static str> {
    if !is_magic(bytes[0]) {
        return Err("bad magic byte");
    }
    let body_len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    if body_len > MAX_BODY_LEN {
        return Err("record length out of range");
    }
    let crc = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
    Ok(Header { body_len, crc, linked: bytes[0] == MAGIC })
}

/// The checksum of a record's `body`. A linked record's covers its magic
/// byte too: a bit flipped there (turning `0xCB` into the unlinked `0xCA`,
/// which would read the body without its link) fails the check.
fn checksum(linked: bool, body: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    if linked {
        crc.update(&[MAGIC]);
    }
    crc.update(body);
    crc.finalize()
}

/// Decodes a body whose checksum is `header.crc`, or says why it is
/// invalid.
pub fn decode_body(header: Header, body: &[u8]) -> Result<Decoded, &'static str> {
    if checksum(header.linked, body) != header.crc {
        return Err("checksum mismatch");
    }
    let mut r = Reader { bytes: body };
    let cart = r.short_str()?;
    let seq = u64::from_le_bytes(r.array()?);
    let kind = r.array::<1>()?[0];
    let timestamp_ms = i64::from_le_bytes(r.array()?);
    let link = match header.linked.then(|| r.array().map(u64::from_le_bytes)).transpose()? {
        None => Link::Unlinked,
        Some(NO_PREV) => Link::First,
        Some(prev) => Link::After(prev),
    };
    let key = r.short_str()?;
    let idempotency = if key.is_empty() {
        None
    } else {
        Some(IdempotencyTag { key, fingerprint: u64::from_le_bytes(r.array()?) })
    };
    let event = Event { seq, kind, timestamp_ms, payload: r.bytes.to_vec(), idempotency };
    Ok(Decoded { cart, event, link })
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], &'static str> {
        if self.bytes.len() < n {
            return Err("record body too short");
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn short_str(&mut self) -> Result<String, &'static str> {
        let len = self.array::<1>()?[0] as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "string is not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn golden_event() -> Event {
        Event {
            seq: 3,
            kind: 6,
            timestamp_ms: 1_700_000_000_000,
            payload: vec![0x08, 0x01, 0x10, 0x05],
            idempotency: Some(IdempotencyTag { key: "k".into(), fingerprint: 42 }),
        }
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    fn decode(buf: &[u8]) -> Result<Decoded, &'static str> {
        let header: [u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().unwrap();
        decode_body(decode_header(&header)?, &buf[HEADER_LEN..])
    }

    /// The record format is what every existing log holds: these bytes never
    /// change.
    #[test]
    fn golden_record() {
        let mut out = Vec::new();
        encode(&mut out, "c1", &golden_event(), Some(0x1234));
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "cb2a00000073c1374c0263310300000000000000060068e5cf8b0100003412000000000000016b2a00000000\
             00000008011005"
        );
    }

    /// Logs written before records were linked stay readable.
    #[test]
    fn golden_unlinked_record_is_read() {
        let bytes = unhex(
            "ca22000000db6f4dd30263310300000000000000060068e5cf8b010000016b2a0000000000000008011005",
        );
        let decoded = decode(&bytes).unwrap();
        assert_eq!(decoded.cart, "c1");
        assert_eq!(decoded.event, golden_event());
        assert_eq!(decoded.link, Link::Unlinked);
    }

    /// `0xCB` and `0xCA` differ in one bit: the checksum covers the magic,
    /// so neither format can be read as the other.
    #[test]
    fn a_magic_flipped_to_the_other_format_is_detected() {
        let mut linked = Vec::new();
        encode(&mut linked, "c1", &golden_event(), Some(7));
        linked[0] = UNLINKED_MAGIC;
        assert_eq!(decode(&linked), Err("checksum mismatch"));
        let mut unlinked = unhex(
            "ca22000000db6f4dd30263310300000000000000060068e5cf8b010000016b2a0000000000000008011005",
        );
        unlinked[0] = MAGIC;
        assert_eq!(decode(&unlinked), Err("checksum mismatch"));
    }

    #[test]
    fn only_events_and_snapshots_are_linked() {
        for (kind, link) in [
            (6, Link::After(7)),
            (SNAPSHOT_KIND, Link::After(7)),
            (CLAIM_KIND, Link::First),
            (ERASED_KIND, Link::First),
        ] {
            let mut buf = Vec::new();
            encode(&mut buf, "c", &Event { kind, ..golden_event() }, Some(7));
            assert_eq!(decode(&buf).unwrap().link, link, "kind {kind}");
        }
        let mut buf = Vec::new();
        encode(&mut buf, "c", &golden_event(), None);
        assert_eq!(decode(&buf).unwrap().link, Link::First);
    }

    fn roundtrip(cart: &str, event: &Event, prev: Option<u64>) -> Result<Decoded, &'static str> {
        let mut buf = Vec::new();
        encode(&mut buf, cart, event, prev);
        decode(&buf)
    }

    proptest! {
        #[test]
        fn records_round_trip(
            cart in "[a-zA-Z0-9]{1,64}",
            seq in any::<u64>(),
            kind in any::<u8>(),
            ts in any::<i64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            key in proptest::option::of(("[a-z0-9-]{1,40}", any::<u64>())),
            prev in proptest::option::of(0..u64::MAX),
        ) {
            let event = Event {
                seq, kind, timestamp_ms: ts, payload,
                idempotency: key.map(|(key, fingerprint)| IdempotencyTag { key, fingerprint }),
            };
            let d = roundtrip(&cart, &event, prev).unwrap();
            prop_assert_eq!(d.cart, cart);
            prop_assert_eq!(d.event, event);
            let expected = match prev {
                Some(p) if is_chained_kind(kind) => Link::After(p),
                _ => Link::First,
            };
            prop_assert_eq!(d.link, expected);
        }

        #[test]
        fn any_single_bit_flip_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 1..100),
            bit in any::<proptest::sample::Index>(),
        ) {
            let event = Event { seq: 1, kind: 2, timestamp_ms: 3, payload, idempotency: None };
            let mut buf = Vec::new();
            encode(&mut buf, "cart", &event, Some(9));
            let i = bit.index(buf.len() * 8);
            buf[i / 8] ^= 1 << (i % 8);
            let header: [u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().unwrap();
            let decoded = decode_header(&header).and_then(|h| {
                if h.body_len != buf.len() - HEADER_LEN { return Err("length changed"); }
                decode_body(h, &buf[HEADER_LEN..])
            });
            prop_assert!(decoded.is_err());
        }
    }
}
