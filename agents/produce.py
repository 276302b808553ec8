"""kafka-python producing and reading: simulator output, file replay, catalog and ``tail``."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from agents.kafka import ensure_topics, kafka_python_config
from pipeline.config import Settings
from pipeline.evaluate import jsonl_lines
from pipeline.events import parse_ts

__all__ = [
    "produce",
    "publish_catalog",
    "CatalogReader",
    "read_catalog",
    "read_jsonl_records",
    "tail",
    "make_producer",
]

log = logging.getLogger(__name__)


def make_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    """A kafka-python producer tuned for throughput, with the settings' security."""
    config: dict[str, Any] = {
        **kafka_python_config(settings),
        "acks": "all",
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_request_size": 2 * 1024 * 1024,
        "client_id": "ottscore-producer",
    }
    config.update(overrides)
    return KafkaProducer(**config)


def _event_time_s(value: bytes) -> float | None:
    try:
        return parse_ts(orjson.loads(value)["ts"]) / 1000.0
    except Exception:  # malformed records are sent as they are, without pacing
        return None


def produce(
    settings: Settings,
    records: Iterable[tuple[bytes | None, bytes]],
    *,
    rate: float = 0.0,
    speed: float = 0.0,
    topic: str | None = None,
) -> int:
    """Send ``(key, value)`` records; pace by wall ``rate`` (records/s) or event-time ``speed``.

    ``speed`` is event-time seconds per wall second (3600: an hour of events per second).
    Returns the number of records sent (all acknowledged by the broker).
    """
    topic = topic or settings.topic_events
    ensure_topics(settings)
    producer = make_producer(settings)
    sent = 0
    started = time.monotonic()
    first_event_s: float | None = None
    try:
        for key, value in records:
            if rate > 0:
                _sleep_until(started + sent / rate)
            elif speed > 0:
                event_s = _event_time_s(value)
                if event_s is not None:
                    first_event_s = first_event_s if first_event_s is not None else event_s
                    _sleep_until(started + (event_s - first_event_s) / speed)
            producer.send(topic, key=key, value=value)
            sent += 1
        producer.flush()
    finally:
        producer.close()
    return sent


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def publish_catalog(settings: Settings, items: Iterable[dict[str, Any]]) -> int:
    """Publish catalog items to the compacted catalog topic, keyed by item_id."""
    records = ((item["item_id"].encode(), orjson.dumps(item)) for item in items)
    return produce(settings, records, topic=settings.topic_catalog)


def read_catalog(settings: Settings) -> list[object]:
    """Every item of the compacted catalog topic (latest record per item; empty if none)."""
    reader = CatalogReader(settings)
    try:
        return reader.read()
    finally:
        reader.close()


class CatalogReader:
    """The catalog topic read incrementally: every item the first time, then what changed.

    A worker refreshes its catalog every ``catalog_refresh_s``. Reading the whole topic
    again cost ~150 ms of CPU for 5,000 items: in a thread, but holding the interpreter
    lock the event loop needs, which showed as a burst of late scores at every refresh.
    The reader keeps its consumer and positions, so a refresh with nothing new asks the
    broker for the end offsets and reads nothing.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: KafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []

    def read(self) -> list[object]:
        """The items published since the last read (latest record per key), as parsed.

        Nothing is validated here (:meth:`pipeline.processor.Processor.load_catalog` does);
        a value that is not JSON is handed over as its bytes, to be refused there with its
        reason, and a tombstone deletes nothing but the earlier record of its key. A read
        stops after ``kafka_startup_timeout_s`` with what it has, logged: the next read goes
        on from there.
        """
        timeout_s = self.settings.kafka_startup_timeout_s
        deadline = time.monotonic() + timeout_s
        consumer = self._consumer
        if consumer is None:
            consumer = KafkaConsumer(
                **kafka_python_config(self.settings),
                enable_auto_commit=False,
                request_timeout_ms=int(timeout_s * 1000),
            )
            topic = self.settings.topic_catalog
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
            if not partitions:  # no catalog yet: look again next time
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
                    "catalog %s not read to its end in %.0f s: %d items now, the rest at the "
                    "next refresh", self.settings.topic_catalog, timeout_s, len(items),
                )  # fmt: skip
                break
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    if record.value is None:
                        items.pop(record.key, None)  # a tombstone: no item
                        continue
                    try:
                        items[record.key] = orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        items[record.key] = bytes(record.value)
        return list(items.values())

    def close(self) -> None:
        """Close the consumer (a later :meth:`read` reads everything again)."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def read_jsonl_records(path: Path) -> Iterator[tuple[bytes | None, bytes]]:
    """``(user_id key, line)`` for each line of a JSONL file of events, file order.

    Lines are read as ``ottscore evaluate`` reads them (:func:`pipeline.evaluate.jsonl_lines`).
    """
    for value in jsonl_lines(path):
        try:
            user_id = orjson.loads(value).get("user_id")
        except (orjson.JSONDecodeError, AttributeError):
            user_id = None
        yield (user_id.encode() if isinstance(user_id, str) else None), value


def tail(settings: Settings, topic: str, *, from_beginning: bool = False, limit: int = 0) -> int:
    """Pretty-print the records of ``topic`` (JSON values indented); returns how many."""
    consumer = KafkaConsumer(
        topic,
        **kafka_python_config(settings),
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
        consumer_timeout_ms=5000 if limit else float("inf"),
    )
    shown = 0
    try:
        for record in consumer:
            try:
                body = orjson.dumps(orjson.loads(record.value), option=orjson.OPT_INDENT_2).decode()
            except (orjson.JSONDecodeError, TypeError):
                body = repr(record.value)
            key = record.key.decode("utf-8", "replace") if record.key else None
            print(f"# {record.topic}[{record.partition}]@{record.offset} key={key}\n{body}")
            sys.stdout.flush()
            shown += 1
            if limit and shown >= limit:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return shown
