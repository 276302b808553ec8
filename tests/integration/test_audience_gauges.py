"""Audience gauges on the real broker: per genre, the counts the same events give in-process.

The worker reads the catalog topic, takes the events, and counts the audiences of every
catalog genre over its users (``ottscore_audience_users{genre, audience}``, counts only);
once it has caught up, the gauges must equal :func:`~pipeline.core.audiences.sizes_by_genre`
over the users of the same records run through the processor in-process.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import free_ports
from worker_process import WorkerProcess, produce_all

from agents.devtools.produce import publish_catalog
from pipeline.config import Settings
from pipeline.core.audiences import AudienceRules, sizes_by_genre
from pipeline.core.partitioning import partition_for
from pipeline.core.processor import Processor
from pipeline.sim.simulate import SimulationConfig, Simulator


def in_process(settings: Settings, simulator: Simulator) -> dict[tuple[str, str], float]:
    settings = settings.model_copy(update={"user_cache_max": 0})  # every user held
    processor = Processor(settings, clock=lambda: 4_102_444_800.0)
    catalog = list(simulator.catalog())
    processor.load_catalog(catalog)
    offsets: dict[int, int] = defaultdict(int)
    for key, value in simulator.records():
        partition = partition_for(key, settings.topic_partitions)
        processor.process(value, key=key, partition=partition, offset=offsets[partition])
        offsets[partition] += 1
    genres = sorted({g for item in catalog for g in item.get("genres") or ()})
    rules = AudienceRules(settings.audience_active_days, settings.audience_fan_share)
    at_ms = processor.timers.latest()
    assert at_ms is not None
    sizes = sizes_by_genre(processor.users.values(), genres, at_ms=at_ms, rules=rules)
    return {key: float(size) for key, size in sizes.items()}


@pytest.mark.parametrize("cache_max", [0, 20])
def test_the_audience_gauges_count_what_the_events_give(
    settings_factory: Callable[..., Settings], tmp_path: Path, cache_max: int
) -> None:
    """Also with a cache of 20 users: the evicted ones count as stored."""
    settings = settings_factory(
        metrics_port=free_ports(1)[0],
        audience_refresh_s=0.5,
        user_cache_max=cache_max,
        store="rocksdb://" if cache_max else "memory://",
    )
    simulator = Simulator(SimulationConfig(users=150, days=20, seed=8))
    want = in_process(settings, simulator)
    assert sum(v for (_, audience), v in want.items() if audience == "lapsed") > 0
    publish_catalog(settings, simulator.catalog())
    records = list(simulator.records())
    produce_all(settings, records)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_received(len(records))

        def gauges() -> dict[tuple[str, str], float]:
            return {
                (dict(labels)["genre"], dict(labels)["audience"]): value
                for (name, labels), value in worker.samples().items()
                if name == "ottscore_audience_users"
            }

        worker.wait_until(lambda: gauges() == want, timeout_s=30, what="the audience gauges")
    finally:
        assert worker.stop() == 0
    fans = {genre: v for (genre, audience), v in want.items() if audience == "fans"}
    print(f"\naudiences: fans per genre {fans}")
