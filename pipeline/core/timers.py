"""Event-time timers: per-partition watermarks and the deadlines they pass.

The watermark of a partition is the largest event time accepted on it so far. A timer is
a ``(deadline, user_id, kind)``: it fires once the watermark of the user's partition is
at or past the deadline. Timers are kept in one heap per partition and moved lazily: a
session timer moves later with every event of its user, and re-scheduling a timer to a
later deadline only notes the new deadline. When the watermark reaches the entry in the
heap, :meth:`EventTimeTimers.expired` fires it if its deadline is still the current one
and otherwise pushes it again at the current one (a deadline moved earlier is pushed at
once). So a user active for a whole session costs a few heap operations instead of two
per event. A heap that grows past twice the live timers is compacted. Nothing here reads
the wall clock, so a replay fires the same timers at the same events as the live run
did, in the same order (deadline, then user, then kind).

A user whose state was evicted to the store can have its timers **parked**
(:meth:`EventTimeTimers.park`): they leave the heap and the user is kept only in a
bucket of :data:`PARK_MS` of event time, by its earliest deadline. Once the watermark
reaches the bucket, :meth:`EventTimeTimers.woken` hands the user back, so that its state
is read and its timers armed again before any of them is due: the store holds what the
timers were (they are a function of the state), and memory holds one reference to the
user's id instead of a heap entry and two dictionary entries per timer.

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

__all__ = ["EventTimeTimers", "PARK_MS"]

_PARK_SHIFT = 20
PARK_MS = 1 << _PARK_SHIFT
"""The event time a bucket of parked users spans (~17 min): a parked user is handed back
when the watermark reaches the start of its earliest deadline's bucket."""


def _bucket(timers: list[tuple[str, int]]) -> int:
    """The bucket of parked users that ``(kind, deadline)`` timers go to: their earliest's."""
    return min(deadline for _, deadline in timers) >> _PARK_SHIFT


class EventTimeTimers:
    """Deadlines in event time, one heap and one watermark per partition.

    The live and queued deadlines are kept per kind, by user: no key object per timer
    (~0.1 kB less a user than a ``(user, kind)`` tuple each, which a worker holding
    millions of evicted users' timers pays for every one of them).
    """

    __slots__ = ("_heaps", "_current", "_queued", "_watermarks", "_parked", "_buckets", "parked")

    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[int, str, str]]] = {}
        # of each kind: the live deadline of each user, and the earliest it has in a heap
        self._current: dict[str, dict[str, int]] = {}
        self._queued: dict[str, dict[str, int]] = {}
        self._watermarks: dict[int, int] = {}
        # of each partition: the parked users by bucket, and a heap of those buckets
        self._parked: dict[int, dict[int, set[str]]] = {}
        self._buckets: dict[int, list[int]] = {}
        #: How many users are parked.
        self.parked = 0

    def watermark(self, partition: int) -> int | None:
        """The largest event time seen on ``partition``, or None before the first event."""
        return self._watermarks.get(partition)

    def latest(self) -> int | None:
        """The largest watermark of all partitions, or None before any event."""
        return max(self._watermarks.values(), default=None)

    def advance(self, partition: int, ts_ms: int) -> None:
        """Move the watermark of ``partition`` forward to ``ts_ms`` (never backwards)."""
        if ts_ms > self._watermarks.get(partition, -1):
            self._watermarks[partition] = ts_ms

    def _of(self, kind: str) -> tuple[dict[str, int], dict[str, int]]:
        current = self._current.get(kind)
        if current is None:
            current = self._current[kind] = {}
            self._queued[kind] = {}
        return current, self._queued[kind]

    def schedule(self, partition: int, user_id: str, kind: str, deadline_ms: int) -> None:
        """Set the ``kind`` timer of ``user_id`` to ``deadline_ms``, replacing any earlier one."""
        current, queued = self._of(kind)
        current[user_id] = deadline_ms
        known = queued.get(user_id)
        if known is None or deadline_ms < known:
            queued[user_id] = deadline_ms
            heap = self._heaps.setdefault(partition, [])
            heapq.heappush(heap, (deadline_ms, user_id, kind))
            self._compact_if_stale(heap)

    def _compact_if_stale(self, heap: list[tuple[int, str, str]]) -> None:
        """Drop the stale entries of ``heap`` in place once it holds over twice the live ones."""
        queued = self._queued
        if len(heap) <= 2 * sum(map(len, queued.values())) + 1024:
            return
        heap[:] = [entry for entry in heap if queued[entry[2]].get(entry[1]) == entry[0]]
        heapq.heapify(heap)

    def cancel(self, user_id: str, kind: str) -> None:
        """Forget the ``kind`` timer of ``user_id``, if any."""
        current = self._current.get(kind)
        if current is not None:
            current.pop(user_id, None)

    def next_deadline(self, partition: int) -> int | None:
        """The earliest deadline (possibly stale) on ``partition``."""
        heap = self._heaps.get(partition)
        return heap[0][0] if heap else None

    def due(self, partition: int) -> bool:
        """Whether the watermark of ``partition`` reached its earliest deadline or parked bucket."""
        heap = self._heaps.get(partition)
        watermark = self._watermarks.get(partition, -1)
        if heap and heap[0][0] <= watermark:
            return True
        buckets = self._buckets.get(partition)
        if not buckets:
            return False
        return buckets[0] <= watermark >> _PARK_SHIFT

    def expired(self, partition: int) -> Iterator[tuple[str, str, int]]:
        """Pop and yield ``(user_id, kind, deadline)`` of every live timer the watermark passed."""
        heap = self._heaps.get(partition)
        if not heap:
            return
        watermark = self._watermarks.get(partition, -1)
        currents, queueds = self._current, self._queued
        while heap and heap[0][0] <= watermark:
            deadline, user_id, kind = heapq.heappop(heap)
            queued = queueds[kind]
            if queued.get(user_id) != deadline:
                continue  # superseded by an earlier entry of the same timer
            del queued[user_id]
            current = currents[kind]
            live = current.get(user_id)
            if live == deadline:
                del current[user_id]
                yield user_id, kind, deadline
            elif live is not None:  # moved later since it was pushed
                queued[user_id] = live
                heapq.heappush(heap, (live, user_id, kind))

    def drop_partition(self, partition: int) -> None:
        """Forget a partition (revoked in a rebalance): its heap, watermark and timers."""
        for _, user_id, kind in self._heaps.pop(partition, ()):
            self._current[kind].pop(user_id, None)
            self._queued[kind].pop(user_id, None)
        self._watermarks.pop(partition, None)
        self._buckets.pop(partition, None)
        self.parked -= sum(map(len, self._parked.pop(partition, {}).values()))

    def pending(self) -> int:
        """The number of live timers (parked ones not counted: see :attr:`parked`)."""
        return sum(map(len, self._current.values()))

    def of(self, user_id: str) -> list[tuple[str, int]]:
        """The live timers of ``user_id``: ``(kind, deadline)``, by kind."""
        return sorted(
            (kind, deadline)
            for kind, current in self._current.items()
            if (deadline := current.get(user_id)) is not None
        )

    def park(self, partition: int, user_id: str, timers: list[tuple[str, int]]) -> bool:
        """Park the live ``timers`` of ``user_id`` (all it has, as :meth:`of` gives them).

        Refused (False, nothing changed) when the earliest is due within the bucket the
        watermark is in: the user would be handed back at once.
        """
        bucket = _bucket(timers)
        if bucket <= self._watermarks.get(partition, -1) >> _PARK_SHIFT:
            return False
        currents, queueds = self._current, self._queued
        for kind, _ in timers:
            del currents[kind][user_id]
            queueds[kind].pop(user_id, None)  # its heap entries are stale from now on
        parked = self._parked.setdefault(partition, {})
        users = parked.get(bucket)
        if users is None:
            users = parked[bucket] = set()
            heapq.heappush(self._buckets.setdefault(partition, []), bucket)
        users.add(user_id)
        self.parked += 1
        self._compact_if_stale(self._heaps[partition])
        return True

    def unpark(self, partition: int, user_id: str, timers: list[tuple[str, int]]) -> bool:
        """Take ``user_id``, parked with ``timers``, out of the parked users; whether it was."""
        users = self._parked.get(partition, {}).get(_bucket(timers))
        if users is None or user_id not in users:
            return False
        users.remove(user_id)
        self.parked -= 1
        return True

    def woken(self, partition: int) -> list[str]:
        """Unpark and return the users of the buckets the watermark reached, in order.

        Arm their timers again (:meth:`schedule`) before :meth:`expired`, so that theirs
        fire in order with the others.
        """
        buckets = self._buckets.get(partition)
        mark = self._watermarks.get(partition, -1) >> _PARK_SHIFT
        woken: list[str] = []
        parked = self._parked.get(partition, {})
        while buckets and buckets[0] <= mark:
            users = parked.pop(heapq.heappop(buckets))
            self.parked -= len(users)
            woken.extend(sorted(users))
        return woken
