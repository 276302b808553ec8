"""The signal ranker is River's StandardScaler + LogisticRegression, as numpy vectors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import linear_model, optim, preprocessing

from pipeline.models.reco.ranker import SignalRanker

NAMES = ("a", "b", "c")


def test_learning_one_row_at_a_time_matches_river_scaler_and_logistic_regression() -> None:
    ours = SignalRanker(3, lr=0.02, l2=1e-4, intercept_lr=0.01)
    scaler = preprocessing.StandardScaler()
    model = linear_model.LogisticRegression(optimizer=optim.SGD(0.02), l2=1e-4)
    rng = np.random.default_rng(4)
    for _ in range(3_000):
        row = rng.normal([1.0, 0.0, 5.0], [1.0, 2.0, 0.5])
        label = bool(row[0] + rng.normal() > 1.0)
        x = dict(zip(NAMES, row.tolist(), strict=True))
        scaler.learn_one(x)
        model.learn_one(scaler.transform_one(x), label)
        ours.learn(row[None, :], np.array([label]))
    np.testing.assert_allclose(ours.means, [scaler.means[n] for n in NAMES])
    np.testing.assert_allclose(ours.vars, [scaler.vars[n] for n in NAMES])
    np.testing.assert_allclose(ours.weights, [model.weights[n] for n in NAMES], rtol=1e-9)
    assert ours.intercept == pytest.approx(model.intercept, rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=2).map(np.array),
        min_size=1,
        max_size=12,
    ),
    st.integers(1, 5),
)
def test_a_minibatch_leaves_the_mean_and_variance_one_row_at_a_time_leaves(
    rows: list[np.ndarray], batch: int
) -> None:
    batched, single = SignalRanker(2), SignalRanker(2)
    for start in range(0, len(rows), batch):
        block = np.array(rows[start : start + batch])
        batched.learn(block, np.zeros(len(block), bool))
    for row in rows:
        single.learn(row[None, :], np.array([False]))
    np.testing.assert_allclose(batched.means, single.means, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(batched.vars, single.vars, rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(batched.means, np.mean(rows, axis=0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(batched.vars, np.var(rows, axis=0), rtol=1e-7, atol=1e-6)


def test_a_signal_that_never_varied_counts_nothing() -> None:
    ranker = SignalRanker(2)
    for _ in range(10):
        ranker.learn(np.array([[3.0, 1.0], [3.0, 0.0]]), np.array([True, False]))
    coefficients, offset = ranker.linear()
    assert coefficients[0] == 0.0 and coefficients[1] > 0.0
    assert offset == pytest.approx(-coefficients[1] * 0.5)
