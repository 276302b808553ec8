"""The closed loop's viewers: a home screen showing what ottscore published, and who reacts to it.

A :class:`HomeViewer` is the open-loop :class:`~pipeline.sim.viewing.Viewer` (same profile,
habits, session times, searches and playback) whose sessions start from a home screen
(:class:`HomeScreen`) showing the last list published for them; until they have one, a
generic row (the ``popular`` titles) or no row at all. How they react depends on their
hidden :func:`hidden_fit` of each title (half their :func:`hidden_liking` of its genres,
half the title's broad appeal), which only the simulation knows:

- **position bias**: slot ``r`` (from 0) of the row is looked at with probability
  ``(1 + r) ** -0.7`` (1, 0.62, 0.46, 0.38, 0.32 … 0.20 at the tenth);
- **worth** of a slot: the fit of its title; 0.3 of it for a title finished or under
  way; 0 for a title not yet released or an id the catalog does not know;
- **click**: a slot looked at is clicked with probability ``0.5 × worth ** 2``, times
  ``0.4 + 0.6 × engagement``; the first slot clicked wins;
- **click → play**: the detail page then tells whether the title is the viewer's kind of
  title: it is played with probability ``0.35 + 0.6 × liking`` (its genres' liking alone:
  broad appeal draws the click, and a popular title of a genre the viewer does not care
  for is left on its page), and watched as the open-loop viewer watches (whose chance to
  finish grows with the same liking) at an attention of ``engagement × (0.25 + 0.75 × fit)``;
- **otherwise** the viewer resumes an unfinished item (half the home screens, times
  engagement, before even looking at the row) or, when the row tempted them with nothing,
  searches (10 %), browses the trending row (10 %) or gives up on that title (80 %);
- **satisfaction**: a running mean (rate 0.2, from 0.5) of each session's outcome: half how
  relevant the row looked (its position-weighted mean worth), half the best title of the
  session (fit × fraction watched, 0 if nothing was played);
- **visits**: the viewer keeps each session of their habits with probability
  ``0.4 + satisfaction`` (all of them from 0.6 on);
- **messages**: a ``win_back`` message brings the viewer back with probability
  ``win_back_response``, within an hour to a day, for a session and then their habits
  again, when they have not left or left less than 14 days before (they subscribe again,
  with a new patience); a viewer about to leave stays (their remaining patience is kept);
- **churn**: between sessions the viewer's churn hazard is ``h0 ** (1 - s) × h1 ** s`` a
  week at satisfaction ``s`` (``h0``, ``h1``: the hazards at satisfaction 0 and 1); they
  leave once it has added up to their patience, drawn once from an exponential law of
  mean 1 (the same for a viewer whatever the lists: comparisons of policies are paired).

A good list therefore raises clicks, plays and watch time, and lowers churn.

Examples
--------
>>> from pipeline.sim.audience import draw_profiles
>>> from pipeline.sim.synthetic_catalog import Catalog
>>> catalog = Catalog(size=300, seed=2, start_ms=0, end_ms=7 * DAY_MS)
>>> profiles = draw_profiles(
...     3, seed=2, start_ms=0, end_ms=7 * DAY_MS, churn_fraction=0, new_user_fraction=0
... )
>>> fit = hidden_fit(profiles, catalog)
>>> fit.shape == (3, len(catalog.titles)), bool(0 <= fit.min() and fit.max() <= 1)
(True, True)
>>> home = HomeScreen(catalog, size=5)
>>> home.publish([PublishedList(profiles[0].user_id, ("film-00000", "nothing-such"))])
>>> [home.show(p.user_id, 7 * DAY_MS)[0] for p in profiles[:2]]
['for_you', 'popular']
>>> home.impressions[0].item_ids, len(home.impressions[1].item_ids)
(('film-00000', 'nothing-such'), 5)
>>> HomeScreen(catalog, size=5, generic_row="none").show(profiles[2].user_id, 0)
('none', [])
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from pipeline.core.events import Event
from pipeline.sim.audience import DAY_MS, UserProfile
from pipeline.sim.synthetic_catalog import Catalog
from pipeline.sim.viewing import SessionRecorder, Viewer

__all__ = [
    "FOR_YOU",
    "NO_ROW",
    "POPULAR",
    "HomeScreen",
    "HomeViewer",
    "Impression",
    "PublishedList",
    "hidden_fit",
    "hidden_liking",
    "position_bias",
]

FOR_YOU = "for_you"
"""The ``surface`` of a click on the user's own published list."""
POPULAR = "popular"
"""The ``surface`` of a click on the generic row shown to a user without a list."""
NO_ROW = "none"
"""The surface of a home screen without any row (``generic_row="none"``)."""

_WEEK_MS = 7 * DAY_MS
_BIAS_EXPONENT = 0.7
_TASTE_WEIGHT = 0.5  # of the fit: the genre liking; the rest, the title's broad appeal
_WORN = 0.3  # worth left to a title already finished or under way
_CLICK_MAX = 0.5
_CLICK_CURVE = 2.0
_RESUME_SHARE = 0.5  # of the home screens, times engagement, that resume an unfinished item
_SEARCH_SHARE = 0.1  # without a click on the row: search ...
_TRENDING_SHARE = 0.1  # ... or browse the trending row; else nothing
_ATTENTION_FLOOR = 0.25  # of the engagement, kept watching a title of fit 0
_RELEVANCE_WEIGHT = 0.5  # of a session's outcome: how relevant the row looked; the rest, the best
_SATISFACTION_RATE = 0.2
_VISIT_FLOOR = 0.4  # share of the habitual sessions kept at satisfaction 0 (all from 0.6 on)
_COMEBACK_MS = (3_600_000, DAY_MS)  # a viewer won back comes within an hour to a day
_REACH_MS = 14 * DAY_MS  # a message still reaches a viewer who left this recently


def position_bias(rank: int) -> float:
    """Probability that the viewer looks at slot ``rank`` (from 0) of a row.

    >>> [round(position_bias(r), 2) for r in range(4)]
    [1.0, 0.62, 0.46, 0.38]
    """
    return float((1.0 + rank) ** -_BIAS_EXPONENT)


def hidden_liking(profiles: Sequence[UserProfile], catalog: Catalog) -> np.ndarray:
    """How much each viewer (row) likes the genres of each title (column), from 0 to 1.

    The viewer's taste for the title's best genre over their taste for their favourite
    genre: what the open-loop viewer's chance to finish grows with.
    """
    taste = np.array([profile.taste for profile in profiles])
    liking = np.stack([taste[:, list(title.genres)].max(axis=1) for title in catalog.titles], 1)
    return np.asarray(liking / taste.max(axis=1, keepdims=True))


def hidden_fit(
    profiles: Sequence[UserProfile], catalog: Catalog, *, liking: np.ndarray | None = None
) -> np.ndarray:
    """The fit of each viewer (row) for each title (column), from 0 to 1.

    ``0.5 × liking + 0.5 × appeal``: ``liking`` is :func:`hidden_liking` (given, or computed),
    ``appeal`` the title's popularity percentile in the catalog (1 for the most popular):
    what most people watch fits more people.
    """
    if liking is None:
        liking = hidden_liking(profiles, catalog)
    popularity = np.array([title.popularity for title in catalog.titles])
    appeal = np.argsort(np.argsort(popularity, kind="stable")) / max(len(popularity) - 1, 1)
    return np.asarray(_TASTE_WEIGHT * liking + (1.0 - _TASTE_WEIGHT) * appeal)


@dataclass(frozen=True, slots=True)
class PublishedList:
    """A list published to a user: what their home screen shows from then on.

    ``experiments`` (experiment id → variant) is the record's, when it names any;
    ``artwork_ids`` the artwork of each item (None: none), when any has one.
    """

    user_id: str
    item_ids: tuple[str, ...]
    experiments: Mapping[str, str] = field(default_factory=dict)
    artwork_ids: tuple[str | None, ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class Impression:
    """A home screen a user saw at ``ts_ms``: their list, or the generic row (``surface``).

    ``artwork_ids``: the artwork each slot was shown with (None: none), when any had one.
    """

    user_id: str
    ts_ms: int
    surface: str
    item_ids: tuple[str, ...]
    experiments: Mapping[str, str]
    artwork_ids: tuple[str | None, ...] = ()


class HomeScreen:
    """What each user's home screen shows; :attr:`impressions` logs every home screen seen.

    Parameters
    ----------
    catalog
        The items the ids of published lists name (an unknown id is shown, never played).
    size
        Slots of the row: a longer list is cut, the ``popular`` row has that many titles.
    generic_row
        What a user without a list sees: the ``popular`` row or ``none``.
    """

    def __init__(
        self, catalog: Catalog, *, size: int, generic_row: Literal["popular", "none"] = "popular"
    ) -> None:
        self.catalog = catalog
        self.size = size
        self.generic_row = generic_row
        #: :func:`position_bias` of each slot.
        self.bias = np.array([position_bias(rank) for rank in range(size)])
        self.lists: dict[str, PublishedList] = {}
        self.impressions: list[Impression] = []
        self.item_index = {item.item_id: index for index, item in enumerate(catalog.items)}
        titles = catalog.titles
        self._by_popularity = sorted(range(len(titles)), key=lambda t: -titles[t].popularity)

    def publish(self, lists: Iterable[PublishedList]) -> None:
        """Adopt newly published lists: each replaces its user's previous one."""
        for published in lists:
            self.lists[published.user_id] = published

    def show(self, user_id: str, ts_ms: int) -> tuple[str, list[int | None]]:
        """The row ``user_id`` sees at ``ts_ms``: its surface and items (None: unknown id)."""
        published = self.lists.get(user_id)
        artworks: tuple[str | None, ...] = ()
        if published is not None:
            ids = published.item_ids[: self.size]
            surface, experiments = FOR_YOU, published.experiments
            items = [self.item_index.get(item_id) for item_id in ids]
            artworks = published.artwork_ids[: self.size]
        else:
            surface, experiments = (POPULAR if self.generic_row == "popular" else NO_ROW), {}
            popular = list(self._popular(ts_ms)) if surface == POPULAR else []
            ids = tuple(self.catalog.items[item].item_id for item in popular)
            items = list[int | None](popular)
        self.impressions.append(Impression(user_id, ts_ms, surface, ids, experiments, artworks))
        return surface, items

    def artworks(self, user_id: str) -> tuple[str | None, ...]:
        """The artwork of each slot of the row :meth:`show` last showed ``user_id``."""
        published = self.lists.get(user_id)
        return () if published is None else published.artwork_ids[: self.size]

    def _popular(self, ts_ms: int) -> Iterator[int]:
        """The first item of each of the ``size`` most popular titles released by ``ts_ms``."""
        catalog, count = self.catalog, 0
        for title in self._by_popularity:
            if count == self.size:
                return
            if catalog.is_released(title, ts_ms):
                count += 1
                yield catalog.titles[title].items[0]

    def take_impressions(self) -> list[Impression]:
        """The home screens seen since the last call."""
        taken, self.impressions = self.impressions, []
        return taken


class HomeViewer(Viewer):
    """A :class:`~pipeline.sim.viewing.Viewer` who starts each session on ``home``.

    Parameters
    ----------
    profile, catalog, seed, start_ms, end_ms
        As for the open-loop viewer, whose draws come from ``seed``.
    home
        The home screen, shared by all viewers.
    fit, liking
        The viewer's :func:`hidden_fit` and :func:`hidden_liking` of each title.
    rng
        The generator of the closed loop's own draws for this viewer.
    weekly_churn
        Weekly churn hazard at satisfaction 0 and at satisfaction 1.
    appeal
        The viewer's hidden appeal of an artwork (:mod:`pipeline.sim.artworks`):
        it multiplies the chance to click a slot shown with it. None: artworks change nothing.
    win_back_response
        Chance that a win-back message brings the viewer back (when they have not left, or
        left less than 14 days before).
    """

    def __init__(
        self,
        profile: UserProfile,
        catalog: Catalog,
        *,
        home: HomeScreen,
        fit: np.ndarray,
        liking: np.ndarray,
        rng: np.random.Generator,
        weekly_churn: tuple[float, float],
        seed: int,
        start_ms: int,
        end_ms: int,
        appeal: Callable[[str | None], float] | None = None,
        win_back_response: float = 0.0,
    ) -> None:
        super().__init__(profile, catalog, seed=seed, start_ms=start_ms, end_ms=end_ms)
        self.appeal = appeal
        self.win_back_response = win_back_response
        self._artworks: tuple[str | None, ...] = ()
        self.home = home
        self.fit = fit
        self.liking = liking
        self.draw = rng
        self.weekly_churn = weekly_churn
        self.satisfaction = 0.5
        self._patience = float(rng.exponential())  # the cumulative hazard borne before leaving
        self._hazard = 0.0  # per millisecond, at the last wear
        self._worn_until = 0  # patience is spent up to this event time
        # the draws of the answers to messages: their own stream, so that a holdout arm
        # leaves every other draw of the viewer as it is (paired comparisons)
        self._answers = np.random.default_rng([seed, 0xB0CE, zlib.crc32(profile.user_id.encode())])
        #: When the viewer left for good, once they did.
        self.left_ms: int | None = None
        self._surface = POPULAR
        self._row: list[int | None] = []
        self._best = 0.0  # the best title of the session so far: fit × fraction watched

    def visits(self, comeback: tuple[int, int] | None = None) -> Iterator[Event | int]:
        """The viewer's life: before each session the time it starts, then its events.

        The home screen is read when the generator is resumed after yielding a session's
        start time: the closed loop does so once every list published before it is known.
        The generator ends when the period ends or the viewer leaves (:attr:`left_ms`).
        ``comeback``: ``(message time, session start)`` of a viewer a message brought back
        (:meth:`answer`): their life from that session on, replacing the one before.
        """
        profile, bias = self.profile, self.home.bias
        since = max(profile.joined_ms, self.start_ms)
        start: int | None
        if comeback is not None:
            since, start = comeback
        elif profile.joined_ms >= self.start_ms:
            start = profile.joined_ms
        else:
            start = self._next_visit(
                self.start_ms - int(self.rng.random() * self.mean_gap_days * DAY_MS)
            )
        answered = comeback is not None  # they come to that session, whatever their patience
        while start is not None:
            if answered:
                answered = False
            elif self._wear(since, start):
                return
            yield start
            self._surface, self._row = self.home.show(profile.user_id, start)
            self._artworks = self.home.artworks(profile.user_id) if self._surface == FOR_YOU else ()
            self._best = 0.0
            relevance = float(bias[: len(self._row)] @ self._worth(start)) / bias.sum()
            session = self.session(start)
            yield from (event for event in session.events if event.ts_ms < self.stop_ms)
            outcome = _RELEVANCE_WEIGHT * relevance + (1.0 - _RELEVANCE_WEIGHT) * self._best
            self.satisfaction += _SATISFACTION_RATE * (outcome - self.satisfaction)
            if session.now_ms >= self.stop_ms:
                return
            since = session.now_ms
            start = self._next_visit(since)
        self._wear(since, self.stop_ms)

    def answer(self, kind: str, at_ms: int) -> int | None:
        """A message of type ``kind`` reaches the viewer at ``at_ms``: when they come back, if.

        Only ``win_back`` brings anyone back, and not a viewer gone for more than 14 days
        (see the module docstring). A viewer who comes back is present again: the closed
        loop replaces their life by ``visits((at_ms, start))``; the patience spent beyond
        ``at_ms`` is given back.
        """
        if kind != "win_back" or at_ms >= self.stop_ms:
            return None
        gone = self.left_ms is not None and self.left_ms <= at_ms
        if gone and at_ms - self.left_ms > _REACH_MS:  # type: ignore[operator]
            return None  # long gone: the message no longer reaches them
        if self._answers.random() >= self.win_back_response:
            return None
        low, high = _COMEBACK_MS
        start = at_ms + int(self._answers.integers(low, high))
        if start >= self.stop_ms:
            return None
        if gone:  # they subscribe again, with a patience of their own
            self._patience = float(self._answers.exponential())
            self.left_ms = None
        elif self.left_ms is not None:  # about to leave: what patience they had left at at_ms
            self._patience = self._hazard * (self.left_ms - at_ms)
            self.left_ms = None
        elif self._worn_until > at_ms:
            self._patience += self._hazard * (self._worn_until - at_ms)
        return start

    def _next_visit(self, after_ms: int) -> int | None:
        """The next session of the habits, skipped at a rate the satisfaction tells."""
        start = self.next_session_start(after_ms)
        while start is not None and self.draw.random() >= _VISIT_FLOOR + self.satisfaction:
            start = self.next_session_start(start)
        return start

    def _wear(self, since_ms: int, until_ms: int) -> bool:
        """Spend patience from ``since_ms`` to ``until_ms``; True if the viewer left then.

        The churn hazard of the current satisfaction wears the viewer's patience (drawn
        once: the same viewer bears the same total hazard whatever they are shown).
        """
        unhappy, happy = self.weekly_churn
        hazard = unhappy ** (1.0 - self.satisfaction) * happy**self.satisfaction / _WEEK_MS
        spent = hazard * (until_ms - since_ms)
        self._hazard = hazard
        if spent < self._patience:
            self._patience -= spent
            self._worn_until = until_ms
            return False
        self.left_ms = since_ms + int(self._patience / hazard)
        return True

    def _open(self, session: SessionRecorder, engagement: float) -> tuple[int, float] | None:
        """Open a title from the home screen, else search or browse; see the module docstring."""
        draw = self.draw
        if self.in_progress and draw.random() < _RESUME_SHARE * engagement:
            unfinished = list(self.in_progress)
            rank = min(int(draw.geometric(0.6)) - 1, len(unfinished) - 1)
            item = unfinished[-1 - rank]
            return self._click(session, item, "continue_watching", rank, play_chance=0.97)
        clicked = self._click_row(session.now_ms, engagement)
        if clicked is not None:
            rank, item = clicked
            liking = self.liking[self.catalog.items[item].title_index]
            artwork = self._artworks[rank] if rank < len(self._artworks) else None
            return self._click(
                session,
                item,
                self._surface,
                rank,
                play_chance=0.35 + 0.6 * liking,
                artwork_id=artwork,
            )
        elsewhere = draw.random()
        if elsewhere < _SEARCH_SHARE:
            return self._search(session, engagement)
        if elsewhere >= _SEARCH_SHARE + _TRENDING_SHARE:
            return None
        title = self._trending_title(session.now_ms)
        if title is None:
            return None
        rank = min(int(draw.geometric(0.35)) - 1, 39)
        item = self._item_of(title)
        return self._click(session, item, "trending", rank, play_chance=0.4 + 0.5 * engagement)

    def _click_row(self, now_ms: int, engagement: float) -> tuple[int, int] | None:
        """The slot and item the viewer clicks on the row shown, or None."""
        worth = self._worth(now_ms)
        chances = self.home.bias[: len(worth)] * _CLICK_MAX * worth**_CLICK_CURVE
        chances *= 0.4 + 0.6 * engagement
        if self._artworks and self.appeal is not None:
            appeal = self.appeal
            chances *= [appeal(artwork) for artwork in self._artworks[: len(worth)]] + [1.0] * (
                len(worth) - len(self._artworks)
            )
        hits = np.flatnonzero(self.draw.random(len(worth)) < chances)
        if not hits.size:
            return None
        rank = int(hits[0])
        clicked = self._row[rank]
        assert clicked is not None
        return rank, clicked

    def _worth(self, now_ms: int) -> np.ndarray:
        """What each slot of the row is worth to the viewer at ``now_ms``.

        The fit of its title; :data:`_WORN` of it for a title finished or under way; 0 for
        an unknown item or a title not yet released.
        """
        catalog = self.catalog
        worth = np.zeros(len(self._row))
        for rank, item in enumerate(self._row):
            if item is None:
                continue
            title = catalog.items[item].title_index
            if catalog.is_released(title, now_ms):
                worn = title in self.completed or item in self.in_progress
                worth[rank] = self.fit[title] * (_WORN if worn else 1.0)
        return worth

    def _watch(
        self, session: SessionRecorder, item: int, position: float, engagement: float
    ) -> bool:
        """Watch as the open-loop viewer does, at an attention the fit tells; note the outcome."""
        entry = self.catalog.items[item]
        fit, duration = self.fit[entry.title_index], entry.duration_s
        attention = engagement * (_ATTENTION_FLOOR + (1.0 - _ATTENTION_FLOOR) * fit)
        finished = super()._watch(session, item, position, attention)
        reached = duration if finished else self.in_progress.get(item, position)
        self._best = max(self._best, fit * (reached - position) / max(duration - position, 1.0))
        return finished
