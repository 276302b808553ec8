"""The bench's Quix Streams application publishes what the core publishes, and every state."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable

from worker_process import latest_by_key, read_topic

from agents.devtools.quix import quix_events_per_s
from agents.devtools.throughput import Workload, produce_fast
from agents.worker.kafka import output_topics
from pipeline.config import Settings
from pipeline.core.processor import Processor
from pipeline.offline.runner import drive

EVENTS = 6_000


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
    inputs = read_topic(settings, settings.topic_events)
    core = Processor(settings)
    core.load_catalog(workload.catalog)
    published: Counter[tuple[str, bytes | None, bytes]] = Counter()
    states: dict[str, bytes] = {}
    drive(
        core,
        [(r.key, r.value, r.partition, r.offset, r.timestamp) for r in inputs],
        topic=settings.topic_events,
        outputs=lambda outs: published.update((o.kind, o.key, o.value) for o in outs),
        states=lambda changed: states.update((user, data) for user, _, data in changed),
    )
    for kind, topic in output_topics(settings).items():
        quix = Counter((kind, r.key, r.value) for r in read_topic(settings, topic))
        assert quix == Counter({k: n for k, n in published.items() if k[0] == kind}), kind
    # every kind but dead letters is there to be compared (the workload's events are valid),
    # and shared learning's deltas (off, as by default)
    assert {kind for kind, _, _ in published} == set(output_topics(settings)) - {"dlq", "learning"}

    latest = latest_by_key(read_topic(settings, f"{settings.app_id}-quix-users"))
    assert {key.decode(): value for key, value in latest.items()} == states
