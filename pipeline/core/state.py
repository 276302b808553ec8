"""Per-user state: activity, event-time sessions, playback, features, pending labels, lists.

One :class:`UserState` per user, owned by the partition the user's events arrive on. It
is updated by accepted events (:meth:`UserState.update`), its session is closed by an
event-time timer (:meth:`UserState.close_session`), and it travels to the changelog as
compact bytes (:meth:`UserState.to_bytes`).

Examples
--------
>>> from pipeline.core.events import Event
>>> s = UserState.new("u1", partition=0, window_ms=600_000, max_ids=32)
>>> s.update(Event("e1", "play", "u1", 1_000, item_id="i1", position_s=0.0, duration_s=100.0))
Step(choice='i1', playback_end=None)
>>> s.update(Event("e2", "pause", "u1", 61_000, item_id="i1", position_s=60.0))
Step(choice=None, playback_end=('i1', 0.6))
>>> s.counts, s.last_seen_ms, s.session_events, s.session_watch_s
([1, 1, 0, 0], 61000, 2, 60.0)
>>> closed = s.close_session()
>>> closed.start_ms, closed.end_ms, closed.events, s.sessions, s.session_start_ms
(1000, 61000, 2, 1, None)
>>> UserState.from_bytes("u1", s.to_bytes(), window_ms=600_000, max_ids=32) == s
True
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from pipeline.core import state_codec
from pipeline.core.artwork import UserArtwork
from pipeline.core.dedupe import RecentIds
from pipeline.core.empty import EMPTY
from pipeline.core.events import EVENT_TYPES, Event
from pipeline.core.features import UserFeatures
from pipeline.crm.triggers import UserCrm
from pipeline.kpis.windows import UserKpis

__all__ = ["ClosedSession", "PendingChurn", "Step", "UserState", "TYPE_INDEX"]

TYPE_INDEX = {name: i for i, name in enumerate(EVENT_TYPES)}
#: Stored fields that models decide (a replay after a restart may differ in them).
MODEL_OUTPUTS = frozenset(
    {"pending", "risk_band", "segment", "reco_items", "trending_items", "artwork", "crm"}
)
#: Stored fields of a user's KPI part whose pruning follows the worker's commits.
KPI_PARTS = frozenset({"counts", "days"})
FINISHED_FRACTION = 0.9
MAX_FINISHED = 32

NO_GENRES: Callable[[str], tuple[str, ...]] = lambda item_id: ()  # noqa: E731


class Step(NamedTuple):
    """What an event meant for personalisation.

    ``choice``: the item the user turned to, when the event is the first click or play of
    an item other than the one they were on. ``playback_end``: ``(item, fraction)`` when
    the event ended a playback that had reached ``fraction`` of the item.
    """

    choice: str | None
    playback_end: tuple[str, float] | None


@dataclass(slots=True, frozen=True)
class ClosedSession:
    """A session that the watermark has ended."""

    start_ms: int
    end_ms: int
    events: int
    watch_s: float
    searched: bool
    played: bool


@dataclass(slots=True)
class PendingChurn:
    """A churn prediction waiting for its label.

    Made at ``predicted_at_ms`` for a user last seen at ``last_seen_ms``: negative if the
    user comes back before ``last_seen_ms + horizon``, positive once the watermark passes it.
    """

    predicted_at_ms: int
    last_seen_ms: int
    #: The churn features at the prediction (:data:`~pipeline.core.features.CHURN_FEATURES`).
    features: array[float]
    probabilities: dict[str, float]
    #: Re-scores during the user's silence since: days of silence (as text) → probability.
    rescores: Mapping[str, float] = EMPTY


@dataclass(slots=True, eq=False)
class UserState:
    """Everything ottscore remembers about one user.

    ``offset`` is the last input offset on ``partition`` applied to this state: replays of
    that offset or earlier ones after a crash are recognised and skipped.
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
    session_searched: bool = False
    session_played: bool = False
    watch_s: float = 0.0
    playing_item: str | None = None
    playing_position_s: float = 0.0
    playing_since_ms: int = 0
    playing_duration_s: float | None = None
    current_item: str | None = None
    clicked_item: str | None = None
    finished: list[str] = field(default_factory=list)
    features: UserFeatures = field(default_factory=UserFeatures)
    pending: PendingChurn | None = None
    risk_band: str | None = None
    segment: int | None = None
    reco_at_ms: int = 0
    reco_items: list[str] = field(default_factory=list)
    trending_items: list[str] = field(default_factory=list)
    #: Experiment id → the user's variant, or ``""`` outside its population (sticky).
    experiments: Mapping[str, str] = EMPTY
    #: The user's part of the partition's KPI windows (:mod:`pipeline.kpis.windows`).
    kpis: UserKpis | None = None
    #: The artworks shown to the user and their outcomes (:mod:`pipeline.core.artwork`).
    artwork: UserArtwork | None = None
    #: The user's part of the CRM triggers: risk hysteresis, caps (:mod:`pipeline.crm.triggers`).
    crm: UserCrm | None = None
    #: Fields of a newer release, kept as read and written back unchanged.
    extra: Mapping[str, Any] = EMPTY

    @classmethod
    def new(cls, user_id: str, *, partition: int, window_ms: int, max_ids: int) -> UserState:
        """A user seen for the first time."""
        return cls(user_id, partition, RecentIds(window_ms=window_ms, max_ids=max_ids))

    def update(self, event: Event, genres: Callable[[str], tuple[str, ...]] = NO_GENRES) -> Step:
        """Apply an accepted, de-duplicated event of this user; ``genres`` looks items up."""
        ts = event.ts_ms
        if self.session_start_ms is None:
            self.session_start_ms = ts
            self.session_events = 0
            self.session_watch_s = 0.0
            self.session_searched = self.session_played = False
        if not self.first_seen_ms:
            self.first_seen_ms = ts
        if ts > self.last_seen_ms:
            self.last_seen_ms = ts
        type_index = TYPE_INDEX[event.type]
        self.counts[type_index] += 1
        self.session_events += 1
        features = self.features
        features.decay_to(ts)
        features.count_event(type_index, device=event.device)
        playback_end = self._track_playback(event, genres)
        choice = None
        if event.type == "search":
            self.session_searched = True
        elif event.item_id is not None:
            if event.item_id != self.current_item and event.type in ("click", "play"):
                choice = event.item_id
            if event.type == "click":
                features.clicked()
                self.current_item = self.clicked_item = event.item_id
            elif event.type == "play":
                self.session_played = True
                if self.clicked_item == event.item_id:
                    features.clicked_then_played()
                self.current_item = event.item_id
                self.clicked_item = None
        return Step(choice, playback_end)

    def _track_playback(
        self, event: Event, genres: Callable[[str], tuple[str, ...]]
    ) -> tuple[str, float] | None:
        """Watch seconds from the playhead between a play and what follows it."""
        ended = None
        if self.playing_item is not None:
            elapsed_s = max(0.0, (event.ts_ms - self.playing_since_ms) / 1000.0)
            same_item = event.item_id == self.playing_item
            watched = 0.0
            if same_item and event.position_s is not None:
                watched = min(max(0.0, event.position_s - self.playing_position_s), elapsed_s)
            self.session_watch_s += watched
            self.watch_s += watched
            self.features.watched(watched, genres(self.playing_item))
            if event.type != "play" or not same_item:
                ended = self._end_playback(event.position_s if same_item else None)
        if event.type == "play":
            self.playing_item = event.item_id
            self.playing_position_s = event.position_s or 0.0
            self.playing_since_ms = event.ts_ms
            self.playing_duration_s = event.duration_s or self.playing_duration_s
        return ended

    def _end_playback(self, position_s: float | None) -> tuple[str, float] | None:
        item, duration = self.playing_item, self.playing_duration_s
        self.playing_item = None
        if item is None or not duration:
            return None
        fraction = min(1.0, (position_s if position_s is not None else self.playing_position_s)
                       / duration)  # fmt: skip
        self.features.playback_ended(fraction)
        if fraction >= FINISHED_FRACTION and item not in self.finished:
            self.finished.append(item)
            del self.finished[:-MAX_FINISHED]
        return item, fraction

    def session_deadline_ms(self, gap_ms: int) -> int:
        """When the open session ends unless another event comes.

        ``gap_ms`` after the last event or, while an item plays, ``gap_ms`` after the
        playhead would reach its end (a film watched without a pause is one session).
        """
        deadline = self.last_seen_ms + gap_ms
        if self.playing_item is not None and self.playing_duration_s:
            remaining_ms = max(0.0, self.playing_duration_s - self.playing_position_s) * 1000
            deadline = max(deadline, self.playing_since_ms + int(remaining_ms) + gap_ms)
        return deadline

    def close_session(self) -> ClosedSession:
        """End the open session (its last event is ``last_seen_ms``) and return it."""
        assert self.session_start_ms is not None, "no open session"
        closed = ClosedSession(
            self.session_start_ms,
            self.last_seen_ms,
            self.session_events,
            self.session_watch_s,
            self.session_searched,
            self.session_played,
        )
        self.sessions += 1
        self.session_start_ms = None
        self.session_events = 0
        self.session_watch_s = 0.0
        if self.playing_item is not None:
            self._end_playback(None)
        return closed

    def activity(self) -> dict[str, object]:
        """The part of the state that events alone determine (no model output in it).

        Nor the user's parts of KPI windows already published: they are forgotten as the
        worker stores how far its windows closed, at its commits.
        """
        stored = orjson.loads(self.to_bytes())
        if "kpis" in stored:
            stored["kpis"] = {k: v for k, v in stored["kpis"].items() if k not in KPI_PARTS}
        return {name: value for name, value in stored.items() if name not in MODEL_OUTPUTS}

    def to_bytes(self) -> bytes:
        """Serialise as stored: named fields, versioned (:mod:`pipeline.core.state_codec`)."""
        return state_codec.encode(self)

    @classmethod
    def from_bytes(cls, user_id: str, data: bytes, *, window_ms: int, max_ids: int) -> UserState:
        """Restore a state stored by this release or any earlier one.

        Raises :class:`pipeline.core.state_codec.StateUnreadable` when no release wrote ``data``.
        """
        return state_codec.decode(user_id, data, window_ms=window_ms, max_ids=max_ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UserState) and self.to_bytes() == other.to_bytes()
