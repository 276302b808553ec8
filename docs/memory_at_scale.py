"""Peak memory and speed of the processing core with millions of users, on RocksDB.

Usage::

    python docs/memory_at_scale.py --users 2000000 --cache 200000
    python docs/memory_at_scale.py --users 2000000 --cache 0      # every state held

Runs the processor in-process, as a worker runs it: the store is a RocksDB database per
partition, opened as the worker's store opens those of its table (one block cache and one
memtable budget for them all: ``OTTSCORE_ROCKSDB_BLOCK_CACHE_MB``,
``OTTSCORE_ROCKSDB_MEMTABLES_MB``, ``OTTSCORE_ROCKSDB_WRITE_BUFFER_MB``), in a temporary
directory; a write-back every 10,000 records and eviction after each
(``OTTSCORE_USER_CACHE_MAX`` = ``--cache``). The events
are made as they are read, so that they take no memory: each user plays an item of the
catalog and pauses it five minutes later, the first plays spread evenly over a day of
event time, and plays again a day after their first play (three events a user). So every
user has a session ended, a churn prediction pending and its timers, and the second play
reads an evicted user's state back.

``--sample-every N`` prints, every N events (a multiple of 10,000), the resident memory,
Python's allocated blocks, RocksDB's block cache and memtables, and glibc's heap.

Prints the events per second of the processing and the process's peak resident memory
(``ru_maxrss``: the interpreter, the models, the catalog, the cached states, what stays of
the evicted users, and RocksDB's own buffers).
"""

from __future__ import annotations

import argparse
import ctypes
import heapq
import os
import resource
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from agents.devtools.throughput import Workload
from agents.worker.stores import SharedMemoryOptions, rocksdb_options
from pipeline.config import Settings
from pipeline.core.events import Event, encode_event
from pipeline.core.partitioning import partition_for
from pipeline.core.processor import Processor
from pipeline.offline.runner import drive

DAY_MS = 86_400_000
START_MS = 1_796_000_000_000
MB = 2**20


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")
    ]  # fmt: skip


def heap() -> str:
    """The C heap's main arena, where glibc tells (``mallinfo2``)."""
    mallinfo2 = getattr(ctypes.CDLL(None), "mallinfo2", None)
    if mallinfo2 is None:
        return "C heap: not glibc"
    mallinfo2.restype = _Mallinfo2
    info = mallinfo2()
    return (
        f"C heap {info.arena / MB:,.0f} MB ({info.uordblks / MB:,.0f} in use), "
        f"mapped {info.hblkhd / MB:,.0f} MB"
    )


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--users", type=int, default=2_000_000)
parser.add_argument("--cache", type=int, default=200_000, help="user states held (0: all)")
parser.add_argument("--items", type=int, default=5_000)
parser.add_argument(
    "--sample-every", type=int, default=0, help="print where the memory is every N events"
)
args = parser.parse_args()

catalog = Workload.simulate(events=1_000, users=100, items=args.items).catalog
item_ids = [item["item_id"] for item in catalog]
settings = Settings(user_cache_max=args.cache)  # and the environment's OTTSCORE_ settings
partitions = settings.topic_partitions
step_ms = DAY_MS / args.users


def visits(kind: str, delay_ms: int, position_s: float) -> Iterator[tuple[int, int, str, float]]:
    for i in range(args.users):
        yield int(START_MS + i * step_ms) + delay_ms, i, kind, position_s


def records() -> Iterator[tuple[bytes, bytes, int, int, int]]:
    offsets = [0] * partitions
    streams = (visits("play", 0, 0.0), visits("pause", 300_000, 300.0), visits("play", DAY_MS, 0.0))
    for n, (ts_ms, i, kind, position) in enumerate(heapq.merge(*streams)):
        user = f"user-{i:08d}"
        key = user.encode()
        event = Event(f"e-{n}", kind, user, ts_ms, item_id=item_ids[(i * 7919) % len(item_ids)],
                      position_s=position, duration_s=1800.0)  # fmt: skip
        partition = partition_for(key, partitions)
        yield key, encode_event(event), partition, offsets[partition], ts_ms
        offsets[partition] += 1


with tempfile.TemporaryDirectory() as directory:
    options = SharedMemoryOptions(**rocksdb_options(settings), use_rocksdict=True)
    stores = [options.open(Path(directory) / str(p)) for p in range(partitions)]

    def load(user_id: str, partition: int) -> bytes | None:
        data = stores[partition].get(user_id.encode())
        return bytes(data) if data is not None else None

    shared = options.shared()
    written = 0

    def write(states: list[tuple[str, int, bytes]]) -> None:
        global written
        for user_id, partition, data in states:
            stores[partition][user_id.encode()] = data
        written += 10_000
        if args.sample_every and written % args.sample_every == 0:
            print(
                f"{written:>10,} events: RSS {resident_mb():,.0f} MB; Python's objects "
                f"{sys.getallocatedblocks():,} blocks; RocksDB block cache "
                f"{shared.cache.get_usage() / MB:,.0f} MB, memtables "
                f"{shared.write_buffers.get_usage() / MB:,.0f} MB; {heap()}",
                flush=True,
            )

    processor = Processor(
        settings, load_state=load if args.cache else None, whole_run_quality=False
    )  # as a worker's
    processor.load_catalog(catalog)
    run = drive(processor, records(), states=write, write_back_every=10_000)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tally = processor.tally
    print(
        f"users {args.users:,}, cache {args.cache:,}: {run.records:,} events, "
        f"{run.events_per_s:,.0f} events/s processing, peak RSS {peak_mb:,.0f} MB; "
        f"held {len(processor.users):,}, evicted {tally.states_evicted:,}, read back "
        f"{tally.states_read_back:,}, timers armed {processor.timers.pending():,}, "
        f"parked {processor.timers.parked:,}"
    )
    for store in stores:
        store.close()
