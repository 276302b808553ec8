"""The items a partition knows: a dense index with their catalog metadata, for numpy ranking.

Items get an integer index the first time they are seen (in the catalog or in an event),
so that per-item quantities (popularity, factors, genres) live in numpy arrays that grow
by doubling. An item's genre row has one column per genre and sums to 1 (an item of two
genres is half of each). Items share a few combinations of genres (a 5,000-item catalog
has ~150), so the rows are kept once per combination and each item holds the number of
its combination: weighing every item's genres reads a few kilobytes, not the
items × genres matrix.

Examples
--------
>>> items = ItemIndex()
>>> items.add_catalog_item({"item_id": "m1", "title": "Heat", "genres": ["crime", "drama"],
...                         "duration_s": 10_200})
0
>>> items.index("m2"), len(items), items.title(0), items.genres(0)
(1, 2, 'Heat', ('crime', 'drama'))
>>> items.genre_scores(items.genre_vector({"drama": 3.0, "crime": 1.0})).tolist()
[0.5, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pipeline.serde.snapshots import stored_as

__all__ = ["GrowableArray", "ItemIndex"]


@stored_as("ItemIndex")
class ItemIndex:
    """Item ids ↔ dense indices, with titles, genres and durations when the catalog has them."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self.ids: list[str] = []
        self._titles: list[str | None] = []
        self._genres: list[tuple[str, ...]] = []
        self.durations_s: list[float | None] = []
        self._genre_ids: dict[str, int] = {}
        self._combinations: dict[tuple[int, ...], int] = {(): 0}  # genre columns -> number
        self._combination_rows = np.zeros((64, 8))  # genre row of each combination
        self._combination_of = GrowableArray(dtype=np.intp)  # per item

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def find(self, item_id: str) -> int | None:
        """The index of ``item_id``, or None if unknown (never adds it)."""
        return self._index.get(item_id)

    def index(self, item_id: str) -> int:
        """The index of ``item_id``, adding it (without metadata) when new."""
        found = self._index.get(item_id)
        if found is None:
            found = self._add(item_id, None, (), None)
        return found

    def add_catalog_item(self, item: Mapping[str, Any]) -> int:
        """Add or update an item from a catalog record ``{item_id, title, genres, duration_s}``.

        The record is one :func:`pipeline.core.catalog_items.catalog_item` validated (its
        genres lower-cased there, once); it is taken as it is.
        """
        item_id = str(item["item_id"])
        genres = tuple(item.get("genres") or ())
        duration = item.get("duration_s")
        found = self._index.get(item_id)
        if found is None:
            return self._add(item_id, item.get("title"), genres, duration)
        self._titles[found] = item.get("title")
        self._genres[found] = genres
        self._set_genre_row(found, genres)
        self.durations_s[found] = duration
        return found

    def _add(
        self, item_id: str, title: str | None, genres: tuple[str, ...], duration: float | None
    ) -> int:
        idx = len(self.ids)
        self._index[item_id] = idx
        self.ids.append(item_id)
        self._titles.append(title)
        self._genres.append(genres)
        self.durations_s.append(duration)
        self._set_genre_row(idx, genres)
        return idx

    def _set_genre_row(self, idx: int, genres: tuple[str, ...]) -> None:
        columns = tuple(self._genre_ids.setdefault(g, len(self._genre_ids)) for g in genres)
        number = self._combinations.get(columns)
        if number is None:
            number = self._combinations[columns] = len(self._combinations)
            rows, cols = self._combination_rows.shape
            if number >= rows or len(self._genre_ids) > cols:
                grown = np.zeros((2 * max(rows, number), max(cols, 2 * len(self._genre_ids))))
                grown[:rows, :cols] = self._combination_rows
                self._combination_rows = grown
            for column in columns:
                self._combination_rows[number, column] = 1.0 / len(columns)
        self._combination_of.ensure(idx)[idx] = number

    def title(self, idx: int) -> str:
        """The title of an item, or its id when the catalog does not name it."""
        return self._titles[idx] or self.ids[idx]

    def genres(self, idx: int) -> tuple[str, ...]:
        """The genres of an item (empty when unknown)."""
        return self._genres[idx]

    @property
    def genre_names(self) -> list[str]:
        """Genre names in column order of :meth:`genre_vector`."""
        return list(self._genre_ids)

    def genre_scores(self, vector: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Each item's genre row · ``vector`` (a vector over the genre columns).

        For every item, or for the items ``rows``. 0 for items without genres.
        """
        combinations = self._combination_rows[: len(self._combinations), : len(vector)] @ vector
        numbers = self._combination_of.view(len(self.ids))
        return combinations[numbers if rows is None else numbers[rows]]

    def genre_vector(self, affinity: Mapping[str, float]) -> np.ndarray:
        """A user's genre affinity as a vector over the genre columns, summing to 1."""
        vector = np.zeros(max(len(self._genre_ids), 1))
        for genre, value in affinity.items():
            column = self._genre_ids.get(genre)
            if column is not None:
                vector[column] = value
        total = vector.sum()
        return vector / total if total else vector


@stored_as("GrowableArray")
class GrowableArray:
    """An array indexed by item that grows by doubling; ``view(n)`` is its first n rows.

    >>> values = GrowableArray(2)
    >>> values.ensure(300)[300] = 1.0
    >>> values.data.shape, values.view(301)[300].tolist()
    ((512, 2), [1.0, 1.0])
    """

    __slots__ = ("data",)

    def __init__(self, *shape: int, dtype: type = np.float64) -> None:
        self.data: np.ndarray = np.zeros((256, *shape), dtype=dtype)

    def ensure(self, idx: int) -> np.ndarray:
        """The whole backing array, grown (zero-filled) until ``idx`` is a valid row."""
        if idx >= len(self.data):
            rows = max(2 * len(self.data), idx + 1)
            grown = np.zeros((rows, *self.data.shape[1:]), dtype=self.data.dtype)
            grown[: len(self.data)] = self.data
            self.data = grown
        return self.data

    def view(self, n: int) -> np.ndarray:
        """The first ``n`` rows (a view)."""
        self.ensure(max(n - 1, 0))
        return self.data[:n]
