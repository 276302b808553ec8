"""The user's decayed counters: one array, each counter with its half-life, stored as held."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.features import COUNTERS, DAY_MS, UserFeatures
from pipeline.core.state_codec import COUNTER_LAYOUT, COUNTER_LAYOUTS

WEEK_HALVED = {
    "sessions_7d", "events_7d", "watch_s_7d", "completion_sum_7d", "completion_n_7d",
    "search_only_sessions_7d", "clicks_7d", "clicks_played_7d",
}  # fmt: skip
NOT_DECAYED = {"gap_mean_days"}
START = 1_767_225_600_000


def test_each_counter_halves_in_its_own_half_life() -> None:
    features = UserFeatures(at_ms=START)
    features.counters = array("d", [1.0] * len(COUNTERS))
    features.decay_to(START + 7 * DAY_MS)
    week = dict(zip(COUNTERS, features.counters, strict=True))
    features.decay_to(START + 28 * DAY_MS)
    month = dict(zip(COUNTERS, features.counters, strict=True))
    for name in COUNTERS:
        if name in NOT_DECAYED:
            assert week[name] == month[name] == 1.0, name
        elif name in WEEK_HALVED:
            assert week[name] == pytest.approx(0.5), name
        else:  # 28 days
            assert week[name] == pytest.approx(0.5**0.25), name
            assert month[name] == pytest.approx(0.5), name


def test_the_counters_are_held_in_the_stored_layout() -> None:
    assert COUNTER_LAYOUTS[COUNTER_LAYOUT] == COUNTERS


@given(st.lists(st.floats(allow_nan=False), min_size=len(COUNTERS), max_size=len(COUNTERS)))
def test_every_counter_is_its_named_attribute(values: list[float]) -> None:
    named = dict(zip(COUNTERS, values, strict=True))
    features = UserFeatures(
        **{name: value for name, value in named.items() if name != "events_7d"},
        events_7d=values[2:6],
    )
    assert features.counters.tolist() == values
    fields = features.as_dict()
    assert fields["events_7d"] == values[2:6]
    assert all(fields[name] == value for name, value in named.items() if name != "events_7d")
    assert UserFeatures(**fields) == features  # type: ignore[arg-type]


def test_an_event_counts_for_its_type_all_events_and_its_device() -> None:
    features = UserFeatures(at_ms=START)
    for type_index, device in ((0, "tv"), (0, "phone"), (2, None), (3, "tv")):
        features.count_event(type_index, device=device)
    assert features.events_7d == [2.0, 0.0, 1.0, 1.0]
    assert (features.all_events, features.tv_events) == (4.0, 2.0)
    assert features.counters.tolist().count(0.0) == len(COUNTERS) - 5  # nothing else moved
