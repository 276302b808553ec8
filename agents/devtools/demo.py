"""``ottscore demo``: local broker, a worker and the simulator, with a live view of the metrics.

Ctrl-C (or SIGTERM) stops the simulator, then the worker (gracefully, so it commits), then
the broker if the demo started it; no process is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agents.devtools.broker import LocalKafka
from agents.devtools.produce import produce, publish_catalog
from agents.worker.kafka import ensure_topics
from pipeline.config import Settings
from pipeline.sim.simulate import SimulationConfig, Simulator

__all__ = ["run_demo", "scrape"]


def scrape(url: str, timeout_s: float = 2.0, *, names: Iterable[str] = ()) -> dict[str, float]:
    """Sum every sample of a Prometheus endpoint by metric sample name (labels folded).

    ``names`` restricts the scrape to those sample names (Prometheus' ``name[]``
    parameter): the endpoint renders only their collectors, which costs the scraped
    process a fraction of a full page.
    """
    if names:
        url = f"{url}?{urllib.parse.urlencode([('name[]', name) for name in names])}"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def _until(stop: threading.Event, records: Iterable[tuple[bytes, bytes]]) -> Iterator[Any]:
    for record in records:
        if stop.is_set():
            return
        yield record


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


_VIEW = (
    "ottscore demo  —  {elapsed:5.0f} s   (Ctrl-C to stop)\n"
    "  events/s      {events_rate:9.0f}    consumed   {consumed:10.0f}\n"
    "  scores/s      {scores_rate:9.0f}    published  {published:10.0f}\n"
    "  dead-lettered {dlq:9.0f}    duplicates {dedup:10.0f}\n"
    "  sessions ended{sessions:9.0f}    users      {users:10.0f}\n"
)


def run_demo(settings: Settings, *, users: int, rate: float, bad_rate: float) -> int:
    """Run the demo until interrupted; returns the exit status."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    broker = LocalKafka.from_settings(settings)
    started_broker = not broker.status().running
    stop = threading.Event()
    worker: subprocess.Popen[bytes] | None = None
    try:
        broker.start()
        ensure_topics(settings)
        print(f"kafka on {broker.bootstrap}; starting worker …", flush=True)
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers}
        worker = subprocess.Popen(
            [sys.executable, "-m", "agents", "worker", "--loglevel", "warn"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(broker.home / "worker.log", "ab"),  # noqa: SIM115 - lives with the worker
        )
        days = 365
        simulator = Simulator(  # a year of traffic that ends now: never stamped in the future
            SimulationConfig(
                users=users,
                days=days,
                seed=7,
                start_ms=int((time.time() - days * 86_400) * 1000),
                bad_rate=bad_rate,
                duplicate_rate=0.01,
            )
        )
        publish_catalog(settings, simulator.catalog())
        feeder = threading.Thread(
            target=produce,
            args=(settings, _until(stop, simulator.records())),
            kwargs={"rate": rate},
            daemon=True,
        )
        feeder.start()
        _live_view(settings, worker)
    except KeyboardInterrupt:
        print("\nstopping …", flush=True)
    finally:
        stop.set()
        if worker is not None:
            _stop_process(worker)
        if started_broker:
            broker.stop()
    print("stopped: no worker or broker left running" if started_broker else "stopped worker")
    return 0


def _live_view(settings: Settings, worker: subprocess.Popen[bytes]) -> None:
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
    started = time.monotonic()
    previous: dict[str, float] = {}
    previous_at = started
    tty = sys.stdout.isatty()
    while worker.poll() is None:
        time.sleep(1.0)
        try:
            now_metrics = scrape(url)
        except OSError:
            continue  # the worker is still starting
        now = time.monotonic()
        span = max(now - previous_at, 1e-6)
        consumed = now_metrics.get("ottscore_events_consumed_total", 0.0)
        published = now_metrics.get("ottscore_scores_published_total", 0.0)
        view = _VIEW.format(
            elapsed=now - started,
            events_rate=(consumed - previous.get("ottscore_events_consumed_total", 0.0)) / span,
            scores_rate=(published - previous.get("ottscore_scores_published_total", 0.0)) / span,
            consumed=consumed,
            published=published,
            dlq=now_metrics.get("ottscore_events_rejected_total", 0.0),
            dedup=now_metrics.get("ottscore_events_deduplicated_total", 0.0),
            sessions=now_metrics.get("ottscore_sessions_closed_total", 0.0),
            users=now_metrics.get("ottscore_users_cached", 0.0),
        )
        print(("\x1b[H\x1b[2J" if tty else "") + view, flush=True)
        previous, previous_at = now_metrics, now
    raise SystemExit(f"the worker exited with status {worker.returncode}")


def _stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
