"""The signal ranker is River's StandardScaler + LogisticRegression, as numpy vectors."""

from __future__ import annotations

import copy

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


def test_a_minibatch_steps_as_river_does_sample_by_sample_at_the_same_weights() -> None:
    """Each batched step equals River's steps on each of its rows, from the same weights, summed.

    River's scaler learns the whole batch first (as ours does); then each row is learnt by
    its own copy of River's logistic regression at the batch's starting weights, and the
    copies' changes are added up. A row given twice counts twice. ``linear()`` gives
    River's raw score of every row after each step, intercept aside.
    """
    ours = SignalRanker(3, lr=0.02, l2=1e-4, intercept_lr=0.01)
    scaler = preprocessing.StandardScaler()
    model = linear_model.LogisticRegression(optimizer=optim.SGD(0.02), l2=1e-4)
    rng = np.random.default_rng(9)
    for _ in range(300):
        rows = rng.normal([1.0, 0.0, 5.0], [1.0, 2.0, 0.5], size=(int(rng.integers(1, 9)), 3))
        if len(rows) > 2:
            rows[-1] = rows[0]  # a row drawn twice
        labels = rows[:, 0] + rng.normal(size=len(rows)) > 1.0
        xs = [dict(zip(NAMES, row.tolist(), strict=True)) for row in rows]
        for x in xs:
            scaler.learn_one(x)
        start, intercept = dict(model.weights), model.intercept
        steps = {name: 0.0 for name in NAMES}
        intercept_step = 0.0
        for x, label in zip(xs, labels, strict=True):
            alone = copy.deepcopy(model)
            alone.learn_one(scaler.transform_one(x), bool(label))
            for name in NAMES:
                steps[name] += alone.weights.get(name, 0.0) - start.get(name, 0.0)
            intercept_step += alone.intercept - intercept
        for name in NAMES:
            model._weights[name] = start.get(name, 0.0) + steps[name]
        model.intercept = intercept + intercept_step
        ours.learn(rows, labels)
        np.testing.assert_allclose(ours.weights, [model.weights[n] for n in NAMES], rtol=1e-9)
        assert ours.intercept == pytest.approx(model.intercept, rel=1e-9, abs=1e-12)
        coefficients, offset = ours.linear()
        river_scores = [model._raw_dot_one(scaler.transform_one(x)) - model.intercept for x in xs]
        np.testing.assert_allclose(rows @ coefficients + offset, river_scores, atol=1e-9)
