"""A worker's commit discipline around a processor, over simulated events, without Kafka.

Shared by the tests of the live KPI windows and of the live experiment results.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable

from agents.worker.ingest import KPI_MARK_PREFIX, kpi_mark, kpi_mark_key, read_kpi_mark
from pipeline.config import Settings
from pipeline.core.events import Event, EventDecoder, encode_event
from pipeline.core.partitioning import partition_for
from pipeline.core.processor import Processor
from pipeline.kpis.windows import DAY_MS
from pipeline.sim.simulate import SimulationConfig, Simulator

PARTITIONS = 4
SETTINGS = Settings(topic_partitions=PARTITIONS)
CLOCK = 4_102_444_800.0  # 2100: no simulated event is in the future
LATENESS_MS = int(SETTINGS.kpi_lateness_s * 1000)


@functools.cache
def simulated() -> tuple[bytes, ...]:
    """Events of 150 users over 12 days, with client retries and malformed records."""
    config = SimulationConfig(users=150, days=12, seed=5, duplicate_rate=0.02, bad_rate=0.01)
    return tuple(value for _, value in Simulator(config).records())


def shuffled(values: Iterable[bytes], share: float, seed: int) -> list[bytes]:
    """``share`` of the valid events moved later in arrival, by less than the lateness."""
    decoder = EventDecoder(clock=lambda: CLOCK)
    rng = random.Random(seed)
    keyed = []
    for i, value in enumerate(values):
        event = decoder.decode(value)
        ts = event.ts_ms if isinstance(event, Event) else keyed[-1][0] if keyed else 0
        delay = rng.randrange(LATENESS_MS // 2) if rng.random() < share else 0
        keyed.append((ts + delay, i, value))
    return [value for _, _, value in sorted(keyed)]


def with_closers(values: list[bytes]) -> list[bytes]:
    """One event on every partition ten days after the last: every window closes."""
    decoder = EventDecoder(clock=lambda: CLOCK)
    last = max(e.ts_ms for v in values if isinstance(e := decoder.decode(v), Event))
    closers: dict[int, bytes] = {}
    n = 0
    while len(closers) < PARTITIONS:
        user = f"closer-{n}"
        n += 1
        partition = partition_for(user.encode(), PARTITIONS)
        if partition not in closers:
            event = Event(f"close-{user}", "search", user, last + 10 * DAY_MS, query="x")
            closers[partition] = encode_event(event)
    return values + list(closers.values())


def input_records(values: list[bytes]) -> list[tuple[bytes | None, bytes, int, int]]:
    """``(key, value, partition, offset)`` as the workers read them."""
    decoder = EventDecoder(clock=lambda: CLOCK)
    offsets = [0] * PARTITIONS
    records = []
    for value in values:
        event = decoder.decode(value)
        key = event.user_id.encode() if isinstance(event, Event) else None
        partition = partition_for(key, PARTITIONS) if key else 0
        records.append((key, value, partition, offsets[partition]))
        offsets[partition] += 1
    return records


class Worker:
    """The worker's commit discipline around a processor, with a dict as its store."""

    def __init__(
        self,
        store: dict[bytes, bytes],
        committed: dict[int, int],
        *,
        settings: Settings = SETTINGS,
        experiments: Iterable[object] = (),
    ) -> None:
        self.store = store  # what the changelog holds: user states and KPI marks
        self.committed = committed  # per partition, the next offset to read
        self.processor = Processor(settings, clock=lambda: CLOCK)
        self.processor.load_experiments(experiments)
        self.partials: list[bytes] = []
        processor = self.processor
        for partition in range(PARTITIONS):
            mark = store.get(kpi_mark_key(partition))
            processor.restore_kpis(partition, read_kpi_mark(mark) if mark else -1)
        for key, data in store.items():
            if not key.startswith(KPI_MARK_PREFIX):
                processor.adopt(processor.decode_state(key.decode(), data))

    def run(self, records: list[tuple[bytes | None, bytes, int, int]], *, commit_every: int,
            crash_at: int | None = None, rng: random.Random | None = None) -> bool:  # fmt: skip
        """Process from the committed offsets; False if it crashed at record ``crash_at``."""
        processor = self.processor
        todo = [r for r in records if r[3] >= self.committed.get(r[2], 0)]
        for n, (key, value, partition, offset) in enumerate(todo, start=1):
            processor.process(value, key=key, partition=partition, offset=offset)
            self.partials += [o.value for o in processor.take_outbox() if o.kind == "kpi_partial"]
            if crash_at is not None and n == crash_at:
                self.write_back(share=rng.random() if rng else 0.5, rng=rng)  # then killed
                return False
            if n % commit_every == 0 or n == len(todo):
                self.write_back()
                for _, _, partition_, offset_ in todo[:n]:
                    self.committed[partition_] = max(self.committed.get(partition_, 0),
                                                     offset_ + 1)  # fmt: skip
        return True

    def write_back(self, share: float = 1.0, rng: random.Random | None = None) -> None:
        """Marks, then the changed states; a crash writes only ``share`` of the states."""
        processor = self.processor
        for partition, closed_ms in processor.take_kpi_marks():
            self.store[kpi_mark_key(partition)] = kpi_mark(closed_ms)
            processor.kpi_mark_stored(partition, closed_ms)
        users = sorted(processor.take_dirty_users())
        if rng is not None:
            rng.shuffle(users)
        for user_id, _, data in processor.states_of(users[: int(len(users) * share)]):
            self.store[user_id.encode()] = data


def crashed_twice(
    records: list[tuple[bytes | None, bytes, int, int]],
    seed: int,
    *,
    settings: Settings = SETTINGS,
    experiments: Iterable[object] = (),
) -> tuple[list[bytes], Worker]:
    """The partials of a run killed twice mid write-back and restarted; and a clean run.

    The kills come at random records (of ``seed``); each restart replays from the committed
    offsets with the states stored, some users stored ahead of the others.
    """
    rng = random.Random(seed)
    store: dict[bytes, bytes] = {}
    committed: dict[int, int] = {}
    partials: list[bytes] = []
    for crash_at in (rng.randrange(3_000, 20_000), rng.randrange(3_000, 20_000), None):
        run = Worker(store, committed, settings=settings, experiments=experiments)
        run.run(records, commit_every=700, crash_at=crash_at, rng=rng)
        partials += run.partials
    clean = Worker({}, {}, settings=settings, experiments=experiments)
    clean.run(records, commit_every=700)
    return partials, clean
