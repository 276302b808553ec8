"""User-level outcomes in event time, and the report that judges variants on them."""

from __future__ import annotations

import random

import pytest

from pipeline.core.events import Event
from pipeline.experiments.definition import Experiment, Variant
from pipeline.experiments.outcomes import Outcomes
from pipeline.experiments.report import build_report, format_report

MINUTE = 60_000


def outcome_of(*events: Event):
    outcomes = Outcomes()
    for event in events:
        outcomes.add(event)
    return outcomes.users["u"]


def click(ts: int, item: str = "m") -> Event:
    return Event(f"c{ts}", "click", "u", ts, item_id=item)


def play(ts: int, item: str = "m", position: float = 0.0, duration: float | None = 100.0):
    return Event(f"p{ts}", "play", "u", ts, item_id=item, position_s=position, duration_s=duration)


def pause(ts: int, position: float, item: str = "m") -> Event:
    return Event(f"z{ts}", "pause", "u", ts, item_id=item, position_s=position)


def search(ts: int) -> Event:
    return Event(f"s{ts}", "search", "u", ts, query="noir")


def test_a_click_converts_when_the_same_item_plays_within_ten_minutes_of_event_time() -> None:
    assert outcome_of(click(0), play(10 * MINUTE)).clicks_played == 1
    assert outcome_of(click(0), play(10 * MINUTE + 1)).clicks_played == 0
    assert outcome_of(click(0, "a"), play(MINUTE, "b")).clicks_played == 0
    assert outcome_of(click(0), click(MINUTE), play(2 * MINUTE)).clicks == 2


def test_a_search_succeeds_when_a_play_follows_in_the_same_session() -> None:
    assert outcome_of(search(0), play(5 * MINUTE)).searches_played == 1
    user = outcome_of(search(0), play(31 * MINUTE))  # a gap of more than 30 minutes
    assert (user.searches_played, user.sessions) == (0, 2)


def test_watch_time_follows_the_playhead_and_a_completion_counts_once() -> None:
    user = outcome_of(play(0), pause(50_000, 50.0), play(60 * MINUTE, position=50.0),
                      pause(60 * MINUTE + 45_000, 95.0))  # fmt: skip
    assert (user.plays, user.watch_ms, user.completed) == (1, 95_000, 1)
    skipped = outcome_of(play(0), pause(10_000, 80.0))  # the playhead ran ahead of the clock
    assert skipped.watch_ms == 10_000


def experiment(weights: tuple[float, float] = (0.5, 0.5)) -> Experiment:
    variants = (Variant("control", weights[0], True), Variant("b", weights[1]))
    return Experiment("x", "x", variants, start_ms=0, stop_ms=None,
                      metrics=("click_play_conversion", "play_starts_per_user"))  # fmt: skip


def synthetic(rng: random.Random, users: int, rates: dict[str, float], share_b: float = 0.5):
    """Each user clicks once a day for 10 days and plays what they clicked at their rate."""
    assignments = {f"u{i}": "b" if rng.random() < share_b else "control" for i in range(users)}
    events = []
    for day in range(10):
        for user, variant in assignments.items():
            ts = day * 86_400_000 + rng.randrange(80_000_000)
            events.append(Event(f"c{user}{day}", "click", user, ts, item_id=f"m{day}"))
            if rng.random() < rates[variant]:
                events.append(Event(f"p{user}{day}", "play", user, ts + MINUTE,
                                    item_id=f"m{day}", position_s=0.0))  # fmt: skip
    events.sort(key=lambda event: event.ts_ms)
    return assignments, events


def test_a_real_lift_is_found_and_an_a_a_split_finds_nothing() -> None:
    rng = random.Random(3)
    assignments, events = synthetic(rng, 4000, {"control": 0.30, "b": 0.36})
    report = build_report(experiment(), assignments, events)
    lift = next(row for row in report.rows if row.metric == "click_play_conversion")
    assert lift.significant and lift.interval[0] > 0 and lift.p_value < 0.05
    assert lift.mean == pytest.approx(0.36, abs=0.02) and report.srm_p_value > 0.05
    print("\n" + format_report(report))

    found = 0
    for seed in range(20):
        assignments, events = synthetic(random.Random(seed), 1000, {"control": 0.3, "b": 0.3})
        report = build_report(experiment(), assignments, events)
        found += any(row.significant for row in report.rows)
    assert found <= 2  # two metrics at 5 % over 20 A/A runs, looked at daily
    print(f"A/A: {found} of 20 runs found a difference")


def test_the_sample_ratio_test_fires_on_a_skewed_split_only() -> None:
    rates = {"control": 0.3, "b": 0.3}
    skewed = build_report(experiment(), *synthetic(random.Random(5), 6000, rates, share_b=0.45))
    assert skewed.srm_p_value < 0.01
    correct = build_report(experiment(), *synthetic(random.Random(5), 6000, rates))
    assert correct.srm_p_value > 0.05
    print(f"\nSRM p: skewed 45/55 {skewed.srm_p_value:.2g}, correct {correct.srm_p_value:.2g}")


def test_looks_are_at_hour_boundaries_and_p_values_only_fall_and_intervals_only_shrink() -> None:
    assignments, events = synthetic(random.Random(9), 2000, {"control": 0.3, "b": 0.34})
    report = build_report(experiment(), assignments, events)
    times = [look.ts_ms for look in report.looks]
    assert times == sorted(set(times)) and all(t % 3_600_000 == 0 for t in times)
    assert len(times) >= 24  # users arrive through the first day, and end 7 days later
    key = ("click_play_conversion", "b")
    p_values = [look.p_values[key] for look in report.looks]
    assert p_values == sorted(p_values, reverse=True)
    lowers = [look.intervals[key][0] for look in report.looks]
    uppers = [look.intervals[key][1] for look in report.looks]
    assert lowers == sorted(lowers) and uppers == sorted(uppers, reverse=True)


def test_the_report_counts_a_users_playback_begun_before_they_joined() -> None:
    """As the workers do: the playhead follows the user from before the experiment."""
    variants = (Variant("control", 0.5, True), Variant("b", 0.5))
    joined = Experiment(
        "x", "x", variants, start_ms=30_000, stop_ms=None, metrics=("watch_seconds_per_user",)
    )
    events = [play(0), pause(60_000, 60.0)]  # playing since 0; the pause is their first event in it
    report = build_report(joined, {"u": "b"}, events, window_s=60.0)
    assert report.users == {"control": 0, "b": 1}
    assert [row.users for row in report.rows] == [1]  # final at the last look
    assert report.rows[0].mean == 60.0
