"""Damage a real JSON value anywhere: every kind of part it holds, replaced by any JSON value.

A decoder of records or stored states must refuse what no release wrote with a reason and
never raise anything else: one record that raises is a poison pill. Shallow fuzzing of
top-level fields does not reach a map three levels down that turns out to be a list; this
draws one *kind* of part (a path, list positions merged) uniformly among all those the
real values hold, one value holding it, and a JSON value to put there.

>>> sorted(holding([{"a": [{"b": 1}, {"b": 2, "c": None}]}]), key=repr)
[('a', -1), ('a', -1, 'b'), ('a', -1, 'c'), ('a',)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from hypothesis import strategies as st

#: A path's step into a list: any of its elements.
EACH = -1

#: A JSON value a damaged or foreign record could hold anywhere (orjson reads 64-bit integers).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=4)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


def paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every part of a decoded JSON ``value``, list positions as :data:`EACH`."""
    yield path
    if isinstance(value, dict):
        for key, part in value.items():
            yield from paths(part, (*path, key))
    elif isinstance(value, list):
        for part in value:
            yield from paths(part, (*path, EACH))


def holding(values: Sequence[Any]) -> dict[tuple[Any, ...], list[Any]]:
    """The values holding each path, for every path but the whole that some value holds."""
    found: dict[tuple[Any, ...], list[Any]] = {}
    for value in values:
        for path in set(paths(value)) - {()}:
            found.setdefault(path, []).append(value)
    return found


def of_its_kind(value: Any) -> st.SearchStrategy[Any]:
    """Any value of ``value``'s JSON type (the extremes included), or any JSON value."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(-(2**63), 2**64 - 1)
    if isinstance(value, float):
        return st.floats(allow_nan=False, allow_infinity=False)
    if isinstance(value, str):
        return st.text(max_size=8)
    return json_values


def replace_at(
    data: st.DataObject, value: Any, path: tuple[Any, ...], new: Callable[[Any], Any]
) -> Any:
    """``value`` with the part at ``path`` (drawn from ``data`` at each list) ``new(part)``."""
    if not path:
        return new(value)
    step, rest = path[0], path[1:]
    if step != EACH:
        return {**value, step: replace_at(data, value[step], rest, new)}
    held = [i for i, part in enumerate(value) if rest in set(paths(part))]
    i = data.draw(st.sampled_from(held))
    return [*value[:i], replace_at(data, value[i], rest, new), *value[i + 1 :]]


def damaged(data: st.DataObject, values: dict[tuple[Any, ...], list[Any]]) -> Any:
    """One of the values, with one kind of part (drawn uniformly) replaced by a JSON value.

    A number, text or boolean is as often replaced by any value of its own type, extremes
    included: a decoder that checks types is then reached past them. ``values``:
    :func:`holding` of the real values.
    """
    path = data.draw(st.sampled_from(sorted(values, key=repr)))
    value = data.draw(st.sampled_from(values[path]))
    return replace_at(data, value, path, lambda part: data.draw(json_values | of_its_kind(part)))
