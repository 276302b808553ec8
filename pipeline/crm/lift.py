"""The lift of a trigger, from a holdout: return within a window, sent against withheld.

An experiment whose variant sets ``crm_holdout: [<type>]`` makes the triggers of its users
``withheld`` instead of ``sent``; everything else is the same (the caps count both), so the
difference of what the two arms' users did after their trigger is what the message did.
:func:`holdout_lift` reads it from the ``ott.actions`` records and the users' events: each
user counts once, from their first trigger of the type (users, not messages, are
randomised), as **returned** when they have an event within ``window_ms`` after it. Users
whose window has not ended by ``end_ms`` are left out, so a look never counts a user
before they could return.

The statistics are the always-valid ones of the experiments
(:class:`~pipeline.experiments.stats.SequentialTest`, the mixture SPRT): the test looks at
every ``look_ms`` of event time as the windows end, as a team watching it live would, and
the interval holds at every look.

Examples
--------
>>> actions = [{"user_id": f"u{n}", "type": "win_back", "status": "sent" if n % 2 else
...             "withheld", "ts": 0} for n in range(400)]
>>> events = [(f"u{n}", 86_400_000) for n in range(400) if n % 2 or n % 4 == 0]
>>> lift = holdout_lift(actions, events, end_ms=30 * 86_400_000)
>>> lift.users, lift.returned, round(lift.difference, 2), lift.interval[0] > 0
((200, 200), (100, 200), 0.5, True)
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.core.events import parse_ts
from pipeline.core.features import DAY_MS
from pipeline.experiments.stats import Moments, SequentialTest

__all__ = ["HoldoutLift", "holdout_lift"]


@dataclass(frozen=True, slots=True)
class HoldoutLift:
    """Users and returns of each arm (withheld, sent), and the always-valid comparison."""

    kind: str
    window_ms: int
    users: tuple[int, int]
    returned: tuple[int, int]
    difference: float
    interval: tuple[float, float]
    p_value: float
    looks: int

    @property
    def rates(self) -> tuple[float, float]:
        """The return rate of the withheld arm and of the sent arm."""
        return tuple(  # type: ignore[return-value]
            r / n if n else float("nan") for r, n in zip(self.returned, self.users, strict=True)
        )

    @property
    def relative(self) -> float:
        """The difference over the withheld arm's rate."""
        base = self.rates[0]
        return self.difference / base if base else float("nan")


def holdout_lift(
    actions: Iterable[Mapping[str, Any]],
    events: Iterable[tuple[str, int]],
    *,
    end_ms: int,
    kind: str = "win_back",
    window_ms: int = 7 * DAY_MS,
    look_ms: int = DAY_MS,
    alpha: float = 0.05,
) -> HoldoutLift:
    """Compare the users whose first ``kind`` trigger was withheld with those sent one.

    ``actions`` are ``ott.actions`` records (``ts`` as published, or epoch milliseconds);
    ``events`` are ``(user_id, event time)`` of the users' valid events, in any order.
    """
    first: dict[str, tuple[int, bool]] = {}
    for action in actions:
        if action["type"] != kind:
            continue
        at_ms = parse_ts(action["ts"])
        known = first.get(action["user_id"])
        if known is None or at_ms < known[0]:
            first[action["user_id"]] = (at_ms, action["status"] == "sent")
    times: defaultdict[str, list[int]] = defaultdict(list)
    for user_id, ts_ms in events:
        if user_id in first:
            times[user_id].append(ts_ms)
    outcomes = []  # (window end, sent, returned)
    for user_id, (at_ms, sent) in first.items():
        if at_ms + window_ms > end_ms:
            continue
        seen = sorted(times[user_id])
        after = bisect.bisect_right(seen, at_ms)
        came_back = after < len(seen) and seen[after] <= at_ms + window_ms
        outcomes.append((at_ms + window_ms, sent, came_back))
    outcomes.sort()
    test = SequentialTest(alpha=alpha, horizon=max(len(outcomes) // 2, 100))
    users, returned = [0, 0], [0, 0]
    looks = 0
    next_look = None
    for done_ms, sent, came in outcomes:
        if next_look is not None and done_ms > next_look and min(users) > 1:
            test.update(_arm(users[0], returned[0]), _arm(users[1], returned[1]))
            looks += 1
        next_look = (done_ms // look_ms + 1) * look_ms
        users[int(sent)] += 1
        returned[int(sent)] += int(came)
    if min(users) > 1:
        test.update(_arm(users[0], returned[0]), _arm(users[1], returned[1]))
        looks += 1
    rates = [r / n if n else 0.0 for r, n in zip(returned, users, strict=True)]
    return HoldoutLift(
        kind=kind,
        window_ms=window_ms,
        users=(users[0], users[1]),
        returned=(returned[0], returned[1]),
        difference=rates[1] - rates[0],
        interval=test.interval,
        p_value=test.p_value,
        looks=looks,
    )


def _arm(users: int, returned: int) -> Moments:
    return Moments.of_conversions(users, returned)
