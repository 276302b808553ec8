"""List policies of the closed loop: the real core, and the baselines it is measured against.

Each is a :data:`~pipeline.sim.closed_loop.ListPolicy`: called with a slice of events, it
returns the lists published after it.

- :class:`ProcessorLists`: the slice's records go through a
  :class:`~pipeline.core.processor.Processor` (by :func:`~pipeline.offline.runner.drive`);
  its ``personalization`` records are the lists.
- :class:`OracleLists`: the titles that best fit each user's hidden taste. It reads the
  simulation's hidden fit: a bound that no real policy reaches, for tests only.
- :class:`TrendingLists`: the titles that gained the most new viewers lately.
- :class:`RandomLists`: released titles drawn at random.
- :func:`no_lists`: nothing; every user keeps seeing the generic row (or no row).

The three baselines learn from the events alone which titles each user has started, and
publish to each user with an event in the slice the first item of ``k`` released titles
that user has not started, best first.

Examples
--------
>>> from pipeline.sim.closed_loop import ClosedLoop, ClosedLoopConfig
>>> loop = ClosedLoop(ClosedLoopConfig(users=20, days=7, seed=5))
>>> run = loop.run(OracleLists(loop, k=3))
>>> user, listed = next(iter(run.lists.items()))
>>> row = [profile.user_id for profile in loop.profiles].index(user)
>>> title = {item.item_id: item.title_index for item in loop.catalog.items}
>>> fits = [loop.fit[row, title[item_id]] for item_id in listed.item_ids]
>>> len(fits), fits == sorted(fits, reverse=True)
(3, True)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import orjson

from pipeline.core.events import Event, parse_ts
from pipeline.core.processor import Output, Processor
from pipeline.offline.runner import drive
from pipeline.sim.audience import DAY_MS
from pipeline.sim.closed_loop import ClosedLoop, Message, PublishedList, Slice, published_list
from pipeline.sim.synthetic_catalog import Catalog

__all__ = ["OracleLists", "ProcessorLists", "RandomLists", "TrendingLists", "no_lists"]


class ProcessorLists:
    """The lists a :class:`~pipeline.core.processor.Processor` publishes.

    Records are numbered from offset 0 on ``partition``, stamped with the end of their
    slice; :attr:`outputs` counts every output by kind.

    Parameters
    ----------
    processor
        The core, fed every record in order.
    catalog
        Catalog records to load into it first (``loop.catalog.records()``).
    """

    def __init__(
        self, processor: Processor, *, catalog: Iterable[object] = (), partition: int = 0
    ) -> None:
        processor.load_catalog(catalog)
        self.processor = processor
        self.partition = partition
        self.outputs: Counter[str] = Counter()
        #: Every ``ott.actions`` record published, as published (parsed).
        self.actions: list[dict[str, Any]] = []
        self._offset = 0

    def __call__(self, piece: Slice) -> list[PublishedList | Message]:
        """Process the slice's records; return the lists and messages the processor published."""
        published: list[PublishedList | Message] = []

        def take(outputs: Sequence[Output]) -> None:
            for output in outputs:
                self.outputs[output.kind] += 1
                if output.kind == "personalization":
                    published.append(published_list(output.value))
                elif output.kind == "action":
                    action = orjson.loads(output.value)
                    self.actions.append(action)
                    published.append(
                        Message(
                            action["user_id"],
                            action["type"],
                            parse_ts(action["ts"]),
                            action["status"] == "sent",
                        )
                    )

        first, self._offset = self._offset, self._offset + len(piece.records)
        records = [
            (key, value, self.partition, first + number, piece.end_ms)
            for number, (key, value) in enumerate(piece.records)
        ]
        drive(self.processor, records, outputs=take)
        return published


def no_lists(piece: Slice) -> list[PublishedList]:
    """Publish nothing.

    >>> no_lists(Slice(0, 1, [], []))
    []
    """
    return []


class _TitleLists:
    """A baseline: the first ``k`` titles of :meth:`_ranking` that a user may play, not started."""

    def __init__(self, catalog: Catalog, *, k: int) -> None:
        self.catalog = catalog
        self.k = k
        self._title_of = {item.item_id: item.title_index for item in catalog.items}
        self._started: defaultdict[str, set[int]] = defaultdict(set)

    def __call__(self, piece: Slice) -> list[PublishedList]:
        """Learn from the slice's events; return a list for each user with an event in it."""
        self._learn(self._new_viewers(piece.events), piece.end_ms)
        users = dict.fromkeys(event.user_id for event in piece.events)
        return [PublishedList(user, self._pick(user, piece.end_ms)) for user in users]

    def _new_viewers(self, events: Sequence[Event]) -> list[int]:
        """Note the titles each user starts; return the title of each first play by a user."""
        started = []
        for event in events:
            title = self._title_of.get(event.item_id or "")
            if event.type == "play" and title is not None:
                seen = self._started[event.user_id]
                if title not in seen:
                    seen.add(title)
                    started.append(title)
        return started

    def _learn(self, started: list[int], now_ms: int) -> None:
        """Learn from the titles just started by a new viewer (nothing, unless overridden)."""

    def _ranking(self, user_id: str) -> Iterable[int]:
        """Every title, best first for ``user_id``."""
        raise NotImplementedError

    def _pick(self, user_id: str, now_ms: int) -> tuple[str, ...]:
        catalog, started = self.catalog, self._started[user_id]
        picked: list[str] = []
        for title in self._ranking(user_id):
            if len(picked) == self.k:
                break
            if title not in started and catalog.is_released(title, now_ms):
                picked.append(catalog.items[catalog.titles[title].items[0]].item_id)
        return tuple(picked)


class OracleLists(_TitleLists):
    """The titles of best hidden fit for each user (reads ``loop.fit``: tests only)."""

    def __init__(self, loop: ClosedLoop, *, k: int = 10) -> None:
        super().__init__(loop.catalog, k=k)
        order = np.argsort(-loop.fit, axis=1, kind="stable")
        self._order = {profile.user_id: order[row] for row, profile in enumerate(loop.profiles)}

    def _ranking(self, user_id: str) -> Iterable[int]:
        return (int(title) for title in self._order[user_id])


class TrendingLists(_TitleLists):
    """The titles with the most new viewers, a count that halves every ``half_life_days``.

    Ties (at first, none has a viewer) go to the catalog's more popular title.
    """

    def __init__(self, catalog: Catalog, *, k: int = 10, half_life_days: float = 3.0) -> None:
        super().__init__(catalog, k=k)
        self._half_life_ms = half_life_days * DAY_MS
        self._viewers = np.zeros(len(catalog.titles))
        self._popularity = np.array([title.popularity for title in catalog.titles])
        self._at_ms: int | None = None
        self._order: list[int] = []

    def _learn(self, started: list[int], now_ms: int) -> None:
        if self._at_ms is not None:
            self._viewers *= 0.5 ** ((now_ms - self._at_ms) / self._half_life_ms)
        self._at_ms = now_ms
        np.add.at(self._viewers, np.array(started, dtype=np.int64), 1.0)
        self._order = np.lexsort((-self._popularity, -self._viewers)).tolist()

    def _ranking(self, user_id: str) -> Iterable[int]:
        return self._order


class RandomLists(_TitleLists):
    """Titles in a random order, drawn anew for each list from ``seed``."""

    def __init__(self, catalog: Catalog, *, k: int = 10, seed: int) -> None:
        super().__init__(catalog, k=k)
        self._rng = np.random.default_rng([seed, 0x7A4D0])

    def _ranking(self, user_id: str) -> Iterator[int]:
        return (int(title) for title in self._rng.permutation(len(self.catalog.titles)))
