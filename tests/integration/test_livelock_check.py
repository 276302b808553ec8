"""Faust's check that records flow, on the real broker, while a partition's position is reset.

The worker resets a partition with no committed offset to its start after table recovery.
aiokafka then has no position for it until its fetcher has looked the offset up, and
Faust's periodic check read that position unguarded: a check in that window raised and
crashed the worker (the kill -9 test saw a life exit with status 1 on its own).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from kafka import KafkaProducer

from agents.worker.faust_patches import App


async def check_as_read_and_while_reset(bootstrap: str, topic: str) -> bool:
    """Run the worker's check on a partition as read, then while it is reset; whether it raised."""
    app = App("livelock-test", broker=f"ottscore://{bootstrap}")
    thread = app.consumer._thread
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    tp = TopicPartition(topic, 0)
    try:
        consumer.assign([tp])
        await consumer.getone()  # fetched: aiokafka holds a position and a fetch time
        thread._consumer = consumer
        thread.time_started = time.monotonic()
        thread.verify_event_path(time.monotonic(), TP(topic, 0))
        # no position until the fetcher has looked the offset up
        seeking = asyncio.ensure_future(consumer.seek_to_beginning(tp))
        await asyncio.sleep(0)
        state = consumer._subscription.subscription.assignment.state_value(tp)
        assert not state.has_valid_position, "the reset was over before the check"
        try:
            thread.verify_event_path(time.monotonic(), TP(topic, 0))
        except AssertionError:
            return True
        finally:
            await seeking
        return False
    finally:
        thread._consumer = None
        await consumer.stop()


def test_the_flow_check_skips_a_partition_being_reset_and_checks_it_once_read(
    kafka_bootstrap: str, topic_factory: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = topic_factory("livelock")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for i in range(3):
        producer.send(topic, key=b"k", value=b"%d" % i)
    producer.flush()
    producer.close()
    faust_checks = []
    faust_check = faust_aiokafka.AIOKafkaConsumerThread.verify_event_path

    def counted(self: Any, now: float, tp: TP) -> None:
        faust_checks.append(tp)
        faust_check(self, now, tp)

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "verify_event_path", counted)
    raised = asyncio.run(check_as_read_and_while_reset(kafka_bootstrap, topic))
    assert not raised, "the check raised on a partition whose position is being reset"
    assert faust_checks == [TP(topic, 0)], "Faust's check ran other than on the partition as read"
