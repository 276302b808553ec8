"""Experiment results on the real broker: each look once on ``ott.experiments.results``.

An experiment is defined on the experiments topic before the worker starts; the worker's
partitions send their users' outcome changes with their KPI partials and its combining
agent publishes one result per experiment at each hour boundary every partition passed.
The records must be those of the same events run through the processor and the combiner
in-process (identical, each published once), which the unit tests hold equal to
``ottscore experiment report``; the Prometheus gauges show the latest.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from conftest import free_ports
from test_kpi_windows import PARTITIONS, simulated
from worker_process import WorkerProcess, produce_all, read_topic, sum_samples

from agents.experiments import create
from pipeline.config import Settings
from pipeline.core.events import format_ts
from pipeline.core.partitioning import partition_for
from pipeline.core.processor import Processor
from pipeline.experiments.live_results import ResultsCombiner
from pipeline.kpis.windows import DAY_MS
from pipeline.sim.simulate import SimulationConfig

DEFINITION = {
    "schema_version": 1,
    "id": "rail-live",
    "salt": "rail-live-salt",
    "start": format_ts(SimulationConfig(users=1, days=1, seed=0).start_ms + DAY_MS),
    "metrics": ["click_play_conversion", "watch_seconds_per_user"],
    "variants": [
        {"name": "control", "weight": 0.5, "control": True},
        {"name": "trending", "weight": 0.5, "knobs": {"list_source": "trending"}},
    ],
}


def in_process(settings: Settings, records: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """The result records of the same events through the processor and the combiner."""
    processor = Processor(settings, clock=lambda: 4_102_444_800.0)
    processor.load_experiments([DEFINITION])
    offsets: dict[int, int] = defaultdict(int)
    combiner = ResultsCombiner(PARTITIONS)
    results = []
    for key, value in records:
        partition = partition_for(key, PARTITIONS)
        processor.process(value, key=key, partition=partition, offset=offsets[partition])
        offsets[partition] += 1
        processor.take_dirty()
        for output in processor.take_outbox():
            if output.kind == "kpi_partial":
                partial = orjson.loads(output.value)
                results += combiner.feed(partial["partition"], partial["released_ms"],
                                         partial.get("outcomes", []),
                                         partial.get("experiments", {}))  # fmt: skip
    return results


def results_published(worker: WorkerProcess) -> float:
    """The result records the worker published (0 before its endpoint is up)."""
    try:
        return sum_samples(worker.samples(), "ottscore_experiment_results_published_total")
    except OSError:
        return 0.0


def test_each_look_is_published_once_as_the_in_process_run_gives_it(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(
        topic_partitions=PARTITIONS,
        metrics_port=free_ports(1)[0],
        experiment_window_s=2 * 86_400.0,
    )
    records, _ = simulated(users=80, days=9, seed=23)
    records = [(key, value) for key, value in records if key]  # keyless ones are dead letters
    want = in_process(settings, records)
    assert len(want) > 50 and want[-1]["results"][0]["users"] > 10
    create(settings, orjson.dumps(DEFINITION))
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        produce_all(settings, records)
        worker.wait_until(
            lambda: results_published(worker) >= len(want),
            timeout_s=180,
            what=f"{len(want)} experiment results",
        )
        samples = worker.samples()
    finally:
        assert worker.stop() == 0
    got = [orjson.loads(r.value) for r in read_topic(settings, settings.topic_experiment_results)]
    assert {r.key for r in read_topic(settings, settings.topic_experiment_results)} == {
        b"rail-live"
    }
    assert got == want  # each look once, in order, to the bit
    last = want[-1]
    gauges = {dict(labels).get("variant"): value for (name, labels), value in samples.items()
              if name == "ottscore_experiment_users"}  # fmt: skip
    assert gauges == {k: float(v) for k, v in last["users"].items()}
    p_values = {
        (dict(labels)["metric"], dict(labels)["variant"]): value
        for (name, labels), value in samples.items()
        if name == "ottscore_experiment_p_value"
    }
    assert p_values == {(r["metric"], r["variant"]): r["p_value"] for r in last["results"]}
