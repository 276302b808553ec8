"""``ottscore kpis``: the KPI windows of an events file, as partitioned workers compute them.

The records are placed on ``partitions`` as Kafka's default partitioner places them, each
partition's windows are computed by its own :class:`~pipeline.kpis.windows.PartitionKpis`
(in file order, with the allowed lateness), and the partitions' counts are added up
(:mod:`pipeline.kpis.combine`). Each event id of a user counts once, as the workers
de-duplicate client retries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import Settings
from pipeline.core.events import EventDecoder
from pipeline.core.partitioning import partition_for
from pipeline.kpis.combine import kpi_records, return_records
from pipeline.kpis.windows import PartitionKpis, ReturnCounts, WindowCounts
from pipeline.offline.evaluate import read_event_file
from pipeline.offline.runner import unique_events

__all__ = ["kpis_of_file"]


def kpis_of_file(
    path: str | Path, *, settings: Settings, partitions: int = 1, lateness_s: float | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """``(window records, 7-day return records, late events)`` of an events file.

    The lateness is ``settings.kpi_lateness_s`` unless given; sessions end after
    ``settings.session_gap_s``, as in the workers.
    """
    decoder = EventDecoder.from_settings(settings)
    events = read_event_file(path, decoder=decoder)
    lateness_ms = int((settings.kpi_lateness_s if lateness_s is None else lateness_s) * 1000)
    gap_ms = int(settings.session_gap_s * 1000)
    parts = [
        PartitionKpis(lateness_ms=lateness_ms, session_gap_ms=gap_ms) for _ in range(partitions)
    ]
    closed: list[WindowCounts | ReturnCounts] = []
    for event in unique_events(events.records, decoder):
        parts[partition_for(event.user_id.encode(), partitions)].add(event, arms={})
    for part in parts:
        closed.extend(part.close(final=True))
    windows = kpi_records(c for c in closed if isinstance(c, WindowCounts))
    returns = return_records(c for c in closed if isinstance(c, ReturnCounts))
    return windows, returns, sum(part.late for part in parts)
