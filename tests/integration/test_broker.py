"""The local Kafka broker: lifecycle, jar cache, topics, and a produce/consume round trip."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from agents.devtools.broker import JARS_MARKER, BrokerError, BrokerStatus, LocalKafka
from agents.worker.kafka import create_topics
from pipeline.config import Settings


def _assert_no_process(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_second_start_reuses_the_running_broker(
    local_kafka_factory: Callable[..., LocalKafka],
) -> None:
    kafka = local_kafka_factory()
    kafka.start()
    pid = kafka.status().pid
    kafka.start()
    twin = LocalKafka(
        kafka.home, port=kafka.port, controller_port=kafka.controller_port, jars_dir=kafka.jars_dir
    )
    twin.start()

    assert pid is not None
    assert (
        kafka.status()
        == twin.status()
        == BrokerStatus(
            running=True,
            pid=pid,
            bootstrap=f"127.0.0.1:{kafka.port}",
            log_file=kafka.home / "kafka.log",
            data_dir=kafka.home / "data",
        )
    )
    assert (kafka.data_dir / "meta.properties").is_file()
    assert "Kafka Server started" in kafka.log_file.read_text()


def test_stop_is_idempotent_leaves_no_process_and_restart_keeps_the_data(
    local_kafka_factory: Callable[..., LocalKafka],
) -> None:
    kafka = local_kafka_factory()
    with kafka:
        first_pid = kafka.status().pid
        kafka.ensure_topics(["kept"], partitions=2)
    meta = (kafka.data_dir / "meta.properties").read_text()

    assert first_pid is not None
    _assert_no_process(first_pid)
    assert not kafka.pid_file.exists()
    assert not kafka.status().running
    kafka.stop()

    kafka.start()
    assert kafka.status().pid != first_pid
    assert (kafka.data_dir / "meta.properties").read_text() == meta
    with KafkaAdminClient(bootstrap_servers=kafka.bootstrap) as admin:
        assert "kept" in admin.list_topics()
    second_pid = kafka.status().pid
    kafka.stop()
    assert second_pid is not None
    _assert_no_process(second_pid)


def test_fetch_jars_with_a_complete_cache_needs_no_maven(
    kafka_jars_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka = LocalKafka(tmp_path, port=1, controller_port=2, jars_dir=kafka_jars_dir)
    kafka.fetch_jars()
    marker = kafka_jars_dir / JARS_MARKER
    written = marker.stat().st_mtime_ns

    monkeypatch.setenv("PATH", "")
    kafka.fetch_jars()

    assert marker.stat().st_mtime_ns == written
    assert any(kafka_jars_dir.glob("kafka_2.13-*.jar"))


def test_fetch_jars_without_maven_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kafka = LocalKafka(tmp_path, port=1, controller_port=2)
    monkeypatch.setenv("PATH", "")

    with pytest.raises(BrokerError, match=r"Maven \(mvn\) is not on PATH"):
        kafka.fetch_jars()
    assert not (kafka.jars_dir / JARS_MARKER).exists()


def test_start_refuses_a_port_taken_by_another_process(
    kafka_jars_dir: Path, tmp_path: Path
) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        kafka = LocalKafka(tmp_path, port=port, controller_port=port + 1, jars_dir=kafka_jars_dir)

        with pytest.raises(BrokerError, match=f"127.0.0.1:{port} is already in use"):
            kafka.start()
    assert not kafka.pid_file.exists()


def test_start_reports_the_log_tail_when_java_exits_early(
    local_kafka_factory: Callable[..., LocalKafka],
) -> None:
    kafka = local_kafka_factory(heap="not-a-size")

    with pytest.raises(BrokerError, match=r"exited(.|\n)*Invalid maximum heap size"):
        kafka.start(timeout=30)
    assert kafka.status() == BrokerStatus(
        running=False,
        pid=None,
        bootstrap=kafka.bootstrap,
        log_file=kafka.log_file,
        data_dir=kafka.data_dir,
    )


def test_produce_and_consume_round_trip_keeps_per_key_order(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("round-trip", partitions=3)
    sent = [(f"user-{i % 4}".encode(), f"event-{i}".encode()) for i in range(40)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for key, value in sent:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=15_000,
    )
    received = []
    for record in consumer:
        received.append((record.key, record.value))
        if len(received) == len(sent):
            break
    consumer.close()

    assert sorted(received) == sorted(sent)
    for user in {key for key, _ in sent}:
        assert [v for k, v in received if k == user] == [v for k, v in sent if k == user]


def test_create_topics_is_idempotent_and_compacts_on_request(kafka_bootstrap: str) -> None:
    suffix = uuid.uuid4().hex[:12]
    plain, compacted = f"ensure.plain.{suffix}", f"ensure.compacted.{suffix}"
    for _ in range(2):
        create_topics(
            {"bootstrap_servers": kafka_bootstrap}, [plain], partitions=3, compacted=[compacted]
        )

    with KafkaAdminClient(bootstrap_servers=kafka_bootstrap) as admin:
        described = admin.describe_topics([plain, compacted])
        modified = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in (plain, compacted)]
        )["topic"]
    assert {t["name"]: len(t["partitions"]) for t in described} == {plain: 3, compacted: 3}
    assert "cleanup.policy" not in modified[plain]
    assert modified[compacted]["cleanup.policy"]["value"] == "compact"


def test_settings_factory_gives_each_worker_its_own_created_topics(
    kafka_bootstrap: str, settings_factory: Callable[..., Settings]
) -> None:
    first, second = settings_factory(topic_partitions=2), settings_factory()
    topic_fields = [
        name
        for name, field in Settings.model_fields.items()
        if name.startswith("topic_") and field.annotation is str
    ]
    first_topics = [getattr(first, name) for name in topic_fields]
    second_topics = [getattr(second, name) for name in topic_fields]

    with KafkaAdminClient(bootstrap_servers=kafka_bootstrap) as admin:
        partitions = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(first_topics)}
        existing = set(admin.list_topics())
    # one partition each: one agent adds the KPI windows up, one merges the learning
    single = dict.fromkeys([first.topic_kpi_partials, first.topic_learning], 1)
    assert partitions == {**dict.fromkeys(first_topics, 2), **single}
    assert set(second_topics) <= existing
    assert not set(first_topics) & set(second_topics)
    assert len(topic_fields) == 15
    assert first.app_id != second.app_id
    assert first.kafka_bootstrap_servers == second.kafka_bootstrap_servers == kafka_bootstrap
    assert (first.store, first.metrics_port) == ("memory://", 0)
