"""``ottscore experiment report`` over a file: the workers' assignment, a table and a plot."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from agents.cli import main
from pipeline.config import Settings
from pipeline.experiments.assignment import assign
from pipeline.experiments.definition import parse_definition
from pipeline.offline.experiment_report import report_events
from pipeline.sim.simulate import SimulationConfig, Simulator, write_catalog, write_jsonl


def definition(start: str) -> dict:
    return {
        "schema_version": 1,
        "id": "rail",
        "salt": "rail-salt",
        "start": start,
        "metrics": ["click_play_conversion", "watch_seconds_per_user", "sessions_per_user"],
        "variants": [
            {"name": "control", "weight": 0.5, "control": True},
            {"name": "trending", "weight": 0.5, "knobs": {"list_source": "trending"}},
        ],
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, str]:
    directory = tmp_path_factory.mktemp("report")
    simulator = Simulator(SimulationConfig(users=600, days=21, seed=4, duplicate_rate=0.01))
    events, catalog = directory / "events.jsonl", directory / "catalog.jsonl"
    write_jsonl(simulator.records(), events)
    write_catalog(simulator.catalog(), catalog)
    start = orjson.loads(events.read_bytes().split(b"\n", 1)[0])["ts"]
    definitions = directory / "definitions.jsonl"
    definitions.write_bytes(orjson.dumps(definition(start)) + b"\n")
    return events, catalog, definitions, start


def test_users_ignoring_the_lists_show_no_difference_and_the_split_is_the_hash(files) -> None:
    """The open-loop simulator's users never see the lists: an A/A in effect."""
    events, catalog, _, start = files
    report = report_events(events, [definition(start)], "rail", settings=Settings(),
                           catalog_path=catalog)  # fmt: skip
    assert sum(report.users.values()) > 400 and report.srm_p_value > 0.05
    assert not any(row.significant for row in report.rows)
    assert {row.metric for row in report.rows} == set(definition(start)["metrics"])
    experiment = parse_definition(definition(start))
    assert report.users["trending"] == sum(
        assign(experiment, f"user-{i:06d}") == "trending"
        for i in range(600)
        if f"user-{i:06d}".encode() in events.read_bytes()
    )


def test_the_command_prints_the_table_and_draws_the_plot(files, capsys, tmp_path) -> None:
    events, catalog, definitions, _ = files
    plot = tmp_path / "rail.png"
    with pytest.raises(SystemExit) as done:
        main(["experiment", "report", "rail", "--events", str(events), "--definitions",
              str(definitions), "--catalog", str(catalog), "--plot", str(plot)])  # fmt: skip
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("experiment rail: users {'control': ")
    assert any(
        line.split()[:2] == ["click_play_conversion", "trending"] for line in out.splitlines()
    )
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit) as missing:
        main(["experiment", "report", "nope", "--events", str(events), "--definitions",
              str(definitions)])  # fmt: skip
    assert missing.value.code == 2


def test_a_closed_loop_a_a_experiment_finds_nothing_and_its_split_is_even(tmp_path) -> None:
    """Users who see their lists, split into two arms that show the same thing."""
    start = "2026-01-01T00:00:00Z"  # the closed loop's first day
    same = definition(start) | {"id": "aa", "salt": "aa-salt"}
    same["variants"] = [{"name": "a", "weight": 0.5, "control": True}, {"name": "b", "weight": 0.5}]
    definitions = tmp_path / "aa.jsonl"
    definitions.write_bytes(orjson.dumps(same) + b"\n")
    events, catalog = tmp_path / "events.jsonl", tmp_path / "catalog.jsonl"
    with pytest.raises(SystemExit) as done:
        main(["simulate", "--closed-loop", "--users", "300", "--days", "14", "--seed", "3",
              "--experiments", str(definitions), "--out", str(events),
              "--catalog-out", str(catalog)])  # fmt: skip
    assert done.value.code == 0
    report = report_events(events, [same], "aa", settings=Settings(), catalog_path=catalog)
    assert sum(report.users.values()) > 250 and report.srm_p_value > 0.05
    assert not any(row.significant for row in report.rows)
