"""Artwork per user: the artwork of each listed item, and whether it was *taken*.

When a personalisation list is published, :class:`Artworks` picks an artwork for each listed
item that the catalog gives artworks (the partition's
:class:`~pipeline.models.artwork.ArtworkBandit`, under the user's ``artwork_policy``) and
remembers the shows in the user's state (:class:`UserArtwork`). Each show ends, in event time,
as one of:

- a **take** (reward 1): a ``click`` on the item carrying that ``artwork_id``, while the list
  is the user's latest and younger than ``artwork_show_window_s``, followed by at least
  ``artwork_take_play_s`` of playback of the item within ``artwork_take_window_s`` of the click;
- a **miss** (reward 0): the list is replaced by the next one, or its window passes, without
  a click on it; or the click is not followed by enough playback in time.

Each ended show teaches the bandit, is counted per policy (``ottscore_artwork_shows_total``,
``ottscore_artwork_takes_total``) and, offline, goes to a sink as an :class:`ArtworkTrial`
with the propensities that off-policy estimates need. An ``artwork`` timer at the earliest
window end closes the shows of users who do not come back.

Examples
--------
>>> state = UserArtwork()
>>> state.shown = [Shown("film-1", "a1", ("tv", "tv/drama"), "bandit", 0.9, 3, 0.5, 0.9)]
>>> state.shown_ms = 1_000
>>> UserArtwork.from_json(state.to_json()) == state
True
>>> state.deadline_ms(show_window_ms=60_000, take_window_ms=10_000)
61000
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.events import Event, Rejection
from pipeline.core.tally import Tally
from pipeline.models.artwork import ArtworkBandit, draws

__all__ = ["ArtworkTrial", "Artworks", "Shown", "UserArtwork", "context_of"]

#: Items whose artwork a user's state remembers for stickiness (the oldest forgotten first).
MAX_STICKY = 64
NO_GENRE = "none"
NO_DEVICE = "unknown"


def context_of(device: str | None, genre_affinity: Mapping[str, float]) -> tuple[str, str]:
    """The user's context for the bandit: their device, then device and favourite genre.

    The device is the one of the event that triggered the list; the favourite genre the one
    of most watch time (``none`` before any).

    >>> context_of("tv", {"drama": 3.0, "crime": 5.0}), context_of(None, {})
    (('tv', 'tv/crime'), ('unknown', 'unknown/none'))
    """
    device = device or NO_DEVICE
    if not genre_affinity:
        return device, f"{device}/{NO_GENRE}"
    genre = max(genre_affinity.items(), key=lambda entry: (entry[1], entry[0]))[0]
    return device, f"{device}/{genre}"


@dataclass(slots=True)
class Shown:
    """One item shown with an artwork, awaiting its outcome (see the module docstring)."""

    item_id: str
    artwork_id: str
    context: tuple[str, ...]
    policy: str
    propensity: float
    choices: int
    p_popular: float
    p_bandit: float

    def to_json(self) -> list[Any]:
        """The stored form: a list, in the order of the fields."""
        return [
            self.item_id, self.artwork_id, list(self.context), self.policy,
            self.propensity, self.choices, self.p_popular, self.p_bandit,
        ]  # fmt: skip

    @classmethod
    def from_json(cls, value: Sequence[Any]) -> Shown:
        """Read what :meth:`to_json` stored."""
        item_id, artwork_id, context, policy, propensity, choices, p_popular, p_bandit = value
        return cls(
            str(item_id), str(artwork_id), tuple(map(str, context)), str(policy),
            float(propensity), int(choices), float(p_popular), float(p_bandit),
        )  # fmt: skip


@dataclass(slots=True)
class UserArtwork:
    """A user's part of artwork personalisation, stored in their state under ``artwork``.

    ``sticky``: item → ``[artwork_id, since_ms]``, the artwork last shown for it and since
    when; ``shown``: the shows of the user's latest list (published at ``shown_ms``), the
    clicked one moved to ``clicked`` (clicked at ``clicked_ms``, ``clicked_watch_s`` of it
    played since).
    """

    sticky: dict[str, list[Any]] = field(default_factory=dict)
    shown_ms: int = 0
    shown: list[Shown] = field(default_factory=list)
    clicked: Shown | None = None
    clicked_ms: int = 0
    clicked_watch_s: float = 0.0

    def deadline_ms(self, *, show_window_ms: int, take_window_ms: int) -> int | None:
        """When the earliest open show ends without a take, or None when none is open."""
        deadlines = []
        if self.shown:
            deadlines.append(self.shown_ms + show_window_ms)
        if self.clicked is not None:
            deadlines.append(self.clicked_ms + take_window_ms)
        return min(deadlines, default=None)

    def to_json(self) -> dict[str, Any]:
        """The stored form: named fields (``artwork`` of the user's stored state)."""
        return {
            "sticky": self.sticky,
            "shown_ms": self.shown_ms,
            "shown": [shown.to_json() for shown in self.shown],
            "clicked": None if self.clicked is None else self.clicked.to_json(),
            "clicked_ms": self.clicked_ms,
            "clicked_watch_s": self.clicked_watch_s,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> UserArtwork:
        """Read what :meth:`to_json` stored."""
        clicked = obj.get("clicked")
        return cls(
            sticky={str(item): [str(a), int(ms)] for item, (a, ms) in obj["sticky"].items()},
            shown_ms=int(obj["shown_ms"]),
            shown=[Shown.from_json(shown) for shown in obj["shown"]],
            clicked=None if clicked is None else Shown.from_json(clicked),
            clicked_ms=int(obj["clicked_ms"]),
            clicked_watch_s=float(obj["clicked_watch_s"]),
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
    ) -> None:
        self.catalog = catalog
        self.policy = policy
        self.sticky_ms = sticky_ms
        self.show_window_ms = show_window_ms
        self.take_window_ms = take_window_ms
        self.take_play_s = take_play_s
        self.schedule = schedule
        self.tally = tally
        self.sink = sink

    def artworks_of(self, item_id: str) -> list[tuple[str, Sequence[str]]]:
        """The ``(artwork_id, tags)`` of an item (none when the catalog lists none)."""
        record = self.catalog.get(item_id)
        if not record:
            return []
        return [(art["artwork_id"], art["tags"]) for art in record.get("artworks") or ()]

    def refuse(self, event: Event) -> Rejection | None:
        """Why a click's ``artwork_id`` is refused: its item is known and does not list it.

        An item the catalog does not know yet is not judged (the catalog may come later).
        """
        record = self.catalog.get(event.item_id or "")
        if record is None:
            return None
        ids = [art["artwork_id"] for art in record.get("artworks") or ()]
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
    ) -> list[tuple[str, float] | None]:
        """The ``(artwork_id, propensity)`` of each listed item (None: it has no artwork).

        ``device`` is the one of the event the list follows. The shows of the user's
        previous list end first (a miss unless clicked).
        """
        memory = state.artwork
        if memory is not None and memory.shown:
            self._end_shown(state, bandit, ts_ms)
        policy = policy or self.policy
        picked: list[tuple[str, float] | None] = []
        shown: list[Shown] = []
        context = context_of(device, state.features.genre_affinity)
        for item_id in item_ids:
            artworks = self.artworks_of(item_id)
            if not artworks:
                picked.append(None)
                continue
            if memory is None:
                memory = state.artwork = UserArtwork()
            sticky = memory.sticky.get(item_id)
            kept = sticky[0] if sticky and ts_ms - sticky[1] < self.sticky_ms else None
            choice = bandit.choose(
                policy,
                context,
                artworks,
                draw=draws(state.user_id, item_id, ts_ms),
                sticky=kept,
            )
            if choice.artwork_id != kept:
                memory.sticky.pop(item_id, None)
                memory.sticky[item_id] = [choice.artwork_id, ts_ms]
                if len(memory.sticky) > MAX_STICKY:
                    del memory.sticky[next(iter(memory.sticky))]
            shown.append(
                Shown(
                    item_id,
                    choice.artwork_id,
                    context,
                    policy,
                    choice.propensity,
                    choice.choices,
                    choice.p_popular,
                    choice.p_bandit,
                )  # fmt: skip
            )
            picked.append((choice.artwork_id, choice.propensity))
        if memory is not None and shown:
            memory.shown, memory.shown_ms = shown, ts_ms
            self._rearm(state)
        return picked

    # --- events -----------------------------------------------------------------------

    def on_event(
        self,
        state: Any,
        bandit: ArtworkBandit,
        event: Event,
        watched_item: str | None,
        watched_s: float,
    ) -> None:
        """Follow a user with open shows: a click on a shown artwork, playback after it.

        ``watched_s`` seconds of ``watched_item`` were played up to this event.
        """
        memory: UserArtwork = state.artwork
        ts_ms = event.ts_ms
        changed = False
        if memory.clicked is not None and watched_item == memory.clicked.item_id:
            memory.clicked_watch_s += watched_s
            if memory.clicked_watch_s >= self.take_play_s:
                if ts_ms - memory.clicked_ms <= self.take_window_ms:
                    self._end(state, bandit, memory.clicked, 1.0, ts_ms)
                else:
                    self._end(state, bandit, memory.clicked, 0.0, ts_ms)
                memory.clicked = None
                changed = True
        if event.artwork_id is not None and memory.shown:
            if ts_ms - memory.shown_ms > self.show_window_ms:
                self._end_shown(state, bandit, ts_ms)
                changed = True
            else:
                for index, shown in enumerate(memory.shown):
                    if shown.item_id == event.item_id and shown.artwork_id == event.artwork_id:
                        if memory.clicked is not None:
                            self._end(state, bandit, memory.clicked, 0.0, ts_ms)
                        memory.clicked = memory.shown.pop(index)
                        memory.clicked_ms, memory.clicked_watch_s = ts_ms, 0.0
                        changed = True
                        break
        if changed:
            self._rearm(state)

    def expire(self, state: Any, bandit: ArtworkBandit, at_ms: int) -> None:
        """The ``artwork`` timer: end the shows whose window passed by ``at_ms`` as misses."""
        memory: UserArtwork | None = state.artwork
        if memory is None:
            return
        if memory.shown and at_ms >= memory.shown_ms + self.show_window_ms:
            self._end_shown(state, bandit, at_ms)
        if memory.clicked is not None and at_ms >= memory.clicked_ms + self.take_window_ms:
            self._end(state, bandit, memory.clicked, 0.0, at_ms)
            memory.clicked = None
        self._rearm(state)

    def rearm(self, state: Any) -> None:
        """Schedule the ``artwork`` timer of an adopted state (after a restart)."""
        if state.artwork is not None:
            self._rearm(state)

    def _rearm(self, state: Any) -> None:
        self.schedule(
            state,
            state.artwork.deadline_ms(
                show_window_ms=self.show_window_ms, take_window_ms=self.take_window_ms
            ),
        )

    def _end_shown(self, state: Any, bandit: ArtworkBandit, at_ms: int) -> None:
        memory: UserArtwork = state.artwork
        for shown in memory.shown:
            self._end(state, bandit, shown, 0.0, at_ms)
        memory.shown = []

    def _end(
        self, state: Any, bandit: ArtworkBandit, shown: Shown, reward: float, at_ms: int
    ) -> None:
        tags = dict(self.artworks_of(shown.item_id)).get(shown.artwork_id, ())
        bandit.learn(shown.context, shown.artwork_id, tags, reward)
        tally = self.tally
        tally.artwork_shows[shown.policy] += 1
        if reward:
            tally.artwork_takes[shown.policy] += 1
        if self.sink is not None:
            self.sink(ArtworkTrial(state.user_id, shown, reward, at_ms))
