"""Artwork per user: the artwork of each listed item, and whether it was *taken*.

When a personalisation list is published, :class:`Artworks` picks an artwork for each listed
item that the catalog gives artworks (the partition's
:class:`~pipeline.models.artwork.ArtworkBandit`, under the user's ``artwork_policy``) and
remembers the list in the user's state (:class:`UserArtwork`, ``latest``).

**A show is what a home screen shows.** There are no impression events: the list a user
sees is the latest one published before their session starts (a client loads the home
screen as it opens). So at the first event of each session, each item of the latest list
becomes a *show*: one item with one artwork for one user, open for ``artwork_show_window_s``
(a show still open for the same item and artwork is the same show). Lists published and
replaced within a session were never seen: they are no shows, and a show is never counted
against an artwork nobody saw. Each show ends, in event time, as one of:

- a **take** (reward 1): a ``click`` on the item carrying that ``artwork_id`` while the show
  is open, followed by at least ``artwork_take_play_s`` of playback of the item within
  ``artwork_take_window_s`` of the click;
- a **miss** (reward 0): the window passes without such a click; or the click is not
  followed by enough playback in time.

Each show teaches the bandit as it opens (a show waiting for its outcome already counts, so
takes, which come sooner than misses, do not inflate the estimates), and its take when it
comes; each ended show is counted per policy (``ottscore_artwork_shows_total``,
``ottscore_artwork_takes_total``) and, offline, goes to a sink as an :class:`ArtworkTrial`
with the propensities that off-policy estimates need. An ``artwork`` timer at the earliest
window end closes the shows of users who do not come back.

Examples
--------
>>> state = UserArtwork()
>>> state.shown = [Shown("film-1", "a1", ("tv", "tv/drama"), "bandit", 0.9, 3, 0.5, 0.9, 1_000)]
>>> state.latest = list(state.shown)
>>> UserArtwork.from_json(state.to_json()) == state
True
>>> state.deadline_ms(show_window_ms=60_000, take_window_ms=10_000)
61000
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from sys import intern
from typing import Any, NamedTuple

from pipeline.core.events import Event, Rejection
from pipeline.core.tally import Tally
from pipeline.models import artwork_kernel
from pipeline.models.artwork import ArtworkBandit

__all__ = ["ArtworkTrial", "Artworks", "Shown", "UserArtwork", "context_of"]

#: Items whose artwork a user's state remembers for stickiness (the oldest forgotten first).
MAX_STICKY = 64
#: The weight a user's earlier sessions keep, per device, at each session start: the device
#: of their lists' context is the one of most sessions over about the last ten.
DEVICE_MEMORY = 0.9
#: Open shows a user's state holds; beyond, the oldest ends as a miss.
MAX_OPEN = 64
NO_GENRE = "none"
NO_DEVICE = "unknown"


def context_of(
    device: str | None, genre_affinity: Mapping[str, float] | None = None
) -> tuple[str, ...]:
    """The user's context for the bandit: their device (then device and favourite genre).

    The device is the one the user watches on most (:meth:`UserArtwork.usual_device`); the
    favourite genre the one of most watch time (``none`` before any), a level below the
    device when ``genre_affinity`` is given (``OTTSCORE_ARTWORK_CONTEXT=device_genre``).

    >>> context_of("tv"), context_of(None)
    (('tv',), ('unknown',))
    >>> context_of("tv", {"drama": 3.0, "crime": 5.0}), context_of(None, {})
    (('tv', 'tv/crime'), ('unknown', 'unknown/none'))
    """
    device = device or NO_DEVICE
    if genre_affinity is None:
        return (device,)
    if not genre_affinity:
        return device, f"{device}/{NO_GENRE}"
    return device, f"{device}/{_heaviest(genre_affinity)}"


def _heaviest(weights: Mapping[str, float]) -> str:
    """The key of the largest weight; of equal weights, the largest key."""
    return max(weights.items(), key=lambda entry: (entry[1], entry[0]))[0]


class _Numbers:
    """The numbers read from one stored state: an equal one read again is the same object.

    The shows of a list share their time, and many their probabilities (1/5, 1/8, ...):
    ~0.6 kB less a state with artworks. Zeros are kept as read (``0.0`` and ``-0.0`` are
    equal, and differ).
    """

    __slots__ = ("_times", "_reals")

    def __init__(self) -> None:
        self._times: dict[int, int] = {}
        self._reals: dict[float, float] = {}

    def time(self, value: int) -> int:
        return self._times.setdefault(value, value)

    def real(self, value: float) -> float:
        return self._reals.setdefault(value, value) if value else value


class Shown(NamedTuple):
    """One item shown with an artwork, awaiting its outcome (see the module docstring).

    A named tuple, made by the compiled pick of a list (``artwork_kernel.pick_list``) and
    taken out of the garbage collector's sight (``artwork_kernel.untracked``: a user's state
    holds a few dozen of these, which Python would track however plain their fields).
    """

    item_id: str
    artwork_id: str
    context: tuple[str, ...]
    policy: str
    propensity: float
    choices: int
    p_popular: float
    p_bandit: float
    #: When a list first showed the item with this artwork (the window runs from it).
    shown_ms: int = 0

    @classmethod
    def from_json(
        cls, value: Sequence[Any], shown_ms: int = 0, read: _Numbers | None = None
    ) -> Shown:
        """Read a stored show: the array of its fields (``shown_ms`` for one stored without it).

        ``read``: the numbers read so far from the same state (see :class:`_Numbers`).
        """
        item_id, artwork_id, context, policy, propensity, choices, p_popular, p_bandit = value[:8]
        context = _shared_context(tuple(map(str, context)))
        same = read or _Numbers()
        shown = _make_shown(cls, (
            intern(str(item_id)), intern(str(artwork_id)), context, intern(str(policy)),
            same.real(float(propensity)), int(choices), same.real(float(p_popular)),
            same.real(float(p_bandit)),
            same.time(int(value[8]) if len(value) > 8 else shown_ms),
        ))  # fmt: skip
        return artwork_kernel.untracked(shown)  # as a pick makes them (see untracked())


#: A show from its fields, as ``Shown(*fields)`` makes it without its Python ``__new__``.
_make_shown = tuple.__new__


@functools.lru_cache(maxsize=10_000)
def _shared_context(values: tuple[str, ...]) -> tuple[str, ...]:
    """A stored show's context as one tuple shared by every show read back in it."""
    return tuple(map(intern, values))


@dataclass(slots=True)
class UserArtwork:
    """A user's part of artwork personalisation, stored in their state under ``artwork``.

    ``sticky``: item → ``(artwork_id, since_ms)``, the artwork the policy chose as its best
    and since when; ``latest``: the picks of the latest list (shown at the next session's
    start); ``shown``: the open shows, oldest first; the clicked one moved to ``clicked``
    (clicked at ``clicked_ms``, ``clicked_watch_s`` of it played since); ``devices``: the
    user's sessions per device, each session start weighing the earlier ones by
    :data:`DEVICE_MEMORY` (absent from states stored before it: it starts afresh).
    """

    sticky: dict[str, tuple[str, int]] = field(default_factory=dict)
    shown: list[Shown] = field(default_factory=list)
    latest: list[Shown] = field(default_factory=list)
    clicked: Shown | None = None
    clicked_ms: int = 0
    clicked_watch_s: float = 0.0
    devices: dict[str, float] = field(default_factory=dict)

    def count_session(self, device: str | None) -> None:
        """A session started on ``device``: the earlier sessions weigh :data:`DEVICE_MEMORY`."""
        devices = self.devices
        for known in devices:
            devices[known] *= DEVICE_MEMORY
        device = device or NO_DEVICE
        devices[device] = devices.get(device, 0.0) + 1.0

    def usual_device(self, device: str | None) -> str | None:
        """The device of most (weighed) sessions; ``device`` before any session is counted.

        A list is seen at the user's next session start, on a device not known yet: the one
        they use most is the best guess of it, better than the device of the event the list
        follows (a session on another device would otherwise switch the context of every
        list made in it).

        >>> memory = UserArtwork()
        >>> memory.usual_device("mobile")
        'mobile'
        >>> for device in ("tv", "tv", "mobile"):
        ...     memory.count_session(device)
        >>> memory.usual_device("mobile"), {k: round(v, 2) for k, v in memory.devices.items()}
        ('tv', {'tv': 1.71, 'mobile': 1.0})
        """
        return _heaviest(self.devices) if self.devices else device

    def deadline_ms(self, *, show_window_ms: int, take_window_ms: int) -> int | None:
        """When the earliest open show ends without a take, or None when none is open."""
        deadlines = []
        if self.shown:
            deadlines.append(min(shown.shown_ms for shown in self.shown) + show_window_ms)
        if self.clicked is not None:
            deadlines.append(self.clicked_ms + take_window_ms)
        return min(deadlines, default=None)

    def to_json(self) -> dict[str, Any]:
        """The stored form: named fields (``artwork`` of the user's stored state).

        Shows are named tuples, which the state's writer writes as the arrays of their
        fields in order (:meth:`Shown.from_json` reads them), without a list made per show.
        """
        return {
            "sticky": self.sticky,
            "shown": self.shown,
            "latest": self.latest,
            "clicked": self.clicked,
            "clicked_ms": self.clicked_ms,
            "clicked_watch_s": self.clicked_watch_s,
            "devices": self.devices,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> UserArtwork:
        """Read what :meth:`to_json` stored."""
        clicked = obj.get("clicked")
        read = _Numbers()
        shown_ms = int(obj.get("shown_ms", 0))
        return cls(
            sticky={
                intern(str(item)): (intern(str(a)), read.time(int(ms)))
                for item, (a, ms) in obj["sticky"].items()
            },
            # lists of exactly their length (~50 bytes less than grown item by item)
            shown=list([Shown.from_json(shown, shown_ms, read) for shown in obj["shown"]]),
            latest=list([Shown.from_json(shown, 0, read) for shown in obj.get("latest", ())]),
            clicked=None if clicked is None else Shown.from_json(clicked),
            clicked_ms=int(obj["clicked_ms"]),
            clicked_watch_s=float(obj["clicked_watch_s"]),
            devices={intern(str(device)): float(n) for device, n in obj.get("devices", {}).items()},
        )


@dataclass(frozen=True, slots=True)
class ArtworkTrial:
    """An ended show, as off-policy estimates read it (:mod:`pipeline.models.offpolicy`)."""

    user_id: str
    shown: Shown
    reward: float
    at_ms: int


class Artworks:
    """Picks artworks for lists and ends shows as takes or misses; see the module docstring.

    Parameters
    ----------
    catalog
        The processor's catalog records (read, never copied: items added later count).
    policy
        The policy of users no experiment sets one for.
    context
        The bandit's context of users no experiment sets one for: ``device``, or
        ``device_genre`` (their favourite genre below their device).
    sticky_ms, show_window_ms, take_window_ms, take_play_s
        As the ``artwork_*`` settings say.
    schedule
        Called with a state and the deadline of its ``artwork`` timer (None: cancel it).
    tally
        Counts shows and takes per policy.
    sink
        Called with every ended show (offline evaluation).
    """

    def __init__(
        self,
        catalog: Mapping[str, Mapping[str, Any]],
        *,
        policy: str,
        sticky_ms: int,
        show_window_ms: int,
        take_window_ms: int,
        take_play_s: float,
        schedule: Callable[[Any, int | None], None],
        tally: Tally,
        sink: Callable[[ArtworkTrial], None] | None = None,
        context: str = "device",
    ) -> None:
        self.catalog = catalog
        self.policy = policy
        self.context = context
        self.sticky_ms = sticky_ms
        self.show_window_ms = show_window_ms
        self.take_window_ms = take_window_ms
        self.take_play_s = take_play_s
        self.schedule = schedule
        self.tally = tally
        self.sink = sink

    def artworks_of(self, item_id: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The ``(artwork_id, tags)`` of an item (none when the catalog lists none).

        The catalog record's own tuple (:func:`pipeline.core.catalog_items.catalog_item`):
        the same object while the record lives, which the bandit's picks key on.
        """
        record = self.catalog.get(item_id)
        return record.get("artworks") or () if record else ()

    def refuse(self, event: Event) -> Rejection | None:
        """Why a click's ``artwork_id`` is refused: its item is known and does not list it.

        An item the catalog does not know yet is not judged (the catalog may come later).
        """
        item_id = event.item_id or ""
        if item_id not in self.catalog:
            return None
        ids = [artwork_id for artwork_id, _ in self.artworks_of(item_id)]
        if event.artwork_id in ids:
            return None
        listed = f"lists {len(ids)} artworks" if ids else "lists no artwork"
        return Rejection(
            "unknown_artwork",
            f"artwork_id: {event.artwork_id!r} is not an artwork of item {event.item_id!r}"
            f" (its catalog record {listed})",
        )

    # --- lists ------------------------------------------------------------------------

    def pick(
        self,
        state: Any,
        bandit: ArtworkBandit,
        item_ids: Sequence[str],
        ts_ms: int,
        policy: str | None,
        device: str | None = None,
        levels: str | None = None,
    ) -> list[tuple[str, float] | None]:
        """The ``(artwork_id, propensity)`` of each listed item (None: it has no artwork).

        ``device`` is the one of the event the list follows; ``policy`` and ``levels`` (the
        context: ``device`` or ``device_genre``) an experiment's knobs, None for the
        worker's settings. The picks become the user's latest list: its items are shown at
        the next session's start (:meth:`on_event`).
        """
        policy = policy or self.policy
        listed = [self.artworks_of(item_id) for item_id in item_ids]
        memory: UserArtwork | None = state.artwork
        if not any(listed):
            if memory is not None:
                memory.latest = []
            return [None] * len(listed)
        if memory is None:
            memory = state.artwork = UserArtwork()
        levels = levels or self.context
        genres = state.features.genre_affinity if levels == "device_genre" else None
        context = context_of(memory.usual_device(device), genres)
        # the draws of (user_id, item_id, ts_ms) from the same bytes as draws()
        prefix, suffix = f"{state.user_id}\x1f".encode(), f"\x1f{ts_ms}".encode()
        picked, memory.latest = artwork_kernel.pick_list(
            bandit, policy, context, list(item_ids), listed, memory.sticky, ts_ms,
            self.sticky_ms, MAX_STICKY, prefix, suffix, bandit.memo(), Shown,
        )  # fmt: skip
        return picked

    def _open(self, state: Any, bandit: ArtworkBandit, memory: UserArtwork, ts_ms: int) -> None:
        """Open a show at ``ts_ms`` for each latest pick, unless one is open for it already.

        One is open when the user has an open show of the same item and artwork. A show's
        window runs from its opening: showing it again does not lengthen it (an artwork that
        sticks would get longer windows, more chances, than an explored one).
        """
        shown = memory.shown
        opened = {(old.item_id, old.artwork_id) for old in shown}
        for pick in memory.latest:
            key = (pick.item_id, pick.artwork_id)
            if key in opened:
                continue
            new = artwork_kernel.untracked(Shown._make((*pick[:-1], ts_ms)))  # see untracked()
            shown.append(new)
            opened.add(key)
            bandit.show(new.context, new.item_id, new.artwork_id, self._tags(new))
            if len(shown) > MAX_OPEN:
                ended = shown.pop(0)
                opened.discard((ended.item_id, ended.artwork_id))
                self._end(state, bandit, ended, 0.0, ts_ms)

    # --- events -----------------------------------------------------------------------

    def on_event(
        self,
        state: Any,
        bandit: ArtworkBandit,
        event: Event,
        watched_item: str | None,
        watched_s: float,
        *,
        session_start: bool = False,
    ) -> None:
        """Follow a user shown artworks: a session start, a click on a show, playback after it.

        ``watched_s`` seconds of ``watched_item`` were played up to this event;
        ``session_start``: the event starts a session (the latest list is shown now).
        """
        memory: UserArtwork = state.artwork
        ts_ms = event.ts_ms
        changed = False
        if session_start:
            memory.count_session(event.device)
            self._open(state, bandit, memory, ts_ms)
            changed = bool(memory.latest)
        if memory.clicked is not None and watched_item == memory.clicked.item_id:
            memory.clicked_watch_s += watched_s
            if memory.clicked_watch_s >= self.take_play_s:
                in_time = ts_ms - memory.clicked_ms <= self.take_window_ms
                self._end_clicked(state, bandit, float(in_time), ts_ms)
                changed = True
        if event.artwork_id is not None and memory.shown:
            changed |= self._end_expired(state, bandit, ts_ms)
            for index, shown in enumerate(memory.shown):
                if shown.item_id == event.item_id and shown.artwork_id == event.artwork_id:
                    self._end_clicked(state, bandit, 0.0, ts_ms)
                    memory.clicked = memory.shown.pop(index)
                    memory.clicked_ms, memory.clicked_watch_s = ts_ms, 0.0
                    changed = True
                    break
        if changed:
            self.rearm(state)

    def expire(self, state: Any, bandit: ArtworkBandit, at_ms: int) -> None:
        """The ``artwork`` timer: end the shows whose window passed by ``at_ms`` as misses."""
        memory: UserArtwork | None = state.artwork
        if memory is None:
            return
        self._end_expired(state, bandit, at_ms)
        if memory.clicked is not None and at_ms >= memory.clicked_ms + self.take_window_ms:
            self._end_clicked(state, bandit, 0.0, at_ms)
        self.rearm(state)

    def rearm(self, state: Any) -> None:
        """Schedule the ``artwork`` timer at the user's earliest open deadline (or cancel it)."""
        if state.artwork is not None:
            self.schedule(state, self.deadline_ms(state))

    def deadline_ms(self, state: Any) -> int | None:
        """When the user's ``artwork`` timer is due: its earliest open deadline, or None."""
        memory: UserArtwork | None = state.artwork
        if memory is None:
            return None
        return memory.deadline_ms(
            show_window_ms=self.show_window_ms, take_window_ms=self.take_window_ms
        )

    def _tags(self, shown: Shown) -> tuple[str, ...]:
        artwork_id = shown.artwork_id
        for listed, tags in self.artworks_of(shown.item_id):
            if listed == artwork_id:
                return tags
        return ()

    def _end_expired(self, state: Any, bandit: ArtworkBandit, at_ms: int) -> bool:
        """End as misses the shows whose window passed by ``at_ms``; whether any did."""
        memory: UserArtwork = state.artwork
        open_: list[Shown] = []
        expired: list[Shown] = []
        for shown in memory.shown:
            (expired if at_ms >= shown.shown_ms + self.show_window_ms else open_).append(shown)
        for shown in expired:
            self._end(state, bandit, shown, 0.0, at_ms)
        if expired:
            memory.shown = open_
        return bool(expired)

    def _end_clicked(self, state: Any, bandit: ArtworkBandit, reward: float, at_ms: int) -> None:
        """End the clicked show, if any, with ``reward``; the user has none clicked then."""
        memory: UserArtwork = state.artwork
        if memory.clicked is not None:
            self._end(state, bandit, memory.clicked, reward, at_ms)
            memory.clicked = None

    def _end(
        self, state: Any, bandit: ArtworkBandit, shown: Shown, reward: float, at_ms: int
    ) -> None:
        if reward:  # the show itself was counted when it opened
            bandit.take(shown.context, shown.item_id, shown.artwork_id, self._tags(shown))
        tally = self.tally
        tally.artwork_shows[shown.policy] += 1
        if reward:
            tally.artwork_takes[shown.policy] += 1
        if self.sink is not None:
            self.sink(ArtworkTrial(state.user_id, shown, reward, at_ms))
