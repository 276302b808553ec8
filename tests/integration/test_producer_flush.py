"""The worker's producer on the real broker: a flush returns only when Kafka has every message.

The worker commits input offsets right after a flush, so a message still unacknowledged
when the flush returns is a state write that a crash at that moment loses. Faust's own
flush (0.15.3) can return with the last message still waiting for room in a full aiokafka
batch: run against it, this test failed 4 times in 4 (a round ended with 2,999 of 3,000
messages in the topic); each round has a chance, hence ten of them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from kafka import KafkaConsumer, TopicPartition

from agents.worker.faust_patches import App

PARTITIONS = 4


def end_offsets(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


async def send_and_flush(bootstrap: str, topic_name: str, count: int) -> tuple[int, int]:
    """(messages not acknowledged after the flush, messages in the topic right after it)."""
    app = App(f"flush-test-{uuid.uuid4().hex[:8]}", broker=f"ottscore://{bootstrap}")
    topic = app.topic(
        topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    producer = app.producer
    await producer.start()
    try:
        sent = [
            topic.send_soon(key=b"k%d" % i, value=b"x" * 9000, partition=i % PARTITIONS)
            for i in range(count)
        ]
        await producer.flush()
        pending = sum(not fut.done() for fut in sent)
        # Read synchronously on purpose: nothing else runs on the loop meanwhile.
        return pending, end_offsets(bootstrap, topic_name)
    finally:
        await producer.stop()


def test_a_flush_returns_when_every_message_sent_soon_is_in_the_topic(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    count = 3000
    for _ in range(10):
        topic = topic_factory("flush", partitions=PARTITIONS)
        assert asyncio.run(send_and_flush(kafka_bootstrap, topic, count)) == (0, count)
