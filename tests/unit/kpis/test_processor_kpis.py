"""The workers' KPI windows, added up by the combiner, are the batch count of the file.

Whatever the arrival order within the lateness; and a restart from the stored states at any
point publishes nothing different.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from worker_harness import (
    PARTITIONS,
    SETTINGS,
    Worker,
    crashed_twice,
    input_records,
    shuffled,
    simulated,
    with_closers,
)

from pipeline.kpis.combine import KpiCombiner
from pipeline.kpis.windows import DAY_MS, RETURN_MS, WINDOWS
from pipeline.offline.kpis import kpis_of_file
from pipeline.sim.simulate import write_jsonl


def combined(partials: list[bytes]) -> dict[str, dict[str, Any]]:
    """The KPI records the combiner gives, by key; a key given twice must be identical."""
    combiner = KpiCombiner(PARTITIONS)
    given: dict[str, dict[str, Any]] = {}
    for value in partials:
        for record in combiner.feed(orjson.loads(value)):
            assert given.setdefault(record["key"], record) == record, record["key"]
    return given


def batch(values: list[bytes], tmp_path: Path) -> dict[str, dict[str, Any]]:
    """``ottscore kpis`` of the same records (sorted by event time), by key."""
    path = tmp_path / "events.jsonl"
    write_jsonl(((b"", v) for v in values), path)
    windows, returns, late = kpis_of_file(path, settings=SETTINGS, partitions=PARTITIONS)
    assert late == 0
    return {r["key"]: r for r in windows + returns}


def assert_equal_records(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        if isinstance(value, float):
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
        else:
            assert got[name] == value, name


def assert_live_equals_batch(live: dict[str, dict], expected: dict[str, dict]) -> None:
    """Every window the combiner gave is the batch's; every batch window closed is given."""
    assert live, "no KPI record was given"
    for key, record in live.items():
        assert_equal_records(record, expected[key])
    missing = set(expected) - set(live)
    # only the windows of the closing events themselves (ten days on) stay open
    assert all(expected[key]["active_users"] <= PARTITIONS for key in missing), sorted(missing)
    assert {r["window"] for r in live.values()} == {"hour", "day", "return_7d"}


def test_the_combined_records_are_the_batch_count_of_the_file(tmp_path: Path) -> None:
    values = with_closers(list(simulated()))
    worker = Worker({}, {})
    assert worker.run(input_records(values), commit_every=500)
    assert_live_equals_batch(combined(worker.partials), batch(values, tmp_path))


def test_events_shuffled_within_the_lateness_give_the_same_records(tmp_path: Path) -> None:
    values = with_closers(shuffled(simulated(), 0.05, seed=3))
    assert values != with_closers(list(simulated()))
    worker = Worker({}, {})
    assert worker.run(input_records(values), commit_every=500)
    assert worker.processor.tally.kpi_late == 0
    assert_live_equals_batch(combined(worker.partials), batch(values, tmp_path))


@pytest.mark.parametrize("seed", range(1, 7))
def test_a_crash_mid_write_back_and_a_restart_publish_the_same_windows(
    seed: int, tmp_path: Path
) -> None:
    """Killed twice while writing states back; the restarts replay from the committed offsets.

    Some users are stored ahead of the others, and the offsets are not committed.
    """
    values = with_closers(shuffled(simulated(), 0.05, seed=seed))
    partials, clean = crashed_twice(input_records(values), seed)
    assert combined(partials) == combined(clean.partials)
    assert_live_equals_batch(combined(partials), batch(values, tmp_path))


def test_a_window_is_given_by_the_first_record_of_its_partition_past_its_close() -> None:
    """Its end plus the 30 minutes of conversion, plus the lateness (in ``released_ms``)."""
    values = with_closers(list(simulated()))
    worker = Worker({}, {})
    worker.run(input_records(values), commit_every=500)
    follow = int(max(SETTINGS.session_gap_s, 600) * 1000)
    previous: dict[int, int] = {}
    given = 0
    for value in worker.partials:
        record = orjson.loads(value)
        before = previous.get(record["partition"], -1)
        for window in record["windows"]:
            close = window["start_ms"] + WINDOWS[window["window"]] + follow
            assert before < close <= record["released_ms"]
            given += 1
        for back in record["returns"]:
            assert before < back["start_ms"] + DAY_MS + RETURN_MS <= record["released_ms"]
        previous[record["partition"]] = record["released_ms"]
    assert given > 500
