"""The champion's two competing risks: a departure it learns, a silence the rate tells."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.features import CHURN_FEATURES
from pipeline.models.churn import (
    DEPARTURE_LOG_ODDS,
    SILENCE_RATE_SCALE,
    CompetingRisksLoss,
    LogisticChurn,
    poisson_churn,
    silence_risk,
)

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
    seen = dict.fromkeys(CHURN_FEATURES, 1.0) | {"tenure_days": 365.0}
    users = [seen | {"sessions_7d": s} for s in (0.2, 1.0, 3.0, 9.0)]
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
    rare = base | {"sessions_7d": 0.3}  # P(silence) ≈ e^(−0.85 · 0.6) ≈ 0.6 by the rate alone
    for i in range(3_000):
        seen = {"tenure_days": 100.0 + i % 50}
        model.learn_one(base | seen, False)
        model.learn_one(departing | seen, True)
        model.learn_one(rare | seen, i % 20 < 12)  # 60 % silent
    weights = model.classifier.weights
    assert weights["completion_ratio"] < -0.5  # low completion: departure
    assert abs(weights["sessions_7d"]) < abs(weights["completion_ratio"]) / 3
    seen = {"tenure_days": 125.0}
    assert model.predict_proba_one(departing | seen) > 0.8 > 0.1 > model.predict_proba_one(base)
    assert model.predict_proba_one(rare | seen) == pytest.approx(0.6, abs=0.08)


def test_a_new_viewer_s_rate_is_read_over_the_days_they_were_seen() -> None:
    """Two sessions in a viewer's first ten days are a higher rate than in a year's count.

    The counter decays from the first event on: ten days in, a viewer holds 63 % of what a
    long-standing viewer of the same rate holds. A viewer seen less than a week is read as
    seen a week. The heuristic reads them all alike.
    """
    model = LogisticChurn()
    old = dict.fromkeys(CHURN_FEATURES, 1.0) | {"sessions_7d": 2.0, "tenure_days": 365.0}
    new = old | {"tenure_days": 10.0}
    share = 1.0 - 2.0 ** (-10.0 / 7.0)
    assert silence_risk(old, 14.0) == pytest.approx(math.exp(-SILENCE_RATE_SCALE * 4.0), rel=1e-9)
    assert silence_risk(new, 14.0) == pytest.approx(silence_risk(old, 14.0) ** (1 / share))
    assert model._poisson(new) < model._poisson(old)
    assert model.predict_proba_one(new) < model.predict_proba_one(old)
    assert poisson_churn(new, 14.0) == poisson_churn(old, 14.0) == math.exp(-4.0)
    for days in (0.0, 1.0, 3.0, 7.0):  # read as seen a week: half the count
        first_week = old | {"tenure_days": days}
        assert silence_risk(first_week, 14.0) == pytest.approx(silence_risk(old, 14.0) ** 2)
