"""kafka-python producing and reading: simulator output, file replay, catalog and ``tail``."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer

from agents.worker.kafka import ensure_topics, kafka_python_config
from pipeline.config import Settings
from pipeline.core.events import parse_ts

__all__ = [
    "produce",
    "publish_catalog",
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
