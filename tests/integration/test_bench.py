"""``ottscore bench`` end to end on the session's broker, with a workload small enough for CI."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from agents.cli import main
from agents.devtools.bench import TARGETS

pytestmark = pytest.mark.slow

FIGURES = (
    "raw_aiokafka_events_per_s",
    "baseline_kafka_python_events_per_s",
    "quix_events_per_s",
    "worker_events_per_s",
    "core_events_per_s",
    "core_experiments_events_per_s",
    "experiments_core_ratio",
    "core_acting_events_per_s",
    "acting_core_ratio",
    "latency_p50_s",
    "latency_p99_s",
    "state_bytes_per_user",
    "peak_rss_bytes",
    "two_workers_speedup",
    "bounded_cache_users",
    "bounded_worker_events_per_s",
    "bounded_vs_worker",
    "bounded_peak_rss_bytes",
    "worker_vs_raw_aiokafka",
    "worker_vs_kafka_python",
    "worker_vs_quix",
)
EVENTS = 40_000  # two workers at ~7k events/s each must both be timed before they are done


def test_bench_reports_every_figure_and_the_worker_takes_every_record(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("OTTSCORE_STORE", "memory://")
    report_path = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as done:
        main([
            "bench", "--events", str(EVENTS), "--users", "1000", "--items", "500",
            "--partitions", "2", "--latency-seconds", "5", "--latency-rate", "300",
            "--report", str(report_path),
        ])  # fmt: skip
    assert done.value.code == 0

    report = json.loads(report_path.read_text())
    for figure in FIGURES:
        value = report[figure]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, figure
    assert report["latency_p50_s"] <= report["latency_p99_s"]
    assert report["latency_outputs"] > 0 and report["latency_unmatched"] == 0
    assert report["worker_vs_raw_aiokafka"] == pytest.approx(
        report["worker_events_per_s"] / report["raw_aiokafka_events_per_s"]
    )
    # the accounting: the worker took in exactly the records produced, once each
    assert report["events"] == EVENTS
    assert report["worker_records_received"] == EVENTS
    assert (report["users"], report["items"], report["partitions"], report["runs"]) == (
        1000, 500, 2, 1,
    )  # fmt: skip
    # one run: each stage's single rate is its median, and two workers over one is the speedup
    runs = report["runs_events_per_s"]
    assert runs["worker"] == [report["worker_events_per_s"]]
    assert runs["core"] == [report["core_events_per_s"]]
    assert runs["quix"] == [report["quix_events_per_s"]]
    assert report["worker_vs_quix"] == pytest.approx(
        report["worker_events_per_s"] / report["quix_events_per_s"]
    )
    assert runs["core_experiments"][0] / runs["core"][0] == pytest.approx(
        report["experiments_core_ratio"]
    )
    assert runs["core_acting"][0] / runs["core_plain"][0] == pytest.approx(
        report["acting_core_ratio"]
    )
    assert runs["two_workers"][0] / runs["worker"][0] == pytest.approx(
        report["two_workers_speedup"]
    )
    assert report["bounded_cache_users"] == report["users_seen"] // 10 > 0
    assert runs["bounded_worker"][0] / runs["worker"][0] == pytest.approx(
        report["bounded_vs_worker"]
    )
    machine = report["machine"]
    assert machine["cpu_count"] >= 1 and machine["python"] and machine["kafka"]
    assert set(report["targets"]) == {key for key, _, _ in TARGETS}
    for key, check in report["targets"].items():
        assert check["value"] == report[key] and isinstance(check["pass"], bool), key

    # nothing is left behind on the cluster
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        deadline = time.monotonic() + 15
        while left := [topic for topic in admin.list_topics() if "bench-" in topic]:
            assert time.monotonic() < deadline, f"topics left behind: {left}"
            time.sleep(0.5)
    finally:
        admin.close()
