"""Run ``ottscore worker`` as a real process in tests, and read what it wrote to Kafka."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client.parser import text_string_to_metric_families

from agents.devtools import worker_process
from agents.devtools.produce import make_producer
from agents.worker.ingest import KPI_MARK_PREFIX
from agents.worker.kafka import kafka_python_config, output_topics
from pipeline.config import Settings
from pipeline.core.events import EventDecoder, Rejection
from pipeline.core.processor import Output, Processor
from pipeline.offline.runner import drive

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class WorkerProcess(worker_process.WorkerProcess):
    """The project's worker process, logging at info, with what the tests read and assert.

    It adds labelled samples, health probes, waits that fail with the log tail, and a
    stop by any signal that fails when the worker ignores it.
    """

    def __init__(self, settings: Settings, log_path: Path) -> None:
        super().__init__(settings, log_path, loglevel="info")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int | None:
        """Signal the worker and wait for it to exit; its exit status."""
        assert self.process is not None
        if not self._signal_and_wait(sig, timeout_s):
            raise AssertionError(f"worker ignored signal {sig} for {timeout_s} s")
        return self.process.returncode

    def samples(self) -> Samples:
        """Every sample of the worker's Prometheus endpoint, by (name, labels)."""
        url = f"http://127.0.0.1:{self.settings.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def probe(self, path: str) -> tuple[int, dict]:
        """(HTTP status, JSON body) of the worker's ``/healthz`` or ``/readyz``."""
        url = f"http://127.0.0.1:{self.settings.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, orjson.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, orjson.loads(error.read())

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value (0 when absent or before the endpoint is up)."""
        try:
            return self.samples().get((name, frozenset(labels.items())), 0.0)
        except OSError:
            return 0.0

    def wait_until(self, condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"worker exited ({self.process.returncode}) while {what}:\n" + self.log_tail()
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s {what}:\n" + self.log_tail())
            time.sleep(0.2)

    def wait_received(self, count: int, *, timeout_s: float = 120.0) -> None:
        self.wait_until(
            lambda: self.metric("ottscore_records_received_total") >= count,
            timeout_s=timeout_s,
            what=f"waiting for {count} records",
        )


def sum_samples(samples: Samples, name: str) -> float:
    """The sum of every sample named ``name``, whatever its labels."""
    return sum(value for (sample, _), value in samples.items() if sample == name)


def labelled(samples: Samples, name: str, label: str) -> dict[str, float]:
    """``{label value: sample value}`` of the samples named ``name``."""
    return {
        dict(labels)[label]: value
        for (sample, labels), value in samples.items()
        if sample == name and value
    }


def produce_all(settings: Settings, records: Iterable[tuple[bytes | None, bytes]]) -> int:
    producer = make_producer(settings)
    count = 0
    for key, value in records:
        producer.send(settings.topic_events, key=key, value=value)
        count += 1
    producer.flush()
    producer.close()
    return count


def read_topic(settings: Settings, topic: str) -> list[ConsumerRecord]:
    """Every record of ``topic`` up to its current end, in partition then offset order."""
    consumer = KafkaConsumer(**kafka_python_config(settings), enable_auto_commit=False)
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = consumer.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def latest_by_key(records: Iterable[ConsumerRecord]) -> dict[bytes, bytes]:
    """The last value of each key (a compacted view of a changelog)."""
    latest: dict[bytes, bytes] = {}
    for record in records:
        if record.value is None:
            latest.pop(record.key, None)
        else:
            latest[record.key] = record.value
    return latest


def stored_states(settings: Settings) -> dict[str, bytes]:
    """The user states the worker's changelog holds, by user (its KPI marks left out)."""
    changelog = read_topic(settings, f"{settings.app_id}-users-changelog")
    return {
        key.decode(): value
        for key, value in latest_by_key(changelog).items()
        if not key.startswith(KPI_MARK_PREFIX)
    }


def expected_outcomes(records: list[tuple[bytes | None, bytes]]) -> tuple[Counter, Counter, int]:
    """What the worker must do with ``records``: consumed by type, rejected by reason, retries.

    Computed independently of the processor: a retry is an exact re-send of a valid record.
    """
    decoder = EventDecoder()
    consumed: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    seen: set[bytes] = set()
    retries = 0
    for _, value in records:
        if value in seen:
            retries += 1
            continue
        decoded = decoder.decode(value)
        if isinstance(decoded, Rejection):
            rejected[decoded.reason] += 1
        else:
            consumed[decoded.type] += 1
            seen.add(value)
    return consumed, rejected, retries


#: Scores whose identity (kind, user_id, ts) the events alone decide. Signals (risk-band
#: transitions) also depend on model weights, which a restart rolls back to a snapshot.
SCORED_KINDS = ("churn", "personalization")


def score_identity(kind: str, value: bytes) -> tuple[str, str, str]:
    """``(kind, user_id, ts)`` of a score record: which score it is, not what it says.

    A CRM trigger is named by its ``trigger_id`` instead of its time (two may share one).
    """
    record = orjson.loads(value)
    return kind, record["user_id"], record["trigger_id" if kind == "action" else "ts"]


def consent_records(settings: Settings) -> list[object]:
    """The consent topic's records as the worker reads them (JSON, or the bytes that are not)."""
    records: list[object] = []
    for record in read_topic(settings, settings.topic_consent):
        try:
            records.append(orjson.loads(record.value))
        except orjson.JSONDecodeError:
            records.append(bytes(record.value))
    return records


def reference_run(settings: Settings) -> tuple[dict[str, bytes], set[tuple[str, str, str]]]:
    """User states and score identities of one uninterrupted in-process run over the input."""
    scores: set[tuple[str, str, str]] = set()
    states: dict[str, bytes] = {}

    def score(outputs: Sequence[Output]) -> None:
        scores.update(score_identity(o.kind, o.value) for o in outputs if o.kind in SCORED_KINDS)

    records = read_topic(settings, settings.topic_events)
    processor = Processor(settings.model_copy(update={"user_cache_max": 0}))  # holds them all
    processor.load_consent(consent_records(settings))
    drive(
        processor,
        ((r.key, r.value, r.partition, r.offset, r.timestamp) for r in records),
        outputs=score,
        states=lambda changed: states.update((user, data) for user, _, data in changed),
    )
    return states, scores


def published_scores(settings: Settings) -> list[tuple[str, str, str]]:
    """Identity of every score record on the output topics (a replay may repeat one)."""
    topics = output_topics(settings)
    return [
        score_identity(kind, record.value)
        for kind in SCORED_KINDS
        for record in read_topic(settings, topics[kind])
    ]


def wait_committed(settings: Settings, timeout_s: float = 120.0) -> None:
    """Wait until the worker's group has committed the end offset of every input partition."""
    admin = KafkaAdminClient(**kafka_python_config(settings))
    consumer = KafkaConsumer(**kafka_python_config(settings))
    try:
        partitions = [
            TopicPartition(settings.topic_events, p)
            for p in consumer.partitions_for_topic(settings.topic_events)
        ]
        end = consumer.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        while True:
            committed = admin.list_group_offsets(settings.app_id).get(settings.app_id, {})
            if all(tp in committed and committed[tp].offset >= end[tp] for tp in partitions):
                return
            assert time.monotonic() < deadline, f"committed {committed}, end {end}"
            time.sleep(0.5)
    finally:
        consumer.close()
        admin.close()
