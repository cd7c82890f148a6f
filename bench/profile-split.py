#!/usr/bin/env python3
"""Splits a CPU profile of the webhook-ack figure into the bot's own work and the rest.

The figure runs the bot and the bare HMAC handler (the ceiling) in one process, in
alternating windows, so a flat profile mixes them. This script reads `perf script`
output recorded with call graphs and puts each sample in one bucket, by the first rule
that matches its stack (BENCHMARKS.md, "Targets missed", 1):

  perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -o ack.data \
      target/release/runwarden-bench --only webhook-ack > ack.md
  perf script -i ack.data -F comm,ip,sym > ack.script
  python3 bench/profile-split.py ack.script ack.md

With the report (`ack.md`, the bench's table) as well, it also turns the bot's buckets
into CPU microseconds per acked delivery (samples / frequency / deliveries acked in the
disk and tmpfs windows together). Only the standard library is used.
"""

import collections
import re
import sys

# (bucket, test on (thread name, whole stack as one string)); the first match wins.
BUCKETS = [
    ("bot: sqlx's SQLite thread", lambda comm, st: "sqlx-sqlite" in comm),
    ("bot: group-commit writer task", lambda comm, st: "spawn_delivery_writer" in st),
    ("bot: processor and its loops", lambda comm, st: "processor" in st or "Bot::spawn_loop" in st),
    ("bot: handler's store call", lambda comm, st: "store_delivery" in st),
    ("bot: payload parse", lambda comm, st: "read_event" in st or "Payload::read" in st),
    # The ceiling calls `verify_github_signature`; the bot checks the header's form first
    # and then calls `verify_digest` (which the other also calls).
    ("both: HMAC", lambda comm, st: "verify_github_signature" in st or "webhooks::verify_digest" in st),
    ("ceiling: bare handler", lambda comm, st: "bare_handler" in st),
    # The load generator: its request tasks, and the connection tasks its reqwest client
    # spawns (hyper's client side: `hyper_util::client`), which run apart from them.
    ("load generator (both)", lambda comm, st: "Load::blast" in st or "hyper_util::client" in st),
    # The rest of each server's connection tasks: hyper's reading, parsing, encoding and
    # writing, the routing, and for the bot its layers and extractors. The bot's
    # connections are the ones that go through `[server] idle_timeout`'s wrapper
    # (`runwarden::server::idle::IdleStream` in hyper's type parameters), so the two are
    # told apart and can be compared per request.
    ("bot: HTTP connection, layers, routing, extractors", lambda comm, st: "runwarden::server::idle" in st),
    ("ceiling: HTTP connection, routing", lambda comm, st: "axum::serve" in st),
]


def samples(path):
    """Yields (thread name, [frames, innermost first]) per sample of `perf script`."""
    comm, frames = None, []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                if comm is not None:
                    yield comm, frames
                comm, frames = None, []
            elif line[0] not in " \t" or comm is None:
                comm, frames = line.strip(), []
            else:
                parts = line.strip().split(None, 1)
                frames.append(parts[1] if len(parts) > 1 else parts[0])
    if comm is not None:
        yield comm, frames


def acked(report):
    """Deliveries the bot acked in the figure's windows (disk and tmpfs rows), and the
    requests the ceiling answered in its windows, estimated from each row's two rates
    (the two sides are loaded for the same time). Reads the table rows (stdout); the
    progress lines (stderr) say the same, so they are read only when there is no table."""
    with open(report, encoding="utf-8") as f:
        lines = f.read().splitlines()
    row = re.compile(r"^\| webhook acks[^|]*\| (\d+) req/s .*?(\d+) deliveries in \d+ commits.*?\| (\d+) req/s \(bare")
    progress = re.compile(r"^\s*webhook acks.*?(\d+) req/s vs (\d+) req/s.*? (\d+) deliveries in \d+ commits")
    found = []
    for line in lines:
        m = row.search(line)
        if m:
            rate, n, ceiling_rate = (int(g) for g in m.groups())
            found.append((rate, ceiling_rate, n))
    if not found:
        for line in lines:
            m = progress.search(line)
            if m:
                found.append(tuple(int(g) for g in m.groups()))
    bot = sum(n for _, _, n in found)
    ceiling = sum(n * ceiling_rate / max(rate, 1) for rate, ceiling_rate, n in found)
    return bot, ceiling


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    counts = collections.Counter()
    for comm, frames in samples(sys.argv[1]):
        stack = " ".join(frames)
        bucket = next((b for b, test in BUCKETS if test(comm, stack)), "other (kernel-only stacks, idle, runtime)")
        counts[bucket] += 1
    total = sum(counts.values())
    if total == 0:
        sys.exit("no samples")
    deliveries, ceiling = acked(sys.argv[2]) if len(sys.argv) == 3 else (0, 0)
    freq = 499.0
    print(f"{total} samples")
    for bucket, n in counts.most_common():
        line = f"{n:7d} {100 * n / total:5.1f}%  {bucket}"
        if deliveries and bucket.startswith("bot:"):
            line += f"  ({n / freq / deliveries * 1e6:.1f} µs per acked delivery)"
        if ceiling and bucket.startswith("ceiling:"):
            line += f"  ({n / freq / ceiling * 1e6:.1f} µs per request)"
        print(line)
    if deliveries:
        own = sum(n for b, n in counts.items() if b.startswith("bot:"))
        print(f"bot's own work: {own / freq / deliveries * 1e6:.1f} µs per acked delivery ({deliveries:.0f} acked; -F {freq:g})")


if __name__ == "__main__":
    main()
