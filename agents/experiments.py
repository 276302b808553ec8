"""``ottscore experiment``: define, list and stop experiments on the experiments topic.

A definition is checked here exactly as the workers check it (:func:`parse_definition`,
then the registry of what the topic already holds), so a refusal is seen at once, with its
reason, rather than only counted by every worker. The topic is compacted and keyed by
experiment id: its latest record per id is the definition in force.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from agents.worker.compacted import CompactedReader
from pipeline.config import Settings
from pipeline.core.events import format_ts
from pipeline.experiments.definition import DefinitionRefused, Experiment, parse_definition
from pipeline.experiments.registry import ExperimentRegistry

__all__ = ["Defined", "create", "defined", "format_table", "stop"]


@dataclass(frozen=True, slots=True)
class Defined:
    """An experiment on the topic: its parsed definition and the JSON it was published as."""

    experiment: Experiment
    definition: dict[str, Any]


def defined(settings: Settings) -> dict[str, Defined]:
    """The experiments the topic holds, by id, as a worker reads them (refused ones left out)."""
    reader = CompactedReader(settings, settings.topic_experiments)
    try:
        raw = reader.read()
    finally:
        reader.close()
    registry = ExperimentRegistry()
    found: dict[str, Defined] = {}
    for value in raw:
        try:
            experiment = parse_definition(value)
            registry.register(experiment)
        except DefinitionRefused:
            continue
        assert isinstance(value, dict)
        found[experiment.id] = Defined(experiment, value)
    return found


def create(settings: Settings, text: bytes) -> Experiment:
    """Publish a new definition (or the same one again) after checking it against the topic.

    Raises
    ------
    DefinitionRefused
        With the reason a worker would refuse it for: the definition's own (``not_json``,
        ``schema``, ``weights_sum``, ...), or ``duplicate_id`` / ``salt_reused`` against the
        experiments already on the topic.
    """
    experiment = parse_definition(text)
    registry = ExperimentRegistry()
    for known in defined(settings).values():
        registry.register(known.experiment)
    registry.register(experiment)
    _publish(settings, [(experiment.id, orjson.loads(text))])
    return experiment


def stop(settings: Settings, experiment_id: str, *, at: str | None = None) -> Experiment:
    """Stop an experiment at event time ``at`` (RFC 3339; default: now).

    Raises
    ------
    KeyError
        When the topic holds no experiment ``experiment_id``.
    DefinitionRefused
        ``stop_before_start`` when ``at`` is not after the experiment's start.
    """
    known = defined(settings).get(experiment_id)
    if known is None:
        raise KeyError(experiment_id)
    definition = {**known.definition, "stop": at or format_ts(int(time.time() * 1000))}
    experiment = parse_definition(definition)
    _publish(settings, [(experiment_id, definition)])
    return experiment


def _publish(settings: Settings, definitions: Iterable[tuple[str, dict[str, Any]]]) -> None:
    from agents.devtools.produce import produce

    records = [(key.encode(), orjson.dumps(value)) for key, value in definitions]
    produce(settings, records, topic=settings.topic_experiments)


def format_table(experiments: Iterable[Experiment], *, now_ms: int) -> str:
    """One line per experiment: id, state at ``now_ms``, window, variants and their weights.

    >>> from pipeline.experiments.definition import Variant
    >>> e = Experiment("rail", "s", (Variant("control", 0.5, True), Variant("small", 0.5)),
    ...                start_ms=0, stop_ms=None, metrics=("return_7d",))
    >>> print(format_table([e], now_ms=1))
    id    state    start                     stop  variants
    rail  running  1970-01-01T00:00:00.000Z  -     control* 0.5, small 0.5
    """
    rows = [("id", "state", "start", "stop", "variants")]
    for e in sorted(experiments, key=lambda e: e.start_ms):
        state = (
            "scheduled" if now_ms < e.start_ms else "running" if e.active_at(now_ms) else "stopped"
        )
        variants = ", ".join(f"{v.name}{'*' if v.control else ''} {v.weight:g}" for v in e.variants)
        stop_at = "-" if e.stop_ms is None else format_ts(e.stop_ms)
        rows.append((e.id, state, format_ts(e.start_ms), stop_at, variants))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + "  "
        + row[4]
        for row in rows
    )
