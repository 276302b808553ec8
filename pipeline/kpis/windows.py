"""KPIs per tumbling window of event time, as one partition sees its users.

:class:`PartitionKpis` takes a partition's events as they arrive and holds each one, with
its user (:class:`UserKpis`), until the watermark (the latest event time seen) has passed
it by ``lateness_ms``; then it applies the user's events in event-time order, so that
events shuffled within the allowed lateness give exactly the counts of the sorted stream.
An event older than that is **late**: counted (:attr:`PartitionKpis.late`), not applied.
A window closes once every fact it can hold is final (its end, plus the ``follow_ms`` in
which a click or search can still convert, plus the lateness), and
:meth:`PartitionKpis.take_closed` gives its :class:`WindowCounts` once: one per window
size, window and scope ("all", and each experiment variant of the users in it).

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
- ``watch_s``: seconds of playhead advance reported by the window's events (each event's
  advance counted in whole milliseconds, so that any order of adding gives the same sum).

Day windows also give the **7-day return**: the share of their active users with an event
in the 7 days after the window, closed 7 days later (a separate, delayed
:class:`ReturnCounts`).

**Scopes.** A user's part of a window (and of a day's return) counts in the scopes of the
user's first event in it: "all", and each experiment variant the user was in then. Only
the hour and the day in which a user joins or leaves an experiment (its start, the user's
first event in it, its stop) can hold events of the user from before or after; the user is
then counted wholly in, or wholly out of, the variant for that window. So each event
updates one part per window size, whatever the number of experiments, and a scope's counts
are added up from the users' parts when the window closes.

**Where the state lives.** Everything about one user (the events held, their playhead,
pending clicks and searches, their own counts in each window not yet closed for good) is
a :class:`UserKpis`, which the worker stores inside the user's state: written when the
user's state is, restored with it, so a crash never leaves a user's part of a window
half-counted. The partition's window counts are only the sum of its users' parts,
added when the window closes; a restored user's parts join them
(:meth:`PartitionKpis.adopt`). Windows closed at or before
:attr:`PartitionKpis.closed_ms` are never counted again: the worker stores that point too,
and a user forgets their part of a window once the point is durable
(:meth:`PartitionKpis.made_durable`).

>>> kpis = PartitionKpis(lateness_ms=60_000)
>>> kpis.add(Event("c", "click", "u1", 1_000, item_id="m1"), arms={})
>>> kpis.add(Event("p", "play", "u1", 61_000, item_id="m1", position_s=0.0), arms={})
>>> kpis.add(Event("x", "search", "u2", 6 * 3_600_000, query="noir"), arms={})
>>> [(w.size, w.start_ms, w.scope, w.clicks, w.click_plays, w.play_starts)
...  for w in kpis.take_closed() if isinstance(w, WindowCounts)]
[('hour', 0, ('all',), 1, 1, 1)]
"""

from __future__ import annotations

import bisect
import functools
import heapq
import sys
from array import array
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pipeline.core.empty import EMPTY
from pipeline.core.events import Event
from pipeline.core.playback import Playhead
from pipeline.experiments.live_results import PartitionOutcomes
from pipeline.experiments.outcomes import UserOutcome

__all__ = ["COUNTS", "WINDOWS", "PartitionKpis", "ReturnCounts", "UserKpis", "WindowCounts"]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: The window sizes, by name.
WINDOWS = {"hour": HOUR_MS, "day": DAY_MS}
RETURN_MS = 7 * DAY_MS
_SIZES = tuple(WINDOWS.items())
ALL = ("all",)
#: The counts of a window, in the order :class:`UserKpis` keeps them.
COUNTS = ("active_users", "sessions", "play_starts", "clicks", "click_plays", "searches",
          "search_plays", "completions", "watch_s")  # fmt: skip
ACTIVE, SESSIONS, PLAY_STARTS, CLICKS, CLICK_PLAYS, SEARCHES, SEARCH_PLAYS, COMPLETIONS, WATCH = (
    range(len(COUNTS))
)
_FIRST = tuple(int(i == ACTIVE) for i in range(len(COUNTS)))  # a user's first event in a window

Scope = tuple[str, ...]
Scopes = tuple[Scope, ...]
WindowKey = tuple[str, int]
#: A user's part of a window: the scopes it counts in, and its counts (:data:`COUNTS`) as
#: machine integers (~0.2 kB less a part than a list of Python ints).
Part = tuple[Scopes, "array[int]"]


ONLY_ALL: Scopes = (ALL,)

Held = tuple[int, Event, Scopes]
# A user's empty containers are shared, read-only ones (an empty tuple, :data:`EMPTY`), and
# a container of the user's own from its first item (and again a shared one once it
# empties): most users hold no event, click or search at rest, nor any experiment
# outcome (~0.25 kB a user state).


def scopes_of(arms: Mapping[str, str]) -> Scopes:
    """The scopes an event of a user in ``arms`` counts in: all, and each variant."""
    if not arms:
        return ONLY_ALL
    return (ALL, *(("experiment", k, v) for k, v in sorted(arms.items())))


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


@dataclass(slots=True)
class ReturnCounts:
    """Of a day window's active users (one scope), how many came back within 7 days."""

    start_ms: int
    scope: Scope
    active_users: int
    returned: int


@dataclass(slots=True)
class UserKpis:
    """One user's part of the KPI windows (stored with the user's state).

    ``held``: events not applied yet, in event-time order, with their scopes; ``counts``:
    the user's part of each window not yet closed for good: the scopes of the user's first
    event in the window, and the user's counts (:data:`COUNTS`, watch time in milliseconds);
    ``days``: of each day the
    user was active on (not yet closed for good), its scopes and whether the user came
    back within 7 days.
    """

    held: Sequence[Held] = ()
    last_ms: int | None = None
    playhead: Playhead = field(default_factory=Playhead)
    clicks: Mapping[str, list[tuple[int, Scopes]]] = EMPTY
    searches: Sequence[tuple[int, Scopes]] = ()
    counts: dict[WindowKey, Part] = field(default_factory=dict)
    day_ms: int | None = None
    days: dict[int, tuple[Scopes, bool]] = field(default_factory=dict)
    #: Windows closed for good at or before this were forgotten (memory only).
    pruned_ms: int = -1
    #: The user's outcome in each experiment they joined (:mod:`pipeline.experiments.outcomes`),
    #: counted from the same events as the windows.
    outcomes: Mapping[str, UserOutcome] = EMPTY

    # --- the stored form: named, versioned (read by every later release) ---------------

    def to_json(self) -> dict[str, Any]:
        """The stored form (format 2): plain JSON values.

        >>> user = UserKpis(last_ms=5)
        >>> UserKpis.from_json(user.to_json()) == user
        True
        """
        head = self.playhead
        return {
            "format": 2,
            "held": [[ts, *_event_fields(e), _arms(s)] for ts, e, s in self.held],
            "last_ms": self.last_ms,
            "playhead": [
                head.playing,
                head.position_s,
                head.since_ms,
                head.duration_s,
                head.completed,
            ],  # fmt: skip
            "clicks": [[item, ts, _arms(s)] for item, at in self.clicks.items() for ts, s in at],
            "searches": [[ts, _arms(s)] for ts, s in self.searches],
            "counts": [
                [size, start, _arms(scopes), values.tolist()]
                for (size, start), (scopes, values) in self.counts.items()
            ],  # fmt: skip
            "day_ms": self.day_ms,
            "days": [
                [day, [_arm(s) for s in scopes], back] for day, (scopes, back) in self.days.items()
            ],  # fmt: skip
            **(
                {"outcomes": {k: v.to_json() for k, v in self.outcomes.items()}}
                if self.outcomes
                else {}
            ),
        }

    @classmethod
    def from_json(cls, obj: Any, user_id: str = "") -> UserKpis:
        """Read :meth:`to_json`'s form.

        Raises ``ValueError``, ``TypeError`` or ``KeyError`` if it is not one.
        """
        if type(obj) is not dict or obj.get("format") not in (1, 2):
            raise ValueError(f"not a stored KPI tracker of format 1 or 2: {str(obj)[:80]}")
        user = cls()
        held = []
        for ts, kind, item, position, duration, arms in obj["held"]:
            event = Event("", kind, user_id, int(ts), item_id=item, position_s=position,
                          duration_s=duration)  # fmt: skip
            held.append((int(ts), event, _scopes(arms)))
        if held:
            user.held = held
        user.last_ms = obj["last_ms"]
        playing, position_s, since_ms, duration_s, completed = obj["playhead"]
        user.playhead = Playhead(playing, float(position_s), int(since_ms), duration_s,
                                 bool(completed))  # fmt: skip
        clicks: dict[str, list[tuple[int, Scopes]]] = {}
        for item, ts, arms in obj["clicks"]:
            clicks.setdefault(str(item), []).append((int(ts), _scopes(arms)))
        if clicks:
            user.clicks = clicks
        if obj["searches"]:
            user.searches = [(int(ts), _scopes(arms)) for ts, arms in obj["searches"]]
        arms_of: dict[WindowKey, list[list[str]]] = {}
        for size, start, arms, values in obj["counts"]:
            if size not in WINDOWS or len(values) != len(COUNTS):
                raise ValueError(f"window {size!r} with {len(values)} counts")
            key = _window(sys.intern(str(size)), int(start))
            if obj["format"] == 1:  # a part per scope: the user's is scope "all"'s
                if arms:
                    arms_of.setdefault(key, []).append([str(a) for a in arms])
                    continue
                arms = []
            # from a list: an array of exactly its length (~56 bytes less than grown)
            user.counts[key] = (_scopes(arms), array("q", [int(value) for value in values]))
        for key, arms in arms_of.items():  # format 1: the variants the user's part counted in
            if key in user.counts:
                user.counts[key] = (_scopes(arms), user.counts[key][1])
        user.day_ms = obj["day_ms"]
        for day, arms, returned in obj["days"]:
            user.days[int(day)] = (_day_scopes(arms), bool(returned))
        outcomes = obj.get("outcomes")  # absent before outcomes, and when none
        if outcomes:
            user.outcomes = {str(k): UserOutcome.from_json(v) for k, v in outcomes.items()}
        return user

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UserKpis) and self.to_json() == other.to_json()


def _event_fields(event: Event) -> tuple[Any, ...]:
    return event.type, event.item_id, event.position_s, event.duration_s


def _arm(scope: Scope) -> list[str]:
    return [] if scope == ALL else list(scope[1:])


def _scope(arm: Sequence[str]) -> Scope:
    if not arm:
        return ALL
    experiment, variant = arm
    return ("experiment", experiment, variant)


def _arms(scopes: Scopes) -> list[list[str]]:
    return [list(s[1:]) for s in scopes if s != ALL]


def _scopes(arms: list[list[str]]) -> Scopes:
    """The scopes of a stored part's arms (scope "all" first)."""
    return _shared_scopes(((), *_keys(arms))) if arms else ONLY_ALL


def _day_scopes(arms: list[list[str]]) -> Scopes:
    """The scopes of a stored day: each scope's arm, ``[]`` for "all"."""
    return _shared_scopes(_keys(arms))


def _keys(arms: list[list[str]]) -> tuple[tuple[str, ...], ...]:
    """Stored arms as the key of :func:`_shared_scopes` (their names as text, as always)."""
    return tuple([tuple(map(str, arm)) for arm in arms])


# Scopes read back from stored states are shared: the same few tuples are in most users'
# parts of the windows and days (~0.1 kB each when every state holds its own).
@functools.lru_cache(maxsize=10_000)
def _shared_scopes(arms: tuple[tuple[str, ...], ...]) -> Scopes:
    return tuple(map(_scope, arms))


# A window's key is one object in every user's part of it, read back or counted (~90
# bytes a part when each holds its own: ~0.3 kB a user state).
@functools.lru_cache(maxsize=10_000)
def _window(size: str, start: int) -> WindowKey:
    return (size, start)


class PartitionKpis:
    """The KPI windows of one partition's users (see the module docstring).

    ``trackers`` gives the :class:`UserKpis` of a user (created on first use); the worker
    keeps them in the user states, an offline run here (the default). ``changed`` is told
    of every user whose part changed (to be written back). ``outcomes``, when given, counts
    the experiment outcomes of the users in experiments
    (:class:`~pipeline.experiments.live_results.PartitionOutcomes`) with what each applied
    event adds to the windows.
    """

    def __init__(
        self,
        *,
        lateness_ms: int = 5 * 60_000,
        session_gap_ms: int = 30 * 60_000,
        conversion_ms: int = 10 * 60_000,
        trackers: Callable[[str], UserKpis] | None = None,
        changed: Callable[[str], None] | None = None,
        outcomes: PartitionOutcomes | None = None,
    ) -> None:
        self.lateness_ms = lateness_ms
        self.session_gap_ms = session_gap_ms
        self.conversion_ms = conversion_ms
        self.follow_ms = max(session_gap_ms, conversion_ms)
        #: Events older than the watermark by more than the lateness: counted, not applied.
        self.late = 0
        self.watermark_ms: int | None = None
        #: Event time up to which events are applied (the watermark less the lateness).
        self.released_ms: int | None = None
        #: Every window whose close point is at or before this has been closed (given once).
        self.closed_ms = -1
        #: ... and that point is durable: users forget their parts of those windows.
        self.durable_ms = -1
        self._own: dict[str, UserKpis] = {}
        self._tracker = trackers or self._own_tracker
        self._changed = changed
        self.outcomes = outcomes
        self._heap: list[tuple[int, str]] = []  # (event time, user) of every held event
        self._open: dict[WindowKey, dict[str, Part]] = {}  # each open window's users' parts
        # of each open window, the parts of users evicted from the cache, summed by scopes
        self._evicted: dict[WindowKey, dict[Scopes, list[int]]] = {}
        self._returns: dict[tuple[int, Scope], list[int]] = {}
        self._next_close: int | None = None  # the earliest close point of what is open
        self._closed: list[WindowCounts | ReturnCounts] = []

    def _own_tracker(self, user_id: str) -> UserKpis:
        user = self._own.get(user_id)
        if user is None:
            user = self._own[user_id] = UserKpis()
        return user

    # --- input ------------------------------------------------------------------------

    def add(
        self,
        event: Event,
        *,
        arms: Mapping[str, str] | None = None,
        user: UserKpis | None = None,
        scopes: Scopes | None = None,
    ) -> None:
        """Take one event of this partition; ``arms`` are its user's experiment variants.

        Or ``scopes``, the scopes they give (:func:`scopes_of`), when the caller has them.
        ``user`` is the user's :class:`UserKpis` when the caller holds it (and marks the
        user changed itself).
        """
        ts = event.ts_ms
        released = self.released_ms
        if released is not None and ts < released:
            self.late += 1
            return
        user_id = event.user_id
        if user is None:
            user = self._tracker(user_id)
            if self._changed is not None:
                self._changed(user_id)
        held = user.held
        entry = (ts, event, scopes if scopes is not None else scopes_of(arms or {}))
        if not held:
            user.held = [entry]
        elif held[-1][0] <= ts:  # in order: the usual case
            cast("list[Held]", held).append(entry)
        else:
            bisect.insort_right(cast("list[Held]", held), entry, key=_ts)
        heapq.heappush(self._heap, (ts, user_id))
        watermark = self.watermark_ms
        if watermark is None or ts > watermark:
            self.watermark_ms = ts
            self._release(ts - self.lateness_ms)

    def advance(self, watermark_ms: int) -> None:
        """Move the watermark to ``watermark_ms`` (never back): apply and close what is due."""
        if self.watermark_ms is None or watermark_ms > self.watermark_ms:
            self.watermark_ms = watermark_ms
            self._release(watermark_ms - self.lateness_ms)

    def adopt(self, user_id: str, user: UserKpis) -> None:
        """Count a restored user's parts of the windows still open, and hold their events."""
        self._prune(user, self.closed_ms)
        for key, part in user.counts.items():
            self._window_parts(key)[user_id] = part
        for day, (scopes, back) in user.days.items():
            for scope in scopes:
                returns = self._return_total(day, scope)
                returns[0] += 1
                returns[1] += back
        for ts, _, _ in user.held:
            heapq.heappush(self._heap, (ts, user_id))
        if user.outcomes and self.outcomes is not None:
            self.outcomes.adopt(user_id, user.outcomes)

    def evict(self, user_id: str, user: UserKpis) -> None:
        """The user's state leaves the cache (it is stored): keep only its sums in the windows.

        Its parts of the open windows are added to those windows' totals of evicted users,
        so the windows no longer hold the user's objects; :meth:`reload` takes them back
        out when the state is read again. The user's held events stay in the heap by id.
        """
        for key, (scopes, mine) in user.counts.items():
            parts = self._open.get(key)
            if parts is None or parts.pop(user_id, None) is None:
                continue
            totals = self._evicted.setdefault(key, {})
            total = totals.get(scopes)
            if total is None:
                totals[scopes] = list(mine)
            else:
                for i, value in enumerate(mine):
                    total[i] += value

    def reload(self, user_id: str, user: UserKpis) -> None:
        """The state of a user evicted by :meth:`evict` is read again: its parts count live.

        ``user`` is the stored form of the evicted one, so its parts are those summed then.
        """
        for key, part in user.counts.items():
            parts = self._open.get(key)
            totals = self._evicted.get(key)
            if parts is None or totals is None or user_id in parts:
                continue  # closed meanwhile (pruned at the user's next release), or live
            scopes, mine = part
            total = totals[scopes]
            for i, value in enumerate(mine):
                total[i] -= value
            if not total[ACTIVE]:  # every evicted user of these scopes is back
                del totals[scopes]
                if not totals:
                    del self._evicted[key]
            parts[user_id] = part

    def restore(self, closed_ms: int) -> None:
        """Before adopting users: windows closing at or before ``closed_ms`` were given."""
        self.closed_ms = self.durable_ms = max(self.closed_ms, closed_ms)
        if self.outcomes is not None:
            self.outcomes.restore(closed_ms)

    def made_durable(self, closed_ms: int) -> None:
        """``closed_ms`` (a value of :attr:`closed_ms`) is stored: forget what closed by it."""
        self.durable_ms = max(self.durable_ms, closed_ms)

    # --- output -----------------------------------------------------------------------

    @property
    def has_closed(self) -> bool:
        """Whether windows closed since the last :meth:`take_closed`."""
        return bool(self._closed)

    def take_closed(self) -> list[WindowCounts | ReturnCounts]:
        """The windows (and 7-day returns) closed since the last call, each once."""
        closed, self._closed = self._closed, []
        return closed

    def close(self, *, final: bool = False) -> list[WindowCounts | ReturnCounts]:
        """:meth:`take_closed`, after applying every event and closing every window if ``final``.

        ``final`` is the end of a file. A 7-day return is given only once its week is
        over, never guessed from a week cut short.
        """
        if final and self._heap:
            self._release(max(ts for ts, _ in self._heap))
        if final and self._open:
            self._close_windows(None)
            if self.watermark_ms is not None:
                self._close_returns(self.watermark_ms)
        return self.take_closed()

    # --- applying events, in event-time order per user --------------------------------

    def _release(self, until_ms: int) -> None:
        heap = self._heap
        tracker = self._tracker
        while heap and heap[0][0] <= until_ms:
            _, user_id = heapq.heappop(heap)
            user = tracker(user_id)
            held = cast("list[Held]", user.held)
            if not held or held[0][0] > until_ms:
                continue  # released with an earlier entry of the same user
            if user.pruned_ms < self.durable_ms:
                self._prune(user, self.durable_ms)
            if len(held) == 1:  # one event held: the usual case
                user.held = ()
                self._apply(user, *held[0])
            elif held[1][0] > until_ms:
                self._apply(user, *held.pop(0))
            else:
                n = bisect.bisect_right(held, until_ms, key=_ts)
                for ts, event, scopes in held[:n]:
                    self._apply(user, ts, event, scopes)
                del held[:n]
                if not held:
                    user.held = ()
            if self._changed is not None:
                self._changed(user_id)
        if self.released_ms is None or until_ms > self.released_ms:
            self.released_ms = until_ms
            if self._next_close is not None and until_ms >= self._next_close:
                self._close_windows(until_ms)
                self._close_returns(until_ms)
            self.closed_ms = max(self.closed_ms, until_ms)

    def _close_windows(self, until_ms: int | None) -> None:
        """Give every window (each of its scopes) whose close point is at or before ``until_ms``.

        A scope's counts are the sum of the parts of the users whose part counts in it.
        """
        follow = self.follow_ms
        due = sorted(
            (key for key in self._open
             if until_ms is None or key[1] + WINDOWS[key[0]] + follow <= until_ms),
            key=lambda key: (key[1], key[0]),
        )  # fmt: skip
        for key in due:
            by_scope: dict[Scope, list[Sequence[int]]] = {}
            held: list[tuple[Scopes, Sequence[int]]] = list(self._open.pop(key).values())
            held += self._evicted.pop(key, {}).items()  # summed by scopes, as one part each
            for scopes, part in held:
                for scope in scopes:
                    parts = by_scope.get(scope)
                    if parts is None:
                        by_scope[scope] = [part]
                    else:
                        parts.append(part)
            for scope in sorted(by_scope):
                values = [sum(column) for column in zip(*by_scope[scope], strict=True)]
                counts: dict[str, Any] = dict(
                    zip(COUNTS, [*values[:-1], values[-1] / 1000], strict=True)
                )
                self._closed.append(WindowCounts(key[0], key[1], scope, **counts))
        self._set_next_close()

    def _close_returns(self, until_ms: int) -> None:
        for day, scope in sorted(k for k in self._returns if k[0] + DAY_MS + RETURN_MS <= until_ms):
            active, back = self._returns.pop((day, scope))
            self._closed.append(ReturnCounts(day, scope, active, back))
        self._set_next_close()

    def _set_next_close(self) -> None:
        points = [start + WINDOWS[size] + self.follow_ms for size, start in self._open]
        points += [day + DAY_MS + RETURN_MS for day, _ in self._returns]
        self._next_close = min(points) if points else None

    def _window_parts(self, key: WindowKey) -> dict[str, Part]:
        parts = self._open.get(key)
        if parts is None:
            parts = self._open[key] = {}
            point = key[1] + WINDOWS[key[0]] + self.follow_ms
            if self._next_close is None or point < self._next_close:
                self._next_close = point
        return parts

    def _return_total(self, day: int, scope: Scope) -> list[int]:
        total = self._returns.get((day, scope))
        if total is None:
            total = self._returns[day, scope] = [0, 0]
            point = day + DAY_MS + RETURN_MS
            if self._next_close is None or point < self._next_close:
                self._next_close = point
        return total

    def _prune(self, user: UserKpis, closed_ms: int) -> None:
        """Forget the user's parts of windows closed at or before ``closed_ms``."""
        follow = self.follow_ms
        for key in [k for k in user.counts if k[1] + WINDOWS[k[0]] + follow <= closed_ms]:
            del user.counts[key]
        for day in [d for d in user.days if d + DAY_MS + RETURN_MS <= closed_ms]:
            del user.days[day]
        user.pruned_ms = closed_ms

    def _apply(self, user: UserKpis, ts: int, event: Event, scopes: Scopes) -> None:
        new_session = user.last_ms is None or ts - user.last_ms > self.session_gap_ms
        if new_session:  # every pending click and search is older than any conversion
            user.clicks = EMPTY
            user.searches = ()
        user.last_ms = ts
        watched, completed, started = user.playhead.step(event)
        kind = event.type
        steps: list[tuple[int, int]] = []
        if new_session:
            steps.append((SESSIONS, 1))
        if started:
            steps.append((PLAY_STARTS, started))
        if completed:
            steps.append((COMPLETIONS, completed))
        if watched:
            steps.append((WATCH, round(watched * 1000)))
        if kind == "click":
            steps.append((CLICKS, 1))
        elif kind == "search":
            steps.append((SEARCHES, 1))
        counts = user.counts
        closed, follow = self.closed_ms, self.follow_ms
        for size, length in _SIZES:
            start = ts - ts % length
            if start + length + follow <= closed:
                continue  # given already (an event replayed after a restore): never again
            key = (size, start)
            part = counts.get(key)
            if part is None:  # the user's first event in the window: its scopes are the part's
                key = _window(size, start)
                mine = array("q", _FIRST)
                part = counts[key] = (scopes, mine)
                self._window_parts(key)[event.user_id] = part
            else:
                mine = part[1]
            for i, value in steps:
                mine[i] += value
        self._count_day(user, ts, scopes)
        outcomes = self.outcomes if len(scopes) > 1 else None
        if outcomes is not None:
            if not user.outcomes:
                user.outcomes = {}
            outcomes.count(cast("MutableMapping[str, UserOutcome]", user.outcomes),
                           event.user_id, ts, scopes, (
                new_session, started, completed, round(watched * 1000) if watched else 0,
                kind == "click", kind == "search",
            ))  # fmt: skip
        if kind == "click" and event.item_id is not None:
            clicks = user.clicks
            if not clicks:
                clicks = user.clicks = {}
            cast("dict[str, list[tuple[int, Scopes]]]", clicks).setdefault(
                event.item_id, []
            ).append((ts, scopes))
        elif kind == "search":
            if user.searches:
                cast("list[tuple[int, Scopes]]", user.searches).append((ts, scopes))
            else:
                user.searches = [(ts, scopes)]
        elif kind == "play" and event.item_id is not None:
            outcomes = self.outcomes
            clicked: Sequence[tuple[int, Scopes]] = ()
            if event.item_id in user.clicks:
                clicks = cast("dict[str, list[tuple[int, Scopes]]]", user.clicks)
                clicked = clicks.pop(event.item_id)
                if not clicks:
                    user.clicks = EMPTY
            for clicked_ms, clicked_scopes in clicked:
                if ts - clicked_ms <= self.conversion_ms:
                    self._credit(user, clicked_ms, CLICK_PLAYS)
                    if outcomes is not None and len(clicked_scopes) > 1:
                        outcomes.convert(user.outcomes, ts, clicked_scopes, click=True)
            for searched_ms, searched_scopes in user.searches:
                if ts - searched_ms <= self.session_gap_ms:
                    self._credit(user, searched_ms, SEARCH_PLAYS)
                    if outcomes is not None and len(searched_scopes) > 1:
                        outcomes.convert(user.outcomes, ts, searched_scopes, click=False)
            user.searches = ()

    def _count_day(self, user: UserKpis, ts: int, scopes: Scopes) -> None:
        """The user is active on ``ts``'s day.

        Their first event of a day within 7 days of their last active day is that day's
        return.
        """
        day = ts - ts % DAY_MS
        if day == user.day_ms:
            return  # counted on this day already, in the scopes of its first event
        if day != user.day_ms:
            last = user.day_ms
            if (
                last is not None
                and last < day <= last + RETURN_MS
                and last in user.days
                and (
                    last + DAY_MS + RETURN_MS > self.closed_ms  # not given already
                )
            ):
                last_scopes, back = user.days[last]
                if not back:
                    user.days[last] = (last_scopes, True)
                    for scope in last_scopes:
                        self._return_total(last, scope)[1] += 1
            user.day_ms = day
        if day + DAY_MS + RETURN_MS <= self.closed_ms:
            return  # given already (an event replayed after a restore): never again
        if day not in user.days:
            user.days[day] = (scopes, False)
            for scope in scopes:
                self._return_total(day, scope)[0] += 1

    def _credit(self, user: UserKpis, at_ms: int, index: int) -> None:
        """Add one conversion to the user's part of the windows of the click or search."""
        for size, length in _SIZES:
            key = (size, at_ms - at_ms % length)
            part = user.counts.get(key)
            if part is not None and key in self._open:
                part[1][index] += 1


def _ts(entry: tuple[int, Event, Scopes]) -> int:
    return entry[0]
