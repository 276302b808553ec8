"""Event-time timers: per-partition watermarks and the deadlines they pass.

The watermark of a partition is the largest event time accepted on it so far. A timer is
a ``(deadline, user_id, kind)``: it fires once the watermark of the user's partition is
at or past the deadline. Timers are kept in one heap per partition and invalidated
lazily: re-scheduling a user's timer of the same kind leaves the old heap entry in place,
and :meth:`EventTimeTimers.expired` drops entries whose deadline is no longer the
current one; a heap that grows past twice the live timers is compacted. Nothing here
reads the wall clock, so a replay fires the same timers at the same events as the live
run did.

Examples
--------
>>> timers = EventTimeTimers()
>>> timers.schedule(0, "u1", "session", 1_000)
>>> timers.schedule(0, "u1", "session", 5_000)   # u1 was active again: moves the deadline
>>> timers.advance(0, 4_000)
>>> list(timers.expired(0))
[]
>>> timers.advance(0, 5_000)
>>> list(timers.expired(0))
[('u1', 'session', 5000)]
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

__all__ = ["EventTimeTimers"]


class EventTimeTimers:
    """Deadlines in event time, one heap and one watermark per partition."""

    __slots__ = ("_heaps", "_current", "_watermarks")

    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[int, str, str]]] = {}
        self._current: dict[tuple[str, str], int] = {}
        self._watermarks: dict[int, int] = {}

    def watermark(self, partition: int) -> int | None:
        """The largest event time seen on ``partition``, or None before the first event."""
        return self._watermarks.get(partition)

    def advance(self, partition: int, ts_ms: int) -> None:
        """Move the watermark of ``partition`` forward to ``ts_ms`` (never backwards)."""
        if ts_ms > self._watermarks.get(partition, -1):
            self._watermarks[partition] = ts_ms

    def schedule(self, partition: int, user_id: str, kind: str, deadline_ms: int) -> None:
        """Set the ``kind`` timer of ``user_id`` to ``deadline_ms``, replacing any earlier one."""
        self._current[(user_id, kind)] = deadline_ms
        heap = self._heaps.setdefault(partition, [])
        heapq.heappush(heap, (deadline_ms, user_id, kind))
        if len(heap) > 2 * len(self._current) + 1024:
            self._compact(heap)

    def _compact(self, heap: list[tuple[int, str, str]]) -> None:
        """Drop the stale entries of ``heap`` in place, so it stays proportional to live timers."""
        current = self._current
        heap[:] = [entry for entry in heap if current.get((entry[1], entry[2])) == entry[0]]
        heapq.heapify(heap)

    def cancel(self, user_id: str, kind: str) -> None:
        """Forget the ``kind`` timer of ``user_id``, if any."""
        self._current.pop((user_id, kind), None)

    def next_deadline(self, partition: int) -> int | None:
        """The earliest deadline (possibly stale) on ``partition``."""
        heap = self._heaps.get(partition)
        return heap[0][0] if heap else None

    def due(self, partition: int) -> bool:
        """Whether the earliest deadline of ``partition`` is at or behind its watermark."""
        heap = self._heaps.get(partition)
        return bool(heap) and heap[0][0] <= self._watermarks.get(partition, -1)

    def expired(self, partition: int) -> Iterator[tuple[str, str, int]]:
        """Pop and yield ``(user_id, kind, deadline)`` of every live timer the watermark passed."""
        heap = self._heaps.get(partition)
        if not heap:
            return
        watermark = self._watermarks.get(partition, -1)
        current = self._current
        while heap and heap[0][0] <= watermark:
            deadline, user_id, kind = heapq.heappop(heap)
            if current.get((user_id, kind)) == deadline:
                del current[(user_id, kind)]
                yield user_id, kind, deadline

    def drop_partition(self, partition: int) -> None:
        """Forget a partition (revoked in a rebalance): its heap, watermark and live timers."""
        for _, user_id, kind in self._heaps.pop(partition, ()):
            self._current.pop((user_id, kind), None)
        self._watermarks.pop(partition, None)

    def pending(self) -> int:
        """The number of live timers."""
        return len(self._current)
