"""The partitions' window counts added up into one KPI record per window and scope.

Users live on one partition, so every count of a window adds up exactly across partitions,
active users included. :func:`kpi_records` and :func:`return_records` add up a whole set
at once (``ottscore kpis`` over a file); :class:`KpiCombiner` does it as the workers'
partial records arrive (the combining agent of the worker), and gives each window once
every partition has closed it. A record's ``key`` is stable (window, start, scope), so a
window given again after a crash replaces itself.

>>> from pipeline.kpis.windows import WindowCounts
>>> parts = [WindowCounts("hour", 0, ("all",), active_users=2, clicks=4, click_plays=1),
...          WindowCounts("hour", 0, ("all",), active_users=1, clicks=0, watch_s=30.0)]
>>> [(r["key"], r["active_users"], r["click_play_conversion"], r["watch_s_per_active_user"])
...  for r in kpi_records(parts)]
[('hour/1970-01-01T00:00:00.000Z/all', 3, 0.25, 10.0)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from pipeline.core.events import format_ts
from pipeline.experiments.live_results import ResultsCombiner
from pipeline.kpis.windows import COUNTS, DAY_MS, RETURN_MS, WINDOWS, ReturnCounts, WindowCounts

__all__ = ["COUNTS", "KpiCombiner", "PartialsCombiner", "kpi_records", "return_records"]


def _ratio(hits: float, trials: float) -> float | None:
    return hits / trials if trials else None


def kpi_records(counts: Iterable[WindowCounts]) -> list[dict[str, Any]]:
    """One record per (size, start, scope): the counts added up, and the ratios, in order."""
    added: dict[tuple[str, int, tuple[str, ...]], dict[str, Any]] = {}
    for part in counts:
        key = (part.size, part.start_ms, part.scope)
        total = added.setdefault(key, dict.fromkeys(COUNTS, 0))
        for name in COUNTS:
            total[name] += getattr(part, name)
    records = []
    for (size, start, scope), total in sorted(added.items(), key=lambda kv: (kv[0][1], kv[0])):
        records.append(
            {
                "key": f"{size}/{format_ts(start)}/{'/'.join(scope)}",
                "window": size,
                "start": format_ts(start),
                "end": format_ts(start + WINDOWS[size]),
                "scope": list(scope),
                **total,
                "click_play_conversion": _ratio(total["click_plays"], total["clicks"]),
                "search_play_success": _ratio(total["search_plays"], total["searches"]),
                "completion_rate": _ratio(total["completions"], total["play_starts"]),
                "watch_s_per_active_user": _ratio(total["watch_s"], total["active_users"]),
                "schema_version": 1,
            }
        )
    return records


def return_records(counts: Iterable[ReturnCounts]) -> list[dict[str, Any]]:
    """The 7-day return of each day window and scope, added up across partitions."""
    added: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    for part in counts:
        total = added.setdefault((part.start_ms, part.scope), [0, 0])
        total[0] += part.active_users
        total[1] += part.returned
    return [
        {
            "key": f"return_7d/{format_ts(start)}/{'/'.join(scope)}",
            "window": "return_7d",
            "start": format_ts(start),
            "end": format_ts(start + DAY_MS + RETURN_MS),
            "scope": list(scope),
            "active_users": active,
            "returned": back,
            "return_7d": _ratio(back, active),
            "schema_version": 1,
        }
        for (start, scope), (active, back) in sorted(added.items())
    ]


class KpiCombiner:
    """Adds up the partial records of ``partitions`` partitions (``kpi_partial`` schema).

    A window is given once every partition has closed it (its ``released_ms`` passed the
    window's end plus ``follow_ms``; a 7-day return, the end of its week): all its counts
    are in by then. A record of a partition beyond ``partitions`` raises the count (each
    partition publishes a record at its first event). A partition's record sent again
    (its worker restarted) replaces its counts; one for a window already given is
    ignored. The state (:meth:`to_bytes`) is what the combining agent stores.

    >>> combiner = KpiCombiner(partitions=2)
    >>> part = {"window": "hour", "start_ms": 0, "scope": ["all"], "active_users": 1,
    ...         "sessions": 1, "play_starts": 0, "clicks": 2, "click_plays": 1, "searches": 0,
    ...         "search_plays": 0, "completions": 0, "watch_s": 0.0}
    >>> combiner.feed({"partition": 0, "released_ms": 5_400_000, "follow_ms": 1_800_000,
    ...                "windows": [part], "returns": []})
    []
    >>> [(r["key"], r["active_users"], r["click_play_conversion"]) for r in combiner.feed(
    ...     {"partition": 1, "released_ms": 5_400_000, "follow_ms": 1_800_000,
    ...      "windows": [part], "returns": []})]
    [('hour/1970-01-01T00:00:00.000Z/all', 2, 0.5)]
    """

    def __init__(self, partitions: int) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, not {partitions}")
        self.partitions = partitions
        #: Per partition, the event time up to which it closed its windows.
        self.released: dict[int, int] = {}
        #: Everything closing at or before this was given.
        self.given_ms = -1
        self.follow_ms = 0
        self._windows: dict[tuple[str, int, tuple[str, ...]], dict[int, list[float]]] = {}
        self._returns: dict[tuple[int, tuple[str, ...]], dict[int, list[int]]] = {}

    def feed(self, record: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Take one partial record; the KPI records (windows, then returns) now complete."""
        partition = int(record["partition"])
        if partition < 0:
            raise ValueError(f"partition {partition}")
        if partition >= self.partitions:  # the topic has more: wait for them all from now on
            self.partitions = partition + 1
        self.follow_ms = int(record["follow_ms"])
        for window in record["windows"]:
            key = (str(window["window"]), int(window["start_ms"]), tuple(window["scope"]))
            if self._window_close(key[0], key[1]) > self.given_ms:
                self._windows.setdefault(key, {})[partition] = [window[n] for n in COUNTS]
        for back in record["returns"]:
            day, scope = int(back["start_ms"]), tuple(back["scope"])
            if day + DAY_MS + RETURN_MS > self.given_ms:
                self._returns.setdefault((day, scope), {})[partition] = [
                    int(back["active_users"]),
                    int(back["returned"]),
                ]
        released = int(record["released_ms"])
        self.released[partition] = max(released, self.released.get(partition, released))
        if len(self.released) < self.partitions:
            return []
        final = min(self.released.values())
        if final <= self.given_ms:
            return []
        self.given_ms = final
        return self._give(final)

    def _window_close(self, size: str, start: int) -> int:
        return start + WINDOWS[size] + self.follow_ms

    def _give(self, final: int) -> list[dict[str, Any]]:
        due = [key for key in self._windows if self._window_close(key[0], key[1]) <= final]
        parts = [  # in partition order: the same sums, to the bit, whatever the arrivals
            WindowCounts(size, start, scope, *values)  # type: ignore[arg-type]
            for size, start, scope in due
            for _, values in sorted(self._windows.pop((size, start, scope)).items())
        ]
        returned = [key for key in self._returns if key[0] + DAY_MS + RETURN_MS <= final]
        backs = [
            ReturnCounts(day, scope, *values)
            for day, scope in returned
            for _, values in sorted(self._returns.pop((day, scope)).items())
        ]
        return kpi_records(parts) + return_records(backs)

    # --- stored form ------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The combiner's state, stored by the agent (format 1, read by later releases)."""
        return orjson.dumps(
            {
                "format": 1,
                "partitions": self.partitions,
                "released": [[p, ms] for p, ms in sorted(self.released.items())],
                "given_ms": self.given_ms,
                "follow_ms": self.follow_ms,
                "windows": [
                    [size, start, list(scope), [[p, v] for p, v in parts.items()]]
                    for (size, start, scope), parts in self._windows.items()
                ],
                "returns": [
                    [day, list(scope), [[p, v] for p, v in parts.items()]]
                    for (day, scope), parts in self._returns.items()
                ],
            }  # fmt: skip
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, partitions: int) -> KpiCombiner:
        """A stored state, for ``partitions`` partitions now.

        A partition the state does not know is waited for.
        """
        obj = orjson.loads(data)
        if obj.get("format") != 1:
            raise ValueError(f"KPI combiner state of format {obj.get('format')!r}")
        combiner = cls(partitions)
        combiner.released = {int(p): int(ms) for p, ms in obj["released"] if int(p) < partitions}
        combiner.given_ms = int(obj["given_ms"])
        combiner.follow_ms = int(obj["follow_ms"])
        for size, start, scope, parts in obj["windows"]:
            combiner._windows[size, int(start), tuple(scope)] = {int(p): v for p, v in parts}
        for day, scope, parts in obj["returns"]:
            combiner._returns[int(day), tuple(scope)] = {int(p): v for p, v in parts}
        return combiner


#: What a record that is not a partial one raises in the combiners, however deep: refused.
_REFUSED = (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError)


class PartialsCombiner:
    """The combining agent's state: the KPI and the experiment-results combiners, fed as one.

    A partial record carries both the partition's closed windows and its experiment
    outcome changes. :meth:`feed` takes it whole or not at all: a record the results
    combiner refuses after the KPI combiner took its windows would otherwise leave those
    windows counted in memory, never published, and stored with the next good record.
    On a refusal both combiners go back to their state after the last record taken.

    >>> combiners = PartialsCombiner.from_stored(None, None, partitions=1)
    >>> combiners.feed(b'{"partition": 0, "released_ms": 0, "follow_ms": 0,'
    ...                b' "windows": [], "returns": [], "outcomes": [7]}')
    Traceback (most recent call last):
    ...
    ValueError: partial record refused (TypeError: cannot unpack non-iterable int object)
    >>> combiners.feed(b'{"partition": 0, "released_ms": 0, "follow_ms": 0,'
    ...                b' "windows": [], "returns": []}')
    ([], [])
    """

    def __init__(self, kpis: KpiCombiner, results: ResultsCombiner) -> None:
        self.kpis = kpis
        self.results = results
        self._keep()

    @classmethod
    def from_stored(
        cls, kpis: bytes | None, results: bytes | None, *, partitions: int
    ) -> PartialsCombiner:
        """The combiners stored by :meth:`to_bytes` (fresh ones where ``None``)."""
        return cls(
            KpiCombiner.from_bytes(kpis, partitions=partitions)
            if kpis
            else KpiCombiner(partitions),
            ResultsCombiner.from_bytes(results, partitions=partitions)
            if results
            else ResultsCombiner(partitions),
        )

    def feed(
        self, value: bytes, *, topic_partitions: int | None = None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The KPI records and the experiment results a partial record completes.

        Raises :class:`ValueError` (naming the defect) for a record that is not a partial
        one; the combiners are then as they were before it. With ``topic_partitions``
        (the events topic's partitions now), a record of a partition beyond them is
        refused too: taken, it would make every window wait for a partition that never
        publishes, and the combiners' stored state would keep them waiting.

        >>> combiners = PartialsCombiner.from_stored(None, None, partitions=1)
        >>> combiners.feed(b'{"partition": 7000000, "released_ms": 0, "follow_ms": 0,'
        ...                b' "windows": [], "returns": []}', topic_partitions=4)
        Traceback (most recent call last):
        ...
        ValueError: partial record refused (ValueError: partition 7000000 of an events topic of 4)
        """
        try:
            partial = orjson.loads(value)
            partition = int(partial["partition"])
            if topic_partitions is not None and partition >= topic_partitions:
                raise ValueError(f"partition {partition} of an events topic of {topic_partitions}")
            records = self.kpis.feed(partial)
            results = self.results.feed(
                partition,
                int(partial["released_ms"]),
                partial.get("outcomes", []),
                partial.get("experiments", {}),
            )
            self._keep()  # what cannot be stored is refused too (an integer past 64 bits)
        except _REFUSED as exc:
            kpis, results_state = self._stored
            self.kpis = KpiCombiner.from_bytes(kpis, partitions=self._partitions)
            self.results = ResultsCombiner.from_bytes(results_state, partitions=self._partitions)
            raise ValueError(f"partial record refused ({type(exc).__name__}: {exc})") from exc
        return records, results

    def _keep(self) -> None:
        self._partitions = max(self.kpis.partitions, self.results.partitions)
        self._stored = self.kpis.to_bytes(), self.results.to_bytes()

    def to_bytes(self) -> tuple[bytes, bytes]:
        """The two combiners' stored forms (KPI, results), as they are after the last feed."""
        return self._stored
