"""A synthetic video catalog: films and series episodes with genres, Zipf popularity and releases.

Viewers choose a :class:`Title` (a film, or a series they start or continue) and play its
:class:`Item` s (the film itself, or the episodes in order). Title popularity follows a
Zipf-like law. About one title in eight is released during the simulated period: it is
promoted (more popular than the back catalogue) and the viewers' trending row shows it
while it is new, so that "trending" means something. Everything is drawn from the seed:
the same arguments give the same catalog.

Examples
--------
>>> catalog = Catalog(size=600, seed=7, start_ms=0, end_ms=30 * 86_400_000)
>>> len(catalog.items), catalog.items[0].item_id == catalog.records()[0]["item_id"]
(600, True)
>>> sorted(catalog.records()[0])
['duration_s', 'genres', 'item_id', 'title']
"""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

__all__ = ["GENRES", "GENRE_SHARE", "Catalog", "Item", "Title"]

GENRES: tuple[str, ...] = (
    "action", "adventure", "animation", "comedy", "crime", "documentary",
    "drama", "family", "fantasy", "horror", "kids", "music",
    "mystery", "reality", "romance", "sci-fi", "sports", "thriller",
)  # fmt: skip
"""The genres of the catalog; viewers' tastes are weights over them, in this order."""

GENRE_SHARE = np.array([9, 5, 4, 11, 6, 4, 13, 5, 4, 5, 3, 2, 5, 3, 6, 5, 4, 6]) / 100.0
"""How common each genre is, among titles and among viewers' favourite genres."""

_ADJECTIVES = (
    "Silent Broken Golden Hidden Last Lost Midnight Northern Crimson Electric Hollow Wild "
    "Burning Frozen Secret Distant Quiet Savage Bright Fallen Iron Paper Velvet Glass "
    "Restless Sleeping Endless Forgotten Scarlet Little Final Rising Strange Lonely Brave "
    "Wicked Gentle Shattered Crooked Sunken Second Blue Black White Royal Copper Stolen"
).split()
_NOUNS = (
    "Harbor Kingdom River Signal Garden Empire Horizon Frontier Mirror Orbit Station Valley "
    "Shadow Summer Winter Island Circuit Machine Dynasty Canyon Lantern Compass Tide Forest "
    "Citadel Protocol Vineyard Academy Carnival Desert Voyage Witness Legacy Paradise "
    "Highway Labyrinth Outpost Reckoning Heist Heart Crown Storm Ember Anthem Diary Doctor "
    "Detective Family Kitchen Orchestra League Planet Ocean Comet Dragon Castle"
).split()
_SEQUELS = ("", " II", " III", " IV", " V")
_RELEASED_SHARE = 0.12  # titles released during the simulated period
_SERIES_SHARE = 0.3  # titles that are series rather than films
_ZIPF_EXPONENT = 0.65
_ZIPF_OFFSET = 8.0  # flattens the very head of the popularity curve
_NEW_RELEASE_BOOST = 1.5  # releases are promoted: more popular than the back catalogue


@dataclass(frozen=True, slots=True)
class Title:
    """A film or a series: what a viewer chooses; its items are what they play, in order."""

    name: str
    genres: tuple[int, ...]
    popularity: float
    release_ms: int
    items: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Item:
    """A playable item: a film, or one episode of a series (``episode`` counts from 0)."""

    item_id: str
    title: str
    genres: tuple[int, ...]
    duration_s: float
    title_index: int
    episode: int

    def to_record(self) -> dict[str, object]:
        """Return the item as an ``ott.catalog`` record."""
        return {
            "item_id": self.item_id,
            "title": self.title,
            "genres": [GENRES[g] for g in self.genres],
            "duration_s": self.duration_s,
        }


class Catalog:
    """``size`` items drawn from ``seed``; titles released up to ``end_ms``.

    Parameters
    ----------
    size
        Number of playable items (films plus episodes), at least 1.
    seed
        Seed of every random draw.
    start_ms, end_ms
        The simulated period, epoch milliseconds: new releases fall inside it.
    """

    def __init__(self, *, size: int, seed: int, start_ms: int, end_ms: int) -> None:
        if size < 1:
            raise ValueError(f"catalog size must be at least 1, got {size}")
        rng = np.random.default_rng([seed, 0xCA7A106])
        self.titles: list[Title] = []
        self.items: list[Item] = []
        self._build(rng, size, start_ms, end_ms)
        self._index_by_genre()
        self._index_releases()
        self._index_words()

    def _build(self, rng: np.random.Generator, size: int, start_ms: int, end_ms: int) -> None:
        shapes = _title_shapes(rng, size)
        count = len(shapes)
        names = _title_names(rng, count)
        popularity = 1.0 / (rng.permutation(count) + _ZIPF_OFFSET) ** _ZIPF_EXPONENT
        released = rng.random(count) < _RELEASED_SHARE
        release_ms = np.where(
            released,
            rng.integers(start_ms, max(end_ms, start_ms + 1), count),
            start_ms - rng.integers(86_400_000, 20 * 365 * 86_400_000, count),
        )
        popularity = np.where(released, popularity * _NEW_RELEASE_BOOST, popularity)
        for index, (episodes, per_season) in enumerate(shapes):
            genres = _draw_genres(rng)
            durations = _draw_durations(rng, episodes)
            first = len(self.items)
            self.titles.append(
                Title(
                    name=names[index],
                    genres=genres,
                    popularity=float(popularity[index]),
                    release_ms=int(release_ms[index]),
                    items=tuple(range(first, first + len(durations))),
                )
            )
            self.items.extend(
                _make_item(names[index], genres, duration, index, episode, per_season)
                for episode, duration in enumerate(durations)
            )

    def _index_by_genre(self) -> None:
        members: list[list[int]] = [[] for _ in GENRES]
        for index, title in enumerate(self.titles):
            for genre in title.genres:
                members[genre].append(index)
        self._genre_titles = members
        self._genre_cumulative = [
            list(accumulate(self.titles[t].popularity for t in titles)) for titles in members
        ]
        self._all_cumulative = list(accumulate(t.popularity for t in self.titles))

    def _index_releases(self) -> None:
        order = sorted(range(len(self.titles)), key=lambda t: self.titles[t].release_ms)
        self._release_order = order
        self._release_times = [self.titles[t].release_ms for t in order]

    def _index_words(self) -> None:
        self._word_counts = Counter(
            word for title in self.titles for word in set(title.name.lower().split())
        )

    def popular_title(self, genre: int | None, u: float) -> int:
        """Return the title at quantile ``u`` of popularity in ``genre`` (None: in all titles).

        Drawing ``u`` uniformly picks titles in proportion to their popularity; a genre
        without titles falls back to all titles.
        """
        if genre is None or not self._genre_titles[genre]:
            cumulative, titles = self._all_cumulative, None
        else:
            cumulative, titles = self._genre_cumulative[genre], self._genre_titles[genre]
        position = min(bisect.bisect_right(cumulative, u * cumulative[-1]), len(cumulative) - 1)
        return position if titles is None else titles[position]

    def released_between(self, lo_ms: int, hi_ms: int) -> list[int]:
        """Return the titles released in ``[lo_ms, hi_ms)``, oldest release first."""
        times = self._release_times
        lo, hi = bisect.bisect_left(times, lo_ms), bisect.bisect_left(times, hi_ms)
        return self._release_order[lo:hi]

    def is_released(self, title: int, ts_ms: int) -> bool:
        """Whether ``title`` can be watched at ``ts_ms``."""
        return self.titles[title].release_ms <= ts_ms

    def search(self, title: int, rng: random.Random) -> tuple[str, int]:
        """Return a query a viewer might type to find ``title``, and how many titles match it.

        Viewers type the whole name, one of its words, a prefix, or the genre; one
        search in twelve has a typo and finds nothing.
        """
        name = self.titles[title].name.lower()
        words = name.split()
        kind = rng.random()
        if kind < 1 / 12:
            word = rng.choice(words)
            return word[:1] + word[2:] + word[1:2] if len(word) > 2 else word + "q", 0
        if kind < 0.4:
            return name, min(self._word_counts[w] for w in words)
        if kind < 0.7:
            word = rng.choice(words)
            return word, self._word_counts[word]
        if kind < 0.85:
            word = max(words, key=len)
            prefix = word[: rng.randint(3, max(3, len(word) - 1))]
            return prefix, sum(n for w, n in self._word_counts.items() if w.startswith(prefix))
        genre = rng.choice(self.titles[title].genres)
        return GENRES[genre], len(self._genre_titles[genre])

    def records(self) -> list[dict[str, object]]:
        """Return every item as an ``ott.catalog`` record, in catalog order."""
        return [item.to_record() for item in self.items]


def _title_shapes(rng: np.random.Generator, size: int) -> list[tuple[int, int]]:
    """Draw ``(episodes, episodes per season)`` of each title, adding up to ``size`` items.

    A film is ``(1, 1)``; a series has one to three seasons of 6–10 episodes.
    """
    shapes: list[tuple[int, int]] = []
    remaining = size
    while remaining > 0:
        if rng.random() < _SERIES_SHARE:
            per_season = int(rng.integers(6, 11))
            episodes = min(int(rng.integers(1, 4)) * per_season, remaining)
        else:
            per_season = episodes = 1
        shapes.append((episodes, per_season) if episodes > 1 else (1, 1))
        remaining -= episodes
    return shapes


def _title_names(rng: np.random.Generator, count: int) -> list[str]:
    """Draw ``count`` distinct two-word names; a large catalog gets sequels too."""
    pairs = len(_ADJECTIVES) * len(_NOUNS)
    order = rng.permutation(pairs)
    names = []
    for index in range(count):
        adjective, noun = divmod(int(order[index % pairs]), len(_NOUNS))
        sequel = _SEQUELS[min(index // pairs, len(_SEQUELS) - 1)]
        names.append(f"{_ADJECTIVES[adjective]} {_NOUNS[noun]}{sequel}")
    return names


def _draw_genres(rng: np.random.Generator) -> tuple[int, ...]:
    """Draw one to three distinct genres, the common ones more often."""
    count = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
    return tuple(int(g) for g in rng.choice(len(GENRES), size=count, replace=False, p=GENRE_SHARE))


def _draw_durations(rng: np.random.Generator, episodes: int) -> list[float]:
    """Draw durations in seconds: a film of 80–180 min, or episodes of 20–60 min."""
    if episodes == 1:
        minutes = [float(np.clip(rng.lognormal(math.log(105), 0.2), 80, 180))]
    else:
        typical = float(rng.choice([22.0, 30.0, 45.0, 55.0]))
        minutes = list(np.clip(typical + rng.normal(0, 3, episodes), 20, 60))
    return [round(float(m) * 60.0, 1) for m in minutes]


def _make_item(
    name: str, genres: tuple[int, ...], duration_s: float, title: int, episode: int, per_season: int
) -> Item:
    """Make the ``episode`` -th item of a title: the film itself when seasons have one episode."""
    if per_season == 1:
        return Item(f"film-{title:05d}", name, genres, duration_s, title, 0)
    season, number = divmod(episode, per_season)
    return Item(
        f"show-{title:05d}-s{season + 1:02d}e{number + 1:02d}",
        f"{name} S{season + 1} E{number + 1}",
        genres,
        duration_s,
        title,
        episode,
    )
