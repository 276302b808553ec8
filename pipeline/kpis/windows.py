"""KPIs per tumbling window of event time, as one partition sees its users.

:class:`PartitionKpis` takes a partition's events as they arrive, holds them until the
watermark (the latest event time seen) has passed them by ``lateness_ms``, and then applies
them in event-time order, so that events shuffled within the allowed lateness give exactly
the counts of the sorted stream. An event older than that is **late**: counted
(:attr:`PartitionKpis.late`), not applied. A window closes once every fact it can hold is
final (its end, plus the ``follow_ms`` in which a click or search can still convert, plus
the lateness), and :meth:`PartitionKpis.close` returns its :class:`WindowCounts`: one per
window size, window and scope ("all", and each experiment variant of the users' events).

The counts of one window, each from this partition's users only (a user lives on one
partition, so the partitions' counts add up exactly, active users included):

- ``active_users``: users with an event in the window;
- ``sessions``: sessions started in it (a gap of more than ``session_gap_ms`` starts one);
- ``play_starts``: plays of an item the user was not already playing;
- ``clicks``, ``click_plays``: clicks, and those the same user followed by a play of the
  same item within ``conversion_ms`` (10 minutes), counted in the click's window;
- ``searches``, ``search_plays``: searches, and those followed by a play within
  ``session_gap_ms`` (in the same session), counted in the search's window;
- ``completions``: playbacks whose playhead reached 90 % of the duration in the window;
- ``watch_s``: seconds of playhead advance reported by the window's events.

Day windows also keep their active users for the **7-day return**: the share of them with an
event in the 7 days after the window, closed 7 days later (:meth:`PartitionKpis.close`
returns it as a separate, delayed :class:`ReturnCounts`).

>>> from pipeline.core.events import Event
>>> kpis = PartitionKpis(lateness_ms=60_000)
>>> kpis.add(Event("c", "click", "u1", 1_000, item_id="m1"), arms={})
>>> kpis.add(Event("p", "play", "u1", 61_000, item_id="m1", position_s=0.0), arms={})
>>> kpis.add(Event("x", "search", "u2", 6 * 3_600_000, query="noir"), arms={})
>>> [(w.size, w.start_ms, w.scope, w.clicks, w.click_plays, w.play_starts)
...  for w in kpis.close() if w.size == "hour"]
[('hour', 0, ('all',), 1, 1, 1)]
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.core.events import Event
from pipeline.core.playback import Playhead

__all__ = ["WINDOWS", "PartitionKpis", "ReturnCounts", "WindowCounts"]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: The window sizes, by name.
WINDOWS = {"hour": HOUR_MS, "day": DAY_MS}
RETURN_MS = 7 * DAY_MS
ALL = ("all",)

Scope = tuple[str, ...]


@dataclass(slots=True)
class WindowCounts:
    """The counts of one window and scope, from one partition (see the module docstring)."""

    size: str
    start_ms: int
    scope: Scope
    active_users: int = 0
    sessions: int = 0
    play_starts: int = 0
    clicks: int = 0
    click_plays: int = 0
    searches: int = 0
    search_plays: int = 0
    completions: int = 0
    watch_s: float = 0.0
    users: set[str] = field(default_factory=set, repr=False)


@dataclass(slots=True)
class ReturnCounts:
    """Of a day window's active users (one scope), how many came back within 7 days."""

    start_ms: int
    scope: Scope
    active_users: int
    returned: int


@dataclass(slots=True)
class _User:
    last_ms: int | None = None
    playhead: Playhead = field(default_factory=Playhead)
    clicks: dict[str, list[tuple[int, tuple[Scope, ...]]]] = field(default_factory=dict)
    searches: list[tuple[int, tuple[Scope, ...]]] = field(default_factory=list)


class PartitionKpis:
    """The KPI windows of one partition's users (see the module docstring)."""

    def __init__(
        self,
        *,
        lateness_ms: int = 5 * 60_000,
        session_gap_ms: int = 30 * 60_000,
        conversion_ms: int = 10 * 60_000,
    ) -> None:
        self.lateness_ms = lateness_ms
        self.session_gap_ms = session_gap_ms
        self.conversion_ms = conversion_ms
        self.follow_ms = max(session_gap_ms, conversion_ms)
        #: Events older than the watermark by more than the lateness: counted, not applied.
        self.late = 0
        self.watermark_ms: int | None = None
        self._held: list[tuple[int, int, Event, tuple[Scope, ...]]] = []
        self._order = itertools.count()
        self._released_ms: int | None = None  # event time up to which events were applied
        self._users: dict[str, _User] = {}
        self._windows: dict[tuple[str, int, Scope], WindowCounts] = {}
        self._returns: dict[tuple[int, Scope], tuple[set[str], set[str]]] = {}

    def add(self, event: Event, *, arms: Mapping[str, str]) -> None:
        """Take one event of this partition; ``arms`` are its user's experiment variants."""
        if self._released_ms is not None and event.ts_ms < self._released_ms:
            self.late += 1
            return
        scopes = (ALL, *(("experiment", k, v) for k, v in sorted(arms.items())))
        heapq.heappush(self._held, (event.ts_ms, next(self._order), event, scopes))
        if self.watermark_ms is None or event.ts_ms > self.watermark_ms:
            self.watermark_ms = event.ts_ms
        self._release(self.watermark_ms - self.lateness_ms)

    def _release(self, until_ms: int) -> None:
        held = self._held
        while held and held[0][0] <= until_ms:
            _, _, event, scopes = heapq.heappop(held)
            self._apply(event, scopes)
        if self._released_ms is None or until_ms > self._released_ms:
            self._released_ms = until_ms

    def close(self, *, final: bool = False) -> list[WindowCounts | ReturnCounts]:
        """The windows (and 7-day returns) now final, each once.

        ``final`` (the end of a file) closes every window; a 7-day return is given only once
        its week is over, never guessed from a week cut short.
        """
        if final and self._held:
            self._release(max(ts for ts, *_ in self._held))
        released = self._released_ms
        if released is None:
            return []
        done: list[WindowCounts | ReturnCounts] = []
        for size, start, scope in sorted(self._windows, key=lambda k: (k[1], k[0], k[2])):
            if final or start + WINDOWS[size] + self.follow_ms <= released:
                counts = self._windows.pop((size, start, scope))
                counts.active_users = len(counts.users)
                done.append(counts)
                if size == "day":  # who came back since the day ended, and later who will
                    end = start + DAY_MS
                    back = {u for u in counts.users if (self._users[u].last_ms or 0) >= end}
                    self._returns[start, scope] = (counts.users, back)
        last = self.watermark_ms if final else released
        for start, scope in sorted(self._returns):  # a return not known yet is never guessed
            if last is not None and start + DAY_MS + RETURN_MS <= last:
                users, back = self._returns.pop((start, scope))
                done.append(ReturnCounts(start, scope, len(users), len(back)))
        return done

    # --- applying one event, in event-time order -------------------------------------

    def _window(self, size: str, ts: int, scope: Scope) -> WindowCounts:
        start = ts - ts % WINDOWS[size]
        key = (size, start, scope)
        counts = self._windows.get(key)
        if counts is None:
            counts = self._windows[key] = WindowCounts(size, start, scope)
        return counts

    def _apply(self, event: Event, scopes: tuple[Scope, ...]) -> None:
        ts, user_id = event.ts_ms, event.user_id
        user = self._users.setdefault(user_id, _User())
        for (start, _scope), (users, back) in self._returns.items():
            if start + DAY_MS <= ts < start + DAY_MS + RETURN_MS and user_id in users:
                back.add(user_id)
        new_session = user.last_ms is None or ts - user.last_ms > self.session_gap_ms
        user.last_ms = ts
        watched, completed, started = user.playhead.step(event)
        for scope in scopes:
            for size in WINDOWS:
                counts = self._window(size, ts, scope)
                counts.users.add(user_id)
                counts.sessions += new_session
                counts.play_starts += started
                counts.completions += completed
                counts.watch_s += watched
                counts.clicks += event.type == "click"
                counts.searches += event.type == "search"
        if event.type == "click" and event.item_id is not None:
            user.clicks.setdefault(event.item_id, []).append((ts, scopes))
        elif event.type == "search":
            user.searches.append((ts, scopes))
        elif event.type == "play" and event.item_id is not None:
            for clicked_ms, clicked_scopes in user.clicks.pop(event.item_id, []):
                if ts - clicked_ms <= self.conversion_ms:
                    self._credit(clicked_ms, clicked_scopes, "click_plays")
            for searched_ms, searched_scopes in user.searches:
                if ts - searched_ms <= self.session_gap_ms:
                    self._credit(searched_ms, searched_scopes, "search_plays")
            user.searches = []

    def _credit(self, at_ms: int, scopes: tuple[Scope, ...], count: str) -> None:
        """Add one conversion to the windows of the click or search it converts."""
        for scope in scopes:
            for size in WINDOWS:
                counts = self._window(size, at_ms, scope)
                setattr(counts, count, getattr(counts, count) + 1)
