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

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import orjson
from hypothesis import strategies as st

from agents.devtools.throughput import Workload, bench_experiments, with_artworks
from pipeline.config import Settings
from pipeline.core.partitioning import partitioned
from pipeline.core.processor import Processor
from pipeline.offline.runner import drive

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


class Written(NamedTuple):
    """What processors wrote over a simulated run, as JSON values."""

    states: list[Any]  # each user's last stored state
    partials: list[Any]  # the KPI partial records with windows, returns or outcomes


@functools.cache
def written() -> Written:
    """States and partial records with every part: KPIs, artworks, CRM, two experiments."""
    workload = Workload.simulate(events=8000, users=200, items=200, seed=5)
    config = Settings(risk_medium=0.1, risk_high=0.2)
    processor = Processor(config, clock=lambda: 4_102_444_800.0)
    processor.load_catalog(with_artworks(workload.catalog))
    processor.load_experiments(bench_experiments(workload))
    states: dict[str, bytes] = {}
    partials: list[Any] = []

    def keep_states(changed: Any) -> None:
        states.update((user_id, data) for user_id, _, data in changed)

    def keep_partials(outputs: Any) -> None:
        partials.extend(orjson.loads(o.value) for o in outputs if o.kind == "kpi_partial")

    records = [(*record, 0) for record in partitioned(workload.records, config.topic_partitions)]
    drive(processor, records, outputs=keep_partials, states=keep_states)
    return Written(
        [orjson.loads(data) for _, data in sorted(states.items())],
        [p for p in partials if p["windows"] or p["returns"] or p.get("outcomes")],
    )
