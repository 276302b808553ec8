"""What a closed-loop run's lists achieved: clicks, plays, watch time and retention.

:func:`measure` reads a :class:`~pipeline.sim.closed_loop.ClosedLoopRun`: the events (as a
replay of its records would give them), the home screens seen, and who left when.

- a **row click** is a click on the home screen's row (the user's list, or the
  ``popular`` row of a user without one); it **converts** when a play of the same item
  follows within ``convert_within_s`` of event time (10 minutes by default);
- a **play** is a ``play`` event that does not resume the item the user's previous event
  paused: a viewing started;
- **watch seconds** add up, for each ``pause``, the position gained since the ``play`` of
  the same item just before it;
- **retention** is the share of the users present at the start who are still there
  ``retention_days`` later.

Examples
--------
>>> from pipeline.sim.closed_loop import ClosedLoop, ClosedLoopConfig
>>> from pipeline.sim.list_policies import no_lists
>>> outcomes = measure(ClosedLoop(ClosedLoopConfig(users=20, days=7, seed=1)).run(no_lists),
...                    retention_days=7)
>>> outcomes.users, outcomes.views >= outcomes.row_clicks >= outcomes.conversions
(20, True)
>>> 0 < outcomes.plays_per_user and 0 < outcomes.retained <= 1
True
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.events import Event
from pipeline.sim.audience import DAY_MS
from pipeline.sim.closed_loop import ClosedLoopRun
from pipeline.sim.home_screen import FOR_YOU, POPULAR

__all__ = ["Outcomes", "measure"]

_ROW_SURFACES = frozenset({FOR_YOU, POPULAR})


@dataclass(frozen=True, slots=True)
class Outcomes:
    """The outcomes of a run; see the module docstring.

    Attributes
    ----------
    users
        Users simulated.
    views
        Home screens seen.
    row_clicks, conversions
        Clicks on the row shown, and those followed by a play of the item.
    plays
        Viewings started.
    watch_s
        Seconds watched.
    retained
        Share of the users present at the start still there after the retention days.
    """

    users: int
    views: int
    row_clicks: int
    conversions: int
    plays: int
    watch_s: float
    retained: float

    @property
    def conversion(self) -> float:
        """Click → play conversions per home screen seen."""
        return self.conversions / self.views if self.views else 0.0

    @property
    def click_to_play(self) -> float:
        """Share of the row clicks that converted."""
        return self.conversions / self.row_clicks if self.row_clicks else 0.0

    @property
    def plays_per_user(self) -> float:
        """Viewings started per user."""
        return self.plays / self.users

    @property
    def watch_s_per_user(self) -> float:
        """Seconds watched per user."""
        return self.watch_s / self.users


def measure(
    run: ClosedLoopRun, *, retention_days: float = 28.0, convert_within_s: float = 600.0
) -> Outcomes:
    """The :class:`Outcomes` of ``run``."""
    within_ms = int(convert_within_s * 1000)
    previous: dict[str, Event] = {}
    clicked: dict[str, Event] = {}
    row_clicks = conversions = plays = 0
    watch_s = 0.0
    for event in run.events:
        user = event.user_id
        before = previous.get(user)
        previous[user] = event
        same_item = before is not None and before.item_id == event.item_id
        if event.type == "click" and event.surface in _ROW_SURFACES:
            row_clicks += 1
            clicked[user] = event
        elif event.type == "play":
            plays += not (same_item and before is not None and before.type == "pause")
            click = clicked.pop(user, None)
            if click is not None and click.item_id == event.item_id:
                conversions += event.ts_ms - click.ts_ms <= within_ms
        elif event.type == "pause" and same_item and before is not None and before.type == "play":
            watch_s += max(0.0, (event.position_s or 0.0) - (before.position_s or 0.0))
    start_ms = run.config.start_ms
    horizon_ms = start_ms + int(retention_days * DAY_MS)
    present = [user for user, joined_ms in run.joined_ms.items() if joined_ms <= start_ms]
    stayed = sum(run.left_ms.get(user, horizon_ms) >= horizon_ms for user in present)
    return Outcomes(
        users=len(run.joined_ms),
        views=sum(len(seen) for seen in run.impressions.values()),
        row_clicks=row_clicks,
        conversions=conversions,
        plays=plays,
        watch_s=watch_s,
        retained=stayed / len(present) if present else 0.0,
    )
