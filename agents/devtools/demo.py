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

import orjson
from prometheus_client.parser import text_string_to_metric_families
from rich.live import Live
from rich.text import Text

from agents.devtools.broker import LocalKafka
from agents.devtools.demo_view import Followed, Rates, follow, judge, now_s, render, scrape_labelled
from agents.devtools.produce import produce, publish_catalog
from agents.experiments import create
from agents.worker.kafka import ensure_topics
from pipeline.config import Settings
from pipeline.core.events import Event, EventDecoder
from pipeline.experiments.definition import Experiment
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
        experiment = _demo_experiment(settings, simulator)
        sent: list[Event] = []
        feeder = threading.Thread(
            target=produce,
            args=(settings, _noted(sent, _until(stop, simulator.records()))),
            kwargs={"rate": rate},
            daemon=True,
        )
        feeder.start()
        _live_view(settings, worker, experiment, sent, stop)
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


def _demo_experiment(settings: Settings, simulator: Simulator) -> Experiment:
    """Publish the demo's experiment: half the users see the trending list, from the start."""
    first = next(iter(simulator.records()))[1]
    start = orjson.loads(first)["ts"]
    experiment_id = f"demo-rail-{start[:10]}"
    definition = {
        "schema_version": 1,
        "id": experiment_id,
        "salt": experiment_id,
        "start": start,
        "metrics": ["click_play_conversion", "watch_seconds_per_user", "play_starts_per_user"],
        "variants": [
            {"name": "personalised", "weight": 0.5, "control": True},
            {"name": "trending", "weight": 0.5, "knobs": {"list_source": "trending"}},
        ],
    }
    return create(settings, orjson.dumps(definition))


def _noted(sent: list[Event], records: Iterable[tuple[bytes, bytes]]) -> Iterator[Any]:
    """Pass ``records`` on, keeping the valid events among them (for the experiment's report)."""
    decoder = EventDecoder()
    for key, value in records:
        event = decoder.decode(value)
        if isinstance(event, Event):
            sent.append(event)
        yield key, value


def _live_view(
    settings: Settings,
    worker: subprocess.Popen[bytes],
    experiment: Experiment,
    sent: list[Event],
    stop: threading.Event,
) -> None:
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
    followed = Followed()
    follow(settings, followed, stop)
    started = now_s()
    rates = Rates()
    report = None
    judged_at = 0.0
    with Live(Text("starting the worker …"), refresh_per_second=2, screen=False) as live:
        while worker.poll() is None:
            time.sleep(1.0)
            try:
                metrics = scrape_labelled(url)
            except OSError:
                continue  # the worker is still starting
            at = now_s()
            per_s = (
                rates.per_s(metrics, "ottscore_events_consumed_total", at),
                rates.per_s(metrics, "ottscore_scores_published_total", at),
            )
            rates.previous, rates.previous_at = metrics, at
            if at - judged_at >= 5.0:
                report, judged_at = judge(experiment, followed, sent[:]), at
            live.update(render(at - started, metrics, per_s, followed, report))
    raise SystemExit(f"the worker exited with status {worker.returncode}")


def _stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
