"""KPI windows: the same counts whatever the arrival order within the lateness, each window once."""

from __future__ import annotations

import functools
import random
import sys
from array import array
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from pipeline.core.empty import EMPTY
from pipeline.core.events import Event, EventDecoder
from pipeline.core.partitioning import partition_for
from pipeline.kpis.windows import (
    DAY_MS,
    WINDOWS,
    PartitionKpis,
    ReturnCounts,
    UserKpis,
    WindowCounts,
)
from pipeline.sim.simulate import SimulationConfig, Simulator

LATENESS_MS = 5 * 60_000
FIELDS = ("active_users", "sessions", "play_starts", "clicks", "click_plays", "searches",
          "search_plays", "completions")  # fmt: skip


@functools.cache
def events() -> list[Event]:
    decoder = EventDecoder(clock=lambda: 4_102_444_800.0)
    simulator = Simulator(SimulationConfig(users=150, days=20, seed=3))
    decoded = [decoder.decode(value) for _, value in simulator.records()]
    return sorted((e for e in decoded if isinstance(e, Event)), key=lambda e: e.ts_ms)


def run(stream: list[Event], *, partitions: int = 1, close_every: int = 1) -> tuple[list, int]:
    """Every record the partitions closed, closing as the stream goes; and the late count."""
    kpis = [PartitionKpis(lateness_ms=LATENESS_MS) for _ in range(partitions)]
    closed: list[WindowCounts | ReturnCounts] = []
    for n, event in enumerate(stream):
        part = kpis[partition_for(event.user_id.encode(), partitions)]
        part.add(event, arms={})
        if n % close_every == 0:
            closed.extend(part.close())
    for part in kpis:
        closed.extend(part.close(final=True))
    return closed, sum(part.late for part in kpis)


def totals(closed: list) -> dict[tuple, tuple]:
    """Window records added up per (size, start, scope), as the combiner adds partitions."""
    added: dict[tuple, list] = defaultdict(lambda: [0] * len(FIELDS) + [0.0])
    for record in closed:
        if isinstance(record, WindowCounts):
            row = added[record.size, record.start_ms, record.scope]
            for i, name in enumerate(FIELDS):
                row[i] += getattr(record, name)
            row[-1] += record.watch_s
    return {key: tuple(row) for key, row in added.items()}


def shuffled_within_lateness(stream: list[Event], share: float, seed: int) -> list[Event]:
    """``share`` of the events moved later in arrival, by less than the allowed lateness."""
    rng = random.Random(seed)
    keyed = [(e.ts_ms + (rng.randrange(LATENESS_MS // 2) if rng.random() < share else 0), i, e)
             for i, e in enumerate(stream)]  # fmt: skip
    return [e for _, _, e in sorted(keyed)]


def test_counts_do_not_depend_on_arrival_order_within_the_lateness() -> None:
    batch, late = run(events(), close_every=10**9)  # everything at the end, sorted input
    assert late == 0
    shuffled = shuffled_within_lateness(events(), 0.05, seed=1)
    assert shuffled != events()
    live, late = run(shuffled)
    assert late == 0
    expected, got = totals(batch), totals(live)
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key][:-1] == expected[key][:-1], key
        assert got[key][-1] == pytest.approx(expected[key][-1], rel=1e-9, abs=1e-9)


def test_each_window_is_closed_once_and_every_window_with_events_is_there() -> None:
    closed, _ = run(shuffled_within_lateness(events(), 0.05, seed=2))
    keys = [(r.size, r.start_ms, r.scope) for r in closed if isinstance(r, WindowCounts)]
    assert len(keys) == len(set(keys))
    expected = {(size, e.ts_ms - e.ts_ms % length, ("all",))
                for e in events() for size, length in WINDOWS.items()}  # fmt: skip
    assert set(keys) == expected


def test_the_simple_counts_equal_a_direct_count_of_the_sorted_events() -> None:
    closed, _ = run(events())
    got = {k: v for k, v in totals(closed).items() if k[0] == "hour"}
    users: dict[int, set[str]] = defaultdict(set)
    kinds: Counter[tuple[int, str]] = Counter()
    sessions: Counter[int] = Counter()
    last: dict[str, int] = {}
    for e in events():
        start = e.ts_ms - e.ts_ms % WINDOWS["hour"]
        users[start].add(e.user_id)
        kinds[start, e.type] += 1
        if e.user_id not in last or e.ts_ms - last[e.user_id] > 30 * 60_000:
            sessions[start] += 1
        last[e.user_id] = e.ts_ms
    for (_, start, _), row in got.items():
        counts = dict(zip(FIELDS, row, strict=False))
        assert counts["active_users"] == len(users[start])
        assert counts["clicks"] == kinds[start, "click"]
        assert counts["searches"] == kinds[start, "search"]
        assert counts["sessions"] == sessions[start]
    clicks = sum(dict(zip(FIELDS, r, strict=False))["click_plays"] for r in got.values())
    assert 0 < clicks <= sum(n for (_, kind), n in kinds.items() if kind == "click")


def test_partitions_add_up_to_one_partition_exactly() -> None:
    one, _ = run(events())
    four, _ = run(events(), partitions=4)
    by_one, by_four = totals(one), totals(four)
    assert by_four.keys() == by_one.keys()
    for key, row in by_one.items():
        assert by_four[key][:-1] == row[:-1]
        assert by_four[key][-1] == pytest.approx(row[-1], rel=1e-9, abs=1e-9)


def test_an_event_older_than_the_lateness_is_counted_late_and_not_applied() -> None:
    kpis = PartitionKpis(lateness_ms=LATENESS_MS)
    kpis.add(Event("a", "search", "u1", 10 * 60_000, query="x"), arms={})
    kpis.add(Event("b", "search", "u2", 20 * 60_000, query="x"), arms={})
    kpis.add(Event("c", "search", "u3", 2 * 60_000, query="x"), arms={})  # 18 min late
    kpis.add(Event("d", "search", "u4", 16 * 60_000, query="x"), arms={})  # within lateness
    closed = [r for r in kpis.close(final=True) if isinstance(r, WindowCounts)]
    hour = next(r for r in closed if r.size == "hour")
    assert kpis.late == 1 and hour.searches == 3 and hour.active_users == 3


def test_seven_day_return_counts_the_window_users_seen_again_within_a_week() -> None:
    closed, _ = run(events())
    returns = {(r.start_ms, r.scope): r for r in closed if isinstance(r, ReturnCounts)}
    seen: dict[str, list[int]] = defaultdict(list)
    for e in events():
        seen[e.user_id].append(e.ts_ms)
    for (start, _), record in returns.items():
        active = {u for u, times in seen.items() if any(start <= t < start + DAY_MS for t in times)}
        back = {u for u in active
                if any(start + DAY_MS <= t < start + 8 * DAY_MS for t in seen[u])}  # fmt: skip
        assert (record.active_users, record.returned) == (len(active), len(back))
    assert returns and any(r.returned for r in returns.values())


def test_experiment_arms_get_windows_of_their_own() -> None:
    kpis = PartitionKpis(lateness_ms=0)
    kpis.add(Event("a", "click", "u1", 1_000, item_id="m"), arms={"rail": "b"})
    kpis.add(Event("b", "play", "u1", 2_000, item_id="m", position_s=0.0), arms={"rail": "b"})
    closed = [r for r in kpis.close(final=True) if isinstance(r, WindowCounts)]
    scopes = {r.scope: r for r in closed if r.size == "hour"}
    assert set(scopes) == {("all",), ("experiment", "rail", "b")}
    assert scopes["experiment", "rail", "b"].click_plays == 1


def test_trackers_stored_by_the_release_with_a_part_per_scope_are_read_and_close() -> None:
    """``tests/fixtures/kpi-trackers-format-1.jsonl``: written by the release before parts.

    Each window's part is the one of scope "all", counted in every variant the release
    kept a part of; closing gives each variant the user's counts, and the read tracker is
    stored again in the current format, equal once read back.
    """
    import orjson

    from pipeline.kpis.windows import ALL, UserKpis

    path = Path(__file__).resolve().parents[2] / "fixtures" / "kpi-trackers-format-1.jsonl"
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    trackers = {
        line["user_id"]: UserKpis.from_json(line["stored"], line["user_id"]) for line in lines
    }
    u1 = trackers["u1"].counts["hour", 0]
    scopes, counts = u1
    assert scopes == (ALL, ("experiment", "rail", "trending"))
    assert counts.tolist() == [1, 1, 1, 1, 1, 1, 1, 0, 400_000]
    assert trackers["u2"].counts["day", 0][0] == (
        ALL, ("experiment", "rail", "control"), ("experiment", "size", "small"),
    )  # fmt: skip
    assert [e.type for _, e, _ in trackers["u3"].held] == ["search"]
    kpis = PartitionKpis(lateness_ms=LATENESS_MS)
    for user_id, tracker in trackers.items():
        again = UserKpis.from_json(orjson.loads(orjson.dumps(tracker.to_json())), user_id)
        assert again == tracker and tracker.to_json()["format"] == 2
        kpis.adopt(user_id, tracker)
    hours = {r.scope: r for r in kpis.close(final=True)
             if isinstance(r, WindowCounts) and (r.size, r.start_ms) == ("hour", 0)}  # fmt: skip
    assert hours["all",].active_users == 2 and hours["all",].watch_s == 400.0
    assert hours["experiment", "rail", "trending"].click_plays == 1
    assert hours["experiment", "size", "small"].searches == 1


def test_every_users_part_of_a_window_holds_the_same_key_counted_or_read_back() -> None:
    """One key object per window, not one per user's part (~90 bytes a part otherwise)."""
    trackers: dict[str, UserKpis] = {}
    kpis = PartitionKpis(
        lateness_ms=LATENESS_MS, trackers=lambda u: trackers.setdefault(u, UserKpis())
    )
    for event in events()[:3_000]:
        kpis.add(event, arms={})
    read_back = [
        UserKpis.from_json(orjson.loads(orjson.dumps(u.to_json()))) for u in trackers.values()
    ]
    keys: dict[tuple[str, int], set[int]] = defaultdict(set)
    holders: Counter[tuple[str, int]] = Counter()
    for user in [*trackers.values(), *read_back]:
        for key in user.counts:
            keys[key].add(id(key))
            holders[key] += 1
    assert len(keys) > 10 and max(holders.values()) > 10
    assert all(len(objects) == 1 for objects in keys.values())


def test_users_at_rest_hold_no_empty_container_of_their_own_counted_or_read_back() -> None:
    """Shared empty ones instead, and counts of exactly their size (~0.4 kB a user state)."""
    trackers: dict[str, UserKpis] = {}
    kpis = PartitionKpis(
        lateness_ms=LATENESS_MS, trackers=lambda u: trackers.setdefault(u, UserKpis())
    )
    stream = events()[:3_000]
    for event in stream:
        kpis.add(event, arms={})
    kpis.advance(stream[-1].ts_ms + 2 * DAY_MS)  # every held event applied, sessions over
    counted = list(trackers.values())
    read_back = [UserKpis.from_json(orjson.loads(orjson.dumps(u.to_json()))) for u in counted]
    assert len(counted) > 50 and read_back == counted
    exact = sys.getsizeof(array("q", [0] * 9))
    for user in [*counted, *read_back]:
        assert user.held == () and user.outcomes is EMPTY
        assert all(sys.getsizeof(part) == exact for _, part in user.counts.values())
    # a click and a search wait for their conversion: the user's own, then shared again
    assert any(user.clicks for user in counted) and any(user.searches for user in counted)
    assert all(user.clicks or user.clicks is EMPTY for user in [*counted, *read_back])
    assert all(user.searches or user.searches == () for user in [*counted, *read_back])
