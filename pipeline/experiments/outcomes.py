"""What each user of an experiment did while it ran: the user-level values it is judged on.

A :class:`UserOutcome` holds one user's counts in one experiment over their first
``window`` of event time from their first event in it (7 days by default): a user's values
are final once the window has passed, so every user is measured over the same span and
the values do not drift while the experiment is watched. The counts are those of the KPI
windows (:mod:`pipeline.kpis.windows`), from the same events in the same event-time order
and with the same rules, restricted to the user's window: a click converts when the same
user plays the same item within 10 minutes of it; a search succeeds when a play follows
it within 30 minutes in the same session; a playback completes when its playhead reaches
90 % of the item's duration (:class:`~pipeline.core.playback.Playhead`, which follows the
user's playback from before they joined too). Each metric is then one value per user
(:data:`METRICS`): the statistics compare the means of those values between arms, so a
heavy user counts once, as a user.

:class:`Outcomes` counts a file's events this way, every user as in one experiment from
their first event (the workers count them inside their KPI windows,
:class:`~pipeline.experiments.live_results.PartitionOutcomes`).

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
>>> user.clicks, user.clicks_played, user.watch_ms, user.completed
(2, 1, 95000, 1)
>>> METRICS["click_play_conversion"](user), METRICS["watch_seconds_per_user"](user)
(0.5, 95.0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.core.events import Event

__all__ = ["METRICS", "WINDOW_MS", "Outcomes", "UserOutcome"]

#: A user is judged on their first 7 days of event time in the experiment.
WINDOW_MS = 7 * 86_400_000


@dataclass(slots=True)
class UserOutcome:
    """One user's counts in one experiment since joining it (watch time in milliseconds)."""

    first_ms: int
    variant: str = ""
    sessions: int = 1
    clicks: int = 0
    clicks_played: int = 0
    searches: int = 0
    searches_played: int = 0
    plays: int = 0
    completed: int = 0
    watch_ms: int = 0

    def values(self, metrics: tuple[str, ...]) -> list[float | None]:
        """The user's value of each of ``metrics`` (names of :data:`METRICS`)."""
        return [METRICS[name](self) for name in metrics]

    # --- the stored form (read by every later release) -----------------------------

    def to_json(self) -> list[Any]:
        """The stored form (format 2): plain JSON values.

        >>> user = UserOutcome(5, "b", clicks=2, watch_ms=1_500)
        >>> UserOutcome.from_json(user.to_json()) == user
        True
        """
        return [2, self.variant, self.first_ms,
                [self.sessions, self.clicks, self.clicks_played, self.searches,
                 self.searches_played, self.plays, self.completed, self.watch_ms]]  # fmt: skip

    @classmethod
    def from_json(cls, obj: Any) -> UserOutcome:
        """Read :meth:`to_json`'s form, or format 1's (with its own playhead, dropped).

        Raises ``ValueError`` or ``TypeError`` if it is neither.
        """
        if type(obj) is not list or not obj or obj[0] not in (1, 2):
            raise ValueError(f"not a stored experiment outcome: {str(obj)[:80]}")
        if obj[0] == 1:
            _, variant, first_ms, _, counts, watch_s, _, _, _ = obj
            counts = [*counts, round(float(watch_s) * 1000)]
        else:
            _, variant, first_ms, counts = obj
        if len(counts) != 8:
            raise ValueError(f"experiment outcome with {len(counts)} counts")
        return cls(int(first_ms), str(variant), *map(int, counts))


def _ratio(hits: int, trials: int) -> float | None:
    return hits / trials if trials else None


#: Each metric as one value per user (``None``: the user has no value, e.g. never clicked).
METRICS: dict[str, Callable[[UserOutcome], float | None]] = {
    "click_play_conversion": lambda u: _ratio(u.clicks_played, u.clicks),
    "search_play_success": lambda u: _ratio(u.searches_played, u.searches),
    "completion_rate": lambda u: _ratio(u.completed, u.plays),
    "watch_seconds_per_user": lambda u: u.watch_ms / 1000,
    "play_starts_per_user": lambda u: float(u.plays),
    "sessions_per_user": lambda u: float(u.sessions),
}


class Outcomes:
    """The :class:`UserOutcome` of every user whose events were added, in event-time order.

    Each user counts from their first event, as if it were their first in an experiment.
    """

    def __init__(self, *, window_s: float = 7 * 86_400.0, session_gap_s: float = 1800.0) -> None:
        from pipeline.experiments.live_results import PartitionOutcomes
        from pipeline.kpis.windows import PartitionKpis

        self._partition = PartitionOutcomes(window_ms=int(window_s * 1000))
        self._kpis = PartitionKpis(
            lateness_ms=0, session_gap_ms=int(session_gap_s * 1000), outcomes=self._partition
        )
        self._arms = {"": ""}

    def add(self, event: Event) -> None:
        """Count one event (events must come in event-time order: a later one is dropped)."""
        self._kpis.add(event, arms=self._arms)

    @property
    def users(self) -> dict[str, UserOutcome]:
        """Each user's outcome."""
        return {user_id: held[""] for user_id, held in self._partition.users()}
