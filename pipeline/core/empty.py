"""One read-only empty map, shared by every user state whose map of a kind is empty.

A user state holds several maps that are empty for most users at rest: re-scores of a
silence, fields of a newer release, pending clicks, experiment outcomes. An empty ``dict``
takes 64 bytes; a worker holding 200,000 states would spend ~50 MB on them. Such a field
starts as :data:`EMPTY` instead, and its owner replaces it with a ``dict`` of its own when
it adds the first entry (an ``EMPTY`` has no way to be changed).

It is copied and pickled as itself, and compares equal to ``{}``:

>>> import copy, pickle
>>> copy.deepcopy(EMPTY) is EMPTY, pickle.loads(pickle.dumps(EMPTY)) is EMPTY
(True, True)
>>> EMPTY == {}, len(EMPTY), dict(EMPTY), "a" in EMPTY, {**EMPTY}
(True, 0, {}, False, {})
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final, NoReturn

__all__ = ["EMPTY", "EmptyMap"]


class EmptyMap(Mapping[Any, Any]):
    """A map with nothing in it, that nothing can change (see the module docstring)."""

    __slots__ = ()

    def __getitem__(self, key: object) -> NoReturn:
        raise KeyError(key)

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __hash__(self) -> int:  # immutable: a dataclass field may default to it
        return 0

    def __repr__(self) -> str:
        return "EMPTY"

    def __reduce__(self) -> str:
        return "EMPTY"  # copied and pickled as the module's one object


EMPTY: Final = EmptyMap()
