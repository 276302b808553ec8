"""Snapshots of newly assigned partitions are read off the event loop: the loop goes on."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from agents.worker import ingest as worker_app
from agents.worker.health import Health
from agents.worker.metrics import Metrics
from agents.worker.snapshots import SnapshotWriter
from pipeline.config import Settings

SLOW_READ_S = 0.5


def slow_latest_snapshot(settings: Settings, partition: int, *, metrics: Metrics) -> str:
    time.sleep(SLOW_READ_S)  # a blocking kafka-python read of the models topic
    return f"models of p{partition}"


def worker() -> worker_app.IngestWorker:
    settings = Settings(snapshot_key="k")
    metrics = Metrics(CollectorRegistry())
    return worker_app.IngestWorker(
        settings,
        table=None,
        topics={},
        metrics=metrics,
        snapshots=SnapshotWriter(settings, topic_sender=print, metrics=metrics),
        health=Health(stale_after_s=30),
    )


async def ticks_during(work: asyncio.Future | None, blocking: bool) -> int:
    """How many 10 ms ticks the event loop ran while ``work`` (or a blocking read) ran."""
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    if blocking:
        slow_latest_snapshot(Settings(), 0, metrics=None)  # type: ignore[arg-type]
    else:
        assert work is not None
        await work
    done.set()
    await task
    return ticks


def test_the_loop_runs_while_the_snapshots_of_assigned_partitions_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_app, "latest_snapshot", slow_latest_snapshot)
    ingest = worker()

    async def scenario() -> tuple[int, int]:
        blocked = await ticks_during(None, blocking=True)
        prefetched = await ticks_during(
            asyncio.ensure_future(ingest.prefetch_snapshots({0, 1})), blocking=False
        )
        return blocked, prefetched

    blocked, prefetched = asyncio.run(scenario())
    assert blocked <= 1  # control: a read on the loop stops it
    assert prefetched >= 5  # the two reads ran in threads while the loop went on
    assert {p: read.result() for p, read in ingest._prefetched.items()} == {
        0: "models of p0",
        1: "models of p1",
    }
