//! The on-disk record of one event.
//!
//! ```text
//! magic u8 (0xCA) | body_len u32 LE | crc32(body) u32 LE | body
//! body = cart_len u8 | cart | seq u64 | kind u8 | timestamp_ms i64
//!        | key_len u8 | key | [fingerprint u64 if key_len > 0] | payload
//! ```
//! A record is valid only if the magic, the length and the checksum all hold,
//! so a torn write or flipped bit is always detected. A record of kind
//! [`CLAIM_KIND`] is an ownership claim, not a cart event; the other
//! non-event kinds are [`SNAPSHOT_KIND`], [`ERASED_KIND`] and
//! [`MOVED_KIND`].

use crate::{Event, IdempotencyTag};

/// Type code of a claim record: `seq` holds the claim epoch and the payload
/// the owner. Mutation type codes start at 1.
pub const CLAIM_KIND: u8 = 0;
/// Type code of a snapshot record: `seq` holds the version it covers and
/// the payload the encoded state.
pub const SNAPSHOT_KIND: u8 = 255;
/// Type code of an erasure: the cart named is gone; `seq` and payload are
/// unused (0, empty).
pub const ERASED_KIND: u8 = 254;
/// Type code of the last record of a log that compaction replaced: `seq`
/// holds the generation of the log that took over. Its cart id is empty.
pub const MOVED_KIND: u8 = 253;
/// Whether `kind` is one of the store's own record kinds, never an event's.
pub fn is_reserved_kind(kind: u8) -> bool {
    matches!(kind, CLAIM_KIND | SNAPSHOT_KIND | ERASED_KIND | MOVED_KIND)
}

/// First byte of every record.
pub const MAGIC: u8 = 0xCA;
/// Bytes before the body.
pub const HEADER_LEN: usize = 9;
/// Largest body accepted when reading; anything larger is corruption.
pub const MAX_BODY_LEN: usize = 16 * 1024 * 1024;
/// Longest cart id or idempotency key a record can hold.
pub const MAX_KEY_LEN: usize = u8::MAX as usize;

/// Appends the record of `event` for `cart` to `out`.
///
/// The caller guarantees `cart` and the idempotency key are at most
/// [`MAX_KEY_LEN`] bytes.
pub fn encode(out: &mut Vec<u8>, cart: &str, event: &Event) {
    let start = out.len();
    out.push(MAGIC);
    out.extend_from_slice(&[0; 8]);
    let body = out.len();
    put_short(out, cart.as_bytes());
    out.extend_from_slice(&event.seq.to_le_bytes());
    out.push(event.kind);
    out.extend_from_slice(&event.timestamp_ms.to_le_bytes());
    match &event.idempotency {
        Some(tag) => {
            put_short(out, tag.key.as_bytes());
            out.extend_from_slice(&tag.fingerprint.to_le_bytes());
        }
        None => out.push(0),
    }
    out.extend_from_slice(&event.payload);
    let len = u32::try_from(out.len() - body).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(&out[body..]);
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
}

/// Parses a record header, or says why it is not one.
pub fn decode_header(bytes: &[u8; HEADER_LEN]) -> Result<Header, &'static str> {
    if bytes[0] != MAGIC {
        return Err("bad magic byte");
    }
    let body_len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    if body_len > MAX_BODY_LEN {
        return Err("record length out of range");
    }
    let crc = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
    Ok(Header { body_len, crc })
}

/// Decodes a body whose checksum is `header.crc`, returning the cart id and
/// the event, or why it is invalid.
pub fn decode_body(header: Header, body: &[u8]) -> Result<(String, Event), &'static str> {
    if crc32fast::hash(body) != header.crc {
        return Err("checksum mismatch");
    }
    let mut r = Reader { bytes: body };
    let cart = r.short_str()?;
    let seq = u64::from_le_bytes(r.array()?);
    let kind = r.array::<1>()?[0];
    let timestamp_ms = i64::from_le_bytes(r.array()?);
    let key = r.short_str()?;
    let idempotency = if key.is_empty() {
        None
    } else {
        Some(IdempotencyTag { key, fingerprint: u64::from_le_bytes(r.array()?) })
    };
    Ok((cart, Event { seq, kind, timestamp_ms, payload: r.bytes.to_vec(), idempotency }))
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

    /// The record format is what every existing log holds: these bytes never
    /// change.
    #[test]
    fn golden_record() {
        let event = Event {
            seq: 3,
            kind: 6,
            timestamp_ms: 1_700_000_000_000,
            payload: vec![0x08, 0x01, 0x10, 0x05],
            idempotency: Some(IdempotencyTag { key: "k".into(), fingerprint: 42 }),
        };
        let mut out = Vec::new();
        encode(&mut out, "c1", &event);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "ca22000000db6f4dd30263310300000000000000060068e5cf8b010000016b2a0000000000000008011005"
        );
    }

    fn roundtrip(cart: &str, event: &Event) -> Result<(String, Event), &'static str> {
        let mut buf = Vec::new();
        encode(&mut buf, cart, event);
        let header: [u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().unwrap();
        decode_body(decode_header(&header)?, &buf[HEADER_LEN..])
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
        ) {
            let event = Event {
                seq, kind, timestamp_ms: ts, payload,
                idempotency: key.map(|(key, fingerprint)| IdempotencyTag { key, fingerprint }),
            };
            let (c, e) = roundtrip(&cart, &event).unwrap();
            prop_assert_eq!(c, cart);
            prop_assert_eq!(e, event);
        }

        #[test]
        fn any_single_bit_flip_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 1..100),
            bit in any::<proptest::sample::Index>(),
        ) {
            let event = Event { seq: 1, kind: 2, timestamp_ms: 3, payload, idempotency: None };
            let mut buf = Vec::new();
            encode(&mut buf, "cart", &event);
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
