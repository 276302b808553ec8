"""``ottscore audience`` equals a batch recomputation from the same events.

The batch side reads the events file itself: per user, in event-time order, the playhead's
advance between two events of the item playing (capped by the event time elapsed), shared
among the item's genres and weighted by a 28-day half-life; the last event time; then the
audience rules. Nothing of the processor is used there.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from agents.cli import main
from pipeline.config import Settings
from pipeline.core.audiences import AUDIENCES
from pipeline.core.events import parse_ts
from pipeline.offline.audiences import audience_report
from pipeline.sim.simulate import SimulationConfig, Simulator

DAY_MS = 86_400_000
HALF_LIFE_MS = 28 * DAY_MS


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    simulator = Simulator(SimulationConfig(users=200, days=40, seed=4))
    path = tmp_path_factory.mktemp("audience") / "events.jsonl"
    path.write_bytes(b"\n".join(value for _, value in simulator.records()) + b"\n")
    return path, list(simulator.catalog())


def batch_audiences(path: Path, catalog: list[dict], genres: set[str]) -> dict[str, set[str]]:
    genres_of = {item["item_id"]: item.get("genres") or [] for item in catalog}
    events = [orjson.loads(line) for line in path.read_bytes().splitlines() if line]
    events.sort(key=lambda e: parse_ts(e["ts"]))  # stable: file order among equal times
    start_ms = parse_ts(events[0]["ts"])
    watch: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    playing: dict[str, tuple[str, float, int]] = {}
    last_seen: dict[str, int] = {}
    for event in events:
        user, ts, item = event["user_id"], parse_ts(event["ts"]), event.get("item_id")
        last_seen[user] = ts
        if user in playing:
            current, position, since = playing[user]
            same = item == current
            if same and event.get("position_s") is not None:
                seconds = min(
                    max(0.0, event["position_s"] - position), max(0.0, (ts - since) / 1e3)
                )
                for genre in genres_of.get(current, []):
                    weight = math.exp(math.log(2) * (ts - start_ms) / HALF_LIFE_MS)
                    watch[user][genre] += seconds / len(genres_of[current]) * weight
            if event["type"] != "play" or not same:
                del playing[user]
        if event["type"] == "play":
            playing[user] = (item, event.get("position_s") or 0.0, ts)
    at_ms = max(last_seen.values())
    members: dict[str, set[str]] = {name: set() for name in AUDIENCES}
    settings = Settings()
    for user, seen in last_seen.items():
        total = sum(watch[user].values())
        share = sum(watch[user][g] for g in genres) / total if total else 0.0
        fan = share >= settings.audience_fan_share
        if at_ms - seen < settings.audience_active_days * DAY_MS:
            members["fans" if fan else "clients"].add(user)
        elif fan:
            members["lapsed"].add(user)
    return members


@pytest.mark.parametrize("genres", [["comedy"], ["action"], ["crime", "drama"]])
def test_the_audiences_equal_a_batch_recomputation(simulated, genres: list[str]) -> None:
    path, catalog = simulated
    report = audience_report(path, catalog, genres=genres, settings=Settings())
    expected = batch_audiences(path, catalog, set(genres))
    print(f"\n{genres}: {report['sizes']}")
    assert {name: set(ids) for name, ids in report["members"].items()} == expected
    assert report["sizes"]["fans"] > 0 and report["sizes"]["lapsed"] > 0  # not a vacuous test


def test_the_command_prints_the_sizes_and_exports_the_members(simulated, tmp_path, capsys) -> None:
    path, catalog = simulated
    catalog_path = tmp_path / "catalog.jsonl"
    catalog_path.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in catalog))
    title = next(item for item in catalog if item.get("genres"))
    with pytest.raises(SystemExit) as done:
        main(["audience", str(path), "--catalog", str(catalog_path), "--title",
              title["item_id"], "--export", str(tmp_path / "members.jsonl")])  # fmt: skip
    assert done.value.code == 0
    printed = capsys.readouterr().out
    members = [
        orjson.loads(line) for line in (tmp_path / "members.jsonl").read_bytes().splitlines()
    ]
    for name in AUDIENCES:
        size = sum(member["audience"] == name for member in members)
        assert f"{name:<8}{size:>10,}" in printed
    with pytest.raises(SystemExit) as refused:
        main(["audience", str(path), "--catalog", str(catalog_path), "--title", "no-such"])
    assert refused.value.code == 1 and "no item 'no-such'" in capsys.readouterr().err
