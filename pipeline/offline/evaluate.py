"""Offline evaluation: the live processing core run in-process over a file of events.

:func:`evaluate` feeds every line of a JSONL file of events to the same
:class:`~pipeline.core.processor.Processor` the worker runs, as if it were one partition read
from offset 0, and reports the prequential quality the processor measured (see
:mod:`pipeline.models.quality`) with the processing speed. Nothing is read from the wall clock
but the speed: a second run over the same file gives the same quality.

A file not in event-time order is sorted in memory first (stably: events stamped alike
keep their file order; a line that is not a valid event stays after the line before it).
Offsets are then positions in processing order, so that the processor's replay guard
sees them increase.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np
import orjson
from tqdm import tqdm

from pipeline.config import Settings
from pipeline.core.artwork import ArtworkTrial
from pipeline.core.events import Event, EventDecoder, parse_ts
from pipeline.core.partitioning import partitioned
from pipeline.core.personalize import PERSONALIZED
from pipeline.core.processor import Output, Processor
from pipeline.models.exchange import CONTROL_KEY, LearningMerger, read_delta, signed_merges
from pipeline.models.offpolicy import policy_report
from pipeline.models.quality import TRENDING, LabelledPrediction
from pipeline.models.shared import SharedLearning
from pipeline.offline.runner import drive
from pipeline.serde.jsonl import jsonl_lines, read_jsonl

__all__ = [
    "EventFile",
    "check_predictions",
    "evaluate",
    "format_report",
    "plot_series",
    "read_event_file",
]

_CHUNK = 4_096  # events between two progress updates and outbox drains
_MERGE_BATCH = 16  # records between two outbox drains when merges go through a merger


@dataclass(frozen=True, slots=True)
class EventFile:
    """The records of an events file in event-time order, with their record keys."""

    records: list[bytes]
    keys: list[bytes | None]
    reordered: bool


def read_event_file(path: str | Path, *, decoder: EventDecoder) -> EventFile:
    r"""Read the lines of a JSONL events file, keyed by ``user_id``, sorted by ``ts`` if need be.

    Each line is one record, as :func:`jsonl_lines` reads it (``ottscore replay`` too): an
    empty line is an empty record. A line ``decoder`` rejects keeps its place after the
    line before it and has no key: the processor dead-letters it.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from pipeline.core.events import encode_event
    >>> tmp = tempfile.TemporaryDirectory(); path = pathlib.Path(tmp.name) / "events.jsonl"
    >>> def search(user, ts):
    ...     return encode_event(Event(f"e{ts}", "search", user, ts, query="heat"))
    >>> _ = path.write_bytes(b"\n".join([search("u2", 2000), b"{oops", search("u1", 1000)]))
    >>> f = read_event_file(path, decoder=EventDecoder())
    >>> f.reordered, f.keys, f.records[2]
    (True, [b'u1', b'u2', None], b'{oops')
    >>> tmp.cleanup()

    """
    records = list(jsonl_lines(path))
    keys: list[bytes | None] = []
    times = np.empty(len(records), dtype=np.int64)
    last = np.iinfo(np.int64).min
    for i, record in enumerate(records):
        event = decoder.decode(record)
        if isinstance(event, Event):
            keys.append(event.user_id.encode())
            last = event.ts_ms
        else:
            keys.append(None)
        times[i] = last
    if bool(np.all(times[1:] >= times[:-1])):
        return EventFile(records, keys, reordered=False)
    order = np.argsort(times, kind="stable").tolist()
    return EventFile([records[i] for i in order], [keys[i] for i in order], reordered=True)


def evaluate(
    events_path: str | Path,
    *,
    settings: Settings,
    catalog_path: str | Path | None = None,
    report_path: str | Path | None = None,
    predictions_path: str | Path | None = None,
    plot_path: str | Path | None = None,
    partitions: int = 1,
    share_every_s: float = 0.0,
    share_mode: Literal["sum", "mean", "workers"] = "sum",
    progress: bool = True,
) -> dict[str, float | int]:
    """Run the processing core over ``events_path`` and report quality and speed.

    Parameters
    ----------
    events_path
        JSONL file of input records, one per line.
    settings
        The settings the processor runs with (``reco_mode`` chooses implicit or
        explicit personalisation).
    catalog_path
        JSONL catalog ``{item_id, title, genres, duration_s}`` loaded before the events.
    report_path
        Where to write the report as JSON (indented, sorted keys; ``nan`` as ``null``).
    predictions_path
        Where to write one JSON line per labelled churn prediction.
    plot_path
        Where to draw rolling churn AUC and hit rate@10 over event time (PNG).
    partitions
        Place the records on this many partitions, as Kafka's default partitioner does
        (:func:`~pipeline.core.partitioning.partitioned`), so each partition's models learn
        from its users only, as in a worker; 1 runs everything as one partition.
    share_every_s
        With several partitions, merge what each partition's models learnt into every
        other's each this many seconds of event time
        (:class:`~pipeline.models.shared.SharedLearning`); 0: each partition learns alone,
        as the worker's do today.
    share_mode
        ``sum``: at each epoch every partition takes every other's learning at once, SGD
        steps summed; ``mean``: likewise, steps averaged (model averaging); ``workers``: as
        the workers exchange it (:mod:`pipeline.models.exchange`): at each new epoch every
        partition publishes its delta, a merger merges the deltas of each batch of 16
        records, and each partition folds the others' merge before its next record of the
        following batch, steps summed.
    progress
        Show a progress bar on stderr.

    Returns
    -------
    dict
        :meth:`Prequential.report <pipeline.models.quality.Prequential.report>` plus ``events``
        (records read), ``events_per_s`` (processing only), ``dlq`` (rejected records) and
        ``churn.promotions`` (challengers promoted to champion, over all partitions);
        with a catalog that gives items artworks, ``artwork.shows``, the take rate of the
        artworks shown (``artwork.take_rate.logged``) and the IPS and self-normalised IPS
        estimates, with standard errors, of the ``random``, ``popular`` and ``bandit``
        artwork policies on the same shows (``artwork.take_rate.<policy>.ips`` …).

    """
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    events = read_event_file(events_path, decoder=EventDecoder.from_settings(settings))
    if events.reordered:
        print(f"{events_path}: not in event-time order; sorted by ts in memory", file=sys.stderr)
    with ExitStack() as files:
        sink = None
        if predictions_path is not None:
            sink = _line_writer(files.enter_context(open(predictions_path, "wb")))
        trials: list[ArtworkTrial] = []
        sharing = merger = None
        shared = share_every_s > 0 and partitions > 1
        if shared and share_mode == "workers":  # the processor publishes and folds
            settings = settings.model_copy(update={"share_every_s": share_every_s})
            merger = LearningMerger(partitions=partitions)
        processor = Processor(settings, prediction_sink=sink, artwork_sink=trials.append)
        if catalog_path is not None:
            processor.load_catalog(read_jsonl(catalog_path))
        if shared and share_mode != "workers":
            sharing = SharedLearning(every_ms=int(share_every_s * 1000), mode=share_mode)
            processor.share_learning(sharing, partitions=partitions)
        elapsed_s = _run(processor, events, partitions=partitions, merger=merger, progress=progress)
    quality = processor.quality
    report: dict[str, float | int] = {
        **quality.report(churn_model=settings.churn_model, reco_model=PERSONALIZED),
        "events": len(events.records),
        "events_per_s": len(events.records) / elapsed_s if elapsed_s > 0 else math.nan,
        "dlq": sum(processor.tally.rejected.values()),
        "partitions": partitions,
        "shared.every_s": share_every_s if sharing is not None or merger is not None else 0.0,
        "shared.merges": (
            sharing.shares if sharing is not None else merger.merges if merger is not None else 0
        ),
        "churn.promotions": processor.tally.churn_promotions,
        **_artwork_report(trials),
    }
    if report_path is not None:
        Path(report_path).write_bytes(
            orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
    if plot_path is not None:
        plot_series(quality.series(), plot_path, reliability=quality.reliability())
    return report


def _artwork_report(trials: list[ArtworkTrial]) -> dict[str, float | int]:
    """Take rate of the artworks shown, and IPS/SNIPS estimates of each artwork policy.

    From the ended shows and their logged propensities: what ``random``, ``popular`` and
    ``bandit`` would have taken on the same lists (nothing when no item had artworks).
    """
    if not trials:
        return {}
    shown = [trial.shown for trial in trials]
    return {
        "artwork.shows": len(trials),
        **policy_report(
            "artwork.take_rate",
            [trial.reward for trial in trials],
            [each.propensity for each in shown],
            {
                "random": [1.0 / each.choices for each in shown],
                "popular": [each.p_popular for each in shown],
                "bandit": [each.p_bandit for each in shown],
            },
        ),
    }


def _line_writer(out: IO[bytes]) -> Callable[[LabelledPrediction], None]:
    def write(prediction: LabelledPrediction) -> None:
        out.write(prediction.to_json() + b"\n")

    return write


def _run(
    processor: Processor,
    events: EventFile,
    *,
    partitions: int,
    merger: LearningMerger | None = None,
    progress: bool,
) -> float:
    """Process every record; return the seconds spent processing.

    With a ``merger``, the partitions' deltas go to it after each batch and the merges it
    writes are read before the next batch's records, at their partitions' next offsets.
    """
    placed = partitioned(zip(events.keys, events.records, strict=True), partitions)
    records: Iterable[tuple[bytes | None, bytes, int, int, int]] = (
        (key, value, partition, offset, 0) for key, value, partition, offset in placed
    )
    written: list[tuple[int, bytes]] = []  # merges not read yet
    outputs = None
    if merger is not None:
        records = _with_merges(records, written, partitions)

        settings = processor.settings  # signed and checked as in the worker, with a key
        key, app_id = settings.snapshot_key.get_secret_value().encode(), settings.app_id

        def outputs(taken: Sequence[Output]) -> None:
            for output in taken:
                if output.kind == "learning":
                    merger.feed(read_delta(output.value, key=key, app_id=app_id))
            merges = merger.flush(merge=merger.merges + 1)
            written.extend(signed_merges(merges, key=key, app_id=app_id))

    with tqdm(
        total=len(events.records),
        unit="ev",
        unit_scale=True,
        file=sys.stderr,
        disable=not progress,
        desc="evaluate",
    ) as bar:
        batch = _CHUNK if merger is None else _MERGE_BATCH
        return drive(processor, records, batch=batch, outputs=outputs, progress=bar.update).seconds


def _with_merges(
    records: Iterable[tuple[bytes | None, bytes, int, int, int]],
    written: list[tuple[int, bytes]],
    partitions: int,
) -> Iterator[tuple[bytes | None, bytes, int, int, int]]:
    """``records``, and before each the merges ``written`` so far, offsets counted anew."""
    offsets = [0] * partitions
    for key, value, partition, _, timestamp_ms in records:
        if written:
            for target, merge in written:
                yield CONTROL_KEY, merge, target, offsets[target], timestamp_ms
                offsets[target] += 1
            written.clear()
        yield key, value, partition, offsets[partition], timestamp_ms
        offsets[partition] += 1


def plot_series(
    series: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    reliability: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
) -> None:
    """Draw rolling churn AUC and hit rate@10 per model over event time to a PNG.

    With ``reliability`` (:meth:`Prequential.reliability
    <pipeline.models.quality.Prequential.reliability>`), a third panel draws each churn
    model's reliability diagram: observed churn rate against mean predicted probability
    per bin of equal count, on log axes, beside the diagonal of perfect calibration.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = 3 if reliability else 2
    figure = Figure(figsize=(10, 3.25 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes_list = figure.subplots(rows, 1)
    churn_axes, reco_axes = axes_list[0], axes_list[1]
    reco_axes.sharex(churn_axes)
    panels = {"churn_auc": churn_axes, "hit_rate_at_10": reco_axes}
    for (metric, model), (times_ms, values) in sorted(series.items()):
        if metric in panels and len(times_ms):
            style = "--" if model == TRENDING else "-"
            panels[metric].plot(times_ms.astype("datetime64[ms]"), values, style, label=model)
    churn_axes.set(title="Churn: rolling ROC AUC (exact)", ylabel="AUC")
    reco_axes.set(
        title="Personalisation: rolling hit rate@10", ylabel="hit rate", xlabel="event time (UTC)"
    )
    for axes in panels.values():
        axes.grid(alpha=0.3)
        if axes.has_data():
            axes.legend(loc="best")
    if reliability:
        calibration_axes = axes_list[2]
        low = 1.0
        for model, (mean, rate, counts) in sorted(reliability.items()):
            if counts.size:
                # a bin where nobody churned is drawn at 1e-4, the foot of the log axis
                calibration_axes.plot(mean, np.maximum(rate, 1e-4), "o-", label=model)
                low = min(low, float(mean.min()))
        low = max(low / 2, 1e-4)
        calibration_axes.plot([low, 1.0], [low, 1.0], "k:", label="perfectly calibrated")
        calibration_axes.set(
            title="Churn: reliability (bins of equal count, whole run)",
            xlabel="mean predicted probability",
            ylabel="observed churn rate",
            xscale="log",
            yscale="log",
        )
        calibration_axes.grid(alpha=0.3)
        calibration_axes.legend(loc="best")
    figure.savefig(path, dpi=110)


def format_report(report: Mapping[str, float | int]) -> str:
    """Format the report as a two-column text table, keys sorted.

    Examples
    --------
    >>> print(format_report({"events": 1200, "churn.auc": 0.81234, "reco.mae": float("nan")}))
    churn.auc  0.8123
    events      1,200
    reco.mae        -

    """
    rows = []
    for key in sorted(report):
        value = report[key]
        if isinstance(value, float) and math.isnan(value):
            text = "-"
        elif isinstance(value, float) and abs(value) < 100:
            text = f"{value:.4f}"
        else:
            text = f"{value:,.0f}"
        rows.append((key, text))
    width = max(len(key) for key, _ in rows)
    value_width = max(len(text) for _, text in rows)
    return "\n".join(f"{key:<{width}}  {text:>{value_width}}" for key, text in rows)


def check_predictions(path: str | Path, *, settings: Settings) -> int:
    """Check that a predictions file is honest; return how many lines it has.

    Every prediction is made after the user's last event and no label is known before
    its prediction. A positive (churned) label is known exactly a churn horizon after the
    user's last event, when the watermark passes it; a negative one (the user came back)
    earlier than that.

    Raises
    ------
    ValueError
        Naming the first line that breaks a rule.
    """
    horizon_ms = int(settings.churn_horizon_s * 1000)
    count = 0
    for count, line in enumerate(read_jsonl(path), start=1):
        predicted = parse_ts(line["predicted_at"])
        labelled = parse_ts(line["labelled_at"])
        churn_at = parse_ts(line["last_seen"]) + horizon_ms
        if not parse_ts(line["last_seen"]) < predicted <= labelled:
            raise ValueError(f"{path}:{count}: labelled before it was predicted: {line}")
        if line["label"] == 1 and labelled != churn_at:
            raise ValueError(f"{path}:{count}: churn labelled before the horizon: {line}")
        if line["label"] == 0 and labelled >= churn_at:
            raise ValueError(f"{path}:{count}: return labelled after the horizon: {line}")
    return count
