"""A periodic refresh of a compacted topic never stops the worker, whatever the broker does."""

from __future__ import annotations

import logging
import threading

import pytest

from agents.worker.compacted import CompactedReader
from pipeline.config import Settings


def unreachable() -> CompactedReader:
    return CompactedReader(Settings(kafka_bootstrap_servers="127.0.0.1:1"), "ott.experiments")


def test_a_refresh_that_cannot_read_logs_and_returns_nothing(caplog) -> None:
    """The read raises what the client raised (as a stop or a broker restart make it)."""
    reader = unreachable()

    def broken() -> list[object]:
        raise ConnectionError("Event loop stopped")

    reader._read = broken  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        reader.read()
    with caplog.at_level(logging.WARNING, logger="agents.worker.compacted"):
        assert reader.refresh() is None
    assert "refreshing ott.experiments failed" in caplog.text


def test_close_waits_for_a_read_in_another_thread() -> None:
    """Closing while a refresh runs in its thread (a worker stopping) must not break the read."""
    reader = unreachable()
    entered, release = threading.Event(), threading.Event()
    order: list[str] = []

    def slow_read() -> list[object]:
        entered.set()
        release.wait(5)
        order.append("read")
        return []

    reader._read = slow_read  # type: ignore[method-assign]
    thread = threading.Thread(target=reader.refresh)
    thread.start()
    entered.wait(5)
    closer = threading.Thread(target=lambda: (reader.close(), order.append("close")))
    closer.start()
    closer.join(0.2)
    assert closer.is_alive()  # waiting for the read
    release.set()
    thread.join(5)
    closer.join(5)
    assert order == ["read", "close"]
