"""An experiment's report: each metric per variant against control, looked at over event time.

:func:`build_report` runs the events of the experiment's users (in event-time order) exactly
as a worker's partition runs them (:class:`~pipeline.kpis.windows.PartitionKpis` counting
the users' outcomes, :class:`~pipeline.experiments.live_results.PartitionOutcomes`), and
judges them as the workers' combining agent does
(:class:`~pipeline.experiments.live_results.ResultsCombiner`): at each hour boundary of
event time that changed the experiment's users or values, an always-valid
:class:`~pipeline.experiments.stats.SequentialTest` per metric and variant on the
user-level values (:data:`~pipeline.experiments.outcomes.METRICS`), and a
:class:`~pipeline.experiments.stats.SampleRatioTest` on the users seen per variant. A user
enters the tests once their window (``window_s`` of event time from their first event in
the experiment) has passed, with values that no longer change, as the tests assume.
Looking as often as one likes keeps the error rates: the p-values are the running minima,
the intervals the running intersections. The assignments come from the workers (the user
states, or the ``experiments`` tags of the published records); a user counts from their
first event while the experiment runs, until their window ends (events after a stop do
not count).
The last look is at the first hour boundary at or after the last event.

>>> from pipeline.core.events import Event
>>> from pipeline.experiments.definition import Experiment, Variant
>>> experiment = Experiment("x", "x", (Variant("control", 0.5, True), Variant("b", 0.5)),
...                         start_ms=0, stop_ms=None, metrics=("play_starts_per_user",))
>>> events = [Event(f"e{i}", "play", f"u{i}", i * 1000, item_id="m", position_s=0.0)
...           for i in range(40)]
>>> result = build_report(experiment, {f"u{i}": ("b" if i % 2 else "control")
...                                    for i in range(40)}, events, window_s=1.0)
>>> result.users, result.rows[0].metric, result.rows[0].variant, result.rows[0].p_value
({'control': 20, 'b': 20}, 'play_starts_per_user', 'b', 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.events import Event, format_ts
from pipeline.experiments.definition import Experiment
from pipeline.experiments.live import OUTSIDE
from pipeline.experiments.live_results import (
    HOUR_MS,
    PartitionOutcomes,
    ResultsCombiner,
    ceil_hour,
    experiment_meta,
)
from pipeline.kpis.windows import PartitionKpis

__all__ = ["Look", "Report", "Row", "build_report", "format_report"]


@dataclass(frozen=True, slots=True)
class Row:
    """One metric of one variant against control, at the last look."""

    metric: str
    variant: str
    control_users: int
    users: int
    control_mean: float | None
    mean: float | None
    p_value: float
    interval: tuple[float, float]

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (equivalently, the p-value fell below the level)."""
        lower, upper = self.interval
        return lower > 0 or upper < 0


@dataclass(frozen=True, slots=True)
class Look:
    """The statistics at one look: event time, p-value and interval per (metric, variant)."""

    ts_ms: int
    p_values: dict[tuple[str, str], float]
    intervals: dict[tuple[str, str], tuple[float, float]]
    srm_p_value: float


@dataclass(slots=True)
class Report:
    """The report of one experiment."""

    experiment_id: str
    alpha: float
    users: dict[str, int]
    srm_p_value: float
    rows: list[Row] = field(default_factory=list)
    looks: list[Look] = field(default_factory=list)


def build_report(
    experiment: Experiment,
    assignments: Mapping[str, str],
    events: Iterable[Event],
    *,
    alpha: float = 0.05,
    window_s: float = 7 * 86_400.0,
    horizon: int = 10_000,
) -> Report:
    """Judge ``experiment`` on ``events`` (in event-time order) of its assigned users.

    ``assignments``: user id → variant (or :data:`~pipeline.experiments.live.OUTSIDE`).
    Events out of event-time order by a user are dropped, as late ones are by a worker.
    """
    outcomes = PartitionOutcomes(window_ms=int(window_s * 1000))
    kpis = PartitionKpis(lateness_ms=0, outcomes=outcomes)
    combiner = ResultsCombiner(1, alpha=alpha, horizon=horizon)
    meta = {experiment.id: experiment_meta(experiment)}
    records: list[dict[str, Any]] = []
    due = None  # the next hour boundary to take the outcome changes at
    last = None
    for event in events:
        variant = assignments.get(event.user_id, OUTSIDE)
        if variant == OUTSIDE:
            continue
        ts = event.ts_ms
        kpis.add(event, arms={experiment.id: variant} if experiment.active_at(ts) else {})
        last = ts if last is None else max(last, ts)
        if due is None or last >= due:
            records += combiner.feed(0, last, outcomes.take(last), meta)
            due = last - last % HOUR_MS + HOUR_MS
    if last is not None:
        end = ceil_hour(last)
        kpis.advance(end)
        records += combiner.feed(0, end, outcomes.take(end), meta)
    variants = [v.name for v in experiment.variants]
    report = Report(experiment.id, alpha, dict.fromkeys(variants, 0), 1.0)
    for record in records:
        report.looks.append(
            Look(
                record["as_of_ms"],
                {(r["metric"], r["variant"]): r["p_value"] for r in record["results"]},
                {(r["metric"], r["variant"]): _interval(r["interval"]) for r in record["results"]},
                record["srm_p_value"],
            )
        )
    if records:
        final = records[-1]
        report.users.update(final["users"])
        report.srm_p_value = final["srm_p_value"]
        report.rows = [
            Row(r["metric"], r["variant"], r["control_users"], r["users"], r["control_mean"],
                r["mean"], r["p_value"], _interval(r["interval"]))
            for r in final["results"]
        ]  # fmt: skip
    return report


def _interval(bounds: list[float | None]) -> tuple[float, float]:
    lower, upper = bounds
    return (-math.inf if lower is None else lower, math.inf if upper is None else upper)


def format_report(report: Report) -> str:
    """The report as a table: metric, variant, users, means, difference interval, p-value.

    >>> print(format_report(Report("x", 0.05, {"control": 3, "b": 3}, 0.9, [
    ...     Row("watch_seconds_per_user", "b", 3, 3, 100.0, 130.0, 0.01, (5.0, 55.0))])))
    experiment x: users {'control': 3, 'b': 3}; sample ratio p = 0.9
    metric                  variant  users  control  variant  difference (95 % CS)  p (always valid)
    watch_seconds_per_user  b        3 / 3  100      130      [5, 55]               0.01 *
    """
    header = (
        f"experiment {report.experiment_id}: users {report.users}; "
        f"sample ratio p = {report.srm_p_value:.3g}"
    )
    level = round(100 * (1 - report.alpha))
    rows = [("metric", "variant", "users", "control", "variant", f"difference ({level} % CS)",
             "p (always valid)")]  # fmt: skip
    for row in report.rows:
        lower, upper = row.interval
        rows.append(
            (
                row.metric,
                row.variant,
                f"{row.control_users} / {row.users}",
                "-" if row.control_mean is None else f"{row.control_mean:.4g}",
                "-" if row.mean is None else f"{row.mean:.4g}",
                f"[{lower:.4g}, {upper:.4g}]",
                f"{row.p_value:.3g}" + (" *" if row.significant else ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
             for r in rows]  # fmt: skip
    return "\n".join([header, *lines])


def plot_report(report: Report, path: str) -> None:
    """Draw each metric's always-valid p-values and confidence sequences over event time."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = sorted({key for look in report.looks for key in look.p_values})
    figure = Figure(figsize=(10, 2.6 * max(1, len(keys))), layout="constrained")
    FigureCanvasAgg(figure)
    times = [format_ts(look.ts_ms)[:10] for look in report.looks]
    for index, key in enumerate(keys):
        p_axis = figure.add_subplot(len(keys), 2, 2 * index + 1)
        p_axis.plot(times, [look.p_values[key] for look in report.looks])
        p_axis.axhline(report.alpha, linestyle="--", color="grey")
        p_axis.set_yscale("log")
        p_axis.set_title(f"{key[0]} ({key[1]}): always-valid p")
        ci_axis = figure.add_subplot(len(keys), 2, 2 * index + 2)
        bounds = [look.intervals[key] for look in report.looks]
        finite = [(t, lo, hi) for t, (lo, hi) in zip(times, bounds, strict=True)
                  if math.isfinite(lo) and math.isfinite(hi)]  # fmt: skip
        if finite:
            ci_axis.fill_between([f[0] for f in finite], [f[1] for f in finite],
                                 [f[2] for f in finite], alpha=0.4)  # fmt: skip
        ci_axis.axhline(0.0, color="grey")
        ci_axis.set_title(f"{key[0]} ({key[1]}): difference, confidence sequence")
        for axis in (p_axis, ci_axis):
            axis.tick_params(axis="x", labelrotation=45, labelsize=7)
    figure.savefig(path, dpi=100)
