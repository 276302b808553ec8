"""Per-user state: activity counts, event-time sessions, watch time and recent event ids.

One :class:`UserState` per user, owned by the partition the user's events arrive on. It
is updated by accepted events (:meth:`UserState.update`), its session is closed by an
event-time timer (:meth:`UserState.close_session`), and it travels to the changelog
as compact bytes (:meth:`UserState.to_bytes`).

Examples
--------
>>> from pipeline.events import Event
>>> s = UserState.new("u1", partition=0, window_ms=600_000, max_ids=32)
>>> s.update(Event("e1", "play", "u1", 1_000, item_id="i1", position_s=0.0))
>>> s.update(Event("e2", "pause", "u1", 61_000, item_id="i1", position_s=60.0))
>>> s.counts, s.last_seen_ms, s.session_events, s.session_watch_s
([1, 1, 0, 0], 61000, 2, 60.0)
>>> closed = s.close_session()
>>> closed.start_ms, closed.end_ms, closed.events, s.sessions, s.session_start_ms
(1000, 61000, 2, 1, None)
>>> UserState.from_bytes("u1", s.to_bytes(), window_ms=600_000, max_ids=32) == s
True
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import orjson

from pipeline.dedupe import RecentIds
from pipeline.events import EVENT_TYPES, Event

__all__ = ["ClosedSession", "UserState", "TYPE_INDEX"]

TYPE_INDEX = {name: i for i, name in enumerate(EVENT_TYPES)}
_FORMAT = 1


@dataclass(slots=True, frozen=True)
class ClosedSession:
    """A session that the watermark has ended."""

    start_ms: int
    end_ms: int
    events: int
    watch_s: float


@dataclass(slots=True, eq=False)
class UserState:
    """Everything ottscore remembers about one user.

    Parameters
    ----------
    user_id
        The user.
    partition
        The input partition that owns the user.
    offset
        The last input offset on ``partition`` applied to this state: replays of that
        offset or earlier ones after a crash are recognised and skipped.
    """

    user_id: str
    partition: int
    recent_ids: RecentIds
    offset: int = -1
    first_seen_ms: int = 0
    last_seen_ms: int = 0
    counts: list[int] = field(default_factory=lambda: [0] * len(EVENT_TYPES))
    sessions: int = 0
    session_start_ms: int | None = None
    session_events: int = 0
    session_watch_s: float = 0.0
    watch_s: float = 0.0
    playing_item: str | None = None
    playing_position_s: float = 0.0
    playing_since_ms: int = 0
    risk_band: str | None = None

    @classmethod
    def new(cls, user_id: str, *, partition: int, window_ms: int, max_ids: int) -> UserState:
        """A user seen for the first time."""
        return cls(user_id, partition, RecentIds(window_ms=window_ms, max_ids=max_ids))

    def update(self, event: Event) -> None:
        """Apply an accepted, de-duplicated event of this user."""
        ts = event.ts_ms
        if self.session_start_ms is None:
            self.session_start_ms = ts
            self.session_events = 0
            self.session_watch_s = 0.0
        if not self.first_seen_ms:
            self.first_seen_ms = ts
        if ts > self.last_seen_ms:
            self.last_seen_ms = ts
        self.counts[TYPE_INDEX[event.type]] += 1
        self.session_events += 1
        self._track_watching(event)

    def _track_watching(self, event: Event) -> None:
        """Accumulate watch seconds from the playhead between a play and what follows it."""
        if self.playing_item is not None:
            elapsed_s = max(0.0, (event.ts_ms - self.playing_since_ms) / 1000.0)
            if event.item_id == self.playing_item and event.position_s is not None:
                advanced = event.position_s - self.playing_position_s
                watched = min(max(0.0, advanced), elapsed_s)
            else:
                watched = 0.0
            self.session_watch_s += watched
            self.watch_s += watched
        if event.type == "play":
            self.playing_item = event.item_id
            self.playing_position_s = event.position_s or 0.0
            self.playing_since_ms = event.ts_ms
        elif event.type == "pause" or event.item_id != self.playing_item:
            self.playing_item = None

    def close_session(self) -> ClosedSession:
        """End the open session (its last event is ``last_seen_ms``) and return it."""
        assert self.session_start_ms is not None, "no open session"
        closed = ClosedSession(
            self.session_start_ms, self.last_seen_ms, self.session_events, self.session_watch_s
        )
        self.sessions += 1
        self.session_start_ms = None
        self.session_events = 0
        self.session_watch_s = 0.0
        self.playing_item = None
        return closed

    def to_bytes(self) -> bytes:
        """Serialise compactly (positional JSON; recent ids packed as base64)."""
        return orjson.dumps(
            [
                _FORMAT,
                self.partition,
                self.offset,
                self.first_seen_ms,
                self.last_seen_ms,
                self.counts,
                self.sessions,
                self.session_start_ms,
                self.session_events,
                self.session_watch_s,
                self.watch_s,
                self.playing_item,
                self.playing_position_s,
                self.playing_since_ms,
                self.risk_band,
                base64.b64encode(self.recent_ids.to_bytes()).decode(),
            ]
        )

    @classmethod
    def from_bytes(cls, user_id: str, data: bytes, *, window_ms: int, max_ids: int) -> UserState:
        """Restore what :meth:`to_bytes` wrote."""
        fields = orjson.loads(data)
        if fields[0] != _FORMAT:
            raise ValueError(f"unknown user state format {fields[0]!r}")
        ids = RecentIds.from_bytes(base64.b64decode(fields[15]), window_ms=window_ms, max_ids=max_ids)
        return cls(user_id, fields[1], ids, *fields[2:15])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UserState) and self.to_bytes() == other.to_bytes()
