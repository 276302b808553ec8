"""Model snapshots on the real broker: the newest valid one is restored, forgeries are refused."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from river import compose, linear_model, preprocessing

from agents.devtools.produce import make_producer
from agents.worker.metrics import Metrics
from agents.worker.snapshots import SnapshotWriter, latest_snapshot, snapshot_record_key
from pipeline.config import Settings

KEY = "integration-test-snapshot-key"
PROBES = [{"sessions": s, "watch_s": w} for s in (0, 3, 15) for w in (10.0, 2400.0)]


def learn(model: compose.Pipeline, samples: int, *, seed: int) -> compose.Pipeline:
    rng = random.Random(seed)
    for _ in range(samples):
        x = {"sessions": rng.randint(0, 20), "watch_s": rng.random() * 3600}
        model.learn_one(x, x["sessions"] < 5)
    return model


def predictions(model: Any) -> list[dict[bool, float]]:
    return [model.predict_proba_one(x) for x in PROBES]


@pytest.fixture
def producer(kafka_bootstrap: str) -> Iterator[KafkaProducer]:
    producer = make_producer(Settings(kafka_bootstrap_servers=kafka_bootstrap))
    yield producer
    producer.close()


def writer_for(settings: Settings, producer: KafkaProducer, metrics: Metrics) -> SnapshotWriter:
    """A :class:`SnapshotWriter` that publishes with a kafka-python producer."""

    def send(key: bytes, value: bytes, *, callback: Callable[[Any], None], **_: Any) -> None:
        producer.send(settings.topic_models, key=key, value=value).add_callback(callback)

    return SnapshotWriter(settings, topic_sender=send, metrics=metrics)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_newest_valid_snapshot_is_restored_and_forgeries_are_refused(
    settings_factory: Callable[..., Settings],
    producer: KafkaProducer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_factory(snapshot_key=KEY)
    metrics = Metrics(CollectorRegistry())
    writer = writer_for(settings, producer, metrics)
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    writer.publish(0, learn(model, 30, seed=1), offset=30, now_s=0.0)
    older = predictions(model)
    writer.publish(0, learn(model, 30, seed=2), offset=60, now_s=60.0)
    newest = predictions(model)
    assert newest != older

    learn(model, 30, seed=3)
    key, sealed = writer.build(0, model, offset=90)
    tampered = bytearray(sealed)
    tampered[len(sealed) // 2] ^= 0x01
    other_app = settings.model_copy(update={"app_id": "another-app"})
    forged_and_foreign = [
        (key, bytes(tampered)),  # bit flip in the payload
        (key, sealed[:-32]),  # signature stripped
        writer.build(1, model, offset=90),  # our partition 1: another key, not even read
        writer_for(other_app, producer, metrics).build(0, model, offset=90),
    ]
    for record_key, record_value in forged_and_foreign:
        producer.send(settings.topic_models, key=record_key, value=record_value)
    producer.flush()
    assert value(metrics, "ottscore_snapshots_published_total") == 2
    assert value(metrics, "ottscore_snapshot_last_published_timestamp_seconds") > 0

    with caplog.at_level(logging.WARNING, logger="agents.worker.snapshots"):
        restored = latest_snapshot(settings, 0, metrics=metrics)

    assert predictions(restored) == newest
    assert value(metrics, "ottscore_snapshots_restored_total") == 1
    refused = {
        reason: value(metrics, "ottscore_snapshots_refused_total", reason=reason)
        for reason in ("unsigned", "bad_signature", "malformed", "wrong_partition")
    }
    assert refused == {"unsigned": 1, "bad_signature": 1, "malformed": 0, "wrong_partition": 0}
    warnings = [r.getMessage() for r in caplog.records if r.name == "agents.worker.snapshots"]
    assert len(warnings) == 2
    assert "unsigned" in warnings[0] and "bad_signature" in warnings[1]
    assert all(f"{settings.app_id}/p0" in w and settings.topic_models in w for w in warnings)


def test_a_snapshot_published_under_another_partitions_key_is_refused(
    settings_factory: Callable[..., Settings], producer: KafkaProducer
) -> None:
    settings = settings_factory(snapshot_key=KEY)
    metrics = Metrics(CollectorRegistry())
    writer = writer_for(settings, producer, metrics)
    model = learn(preprocessing.StandardScaler() | linear_model.LogisticRegression(), 20, seed=1)
    writer.publish(0, model, offset=1, now_s=0.0)
    _, replayed = writer.build(1, model, offset=1)  # a valid snapshot of partition 1 ...
    producer.send(  # ... replayed under partition 0's key
        settings.topic_models, key=snapshot_record_key(settings.app_id, 0), value=replayed
    )
    producer.flush()

    restored = latest_snapshot(settings, 0, metrics=metrics)

    assert predictions(restored) == predictions(model)
    assert value(metrics, "ottscore_snapshots_refused_total", reason="wrong_partition") == 1


def test_nothing_is_restored_without_a_snapshot_a_key_or_after_a_tombstone(
    settings_factory: Callable[..., Settings], producer: KafkaProducer
) -> None:
    settings = settings_factory(snapshot_key=KEY)
    metrics = Metrics(CollectorRegistry())
    writer_for(settings, producer, metrics).publish(2, {"weights": [1.0]}, offset=5, now_s=0.0)
    producer.flush()
    assert latest_snapshot(settings, 2, metrics=metrics) == {"weights": [1.0]}
    unkeyed = settings.model_copy(update={"snapshot_key": SecretStr("")})
    assert latest_snapshot(unkeyed, 2, metrics=metrics) is None

    producer.send(settings.topic_models, key=snapshot_record_key(settings.app_id, 2), value=None)
    producer.flush()

    assert latest_snapshot(settings, 2, metrics=metrics) is None
    assert latest_snapshot(settings, 3, metrics=metrics) is None
    assert value(metrics, "ottscore_snapshots_restored_total") == 1


def test_a_valid_snapshot_behind_many_refused_ones_is_still_found(
    settings_factory: Callable[..., Settings], producer: KafkaProducer
) -> None:
    settings = settings_factory(snapshot_key=KEY, topic_partitions=1)
    metrics = Metrics(CollectorRegistry())
    writer = writer_for(settings, producer, metrics)
    model = learn(preprocessing.StandardScaler() | linear_model.LogisticRegression(), 20, seed=4)
    writer.publish(0, model, offset=20, now_s=0.0)
    key, sealed = writer.build(0, {"not": "this"}, offset=21)
    for _ in range(50):  # more than several read-back windows of refusals
        producer.send(settings.topic_models, key=key, value=sealed[:-32])
    producer.flush()

    restored = latest_snapshot(settings, 0, metrics=metrics)

    assert predictions(restored) == predictions(model)
    assert value(metrics, "ottscore_snapshots_refused_total", reason="unsigned") == 50
