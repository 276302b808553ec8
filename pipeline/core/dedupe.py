"""Per-user memory of recent event ids, to drop client retries: bounded in count and event time.

A client retry is the same event sent again: same ``event_id``, same ``user_id`` (so the
same partition and the same per-user state), same ``ts``. Each user keeps the fingerprints
of their most recent event ids, at most ``max_ids`` of them and none older (in event
time) than ``window_ms`` before the newest one. The memory lives inside the user's
state, so it is changelogged with it and survives a restart. Entries are pruned oldest
first; an id that arrives with an older ``ts`` than its neighbours is pruned with them.

Examples
--------
>>> ids = RecentIds(window_ms=600_000, max_ids=4)
>>> ids.seen("e1", 1_000), ids.seen("e1", 1_000), ids.seen("e2", 2_000)
(False, True, False)
>>> RecentIds.from_bytes(ids.to_bytes(), window_ms=600_000, max_ids=4).seen("e2", 2_000)
True
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque

__all__ = ["RecentIds"]

_ENTRY = struct.Struct("<Iq")  # (event-time seconds, 64-bit fingerprint of the event id)


def fingerprint(event_id: str) -> int:
    """Stable 64-bit fingerprint of an event id (the same in every process, unlike ``hash``).

    >>> fingerprint("e1") == fingerprint("e1") != fingerprint("e2")
    True
    """
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


class RecentIds:
    """The fingerprints of a user's most recent event ids, oldest first."""

    __slots__ = ("_entries", "_window_s", "_max_ids")

    def __init__(self, *, window_ms: int, max_ids: int) -> None:
        self._entries: deque[tuple[int, int]] = deque()
        self._window_s = window_ms // 1000
        self._max_ids = max_ids

    def __len__(self) -> int:
        return len(self._entries)

    def seen(self, event_id: str, ts_ms: int) -> bool:
        """Return True if this event id was seen within the window; otherwise remember it."""
        fp = fingerprint(event_id)
        entries = self._entries
        for _, known in entries:
            if known == fp:
                return True
        ts_s = ts_ms // 1000
        entries.append((ts_s, fp))
        horizon = ts_s - self._window_s
        while len(entries) > self._max_ids or entries[0][0] < horizon:
            entries.popleft()
        return False

    def to_bytes(self) -> bytes:
        """Pack the entries, 12 bytes each."""
        return b"".join(_ENTRY.pack(ts, fp) for ts, fp in self._entries)

    @classmethod
    def from_bytes(cls, data: bytes, *, window_ms: int, max_ids: int) -> RecentIds:
        """Unpack what :meth:`to_bytes` wrote."""
        ids = cls(window_ms=window_ms, max_ids=max_ids)
        ids._entries.extend(_ENTRY.iter_unpack(data))
        return ids
