"""The experiment results the workers publish as event time passes are the offline report's.

The processor steps each user's outcome inside the KPI windows, each partition sends its
changes per hour boundary with its KPI partials, and the combiner looks once every
partition has passed a boundary. At every boundary it looks at, the always-valid p-value,
the confidence sequence and the sample-ratio p-value must equal, to the bit, those of
``build_report`` over the same events (which looks at the same boundaries, running one
partition's code over them in order); after crashes mid write-back
the records must be the same as those of a clean run.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from worker_harness import (
    PARTITIONS,
    Worker,
    crashed_twice,
    input_records,
    shuffled,
    simulated,
    with_closers,
)

from pipeline.config import Settings
from pipeline.core.events import Event, EventDecoder, format_ts
from pipeline.experiments.definition import parse_definition
from pipeline.experiments.live import OUTSIDE
from pipeline.experiments.live_results import ResultsCombiner
from pipeline.experiments.outcomes import METRICS
from pipeline.experiments.report import Report, build_report
from pipeline.kpis.windows import DAY_MS, HOUR_MS
from pipeline.sim.simulate import SimulationConfig

WINDOW_S = 2 * 86_400.0  # users judged on their first two days: most of 12 days' users end
SETTINGS = Settings(topic_partitions=PARTITIONS, experiment_window_s=WINDOW_S)
START_MS = SimulationConfig(users=1, days=1, seed=0).start_ms + DAY_MS
STOP_MS = START_MS + 6 * DAY_MS + 5 * HOUR_MS
DEFINITIONS = [
    {
        "schema_version": 1,
        "id": "rail",
        "salt": "rail-live",
        "start": format_ts(START_MS),
        "metrics": list(METRICS),
        "variants": [
            {"name": "control", "weight": 0.5, "control": True},
            {"name": "trending", "weight": 0.5, "knobs": {"list_source": "trending"}},
        ],
    },
    {
        "schema_version": 1,
        "id": "three",
        "salt": "three-live",
        "start": format_ts(START_MS),
        "stop": format_ts(STOP_MS),
        "metrics": ["watch_seconds_per_user", "click_play_conversion"],
        "variants": [
            {"name": "a", "weight": 0.2, "control": True},
            {"name": "b", "weight": 0.3},
            {"name": "c", "weight": 0.5, "knobs": {"list_size": 5}},
        ],
    },
]


@functools.cache
def schema(name: str) -> Draft202012Validator:
    path = Path(__file__).resolve().parents[3] / "schemas" / f"{name}.schema.json"
    return Draft202012Validator(json.loads(path.read_text()))


def results(partials: list[bytes]) -> dict[tuple[str, int], dict[str, Any]]:
    """The result records the combiner gives, by (experiment, boundary); each given once.

    Every partial record and every result must match its published schema.
    """
    combiner = ResultsCombiner(PARTITIONS)
    given: dict[tuple[str, int], dict[str, Any]] = {}
    for value in partials:
        record = orjson.loads(value)
        schema("kpi_partial").validate(record)
        for result in combiner.feed(
            record["partition"],
            record["released_ms"],
            record.get("outcomes", []),
            record.get("experiments", {}),
        ):
            schema("experiment_result").validate(orjson.loads(orjson.dumps(result)))
            key = (result["experiment"], result["as_of_ms"])
            assert given.setdefault(key, result) == result, key
    return given


def offline(worker: Worker, values: list[bytes], experiment_id: str) -> Report:
    """``build_report`` over the events, sorted by event time."""
    decoder = EventDecoder(clock=lambda: 4_102_444_800.0)
    events, seen = [], set()
    for value in values:
        event = decoder.decode(value)
        if isinstance(event, Event) and event.event_id not in seen:
            seen.add(event.event_id)
            events.append(event)
    events.sort(key=lambda event: event.ts_ms)
    assignments = {
        user_id: state.experiments[experiment_id]
        for user_id, state in worker.processor.users.items()
        if state.experiments.get(experiment_id, OUTSIDE) != OUTSIDE
    }
    experiment = parse_definition(next(d for d in DEFINITIONS if d["id"] == experiment_id))
    return build_report(experiment, assignments, events, window_s=WINDOW_S)


def assert_live_equals_offline(live: dict[tuple[str, int], dict], worker: Worker,
                               values: list[bytes]) -> None:  # fmt: skip
    for experiment_id in ("rail", "three"):
        report = offline(worker, values, experiment_id)
        looks = {look.ts_ms: look for look in report.looks}
        mine = sorted((t, r) for (e, t), r in live.items() if e == experiment_id)
        compared = 0
        for boundary, record in mine:
            look = looks[boundary]
            assert record["srm_p_value"] == look.srm_p_value, boundary
            for row in record["results"]:
                key = (row["metric"], row["variant"])
                lower, upper = look.intervals[key]
                assert row["p_value"] == look.p_values[key], (boundary, key)
                assert row["interval"] == [
                    None if abs(lower) == float("inf") else lower,
                    None if abs(upper) == float("inf") else upper,
                ], (boundary, key)
            compared += 1
        assert compared >= 100, (experiment_id, compared)
        last = mine[-1][1]
        # all but the closing events' own users (their events stay within the lateness)
        assert 0 <= sum(report.users.values()) - sum(last["users"].values()) <= PARTITIONS
        assert sum(last["users"].values()) > 60
        assert min(row["users"] for row in last["results"]) > 10  # users whose window ended
        assert any(row["p_value"] < 1.0 for row in last["results"])  # the tests saw evidence


def test_live_results_equal_the_offline_report_at_every_look() -> None:
    values = with_closers(list(simulated()))
    worker = Worker({}, {}, settings=SETTINGS, experiments=DEFINITIONS)
    assert worker.run(input_records(values), commit_every=500)
    assert_live_equals_offline(results(worker.partials), worker, values)


def test_events_shuffled_within_the_lateness_give_the_same_results() -> None:
    values = with_closers(shuffled(simulated(), 0.05, seed=4))
    worker = Worker({}, {}, settings=SETTINGS, experiments=DEFINITIONS)
    assert worker.run(input_records(values), commit_every=500)
    assert worker.processor.tally.kpi_late == 0
    assert_live_equals_offline(results(worker.partials), worker, values)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_crash_mid_write_back_and_a_restart_give_the_same_results(seed: int) -> None:
    values = with_closers(shuffled(simulated(), 0.05, seed=seed))
    partials, clean = crashed_twice(
        input_records(values), seed, settings=SETTINGS, experiments=DEFINITIONS
    )
    assert results(partials) == results(clean.partials)
    assert_live_equals_offline(results(partials), clean, values)


def test_the_combiner_state_survives_a_restart_between_any_two_records() -> None:
    values = with_closers(list(simulated()))
    worker = Worker({}, {}, settings=SETTINGS, experiments=DEFINITIONS)
    worker.run(input_records(values), commit_every=500)
    whole = results(worker.partials)
    combiner = ResultsCombiner(PARTITIONS)
    given: dict[tuple[str, int], dict[str, Any]] = {}
    for n, value in enumerate(worker.partials):
        if n % 7 == 3:  # stored and read back, as the agent does after each record
            combiner = ResultsCombiner.from_bytes(combiner.to_bytes(), partitions=PARTITIONS)
        record = orjson.loads(value)
        outcomes, meta = record.get("outcomes", []), record.get("experiments", {})
        for result in combiner.feed(record["partition"], record["released_ms"], outcomes, meta):
            given[result["experiment"], result["as_of_ms"]] = result
    assert given == whole


def test_changes_before_any_definition_are_kept_until_one_comes() -> None:
    """A partition whose worker lacked the definition sends changes without it: none lost."""
    from pipeline.experiments.live_results import PartitionOutcomes

    partition = PartitionOutcomes(window_ms=60_000)
    scopes = (("all",), ("experiment", "x", "b"))
    for n, variant in enumerate(["b", "control", "b", "control"]):
        held: dict = {}
        partition.count(held, f"u{n}", 1_000 * n, (("all",), ("experiment", "x", variant)),
                        (1, 1, 0, 5_000 * (n + 1), 0, 0))  # fmt: skip
    meta = {"x": {"variants": [["control", 0.5, True], ["b", 0.5, False]],
                  "metrics": ["watch_seconds_per_user"]}}  # fmt: skip
    blind = ResultsCombiner(1)
    assert blind.feed(0, 3_600_000, partition.take(3_600_000), {}) == []  # no definition
    blind = ResultsCombiner.from_bytes(blind.to_bytes(), partitions=1)
    late = PartitionOutcomes(window_ms=60_000)
    late.count({}, "u9", 3_700_000, scopes, (1, 1, 0, 9_000, 0, 0))
    (record,) = blind.feed(0, 7_200_000, late.take(7_200_000), meta)
    row = record["results"][0]
    assert record["users"] == {"control": 2, "b": 3}
    assert (row["control_users"], row["users"]) == (2, 3)
    assert (row["control_mean"], row["mean"]) == (15.0, 29 / 3)  # (10 + 20) / 2, (5 + 15 + 9) / 3
