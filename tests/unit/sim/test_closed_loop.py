"""Tests of the closed-loop simulator: determinism, the contract, what users see, list effects."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config import Settings
from pipeline.core.events import Event, EventDecoder, Rejection
from pipeline.core.processor import Processor
from pipeline.offline.runner import drive
from pipeline.serde.jsonl import read_jsonl_records
from pipeline.sim.audience import DAY_MS
from pipeline.sim.closed_loop import (
    ClosedLoop,
    ClosedLoopConfig,
    ClosedLoopRun,
    PublishedList,
    Slice,
    published_list,
)
from pipeline.sim.home_screen import FOR_YOU, NO_ROW, POPULAR, Impression
from pipeline.sim.list_policies import (
    OracleLists,
    ProcessorLists,
    RandomLists,
    TrendingLists,
    no_lists,
)
from pipeline.sim.loop_outcomes import Outcomes, measure
from pipeline.sim.simulate import write_jsonl

# A clock far after the simulated period, so that no simulated event is "in the future".
CLOCK_S = 4_102_444_800.0
DECODER = EventDecoder(clock=lambda: CLOCK_S)
SMALL = ClosedLoopConfig(users=60, days=14, seed=3, new_user_fraction=0.1)
#: The fields an encoded event may carry: the contract's, nothing more.
EVENT_FIELDS = {f.name for f in dataclasses.fields(Event)} - {"ts_ms"} | {"ts", "schema_version"}
SEEDS = (1, 2, 3)
POLICIES = ("oracle", "trending", "random")
COMPARED_USERS = 500


def processor() -> Processor:
    return Processor(Settings(), clock=lambda: CLOCK_S)


@pytest.fixture(scope="module")
def small_loop() -> ClosedLoop:
    return ClosedLoop(SMALL)


@pytest.fixture(scope="module")
def small_run(small_loop: ClosedLoop) -> ClosedLoopRun:
    return small_loop.run(TrendingLists(small_loop.catalog))


def test_the_same_seed_gives_the_same_records_and_another_seed_others(
    small_loop: ClosedLoop, small_run: ClosedLoopRun
) -> None:
    again = ClosedLoop(SMALL)
    assert again.run(TrendingLists(again.catalog)).digest() == small_run.digest()
    assert small_loop.run(RandomLists(small_loop.catalog, seed=9)).digest() == (
        small_loop.run(RandomLists(small_loop.catalog, seed=9)).digest()
    )
    other = ClosedLoop(dataclasses.replace(SMALL, seed=4))
    assert other.run(TrendingLists(other.catalog)).digest() != small_run.digest()


def test_the_records_do_not_depend_on_the_process_hash_seed(small_run: ClosedLoopRun) -> None:
    script = (
        "from pipeline.sim.closed_loop import ClosedLoop, ClosedLoopConfig\n"
        "from pipeline.sim.list_policies import TrendingLists\n"
        f"loop = ClosedLoop({SMALL!r})\n"
        "print(loop.run(TrendingLists(loop.catalog)).digest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, check=True)
    assert done.stdout.decode().strip() == small_run.digest()


def test_every_record_is_an_event_of_the_contract_and_none_is_dead_lettered(
    small_run: ClosedLoopRun,
) -> None:
    assert len(small_run.records) == len(small_run.events) > 1000
    for (key, value), event in zip(small_run.records, small_run.events, strict=True):
        assert DECODER.decode(value) == event
        assert key == event.user_id.encode()
        assert set(orjson.loads(value)) <= EVENT_FIELDS
    assert {event.type for event in small_run.events} == {"search", "click", "play", "pause"}


def test_a_bad_rate_adds_malformed_records_and_leaves_the_events_as_they_were(
    small_loop: ClosedLoop, small_run: ClosedLoopRun
) -> None:
    noisy = ClosedLoop(dataclasses.replace(SMALL, bad_rate=0.05))
    run = noisy.run(TrendingLists(noisy.catalog))
    assert run.events == small_run.events
    rejected = [value for _, value in run.records if isinstance(DECODER.decode(value), Rejection)]
    assert len(rejected) == len(run.records) - len(run.events)
    assert 0.03 < len(rejected) / len(run.events) < 0.07


def test_event_times_never_go_back_for_a_user_nor_overall(small_run: ClosedLoopRun) -> None:
    times = [event.ts_ms for event in small_run.events]
    assert times == sorted(times)
    last: dict[str, int] = {}
    for event in small_run.events:
        assert event.ts_ms >= last.get(event.user_id, 0)
        last[event.user_id] = event.ts_ms
    assert SMALL.start_ms <= times[0] and times[-1] < SMALL.end_ms


def test_a_user_sees_the_last_list_published_before_their_session(
    small_loop: ClosedLoop,
) -> None:
    items = [item.item_id for item in small_loop.catalog.items]

    def numbered(piece: Slice) -> list[PublishedList]:  # names the slice it followed
        number = (piece.start_ms - SMALL.start_ms) // (piece.end_ms - piece.start_ms)
        mark = (items[number % len(items)],)
        return [PublishedList(user, mark) for user in {e.user_id: 0 for e in piece.events}]

    latest: dict[str, tuple[str, ...]] = {}
    seen = 0
    for step in small_loop.steps(numbered):
        for shown in step.impressions:
            assert step.slice.start_ms <= shown.ts_ms < step.slice.end_ms
            expected = latest.get(shown.user_id)
            assert shown.surface == (POPULAR if expected is None else FOR_YOU)
            if expected is not None:
                assert shown.item_ids == expected
                seen += 1
        latest.update((p.user_id, p.item_ids) for p in step.published)
    assert seen > 100


def test_what_a_user_does_before_their_first_list_does_not_depend_on_the_policy(
    small_loop: ClosedLoop,
) -> None:
    oracle, random_lists = (
        small_loop.run(OracleLists(small_loop)),
        small_loop.run(RandomLists(small_loop.catalog, seed=1)),
    )

    def before_first_list(run: ClosedLoopRun) -> dict[str, list[Event]]:
        first = {
            user: next((s.ts_ms for s in shown if s.surface == FOR_YOU), SMALL.end_ms)
            for user, shown in run.impressions.items()
        }
        kept: dict[str, list[Event]] = {user: [] for user in first}
        for event in run.events:
            if event.ts_ms < first[event.user_id]:
                kept[event.user_id].append(event)
        return kept

    assert before_first_list(oracle) == before_first_list(random_lists)
    assert oracle.events != random_lists.events


def test_experiments_of_a_list_reach_what_the_user_saw_and_never_the_events(
    small_loop: ClosedLoop,
) -> None:
    pick = (small_loop.catalog.items[0].item_id,)

    def with_experiments(piece: Slice) -> list[PublishedList]:
        users = {event.user_id: 0 for event in piece.events}
        return [PublishedList(user, pick, {"rail-size": "short"}) for user in users]

    run = small_loop.run(with_experiments)
    shown = [s for seen in run.impressions.values() for s in seen if s.surface == FOR_YOU]
    assert shown and all(s.experiments == {"rail-size": "short"} for s in shown)
    assert all(b"rail-size" not in value for _, value in run.records)
    assert all(set(orjson.loads(value)) <= EVENT_FIELDS for _, value in run.records)


def test_a_personalization_record_is_read_for_its_user_items_and_experiments() -> None:
    value = orjson.dumps(
        {
            "user_id": "u7",
            "ts": "2026-01-02T00:00:00.000Z",
            "items": [{"item_id": "a", "score": 0.5, "reason": "r"}, {"item_id": "b"}],
            "model_version": "m",
            "schema_version": 1,
        }
    )
    assert published_list(value) == PublishedList("u7", ("a", "b"), {})


def test_without_a_generic_row_a_user_without_a_list_sees_no_row(small_loop: ClosedLoop) -> None:
    bare = ClosedLoop(dataclasses.replace(SMALL, generic_row="none"))
    run = bare.run(no_lists)
    shown = [s for seen in run.impressions.values() for s in seen]
    assert shown and {(s.surface, s.item_ids) for s in shown} == {(NO_ROW, ())}
    assert measure(run).row_clicks == 0


def test_the_config_refuses_what_cannot_be_simulated() -> None:
    for wrong in ({"users": 0}, {"slice_s": 0}, {"bad_rate": 2.0}, {"weekly_churn": (0.5, 0.0)}):
        with pytest.raises(ValueError):
            dataclasses.replace(SMALL, **wrong)


def test_outcomes_count_conversions_plays_watch_time_and_retention_as_documented() -> None:
    start = SMALL.start_ms
    minute = 60_000

    def event(kind: str, user: str, at_min: float, **fields: Any) -> Event:
        return Event(f"{user}-{at_min}", kind, user, start + int(at_min * minute), **fields)

    events = [
        event("click", "u1", 0, item_id="a", surface=FOR_YOU, rank=0),
        event("play", "u1", 1, item_id="a", position_s=0.0),  # converted, a play
        event("pause", "u1", 11, item_id="a", position_s=600.0),  # 600 s
        event("play", "u1", 12, item_id="a", position_s=600.0),  # resumed: not a play
        event("pause", "u1", 13, item_id="a", position_s=660.0),  # 60 s
        event("click", "u2", 0, item_id="b", surface=POPULAR, rank=3),
        event("play", "u2", 11, item_id="b", position_s=0.0),  # too late to convert
        event("pause", "u2", 12, item_id="b", position_s=60.0),  # 60 s
        event("click", "u2", 20, item_id="c", surface="search", rank=1),
        event("play", "u2", 21, item_id="c", position_s=0.0),  # not a row click
    ]
    shown = {
        "u1": [Impression("u1", start, FOR_YOU, ("a",), {})],
        "u2": [Impression("u2", start, POPULAR, ("b",), {})] * 2,
        "u3": [],
    }
    run = ClosedLoopRun(
        SMALL,
        events=events,
        impressions=shown,
        joined_ms={"u1": start - DAY_MS, "u2": start, "u3": start + DAY_MS},
        left_ms={"u2": start + 3 * DAY_MS},
    )
    outcomes = measure(run, retention_days=7)
    assert outcomes == Outcomes(
        users=3, views=3, row_clicks=2, conversions=1, plays=3, watch_s=720.0, retained=0.5
    )
    assert (outcomes.conversion, outcomes.click_to_play) == (1 / 3, 0.5)


def make_policy(name: str, loop: ClosedLoop, seed: int) -> Callable[[Slice], list[PublishedList]]:
    if name == "oracle":
        return OracleLists(loop)
    if name == "trending":
        return TrendingLists(loop.catalog)
    return RandomLists(loop.catalog, seed=seed)


@pytest.fixture(scope="module")
def compared() -> dict[tuple[str, int], Outcomes]:
    """Outcomes of the oracle, trending and random lists, 500 users × 4 weeks, three seeds."""
    outcomes = {}
    for seed in SEEDS:
        loop = ClosedLoop(ClosedLoopConfig(users=COMPARED_USERS, days=28, seed=seed))
        for name in POLICIES:
            outcomes[name, seed] = measure(loop.run(make_policy(name, loop, seed)))
    return outcomes


@pytest.mark.parametrize("metric", ["conversion", "plays_per_user", "watch_s_per_user", "retained"])
def test_oracle_lists_beat_trending_which_beat_random_well_beyond_seed_noise(
    compared: dict[tuple[str, int], Outcomes], metric: str
) -> None:
    values = {name: [getattr(compared[name, seed], metric) for seed in SEEDS] for name in POLICIES}
    print(f"{metric} by seed {SEEDS}, {COMPARED_USERS} users, 4 weeks:")
    for name in POLICIES:
        print(f"  {name:9s}" + "".join(f"{value:12.4g}" for value in values[name]))
    for better, worse in itertools.pairwise(POLICIES):
        gaps = [b - w for b, w in zip(values[better], values[worse], strict=True)]
        mean = statistics.mean(gaps)
        error = statistics.stdev(gaps) / math.sqrt(len(gaps))  # the seeds' noise on the mean
        print(f"  {better} - {worse}: mean gap {mean:.4g} = {mean / error:.1f} standard errors")
        assert min(gaps) > 0
        assert mean > 3 * error


def test_outcomes_of_the_compared_lists_are_printed(
    compared: dict[tuple[str, int], Outcomes],
) -> None:
    print("seed policy     views  row clicks  click->play  plays/user  watch h/user  retained")
    for (name, seed), o in compared.items():
        print(
            f"{seed:4d} {name:9s} {o.views:6d} {o.row_clicks:11d} {o.click_to_play:12.3f}"
            f" {o.plays_per_user:11.2f} {o.watch_s_per_user / 3600:13.2f} {o.retained:9.3f}"
        )
    for seed in SEEDS:
        oracle = compared["oracle", seed].click_to_play
        assert oracle > compared["trending", seed].click_to_play
        assert oracle > compared["random", seed].click_to_play


def test_the_processors_lists_beat_no_list_on_click_to_play_conversion() -> None:
    config = ClosedLoopConfig(users=300, days=28, seed=1)
    loop = ClosedLoop(config)
    core = ProcessorLists(processor(), catalog=loop.catalog.records())
    personal = measure(loop.run(core))
    nothing = measure(ClosedLoop(dataclasses.replace(config, generic_row="none")).run(no_lists))
    popular = measure(loop.run(no_lists))
    print(
        "300 users, 4 weeks, seed 1   conversion/view  click->play  plays/user  watch h/user"
        "  retained"
    )
    for name, o in (("processor", personal), ("no list", nothing), ("popular row", popular)):
        print(
            f"{name:28s} {o.conversion:16.3f} {o.click_to_play:12.3f} {o.plays_per_user:11.2f}"
            f" {o.watch_s_per_user / 3600:13.2f} {o.retained:9.3f}"
        )
    print(f"processor outputs: {dict(core.outputs)}")
    assert core.processor.tally.rejected == {}
    assert personal.conversion > nothing.conversion + 0.2
    assert personal.plays_per_user > nothing.plays_per_user
    assert personal.watch_s_per_user > nothing.watch_s_per_user


def test_the_records_replayed_from_a_file_give_the_lists_the_loop_published(
    tmp_path: Path,
) -> None:
    loop = ClosedLoop(ClosedLoopConfig(users=60, days=7, seed=4))
    published: list[PublishedList] = []
    records: list[tuple[bytes, bytes]] = []
    for step in loop.steps(ProcessorLists(processor(), catalog=loop.catalog.records())):
        published.extend(step.published)
        records.extend(step.slice.records)
    path = tmp_path / "events.jsonl"
    assert write_jsonl(records, path) == len(records)
    replay = processor()
    replay.load_catalog(loop.catalog.records())
    replayed: list[PublishedList] = []
    drive(
        replay,
        [
            (key, value, 0, offset, 0)
            for offset, (key, value) in enumerate(read_jsonl_records(path))
        ],
        outputs=lambda outputs: replayed.extend(
            published_list(o.value) for o in outputs if o.kind == "personalization"
        ),
    )
    assert len(published) > 100 and replayed == published
