"""The simulated audience: who each viewer is and how their engagement evolves over time.

A :class:`UserProfile` holds a genre taste concentrated on one to three favourite genres,
a preferred device, a country (and its time zone), two habitual viewing hours, a session
habit of 1.5 to 14 sessions a week, more or less viewing at weekends, and short vacations.
A churner's engagement falls linearly to zero over the two to five weeks before they
leave; a quarter of the loyal viewers go through a slump of one to three weeks instead.

Examples
--------
>>> profiles = draw_profiles(
...     100, seed=1, start_ms=0, end_ms=60 * DAY_MS, churn_fraction=0.25, new_user_fraction=0.1
... )
>>> sum(p.leave_ms is not None for p in profiles), sum(p.joined_ms >= 0 for p in profiles)
(25, 10)
>>> churner = next(p for p in profiles if p.leave_ms is not None)
>>> round(churner.engagement(churner.leave_ms - churner.decline_ms // 2), 3)
0.5
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from pipeline.sim.synthetic_catalog import GENRE_SHARE, GENRES

__all__ = ["DAY_MS", "DEVICES", "HOUR_MS", "Behaviours", "UserProfile", "draw_profiles"]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
DEVICES = ("tv", "mobile", "web", "tablet")
"""The devices viewers watch on; each viewer prefers one."""

_DEVICE_SHARE = (0.45, 0.30, 0.15, 0.10)
_COUNTRIES = ("US", "BR", "MX", "CA", "GB", "DE", "FR", "ES", "IN", "JP", "AU")
_COUNTRY_SHARE = (0.30, 0.10, 0.06, 0.05, 0.10, 0.09, 0.08, 0.06, 0.08, 0.05, 0.03)
_UTC_OFFSET_H = (-5.0, -3.0, -6.0, -5.0, 0.0, 1.0, 1.0, 1.0, 5.5, 9.0, 10.0)
_FAVOURITE_SHARE = np.sqrt(GENRE_SHARE) / np.sqrt(GENRE_SHARE).sum()  # niche tastes exist too


@dataclass(frozen=True, slots=True)
class Behaviours:
    """How the audience departs from the default one; scenarios combine them.

    The defaults draw exactly the default audience (the same bytes as before these
    existed); the draws of the others come from a stream of their own.

    Attributes
    ----------
    break_every_days, break_days
        Breaks (no session at all) come about once per ``break_every_days`` and last
        ``break_days`` (low, high) days: by default short vacations, rarer than a quarter.
    sudden_share
        Share of the churners who leave without declining first (one hour of decline):
        nothing in their behaviour foretells it.
    return_share
        Share of the churners who come back, 15 to 45 days after leaving, in their old
        habits (when the period lasts that long).
    """

    break_every_days: float = 75.0
    break_days: tuple[float, float] = (2.0, 6.0)
    sudden_share: float = 0.0
    return_share: float = 0.0


class _Course(TypedDict):
    """How a viewer's engagement evolves (the last four fields of :class:`UserProfile`)."""

    leave_ms: int | None
    decline_ms: int
    slump: tuple[int, int, float] | None
    vacations: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class UserProfile:
    """Who a viewer is and how their engagement evolves; drawn once, never changed.

    Attributes
    ----------
    taste
        Weight of each genre of :data:`~pipeline.sim.synthetic_catalog.GENRES`, summing to 1.
    habitual_hours
        Main and secondary viewing hour, local time.
    sessions_per_week
        The viewer's habit; the realised rate saturates near two sessions a day.
    weekend_boost
        How much more (or less, below 1) the viewer watches on Saturdays and Sundays.
    binge
        Mean number of extra titles opened per session.
    joined_ms
        Sign-up time: before the period for most viewers.
    leave_ms, decline_ms
        For a churner, when they leave for good and how long they decline before.
    slump
        ``(start_ms, end_ms, engagement)`` of a loyal viewer's low period, or None.
    vacations
        ``(start_ms, end_ms)`` periods without any session.
    """

    user_id: str
    taste: tuple[float, ...]
    device: str
    country: str
    utc_offset_ms: int
    habitual_hours: tuple[float, float]
    sessions_per_week: float
    weekend_boost: float
    binge: float
    joined_ms: int
    leave_ms: int | None
    decline_ms: int
    slump: tuple[int, int, float] | None
    vacations: tuple[tuple[int, int], ...]
    #: For a churner who comes back: when (in their old habits from then on).
    return_ms: int | None = None

    def engagement(self, ts_ms: int) -> float:
        """How engaged the viewer is at ``ts_ms``, from 0 (gone) to 1 (in their habits)."""
        level = 1.0
        back = self.return_ms is not None and ts_ms >= self.return_ms
        if self.leave_ms is not None and ts_ms > self.leave_ms - self.decline_ms and not back:
            level = max(0.0, (self.leave_ms - ts_ms) / self.decline_ms)
        if self.slump is not None and self.slump[0] <= ts_ms < self.slump[1]:
            level *= self.slump[2]
        return level

    def vacation_end(self, ts_ms: int) -> int | None:
        """Return the end of the vacation ``ts_ms`` falls in, or None."""
        for start, end in self.vacations:
            if start <= ts_ms < end:
                return end
        return None

    def is_weekend(self, ts_ms: int) -> bool:
        """Whether ``ts_ms`` is a Saturday or Sunday where the viewer lives."""
        return ((ts_ms + self.utc_offset_ms) // DAY_MS + 3) % 7 >= 5  # 1970-01-01 was a Thursday


def draw_profiles(
    count: int,
    *,
    seed: int,
    start_ms: int,
    end_ms: int,
    churn_fraction: float,
    new_user_fraction: float,
    behaviours: Behaviours = Behaviours(),
) -> list[UserProfile]:
    """``count`` viewers of the period ``[start_ms, end_ms)``.

    Exactly ``round(count * churn_fraction)`` of them leave during the period, and
    ``round(count * new_user_fraction)`` sign up during its first 60 %.
    """
    rng = np.random.default_rng([seed, 0x5E55])
    extra = np.random.default_rng([seed, 0xB4E5])  # the draws of non-default behaviours
    span = end_ms - start_ms
    churners = rng.permutation(count) < round(count * churn_fraction)
    newcomers = rng.permutation(count) < round(count * new_user_fraction)
    joined = np.where(
        newcomers,
        start_ms + (rng.random(count) * 0.6 * span).astype(np.int64),
        start_ms - rng.integers(DAY_MS, 3 * 365 * DAY_MS, count),
    )
    rates = np.clip(rng.lognormal(math.log(4.0), 0.5, count), 1.5, 14.0)
    countries = rng.choice(len(_COUNTRIES), size=count, p=_COUNTRY_SHARE)
    devices = rng.choice(len(DEVICES), size=count, p=_DEVICE_SHARE)
    profiles = [
        UserProfile(
            user_id=f"user-{index:06d}",
            taste=_draw_taste(rng),
            device=DEVICES[devices[index]],
            country=_COUNTRIES[countries[index]],
            utc_offset_ms=int(_UTC_OFFSET_H[countries[index]] * HOUR_MS),
            habitual_hours=_draw_hours(rng),
            sessions_per_week=float(rates[index]),
            weekend_boost=float(rng.uniform(0.8, 1.8)),
            binge=float(rng.uniform(0.2, 1.5)),
            joined_ms=int(joined[index]),
            **_draw_course(
                rng, int(joined[index]), start_ms, end_ms, churn=churners[index], every=behaviours
            ),
        )
        for index in range(count)
    ]
    if behaviours.sudden_share or behaviours.return_share:
        profiles = [_departure_behaviours(p, extra, behaviours, end_ms) for p in profiles]
    return profiles


def _departure_behaviours(
    profile: UserProfile, rng: np.random.Generator, behaviours: Behaviours, end_ms: int
) -> UserProfile:
    """A churner made sudden, or returning, at the shares of ``behaviours``."""
    sudden, returns, days = rng.random(), rng.random(), rng.uniform(15.0, 45.0)
    if profile.leave_ms is None:
        return profile
    decline_ms = HOUR_MS if sudden < behaviours.sudden_share else profile.decline_ms
    back_ms: int | None = profile.leave_ms + int(days * DAY_MS)
    if returns >= behaviours.return_share or back_ms is None or back_ms >= end_ms:
        back_ms = None
    return dataclasses.replace(profile, decline_ms=decline_ms, return_ms=back_ms)


def _draw_taste(rng: np.random.Generator) -> tuple[float, ...]:
    """Draw genre weights: 90 % on one to three favourite genres, the rest spread thinly."""
    favourites = rng.choice(len(GENRES), size=rng.integers(1, 4), replace=False, p=_FAVOURITE_SHARE)
    taste = 0.1 * rng.dirichlet(np.full(len(GENRES), 0.5))
    taste[favourites] += 0.9 * rng.dirichlet(np.full(len(favourites), 2.0))
    return tuple(float(weight) for weight in taste)


def _draw_hours(rng: np.random.Generator) -> tuple[float, float]:
    """Draw a main viewing hour (mostly evenings) and a secondary one, local time."""
    period = rng.choice(3, p=[0.7, 0.2, 0.1])
    main = rng.uniform(*((19.0, 23.0), (12.0, 18.0), (6.0, 9.0))[period])
    return float(main), float(rng.uniform(8.0, 23.0))


def _draw_course(
    rng: np.random.Generator,
    joined_ms: int,
    start_ms: int,
    end_ms: int,
    *,
    churn: bool,
    every: Behaviours,
) -> _Course:
    """Draw how engagement evolves: vacations, and either a departure or a slump."""
    first_ms = max(joined_ms, start_ms)
    vacation_count = rng.poisson((end_ms - first_ms) / (every.break_every_days * DAY_MS))
    vacation_starts = rng.uniform(first_ms, end_ms, vacation_count)
    low, high = every.break_days
    vacations = tuple(
        (int(begin), int(begin + rng.uniform(low, high) * DAY_MS))
        for begin in np.sort(vacation_starts)
    )
    if churn:
        leave_ms, decline_ms = _draw_departure(rng, joined_ms, start_ms, end_ms)
        vacations = tuple(v for v in vacations if v[1] < leave_ms - decline_ms)
        return {
            "leave_ms": leave_ms, "decline_ms": decline_ms, "slump": None, "vacations": vacations
        }  # fmt: skip
    slump = None
    if rng.random() < 0.25:
        begin = int(rng.uniform(first_ms, end_ms))
        slump = (begin, begin + int(rng.uniform(7, 21) * DAY_MS), float(rng.uniform(0.5, 0.85)))
    return {"leave_ms": None, "decline_ms": 0, "slump": slump, "vacations": vacations}


def _draw_departure(
    rng: np.random.Generator, joined_ms: int, start_ms: int, end_ms: int
) -> tuple[int, int]:
    """Draw when a churner leaves, and for how long they decline before.

    They leave at least 14 days before the end (so that their churn is observable), and
    decline for two to five weeks, which may start before the period (they were already
    drifting away) but not before they joined.
    """
    first_ms = max(joined_ms, start_ms)
    earliest = first_ms + 0.1 * (end_ms - first_ms)
    latest = end_ms - min(14 * DAY_MS, 0.5 * (end_ms - start_ms))
    leave_ms = int(rng.uniform(earliest, max(earliest, latest)))
    decline_ms = int(min(rng.uniform(14, 35) * DAY_MS, 0.7 * (leave_ms - joined_ms)))
    return leave_ms, max(decline_ms, HOUR_MS)
