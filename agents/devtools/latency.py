"""Event → score latency of a running worker at a fixed offered load, matched record by record.

A producer thread sends input records at a fixed rate (wall clock read just before each
``send``); the calling thread reads the output topics and notes when each output record
arrives. Every output is then matched to the exact input record that caused it:

- a **personalisation** list carries the event time ``ts`` of the user's event that
  produced it: the input with the same ``(user_id, ts)``;
- a **churn** score (and a **signal**) is made when the event-time watermark of the user's
  input partition passes the end of the session (its ``ts``): the input that moved the
  watermark there is the first one sent to that partition with an event time at or after
  ``ts`` (inputs are sent in event-time order, so a bisection finds it).

Latency is arrival at the output consumer minus send time of that input, both on this
machine's clock: what a downstream consumer on the same network would see.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from agents.devtools.produce import make_producer
from agents.devtools.worker_process import WorkerError, wait_for
from agents.worker.kafka import kafka_python_config, output_topics
from pipeline.config import Settings
from pipeline.core.events import parse_ts
from pipeline.core.outputs import SCORED_KINDS

__all__ = ["LatencyResult", "measure_latency"]


_DRAIN_TIMEOUT_S = 60.0
_SETTLE_S = 2.0


@dataclass(frozen=True)
class LatencyResult:
    """What :func:`measure_latency` found.

    Attributes
    ----------
    p50_s, p99_s
        Median and 99th percentile of the matched latencies (exact, from every sample).
    outputs
        Score records matched to their input (the samples).
    unmatched
        Score records whose input could not be found (expected: 0).
    sent
        Input records sent at the offered load (warm-up excluded).
    offered_rate
        Records per second actually sent.
    """

    p50_s: float | None
    p99_s: float | None
    outputs: int
    unmatched: int
    sent: int
    offered_rate: float


@dataclass
class _Progress:
    """How far the producer thread got: records sent (warm-up included) and for how long."""

    sent: int
    seconds: float = 0.0


@dataclass
class _Inputs:
    """The inputs of a latency run: event keys, send times and partitions, by index."""

    user_ids: list[str]
    ts_ms: list[int]
    sent_at: list[float]
    partition: list[int]

    @classmethod
    def of(cls, records: Sequence[tuple[bytes, bytes]]) -> _Inputs:
        return cls(
            [key.decode() for key, _ in records],
            [parse_ts(orjson.loads(value)["ts"]) for _, value in records],
            [0.0] * len(records),
            [-1] * len(records),
        )


def _feed(
    producer: KafkaProducer,
    topic: str,
    records: Sequence[tuple[bytes, bytes]],
    inputs: _Inputs,
    *,
    start: int,
    rate: float,
    stop: threading.Event,
    progress: _Progress,
) -> None:
    """Send ``records[start:]`` at ``rate`` records/s, noting send time and partition."""

    def note_partition(index: int, metadata: Any) -> None:
        inputs.partition[index] = metadata.partition

    started = time.monotonic()
    for index in range(start, len(records)):
        if stop.is_set():
            break
        delay = started + (index - start) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        key, value = records[index]
        inputs.sent_at[index] = time.time()
        future = producer.send(topic, key=key, value=value)
        future.add_callback(note_partition, index)
        progress.sent = index + 1
    progress.seconds = time.monotonic() - started
    producer.flush()


def _match(
    outputs: Sequence[tuple[str, bytes, float]], inputs: _Inputs, *, first: int
) -> tuple[list[float], int]:
    """Latencies of the outputs ``(kind, value, arrived_at)`` caused by inputs from ``first`` on.

    Returns the latencies and the number of outputs with no input found.
    """
    by_event: dict[tuple[str, int], int] = {}
    user_partition: dict[str, int] = {}
    partition_ts: dict[int, list[int]] = defaultdict(list)
    partition_index: dict[int, list[int]] = defaultdict(list)
    for index, (user_id, ts_ms) in enumerate(zip(inputs.user_ids, inputs.ts_ms, strict=True)):
        partition = inputs.partition[index]
        if partition < 0:
            continue  # not sent
        by_event.setdefault((user_id, ts_ms), index)
        user_partition[user_id] = partition
        partition_ts[partition].append(ts_ms)
        partition_index[partition].append(index)
    latencies: list[float] = []
    unmatched = 0
    for kind, value, arrived_at in outputs:
        record = orjson.loads(value)
        user_id, ts_ms = record["user_id"], parse_ts(record["ts"])
        cause: int | None
        if kind == "personalization":
            cause = by_event.get((user_id, ts_ms))
        else:
            partition = user_partition.get(user_id, -1)
            at = bisect.bisect_left(partition_ts[partition], ts_ms)
            indices = partition_index[partition]
            cause = indices[at] if at < len(indices) else None
        if cause is None:
            unmatched += 1
        elif cause >= first:
            latencies.append(arrived_at - inputs.sent_at[cause])
    return latencies, unmatched


def measure_latency(
    settings: Settings,
    records: Sequence[tuple[bytes, bytes]],
    *,
    rate: float,
    warmup: int,
    records_taken: Callable[[], float],
) -> LatencyResult:
    """Offer ``records`` at ``rate`` to a running worker and measure event → score latency.

    Parameters
    ----------
    settings
        Settings of the worker (its topics must be fresh: outputs are read from the start).
    records
        ``(user_id key, event)`` pairs in event-time order.
    warmup
        The first ``warmup`` records are sent at once and waited for, so that the timed
        ones meet a worker that has joined its group and warmed up; they are not measured.
    rate
        Offered load, records per second.
    records_taken
        How many input records the worker has taken in so far (from its metrics).
    """
    inputs = _Inputs.of(records)
    topics = {name: kind for kind, name in output_topics(settings).items() if kind in SCORED_KINDS}
    consumer = KafkaConsumer(
        **kafka_python_config(settings),
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
        client_id="ottscore-bench-latency",
    )
    # one producer sends the warm-up and then the load: its connection and metadata are
    # ready before the clock starts (a fresh one delayed the first records ~0.2 s)
    producer = make_producer(settings, linger_ms=0, client_id="ottscore-bench-load")
    stop = threading.Event()
    progress = _Progress(sent=warmup)
    feeder = threading.Thread(
        target=_feed,
        args=(producer, settings.topic_events, records, inputs),
        kwargs={"start": warmup, "rate": rate, "stop": stop, "progress": progress},
        daemon=True,
    )
    outputs: list[tuple[str, bytes, float]] = []
    try:
        partitions = [
            TopicPartition(topic, p) for topic in topics for p in range(settings.topic_partitions)
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        _send_warmup(producer, settings.topic_events, records[:warmup], inputs)
        wait_for(
            lambda: records_taken() >= warmup,
            timeout_s=120.0,
            what=f"for the worker to take the {warmup} warm-up records",
            poll_s=0.2,
        )
        feeder.start()
        drain_deadline = settle_until = next_check = 0.0
        while not settle_until or time.monotonic() < settle_until:
            for tp, batch in consumer.poll(timeout_ms=50).items():
                arrived_at = time.time()
                outputs.extend((topics[tp.topic], r.value, arrived_at) for r in batch)
            now = time.monotonic()
            if feeder.is_alive() or settle_until or now < next_check:
                continue
            drain_deadline = drain_deadline or now + _DRAIN_TIMEOUT_S
            next_check = now + 0.5
            if records_taken() >= progress.sent:
                settle_until = now + _SETTLE_S  # outputs go out with the batch: a margin
            elif now > drain_deadline:
                raise WorkerError(f"the worker did not take all {progress.sent} records in time")
    finally:
        stop.set()
        feeder.join(timeout=30)
        producer.close()
        consumer.close()
    latencies, unmatched = _match(outputs, inputs, first=warmup)
    sent = progress.sent - warmup
    p50, p99 = np.percentile(latencies, [50, 99]).tolist() if latencies else (None, None)
    return LatencyResult(
        p50, p99, len(latencies), unmatched, sent, sent / max(progress.seconds, 1e-9)
    )


def _send_warmup(
    producer: KafkaProducer, topic: str, records: Sequence[tuple[bytes, bytes]], inputs: _Inputs
) -> None:
    for index, (key, value) in enumerate(records):
        inputs.sent_at[index] = time.time()
        inputs.partition[index] = producer.send(topic, key=key, value=value).get(30).partition
