"""The holdout lift: the right difference when there is one, an honest interval when none."""

from __future__ import annotations

import numpy as np

from pipeline.core.features import DAY_MS
from pipeline.crm.lift import holdout_lift


def synthetic(rng: np.random.Generator, users: int, base: float, lift: float):
    """Users triggered over 60 days, half held out; the sent ones return ``lift`` more often."""
    actions, events = [], []
    for n in range(users):
        user, at_ms = f"u{n}", int(rng.integers(0, 60 * DAY_MS))
        sent = bool(rng.random() < 0.5)
        actions.append({"user_id": user, "type": "win_back", "ts": at_ms,
                        "status": "sent" if sent else "withheld"})  # fmt: skip
        actions.append(
            {
                "user_id": user,
                "type": "win_back",
                "ts": at_ms + 20 * DAY_MS,
                "status": "sent" if sent else "withheld",
            }
        )  # a later one: not counted
        if rng.random() < base + (lift if sent else 0.0):
            events.append((user, at_ms + int(rng.integers(1, 7 * DAY_MS))))
        events.append((user, at_ms - 1))  # before the trigger: not a return
        events.append((user, at_ms + 8 * DAY_MS))  # after the window: not a return either
    return actions, events


def test_a_planted_lift_is_measured_and_its_interval_excludes_zero() -> None:
    actions, events = synthetic(np.random.default_rng(1), 4000, base=0.3, lift=0.1)
    lift = holdout_lift(actions, events, end_ms=90 * DAY_MS)
    assert sum(lift.users) == 4000 and lift.looks > 30
    assert abs(lift.difference - 0.1) < 0.04
    low, high = lift.interval
    assert 0 < low < 0.1 < high and lift.p_value < 0.01


def test_without_a_lift_the_always_valid_interval_covers_zero_nearly_always() -> None:
    covered = 0
    for seed in range(40):
        actions, events = synthetic(np.random.default_rng(seed), 600, base=0.3, lift=0.0)
        low, high = holdout_lift(actions, events, end_ms=90 * DAY_MS).interval
        covered += low <= 0.0 <= high
    assert covered >= 38  # alpha 0.05 over every look: at most about 2 of 40 miss


def test_users_whose_window_has_not_ended_are_left_out() -> None:
    actions = [{"user_id": "a", "type": "win_back", "status": "sent", "ts": 10 * DAY_MS},
               {"user_id": "b", "type": "win_back", "status": "withheld", "ts": 2 * DAY_MS},
               {"user_id": "c", "type": "at_risk", "status": "sent", "ts": 0}]  # fmt: skip
    lift = holdout_lift(actions, [("a", 11 * DAY_MS)], end_ms=12 * DAY_MS)
    assert lift.users == (1, 0) and lift.returned == (0, 0)
