"""Churn models: the probability that a user is not seen again within the churn horizon.

Every model answers ``predict_proba_one(x)`` and ``learn_one(x, y)`` on the feature dict of
:data:`pipeline.core.features.CHURN_FEATURES`, as River's classifiers do, and names itself with
``model_version``. They are picked by name (:func:`make_churn_model`):

``logreg``
    Two competing risks (:class:`LogisticChurn`): a label is positive when the user
    **departs** or when they stay but fall **silent** past the horizon (a break, a low
    rate). The silence risk is the Poisson heuristic's, its rate read over the days the
    user was seen (:func:`silence_risk`); the departure risk is River
    ``StandardScaler | LogisticRegression`` on ``log1p`` of the features, scaled values
    clipped to ±1.5 (the counts are heavy-tailed; clipping keeps one extreme user from
    moving the weights far); the churn probability is that of either,
    ``1 − (1 − silence)(1 − departure)``, and the regression learns through it
    (:class:`CompetingRisksLoss`). Fast (tens of thousands of updates per second) and
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
>>> x = dict.fromkeys(CHURN_FEATURES, 0.0) | {"sessions_7d": 7.0, "tenure_days": 365.0}
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
from typing import Any, Literal, Protocol

from river import linear_model, optim, preprocessing, tree
from river.utils.math import sigmoid

from pipeline.core.features import CHURN_FEATURES, CHURN_FEATURES_V1, SHORT_HALF_LIFE_DAYS
from pipeline.serde.snapshots import stored_as

__all__ = [
    "CHURN_FEATURES",
    "CHURN_FEATURES_V1",
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


@stored_as("CompetingRisksLoss")
class CompetingRisksLoss(optim.losses.BinaryLoss):
    """Log loss of ``p = 1 − (1 − silence)(1 − σ(z))``: two risks, one of them learnt.

    ``z`` is the regression's raw score (the departure risk's log-odds); ``silence`` is the
    other risk's probability, set before each prediction or step (as a GLM offset is). The
    gradient is the log loss's with respect to ``z`` through ``p``; with ``silence`` 0 it is
    River's :class:`~river.optim.losses.Log`'s, ``σ(z) − y``.

    >>> loss = CompetingRisksLoss()
    >>> loss.silence = 0.0
    >>> round(loss.gradient(True, 0.4), 6) == round(optim.losses.Log().gradient(True, 0.4), 6)
    True
    >>> loss.silence = 0.5  # half of the label already explained: a smaller step
    >>> round(loss.mean_func(0.0), 3), round(loss.gradient(True, 0.0), 4), loss.gradient(False, 0.0)
    (0.75, -0.1667, 0.5)
    """

    silence = 0.0

    def mean_func(self, y_pred: Any) -> Any:
        """``P(churn)``: either risk, at the departure log-odds ``y_pred``."""
        return 1.0 - (1.0 - self.silence) * (1.0 - sigmoid(y_pred))

    def __call__(self, y_true: Any, y_pred: Any) -> Any:
        if not y_true:  # −log(1 − silence) − log(1 − q), the second a softplus
            return (
                -math.log1p(-self.silence) + max(y_pred, 0.0) + math.log1p(math.exp(-abs(y_pred)))
            )
        return -math.log(max(self.mean_func(y_pred), 1e-300))

    def gradient(self, y_true: Any, y_pred: Any) -> Any:
        q = sigmoid(y_pred)
        if not y_true:  # −log(1 − p) = −log(1 − silence) − log(1 − q)
            return q
        p = max(1.0 - (1.0 - self.silence) * (1.0 - q), _P_FLOOR)
        return -(1.0 - self.silence) * q * (1.0 - q) / p


@stored_as("LogisticChurn")
class LogisticChurn:
    """Scaled online logistic regression (River) beside, or on top of, the Poisson hazard.

    ``churn-logreg-7`` (``competing``, the default): a Poisson probability is the risk of a
    silence past the horizon, the regression's that of a departure, and the churn
    probability is either, ``1 − (1 − silence)(1 − σ(w · x + b))``; the regression learns
    through it (:class:`CompetingRisksLoss`), so its weights learn what foretells a
    departure and leave the silences of viewers who stay to the rate. Its intercept starts
    at :data:`DEPARTURE_LOG_ODDS`. The silence risk reads the user's rate over the days
    they were seen (:func:`silence_risk`, ``seen_rate``); a model of ``churn-logreg-5``,
    restored from its snapshot, goes on with the heuristic's own (:func:`poisson_churn`).
    ``-7`` reads last week's engagement ratios beside the 28-day ones (:attr:`features`);
    a model of ``-6`` or earlier, restored, reads the features it learnt
    (:data:`CHURN_FEATURES_V1`).
    On top of the hazard instead (``churn-logreg-4``), the
    raw score was ``logit(poisson) + w · x + b``: the features moved the rate's log-odds,
    and under breaks (silences of viewers who stay) they ranked those silences below the
    heuristic itself (``docs/quality.md``). ``hazard`` is that offset's weight: 0 in a model
    of ``churn-logreg-3`` (no offset), 1 in one of ``churn-logreg-4``; both are restored
    from their snapshots and score as they did.
    """

    clip = 1.5

    def __init__(
        self,
        *,
        horizon_days: float = 14.0,
        competing: bool = True,
        features: tuple[str, ...] = CHURN_FEATURES,
    ) -> None:
        self.features = features  # the inputs it reads, in this order
        self.scaler = preprocessing.StandardScaler()
        self.horizon_days = horizon_days
        self.competing = competing
        self.hazard = 0.0  # no new model scores on top of the hazard (churn-logreg-4)
        self.seen_rate = competing  # the silence risk at the rate over the days seen (-6)
        if competing:
            self.classifier = OffsetLogisticRegression(
                optimizer=optim.SGD(0.01),
                loss=CompetingRisksLoss(),
                l2=1e-4,
                intercept_init=DEPARTURE_LOG_ODDS,
            )
        else:  # a plain regression (the inactivity model: its features hold the silence)
            self.classifier = OffsetLogisticRegression(optimizer=optim.SGD(0.01), l2=1e-4)

    def __setstate__(self, state: dict[str, object]) -> None:
        """Restore a snapshot; one of an earlier release scores as it did then."""
        state.setdefault("horizon_days", 14.0)
        state.setdefault("hazard", 0.0)
        state.setdefault("competing", False)
        state.setdefault("seen_rate", False)
        features = state.setdefault("features", CHURN_FEATURES_V1)
        if features == CHURN_FEATURES:
            state["features"] = CHURN_FEATURES  # one tuple for every restored model
        self.__dict__.update(state)

    @property
    def model_version(self) -> str:
        """``churn-logreg-7``, ``-6`` or ``-5`` (competing risks), ``-4`` (Poisson offset), ``-3``.

        ``-7`` reads last week's engagement ratios too; ``-6`` and ``-7`` read the silence
        risk's rate over the days seen, ``-5`` the heuristic's.
        """
        if self.competing:
            if not self.seen_rate:
                return "churn-logreg-5"
            return "churn-logreg-6" if self.features == CHURN_FEATURES_V1 else "churn-logreg-7"
        return "churn-logreg-4" if self.hazard else "churn-logreg-3"

    def _scaled(self, x: Mapping[str, float], *, learn: bool) -> dict[str, float]:
        logged = {name: math.log1p(max(x[name], 0.0)) for name in self.features}
        if learn:
            self.scaler.learn_one(logged)
        clip = self.clip
        return {k: min(max(v, -clip), clip) for k, v in self.scaler.transform_one(logged).items()}

    def _poisson(self, x: Mapping[str, float]) -> float:
        """The silence risk (or the Poisson heuristic's probability), kept off 0 and 1."""
        if self.seen_rate:
            p = silence_risk(x, self.horizon_days)
        else:
            p = poisson_churn(x, self.horizon_days)
        return min(max(p, _P_FLOOR), 1.0 - _P_FLOOR)

    def _offset(self, x: Mapping[str, float]) -> float:
        """The Poisson hazard's share of the raw score (``churn-logreg-4``)."""
        if not self.hazard:
            return 0.0
        p = self._poisson(x)
        return self.hazard * math.log(p / (1.0 - p))

    def _prepare(self, x: Mapping[str, float]) -> OffsetLogisticRegression:
        """The classifier, its offset (or its loss's silence risk) set for ``x``."""
        classifier = self.classifier
        if self.competing:
            classifier.loss.silence = self._poisson(x)
        else:
            classifier.offset = self._offset(x)
        return classifier

    def predict_proba_one(self, x: Mapping[str, float]) -> float:
        scaled = self._scaled(x, learn=False)
        return self._prepare(x).predict_proba_one(scaled).get(True, 0.0)

    def learn_one(self, x: Mapping[str, float], y: bool) -> None:
        scaled = self._scaled(x, learn=True)
        self._prepare(x).learn_one(scaled, y)

    def contributions(self, x: Mapping[str, float], *, top: int) -> list[Contribution]:
        """``(feature, value, weight · scaled value)``, the largest effects first.

        The Poisson hazard is a function of ``sessions_7d``: its effect counts there (the
        offset, or with competing risks what the silence risk adds to the departure
        log-odds: ``logit(p) − (w · x + b)``).
        """
        scaled = self._scaled(x, learn=False)
        weights = self.classifier.weights
        effects = [(name, x[name], weights.get(name, 0.0) * scaled[name]) for name in scaled]
        if self.competing:
            z = self.classifier._raw_dot_one(scaled)
            p = min(max(self._prepare(x).loss.mean_func(z), _P_FLOOR), 1.0 - _P_FLOOR)
            rate_effect = math.log(p / (1.0 - p)) - z
        else:
            rate_effect = self._offset(x)
        if rate_effect:
            effects = [
                (name, value, effect + rate_effect if name == "sessions_7d" else effect)
                for name, value, effect in effects
            ]
        effects.sort(key=lambda effect: -abs(effect[2]))
        return effects[:top]


@stored_as("TreeChurn")
class TreeChurn:
    """Hoeffding adaptive tree (River) on :data:`CHURN_FEATURES_V1`; no contributions."""

    model_version = "churn-tree-1"

    def __init__(self, *, seed: int = 42) -> None:
        self.classifier = tree.HoeffdingAdaptiveTreeClassifier(grace_period=200, seed=seed)

    def predict_proba_one(self, x: Mapping[str, float]) -> float:
        return self.classifier.predict_proba_one(_v1(x)).get(True, 0.0)

    def learn_one(self, x: Mapping[str, float], y: bool) -> None:
        self.classifier.learn_one(_v1(x), y)

    def contributions(self, x: Mapping[str, float], *, top: int) -> list[Contribution]:
        return []


def _v1(x: Mapping[str, float]) -> dict[str, float]:
    return {name: x[name] for name in CHURN_FEATURES_V1}


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


def silence_risk(x: Mapping[str, float], horizon_days: float) -> float:
    """``P(no session within the horizon)`` at the user's rate over the days they were seen.

    ``sessions_7d`` decays with a half-life of 7 days
    (:data:`~pipeline.core.features.SHORT_HALF_LIFE_DAYS`) from the user's first event on:
    after ``t`` days a viewer holds ``1 − 2^(−t/7)`` of the count a long-standing viewer of the
    same rate holds. The heuristic (:func:`poisson_churn`) reads every count as a
    long-standing viewer's, so a viewer in their first weeks looks rarer than they are;
    here the count is divided by that share, and a viewer seen less than a week is read
    as seen a week (half the count): a new viewer's few sessions say little of their
    rate, and reading them over a day or two made the heuristic the better ranker of the
    first churners (``docs/quality.md``). And a long-standing viewer's count holds more
    than a week of sessions (the decay keeps ``7 / ln 2 ≈ 10.1`` days' worth, and the
    session that just ended): the rate is read at :data:`SILENCE_RATE_SCALE` of the
    heuristic's.

    >>> x = dict.fromkeys(CHURN_FEATURES, 0.0) | {"sessions_7d": 1.0, "tenure_days": 5.0}
    >>> round(poisson_churn(x, 14), 3), round(silence_risk(x, 14), 3)  # a session in 5 days
    (0.135, 0.033)
    >>> round(silence_risk(x | {"tenure_days": 14.0}, 14), 3)  # seen two weeks
    0.104
    >>> round(silence_risk(x | {"tenure_days": 365.0}, 14), 3)  # a long-standing viewer
    0.183
    """
    seen = max(1.0 - 2.0 ** (-x["tenure_days"] / SHORT_HALF_LIFE_DAYS), 0.5)
    return poisson_churn(x, horizon_days * SILENCE_RATE_SCALE / seen)


SILENCE_RATE_SCALE = 0.85
"""The share of the heuristic's rate (``sessions_7d / 7``) the silence risk reads. The
exact share for a Poisson viewer depends on their rate (the ended session counts one), so
it was chosen over the scenarios and seeds of ``docs/quality_matrix.py``: see
``docs/quality.md``."""

_P_FLOOR = 1e-4
"""The Poisson probability is kept within ``[_P_FLOOR, 1 - _P_FLOOR]`` before its log-odds."""

DEPARTURE_LOG_ODDS = -4.0
"""Where the departure risk's intercept starts (``σ(−4) ≈ 1.8 %`` of session ends followed
by a departure): near the rate of the simulated audiences (1–2 %) and of a monthly churn
of a few percent spread over a month's sessions. From 0 (50 %), the first weeks' scores
were far above the churn rate: expected calibration error 0.037 against 0.007 from −4
(600 users, 60 days, seed 1, ``docs/quality_matrix.py``), AUC 0.810 against 0.841."""

INACTIVE_FEATURES: tuple[str, ...] = (*CHURN_FEATURES_V1, "silence_days", "silence_ratio")
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
        # its features hold the silence, not a session's end
        super().__init__(competing=False, features=INACTIVE_FEATURES)

    def __setstate__(self, state: dict[str, object]) -> None:
        state.setdefault("features", INACTIVE_FEATURES)
        super().__setstate__(state)


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
