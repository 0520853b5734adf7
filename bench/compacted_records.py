#!/usr/bin/env python3
"""Records kept per cart in a file store's compacted file, by kind.

usage: bench/compacted_records.py DATA_DIR/compacted-<end>.log

Reads the entries of the format in crates/store/src/compacted.rs (a zigzag
varint gap, then a record as in record.rs) and prints, per record kind, how
many were kept and their bytes (gap included), and the bytes per cart.
"""
import collections
import struct
import sys

KINDS = {0: "claim", 255: "snapshot", 254: "erasure"}


def main(path):
    data = open(path, "rb").read()
    fence_at, _ = struct.unpack_from("<QQ", data, len(data) - 20)
    at = 16
    count, size, carts = collections.Counter(), collections.Counter(), set()
    while at < fence_at:
        start = at
        while data[at] & 0x80:
            at += 1
        at += 1
        (body_len,) = struct.unpack_from("<I", data, at + 1)
        body = data[at + 9 : at + 9 + body_len]
        cart = body[1 : 1 + body[0]]
        kind = body[1 + body[0] + 8]
        name = KINDS.get(kind, "event")
        count[name] += 1
        size[name] += at + 9 + body_len - start
        carts.add(cart)
        at += 9 + body_len
    for name in sorted(count):
        print(f"{name}: {count[name]} records, {size[name]} bytes, "
              f"{size[name] / count[name]:.0f} bytes each")
    total = sum(size.values())
    print(f"carts: {len(carts)}, {total / max(len(carts), 1):.0f} bytes per cart")


if __name__ == "__main__":
    main(sys.argv[1])
