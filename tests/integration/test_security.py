"""TLS and SASL on the real broker: SCRAM-SHA-512 over TLS, mutual TLS, and the worker on them.

The module starts a broker of its own with :class:`~agents.devtools.broker.SecureListeners`: a new
CA, broker and client certificate, and one SCRAM-SHA-512 user with a random password.
"""

from __future__ import annotations

import secrets
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_ports, isolated_settings
from kafka.errors import KafkaTimeoutError
from pydantic import SecretStr
from worker_process import WorkerProcess, produce_all, read_topic

from agents.devtools.broker import LocalKafka, SecureListeners
from agents.devtools.tls import issue_certificates
from agents.worker.kafka import admin_client, kafka_python_config
from pipeline.config import Settings
from pipeline.sim.simulate import SimulationConfig, Simulator

SCRAM_USER = "ottscore"

#: How long a refused client keeps trying before the test takes its refusal as final.
REFUSAL_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def secured_kafka(
    tmp_path_factory: pytest.TempPathFactory, kafka_jars_dir: Path
) -> Iterator[LocalKafka]:
    """A running broker with SASL_SSL (SCRAM-SHA-512) and SSL (client certificates)."""
    home = tmp_path_factory.mktemp("secured-kafka")
    port, controller_port, sasl_ssl_port, ssl_port = free_ports(4)
    secure = SecureListeners(
        issue_certificates(home / "tls"),
        sasl_ssl_port=sasl_ssl_port,
        ssl_port=ssl_port,
        scram_users={SCRAM_USER: secrets.token_urlsafe(24)},
    )
    with LocalKafka(
        home,
        port=port,
        controller_port=controller_port,
        jars_dir=kafka_jars_dir,
        secure=secure,
    ) as kafka:
        yield kafka


def sasl_ssl(kafka: LocalKafka, **overrides: Any) -> dict[str, Any]:
    """Settings fields of a SCRAM-SHA-512 client of the broker's SASL_SSL listener."""
    assert kafka.secure is not None
    return {
        "kafka_bootstrap_servers": kafka.secure.sasl_ssl_bootstrap,
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": SCRAM_USER,
        "kafka_sasl_password": SecretStr(kafka.secure.scram_users[SCRAM_USER]),
        "kafka_ssl_cafile": kafka.secure.certificates.ca,
        **overrides,
    }


def mutual_tls(kafka: LocalKafka, **overrides: Any) -> dict[str, Any]:
    """Settings fields of a client of the broker's SSL listener, with the CA's client cert."""
    assert kafka.secure is not None
    certificates = kafka.secure.certificates
    return {
        "kafka_bootstrap_servers": kafka.secure.ssl_bootstrap,
        "kafka_security_protocol": "SSL",
        "kafka_ssl_cafile": certificates.ca,
        "kafka_ssl_certfile": certificates.client_cert,
        "kafka_ssl_keyfile": certificates.client_key,
        **overrides,
    }


def assert_refused(
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    reason: str,
    *,
    accepted: Settings | None = None,
) -> None:
    """A client with ``settings`` cannot bootstrap, and its log says ``reason``.

    Every attempt must be refused. The reason is the broker's error response, which the
    client can miss when it sees the connection close first (seen in full runs: every
    bootstrap attempt of a client logged only "socket disconnected"), so a new client
    tries again, at most three times, until one logs it. If none does and ``accepted``
    is given (the same client with only what ``reason`` names put right), a client with
    it must bootstrap: then the refusal can only be for that.
    """
    caplog.clear()
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(KafkaTimeoutError):
            admin_client(kafka_python_config(settings), timeout=REFUSAL_TIMEOUT_S).close()
        assert time.monotonic() - started < REFUSAL_TIMEOUT_S + 5
        if reason in caplog.text:
            return
    if accepted is not None:
        admin_client(kafka_python_config(accepted), timeout=30.0).close()
        return
    assert reason in caplog.text


def test_a_scram_client_over_tls_creates_topics_produces_and_consumes(
    secured_kafka: LocalKafka, tmp_path: Path
) -> None:
    settings = isolated_settings(tmp_path, **sasl_ssl(secured_kafka))
    sent = [(f"user-{i}".encode(), f"record-{i}".encode()) for i in range(200)]

    produce_all(settings, sent)
    received = read_topic(settings, settings.topic_events)

    with admin_client(kafka_python_config(settings), timeout=10) as admin:
        assert settings.topic_events in admin.list_topics()
    assert sorted((r.key, r.value) for r in received) == sorted(sent)


def test_a_wrong_scram_password_is_refused(
    secured_kafka: LocalKafka, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = Settings(**sasl_ssl(secured_kafka, kafka_sasl_password=SecretStr("not-the-password")))
    assert_refused(
        wrong,
        caplog,
        "invalid credentials with SASL mechanism SCRAM-SHA-512",
        accepted=Settings(**sasl_ssl(secured_kafka)),
    )


def test_a_client_that_does_not_trust_the_ca_fails_the_tls_handshake(
    secured_kafka: LocalKafka, caplog: pytest.LogCaptureFixture
) -> None:
    trusting = kafka_python_config(Settings(**sasl_ssl(secured_kafka)))["ssl_context"]
    untrusting = Settings(**sasl_ssl(secured_kafka, kafka_ssl_cafile=None))
    address = ("127.0.0.1", secured_kafka.secure.sasl_ssl_port)

    with socket.create_connection(address, timeout=5) as raw:
        trusting.wrap_socket(raw, server_hostname="127.0.0.1").close()
    with socket.create_connection(address, timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            kafka_python_config(untrusting)["ssl_context"].wrap_socket(
                raw, server_hostname="127.0.0.1"
            )
    assert_refused(untrusting, caplog, "CERTIFICATE_VERIFY_FAILED")


def test_mutual_tls_admits_only_a_client_certificate_of_the_ca(
    secured_kafka: LocalKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = issue_certificates(tmp_path / "other-ca")

    settings = isolated_settings(tmp_path, **mutual_tls(secured_kafka))
    produce_all(settings, [(b"user-1", b"over mutual TLS")])

    assert [r.value for r in read_topic(settings, settings.topic_events)] == [b"over mutual TLS"]
    for fields, alert in (
        ({"kafka_ssl_certfile": None, "kafka_ssl_keyfile": None}, "ALERT_BAD_CERTIFICATE"),
        (
            {"kafka_ssl_certfile": stranger.client_cert, "kafka_ssl_keyfile": stranger.client_key},
            "ALERT_CERTIFICATE_UNKNOWN",
        ),
    ):
        assert_refused(Settings(**mutual_tls(secured_kafka, **fields)), caplog, alert)


def test_the_worker_over_sasl_ssl_processes_a_stream_and_publishes_scores(
    secured_kafka: LocalKafka, tmp_path: Path
) -> None:
    settings = isolated_settings(tmp_path, **sasl_ssl(secured_kafka), metrics_port=free_ports(1)[0])
    records = Simulator(SimulationConfig(users=20, days=3, seed=1)).records()
    produced = produce_all(settings, records)
    outputs = (settings.topic_scores_churn, settings.topic_scores_personalization)
    scores: dict[str, int] = {}

    def scored() -> bool:
        scores.update({topic: len(read_topic(settings, topic)) for topic in outputs})
        return any(scores.values())

    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_received(produced, timeout_s=120)
        worker.wait_until(scored, timeout_s=60, what="waiting for a score on an output topic")
        received = worker.metric("ottscore_records_received_total")
    finally:
        assert worker.stop() == 0

    assert received == produced
    print(f"\nworker over SASL_SSL: {produced} records received, scores read back {scores}")
