"""Churn models: the probability that a user is not seen again within the churn horizon.

Every model answers ``predict_proba_one(x)`` and ``learn_one(x, y)`` on the feature dict of
:data:`pipeline.core.features.CHURN_FEATURES`, as River's classifiers do, and names itself with
``model_version``. They are picked by name (:func:`make_churn_model`):

``logreg``
    River ``StandardScaler | LogisticRegression`` on ``log1p`` of the features, scaled
    values clipped to ±1.5 (the counts are heavy-tailed; clipping keeps one extreme user
    from moving the weights far), on top of the Poisson heuristic's log-odds as a fixed
    offset (:class:`LogisticChurn`): fast (tens of thousands of updates per second) and
    explains itself: the contribution of a feature is its scaled value times its weight.
    Compared prequentially on simulated traffic (1,000 users × 90 days, 32k labelled
    predictions, 1 % positive) it reached AUC 0.831 (0.816 clipped at ±3, SGD 0.005)
    against 0.790 for ``poisson`` and below 0.5 for ``tree``; on raw unclipped features
    it stayed near 0.72.
``tree``
    River ``HoeffdingAdaptiveTreeClassifier`` on the same features.
``poisson``
    No training: the user's sessions form a Poisson process at their own recent rate
    (``sessions_7d`` per week); the churn probability is that of no session within the
    horizon, ``exp(-rate · horizon)``. The reference the learned models must beat.

Examples
--------
>>> x = dict.fromkeys(CHURN_FEATURES, 0.0) | {"sessions_7d": 7.0}
>>> round(make_churn_model("poisson", horizon_days=14).predict_proba_one(x), 4)  # daily viewer
0.0
>>> model = make_churn_model("logreg", horizon_days=14)
>>> for _ in range(500):
...     model.learn_one(x, False); model.learn_one(x | {"sessions_7d": 0.1}, True)
>>> model.predict_proba_one(x | {"sessions_7d": 0.1}) > 0.5 > model.predict_proba_one(x)
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

from river import linear_model, optim, preprocessing, tree

from pipeline.core.features import CHURN_FEATURES
from pipeline.serde.snapshots import stored_as

__all__ = [
    "CHURN_FEATURES",
    "INACTIVE_FEATURES",
    "ChurnModel",
    "InactiveChurn",
    "inactive_features",
    "make_churn_model",
]

Contribution = tuple[str, float, float]


class ChurnModel(Protocol):
    """What the processor needs from a churn model."""

    @property
    def model_version(self) -> str:
        """The model's name and version, published with its scores."""
        ...

    def predict_proba_one(self, x: Mapping[str, float]) -> float:
        """Probability that the user churns within the horizon."""
        ...

    def learn_one(self, x: Mapping[str, float], y: bool) -> None:
        """Learn one labelled sample (``y`` true: churned)."""
        ...

    def contributions(self, x: Mapping[str, float], *, top: int) -> list[Contribution]:
        """The ``top`` features pushing the prediction most: (name, value, effect)."""
        ...


@stored_as("OffsetLogisticRegression")
class OffsetLogisticRegression(linear_model.LogisticRegression):
    """River's ``LogisticRegression`` whose raw score adds :attr:`offset`, a fixed term.

    The offset is set before each prediction or step (a GLM offset: it moves the score, it
    is not learnt); River's own gradient step then runs at the score with it.
    """

    offset = 0.0

    def _raw_dot_one(self, x: dict[str, float]) -> float:
        return float(super()._raw_dot_one(x)) + self.offset


@stored_as("LogisticChurn")
class LogisticChurn:
    """Scaled online logistic regression (River) on top of the Poisson hazard's log-odds.

    The raw score is ``hazard · logit(poisson) + w · x + b``: the Poisson heuristic's
    churn probability (:class:`PoissonChurn`) enters as a fixed offset, and the weights
    learn what the features add to it. Started from zero weights, the model scores as the
    heuristic does from its first prediction and departs from it as labels tell; without
    the offset it started at 0.5 for every user and learnt the churn rate from the labels
    first (600 users, 60 days, seed 1: AUC 0.800 and expected calibration error 0.031
    without, 0.833 and 0.011 with; ``docs/quality.md``). ``hazard`` is 0 in a model restored from
    a release before it (``churn-logreg-3``): its weights were learnt without the offset.
    """

    clip = 1.5

    def __init__(self, *, horizon_days: float = 14.0, hazard: float = 1.0) -> None:
        self.scaler = preprocessing.StandardScaler()
        self.classifier = OffsetLogisticRegression(optimizer=optim.SGD(0.01), l2=1e-4)
        self.horizon_days = horizon_days
        self.hazard = hazard

    def __setstate__(self, state: dict[str, object]) -> None:
        """Restore a snapshot; one of a release before the offset scores without it."""
        state.setdefault("horizon_days", 14.0)
        state.setdefault("hazard", 0.0)
        self.__dict__.update(state)

    @property
    def model_version(self) -> str:
        """``churn-logreg-4`` with the Poisson offset, ``churn-logreg-3`` without."""
        return "churn-logreg-4" if self.hazard else "churn-logreg-3"

    def _scaled(self, x: Mapping[str, float], *, learn: bool) -> dict[str, float]:
        logged = {name: math.log1p(max(value, 0.0)) for name, value in x.items()}
        if learn:
            self.scaler.learn_one(logged)
        clip = self.clip
        return {k: min(max(v, -clip), clip) for k, v in self.scaler.transform_one(logged).items()}

    def _offset(self, x: Mapping[str, float]) -> float:
        """The Poisson hazard's share of the raw score: ``hazard · logit(poisson)``."""
        if not self.hazard:
            return 0.0
        p = min(max(poisson_churn(x, self.horizon_days), _P_FLOOR), 1.0 - _P_FLOOR)
        return self.hazard * math.log(p / (1.0 - p))

    def predict_proba_one(self, x: Mapping[str, float]) -> float:
        classifier = self.classifier
        classifier.offset = self._offset(x)
        return classifier.predict_proba_one(self._scaled(x, learn=False)).get(True, 0.0)

    def learn_one(self, x: Mapping[str, float], y: bool) -> None:
        classifier = self.classifier
        classifier.offset = self._offset(x)
        classifier.learn_one(self._scaled(x, learn=True), y)

    def contributions(self, x: Mapping[str, float], *, top: int) -> list[Contribution]:
        """``(feature, value, weight · scaled value)``, the largest effects first.

        The Poisson offset is a function of ``sessions_7d``: it is counted in its effect.
        """
        scaled = self._scaled(x, learn=False)
        weights = self.classifier.weights
        effects = [(name, x[name], weights.get(name, 0.0) * scaled[name]) for name in scaled]
        offset = self._offset(x)
        if offset:
            effects = [
                (name, value, effect + offset if name == "sessions_7d" else effect)
                for name, value, effect in effects
            ]
        effects.sort(key=lambda effect: -abs(effect[2]))
        return effects[:top]


@stored_as("TreeChurn")
class TreeChurn:
    """Hoeffding adaptive tree (River); no per-feature contributions."""

    model_version = "churn-tree-1"

    def __init__(self, *, seed: int = 42) -> None:
        self.classifier = tree.HoeffdingAdaptiveTreeClassifier(grace_period=200, seed=seed)

    def predict_proba_one(self, x: Mapping[str, float]) -> float:
        return self.classifier.predict_proba_one(dict(x)).get(True, 0.0)

    def learn_one(self, x: Mapping[str, float], y: bool) -> None:
        self.classifier.learn_one(dict(x), y)

    def contributions(self, x: Mapping[str, float], *, top: int) -> list[Contribution]:
        return []


@stored_as("PoissonChurn")
class PoissonChurn:
    """``P(no session within the horizon)`` at the user's recent session rate."""

    model_version = "churn-poisson-1"

    def __init__(self, *, horizon_days: float) -> None:
        self.horizon_days = horizon_days

    def predict_proba_one(self, x: Mapping[str, float]) -> float:
        return poisson_churn(x, self.horizon_days)

    def learn_one(self, x: Mapping[str, float], y: bool) -> None:
        """Nothing to learn."""

    def contributions(self, x: Mapping[str, float], *, top: int) -> list[Contribution]:
        rate = x["sessions_7d"] / 7.0
        return [("sessions_7d", x["sessions_7d"], -rate * self.horizon_days)][:top]


def poisson_churn(x: Mapping[str, float], horizon_days: float) -> float:
    """``P(no session within the horizon)`` at the user's recent rate (``sessions_7d`` a week)."""
    return math.exp(-x["sessions_7d"] / 7.0 * horizon_days)


_P_FLOOR = 1e-4
"""The Poisson probability is kept within ``[_P_FLOOR, 1 - _P_FLOOR]`` before its log-odds."""

INACTIVE_FEATURES: tuple[str, ...] = (*CHURN_FEATURES, "silence_days", "silence_ratio")
"""What the inactivity model sees: the churn features of the user's last session end, the
days of silence since, and that silence over the user's own mean gap between sessions."""


def inactive_features(session_end: Sequence[float], silence_days: float) -> dict[str, float]:
    """The inactivity model's features after ``silence_days`` of silence.

    ``session_end`` is the churn feature vector of the user's last session end (in the
    order of :data:`CHURN_FEATURES`). A silence is long or short for the user's own rhythm:
    ``silence_ratio`` is the silence over ``gap_mean_days + 0.5``, as ``gap_ratio`` is.

    >>> x = inactive_features([0.0] * len(CHURN_FEATURES), 7)
    >>> x["silence_days"], x["silence_ratio"]
    (7.0, 14.0)
    """
    x = dict(zip(CHURN_FEATURES, session_end, strict=True))
    x["silence_days"] = float(silence_days)
    x["silence_ratio"] = silence_days / (x["gap_mean_days"] + 0.5)
    return x


@stored_as("InactiveChurn")
class InactiveChurn(LogisticChurn):
    """The churn probability of a user silent for some days.

    :class:`LogisticChurn` on :data:`INACTIVE_FEATURES`, learnt from the re-scores whose
    label came: a user silent a week is judged against users silent a week, not against
    users at a session end.
    """

    model_version = "churn-inactive-1"  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__(hazard=0.0)  # its features hold the silence, not a session's end


def make_churn_model(
    name: Literal["logreg", "tree", "poisson"], *, horizon_days: float
) -> ChurnModel:
    """The churn model called ``name``."""
    if name == "logreg":
        return LogisticChurn(horizon_days=horizon_days)
    if name == "tree":
        return TreeChurn()
    if name == "poisson":
        return PoissonChurn(horizon_days=horizon_days)
    raise ValueError(f"unknown churn model {name!r}")
