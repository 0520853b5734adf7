"""Live-cart fan-out: W SSE watchers over N nodes on C carts, one mutation
per second per cart through a rotating node; prints p50/p99 from sending a
mutation to each watcher receiving its state, and how many deliveries were
seen. Used by bench/watch-fanout.sh. Plain asyncio: no packages needed."""
import asyncio
import json
import random
import sys
import time

WATCHERS, CARTS, SECONDS = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
PORTS = [int(p) for p in sys.argv[4].split(",")]
sent = {}  # (cart, version) -> time the mutation was sent
latencies = []
connected = 0
refused = 0


async def request(port, method, path, body=None):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode() if body is not None else b""
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
    )
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


async def watch(port, cart, stop):
    global connected, refused
    while True:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /api/carts/{cart}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if head.split()[1] == b"200":
            break
        # Refused (503 under a burst of opens): retry as EventSource does.
        refused += 1
        writer.close()
        await asyncio.sleep(1 + random.random())
    connected += 1
    event_id = None
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            if line.startswith(b"id:"):
                event_id = int(line[3:])
            elif line.startswith(b"data:") and event_id is not None:
                at = sent.get((cart, event_id))
                if at is not None:
                    latencies.append(time.monotonic() - at)
    finally:
        writer.close()


async def mutate(cart, stop):
    version = 1
    await asyncio.sleep(random.random())
    while not stop.is_set():
        port = random.choice(PORTS)
        started = time.monotonic()
        sent[(cart, version + 1)] = started
        status, body = await request(port, "PATCH", f"/api/carts/{cart}/items/1", {"quantity": 1 + version % 2})
        if status == 200:
            version = json.loads(body)["version"]
            sent[(cart, version)] = started
        else:
            print(f"mutation answered {status}", file=sys.stderr)
        await asyncio.sleep(1)


async def main():
    carts = [f"fan-{i}" for i in range(CARTS)]
    for cart in carts:
        status, _ = await request(PORTS[0], "POST", f"/api/carts/{cart}/items", {"sku": "861200"})
        assert status == 200, status
    print("CARTS", flush=True)
    await asyncio.get_event_loop().run_in_executor(None, sys.stdin.readline)
    stop = asyncio.Event()
    watchers = [
        asyncio.create_task(watch(PORTS[i % len(PORTS)], carts[i % CARTS], stop))
        for i in range(WATCHERS)
    ]
    while connected < WATCHERS:
        await asyncio.sleep(0.1)
    print(f"watchers connected: {connected} (opens refused and retried: {refused})", flush=True)
    print("READY", flush=True)
    await asyncio.get_event_loop().run_in_executor(None, sys.stdin.readline)
    mutators = [asyncio.create_task(mutate(cart, stop)) for cart in carts]
    await asyncio.sleep(SECONDS)
    stop.set()
    await asyncio.gather(*mutators, return_exceptions=True)
    await asyncio.sleep(1)  # the last states in flight
    for w in watchers:
        w.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    latencies.sort()
    n = len(latencies)
    expected = len({k for k in sent}) * WATCHERS // CARTS
    print(f"deliveries: {n} of about {expected} (mutations x watchers per cart)")
    if n:
        p = lambda q: latencies[min(n - 1, int(q * n))] * 1000
        print(f"send to delivery: p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, max {latencies[-1]*1000:.1f} ms")


asyncio.run(main())
