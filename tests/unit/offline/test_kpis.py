"""``ottscore kpis`` over a file: the same records at any partition count, retries counted once."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from agents.cli import main
from pipeline.config import Settings
from pipeline.offline.kpis import kpis_of_file
from pipeline.sim.simulate import SimulationConfig, Simulator, write_jsonl


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kpis") / "events.jsonl"
    simulator = Simulator(SimulationConfig(users=120, days=15, seed=8, duplicate_rate=0.02))
    write_jsonl(simulator.records(), path)
    return path


def test_any_partition_count_gives_the_same_records(events: Path) -> None:
    one, returns_one, late = kpis_of_file(events, settings=Settings(), partitions=1)
    many, returns_many, _ = kpis_of_file(events, settings=Settings(), partitions=16)
    assert late == 0 and returns_one == returns_many and len(one) == len(many) > 100
    for a, b in zip(one, many, strict=True):
        numbers = {k for k, v in a.items() if isinstance(v, float)}
        assert {k: v for k, v in a.items() if k not in numbers} == {
            k: v for k, v in b.items() if k not in numbers
        }
        assert all(a[k] == pytest.approx(b[k], rel=1e-9) for k in numbers)
    assert {r["window"] for r in one} == {"hour", "day"}
    assert all(r["active_users"] > 0 for r in one)


def test_a_client_retry_is_counted_once(events: Path, tmp_path: Path) -> None:
    lines = events.read_bytes().splitlines()
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_bytes(b"\n".join(line for line in lines for _ in (0, 1)) + b"\n")
    assert (
        kpis_of_file(doubled, settings=Settings())[0]
        == kpis_of_file(events, settings=Settings())[0]
    )


def test_the_command_writes_one_json_record_per_window(events: Path, tmp_path: Path) -> None:
    out = tmp_path / "kpis.jsonl"
    with pytest.raises(SystemExit) as done:
        main(["kpis", str(events), "--out", str(out), "--partitions", "4"])
    assert done.value.code == 0
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys))
    day = next(r for r in records if r.get("window") == "day")
    assert day["click_play_conversion"] == pytest.approx(day["click_plays"] / day["clicks"])
