"""The bench's Quix Streams application publishes what the core publishes, and every state."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition

from agents.devtools.quix import quix_events_per_s
from agents.devtools.throughput import Workload, produce_fast
from agents.worker.kafka import kafka_python_config, output_topics
from pipeline.config import Settings
from pipeline.core.processor import Processor
from pipeline.offline.runner import drive

EVENTS = 6_000


def _read(settings: Settings, topic: str) -> list[tuple[int, int, bytes, bytes, int]]:
    """``(partition, offset, key, value, timestamp)`` of every record of ``topic``."""
    consumer = KafkaConsumer(**kafka_python_config(settings), enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records = []
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for batch in consumer.poll(timeout_ms=1000).values():
                records += [(r.partition, r.offset, r.key, r.value, r.timestamp) for r in batch]
        return records
    finally:
        consumer.close()


def test_the_quix_application_publishes_the_cores_outputs_and_its_final_states(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(topic_partitions=3)
    workload = Workload.simulate(events=EVENTS, users=100, items=200)
    produce_fast(settings, workload.records)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    assert quix_events_per_s(settings, workload.catalog, EVENTS) > 0
    # Ctrl+C and SIGTERM act on the process again as before, not on the stopped application
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers

    # the same records, as the broker holds them, through the core in-process
    inputs = sorted(_read(settings, settings.topic_events))
    core = Processor(settings)
    core.load_catalog(workload.catalog)
    published: Counter[tuple[str, bytes | None, bytes]] = Counter()
    states: dict[str, bytes] = {}
    drive(
        core,
        [(key, value, partition, offset, ts) for partition, offset, key, value, ts in inputs],
        topic=settings.topic_events,
        outputs=lambda outs: published.update((o.kind, o.key, o.value) for o in outs),
        states=lambda changed: states.update((user, data) for user, _, data in changed),
    )
    for kind, topic in output_topics(settings).items():
        quix = Counter((kind, key, value) for _, _, key, value, _ in _read(settings, topic))
        assert quix == Counter({k: n for k, n in published.items() if k[0] == kind}), kind
    # every kind but dead letters is there to be compared (the workload's events are valid)
    assert {kind for kind, _, _ in published} == set(output_topics(settings)) - {"dlq"}

    latest = {key.decode(): value for *_, key, value, _ in sorted(
        _read(settings, f"{settings.app_id}-quix-users")
    )}  # fmt: skip
    assert latest == states
