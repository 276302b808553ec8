"""``ottscore bench``: the worker's throughput, latency, state size and scaling, in one run.

Every figure is measured in the same run, on the same broker and the same synthetic
workload (see ``docs/performance.md`` for what each one means):

``raw_aiokafka_events_per_s``
    a bare aiokafka consumer reading the input topic from its start to its end offsets;
``baseline_kafka_python_events_per_s``
    a hand-written kafka-python loop around the same :class:`~pipeline.core.processor.Processor`
    that publishes its outputs and writes the user states, without Faust;
``quix_events_per_s``
    a Quix Streams application around the same processor (:mod:`agents.devtools.quix`);
``worker_events_per_s``
    the real ``ottscore worker`` process, from its first record received to its last;
``core_events_per_s``
    the processor in-process over the same records, without Kafka;
``latency_p50_s``, ``latency_p99_s``
    event → score latency at a fixed offered load (:mod:`agents.devtools.latency`);
``state_bytes_per_user``, ``peak_rss_bytes``
    mean size of the latest state per user in the worker's changelog, and the worker's
    peak resident memory;
``two_workers_speedup``
    throughput of two worker processes of one app over that of one.

Each measurement uses topics and app ids of its own (named ``*.bench-<run id>-*``), deleted
at the end, so a bench can run against a shared cluster.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError

from agents.devtools.broker import BrokerError, LocalKafka, kafka_version, wait_for_broker
from agents.devtools.latency import LatencyResult, measure_latency
from agents.devtools.produce import publish_catalog
from agents.devtools.throughput import (
    SEED,
    WorkerRun,
    Workload,
    baseline_kafka_python_events_per_s,
    bench_experiments,
    core_events_per_s,
    produce_fast,
    raw_aiokafka_events_per_s,
    run_workers,
    state_bytes_per_user,
    with_artworks,
    worker_settings,
)
from agents.devtools.worker_process import WorkerProcess
from agents.worker.kafka import admin_client, ensure_topics, kafka_python_config
from pipeline.config import Settings

__all__ = ["MEASUREMENTS", "TARGETS", "format_report", "run_bench"]

MEASUREMENTS = (
    "raw", "baseline", "quix", "worker", "bounded", "core", "latency", "two_workers",
)  # fmt: skip
"""Names accepted by ``--skip``; ``worker`` also gives the state size and peak memory."""

#: ``(report key, comparison, target)`` of the performance goals.
TARGETS: tuple[tuple[str, str, float], ...] = (
    ("worker_events_per_s", ">=", 20_000.0),
    ("worker_vs_raw_aiokafka", ">=", 0.10),
    ("worker_vs_kafka_python", ">=", 2.0),
    ("latency_p99_s", "<=", 0.1),
    ("state_bytes_per_user", "<=", 2048.0),
    ("two_workers_speedup", ">=", 1.7),
    ("bounded_vs_worker", ">=", 0.75),
    ("experiments_core_ratio", ">=", 0.9),
    ("acting_core_ratio", ">=", 0.85),
)


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _timed(what: str, measure: Callable[[], float]) -> float:
    rate = measure()
    _log(f"{what}: {rate:,.0f} events/s")
    return rate


@contextmanager
def bench_broker(settings: Settings) -> Iterator[tuple[Settings, str]]:
    """The cluster to bench against and its Kafka version.

    ``KAFKA_BOOTSTRAP_SERVERS`` when it was set and answers; otherwise the local broker of
    the ``broker_*`` settings, started (and stopped afterwards) unless it already runs.
    """
    if "kafka_bootstrap_servers" in settings.model_fields_set:
        try:
            wait_for_broker(settings.kafka_bootstrap_servers, timeout=10.0)
        except BrokerError as error:
            _log(f"{error}; using the local broker instead")
        else:
            yield settings, _cluster_version(settings)
            return
    broker = LocalKafka.from_settings(settings)
    started = not broker.status().running
    broker.start()
    try:
        bootstrap = {"kafka_bootstrap_servers": broker.bootstrap}
        yield settings.model_copy(update=bootstrap), kafka_version()
    finally:
        if started:
            broker.stop()


def _cluster_version(settings: Settings) -> str:
    """The Kafka version of a cluster, as kafka-python infers it from the API versions."""
    try:
        with admin_client(kafka_python_config(settings), timeout=10.0) as admin:
            version = admin._client.check_version()
    except (KafkaError, OSError, AttributeError):
        return "unknown"
    return ".".join(map(str, version)) + " (inferred)"


def _stage_settings(settings: Settings, run_id: str, stage: str, partitions: int) -> Settings:
    suffix = f"bench-{run_id}-{stage}"
    topics = {
        name: f"{getattr(settings, name)}.{suffix}"
        for name, field in Settings.model_fields.items()
        if name.startswith("topic_") and field.annotation is str
    }
    return settings.model_copy(
        update={**topics, "topic_partitions": partitions, "app_id": f"ottscore-{suffix}"}
    )


def _prepare(settings: Settings, workload: Workload) -> None:
    """Create the stage's topics and produce the input (for the consumers without a worker)."""
    ensure_topics(settings)
    started = time.perf_counter()
    produce_fast(settings, workload.records)
    _log(
        f"produced {len(workload.records):,} records to {settings.topic_events} in "
        f"{time.perf_counter() - started:.1f} s"
    )


def _delete_bench_topics(settings: Settings, run_id: str) -> None:
    try:
        with admin_client(kafka_python_config(settings), timeout=30.0) as admin:
            mine = [t for t in admin.list_topics() if f"bench-{run_id}" in t]
            if mine:
                admin.delete_topics(mine, raise_errors=False)
    except (KafkaError, OSError) as error:
        _log(f"could not delete the bench topics: {error}")


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _targets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {}
    for key, comparison, target in TARGETS:
        value = report.get(key)
        passed = None
        if value is not None:
            passed = value >= target if comparison == ">=" else value <= target
        checks[key] = {"target": f"{comparison} {target:g}", "value": value, "pass": passed}
    return checks


def run_bench(
    settings: Settings,
    *,
    events: int = 200_000,
    users: int = 20_000,
    items: int = 5_000,
    partitions: int = 4,
    runs: int = 1,
    latency_seconds: float = 60.0,
    latency_rate: float = 2_000.0,
    cache_users: int | None = None,
    skip: Sequence[str] = (),
    report_path: Path | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return its report (written as JSON to ``report_path`` if given).

    Parameters
    ----------
    settings
        Base settings: the cluster, the worker's store and tuning; topic names and app ids
        get a suffix of their own.
    events, users, items
        Size of the synthetic workload.
    partitions
        Partitions of the input topic (and of every topic the bench creates).
    runs
        Repetitions of each throughput measurement; the report has their medians.
    latency_seconds, latency_rate
        Length and offered load (records/s) of the latency measurement.
    cache_users
        The user states the ``bounded`` worker holds (``OTTSCORE_USER_CACHE_MAX``); by
        default a tenth of the users the workload's events come from.
    skip
        Measurements of :data:`MEASUREMENTS` not to run (their figures are null).
    report_path
        Where to write the JSON report.
    """
    unknown = set(skip) - set(MEASUREMENTS)
    if unknown:
        raise ValueError(f"unknown measurements {sorted(unknown)}; known: {MEASUREMENTS}")
    if min(events, users, items, partitions, runs, cache_users or 1) < 1 or latency_rate <= 0:
        raise ValueError(
            "events, users, items, partitions, runs, cache users and the rate must be positive"
        )
    wanted = [m for m in MEASUREMENTS if m not in skip]
    if "quix" in wanted:
        try:
            from agents.devtools.quix import quix_events_per_s
        except ImportError as missing:
            raise RuntimeError(
                f"the Quix Streams peer needs {missing.name}: pip install 'ottscore[bench]', "
                "or --skip quix"
            ) from missing
    run_id = uuid.uuid4().hex[:8]
    _log(f"simulating {events:,} events of {users:,} users over {items:,} items …")
    workload = Workload.simulate(events=events, users=users, items=items)
    users_seen = len({key for key, _ in workload.records})
    if cache_users is None:  # ten times more users than the cache holds
        cache_users = max(1, users_seen // 10)
    results: dict[str, list[float]] = {}
    single: list[WorkerRun] = []
    pairs: list[WorkerRun] = []
    bounded: list[WorkerRun] = []
    latency = None
    with (
        bench_broker(settings) as (cluster, version),
        tempfile.TemporaryDirectory(prefix="ottscore-bench-") as tmp,
    ):
        workdir = Path(tmp)
        try:
            base = _stage_settings(cluster, run_id, "throughput", partitions)
            if {"raw", "baseline", "quix"} & set(wanted):
                _prepare(base, workload)
            for run in range(runs):
                if "raw" in wanted:
                    results.setdefault("raw", []).append(
                        _timed("raw aiokafka", lambda: raw_aiokafka_events_per_s(base, events))
                    )
                if "baseline" in wanted:
                    results.setdefault("baseline", []).append(
                        _timed(
                            "kafka-python baseline",
                            lambda: baseline_kafka_python_events_per_s(
                                base, workload.catalog, events
                            ),
                        )
                    )
                if "quix" in wanted:
                    results.setdefault("quix", []).append(
                        _timed(
                            "Quix Streams application",
                            lambda: quix_events_per_s(base, workload.catalog, events),
                        )
                    )
                if "core" in wanted:
                    results.setdefault("core", []).append(
                        _timed("core in-process", lambda: core_events_per_s(base, workload))
                    )
                    results.setdefault("core_experiments", []).append(
                        _timed(
                            "core in-process, two experiments running",
                            lambda: core_events_per_s(
                                base, workload, experiments=bench_experiments(workload)
                            ),
                        )
                    )
                    # acting on the scores (artworks in the catalog, CRM triggers) and not,
                    # back to back
                    plain = base.model_copy(update={"crm_triggers": ()})
                    results.setdefault("core_plain", []).append(
                        _timed(
                            "core in-process, no artworks, no triggers",
                            functools.partial(core_events_per_s, plain, workload),
                        )
                    )
                    acting = Workload(workload.records, with_artworks(workload.catalog))
                    results.setdefault("core_acting", []).append(
                        _timed(
                            "core in-process, artworks and triggers",
                            functools.partial(core_events_per_s, base, acting),
                        )
                    )
                for count in (1, 2) if "two_workers" in wanted else (1,):
                    if count == 1 and not {"worker", "two_workers"} & set(wanted):
                        continue
                    stage = _stage_settings(cluster, run_id, f"workers{count}-{run}", partitions)
                    result = run_workers(stage, workload, count=count, workdir=workdir)
                    _log(f"{count} worker(s): {result.events_per_s:,.0f} events/s")
                    (single if count == 1 else pairs).append(result)
                if "bounded" in wanted:  # right after the worker holding every user
                    stage = _stage_settings(cluster, run_id, f"bounded-{run}", partitions)
                    stage = stage.model_copy(update={"user_cache_max": cache_users})
                    result = run_workers(stage, workload, count=1, workdir=workdir)
                    _log(
                        f"1 worker holding {cache_users:,} users: "
                        f"{result.events_per_s:,.0f} events/s, "
                        f"peak RSS {result.peak_rss_bytes / 2**20:,.0f} MiB"
                    )
                    bounded.append(result)
            state = state_bytes_per_user(base, single[0].app_id) if single else None
            if "latency" in wanted:
                latency = _latency(
                    _stage_settings(cluster, run_id, "latency", partitions),
                    users=users,
                    items=items,
                    workdir=workdir,
                    seconds=latency_seconds,
                    rate=latency_rate,
                )
        finally:
            _delete_bench_topics(cluster, run_id)
    worker_rate = _median([r.events_per_s for r in single])
    pair_rate = _median([r.events_per_s for r in pairs])
    raw_rate = _median(results.get("raw", []))
    baseline_rate = _median(results.get("baseline", []))
    quix_rate = _median(results.get("quix", []))
    report: dict[str, Any] = {
        "raw_aiokafka_events_per_s": raw_rate,
        "baseline_kafka_python_events_per_s": baseline_rate,
        "quix_events_per_s": quix_rate,
        "worker_events_per_s": worker_rate,
        "core_events_per_s": _median(results.get("core", [])),
        "core_experiments_events_per_s": _median(results.get("core_experiments", [])),
        # per run, with / without experiments: the pair ran back to back
        "experiments_core_ratio": _median(
            [
                _ratio(with_, without)
                for with_, without in zip(
                    results.get("core_experiments", []), results.get("core", []), strict=True
                )
            ]
        ),
        "core_acting_events_per_s": _median(results.get("core_acting", [])),
        # per run, artworks and triggers / neither: the pair ran back to back
        "acting_core_ratio": _median(
            [
                _ratio(with_, without)
                for with_, without in zip(
                    results.get("core_acting", []), results.get("core_plain", []), strict=True
                )
            ]
        ),
        "latency_p50_s": latency.p50_s if latency else None,
        "latency_p99_s": latency.p99_s if latency else None,
        "latency_outputs": latency.outputs if latency else None,
        "latency_unmatched": latency.unmatched if latency else None,
        "latency_offered_events_per_s": latency.offered_rate if latency else None,
        "state_bytes_per_user": state,
        "peak_rss_bytes": max(r.peak_rss_bytes for r in single) if single else None,
        "two_workers_speedup": _ratio(pair_rate, worker_rate),
        "users_seen": users_seen,
        "bounded_cache_users": cache_users if bounded else None,
        "bounded_worker_events_per_s": _median([r.events_per_s for r in bounded]),
        "bounded_peak_rss_bytes": max(r.peak_rss_bytes for r in bounded) if bounded else None,
        # per run, bounded / holding every user: the pair ran back to back
        "bounded_vs_worker": _median(
            [_ratio(b.events_per_s, w.events_per_s) for b, w in zip(bounded, single, strict=False)]
        )
        if bounded and single
        else None,
        "worker_records_received": single[0].records_received if single else None,
        "worker_vs_raw_aiokafka": _ratio(worker_rate, raw_rate),
        "worker_vs_kafka_python": _ratio(worker_rate, baseline_rate),
        "worker_vs_quix": _ratio(worker_rate, quix_rate),
        "runs": runs,
        # every run's rate, in run order: the medians above hide how far runs spread
        "runs_events_per_s": {
            "raw_aiokafka": results.get("raw", []),
            "baseline_kafka_python": results.get("baseline", []),
            "quix": results.get("quix", []),
            "core": results.get("core", []),
            "core_experiments": results.get("core_experiments", []),
            "core_plain": results.get("core_plain", []),
            "core_acting": results.get("core_acting", []),
            "worker": [r.events_per_s for r in single],
            "two_workers": [r.events_per_s for r in pairs],
            "bounded_worker": [r.events_per_s for r in bounded],
        },
        "events": events,
        "users": users,
        "items": items,
        "partitions": partitions,
        "latency_seconds": latency_seconds,
        "latency_rate": latency_rate,
        "skipped": [m for m in MEASUREMENTS if m in skip],
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "kafka": version,
            "platform": platform.platform(),
            "store": settings.store,
        },
    }
    report["targets"] = _targets(report)
    if report_path is not None:
        Path(report_path).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _latency(
    settings: Settings, *, users: int, items: int, workdir: Path, seconds: float, rate: float
) -> LatencyResult:
    """Event → score latency of one worker on topics of its own (:mod:`agents.devtools.latency`)."""
    warmup = max(settings.topic_partitions * 25, 100)
    records = Workload.simulate(
        events=warmup + max(1, int(rate * seconds)), users=users, items=items, seed=SEED + 1
    )
    publish_catalog(settings, records.catalog)
    worker = WorkerProcess(
        worker_settings(settings, workdir, 0), workdir / f"{settings.app_id}.log"
    ).start()
    try:
        result = measure_latency(
            worker.settings,
            records.records,
            rate=rate,
            warmup=warmup,
            records_taken=worker.records_new,
        )
    finally:
        worker.stop()
    p50, p99 = (f"{q:.3f} s" if q is not None else "-" for q in (result.p50_s, result.p99_s))
    _log(
        f"latency at {result.offered_rate:,.0f} events/s offered: p50 {p50}, p99 {p99} over "
        f"{result.outputs:,} scores ({result.unmatched} unmatched)"
    )
    return result


def format_report(report: dict[str, Any]) -> str:
    """The report as a table: figure, value, target, pass."""
    rows = [("figure", "value", "target", "pass")]
    targets = report["targets"]
    for key in (
        "raw_aiokafka_events_per_s",
        "baseline_kafka_python_events_per_s",
        "quix_events_per_s",
        "worker_events_per_s",
        "core_events_per_s",
        "core_experiments_events_per_s",
        "experiments_core_ratio",
        "core_acting_events_per_s",
        "acting_core_ratio",
        "worker_vs_raw_aiokafka",
        "worker_vs_kafka_python",
        "worker_vs_quix",
        "latency_p50_s",
        "latency_p99_s",
        "state_bytes_per_user",
        "peak_rss_bytes",
        "two_workers_speedup",
        "bounded_cache_users",
        "bounded_worker_events_per_s",
        "bounded_vs_worker",
        "bounded_peak_rss_bytes",
    ):
        value = report[key]
        check = targets.get(key, {})
        passed = {True: "PASS", False: "FAIL", None: "-"}[check.get("pass")]
        shown = "skipped" if value is None else f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
        rows.append((key, shown, check.get("target", ""), passed if check else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    workload = (
        f"workload: {report['events']:,} events, {report['users']:,} users, "
        f"{report['items']:,} items, {report['partitions']} partitions, runs {report['runs']}; "
        f"{report['machine']['cpu_count']} CPUs, Python {report['machine']['python']}, "
        f"Kafka {report['machine']['kafka']}"
    )
    return "\n".join([workload, *lines])
