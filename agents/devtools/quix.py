"""The processing core run by a Quix Streams application: the bench's peer of the Faust worker.

A Python team choosing a stream framework would weigh Quix Streams (on confluent-kafka,
librdkafka) against Faust. :func:`quix_events_per_s` runs the same
:class:`~pipeline.core.processor.Processor` the worker runs, written as a Quix user writes
an application: a ``StreamingDataFrame`` over the input topic whose ``apply`` processes
each record and expands into its outputs, ``to_topic`` with the topic chosen per output,
and Quix's own checkpoints (commit every ``WRITE_BACK_EVERY`` records or 5 s, at least
once). The changed user states go, as in the kafka-python loop, to a compacted topic on
the user's partition every ``WRITE_BACK_EVERY`` records: Quix's state store holds the
current message's key only, while a record also changes the states of other users of its
partition (timers that fire as the watermark passes). Quix's producer partitions by the
murmur2 hash of the key, as Kafka's default partitioner does: a state lands on its user's
partition.
"""

from __future__ import annotations

import logging
import signal
import tempfile
import time
import uuid
import warnings
from typing import Any

with warnings.catch_warnings(record=True):
    # quixstreams imports authlib, which warns of its own deprecated httpx integration with
    # a filter of "always" it sets itself: the warnings of these imports are dropped
    from quixstreams import Application, message_context
    from quixstreams.kafka.configuration import ConnectionConfig
    from quixstreams.models.serializers import BytesDeserializer, BytesSerializer
    from quixstreams.models.serializers.base import SerializationContext, Serializer

from agents.devtools.throughput import WRITE_BACK_EVERY
from agents.worker.kafka import create_topics, kafka_python_config, output_topics
from pipeline.config import Settings
from pipeline.core.processor import Processor

__all__ = ["quix_events_per_s"]

#: Seconds without a new record after which a run gives up.
_STALL_TIMEOUT_S = 120.0


class _Payload(Serializer):
    """The bytes of an expanded output ``(topic, key, value)``."""

    def __call__(self, value: Any, ctx: SerializationContext) -> bytes:
        return bytes(value[2])


def connection(settings: Settings) -> ConnectionConfig:
    """Quix's connection settings (librdkafka's names) for the cluster of ``settings``.

    >>> connection(Settings(kafka_bootstrap_servers="a:9092,b:9092")).bootstrap_servers
    'a:9092,b:9092'
    """
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.startswith("SASL"):
        config |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_username": settings.kafka_sasl_username,
            "sasl_password": settings.kafka_sasl_password.get_secret_value(),
        }
    files = {
        "ssl_ca_location": settings.kafka_ssl_cafile,
        "ssl_certificate_location": settings.kafka_ssl_certfile,
        "ssl_key_location": settings.kafka_ssl_keyfile,
    }
    config |= {name: str(path) for name, path in files.items() if path is not None}
    return ConnectionConfig(**config)


def quix_events_per_s(settings: Settings, catalog: list[dict[str, Any]], total: int) -> float:
    """Records/s of a Quix Streams application around the processor, over ``total`` records.

    The input topic of ``settings`` holds the workload; outputs go to the output topics of
    ``settings``, the changed states to ``<app id>-quix-users`` (compacted). The clock runs
    from the first record processed to the end of ``Application.run``, which commits the
    last checkpoint after its producer has flushed.
    """
    processor = Processor(settings)
    processor.load_catalog(catalog)
    states = f"{settings.app_id}-quix-users"
    create_topics(
        kafka_python_config(settings), [], partitions=settings.topic_partitions, compacted=[states]
    )
    with tempfile.TemporaryDirectory(prefix="ottscore-quix-") as state_dir:
        app = Application(
            broker_address=connection(settings),
            # a group of its own per run: each run reads the topic from its start
            consumer_group=f"{settings.app_id}-quix-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            commit_every=WRITE_BACK_EVERY,
            state_dir=state_dir,
            loglevel=logging.WARNING,
            use_changelog_topics=False,
        )
        raw = {"key_deserializer": BytesDeserializer(), "value_deserializer": BytesDeserializer()}
        events = app.topic(settings.topic_events, **raw)  # type: ignore[arg-type]
        written = {"key_serializer": BytesSerializer(), "value_serializer": _Payload()}
        topic_of = output_topics(settings)
        topics = {
            name: app.topic(name, **written)  # type: ignore[arg-type]
            for name in {*topic_of.values(), states}
        }
        clock = {"started": 0.0, "count": 0}

        def process(value: bytes, key: bytes | None, timestamp: int, _headers: Any) -> list[Any]:
            context = message_context()
            if not clock["count"]:
                clock["started"] = time.perf_counter()
            processor.process(
                value,
                key=key,
                partition=context.partition,
                offset=context.offset,
                timestamp_ms=timestamp,
                topic=settings.topic_events,
            )
            clock["count"] += 1
            produced: list[Any] = [
                (topic_of[out.kind], out.key, out.value) for out in processor.take_outbox()
            ]
            count = clock["count"]
            if count % WRITE_BACK_EVERY == 0 or count == total:
                produced += [
                    (states, user_id.encode(), data) for user_id, _, data in processor.take_dirty()
                ]
            if count == total:
                app.stop()
            return produced

        sdf = app.dataframe(events)
        sdf = sdf.apply(process, metadata=True, expand=True)
        sdf.to_topic(lambda value, *_: topics[value[0]], key=lambda value: value[1])
        # Application.run installs SIGINT and SIGTERM handlers that stop it, and leaves
        # them: Ctrl+C would no longer interrupt the rest of the bench
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            app.run(timeout=_STALL_TIMEOUT_S, collect=False)  # stops early after a stall
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        if clock["count"] < total:
            raise TimeoutError(f"Quix processed {clock['count']} of {total} records in time")
        return total / (time.perf_counter() - clock["started"])
