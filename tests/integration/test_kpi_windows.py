"""KPI windows on the real broker: every window once on ``ott.kpis``, equal to the batch count.

The worker's partitions publish their closed windows to the partials topic; its combining
agent adds them up and publishes each window once every partition has closed it. The
records must equal ``ottscore kpis`` over the same file (counts exact, ratios to 1e-9),
each window exactly once in a clean run, a partial record of a partition the events topic
does not have refused; after a ``kill -9`` in the middle of a state
write-back, every window is there, and a window published twice is the same record.
"""

from __future__ import annotations

import signal
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import free_ports
from worker_process import WorkerProcess, produce_all, read_topic, sum_samples

from agents.devtools.produce import make_producer
from pipeline.config import Settings
from pipeline.core.events import Event, EventDecoder, encode_event, format_ts
from pipeline.core.partitioning import partition_for
from pipeline.kpis.windows import DAY_MS, HOUR_MS
from pipeline.offline.kpis import kpis_of_file
from pipeline.sim.simulate import SimulationConfig, Simulator, write_jsonl

PARTITIONS = 3


def simulated(users: int, days: int, seed: int) -> tuple[list[tuple[bytes, bytes]], str]:
    """The records, and the event time from which windows hold only the closing events.

    One event per partition 8 days after the last closes every window.
    """
    config = SimulationConfig(users=users, days=days, seed=seed, duplicate_rate=0.01,
                              bad_rate=0.005)  # fmt: skip
    records = list(Simulator(config).records())
    decoder = EventDecoder()
    last = max(e.ts_ms for _, v in records if isinstance(e := decoder.decode(v), Event))
    closers: dict[int, tuple[bytes, bytes]] = {}
    n = 0
    while len(closers) < PARTITIONS:
        user = f"closer-{n}"
        n += 1
        at = last + 8 * DAY_MS + HOUR_MS
        event = Event(f"close-{n}", "search", user, at, query="x")
        record = (user.encode(), encode_event(event))
        closers.setdefault(partition_for(user.encode(), PARTITIONS), record)
    return records + list(closers.values()), format_ts(last + 1)


def expected(records: list[tuple[bytes, bytes]], before: str, tmp_path: Path,
             settings: Settings) -> dict[str, dict[str, Any]]:  # fmt: skip
    """``ottscore kpis`` of the file, but the closing events' own windows."""
    path = tmp_path / "events.jsonl"
    write_jsonl(records, path)
    windows, returns, late = kpis_of_file(path, settings=settings, partitions=PARTITIONS)
    assert late == 0
    return {r["key"]: r for r in windows + returns if r["start"] < before}


def published(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Every record of the KPI topic, by key, in the order published."""
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in read_topic(settings, settings.topic_kpis):
        value = orjson.loads(record.value)
        assert record.key.decode() == value["key"]
        by_key[value["key"]].append(value)
    return by_key


def assert_equal(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys(), got["key"]
    for name, value in want.items():
        if isinstance(value, float):
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-9), (got["key"], name)
        else:
            assert got[name] == value, (got["key"], name)


def windows_published(worker: WorkerProcess) -> float:
    """The KPI records the worker published (0 before its endpoint is up)."""
    try:
        return sum_samples(worker.samples(), "ottscore_kpi_records_published_total")
    except OSError:
        return 0.0


def wait_for_windows(worker: WorkerProcess, count: int) -> None:
    worker.wait_until(
        lambda: windows_published(worker) >= count,
        timeout_s=180, what=f"{count} KPI records",
    )  # fmt: skip


def test_each_window_is_published_once_and_equals_the_batch_count(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(topic_partitions=PARTITIONS, metrics_port=free_ports(1)[0])
    records, before = simulated(users=80, days=9, seed=21)
    want = expected(records, before, tmp_path, settings)
    # first on the partials topic, a record of a partition the events topic does not have:
    # taken, every window would wait for that partition's release forever
    producer = make_producer(settings)
    stray = {"partition": 10**9, "released_ms": 0, "follow_ms": 0, "windows": [], "returns": []}
    producer.send(settings.topic_kpi_partials, key=b"1000000000", value=orjson.dumps(stray))
    producer.flush()
    producer.close()
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        produce_all(settings, records)
        wait_for_windows(worker, len(want))
        samples = worker.samples()
    finally:
        assert worker.stop() == 0
    got = published(settings)
    assert got.keys() == want.keys()
    assert all(len(values) == 1 for values in got.values()), "a window published twice"
    for key, values in got.items():
        assert_equal(values[0], want[key])
    kinds = {dict(labels)["window"]: v for (name, labels), v in samples.items()
             if name == "ottscore_kpi_records_published_total"}  # fmt: skip
    assert kinds["hour"] > 0 and kinds["day"] > 0 and kinds["return_7d"] > 0


@pytest.mark.slow
def test_after_a_kill_mid_write_back_every_window_is_there_and_a_repeat_is_identical(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    records, before = simulated(users=80, days=9, seed=22)
    killed = settings_factory(
        topic_partitions=PARTITIONS, metrics_port=free_ports(1)[0],
        fault_crash_at="changelog_handed:1",
    )  # fmt: skip
    want = expected(records, before, tmp_path, killed)
    first = WorkerProcess(killed, tmp_path / "worker-1.log").start()
    half = len(records) // 2
    produce_all(killed, records[:half])  # killed in its first write-back of states
    first.wait_until(lambda: first.process.poll() is not None, timeout_s=120,
                     what="the fault to kill the worker")  # fmt: skip
    assert first.process.returncode == -signal.SIGKILL
    settings = killed.model_copy(update={"fault_crash_at": ""})
    second = WorkerProcess(settings, tmp_path / "worker-2.log").start()
    try:
        produce_all(settings, records[half:])
        second.wait_until(lambda: len(published(settings)) >= len(want), timeout_s=180,
                          what="every window")  # fmt: skip
    finally:
        assert second.stop() == 0
    got = published(settings)
    assert got.keys() == want.keys()
    repeated = 0
    for key, values in got.items():
        repeated += len(values) > 1
        for value in values:
            assert_equal(value, want[key])
    print(f"\n{len(got)} windows, {repeated} published again after the kill")
