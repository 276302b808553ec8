"""Framework versions and the Kafka conventions the worker relies on: patches, partitioner."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agents.worker.faust_patches import VERIFIED_VERSIONS, UnverifiedVersion, check_versions

#: ``ottscore worker`` in a process where faust-streaming reports another version.
WORKER_ON_ANOTHER_FAUST = """
import importlib.metadata as metadata
installed = metadata.version
metadata.version = lambda name: "0.15.4" if name == "faust-streaming" else installed(name)
from agents.cli import main
main(["worker"])
"""


def test_the_installed_versions_are_the_verified_ones() -> None:
    assert check_versions(allow_unverified=False) == []


def test_another_faust_version_is_refused_naming_both_versions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.metadata

    installed = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: "0.15.4" if name == "faust-streaming" else installed(name),
    )
    with pytest.raises(UnverifiedVersion, match="faust-streaming 0.15.4 is installed.*0.15.3"):
        check_versions(allow_unverified=False)
    assert check_versions(allow_unverified=True) == [
        "faust-streaming 0.15.4 is installed, the worker's patches of its internals were "
        f"verified on {VERIFIED_VERSIONS['faust-streaming']}"
    ]


def test_ottscore_worker_on_another_faust_exits_with_one_line_naming_both_versions() -> None:
    # no broker is needed: the check comes before anything connects
    result = subprocess.run(
        [sys.executable, "-c", WORKER_ON_ANOTHER_FAUST],
        capture_output=True,
        text=True,
        timeout=60,
        env={"OTTSCORE_METRICS_PORT": "0", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ottscore worker: faust-streaming 0.15.4")
    assert "verified on 0.15.3" in lines[0] and "OTTSCORE_ALLOW_UNVERIFIED_FAUST" in lines[0]


def test_the_one_partitioner_agrees_with_aiokafkas_default_for_any_key() -> None:
    """What aiokafka's producer.send would choose is where the core places a record."""
    from aiokafka.partitioner import DefaultPartitioner
    from hypothesis import given
    from hypothesis import strategies as st

    from pipeline.core.partitioning import partition_for

    @given(key=st.binary(min_size=1, max_size=64), partitions=st.integers(1, 64))
    def agrees(key: bytes, partitions: int) -> None:
        every = list(range(partitions))
        assert partition_for(key, partitions) == DefaultPartitioner()(key, every, every)

    agrees()


def test_the_worker_broker_urls_name_the_transport_with_its_consumer_and_producer() -> None:
    """Faust builds the consumer and producer from the transport its broker URL names."""
    from agents.worker.faust_patches import App, Consumer, Producer, Transport
    from agents.worker.kafka import faust_broker_settings
    from pipeline.config import Settings

    app = App("transport-test", **faust_broker_settings(Settings()))
    assert type(app.transport) is Transport
    assert type(app.consumer) is Consumer and type(app.producer) is Producer
