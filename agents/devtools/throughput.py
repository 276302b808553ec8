"""Throughput of ottscore and of its baselines over one synthetic workload, and state size.

The figures of ``ottscore bench`` that count events per second (:mod:`agents.devtools.bench` puts
them together): a bare aiokafka consumer, a hand-written kafka-python loop around the
processor, the processor in-process, and real worker processes; plus the size of the
user states a worker wrote to its changelog.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTopicPartition
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from agents.devtools.produce import make_producer, publish_catalog
from agents.devtools.worker_process import WorkerError, WorkerProcess, free_port
from agents.worker.kafka import (
    admin_client,
    create_topics,
    kafka_python_config,
    output_topics,
    send_batches,
)
from pipeline.config import Settings
from pipeline.core.partitioning import partitioned
from pipeline.core.processor import Output, Processor
from pipeline.offline.runner import drive
from pipeline.sim.artworks import TAGS
from pipeline.sim.audience import DAY_MS
from pipeline.sim.simulate import SimulationConfig, Simulator

__all__ = [
    "Workload",
    "WorkerRun",
    "baseline_kafka_python_events_per_s",
    "core_events_per_s",
    "produce_fast",
    "raw_aiokafka_events_per_s",
    "run_workers",
    "state_bytes_per_user",
    "worker_settings",
]

EVENTS_PER_USER_DAY = 5.4
"""Mean events a simulated viewer emits per day (see :mod:`pipeline.sim.simulate`)."""

WRITE_BACK_EVERY = 10_000
"""Records between two state write-backs of the core run: the worker writes back as it
commits, which Faust does every 10,000 records acknowledged (``broker_commit_every``)
or every 2.8 s, whichever comes first."""

SEED = 7
"""Seed of the workload's simulation."""

WEEK_MS = 7 * DAY_MS

_STARTUP_TIMEOUT_S = 180.0
_STALL_TIMEOUT_S = 120.0
_POLL_S = 0.1


@dataclass(frozen=True)
class Workload:
    """A fixed synthetic workload: valid events in event-time order and the item catalog.

    ``records`` are ``(user_id key, event)`` pairs ending no later than now, so that no
    event is refused as stamped in the future. They start at a whole week of the epoch,
    so that one seed gives the same events at any hour: the viewers' hours and weekdays
    fall alike, and so do the scores (a run at another hour once published no risk signal).
    """

    records: list[tuple[bytes, bytes]]
    catalog: list[dict[str, Any]]

    @classmethod
    def simulate(cls, *, events: int, users: int, items: int, seed: int = SEED) -> Workload:
        """The first ``events`` records of a simulation of ``users`` viewers and ``items`` items."""
        days = max(1.0, 1.3 * events / (users * EVENTS_PER_USER_DAY))
        for _ in range(6):
            simulator = Simulator(
                SimulationConfig(
                    users=users,
                    days=days,
                    seed=seed,
                    catalog_size=items,
                    start_ms=int(time.time() * 1000 - days * DAY_MS) // WEEK_MS * WEEK_MS,
                )
            )
            records = list(islice(simulator.records(), events))
            if len(records) == events:
                return cls(records, simulator.catalog())
            days *= 2
        raise ValueError(f"{users} users do not make {events} events in {days:g} days")


def produce_fast(settings: Settings, records: Sequence[tuple[bytes, bytes]]) -> None:
    """Send ``records`` to the events topic in whole aiokafka batches (before any timing).

    ~10 times the rate of kafka-python's ``send`` per record, which the workers matched:
    two workers kept up with it, so no backlog built up and the run timed the producer.
    """
    asyncio.run(_produce_fast(settings, records))


async def _produce_fast(settings: Settings, records: Sequence[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        **kafka_python_config(settings),
        acks="all",
        max_batch_size=1024 * 1024,
        client_id="ottscore-bench-producer",
    )
    await producer.start()
    try:
        step = 50_000  # records in flight at once
        for start in range(0, len(records), step):
            sent = await send_batches(
                producer, settings.topic_events, records[start : start + step]
            )
            await asyncio.gather(*(batch for batch, _ in sent))
    finally:
        await producer.stop()


# --- measurements -----------------------------------------------------------------------


def raw_aiokafka_events_per_s(settings: Settings, total: int) -> float:
    """A bare aiokafka consumer reading the events topic from the start to its end."""
    return asyncio.run(_raw_aiokafka(settings, total))


async def _raw_aiokafka(settings: Settings, total: int) -> float:
    consumer = AIOKafkaConsumer(
        **kafka_python_config(settings), enable_auto_commit=False, client_id="ottscore-bench-raw"
    )
    await consumer.start()
    try:
        partitions = [
            AioTopicPartition(settings.topic_events, p) for p in range(settings.topic_partitions)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + _STALL_TIMEOUT_S + total / 1000
        count = 0
        started = time.perf_counter()
        while count < total:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                count += len(records)
            if time.monotonic() > deadline:
                raise TimeoutError(f"aiokafka read {count} of {total} records in time")
        return total / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def baseline_kafka_python_events_per_s(
    settings: Settings, catalog: list[dict[str, Any]], total: int
) -> float:
    """A hand-written kafka-python loop: process each record, publish outputs, write states."""
    processor = Processor(settings)
    processor.load_catalog(catalog)
    topics = output_topics(settings)
    states = f"{settings.app_id}-baseline-users"
    create_topics(
        kafka_python_config(settings),
        [],
        partitions=settings.topic_partitions,
        compacted=[states],
    )
    consumer = KafkaConsumer(
        **kafka_python_config(settings),
        enable_auto_commit=False,
        client_id="ottscore-bench-baseline",
    )
    producer = make_producer(settings, client_id="ottscore-bench-baseline")

    def publish(outputs: Sequence[Output]) -> None:
        for out in outputs:
            producer.send(topics[out.kind], key=out.key, value=out.value)

    def write(changed: Sequence[tuple[str, int, bytes]]) -> None:
        for user_id, partition, data in changed:
            producer.send(states, key=user_id.encode(), value=data, partition=partition)

    try:
        partitions = [
            TopicPartition(settings.topic_events, p) for p in range(settings.topic_partitions)
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + _STALL_TIMEOUT_S + total / 100
        count = 0
        started = time.perf_counter()
        while count < total:
            polled = [
                (r.key, r.value, r.partition, r.offset, r.timestamp)
                for records in consumer.poll(timeout_ms=500).values()
                for r in records
            ]
            drive(processor, polled, batch=len(polled) or 1, topic=settings.topic_events,
                  outputs=publish, states=write)  # fmt: skip
            count += len(polled)
            if time.monotonic() > deadline:
                raise TimeoutError(f"kafka-python processed {count} of {total} records in time")
        producer.flush()
        return total / (time.perf_counter() - started)
    finally:
        consumer.close()
        producer.close()


def with_artworks(
    catalog: Sequence[dict[str, Any]], counts: tuple[int, int] = (4, 10)
) -> list[dict[str, Any]]:
    """The catalog with ``counts[0]`` to ``counts[1]`` artworks per item, as the simulator's.

    >>> [len(item["artworks"]) for item in with_artworks([{"item_id": "a"}, {"item_id": "b"}])]
    [8, 8]
    """
    low, high = counts
    items = []
    for item in catalog:
        n = low + zlib.crc32(str(item["item_id"]).encode()) % (high - low + 1)
        artworks = [
            {"artwork_id": f"{item['item_id']}-a{k}", "tags": [TAGS[k % len(TAGS)]]}
            for k in range(n)
        ]
        items.append({**item, "artworks": artworks})
    return items


def bench_experiments(workload: Workload) -> list[dict[str, Any]]:
    """Two experiments running from the workload's first event, which every user joins.

    One shows half the users the trending list instead of the model's; the other gives half
    a 5-item list and other churn thresholds. Their cost is assignment (two hashes per
    user), the arms of each list and score, and the tags on every record.
    """
    start = orjson.loads(workload.records[0][1])["ts"]

    def experiment(name: str, knobs: dict[str, Any]) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "id": f"bench-{name}",
            "salt": f"bench-{name}",
            "start": start,
            "metrics": ["click_play_conversion"],
            "variants": [
                {"name": "control", "weight": 0.5, "control": True},
                {"name": name, "weight": 0.5, "knobs": knobs},
            ],
        }

    thresholds = {"medium": 0.2, "high": 0.5}
    return [
        experiment("trending", {"list_source": "trending"}),
        experiment("short", {"list_size": 5, "churn_thresholds": thresholds}),
    ]


def core_events_per_s(
    settings: Settings, workload: Workload, *, experiments: Sequence[object] = ()
) -> float:
    """The processor in-process over the workload, as the worker runs it.

    Outputs are taken every batch, states (serialised) every ``WRITE_BACK_EVERY`` records;
    ``experiments`` (definitions) run as a worker runs them.
    """
    processor = Processor(settings)
    processor.load_catalog(workload.catalog)
    processor.load_experiments(experiments)
    timestamp_ms = int(time.time() * 1000)
    records = [
        (key, value, partition, offset, timestamp_ms)
        for key, value, partition, offset in partitioned(
            workload.records, settings.topic_partitions
        )
    ]
    run = drive(
        processor,
        records,
        topic=settings.topic_events,
        write_back_every=WRITE_BACK_EVERY,
    )
    return run.events_per_s


@dataclass(frozen=True)
class WorkerRun:
    """What one run of :func:`run_workers` measured."""

    app_id: str
    events_per_s: float
    records_received: int
    peak_rss_bytes: int


def worker_settings(settings: Settings, workdir: Path, index: int) -> Settings:
    """``settings`` for worker ``index`` of a run: own data directory and free ports."""
    return settings.model_copy(
        update={
            "data_dir": workdir / f"{settings.app_id}-{index}",
            "metrics_port": free_port(),
            "worker_web_port": free_port(),
        }
    )


def _wait_for_group(settings: Settings, workers: Sequence[WorkerProcess]) -> None:
    """Wait until every worker is a member of the app's consumer group and it is stable."""
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    with admin_client(kafka_python_config(settings), timeout=10.0) as admin:
        while True:
            for worker in workers:
                worker.metrics()  # raises if it exited
            try:
                group = admin.describe_groups([settings.app_id]).get(settings.app_id) or {}
            except KafkaError:  # no coordinator yet (a new cluster creates its offsets topic)
                group = {}
            if group.get("group_state") == "Stable" and len(group["members"]) == len(workers):
                return
            if time.monotonic() > deadline:
                tails = "\n".join(worker.log_tail() for worker in workers)
                raise WorkerError(f"the workers did not form a stable group in time:\n{tails}")
            time.sleep(0.5)


def run_workers(settings: Settings, workload: Workload, *, count: int, workdir: Path) -> WorkerRun:
    """Run ``count`` workers of one app over ``workload``, on topics of their own; time them.

    The workers start on an empty events topic; once their consumer group is stable the
    workload is produced at once (faster than they consume, so a backlog builds up) and
    their metrics are polled every 0.1 s. The clock starts at the first poll in which every
    worker has received records and stops at the first that shows the whole workload taken
    in; the rate counts the records taken in between. Start-up, group join and production
    are out of the window; the producer is idle while it runs.
    """
    publish_catalog(settings, workload.catalog)  # creates the topics; workers read it at start
    total = len(workload.records)
    app_id = settings.app_id
    workers = [
        WorkerProcess(worker_settings(settings, workdir, n), workdir / f"{app_id}-{n}.log")
        for n in range(count)
    ]
    try:
        for worker in workers:
            worker.start()
        _wait_for_group(settings, workers)
        produce_fast(settings, workload.records)
        start: tuple[float, float] | None = None
        progress, progress_at = 0.0, time.monotonic()
        while True:
            time.sleep(_POLL_S)
            each = [worker.records_new() for worker in workers]
            taken, now = sum(each), time.monotonic()
            if start is None and all(each):
                start = (now, taken)
            if taken >= total:
                break
            if taken > progress:
                progress, progress_at = taken, now
            if now - progress_at > _STALL_TIMEOUT_S:
                tails = "\n".join(worker.log_tail() for worker in workers)
                raise WorkerError(
                    f"{count} worker(s) took {taken:.0f} of {total} records and then nothing "
                    f"for {_STALL_TIMEOUT_S:g} s:\n{tails}"
                )
        if start is None or start[1] >= total:
            raise WorkerError(
                f"{count} worker(s) took the whole workload before it could be timed: make it "
                "larger"
            )
        rate = (total - start[1]) / (now - start[0])
        received = sum(
            int(worker.metrics().get("ottscore_records_received_total", 0)) for worker in workers
        )
        peak = max(worker.peak_rss_bytes() for worker in workers)
    finally:
        for worker in workers:
            worker.stop()
    return WorkerRun(app_id, rate, received, peak)


def state_bytes_per_user(settings: Settings, app_id: str) -> float:
    """Mean size of the latest value of each key of the app's ``users`` changelog."""
    topic = f"{app_id}-users-changelog"
    consumer = KafkaConsumer(**kafka_python_config(settings), enable_auto_commit=False)
    latest: dict[bytes, int] = {}
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            raise WorkerError(f"no changelog topic {topic}")
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        deadline = time.monotonic() + _STALL_TIMEOUT_S  # without a record read
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end")
            polled = consumer.poll(timeout_ms=500)
            if polled:
                deadline = time.monotonic() + _STALL_TIMEOUT_S
            for records in polled.values():
                for r in records:
                    if r.value is None:
                        latest.pop(r.key, None)
                    else:
                        latest[r.key] = len(r.value)
    finally:
        consumer.close()
    return statistics.fmean(latest.values()) if latest else math.nan
