"""Kafka connection settings for both clients ottscore uses, and topic creation.

Faust (aiokafka) runs the worker; kafka-python runs the simulator, replay, tail and the
admin calls. Both get their bootstrap servers and security (SSL, SASL) from the same
:class:`~pipeline.config.Settings`, here.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import NoError, TopicAlreadyExistsError, for_code

from pipeline.config import Settings
from pipeline.core.outputs import OUTPUTS
from pipeline.core.partitioning import partition_for
from pipeline.serde.snapshots import MAX_SNAPSHOT_BYTES

__all__ = [
    "kafka_python_config",
    "faust_broker_settings",
    "admin_client",
    "create_topics",
    "ensure_topics",
    "topic_max_message_bytes",
    "output_topics",
    "all_topics",
    "send_batches",
]


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    )
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    return context


def kafka_python_config(settings: Settings) -> dict[str, Any]:
    """Connection keyword arguments for kafka-python clients (producer, consumer, admin)."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        config["ssl_context"] = _ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism
        config["sasl_plain_username"] = settings.kafka_sasl_username
        config["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return config


def faust_broker_settings(settings: Settings) -> dict[str, Any]:
    """``broker`` and ``broker_credentials`` keyword arguments for :class:`faust.App`."""
    import faust

    # ottscore:// names the transport of agents.worker.faust_patches (an entry point)
    brokers = [f"ottscore://{server}" for server in settings.kafka_bootstrap_servers.split(",")]
    protocol = settings.kafka_security_protocol
    credentials: Any = None
    if protocol.startswith("SASL"):
        # an SSL context is what makes faust's credentials SASL_SSL rather than SASL_PLAINTEXT
        credentials = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=_ssl_context(settings) if protocol == "SASL_SSL" else None,
            mechanism=settings.kafka_sasl_mechanism,
        )
    elif protocol == "SSL":
        credentials = faust.SSLCredentials(_ssl_context(settings))
    return {"broker": brokers, "broker_credentials": credentials}


_COMPACTED_CONFIG = {"cleanup.policy": "compact", "max.message.bytes": str(MAX_SNAPSHOT_BYTES)}


def output_topics(settings: Settings) -> dict[str, str]:
    """Topic name of each output kind (:data:`pipeline.core.outputs.OUTPUTS`)."""
    return {name: output.topic(settings) for name, output in OUTPUTS.items()}


def all_topics(settings: Settings) -> tuple[list[str], list[str]]:
    """``(plain topics, compacted topics)`` that ottscore reads or writes."""
    plain = [
        settings.topic_events,
        *output_topics(settings).values(),
        settings.topic_state_quarantine,
    ]
    compacted = [
        settings.topic_models,
        settings.topic_catalog,
        settings.topic_experiments,
        settings.topic_consent,
        settings.topic_kpis,
        settings.topic_experiment_results,
    ]
    return plain, compacted


def admin_client(config: Mapping[str, Any], *, timeout: float) -> KafkaAdminClient:
    """A kafka-python admin client whose bootstrap and requests give up after ``timeout`` s."""
    timeout_ms = max(int(timeout * 1000), 1)
    return KafkaAdminClient(
        **config,
        client_id="ottscore-admin",
        bootstrap_timeout_ms=timeout_ms,
        request_timeout_ms=timeout_ms,
    )


def create_topics(
    config: Mapping[str, Any],
    names: Iterable[str],
    *,
    partitions: int,
    replication: int = 1,
    compacted: Iterable[str] = (),
    configs: Mapping[str, Mapping[str, str]] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create the topics that do not exist yet and wait until every partition has a leader.

    Existing topics are left as they are, whatever their partitions or configuration.

    Parameters
    ----------
    config
        kafka-python connection arguments (:func:`kafka_python_config`, or just
        ``{"bootstrap_servers": ...}``).
    names
        Topics to have.
    partitions
        Partitions of each topic created.
    replication
        Replication factor of each topic created.
    compacted
        Topics created with ``cleanup.policy=compact`` (and records up to
        :data:`MAX_SNAPSHOT_BYTES`); they need not be repeated in ``names``.
    configs
        Topic configuration of some of the topics created, by name (added to the above).
    timeout
        Longest wait for the creation and for the metadata to show the topics, in seconds.

    Raises
    ------
    kafka.errors.KafkaError
        When the cluster refuses a topic for another reason than that it exists.
    """
    compact = set(compacted)
    wanted = list(dict.fromkeys([*names, *sorted(compact)]))
    if not wanted:
        return
    specs = {
        name: {
            "num_partitions": partitions,
            "replication_factor": replication,
            "configs": {
                **(_COMPACTED_CONFIG if name in compact else {}),
                **(configs or {}).get(name, {}),
            },
        }
        for name in wanted
    }
    with admin_client(config, timeout=timeout) as admin:
        result = admin.create_topics(specs, timeout_ms=int(timeout * 1000), raise_errors=False)
        for topic in result["topics"]:
            error = for_code(topic["error_code"])
            if error not in (NoError, TopicAlreadyExistsError):
                raise error(f"{topic['name']}: {topic.get('error_message') or error.__name__}")
        admin.wait_for_topics(wanted, timeout_ms=int(timeout * 1000))


def ensure_topics(settings: Settings, *, timeout: float = 30.0) -> None:
    """Create every topic ottscore reads or writes that does not exist yet.

    The KPI partials and learning topics have one partition whatever ``topic_partitions``:
    the agent that adds the partitions' KPI windows up, and the merger of their learning,
    must see all of them.

    The dead-letter topic is created with ``max.message.bytes`` set to
    ``dlq_max_message_bytes``, the bound every dead-letter record is cut to.
    """
    plain, compacted = all_topics(settings)
    single = [settings.topic_kpi_partials, settings.topic_learning]
    create_topics(
        kafka_python_config(settings),
        [name for name in plain + compacted if name not in single],
        partitions=settings.topic_partitions,
        replication=settings.topic_replication,
        compacted=compacted,
        configs={settings.topic_dlq: {"max.message.bytes": str(settings.dlq_max_message_bytes)}},
        timeout=timeout,
    )
    create_topics(  # one partition: one agent sees every partition's records
        kafka_python_config(settings),
        single,
        partitions=1,
        replication=settings.topic_replication,
        timeout=timeout,
    )


def topic_max_message_bytes(settings: Settings, topic: str, *, timeout: float = 30.0) -> int:
    """The ``max.message.bytes`` in force for ``topic`` (its own, or the broker's default).

    Raises
    ------
    kafka.errors.KafkaError
        When the cluster cannot be reached within ``timeout`` or refuses to describe it.
    """
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})
    with admin_client(kafka_python_config(settings), timeout=timeout) as admin:
        described = admin.describe_configs([resource], config_filter="all")
    return int(described["topic"][topic]["max.message.bytes"]["value"])


async def send_batches(
    producer: AIOKafkaProducer,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    *,
    partition: int | None = None,
) -> list[tuple[asyncio.Future, list[int]]]:
    """Hand ``(key, value)`` records to aiokafka as whole batches, one or more per partition.

    Each record goes to ``partition``, or, without one, to the partition
    ``producer.send`` would choose (aiokafka's default partitioner: murmur2 of the key,
    as the Java client and kafka-python do), and keeps its order within it.
    ``producer.send`` costs a coroutine, a future and a lookup of the open batch per
    record; here a record is one append to a batch being built. Returns each batch's
    future (its record metadata once the broker acknowledged it, carrying the batch's
    first offset) and the positions in ``records`` of the records it holds, in order: the
    broker accepts or refuses a batch whole. A producer configured with another
    partitioner must not use this without ``partition``.
    """
    partitions = sorted(await producer.partitions_for(topic))
    count = len(partitions)
    open_batches: dict[int, tuple[Any, list[int]]] = {}
    full: list[tuple[int, Any, list[int]]] = []
    for position, (key, value) in enumerate(records):
        if partition is not None:
            to = partition
        elif key is not None:
            to = partitions[partition_for(key, count)]
        else:  # as aiokafka's default partitioner places an unkeyed record
            to = random.choice(partitions)
        entry = open_batches.get(to)
        if entry is None:
            entry = open_batches[to] = (producer.create_batch(), [])
        batch, held = entry
        if batch.append(key=key, value=value, timestamp=None) is None:  # full
            full.append((to, batch, held))
            batch, held = open_batches[to] = (producer.create_batch(), [])
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value)} bytes does not fit in a batch")
        held.append(position)
    full.extend((to, batch, held) for to, (batch, held) in open_batches.items())
    sent = []
    for to, batch, held in full:  # a partition's batches in the order they were filled
        batch.close()
        sent.append((await producer.send_batch(batch, topic, partition=to), held))
    return sent
