"""``ottscore experiment report`` over an events file: the same assignment as the workers.

The file is run through the :class:`~pipeline.core.processor.Processor` with the experiment
definitions (as ``ottscore evaluate`` runs it), so each user gets the variant a worker gives
them, population filters included; the assignments then come from the user states, and the
decoded events feed :func:`~pipeline.experiments.report.build_report`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path

from pipeline.config import Settings
from pipeline.core.processor import Processor
from pipeline.experiments.report import Report, build_report
from pipeline.offline.evaluate import read_event_file
from pipeline.offline.runner import drive, unique_events
from pipeline.serde.jsonl import read_jsonl

__all__ = ["report_events"]


def report_events(
    events_path: str | Path,
    definitions: Iterable[object],
    experiment_id: str,
    *,
    settings: Settings,
    catalog_path: str | Path | None = None,
    window_s: float | None = None,
) -> Report:
    """The report of ``experiment_id`` (one of ``definitions``) over an events file.

    Users are judged over ``window_s`` (default: the setting ``experiment_window_s``, as
    the workers judge them).

    Raises
    ------
    KeyError
        When no valid definition has the id ``experiment_id``.
    """
    processor = Processor(settings, clock=lambda: 4_102_444_800.0)  # no event is "future"
    if catalog_path is not None:
        processor.load_catalog(read_jsonl(catalog_path))
    processor.load_experiments(definitions)
    if experiment_id not in processor.experiments.registry:
        raise KeyError(experiment_id)
    experiment = processor.experiments.registry[experiment_id]
    decoder = processor.decoder
    events = read_event_file(events_path, decoder=decoder)
    zero = itertools.repeat(0)
    drive(
        processor,
        zip(events.keys, events.records, zero, itertools.count(), zero, strict=False),
    )
    assignments = {
        user_id: state.experiments[experiment_id]
        for user_id, state in processor.users.items()
        if experiment_id in state.experiments
    }
    return build_report(
        experiment,
        assignments,
        unique_events(events.records, decoder),
        window_s=settings.experiment_window_s if window_s is None else window_s,
    )
