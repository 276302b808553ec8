"""Prequential model quality: exact ROC AUC, log loss, hit rate@10 and rating errors.

Every outcome is scored with the prediction made *before* the model learnt from it
(prequential, or test-then-train, evaluation). :class:`Prequential` keeps the outcomes
of each model variant, whole-run and over a rolling window, and the processor feeds it
as churn labels, next plays and ratings become known.

AUC is exact (rank-based, :func:`exact_auc`): River's ``ROCAUC()`` bins scores into 10
thresholds and misreports on the imbalanced, low-probability predictions churn gives.

Examples
--------
>>> q = Prequential(window=3)
>>> for p, y, ts in [(0.1, 0, 1), (0.8, 1, 2), (0.3, 0, 3), (0.2, 1, 4)]:
...     q.churn("logreg", p, y, ts_ms=ts)
>>> q.next_item("mf", True, ts_ms=5); q.next_item("trending", False, ts_ms=5)
>>> report = q.report(churn_model="logreg", reco_model="mf")
>>> report["churn.samples"], report["churn.positives"], report["churn.auc"]
(4, 2, 0.75)
>>> report["reco.hit_rate_at_10"], report["reco.trending_hit_rate_at_10"]
(1.0, 0.0)
>>> q.rolling()[("churn_auc", "logreg")]   # the last 3 outcomes
0.5

"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from pipeline.core.events import format_ts

__all__ = [
    "PUBLISHED",
    "TRENDING",
    "expected_calibration_error",
    "reliability",
    "LabelledPrediction",
    "Prequential",
    "exact_auc",
    "log_loss",
]

TRENDING = "trending"
"""The reco baseline variant: the trending items every user would be shown."""

PUBLISHED = "published"
"""The churn variant of the scores published: each partition's champion when it scored."""

_EPS = 1e-15


def exact_auc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Exact ROC AUC: the Mann-Whitney statistic, with average ranks for tied scores.

    Parameters
    ----------
    labels
        1 (or ``True``) for positives, 0 for negatives.
    scores
        Higher means more likely positive; same length as ``labels``.

    Returns
    -------
    float
        The probability that a random positive scores above a random negative, ties
        counting one half; ``nan`` when only one class is present.

    Examples
    --------
    >>> exact_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> exact_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5])
    0.5
    >>> exact_auc([1, 1], [0.2, 0.3])
    nan

    """
    y = np.asarray(labels).astype(bool, copy=False)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    positives = int(np.count_nonzero(y))
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = float(average_rank[inverse[y]].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def log_loss(labels: npt.ArrayLike, probabilities: npt.ArrayLike) -> float:
    """Mean binary log loss, probabilities clipped to ``[1e-15, 1 - 1e-15]``; ``nan`` if empty.

    Examples
    --------
    >>> round(log_loss([1, 0], [0.8, 0.2]), 6)
    0.223144
    >>> round(log_loss([1], [0.0]), 3)   # clipped, not infinite
    34.539

    """
    y = np.asarray(labels).astype(bool, copy=False)
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1.0 - _EPS)
    if p.size == 0:
        return math.nan
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def reliability(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike, *, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reliability curve over ``bins`` bins of equal count, in order of probability.

    Returns each bin's mean predicted probability, its observed rate of positives and its
    count. Bins hold equal numbers of predictions (as far as ties allow, a tie never split)
    rather than equal widths: churn probabilities crowd near 0, where equal widths would
    put nearly every prediction in the first bin and hide its miscalibration.

    Examples
    --------
    >>> mean, rate, count = reliability([0, 0, 1, 1], [0.1, 0.2, 0.6, 0.9], bins=2)
    >>> mean.round(2).tolist(), rate.tolist(), count.tolist()
    ([0.15, 0.75], [0.0, 1.0], [2, 2])

    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    if p.size == 0:
        empty = np.zeros(0)
        return empty, empty, np.zeros(0, dtype=np.int64)
    order = np.argsort(p, kind="stable")
    p, y = p[order], y[order]
    edges = np.searchsorted(p, p[(np.arange(1, bins) * p.size) // bins], side="left")
    edges = np.unique(np.concatenate(([0], edges, [p.size])))
    counts = np.diff(edges)
    keep = counts > 0
    starts, counts = edges[:-1][keep], counts[keep]
    mean = np.add.reduceat(p, starts) / counts
    rate = np.add.reduceat(y, starts) / counts
    return mean, rate, counts


def expected_calibration_error(
    labels: npt.ArrayLike, probabilities: npt.ArrayLike, *, bins: int = 10
) -> float:
    """Expected calibration error over equal-count bins (:func:`reliability`); ``nan`` if empty.

    ``Σ_b (n_b / n) · |mean probability_b − observed rate_b|``: how far, on average over the
    predictions, the probability stated is from the rate that came true.

    Examples
    --------
    >>> expected_calibration_error([0, 0, 1, 1], [0.1, 0.2, 0.6, 0.9], bins=2)
    0.2
    >>> expected_calibration_error([0, 1] * 50, [0.5] * 100)
    0.0

    """
    mean, rate, counts = reliability(labels, probabilities, bins=bins)
    if not counts.size:
        return math.nan
    return float(round(np.sum(counts * np.abs(mean - rate)) / counts.sum(), 12))


@dataclass(frozen=True, slots=True)
class LabelledPrediction:
    """A churn prediction joined with its label, once the label is known.

    ``last_seen`` is the user's last event before the prediction: the label is positive
    exactly when no event came before ``last_seen`` + horizon, and is known then.

    Examples
    --------
    >>> LabelledPrediction("u-1", 1795378503120, 0.25, 1, 1796588103120, "logreg",
    ...                    1795376703120).to_json()
    b'{"user_id":"u-1","predicted_at":"2026-11-22T20:15:03.120Z","churn_probability":0.25,"label":1,"labelled_at":"2026-12-06T20:15:03.120Z","model":"logreg","last_seen":"2026-11-22T19:45:03.120Z"}'

    """

    user_id: str
    predicted_at_ms: int
    churn_probability: float
    label: int
    labelled_at_ms: int
    model: str
    last_seen_ms: int

    def to_json(self) -> bytes:
        """One JSON line: event times in RFC 3339 (``predicted_at``, ``labelled_at``)."""
        return orjson.dumps(
            {
                "user_id": self.user_id,
                "predicted_at": format_ts(self.predicted_at_ms),
                "churn_probability": self.churn_probability,
                "label": self.label,
                "labelled_at": format_ts(self.labelled_at_ms),
                "model": self.model,
                "last_seen": format_ts(self.last_seen_ms),
            }
        )


class _Buffer:
    """A growable numpy array: amortised O(1) append, views without copies.

    With ``keep``, only the last ``keep`` values are sure to stay: at ``2 · keep`` values
    the last ``keep`` move to the front (amortised O(1) too), so it never grows past that.

    >>> buffer = _Buffer(np.int64, keep=3)
    >>> for i in range(8):
    ...     buffer.append(i)
    >>> buffer.view(3).tolist(), buffer.size <= 6
    ([5, 6, 7], True)
    """

    __slots__ = ("_data", "_keep", "size")

    def __init__(self, dtype: npt.DTypeLike, *, keep: int | None = None) -> None:
        self._data = np.empty(1024 if keep is None else min(1024, 2 * keep), dtype=dtype)
        self._keep = keep
        self.size = 0

    def append(self, value: float) -> None:
        keep = self._keep
        if keep is not None and self.size == 2 * keep:
            self._data[:keep] = self._data[keep : self.size]
            self.size = keep
        if self.size == self._data.size:
            grown = 2 * self.size if keep is None else min(2 * self.size, 2 * keep)
            self._data = np.resize(self._data, grown)
        self._data[self.size] = value
        self.size += 1

    def view(self, last: int | None = None) -> np.ndarray:
        """All values, or the ``last`` ones."""
        start = 0 if last is None else max(0, self.size - last)
        return self._data[start : self.size]


class _Churn:
    """The (probability, label) pairs of one churn model: exact AUC needs them all.

    All of them, or with ``keep`` at least the last ``keep``; ``count`` counts every pair.
    """

    __slots__ = ("count", "labels", "probabilities")

    def __init__(self, keep: int | None = None) -> None:
        self.probabilities = _Buffer(np.float64, keep=keep)
        self.labels = _Buffer(np.int8, keep=keep)
        self.count = 0

    def add(self, probability: float, label: int) -> None:
        self.probabilities.append(probability)
        self.labels.append(label)
        self.count += 1

    def auc(self, last: int | None = None) -> float:
        return exact_auc(self.labels.view(last), self.probabilities.view(last))

    def logloss(self, last: int | None = None) -> float:
        return log_loss(self.labels.view(last), self.probabilities.view(last))

    def ece(self, last: int | None = None) -> float:
        return expected_calibration_error(self.labels.view(last), self.probabilities.view(last))


class _Mean:
    """Whole-run mean of a stream of values, and its mean over the last ``window``."""

    __slots__ = ("_ring", "count", "total")

    def __init__(self, window: int) -> None:
        self._ring = np.zeros(window, dtype=np.float64)
        self.count = 0
        self.total = 0.0

    def update(self, value: float) -> None:
        self._ring[self.count % self._ring.size] = value
        self.count += 1
        self.total += value

    def get(self) -> float:
        return self.total / self.count if self.count else math.nan

    def rolling(self) -> float:
        if not self.count:
            return math.nan
        return float(self._ring[: min(self.count, self._ring.size)].mean())


class _Errors:
    """Absolute and squared errors of one rating model."""

    __slots__ = ("absolute", "squared")

    def __init__(self, window: int) -> None:
        self.absolute = _Mean(window)
        self.squared = _Mean(window)

    def update(self, error: float) -> None:
        self.absolute.update(abs(error))
        self.squared.update(error * error)


class _Checkpoints:
    """A bounded, time-stamped series: at most ``max_points``, thinned by halves."""

    __slots__ = ("every", "max_points", "times", "values")

    def __init__(self, every: int, max_points: int) -> None:
        self.every = every
        self.max_points = max_points
        self.times: list[int] = []
        self.values: list[float] = []

    def due(self, count: int) -> bool:
        return count % self.every == 0

    def add(self, ts_ms: int, value: float) -> None:
        self.times.append(ts_ms)
        self.values.append(value)
        if len(self.times) >= self.max_points:
            del self.times[::2], self.values[::2]
            self.every *= 2


class Prequential:
    """Prequential outcomes per model variant, whole-run and over the last ``window``.

    Parameters
    ----------
    window
        Outcomes per model in the rolling metrics of :meth:`rolling` and :meth:`series`.
    checkpoint_every
        Outcomes per model between two points of :meth:`series` (doubles as the series
        is thinned, so that it never holds more than ``max_points`` points).
    max_points
        Most points kept per series.
    whole_run
        Keep every churn (probability, label) pair for the whole-run figures of
        :meth:`report` and :meth:`reliability` (``ottscore evaluate``). False (a worker,
        which runs for months and reads :meth:`rolling` only): keep the last ``window``
        to ``2 · window`` of each model, so that memory does not grow with the labels; the
        whole-run figures are then over those.

    """

    def __init__(
        self,
        window: int = 10_000,
        *,
        checkpoint_every: int = 500,
        max_points: int = 1_000,
        whole_run: bool = True,
    ) -> None:
        if window < 1 or checkpoint_every < 1 or max_points < 2:
            raise ValueError("window and checkpoint_every must be >= 1, max_points >= 2")
        self.window = window
        self.whole_run = whole_run
        self._checkpoint_every = checkpoint_every
        self._max_points = max_points
        self._churn: dict[str, _Churn] = {}
        self._hits: dict[str, _Mean] = {}
        self._errors: dict[str, _Errors] = {}
        self._series: dict[tuple[str, str], _Checkpoints] = {}

    def churn(self, model: str, probability: float, label: int, *, ts_ms: int) -> None:
        """Record a churn ``label``, known at ``ts_ms``, for a prediction of ``model``."""
        track = self._churn.get(model)
        if track is None:
            track = self._churn[model] = _Churn(None if self.whole_run else self.window)
        track.add(probability, label)
        checkpoints = self._checkpoints("churn_auc", model)
        if checkpoints.due(track.count):
            checkpoints.add(ts_ms, track.auc(self.window))

    def next_item(self, model: str, hit: bool, *, ts_ms: int) -> None:
        """Record whether the item a user played was in their last top-10 list from ``model``."""
        track = self._hits.get(model) or self._hits.setdefault(model, _Mean(self.window))
        track.update(1.0 if hit else 0.0)
        checkpoints = self._checkpoints("hit_rate_at_10", model)
        if checkpoints.due(track.count):
            checkpoints.add(ts_ms, track.rolling())

    def rating(self, model: str, predicted: float, actual: float, *, ts_ms: int) -> None:
        """Record a rating ``actual`` that ``model`` had predicted as ``predicted``."""
        track = self._errors.get(model) or self._errors.setdefault(model, _Errors(self.window))
        track.update(predicted - actual)

    def _checkpoints(self, metric: str, model: str) -> _Checkpoints:
        key = (metric, model)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Checkpoints(self._checkpoint_every, self._max_points)
        return series

    def report(self, *, churn_model: str, reco_model: str) -> dict[str, float | int]:
        """Whole-run quality, flat dotted keys; the champions unqualified, other variants named.

        Metrics with no outcome yet are ``nan``.

        Examples
        --------
        >>> q = Prequential()
        >>> q.rating("mf", 3.5, 4.0, ts_ms=0); q.rating("mf", 4.0, 3.0, ts_ms=1)
        >>> q.next_item("pop", False, ts_ms=2)
        >>> r = q.report(churn_model="logreg", reco_model="mf")
        >>> r["reco.mae"], round(r["reco.rmse"], 4), r["reco.pop.hit_rate_at_10"]
        (0.75, 0.7906, 0.0)
        >>> r["churn.samples"], r["churn.auc"]
        (0, nan)

        """
        champion = self._churn.get(churn_model) or _Churn()
        report: dict[str, float | int] = {
            "churn.samples": champion.count,
            "churn.positives": int(np.count_nonzero(champion.labels.view())),
            "churn.auc": champion.auc(),
            "churn.logloss": champion.logloss(),
            "churn.ece": champion.ece(),
        }
        hits = self._hits.get(reco_model) or _Mean(1)
        trending = self._hits.get(TRENDING) or _Mean(1)
        report["reco.hit_rate_at_10"] = hits.get()
        report["reco.trending_hit_rate_at_10"] = trending.get()
        report["reco.next_items"] = hits.count
        for model, track in self._churn.items():
            if model != churn_model:
                report[f"churn.{model}.auc"] = track.auc()
                report[f"churn.{model}.logloss"] = track.logloss()
                report[f"churn.{model}.ece"] = track.ece()
        for model, mean in self._hits.items():
            if model not in (reco_model, TRENDING):
                report[f"reco.{model}.hit_rate_at_10"] = mean.get()
        for model, errors in self._errors.items():
            prefix = "reco" if model == reco_model else f"reco.{model}"
            report[f"{prefix}.mae"] = errors.absolute.get()
            report[f"{prefix}.rmse"] = math.sqrt(errors.squared.get())
        return report

    def reliability(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Whole-run reliability curve of each churn model (:func:`reliability`)."""
        return {
            model: reliability(track.labels.view(), track.probabilities.view())
            for model, track in self._churn.items()
        }

    def rolling(self) -> dict[tuple[str, str], float]:
        """Quality over the last ``window`` outcomes of each model, keyed by (metric, model).

        Metrics: ``churn_auc``, ``churn_logloss``, ``hit_rate_at_10``, ``mae``, ``rmse``.
        """
        window = self.window
        rolling: dict[tuple[str, str], float] = {}
        for model, track in self._churn.items():
            rolling[("churn_auc", model)] = track.auc(window)
            rolling[("churn_logloss", model)] = track.logloss(window)
        for model, mean in self._hits.items():
            rolling[("hit_rate_at_10", model)] = mean.rolling()
        for model, errors in self._errors.items():
            rolling[("mae", model)] = errors.absolute.rolling()
            rolling[("rmse", model)] = math.sqrt(errors.squared.rolling())
        return rolling

    def series(self) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
        """Checkpoints of rolling ``churn_auc`` and ``hit_rate_at_10`` for plots.

        Keyed by (metric, model); each value is (event times in epoch ms, values), a point
        every ``checkpoint_every`` outcomes of that model (or a multiple of it, once thinned).

        Examples
        --------
        >>> q = Prequential(window=100, checkpoint_every=2)
        >>> for i in range(6):
        ...     q.next_item("mf", i % 3 == 0, ts_ms=1000 * i)
        >>> times, values = q.series()[("hit_rate_at_10", "mf")]
        >>> times.tolist(), values.round(3).tolist()
        ([1000, 3000, 5000], [0.5, 0.5, 0.333])

        """
        return {
            key: (np.asarray(points.times, dtype=np.int64), np.asarray(points.values))
            for key, points in self._series.items()
        }
