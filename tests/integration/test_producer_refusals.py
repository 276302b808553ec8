"""The worker's producer on the real broker: a batch refused for its size loses only what must go.

The broker takes or refuses a record batch whole, against the topic's
``max.message.bytes``. A dead letter that fits must not lose its original because it shared a
batch with one that does not (a 6-byte letter lost its original so, when the dead-letter
topic's limit was lowered under a running worker), and the records of batches the broker
took must not be written twice.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from conftest import set_max_message_bytes
from kafka import KafkaConsumer, TopicPartition

from agents.worker.faust_patches import App
from pipeline.config import Settings
from pipeline.core.partitioning import partition_for

LIMIT = 4096


def keys_on(partition: int, count: int) -> list[bytes]:
    """``count`` keys that the default partitioner puts on ``partition`` of two."""
    keys = (b"key-%d" % i for i in range(1000))
    return [key for key in keys if partition_for(key, 2) == partition][:count]


def limited_topic(bootstrap: str, topic_factory: Callable[..., str]) -> str:
    topic = topic_factory("refusals", partitions=2)
    set_max_message_bytes(Settings(kafka_bootstrap_servers=bootstrap), topic, LIMIT)
    return topic


def read_back(bootstrap: str, topic: str) -> dict[int, list[tuple[bytes, bytes]]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=2000)
    try:
        tps = [TopicPartition(topic, p) for p in range(2)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(tps)
        found: dict[int, list[tuple[bytes, bytes]]] = {0: [], 1: []}
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            for tp, records in consumer.poll(timeout_ms=1000).items():
                found[tp.partition].extend((r.key, r.value) for r in records)
        return found
    finally:
        consumer.close()


async def send(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], **kw: object):
    app = App(f"refusals-test-{uuid.uuid4().hex[:8]}", broker=f"ottscore://{bootstrap}")
    producer = app.producer
    await producer.start()
    acknowledged: list[dict[int, int]] = []
    refused: list[tuple[bytes | None, bytes]] = []

    def instead(records):
        refused.extend(records)
        return [(key, b"instead of %d bytes" % len(value)) for key, value in records]

    try:
        producer.send_many(
            topic, records, acknowledged.append, on_refused=instead if kw.get("replace") else None
        )
        await producer.flush()
    finally:
        await producer.stop()
    return acknowledged, refused


def test_only_the_records_refused_alone_are_replaced_and_none_is_written_twice(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = limited_topic(kafka_bootstrap, topic_factory)
    a, big, c = keys_on(0, 3)
    d, e = keys_on(1, 2)
    records = [(a, b"a" * 100), (d, b"d" * 100), (big, b"B" * 6000), (c, b"c" * 100)]
    records.append((e, b"e" * 100))

    acknowledged, refused = asyncio.run(send(kafka_bootstrap, topic, records, replace=True))

    assert refused == [(big, b"B" * 6000)]
    assert read_back(kafka_bootstrap, topic) == {
        0: [(a, b"a" * 100), (big, b"instead of 6000 bytes"), (c, b"c" * 100)],
        1: [(d, b"d" * 100), (e, b"e" * 100)],
    }
    assert acknowledged == [{0: 2, 1: 1}]


def test_a_list_refused_without_a_replacement_fails_the_flush(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = limited_topic(kafka_bootstrap, topic_factory)
    records = [(keys_on(0, 1)[0], b"B" * 6000)]
    with pytest.raises(RuntimeError, match="MessageSizeTooLarge"):
        asyncio.run(send(kafka_bootstrap, topic, records))
