"""The workers' KPI windows, added up by the combiner, are the batch count of the file.

Whatever the arrival order within the lateness; and a restart from the stored states at any
point publishes nothing different.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.worker.ingest import KPI_MARK_PREFIX, kpi_mark, kpi_mark_key, read_kpi_mark
from pipeline.config import Settings
from pipeline.core.events import Event, EventDecoder, encode_event
from pipeline.core.partitioning import partition_for
from pipeline.core.processor import Processor
from pipeline.kpis.combine import KpiCombiner
from pipeline.kpis.windows import DAY_MS, RETURN_MS, WINDOWS
from pipeline.offline.kpis import kpis_of_file
from pipeline.sim.simulate import SimulationConfig, Simulator, write_jsonl

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

    def __init__(self, store: dict[bytes, bytes], committed: dict[int, int]) -> None:
        self.store = store  # what the changelog holds: user states and KPI marks
        self.committed = committed  # per partition, the next offset to read
        self.processor = Processor(SETTINGS, clock=lambda: CLOCK)
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


def combined(partials: list[bytes]) -> dict[str, dict[str, Any]]:
    """The KPI records the combiner gives, by key; a key given twice must be identical."""
    combiner = KpiCombiner(PARTITIONS)
    given: dict[str, dict[str, Any]] = {}
    for value in partials:
        for record in combiner.feed(orjson.loads(value)):
            assert given.setdefault(record["key"], record) == record, record["key"]
    return given


def batch(values: list[bytes], tmp_path: Path) -> dict[str, dict[str, Any]]:
    """``ottscore kpis`` of the same records (sorted by event time), by key."""
    path = tmp_path / "events.jsonl"
    write_jsonl(((b"", v) for v in values), path)
    windows, returns, late = kpis_of_file(path, settings=SETTINGS, partitions=PARTITIONS)
    assert late == 0
    return {r["key"]: r for r in windows + returns}


def assert_equal_records(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        if isinstance(value, float):
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
        else:
            assert got[name] == value, name


def assert_live_equals_batch(live: dict[str, dict], expected: dict[str, dict]) -> None:
    """Every window the combiner gave is the batch's; every batch window closed is given."""
    assert live, "no KPI record was given"
    for key, record in live.items():
        assert_equal_records(record, expected[key])
    missing = set(expected) - set(live)
    # only the windows of the closing events themselves (ten days on) stay open
    assert all(expected[key]["active_users"] <= PARTITIONS for key in missing), sorted(missing)
    assert {r["window"] for r in live.values()} == {"hour", "day", "return_7d"}


def test_the_combined_records_are_the_batch_count_of_the_file(tmp_path: Path) -> None:
    values = with_closers(list(simulated()))
    worker = Worker({}, {})
    assert worker.run(input_records(values), commit_every=500)
    assert_live_equals_batch(combined(worker.partials), batch(values, tmp_path))


def test_events_shuffled_within_the_lateness_give_the_same_records(tmp_path: Path) -> None:
    values = with_closers(shuffled(simulated(), 0.05, seed=3))
    assert values != with_closers(list(simulated()))
    worker = Worker({}, {})
    assert worker.run(input_records(values), commit_every=500)
    assert worker.processor.tally.kpi_late == 0
    assert_live_equals_batch(combined(worker.partials), batch(values, tmp_path))


@pytest.mark.parametrize("seed", range(1, 7))
def test_a_crash_mid_write_back_and_a_restart_publish_the_same_windows(
    seed: int, tmp_path: Path
) -> None:
    """Killed twice while writing states back; the restarts replay from the committed offsets.

    Some users are stored ahead of the others, and the offsets are not committed.
    """
    values = with_closers(shuffled(simulated(), 0.05, seed=seed))
    records = input_records(values)
    rng = random.Random(seed)
    store: dict[bytes, bytes] = {}
    committed: dict[int, int] = {}
    partials: list[bytes] = []
    for crash_at in (rng.randrange(3_000, 20_000), rng.randrange(3_000, 20_000), None):
        worker = Worker(store, committed)
        worker.run(records, commit_every=700, crash_at=crash_at, rng=rng)
        partials += worker.partials
    clean = Worker({}, {})
    clean.run(records, commit_every=700)
    assert combined(partials) == combined(clean.partials)
    assert_live_equals_batch(combined(partials), batch(values, tmp_path))


def test_a_window_is_given_by_the_first_record_of_its_partition_past_its_close() -> None:
    """Its end plus the 30 minutes of conversion, plus the lateness (in ``released_ms``)."""
    values = with_closers(list(simulated()))
    worker = Worker({}, {})
    worker.run(input_records(values), commit_every=500)
    follow = int(max(SETTINGS.session_gap_s, 600) * 1000)
    previous: dict[int, int] = {}
    given = 0
    for value in worker.partials:
        record = orjson.loads(value)
        before = previous.get(record["partition"], -1)
        for window in record["windows"]:
            close = window["start_ms"] + WINDOWS[window["window"]] + follow
            assert before < close <= record["released_ms"]
            given += 1
        for back in record["returns"]:
            assert before < back["start_ms"] + DAY_MS + RETURN_MS <= record["released_ms"]
        previous[record["partition"]] = record["released_ms"]
    assert given > 500
