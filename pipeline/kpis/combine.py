"""The partitions' window counts added up into one KPI record per window and scope.

What the second stage does with the per-partition :class:`~pipeline.kpis.windows.WindowCounts`
of a window: add them (users live on one partition, so every count adds exactly) and derive
the ratios. :func:`kpi_records` does it for a whole set at once (``ottscore kpis`` over a
file); the record's ``key`` is stable (size, start, scope), so a window emitted again after
a crash replaces itself.

>>> from pipeline.kpis.windows import WindowCounts
>>> parts = [WindowCounts("hour", 0, ("all",), active_users=2, clicks=4, click_plays=1),
...          WindowCounts("hour", 0, ("all",), active_users=1, clicks=0, watch_s=30.0)]
>>> [(r["key"], r["active_users"], r["click_play_conversion"], r["watch_s_per_active_user"])
...  for r in kpi_records(parts)]
[('hour/1970-01-01T00:00:00.000Z/all', 3, 0.25, 10.0)]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline.core.events import format_ts
from pipeline.kpis.windows import WINDOWS, ReturnCounts, WindowCounts

__all__ = ["COUNTS", "kpi_records", "return_records"]

#: The counts a window record adds up across partitions.
COUNTS = ("active_users", "sessions", "play_starts", "clicks", "click_plays", "searches",
          "search_plays", "completions", "watch_s")  # fmt: skip


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
            "start": format_ts(start),
            "scope": list(scope),
            "active_users": active,
            "returned": back,
            "return_7d": _ratio(back, active),
        }
        for (start, scope), (active, back) in sorted(added.items())
    ]
