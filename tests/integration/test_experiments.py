"""Experiments on the real broker: the CLI refuses bad definitions, the worker runs good ones.

``ottscore experiment create`` checks a definition as the workers do and refuses each kind
of bad one with its reason (exit status 2); definitions written to the topic by anybody
else are refused by the worker, counted by reason, and the worker goes on. A running
experiment tags every list it shapes with the user's variant, and its trending arm
publishes the trending list.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import free_ports
from worker_process import WorkerProcess, labelled, produce_all, read_topic

from agents.devtools.produce import produce
from pipeline.config import Settings
from pipeline.core.personalize import TRENDING_VERSION
from pipeline.experiments.assignment import assign
from pipeline.experiments.definition import parse_definition
from pipeline.sim.simulate import SimulationConfig, Simulator


def definition(start: str, **changes: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "id": "rail",
        "salt": "rail-salt",
        "start": start,
        "metrics": ["click_play_conversion"],
        "variants": [
            {"name": "control", "weight": 0.5, "control": True},
            {"name": "trending", "weight": 0.5, "knobs": {"list_source": "trending"}},
        ],
    } | changes


def bad_definitions(start: str) -> dict[str, bytes]:
    """One definition per reason it must be refused for."""
    good = definition(start)
    heavy = [{**good["variants"][0], "weight": 0.7}, good["variants"][1]]
    no_control = [{**v, "control": False} for v in good["variants"]]
    two_controls = [{**v, "control": True} for v in good["variants"]]
    twins = [good["variants"][0], {**good["variants"][1], "name": "control"}]
    unknown = [good["variants"][0], {**good["variants"][1], "knobs": {"colour": "red"}}]
    reversed_thresholds = {"churn_thresholds": {"medium": 0.8, "high": 0.2}}
    reversed_knobs = [good["variants"][0], {**good["variants"][1], "knobs": reversed_thresholds}]
    cases: dict[str, Any] = {
        "schema": definition(start, variants="two"),
        "weights_sum": definition(start, variants=heavy),
        "no_control": definition(start, variants=no_control),
        "several_controls": definition(start, variants=two_controls),
        "duplicate_variant": definition(start, variants=twins),
        "unknown_knob": definition(start, variants=unknown),
        "thresholds_order": definition(start, variants=reversed_knobs),
        "stop_before_start": definition(start, stop="2001-01-01T00:00:00Z"),
    }
    return {"not_json": b'{"id": "rail"', **{k: orjson.dumps(v) for k, v in cases.items()}}


def cli(settings: Settings, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agents", "experiment", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        env={**os.environ, **settings.to_env()},
    )


def test_the_cli_refuses_each_bad_definition_with_its_reason(settings_factory) -> None:
    settings = settings_factory()
    start = "2026-01-01T00:00:00Z"
    for reason, text in bad_definitions(start).items():
        result = cli(settings, "create", "-", stdin=text)
        lines = result.stderr.decode().strip().splitlines()
        assert result.returncode == 2, (reason, result.stderr)
        assert len(lines) == 1 and lines[0].startswith(f"ottscore experiment: refused: {reason}:")
    assert cli(settings, "create", "-", stdin=orjson.dumps(definition(start))).returncode == 0
    again = cli(settings, "create", "-", stdin=orjson.dumps(definition(start)))
    assert again.returncode == 0  # the same definition again: a retried send
    other = definition(start, metrics=["return_7d"])
    changed = cli(settings, "create", "-", stdin=orjson.dumps(other))
    assert changed.returncode == 2 and b"refused: duplicate_id:" in changed.stderr
    same_salt = cli(settings, "create", "-", stdin=orjson.dumps(definition(start, id="rail-2")))
    assert same_salt.returncode == 2 and b"refused: salt_reused:" in same_salt.stderr
    assert cli(settings, "stop", "rail", "--at", "2026-02-01T00:00:00Z").returncode == 0
    listed = cli(settings, "list").stdout.decode().splitlines()
    assert listed[1].split()[:4] == ["rail", "stopped", "2026-01-01T00:00:00.000Z",
                                     "2026-02-01T00:00:00.000Z"]  # fmt: skip
    missing = cli(settings, "stop", "nope")
    assert missing.returncode == 2 and b"no experiment 'nope'" in missing.stderr


def test_the_worker_counts_bad_definitions_and_runs_the_good_one(
    settings_factory, tmp_path: Path
) -> None:
    settings = settings_factory(metrics_port=free_ports(1)[0], experiments_refresh_s=1.0)
    simulator = Simulator(SimulationConfig(users=120, days=8, seed=9))
    records = list(simulator.records())
    start = orjson.loads(records[len(records) // 3][1])["ts"]
    bad = bad_definitions(start)
    written = [(f"bad-{i}".encode(), text) for i, text in enumerate(bad.values())]
    produce(settings, [*written, (b"rail", orjson.dumps(definition(start)))],
            topic=settings.topic_experiments)  # fmt: skip
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        produce_all(settings, records)
        worker.wait_received(len(records))
        samples = worker.samples()
        assert worker.probe("/healthz")[0] == 200
    finally:
        assert worker.stop() == 0
    refused = labelled(samples, "ottscore_experiment_definitions_refused_total", "reason")
    assert {reason: n for reason, n in refused.items() if n} == dict.fromkeys(bad, 1)

    experiment = parse_definition(definition(start))
    arms: Counter[str] = Counter()
    for record in read_topic(settings, settings.topic_scores_personalization):
        value = orjson.loads(record.value)
        if "experiments" not in value:  # before the start (users join at their next event)
            assert value["ts"] < start
            continue
        variant = value["experiments"]["rail"]
        assert variant == assign(experiment, value["user_id"])
        assert (value["model_version"] == TRENDING_VERSION) == (variant == "trending")
        arms[variant] += 1
    assert arms["control"] > 20 and arms["trending"] > 20
    print(f"\nexperiment on the real broker: lists by arm {dict(arms)}, refused {dict(refused)}")


@pytest.mark.slow
def test_assignments_survive_a_kill_and_the_population_decided_before_it_holds(
    settings_factory, tmp_path: Path
) -> None:
    """Only users seen before the start take part; a worker killed mid-run forgets nobody."""
    settings = settings_factory(metrics_port=free_ports(1)[0], store="rocksdb://")
    simulator = Simulator(SimulationConfig(users=150, days=10, seed=12, new_user_fraction=0.3))
    records = list(simulator.records())
    start = orjson.loads(records[len(records) // 3][1])["ts"]
    returning = definition(start, population={"new_users": False})
    produce(settings, [(b"rail", orjson.dumps(returning))], topic=settings.topic_experiments)
    first_seen: dict[str, str] = {}
    for _, value in records:
        event = orjson.loads(value)
        first_seen.setdefault(event["user_id"], event["ts"])
    half = 2 * len(records) // 3
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        produce_all(settings, records[:half])
        worker.wait_received(half)
    finally:
        worker.stop(signal.SIGKILL)
    worker = WorkerProcess(settings, tmp_path / "worker-2.log").start()
    try:
        produce_all(settings, records[half:])
        worker.wait_until(
            lambda: worker.metric("ottscore_records_received_total") >= len(records) - half,
            timeout_s=120, what="the rest of the records",
        )  # fmt: skip
    finally:
        assert worker.stop() == 0
    experiment = parse_definition(returning)
    tags: dict[str, set[str]] = {}
    for record in read_topic(settings, settings.topic_scores_personalization):
        value = orjson.loads(record.value)
        if "experiments" in value:
            tags.setdefault(value["user_id"], set()).add(value["experiments"]["rail"])
    assert tags and all(len(variants) == 1 for variants in tags.values())
    assert all(first_seen[user] < start for user in tags)  # new users stay outside
    assert all(variants == {assign(experiment, user)} for user, variants in tags.items())
    newcomers = [user for user, ts in first_seen.items() if ts >= start]
    assert newcomers and not set(newcomers) & set(tags)
    print(f"\nkilled mid-run: {len(tags)} users tagged, {len(newcomers)} newcomers outside")
