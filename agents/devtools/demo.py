"""``ottscore demo``: local broker, a worker and simulated users who react to its lists.

The users are the closed-loop simulator's (:mod:`pipeline.sim.closed_loop`): their events go
to the events topic at ``--rate`` records per second, and their home screens show the
lists the worker publishes back on the personalisation topic
(:class:`~agents.devtools.demo_loop.KafkaLists`). Half of them are in the demo's experiment
(the trending list instead of the personalised one). The live view
(:mod:`agents.devtools.demo_view`) shows the worker's rates, the lists, the last closed hour
of business KPIs and the experiment's report so far.

Simulated time runs much faster than the wall clock (about two days a second at the
defaults). It starts five years ago on empty topics, or a day after the latest event the
events topic already holds, so that a second demo on the same broker continues where the
first stopped instead of sending events older than the worker's windows; it covers a year
at most and never passes now (the worker refuses events from the future).

Ctrl-C (or SIGTERM) stops the simulated users, then the worker (gracefully, so it
commits), then the broker if the demo started it; no process is left behind.
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
from collections.abc import Iterable
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from rich.live import Live
from rich.text import Text

from agents.devtools.broker import LocalKafka
from agents.devtools.demo_loop import KafkaLists, ListInbox, LoopProgress, run_loop
from agents.devtools.demo_view import Followed, Rates, follow, judge, now_s, render, scrape_labelled
from agents.devtools.produce import make_producer, publish_catalog
from agents.experiments import create, defined, stop
from agents.worker.kafka import ensure_topics, kafka_python_config
from pipeline.config import Settings
from pipeline.core.events import Event, EventDecoder, format_ts
from pipeline.experiments.definition import Experiment
from pipeline.sim.audience import DAY_MS, HOUR_MS
from pipeline.sim.closed_loop import ClosedLoop, ClosedLoopConfig

__all__ = ["run_demo", "scrape"]

#: Days of simulated time of one demo at most.
DAYS = 365
#: How far back the first demo on empty topics starts, in days.
FIRST_START_DAYS = 5 * 365
#: The demo's experiments are named so; an earlier one stops where a new one starts.
EXPERIMENT_PREFIX = "demo-rail-"


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


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_demo(settings: Settings, *, users: int, rate: float, bad_rate: float) -> int:
    """Run the demo until interrupted; returns the exit status."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    broker = LocalKafka.from_settings(settings)
    started_broker = not broker.status().running
    halt = threading.Event()
    worker: subprocess.Popen[bytes] | None = None
    feeder: threading.Thread | None = None
    try:
        broker.start()
        ensure_topics(settings)
        now_ms = int(time.time() * 1000)
        start_ms = _start_ms(settings, broker, now_ms=now_ms)
        loop = ClosedLoop(
            ClosedLoopConfig(
                users=users,
                days=min(DAYS * DAY_MS, now_ms - start_ms) / DAY_MS,
                seed=7,
                start_ms=start_ms,
                bad_rate=bad_rate,
            )
        )
        publish_catalog(settings, loop.catalog.records())
        experiment = _demo_experiment(settings, start_ms)
        print(f"kafka on {broker.bootstrap}; starting worker …", flush=True)
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers}
        worker = subprocess.Popen(
            [sys.executable, "-m", "agents", "worker", "--loglevel", "warn"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(broker.home / "worker.log", "ab"),  # noqa: SIM115 - lives with the worker
        )
        followed = Followed()
        follow(settings, followed, halt)
        progress = LoopProgress()
        feeder = threading.Thread(
            target=_feed,
            args=(settings, loop, followed.inbox, progress, halt),
            kwargs={"rate": rate},
            name="demo-users",
            daemon=True,
        )
        feeder.start()
        _live_view(settings, worker, experiment, followed, progress)
    except KeyboardInterrupt:
        print("\nstopping …", flush=True)
    finally:
        halt.set()
        if feeder is not None:
            feeder.join(10.0)
        if worker is not None:
            _stop_process(worker)
        if started_broker:
            broker.stop()
    print("stopped: no worker or broker left running" if started_broker else "stopped worker")
    return 0


def _start_ms(settings: Settings, broker: LocalKafka, *, now_ms: int) -> int:
    """Where the simulated time starts: long ago, or a day after the topic's latest event."""
    start_ms = now_ms - FIRST_START_DAYS * DAY_MS
    latest_ms = _latest_event_ms(settings)
    if latest_ms is not None:
        start_ms = max(start_ms, latest_ms + DAY_MS)
    start_ms -= start_ms % HOUR_MS
    if now_ms - start_ms < DAY_MS:
        raise SystemExit(
            f"{settings.topic_events} already holds events up to {format_ts(latest_ms or 0)}: "
            "the demo's would be stamped in the future. To start from empty topics, stop the "
            f"broker (ottscore broker stop) and remove {broker.data_dir} and {settings.data_dir}"
        )
    return start_ms


def _latest_event_ms(settings: Settings, *, tail: int = 100) -> int | None:
    """The latest event time among the last ``tail`` records of each events partition."""
    decoder = EventDecoder()
    consumer = KafkaConsumer(**kafka_python_config(settings), enable_auto_commit=False)
    try:
        topic = settings.topic_events
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        first, ends = consumer.beginning_offsets(partitions), consumer.end_offsets(partitions)
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, max(first[tp], ends[tp] - tail))
        unread = {tp for tp in partitions if ends[tp] > first[tp]}
        latest: int | None = None
        deadline = time.monotonic() + 30.0
        while unread and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    event = decoder.decode(record.value)
                    if isinstance(event, Event):
                        latest = max(latest or event.ts_ms, event.ts_ms)
                if records and records[-1].offset >= ends[tp] - 1:
                    unread.discard(tp)
        return latest
    finally:
        consumer.close()


def _demo_experiment(settings: Settings, start_ms: int) -> Experiment:
    """Publish the demo's experiment: half the users see the trending list, from the start.

    Earlier demo experiments still running stop at its start, so the users are in one.
    """
    start = format_ts(start_ms)
    experiment_id = f"{EXPERIMENT_PREFIX}{start[:13]}h"
    for known in defined(settings).values():
        earlier = known.experiment
        if (
            earlier.id.startswith(EXPERIMENT_PREFIX)
            and earlier.start_ms < start_ms
            and (earlier.stop_ms is None or earlier.stop_ms > start_ms)
        ):
            stop(settings, earlier.id, at=start)
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


def _feed(
    settings: Settings,
    loop: ClosedLoop,
    inbox: ListInbox,
    progress: LoopProgress,
    halt: threading.Event,
    *,
    rate: float,
) -> None:
    """Once the worker is ready, run the simulated users against it through Kafka."""
    ready = f"http://{settings.metrics_host}:{settings.metrics_port}/readyz"
    while not _answers(ready):
        if halt.wait(0.5):
            return
    producer = make_producer(settings, linger_ms=20)
    topic = settings.topic_events
    try:
        policy = KafkaLists(
            lambda key, value: producer.send(topic, key=key, value=value),
            inbox,
            rate=rate,
            stop=halt,
        )
        run_loop(loop, policy, progress, halt)
        producer.flush()
    finally:
        producer.close(timeout=5.0)


def _answers(url: str) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return bool(response.status == 200)
    except OSError:  # refused while the worker starts, or 503 until it is ready
        return False


def _live_view(
    settings: Settings,
    worker: subprocess.Popen[bytes],
    experiment: Experiment,
    followed: Followed,
    progress: LoopProgress,
) -> None:
    url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
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
                with progress.lock:
                    events = progress.events[:]
                report, judged_at = judge(experiment, followed, events), at
            live.update(
                render(
                    at - started,
                    metrics,
                    per_s,
                    followed,
                    progress,
                    report,
                    experiment_id=experiment.id,
                )
            )
    raise SystemExit(f"the worker exited with status {worker.returncode}")


def _stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
