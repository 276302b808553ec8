"""Fixtures of the integration tests: a real Kafka broker per session, its topics and settings.

Which broker the session uses is chosen by ``OTTSCORE_TEST_KAFKA``:

``local`` (default)
    a :class:`~agents.devtools.broker.LocalKafka` on free ports in a temporary directory, stopped at
    the end of the session; its jars come from the project's cache (``.ottscore/kafka``).
``testcontainers``
    a Kafka container (needs a Docker daemon).
``external``
    the cluster at ``KAFKA_BOOTSTRAP_SERVERS``, as it is.

A broker that cannot be started or reached fails the tests: they are never skipped.
Every test under this directory is marked ``integration``.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from kafka.admin import ConfigResource, ConfigResourceType

from agents.devtools.broker import LocalKafka, wait_for_broker
from agents.worker.kafka import (
    admin_client,
    create_topics,
    ensure_topics,
    kafka_python_config,
    topic_max_message_bytes,
)
from pipeline.config import Settings

_HERE = Path(__file__).parent

_TOPIC_FIELDS = tuple(
    name
    for name, field in Settings.model_fields.items()
    if name.startswith("topic_") and field.annotation is str
)

# testcontainers' KafkaContainer drives Confluent's image scripts (apache/kafka images lack
# them, and with_kraft() refuses tags below 7.0.0): Confluent Platform 7.9 ships Kafka 3.9.
_CONTAINER_IMAGE = "confluentinc/cp-kafka:7.9.1"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under this directory ``integration``, before ``-m`` selects tests."""
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


@pytest.fixture(scope="session")
def kafka_jars_dir(pytestconfig: pytest.Config) -> Path:
    """The project's Kafka jar cache, shared by every broker the tests start."""
    settings = Settings()
    home = pytestconfig.rootpath / settings.broker_home
    return LocalKafka.from_settings(settings.model_copy(update={"broker_home": home})).jars_dir


def _local_kafka(home: Path, jars_dir: Path, **options: Any) -> LocalKafka:
    """A (stopped) broker in ``home`` on free ports; ``options`` go to :class:`LocalKafka`."""
    port, controller_port = free_ports(2)
    return LocalKafka(
        home, port=port, controller_port=controller_port, jars_dir=jars_dir, **options
    )


@pytest.fixture
def local_kafka_factory(
    tmp_path_factory: pytest.TempPathFactory, kafka_jars_dir: Path
) -> Iterator[Callable[..., LocalKafka]]:
    """Make brokers of their own (not started), each in a new temporary home on free ports.

    ``local_kafka_factory(**options)`` passes ``options`` (such as ``heap``) to
    :class:`LocalKafka`. Every broker made is stopped when the test ends.
    """
    made: list[LocalKafka] = []

    def make(**options: Any) -> LocalKafka:
        made.append(_local_kafka(tmp_path_factory.mktemp("kafka"), kafka_jars_dir, **options))
        return made[-1]

    yield make
    for kafka in made:
        kafka.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(
    tmp_path_factory: pytest.TempPathFactory, kafka_jars_dir: Path
) -> Iterator[str]:
    """Bootstrap servers of the session's broker (see the module docstring)."""
    mode = os.environ.get("OTTSCORE_TEST_KAFKA", "local")
    if mode == "local":
        with _local_kafka(tmp_path_factory.mktemp("kafka"), kafka_jars_dir) as kafka:
            yield kafka.bootstrap
    elif mode == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer(_CONTAINER_IMAGE).with_kraft() as container:
            yield container.get_bootstrap_server()
    elif mode == "external":
        bootstrap = Settings().kafka_bootstrap_servers
        wait_for_broker(bootstrap, timeout=30.0)
        yield bootstrap
    else:
        raise pytest.UsageError(
            f"OTTSCORE_TEST_KAFKA={mode!r}: expected local, testcontainers or external"
        )


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Callable[..., str]:
    """Create topics with unique names on the session's broker.

    ``topic_factory(prefix="test", *, partitions=1, compacted=False)`` returns the name.
    """

    def create(prefix: str = "test", *, partitions: int = 1, compacted: bool = False) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:12]}"
        create_topics(
            {"bootstrap_servers": kafka_bootstrap},
            [name],
            partitions=partitions,
            compacted=[name] if compacted else (),
        )
        return name

    return create


def isolated_settings(tmp_path: Path, **fields: Any) -> Settings:
    """:class:`Settings` for a worker of its own, with its topics created on its broker.

    The settings get a unique ``app_id`` and unique names for every ``topic_*`` field, all
    created as the worker creates them (:func:`agents.worker.kafka.ensure_topics`) over the
    settings' own connection, an in-memory store, a data directory under ``tmp_path``, no
    metrics endpoint and a free web port. ``fields`` (such as the ``kafka_*`` connection)
    override any field.
    """
    suffix = uuid.uuid4().hex[:12]
    app_id = f"ottscore-test-{suffix}"
    settings = Settings(
        **{
            "app_id": app_id,
            "store": "memory://",
            "data_dir": tmp_path / app_id,
            "metrics_port": 0,
            "worker_web_port": free_ports(1)[0],
            **{
                field: f"{Settings.model_fields[field].default}.{suffix}" for field in _TOPIC_FIELDS
            },
            **fields,
        }
    )
    ensure_topics(settings)
    return settings


@pytest.fixture
def settings_factory(kafka_bootstrap: str, tmp_path: Path) -> Callable[..., Settings]:
    """Make :class:`Settings` for a worker of its own on the session's broker.

    ``settings_factory(**overrides)`` is :func:`isolated_settings` on that broker.
    """

    def make(**overrides: Any) -> Settings:
        return isolated_settings(
            tmp_path, **{"kafka_bootstrap_servers": kafka_bootstrap, **overrides}
        )

    return make


def set_max_message_bytes(settings: Settings, topic: str, limit: int) -> None:
    """Set ``topic``'s ``max.message.bytes`` and wait until the broker applies it.

    The controller accepts the change before the broker applies it: a record sent, or a
    describe made, right after the alter can still meet the old limit.
    """
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": str(limit)})
    with admin_client(kafka_python_config(settings), timeout=30) as admin:
        admin.alter_configs([resource], incremental=True)
    deadline = time.monotonic() + 30
    while (in_force := topic_max_message_bytes(settings, topic)) != limit:
        assert time.monotonic() < deadline, f"max.message.bytes still {in_force}, not {limit}"
        time.sleep(0.1)
