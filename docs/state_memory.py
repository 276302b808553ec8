"""What a worker's memory holds per user: a cached state, and what stays of an evicted one.

Usage::

    python docs/state_memory.py --events 100000 --users 20000 [--artworks]

Runs the processor in-process over the bench's workload (``ottscore bench``'s, seeded) with
a cache of 100 states and a dictionary as the store, as a worker with a bounded cache
(``OTTSCORE_USER_CACHE_MAX``) runs it. Then prints, per user of the run:

- the bytes a state takes as objects once read back from the store (``tracemalloc``:
  everything allocated to decode every stored state, held at once);
- what stays of an evicted user: its timers (each structure of
  :class:`~pipeline.core.timers.EventTimeTimers`) and its taste factors in the partition's
  models, by a walk of the objects (shared objects counted once);
- how long reading a state back takes (every stored state decoded, the collector paused,
  best of five), and a sha-256 of the states read back, written again and pickled (the
  pickle records which objects a state shares), to compare two commits.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import pickle
import sys
import time
import tracemalloc
from collections import deque
from typing import Any

from agents.devtools.throughput import Workload, with_artworks
from pipeline.config import Settings
from pipeline.core.partitioning import partitioned
from pipeline.core.processor import Processor
from pipeline.offline.runner import drive


def deep_size(obj: Any, seen: set[int]) -> int:
    """Bytes of ``obj`` and everything it holds, each object once (those in ``seen`` skipped)."""
    if id(obj) in seen or obj is None or isinstance(obj, bool):
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset | deque):
        size += sum(deep_size(item, seen) for item in obj)
    elif hasattr(obj, "__dict__"):
        size += deep_size(vars(obj), seen)
    for name in getattr(type(obj), "__slots__", ()):
        if hasattr(obj, name):
            size += deep_size(getattr(obj, name), seen)
    return size


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--events", type=int, default=100_000)
parser.add_argument("--users", type=int, default=20_000)
parser.add_argument("--items", type=int, default=5_000)
parser.add_argument("--artworks", action="store_true", help="artworks in the catalog")
args = parser.parse_args()

workload = Workload.simulate(events=args.events, users=args.users, items=args.items)
settings = Settings(user_cache_max=100)
store: dict[tuple[int, str], bytes] = {}
processor = Processor(settings, load_state=lambda user, partition: store.get((partition, user)))
processor.load_catalog(with_artworks(workload.catalog) if args.artworks else workload.catalog)
now_ms = int(time.time() * 1000)
records = [
    (key, value, partition, offset, now_ms)
    for key, value, partition, offset in partitioned(workload.records, settings.topic_partitions)
]


def write(states: list[tuple[str, int, bytes]]) -> None:
    store.update(((partition, user), data) for user, partition, data in states)


drive(processor, records, states=write, write_back_every=10_000)
users = len(store)
print(f"users {users:,}, {sum(map(len, store.values())) / users:,.0f} bytes stored per user")

gc.collect()
tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
held = [processor.decode_state(user, data) for (_, user), data in store.items()]
gc.collect()
print(f"a state as objects: {(tracemalloc.get_traced_memory()[0] - before) / users:,.0f} bytes")
tracemalloc.stop()

timers = processor.timers
seen: set[int] = set()
names = ("_heaps", "_current", "_queued", "_parked", "_buckets")
parts = {name: deep_size(getattr(timers, name), seen) for name in names}
print(
    f"an evicted user's timers ({timers.pending() / users:.2f} armed a user, "
    f"{timers.parked / users:.2f} parked): "
    f"{sum(parts.values()) / users:,.0f} bytes ("
    + ", ".join(f"{name.strip('_')} {size / users:,.0f}" for name, size in parts.items())
    + ")"
)
taste = 0
for model in (m.recommender.taste for m in processor._models.values()):
    rows = model.user_rows  # the rows written, in their blocks
    taste += deep_size(model.users, seen) + rows.size * rows.width * 8
print(f"an evicted user's taste factors: {taste / users:,.0f} bytes")

stored = list(store.items())
gc.collect()
gc.disable()
seconds = []
for _ in range(5):
    started = time.perf_counter()
    for (_, user), data in stored:
        processor.decode_state(user, data)
    seconds.append(time.perf_counter() - started)
gc.enable()
digest = hashlib.sha256()
for (_, user), data in sorted(stored):
    state = processor.decode_state(user, data)
    digest.update(state.to_bytes())
    digest.update(pickle.dumps(state, protocol=5))
print(
    f"reading a state back: {1e6 * min(seconds) / users:,.1f} µs; "
    f"the states read back: sha-256 {digest.hexdigest()[:16]}"
)
