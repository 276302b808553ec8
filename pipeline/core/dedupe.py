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
from array import array

__all__ = ["RecentIds"]

_ENTRY = struct.Struct("<Iq")  # (event-time seconds, 64-bit fingerprint of the event id)
_MAX_SECONDS = 2**32 - 1


def fingerprint(event_id: str) -> int:
    """Stable 64-bit fingerprint of an event id (the same in every process, unlike ``hash``).

    >>> fingerprint("e1") == fingerprint("e1") != fingerprint("e2")
    True
    """
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


class RecentIds:
    """The fingerprints of a user's most recent event ids, oldest first.

    Kept as two arrays of machine integers (event-time seconds, fingerprints) rather than
    a tuple of two Python ints per id: ~0.2 kB a user instead of ~1 kB, and a lookup is
    one scan in C.
    """

    __slots__ = ("_seconds", "_fingerprints", "_window_s", "_max_ids")

    def __init__(self, *, window_ms: int, max_ids: int) -> None:
        self._seconds = array("q")
        self._fingerprints = array("q")
        self._window_s = window_ms // 1000
        self._max_ids = max_ids

    def __len__(self) -> int:
        return len(self._seconds)

    def seen(self, event_id: str, ts_ms: int) -> bool:
        """Return True if this event id was seen within the window; otherwise remember it."""
        fp = fingerprint(event_id)
        fingerprints = self._fingerprints
        if fp in fingerprints:
            return True
        seconds = self._seconds
        ts_s = ts_ms // 1000
        seconds.append(ts_s)
        fingerprints.append(fp)
        horizon = ts_s - self._window_s
        n = len(seconds)
        gone = max(0, n - self._max_ids)  # the oldest beyond the count, then the too old
        while gone < n and seconds[gone] < horizon:
            gone += 1
        if gone:
            del seconds[:gone]
            del fingerprints[:gone]
        return False

    def to_bytes(self) -> bytes:
        """Pack the entries, 12 bytes each.

        The stored seconds are 32 bits wide: an event time past 2106-02-07 (the contract
        allows up to the year 9999) is stored as that limit. Such entries are then older
        than the window after a restart, so a retry of them across one is not recognised.
        """
        pack = _ENTRY.pack
        seconds = (min(ts_s, _MAX_SECONDS) for ts_s in self._seconds)
        return b"".join(map(pack, seconds, self._fingerprints))

    @classmethod
    def from_bytes(cls, data: bytes, *, window_ms: int, max_ids: int) -> RecentIds:
        """Unpack what :meth:`to_bytes` wrote."""
        ids = cls(window_ms=window_ms, max_ids=max_ids)
        for ts_s, fp in _ENTRY.iter_unpack(data):
            ids._seconds.append(ts_s)
            ids._fingerprints.append(fp)
        return ids
