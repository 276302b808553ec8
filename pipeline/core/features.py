"""Behavioural features of a user, kept up to date per event in event time.

:class:`UserFeatures` holds exponentially time-decayed counters: a counter with half-life
``H`` loses half its weight every ``H`` of event time, so "sessions in the last week" is a
counter with a one-week half-life, updated in O(1) per event without keeping any history.
All counters share one reference time and are decayed together when touched.

The churn models see :meth:`UserFeatures.churn_vector` at the end of each session:

==========================  ==============================================================
feature                     meaning
==========================  ==============================================================
``sessions_7d``             sessions, decayed with a 7-day half-life (≈ sessions per week)
``sessions_28d``            sessions, 28-day half-life
``session_trend``           ``4 · sessions_7d / (sessions_28d + 1)``; below 1: slowing down
``gap_days``                days between the end of the previous session and this one
``gap_mean_days``           running mean of ``gap_days`` (weight 0.3 on the newest)
``gap_ratio``               ``gap_days / (gap_mean_days + 0.5)``: an unusually long absence
``session_minutes``         length of the session that just ended
``session_events``          events in it
``watch_hours_7d``          watched hours, 7-day half-life
``completion_ratio``        mean watched fraction of items at the end of their playback
``search_without_play``     share of sessions with a search and no play (28-day)
``click_to_play``           share of clicked items that were then played (28-day)
``tenure_days``             days since the user's first event
``play_7d`` … ``click_7d``  events per type, 7-day half-life
``tv_share``                share of events on a TV device (28-day)
``genre_focus``             share of watch time in the user's favourite genre (28-day)
``completion_ratio_7d``     ``completion_ratio`` over the last week (7-day half-life)
``search_without_play_7d``  searches without a play per session, last week (7-day)
``click_to_play_7d``        ``click_to_play`` over the last week (7-day)
==========================  ==============================================================

The last three (since ``churn-logreg-7``) see engagement erode: a viewer about to leave
finishes less, plays less of what they click and searches without playing, and a 28-day
ratio shows it weeks late. Models of earlier releases read the first nineteen
(:data:`CHURN_FEATURES_V1`).

``genre_affinity`` (watch seconds per genre, 28-day half-life) also feeds personalisation
and audiences; genres come from the catalog when it is known.

Examples
--------
>>> f = UserFeatures()
>>> f.decay_to(1_767_225_600_000); f.sessions_7d += 1
>>> f.decay_to(1_767_225_600_000 + 7 * 86_400_000)
>>> round(f.sessions_7d, 3)
0.5
"""

from __future__ import annotations

import base64
import math
import struct
from array import array
from collections.abc import Sequence

__all__ = [
    "COUNTERS",
    "CHURN_FEATURES",
    "CHURN_FEATURES_V1",
    "SHORT_HALF_LIFE_DAYS",
    "UserFeatures",
    "unpack_floats",
]

DAY_MS = 86_400_000
_SHORT_HALF_LIFE_MS = 7 * DAY_MS
SHORT_HALF_LIFE_DAYS = _SHORT_HALF_LIFE_MS / DAY_MS
"""The half-life of the ``_7d`` counters (``sessions_7d``, ``play_7d``, ...), in days."""
_LONG_HALF_LIFE_MS = 28 * DAY_MS
_LN2 = math.log(2.0)
_GAP_WEIGHT = 0.3

CHURN_FEATURES: tuple[str, ...] = (
    "sessions_7d", "sessions_28d", "session_trend", "gap_days", "gap_mean_days", "gap_ratio",
    "session_minutes", "session_events", "watch_hours_7d", "completion_ratio",
    "search_without_play", "click_to_play", "tenure_days", "play_7d", "pause_7d",
    "search_7d", "click_7d", "tv_share", "genre_focus",
    "completion_ratio_7d", "search_without_play_7d", "click_to_play_7d",
)  # fmt: skip
"""The churn feature names, in the order of :meth:`UserFeatures.churn_vector`."""
CHURN_FEATURES_V1: tuple[str, ...] = CHURN_FEATURES[:19]
"""The churn features before ``churn-logreg-7``: what models of earlier releases read."""


def _decayed(dict_: dict[str, float], factor: float) -> None:
    for key in list(dict_):
        value = dict_[key] * factor
        if value < 1e-3:
            del dict_[key]  # forgotten: keeps the state small
        else:
            dict_[key] = value


#: The decayed counters, in the order :attr:`UserFeatures.counters` holds them (the stored
#: layout 2 of :mod:`pipeline.core.state_codec`): ``events_7d`` is four, one per event type.
#: The last five are last week's of the 28-day engagement counters (since layout 2).
COUNTERS: tuple[str, ...] = (
    "sessions_7d", "sessions_28d", "events_7d", "events_7d", "events_7d", "events_7d",
    "watch_s_7d", "completion_sum", "completion_n", "search_only_sessions", "clicks",
    "clicks_played", "tv_events", "all_events", "gap_mean_days",
    "completion_sum_7d", "completion_n_7d", "search_only_sessions_7d", "clicks_7d",
    "clicks_played_7d",
)  # fmt: skip
_EVENTS = COUNTERS.index("events_7d")  # the first of the four
_EVENTS_END = _EVENTS + COUNTERS.count("events_7d")
_ALL_EVENTS = COUNTERS.index("all_events")
_TV_EVENTS = COUNTERS.index("tv_events")
_COMPLETION_SUM, _COMPLETION_N = COUNTERS.index("completion_sum"), COUNTERS.index("completion_n")
_COMPLETION_SUM_7D = COUNTERS.index("completion_sum_7d")
_COMPLETION_N_7D = COUNTERS.index("completion_n_7d")
_CLICKS, _CLICKS_7D = COUNTERS.index("clicks"), COUNTERS.index("clicks_7d")
_CLICKS_PLAYED = COUNTERS.index("clicks_played")
_CLICKS_PLAYED_7D = COUNTERS.index("clicks_played_7d")
#: Decayed with the 7-day half-life; with the 28-day one; ``gap_mean_days`` is not decayed.
_SHORT = tuple(i for i, name in enumerate(COUNTERS) if name.endswith("_7d"))
_LONG = tuple(
    i for i, name in enumerate(COUNTERS) if not name.endswith("_7d") and name != "gap_mean_days"
)


def _counter(name: str) -> property:
    index = COUNTERS.index(name)

    def get(self: UserFeatures) -> float:
        return self.counters[index]

    def set_(self: UserFeatures, value: float) -> None:
        self.counters[index] = value

    return property(get, set_, doc=f"Counter {COUNTERS[index]} (``counters[{index}]``).")


class UserFeatures:
    """Time-decayed behavioural counters of one user (see the module docstring).

    The counters are one array of doubles (:data:`COUNTERS`), each also an attribute: a
    user's fifteen were fifteen float objects and a list, ~0.4 kB of a cached state.
    """

    __slots__ = ("at_ms", "previous_session_end_ms", "genre_affinity", "counters")

    def __init__(
        self,
        at_ms: int = 0,
        sessions_7d: float = 0.0,
        sessions_28d: float = 0.0,
        events_7d: list[float] | None = None,
        watch_s_7d: float = 0.0,
        completion_sum: float = 0.0,
        completion_n: float = 0.0,
        search_only_sessions: float = 0.0,
        clicks: float = 0.0,
        clicks_played: float = 0.0,
        tv_events: float = 0.0,
        all_events: float = 0.0,
        gap_mean_days: float = 0.0,
        previous_session_end_ms: int = 0,
        genre_affinity: dict[str, float] | None = None,
        completion_sum_7d: float = 0.0,
        completion_n_7d: float = 0.0,
        search_only_sessions_7d: float = 0.0,
        clicks_7d: float = 0.0,
        clicks_played_7d: float = 0.0,
    ) -> None:
        self.at_ms = at_ms
        self.previous_session_end_ms = previous_session_end_ms
        self.genre_affinity: dict[str, float] = {} if genre_affinity is None else genre_affinity
        events = (0.0, 0.0, 0.0, 0.0) if events_7d is None else events_7d
        self.counters = array(
            "d",
            (sessions_7d, sessions_28d, *events, watch_s_7d, completion_sum, completion_n,
             search_only_sessions, clicks, clicks_played, tv_events, all_events, gap_mean_days,
             completion_sum_7d, completion_n_7d, search_only_sessions_7d, clicks_7d,
             clicks_played_7d),
        )  # fmt: skip
        if len(self.counters) != len(COUNTERS):
            raise ValueError(f"events_7d: one count per event type, not {len(events)}")

    @classmethod
    def of_counters(
        cls,
        at_ms: int,
        previous_session_end_ms: int,
        genre_affinity: dict[str, float],
        counters: Sequence[float],
    ) -> UserFeatures:
        """The features with ``counters`` in the order of :data:`COUNTERS` (a stored layout 2).

        >>> f = UserFeatures.of_counters(5, 0, {}, [float(i) for i in range(len(COUNTERS))])
        >>> f.at_ms, f.sessions_28d, f.events_7d, f.clicks_played_7d
        (5, 1.0, [2.0, 3.0, 4.0, 5.0], 19.0)
        """
        if len(counters) != len(COUNTERS):
            raise ValueError(f"{len(counters)} counters, not {len(COUNTERS)}")
        features = cls.__new__(cls)
        features.at_ms = at_ms
        features.previous_session_end_ms = previous_session_end_ms
        features.genre_affinity = genre_affinity
        features.counters = array("d", counters)
        return features

    sessions_7d = _counter("sessions_7d")
    sessions_28d = _counter("sessions_28d")
    watch_s_7d = _counter("watch_s_7d")
    completion_sum = _counter("completion_sum")
    completion_n = _counter("completion_n")
    search_only_sessions = _counter("search_only_sessions")
    clicks = _counter("clicks")
    clicks_played = _counter("clicks_played")
    tv_events = _counter("tv_events")
    all_events = _counter("all_events")
    gap_mean_days = _counter("gap_mean_days")
    completion_sum_7d = _counter("completion_sum_7d")
    completion_n_7d = _counter("completion_n_7d")
    search_only_sessions_7d = _counter("search_only_sessions_7d")
    clicks_7d = _counter("clicks_7d")
    clicks_played_7d = _counter("clicks_played_7d")

    @property
    def events_7d(self) -> list[float]:
        """Events per type (``EVENT_TYPES`` order), 7-day half-life (a copy)."""
        return self.counters[_EVENTS:_EVENTS_END].tolist()

    def as_dict(self) -> dict[str, object]:
        """Every field by name, as the dataclass it was gave them (``events_7d`` a list).

        >>> UserFeatures(clicks=2.0).as_dict()["clicks"], UserFeatures().as_dict()["events_7d"]
        (2.0, [0.0, 0.0, 0.0, 0.0])
        """
        counters = {name: getattr(self, name) for name in dict.fromkeys(COUNTERS)}
        return {
            "at_ms": self.at_ms,
            **counters,
            "previous_session_end_ms": self.previous_session_end_ms,
            "genre_affinity": self.genre_affinity,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserFeatures):
            return NotImplemented
        return (
            self.at_ms == other.at_ms
            and self.previous_session_end_ms == other.previous_session_end_ms
            and self.genre_affinity == other.genre_affinity
            and self.counters == other.counters
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.as_dict().items())
        return f"UserFeatures({fields})"

    def decay_to(self, ts_ms: int) -> None:
        """Bring every counter forward to event time ``ts_ms`` (never backwards)."""
        elapsed = ts_ms - self.at_ms
        if elapsed <= 0:
            return
        if self.at_ms:
            short = math.exp(-_LN2 * elapsed / _SHORT_HALF_LIFE_MS)
            long = math.exp(-_LN2 * elapsed / _LONG_HALF_LIFE_MS)
            counters = self.counters
            for i in _SHORT:
                counters[i] *= short
            for i in _LONG:
                counters[i] *= long
            _decayed(self.genre_affinity, long)
        self.at_ms = ts_ms

    def count_event(self, type_index: int, *, device: str | None) -> None:
        """Count one event of type ``type_index`` (decay first)."""
        counters = self.counters
        counters[_EVENTS + type_index] += 1.0
        counters[_ALL_EVENTS] += 1.0
        if device == "tv":
            counters[_TV_EVENTS] += 1.0

    def watched(self, seconds: float, genres: tuple[str, ...]) -> None:
        """Add watch time, shared among the item's genres."""
        self.watch_s_7d += seconds
        if genres:
            share = seconds / len(genres)
            affinity = self.genre_affinity
            for genre in genres:
                affinity[genre] = affinity.get(genre, 0.0) + share

    def playback_ended(self, fraction: float) -> None:
        """An item's playback ended having reached ``fraction`` of its duration."""
        fraction = min(max(fraction, 0.0), 1.0)
        counters = self.counters
        counters[_COMPLETION_SUM] += fraction
        counters[_COMPLETION_N] += 1.0
        counters[_COMPLETION_SUM_7D] += fraction
        counters[_COMPLETION_N_7D] += 1.0

    def clicked(self) -> None:
        """The user clicked an item."""
        counters = self.counters
        counters[_CLICKS] += 1.0
        counters[_CLICKS_7D] += 1.0

    def clicked_then_played(self) -> None:
        """The user played the item they last clicked."""
        counters = self.counters
        counters[_CLICKS_PLAYED] += 1.0
        counters[_CLICKS_PLAYED_7D] += 1.0

    def session_ended(self, *, start_ms: int, end_ms: int, searched: bool, played: bool) -> float:
        """Count a finished session; returns the gap in days since the previous one."""
        gap_days = 0.0
        if self.previous_session_end_ms:
            gap_days = max(0.0, (start_ms - self.previous_session_end_ms) / DAY_MS)
            if self.gap_mean_days:
                self.gap_mean_days += _GAP_WEIGHT * (gap_days - self.gap_mean_days)
            else:
                self.gap_mean_days = gap_days
        self.previous_session_end_ms = end_ms
        self.sessions_7d += 1.0
        self.sessions_28d += 1.0
        if searched and not played:
            self.search_only_sessions += 1.0
            self.search_only_sessions_7d += 1.0
        return gap_days

    def churn_vector(
        self, *, gap_days: float, session_ms: int, session_events: int, tenure_ms: int
    ) -> list[float]:
        """The churn features (:data:`CHURN_FEATURES` order) at the end of a session."""
        affinity = self.genre_affinity
        total_affinity = sum(affinity.values())
        events = self.counters
        return [
            self.sessions_7d,
            self.sessions_28d,
            4.0 * self.sessions_7d / (self.sessions_28d + 1.0),
            gap_days,
            self.gap_mean_days,
            gap_days / (self.gap_mean_days + 0.5),
            session_ms / 60_000.0,
            float(session_events),
            self.watch_s_7d / 3600.0,
            self.completion_sum / self.completion_n if self.completion_n else 0.0,
            self.search_only_sessions / self.sessions_28d if self.sessions_28d else 0.0,
            self.clicks_played / self.clicks if self.clicks else 0.0,
            tenure_ms / DAY_MS,
            events[_EVENTS],
            events[_EVENTS + 1],
            events[_EVENTS + 2],
            events[_EVENTS + 3],
            self.tv_events / self.all_events if self.all_events else 0.0,
            max(affinity.values()) / total_affinity if total_affinity else 0.0,
            self.completion_sum_7d / self.completion_n_7d if self.completion_n_7d else 0.0,
            self.search_only_sessions_7d / self.sessions_7d if self.sessions_7d else 0.0,
            self.clicks_played_7d / self.clicks_7d if self.clicks_7d else 0.0,
        ]


def unpack_floats(text: str) -> list[float]:
    """Floats packed as base64 of little-endian float64 (stored states of format 2).

    >>> unpack_floats(base64.b64encode(struct.pack("<2d", 0.1, 2.5)).decode())
    [0.1, 2.5]
    """
    data = base64.b64decode(text)
    return list(struct.unpack(f"<{len(data) // 8}d", data))
