"""Compacted topics read live: the catalog and the experiment definitions.

A worker reads each at start and then at every refresh, only what was published since.
"""

from __future__ import annotations

import logging
import threading
import time

import orjson
from kafka import KafkaConsumer, TopicPartition

from agents.worker.kafka import kafka_python_config
from pipeline.config import Settings

__all__ = ["CompactedReader"]

log = logging.getLogger(__name__)


class CompactedReader:
    """A compacted topic read incrementally: every record the first time, then what changed.

    A worker refreshes its catalog every ``catalog_refresh_s``. Reading the whole topic
    again cost ~150 ms of CPU for 5,000 items: in a thread, but holding the interpreter
    lock the event loop needs, which showed as a burst of late scores at every refresh.
    The reader keeps its consumer and positions, so a refresh with nothing new asks the
    broker for the end offsets and reads nothing.
    """

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self._consumer: KafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._lock = threading.Lock()  # a close waits for a read in another thread

    def refresh(self) -> list[object] | None:
        """:meth:`read`, for the periodic refresh: a failure is logged, never raised.

        The broker may be away (a restart, a failover) or the worker stopping while a read
        runs in its thread: the refresh gives up with a warning, the reader starts afresh
        (the next read reads the whole topic, which the processor takes unchanged), and the
        worker goes on. Returns ``None`` when the read failed.
        """
        try:
            return self.read()
        except Exception as exc:  # noqa: BLE001 - a refresh must never stop the worker
            log.warning(
                "refreshing %s failed (%r); tried again at the next refresh", self.topic, exc
            )
            self.close()
            return None

    def read(self) -> list[object]:
        """The records published since the last read (latest per key), as parsed JSON.

        Raises what the Kafka client raises when the broker cannot be read.

        Nothing is validated here (the processor does, e.g.
        :meth:`~pipeline.core.processor.Processor.load_catalog`);
        a value that is not JSON is handed over as its bytes, to be refused there with its
        reason, and a tombstone deletes nothing but the earlier record of its key. A read
        stops after ``kafka_startup_timeout_s`` with what it has, logged: the next read goes
        on from there.
        """
        with self._lock:
            return self._read()

    def _read(self) -> list[object]:
        timeout_s = self.settings.kafka_startup_timeout_s
        deadline = time.monotonic() + timeout_s
        consumer = self._consumer
        if consumer is None:
            consumer = KafkaConsumer(
                **kafka_python_config(self.settings),
                enable_auto_commit=False,
                request_timeout_ms=int(timeout_s * 1000),
            )
            topic = self.topic
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
            if not partitions:  # no topic yet: look again next time
                consumer.close()
                return []
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            self._consumer, self._partitions = consumer, partitions
        end = consumer.end_offsets(self._partitions)
        items: dict[bytes, object] = {}
        while any(consumer.position(tp) < end[tp] for tp in self._partitions):
            if time.monotonic() > deadline:
                log.warning(
                    "%s not read to its end in %.0f s: %d records now, the rest at the "
                    "next refresh", self.topic, timeout_s, len(items),
                )  # fmt: skip
                break
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    if record.value is None:
                        items.pop(record.key, None)  # a tombstone: no record
                        continue
                    try:
                        items[record.key] = orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        items[record.key] = bytes(record.value)
        return list(items.values())

    def close(self) -> None:
        """Close the consumer (a later :meth:`read` reads everything again)."""
        with self._lock:
            if self._consumer is not None:
                consumer, self._consumer = self._consumer, None
                consumer.close()
