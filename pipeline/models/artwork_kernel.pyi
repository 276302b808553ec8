"""Types of the compiled :mod:`pipeline.models.artwork_kernel` (its source: the ``.pyx``)."""

from typing import Any, TypeVar

_T = TypeVar("_T", bound=tuple[Any, ...])

MAX_PLANS: int

class Scorer:
    def __init__(self, bandit: Any) -> None: ...
    def set_own(self, where: str, artwork_id: str, factor: float) -> None: ...
    def set_tags(
        self, where: str, tag_counts: dict[str, list[float]], tags: tuple[str, ...]
    ) -> None: ...

def untracked(record: _T) -> _T: ...
def draws_of_bytes(key: bytes) -> tuple[float, float]: ...
def best(
    bandit: Any, context: tuple[str, ...], artworks: tuple[Any, ...], memo: dict[Any, Any]
) -> int: ...
def choose_list(
    bandit: Any,
    policy: str,
    context: tuple[str, ...],
    picks: list[Any],
    memo: dict[Any, Any],
    choice_type: type,
) -> list[Any]: ...
def pick_list(
    bandit: Any,
    policy: str,
    context: tuple[str, ...],
    item_ids: list[str],
    listed: list[Any],
    stickies: dict[str, Any],
    ts_ms: int,
    sticky_ms: int,
    max_sticky: int,
    prefix: bytes,
    suffix: bytes,
    memo: dict[Any, Any],
    shown_type: type,
) -> tuple[list[tuple[str, float] | None], list[Any]]: ...
