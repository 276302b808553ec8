"""Tests of the synthetic traffic generator: determinism, order, validity, bad input, realism."""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import subprocess
import sys
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from pipeline.core.events import Event, EventDecoder, Rejection, encode_event
from pipeline.sim.audience import DAY_MS
from pipeline.sim.simulate import (
    MALFORMED_KINDS,
    SimulationConfig,
    Simulator,
    malformed_record,
    write_catalog,
    write_jsonl,
)
from pipeline.sim.synthetic_catalog import GENRES, Catalog

# A clock far after the simulated period, so that no simulated event is "in the future".
DECODER = EventDecoder(clock=lambda: 4_102_444_800.0)
EXPECTED_REASON = {
    "not_json": "not_json",
    "invalid_utf8": "not_utf8",
    "missing_field": "missing_field",
    "wrong_type": "wrong_type",
    "unknown_type": "unknown_type",
    "oversized": "oversized",
    "future_ts": "future_timestamp",
    "bad_ts": "bad_timestamp",
    "empty": "empty",
}
NOISY = SimulationConfig(users=40, days=10, seed=3, bad_rate=0.05, duplicate_rate=0.05)


@pytest.fixture(scope="module")
def sim() -> Simulator:
    return Simulator(SimulationConfig(users=200, days=60, seed=11))


@pytest.fixture(scope="module")
def events(sim: Simulator) -> list[Event]:
    return list(sim.events())


@pytest.fixture(scope="module")
def sessions(events: list[Event]) -> dict[str, list[Event]]:
    by_session: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        assert event.session_id is not None
        by_session[event.session_id].append(event)
    return by_session


def test_the_same_config_gives_the_same_bytes_and_another_seed_others() -> None:
    first = list(Simulator(NOISY).records())
    assert first == list(Simulator(NOISY).records())
    other = SimulationConfig(users=40, days=10, seed=4, bad_rate=0.05, duplicate_rate=0.05)
    assert first != list(Simulator(other).records())


def test_the_bytes_do_not_depend_on_the_process_hash_seed() -> None:
    script = (
        "import hashlib; from pipeline.sim.simulate import Simulator, SimulationConfig; "
        f"print(hashlib.sha256(b''.join(k + v for k, v in Simulator({NOISY!r}).records()))"
        ".hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, check=True)
    expected = hashlib.sha256(b"".join(k + v for k, v in Simulator(NOISY).records()))
    assert run.stdout.decode().strip() == expected.hexdigest()


def test_events_come_in_event_time_order_inside_the_period(
    sim: Simulator, events: list[Event]
) -> None:
    assert all(a.ts_ms <= b.ts_ms for a, b in itertools.pairwise(events))
    assert sim.config.start_ms <= events[0].ts_ms and events[-1].ts_ms < sim.config.end_ms


def test_every_record_decodes_to_its_event(sim: Simulator, events: list[Event]) -> None:
    for (key, value), event in zip(sim.records(), events, strict=True):
        assert key == event.user_id.encode()
        assert DECODER.decode(value) == event


def test_event_ids_are_unique_uuids(events: list[Event]) -> None:
    ids = [event.event_id for event in events]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 36 and i[14] == "4" and i.count("-") == 4 for i in ids)


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_each_malformed_kind_is_rejected_for_its_reason(kind: str, events: list[Event]) -> None:
    bases = {event.type: event for event in events[:200]}
    assert sorted(bases) == ["click", "pause", "play", "search"]
    for seed, base in itertools.product(range(10), bases.values()):
        value = malformed_record(kind, random.Random(seed), base)
        verdict = DECODER.decode(value)
        assert isinstance(verdict, Rejection), (kind, value[:200])
        assert verdict.reason == EXPECTED_REASON[kind], (kind, verdict)
        assert b"\n" not in value


def test_an_unknown_malformed_kind_is_an_error(events: list[Event]) -> None:
    with pytest.raises(ValueError, match="unknown malformed kind"):
        malformed_record("gibberish", random.Random(0), events[0])


def test_records_add_retries_and_every_kind_of_bad_input_around_the_same_events() -> None:
    reasons: Counter[str] = Counter()
    sent: set[bytes] = set()
    valid: list[bytes] = []
    for key, value in Simulator(NOISY).records():
        verdict = DECODER.decode(value)
        if isinstance(verdict, Rejection):
            reasons[verdict.reason] += 1
            continue
        assert key == verdict.user_id.encode()
        if value in sent:
            reasons["retry"] += 1
        else:
            sent.add(value)
            valid.append(value)
    assert valid == [encode_event(event) for event in Simulator(NOISY).events()]
    assert set(reasons) == {*EXPECTED_REASON.values(), "retry"}
    assert 0.03 < reasons["retry"] / len(valid) < 0.07
    assert 0.03 < (reasons.total() - reasons["retry"]) / len(valid) < 0.07


def test_a_retry_repeats_an_event_of_the_last_twenty_seconds() -> None:
    sent: dict[bytes, int] = {}
    watermark = 0
    for _, value in Simulator(NOISY).records():
        verdict = DECODER.decode(value)
        if isinstance(verdict, Rejection):
            continue
        if value in sent:
            assert 0 <= watermark - sent[value] <= 20_000
        else:
            sent[value] = verdict.ts_ms
            watermark = max(watermark, verdict.ts_ms)


def test_the_churn_fraction_is_exact_and_churners_never_come_back(
    sim: Simulator, events: list[Event]
) -> None:
    leave_ms = sim.truth.leave_ms
    assert len(sim.truth.churners) == 50
    assert all(
        sim.config.start_ms < leave < sim.config.end_ms - 14 * DAY_MS for leave in leave_ms.values()
    )
    assert all(event.ts_ms < leave_ms.get(event.user_id, sim.config.end_ms) for event in events)
    last_seen = {event.user_id: event.ts_ms for event in events}
    within_two_days = [leave_ms[u] - last_seen[u] <= 2 * DAY_MS for u in leave_ms if u in last_seen]
    assert sum(within_two_days) > 0.7 * len(within_two_days)  # most come back once to cancel


def test_churners_decline_before_they_leave(
    sim: Simulator, sessions: dict[str, list[Event]]
) -> None:
    leave_ms = {
        u: t for u, t in sim.truth.leave_ms.items() if t > sim.config.start_ms + 35 * DAY_MS
    }
    assert len(leave_ms) >= 10
    early, late = Counter[str](), Counter[str]()
    for session in sessions.values():
        user, start = session[0].user_id, session[0].ts_ms
        if user not in leave_ms:
            continue
        before_leaving = leave_ms[user] - start
        if 21 * DAY_MS < before_leaving <= 35 * DAY_MS:
            window = early  # from five to three weeks before leaving
        elif before_leaving <= 14 * DAY_MS:
            window = late  # the last two weeks
        else:
            continue
        window["sessions"] += 1
        window["events"] += len(session)
        window["without play"] += all(event.type != "play" for event in session)
    assert late["sessions"] < 0.6 * early["sessions"]
    assert late["events"] / late["sessions"] < 0.8 * early["events"] / early["sessions"]
    assert late["without play"] / late["sessions"] > 2 * early["without play"] / early["sessions"]


def test_sessions_run_search_then_click_then_play(sessions: dict[str, list[Event]]) -> None:
    found = 0
    for session in sessions.values():
        types = [event.type for event in session]
        for index, event in enumerate(session):
            if event.type == "click" and event.surface == "search":
                assert "search" in types[:index]
                following = session[index + 1] if index + 1 < len(session) else None
                found += following is not None and following.type == "play"
    assert found > 100


def test_each_pause_ends_a_stretch_of_the_item_playing(sessions: dict[str, list[Event]]) -> None:
    for session in sessions.values():
        playing = None
        for event in session:
            if event.type == "pause":
                assert playing is not None and playing.item_id == event.item_id
                assert playing.position_s <= event.position_s <= event.duration_s
                watched_s = event.position_s - playing.position_s
                assert abs((event.ts_ms - playing.ts_ms) / 1000 - watched_s) < 0.2
            playing = event if event.type == "play" else None


def test_series_are_started_in_episode_order(events: list[Event]) -> None:
    first_play: dict[tuple[str, str], str] = {}
    for event in events:
        if event.type == "play" and event.item_id.startswith("show-"):
            first_play.setdefault((event.user_id, event.item_id), event.item_id)
    by_show: dict[tuple[str, str], list[str]] = defaultdict(list)
    for user, item in first_play:
        by_show[(user, item[:10])].append(item)
    assert any(len(items) > 3 for items in by_show.values())
    assert all(items == sorted(items) for items in by_show.values())


def test_the_catalog_has_films_episodes_genres_and_new_releases(sim: Simulator) -> None:
    items = sim.catalog()
    assert len(items) == sim.config.catalog_items == 500
    assert len({item["item_id"] for item in items}) == len(items)
    for item in items:
        assert 1 <= len(item["genres"]) <= 3 and set(item["genres"]) <= set(GENRES)
        low, high = (80, 180) if str(item["item_id"]).startswith("film-") else (20, 60)
        assert low * 60 <= item["duration_s"] <= high * 60
    catalog = Catalog(size=500, seed=11, start_ms=sim.config.start_ms, end_ms=sim.config.end_ms)
    assert catalog.released_between(sim.config.start_ms, sim.config.end_ms)


def test_nothing_is_played_before_its_release(sim: Simulator, events: list[Event]) -> None:
    catalog = Catalog(size=500, seed=11, start_ms=sim.config.start_ms, end_ms=sim.config.end_ms)
    release = {item.item_id: catalog.titles[item.title_index].release_ms for item in catalog.items}
    assert all(release[e.item_id] <= e.ts_ms for e in events if e.type == "play")


def test_plays_follow_popularity_and_each_viewers_taste(
    sim: Simulator, events: list[Event]
) -> None:
    genres = {item["item_id"]: item["genres"] for item in sim.catalog()}
    plays = Counter(event.item_id for event in events if event.type == "play")
    top = sum(count for _, count in plays.most_common(len(genres) // 20))
    assert top > 0.2 * plays.total()  # the top 5 % of items have over a fifth of the plays
    overall: Counter[str] = Counter()
    per_user: dict[str, Counter[str]] = defaultdict(Counter)
    for event in events:
        if event.type == "play":
            overall.update(genres[event.item_id])
            per_user[event.user_id].update(genres[event.item_id])
    lifts = [  # how much more a viewer plays their favourite genre than everyone does
        (count / mine.total()) / (overall[genre] / overall.total())
        for mine in per_user.values()
        if mine.total() > 20
        for genre, count in mine.most_common(1)
    ]
    assert sum(lifts) / len(lifts) > 2.5


def test_newcomers_start_at_sign_up(sim: Simulator, events: list[Event]) -> None:
    first_seen: dict[str, int] = {}
    for event in events:
        first_seen.setdefault(event.user_id, event.ts_ms)
    newcomers = {u: t for u, t in sim.truth.joined_ms.items() if t >= sim.config.start_ms}
    assert len(newcomers) == 20
    assert all(first_seen[u] == t for u, t in newcomers.items() if u in first_seen)


def _peak_bytes(stream: Iterator[tuple[bytes, bytes]]) -> int:
    tracemalloc.start()
    try:
        for _ in stream:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_records_are_generated_lazily_in_bounded_memory() -> None:
    short = Simulator(SimulationConfig(users=60, days=10, seed=5)).records()
    long = Simulator(SimulationConfig(users=60, days=40, seed=5)).records()
    assert isinstance(long, Iterator)
    assert _peak_bytes(long) < 1.5 * _peak_bytes(short)  # four times the events


def test_writers_put_one_record_per_line(tmp_path: Path) -> None:
    records = list(Simulator(NOISY).records())
    assert write_jsonl(iter(records), tmp_path / "events.jsonl") == len(records)
    lines = (tmp_path / "events.jsonl").read_bytes().split(b"\n")
    assert lines[:-1] == [value for _, value in records] and lines[-1] == b""
    items = Simulator(NOISY).catalog()
    assert write_catalog(items, tmp_path / "catalog.jsonl") == len(items)
    written = (tmp_path / "catalog.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line) for line in written] == items


@pytest.mark.parametrize(
    "changes",
    [{"users": 0}, {"days": 0}, {"churn_fraction": 1.5}, {"bad_rate": -0.1}],
)
def test_a_config_out_of_range_is_refused(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SimulationConfig(**{"users": 10, "days": 5, "seed": 1, **changes})  # type: ignore[arg-type]
