"""The champion's two competing risks: a departure it learns, a silence the rate tells."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.features import CHURN_FEATURES
from pipeline.models.churn import DEPARTURE_LOG_ODDS, CompetingRisksLoss, LogisticChurn

probabilities = st.floats(min_value=1e-4, max_value=1 - 1e-4)
log_odds = st.floats(min_value=-12.0, max_value=12.0)


@given(silence=probabilities, z=log_odds, churned=st.booleans())
def test_the_gradient_is_the_derivative_of_the_loss(
    silence: float, z: float, churned: bool
) -> None:
    loss = CompetingRisksLoss()
    loss.silence = silence
    h = 1e-6
    numeric = (loss(churned, z + h) - loss(churned, z - h)) / (2 * h)
    assert loss.gradient(churned, z) == pytest.approx(numeric, rel=1e-4, abs=1e-7)


@given(silence=probabilities, z=log_odds)
def test_the_probability_is_either_risk(silence: float, z: float) -> None:
    loss = CompetingRisksLoss()
    loss.silence = silence
    departure = 1.0 / (1.0 + math.exp(-z))
    p = loss.mean_func(z)
    assert p == pytest.approx(silence + departure - silence * departure, rel=1e-12)
    assert max(silence, departure) <= p * (1 + 1e-12)


def test_weights_that_learn_nothing_rank_as_the_heuristic() -> None:
    """Untrained: the Poisson silence or the prior departure, so the rate's order."""
    model = LogisticChurn()
    assert model.classifier.intercept == DEPARTURE_LOG_ODDS
    users = [dict.fromkeys(CHURN_FEATURES, 1.0) | {"sessions_7d": s} for s in (0.2, 1.0, 3.0, 9.0)]
    scores = [model.predict_proba_one(x) for x in users]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 4


def test_what_foretells_a_departure_is_learnt_and_a_silence_is_left_to_the_rate() -> None:
    """Departures follow a low completion; silences follow a low rate, whatever else.

    The regression learns completion's weight against departures, and learns little from
    the low-rate silences the heuristic already explains: the rate's weight stays small.
    """
    model = LogisticChurn()
    base = dict.fromkeys(CHURN_FEATURES, 1.0) | {"sessions_7d": 5.0, "completion_ratio": 0.8}
    departing = base | {"completion_ratio": 0.05}
    rare = base | {"sessions_7d": 0.3}  # P(silence) ≈ e^(−0.6) ≈ 0.55 by the rate alone
    for i in range(3_000):
        model.learn_one(base | {"tenure_days": float(i % 50)}, False)
        model.learn_one(departing | {"tenure_days": float(i % 50)}, True)
        model.learn_one(rare | {"tenure_days": float(i % 50)}, i % 20 < 11)  # 55 % silent
    weights = model.classifier.weights
    assert weights["completion_ratio"] < -0.5  # low completion: departure
    assert abs(weights["sessions_7d"]) < abs(weights["completion_ratio"]) / 3
    assert model.predict_proba_one(departing) > 0.8 > 0.1 > model.predict_proba_one(base)
    assert model.predict_proba_one(rare) == pytest.approx(0.55, abs=0.08)
