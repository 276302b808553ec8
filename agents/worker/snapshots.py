"""Model snapshots on Kafka: publish each partition's signed models, restore the latest valid.

A worker publishes the models of every input partition it owns to the compacted models
topic every ``snapshot_interval_s`` of wall-clock time, keyed ``<app_id>/p<partition>``.
When it is assigned a partition (at start or on a rebalance) it reads that key's
snapshots, newest first, and installs the first one that :func:`pipeline.serde.snapshots.unseal`
accepts; refused ones are logged and counted, and with none accepted the partition's
models start from scratch. See "Model snapshots" in ``docs/operations.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from agents.worker.kafka import kafka_python_config
from agents.worker.metrics import Metrics
from pipeline.config import Settings
from pipeline.serde.snapshots import SnapshotRefused, seal, unseal

__all__ = ["SnapshotWriter", "latest_snapshot", "snapshot_record_key"]

log = logging.getLogger(__name__)

#: Records per partition of the first window read back from the end of the models topic.
_FIRST_WINDOW = 8

#: Largest snapshot published by default: the broker's default ``message.max.bytes``
#: (1 MiB) less room for the record's key and batch overhead.
DEFAULT_MAX_BYTES = 1_000_000


def snapshot_record_key(app_id: str, partition: int) -> bytes:
    """The models-topic key of ``app_id``'s snapshots of input ``partition``.

    >>> snapshot_record_key("ottscore", 3)
    b'ottscore/p3'
    """
    return f"{app_id}/p{partition}".encode()


class SnapshotWriter:
    """Decides when a partition's models are due and seals and publishes them.

    Parameters
    ----------
    settings
        ``snapshot_key`` signs, ``snapshot_interval_s`` spaces the snapshots of each
        partition; an empty key disables snapshots (:meth:`due` is then always false).
    topic_sender
        Sends one record to the models topic, called as ``topic_sender(key, value,
        callback=..., on_refused=...)``: the ``callback`` to call once the broker
        acknowledged it, and ``on_refused`` when the topic refuses it for its size (it
        counts the refusal and sends nothing instead: the partition's previous snapshot
        stays the one to restore).
    metrics
        Where seal time, size, publications and the last publication time go.
    max_bytes
        Largest snapshot sent: the models topic's ``max.message.bytes`` and the producer's
        ``max_request_size`` must both allow it. A larger one is logged and not sent.

    Examples
    --------
    >>> from prometheus_client import CollectorRegistry
    >>> sent = []
    >>> writer = SnapshotWriter(
    ...     Settings(snapshot_key="s3cret", snapshot_interval_s=60),
    ...     topic_sender=lambda key, value, **_: sent.append((key, value)),
    ...     metrics=Metrics(CollectorRegistry()),
    ... )
    >>> writer.due(0, now_s=1000.0), writer.due(0, now_s=1059.0), writer.due(0, now_s=1060.0)
    (False, False, True)
    >>> writer.publish(0, {"model": "weights"}, offset=41, now_s=1060.0)
    >>> sent[0][0], writer.due(0, now_s=1061.0)
    (b'ottscore/p0', False)
    """

    def __init__(
        self,
        settings: Settings,
        *,
        topic_sender: Callable[..., Any],
        metrics: Metrics,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.settings = settings
        self.topic_sender = topic_sender
        self.metrics = metrics
        self.max_bytes = max_bytes
        self._key = settings.snapshot_key.get_secret_value().encode()
        self._last_s: dict[int, float] = {}

    @property
    def enabled(self) -> bool:
        """Whether a snapshot key is configured."""
        return bool(self._key)

    def due(self, partition: int, now_s: float) -> bool:
        """Whether ``partition``'s models should be published now.

        ``now_s`` is a wall clock that does not jump (the worker passes
        :func:`time.monotonic`). The first call for a partition starts its clock: the
        first snapshot is due ``snapshot_interval_s`` after the partition was taken.
        """
        if not self._key:
            return False
        last = self._last_s.setdefault(partition, now_s)
        return now_s - last >= self.settings.snapshot_interval_s

    def build(self, partition: int, models: object, *, offset: int | None) -> tuple[bytes, bytes]:
        """Seal ``models`` of ``partition``: the record's ``(key, value)``.

        ``offset`` is that of the last input record the models learned from. The seal
        time and size are exported as ``ottscore_snapshot_seconds`` and
        ``ottscore_snapshot_bytes``.
        """
        started = time.perf_counter()
        value = seal(
            models,
            key=self._key,
            app_id=self.settings.app_id,
            partition=partition,
            created_ms=int(time.time() * 1000),
            offset=offset,
        )
        self.metrics.snapshot_seconds.observe(time.perf_counter() - started)
        self.metrics.snapshot_bytes.set(len(value))
        return snapshot_record_key(self.settings.app_id, partition), value

    def publish(self, partition: int, models: object, *, offset: int | None, now_s: float) -> None:
        """Seal and send ``partition``'s models, and restart its clock at ``now_s``.

        The snapshot counts as published (``ottscore_snapshots_published_total``, and
        the last-published time) when the broker acknowledges it.
        """
        key, value = self.build(partition, models, offset=offset)
        self._last_s[partition] = now_s
        if len(value) > self.max_bytes:
            log.error(
                "snapshot %s not published: %d bytes, more than the %d allowed",
                key.decode(),
                len(value),
                self.max_bytes,
            )
            return
        self.topic_sender(key, value, callback=self._acknowledged, on_refused=self._refused)

    def forget(self, partition: int) -> None:
        """Stop the clock of a partition this worker no longer owns."""
        self._last_s.pop(partition, None)

    def _refused(self, records: Sequence[tuple[bytes | None, bytes]]) -> list[Any]:
        self.metrics.records_refused.labels("snapshot").inc(len(records))
        return []

    def _acknowledged(self, _message: Any) -> None:
        self.metrics.snapshots_published.inc()
        self.metrics.snapshot_last_published.set_to_current_time()


def latest_snapshot(
    settings: Settings, partition: int, *, metrics: Metrics, timeout_s: float = 10.0
) -> object | None:
    """The models of the newest valid snapshot of ``partition``, or ``None``.

    Reads the models topic backwards from its current end (every partition, in windows
    that grow until the beginning; blocking, at most ``timeout_s``) for the records keyed
    :func:`snapshot_record_key` for this app and partition, and tries them newest first,
    back to the latest tombstone (a tombstone deletes the key, as compaction would).
    Each refused one is logged (reason, key, offset) and counted in
    ``ottscore_snapshots_refused_total{reason}``; the first accepted one is counted in
    ``ottscore_snapshots_restored_total`` and returned, and nothing older is read.

    Parameters
    ----------
    settings
        Kafka connection, ``topic_models``, ``app_id`` and ``snapshot_key`` (empty: no
        snapshot is read and ``None`` is returned).
    partition
        The input partition whose models are wanted.
    metrics
        Where refusals and restores are counted.
    timeout_s
        Longest time spent reading; then the models start from scratch, with a warning.
    """
    key = settings.snapshot_key.get_secret_value().encode()
    if not key:
        return None
    record_key = snapshot_record_key(settings.app_id, partition)
    consumer = KafkaConsumer(
        **kafka_python_config(settings),
        client_id=f"{settings.app_id}-snapshots",
        group_id=None,
        enable_auto_commit=False,
    )
    try:
        records = _newest_first(
            consumer,
            settings.topic_models,
            record_key,
            deadline=time.monotonic() + timeout_s,
        )
        for record in records:
            where = f"{record.topic}[{record.partition}]@{record.offset}"
            try:
                header, models = unseal(
                    record.value, key=key, app_id=settings.app_id, partition=partition
                )
            except SnapshotRefused as refused:
                log.warning("snapshot %s at %s refused: %s", record_key.decode(), where, refused)
                metrics.snapshots_refused.labels(refused.reason).inc()
                continue
            metrics.snapshots_restored.inc()
            log.info(
                "partition %d: models restored from snapshot %s at %s (created %.1f s ago, "
                "input offset %s)",
                partition,
                record_key.decode(),
                where,
                time.time() - header.created_ms / 1000,
                header.offset,
            )
            return models
    finally:
        consumer.close()
    log.info(
        "partition %d: no valid snapshot of %s, models start afresh", partition, record_key.decode()
    )
    return None


def _newest_first(
    consumer: KafkaConsumer, topic: str, record_key: bytes, *, deadline: float
) -> Iterator[ConsumerRecord]:
    """The records of ``topic`` keyed ``record_key``, newest first, up to its latest tombstone.

    Reads windows of offsets backwards from the end, each four times larger than the one
    before, so that the newest snapshot, normally among the last records, costs one small
    read. A key's records all sit in one partition of the topic (the producer hashes the
    key), so offset order is publication order.
    """
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        log.warning("models topic %s not found: no snapshot to restore", topic)
        return
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    first = consumer.beginning_offsets(tps)
    upper = consumer.end_offsets(tps)
    window = _FIRST_WINDOW
    while any(upper[tp] > first[tp] for tp in tps):
        lower = {tp: max(first[tp], upper[tp] - window) for tp in tps}
        records = _read_range(consumer, lower, upper, deadline=deadline)
        if records is None:
            log.warning(
                "models topic %s not read back far enough in time: no snapshot restored from it",
                topic,
            )
            return
        ours = [record for record in records if record.key == record_key]
        for record in sorted(ours, key=lambda r: (r.offset, r.partition), reverse=True):
            if record.value is None:
                return
            yield record
        upper, window = lower, window * 4


def _read_range(
    consumer: KafkaConsumer,
    lower: dict[TopicPartition, int],
    upper: dict[TopicPartition, int],
    *,
    deadline: float,
) -> list[ConsumerRecord] | None:
    """The records at offsets ``[lower, upper)`` of each partition; ``None`` past ``deadline``."""
    todo = [tp for tp in lower if lower[tp] < upper[tp]]
    consumer.assign(todo)
    for tp in todo:
        consumer.seek(tp, lower[tp])
    records: list[ConsumerRecord] = []
    while any(consumer.position(tp) < upper[tp] for tp in todo):
        if time.monotonic() > deadline:
            return None
        for tp, batch in consumer.poll(timeout_ms=200).items():
            records.extend(record for record in batch if record.offset < upper[tp])
    return records
