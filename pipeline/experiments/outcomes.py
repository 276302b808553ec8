"""What each user of an experiment did while it ran: the user-level values it is judged on.

:class:`Outcomes` reads a user's events in event-time order and keeps, per user, the counts
the experiment metrics are made of, over the user's first ``window_s`` of event time from
their first event (7 days by default): a user's values are final once the window has
passed, so every user is measured over the same span and the values do not drift while the
experiment is watched. Event time only: a click converts when the same user
plays the same item within ``conversion_window_s`` (10 minutes) of it; a search succeeds
when a play follows it in the same session (no gap of ``session_gap_s``); a playback
completes when its playhead reaches 90 % of the item's duration
(:class:`~pipeline.core.playback.Playhead`). Each
metric is then one value per user (:data:`METRICS`): the statistics compare the means of
those values between arms, so a heavy user counts once, as a user.

>>> from pipeline.core.events import Event
>>> outcomes = Outcomes()
>>> for event in [
...     Event("e1", "click", "u1", 0, item_id="m1"),
...     Event("e2", "play", "u1", 60_000, item_id="m1", position_s=0.0, duration_s=100.0),
...     Event("e3", "pause", "u1", 160_000, item_id="m1", position_s=95.0),
...     Event("e4", "click", "u1", 200_000, item_id="m2"),
... ]:
...     outcomes.add(event)
>>> user = outcomes.users["u1"]
>>> user.clicks, user.clicks_played, user.watch_s, user.completed
(2, 1, 95.0, 1)
>>> METRICS["click_play_conversion"](user), METRICS["watch_seconds_per_user"](user)
(0.5, 95.0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.events import Event
from pipeline.core.playback import Playhead

__all__ = ["METRICS", "Outcomes", "UserOutcome", "step_outcome"]

#: A user is judged on their first 7 days of event time in the experiment.
WINDOW_MS = 7 * 86_400_000
SESSION_GAP_MS = 1_800_000
CONVERSION_MS = 600_000


@dataclass(slots=True)
class UserOutcome:
    """One user's counts since joining the experiment."""

    first_ms: int
    last_ms: int
    sessions: int = 1
    clicks: int = 0
    clicks_played: int = 0
    searches: int = 0
    searches_played: int = 0
    plays: int = 0
    completed: int = 0
    watch_s: float = 0.0
    _pending_clicks: dict[str, int] = field(default_factory=dict)
    _open_searches: int = 0
    _playhead: Playhead = field(default_factory=Playhead)
    #: The variant the user is in (kept with the outcome where the user's state holds it).
    variant: str = ""

    def values(self, metrics: tuple[str, ...]) -> list[float | None]:
        """The user's value of each of ``metrics`` (names of :data:`METRICS`)."""
        return [METRICS[name](self) for name in metrics]

    # --- the stored form (format 1, read by every later release) ---------------------

    def to_json(self) -> list[Any]:
        """The stored form: plain JSON values.

        >>> user = UserOutcome(5, 9, clicks=2, watch_s=1.5, variant="b")
        >>> user._pending_clicks["m1"] = 7
        >>> UserOutcome.from_json(user.to_json()) == user
        True
        """
        head = self._playhead
        return [
            1,
            self.variant,
            self.first_ms,
            self.last_ms,
            [self.sessions, self.clicks, self.clicks_played, self.searches,
             self.searches_played, self.plays, self.completed],
            self.watch_s,
            [[item, ts] for item, ts in self._pending_clicks.items()],
            self._open_searches,
            [head.playing, head.position_s, head.since_ms, head.duration_s, head.completed],
        ]  # fmt: skip

    @classmethod
    def from_json(cls, obj: Any) -> UserOutcome:
        """Read :meth:`to_json`'s form; ``ValueError``, ``TypeError`` if it is not one."""
        if type(obj) is not list or not obj or obj[0] != 1:
            raise ValueError(f"not a stored experiment outcome of format 1: {str(obj)[:80]}")
        _, variant, first_ms, last_ms, counts, watch_s, pending, open_searches, head = obj
        sessions, clicks, clicks_played, searches, searches_played, plays, completed = counts
        playing, position_s, since_ms, duration_s, done = head
        return cls(
            int(first_ms),
            int(last_ms),
            int(sessions),
            int(clicks),
            int(clicks_played),
            int(searches),
            int(searches_played),
            int(plays),
            int(completed),
            float(watch_s),
            {str(item): int(ts) for item, ts in pending},
            int(open_searches),
            Playhead(playing, float(position_s), int(since_ms), duration_s, bool(done)),
            str(variant),
        )


def _ratio(hits: int, trials: int) -> float | None:
    return hits / trials if trials else None


#: Each metric as one value per user (``None``: the user has no value, e.g. never clicked).
METRICS: dict[str, Callable[[UserOutcome], float | None]] = {
    "click_play_conversion": lambda u: _ratio(u.clicks_played, u.clicks),
    "search_play_success": lambda u: _ratio(u.searches_played, u.searches),
    "completion_rate": lambda u: _ratio(u.completed, u.plays),
    "watch_seconds_per_user": lambda u: u.watch_s,
    "play_starts_per_user": lambda u: float(u.plays),
    "sessions_per_user": lambda u: float(u.sessions),
}


class Outcomes:
    """The :class:`UserOutcome` of every user whose events were added, in event-time order."""

    def __init__(
        self,
        *,
        window_s: float = 7 * 86_400.0,
        session_gap_s: float = 1800.0,
        conversion_window_s: float = 600.0,
    ) -> None:
        self.users: dict[str, UserOutcome] = {}
        self.window_ms = int(window_s * 1000)
        self._gap_ms = int(session_gap_s * 1000)
        self._window_ms = int(conversion_window_s * 1000)

    def add(self, event: Event) -> None:
        """Count one event of a user (events of one user must come in event-time order)."""
        ts = event.ts_ms
        user = self.users.get(event.user_id)
        if user is None:
            user = self.users[event.user_id] = UserOutcome(ts, ts)
        step_outcome(user, event, self.window_ms, self._gap_ms, self._window_ms)


def step_outcome(
    user: UserOutcome,
    event: Event,
    window_ms: int = WINDOW_MS,
    session_gap_ms: int = SESSION_GAP_MS,
    conversion_ms: int = CONVERSION_MS,
) -> None:
    """Count ``event`` in ``user``'s outcome (the user's events come in event-time order).

    A user's first event makes the outcome (``UserOutcome(ts, ts)``) and is stepped too;
    events at or after ``first_ms + window_ms`` are not counted.
    """
    ts = event.ts_ms
    if ts >= user.first_ms + window_ms:  # after the user's window: not counted
        return
    if ts - user.last_ms > session_gap_ms:
        user.sessions += 1
        user._open_searches = 0
    user.last_ms = max(user.last_ms, ts)
    watched, completed, started = user._playhead.step(event)
    user.watch_s += watched
    user.completed += completed
    user.plays += started
    if event.type == "search":
        user.searches += 1
        user._open_searches += 1
    elif event.type == "click" and event.item_id is not None:
        user.clicks += 1
        user._pending_clicks[event.item_id] = ts
    elif event.type == "play" and event.item_id is not None:
        clicked = user._pending_clicks.pop(event.item_id, None)
        if clicked is not None and ts - clicked <= conversion_ms:
            user.clicks_played += 1
        user.searches_played += user._open_searches
        user._open_searches = 0
