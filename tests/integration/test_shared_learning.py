"""Shared learning on the real broker: deltas out, merges into every partition, replays agree.

The worker publishes each partition's learning per epoch to the learning topic; its merger
writes each partition of the events topic what the others learnt; the partitions fold it
where it sits in their log. A replay of the events topic (merges included) through one
in-process processor must then give every score the worker published, value for value
(what a partition publishes depends on when the worker's other partitions made it publish;
its scores do not).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import orjson
from conftest import free_ports
from kafka.consumer.fetcher import ConsumerRecord
from worker_process import WorkerProcess, produce_all, read_topic, sum_samples

from agents.worker.kafka import output_topics
from pipeline.config import Settings
from pipeline.core.processor import Processor
from pipeline.models.exchange import CONTROL_KEY
from pipeline.sim.simulate import SimulationConfig, Simulator

DAY_MS = 86_400_000


def _by_key(records: Iterable[ConsumerRecord]) -> dict[bytes, list[bytes]]:
    grouped: dict[bytes, list[bytes]] = {}
    for record in records:
        grouped.setdefault(record.key, []).append(record.value)
    return grouped


def _merges(settings: Settings) -> int:
    """Merge records in the events topic."""
    return sum(r.key == CONTROL_KEY for r in read_topic(settings, settings.topic_events))


def test_the_workers_partitions_fold_each_others_learning_and_a_replay_gives_every_score(
    settings_factory, tmp_path: Path
) -> None:
    settings = settings_factory(
        metrics_port=free_ports(1)[0],
        share_every_s=3600,
        share_merge_within_s=0.1,
        snapshot_key="shared-test-key",
    )
    records = list(Simulator(SimulationConfig(users=120, days=4, seed=4)).records())
    # quarters of days: each slice is produced once the merges of the one before are in
    days = [orjson.loads(value)["ts"][:13] for _, value in records]
    days = [f"{day[:10]} {int(day[11:13]) // 6}" for day in days]
    sent = merged_before = sent_before = 0
    runs = []  # the last samples of each worker process
    worker = WorkerProcess(settings, tmp_path / "worker-1.log").start()
    try:
        for n, day in enumerate(sorted(set(days))):  # a slice at a time: merges land between
            if n == 8:  # a restart: the next process goes on from the snapshots
                runs.append(worker.samples())
                assert worker.stop() == 0
                sent_before, merged_before = sent, _merges(settings)
                worker = WorkerProcess(settings, tmp_path / "worker-2.log").start()
            sent += produce_all(
                settings, [r for r, d in zip(records, days, strict=True) if d == day]
            )

            def settled(
                worker: WorkerProcess = worker,
                sent: int = sent - sent_before,
                merged_before: int = merged_before,
            ) -> bool:
                try:
                    samples = worker.samples()
                except OSError:  # the endpoint is not up yet
                    return False
                folded = sum_samples(samples, "ottscore_learning_records_total")
                events = sum_samples(samples, "ottscore_records_received_total") - folded
                return events >= sent and folded == _merges(settings) - merged_before

            worker.wait_until(settled, timeout_s=120, what=f"processing {day}")
            time.sleep(0.5)  # the merger writes what arrived within OTTSCORE_SHARE_MERGE_WITHIN_S
            worker.wait_until(settled, timeout_s=120, what=f"folding the merges of {day}")
        runs.append(worker.samples())
    finally:
        assert worker.stop() == 0

    def total(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return sum(run.get(key, 0.0) if labels else sum_samples(run, name) for run in runs)

    log = read_topic(settings, settings.topic_events)
    merges = [r for r in log if r.key == CONTROL_KEY]
    assert {r.partition for r in merges} == set(range(settings.topic_partitions))
    assert total("ottscore_learning_records_total", outcome="folded") == len(merges)
    assert total("ottscore_learning_merges_total") >= len(set(days)) - 1
    assert total("ottscore_events_rejected_total") == 0
    published = read_topic(settings, settings.topic_learning)
    assert len(published) == total("ottscore_learning_published_total") > 4 * 24
    # with the key, every delta and merge ends with its signature (exchange.sign)
    assert all(r.value[-75:].startswith(b',"hmac":"') for r in [*merges, *published])

    replay = Processor(settings)
    outputs: dict[tuple[str, bytes], list[bytes]] = {}
    for record in log:  # partition by partition, in offset order
        replay.process(
            record.value,
            key=record.key,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
        )
        for output in replay.take_outbox():
            outputs.setdefault((output.kind, output.key), []).append(output.value)
    topics = output_topics(settings)
    for kind in ("personalization", "churn"):
        live = _by_key(read_topic(settings, topics[kind]))
        assert live, kind
        assert live == {key: values for (k, key), values in outputs.items() if k == kind}, kind

    # the merges changed the lists: the same events without them give others
    alone = Processor(settings.model_copy(update={"share_every_s": 0.0}))
    changed = 0
    lists = {key: values for (k, key), values in outputs.items() if k == "personalization"}
    without: dict[bytes, list[bytes]] = {}
    for record in log:
        if record.key != CONTROL_KEY:
            alone.process(
                record.value, key=record.key, partition=record.partition, offset=record.offset
            )
        for output in alone.take_outbox():
            if output.kind == "personalization":
                without.setdefault(output.key, []).append(output.value)
    changed = sum(without[key] != lists[key] for key in without)
    assert changed > len(without) // 2
