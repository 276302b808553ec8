"""How much each signal counts: standardised signals into an online logistic regression.

:class:`SignalRanker` is River's ``StandardScaler`` followed by River's
``LogisticRegression`` (log loss, plain SGD, L2, intercept learned at its own rate), kept
as numpy vectors over a fixed list of signals so that a chosen item and its sampled
negatives are learned in one vectorised step, and a ranking reads its weights without
converting dictionaries. The recommender learns five rows per choice; through River's
dictionaries that was ~70 µs per choice.

Learning one row is exactly River's ``scaler.learn_one(x)`` then
``model.learn_one(scaler.transform_one(x), y)`` (``tests/unit/models/test_ranker.py`` checks it
against River). Several rows are the minibatch form: the scaler learns them all (its
running mean and variance merged exactly, as one at a time would give), then every
row's gradient is taken at the current weights and summed.

Examples
--------
>>> import numpy as np
>>> ranker = SignalRanker(2)
>>> for _ in range(100):   # chosen items have a high first signal; the second is noise
...     ranker.learn(np.array([[1.0, 0.3], [0.0, 0.5], [0.1, 0.2]]),
...                  np.array([True, False, False]))
>>> coefficients, offset = ranker.linear()
>>> bool(coefficients[0] > abs(coefficients[1]))
True
"""

from __future__ import annotations

import numpy as np

from pipeline.serde.snapshots import stored_as

__all__ = ["SignalRanker"]


@stored_as("SignalRanker")
class SignalRanker:
    """Running standardisation and logistic-regression weights of ``n_signals`` signals."""

    def __init__(
        self, n_signals: int, *, lr: float = 0.02, l2: float = 1e-4, intercept_lr: float = 0.01
    ) -> None:
        self.lr = lr
        self.l2 = l2
        self.intercept_lr = intercept_lr
        self.count = 0
        self.means = np.zeros(n_signals)
        self.vars = np.zeros(n_signals)
        self.weights = np.zeros(n_signals)
        self.intercept = 0.0
        self._inverse_std = np.zeros(n_signals)

    def learn(self, signals: np.ndarray, chosen: np.ndarray) -> None:
        """One step on the rows ``signals`` (``(m, n_signals)``), ``chosen[i]`` their labels."""
        m = len(signals)
        count = self.count
        total = self.count = count + m
        batch_mean = signals.sum(axis=0) / m
        centred = signals - batch_mean
        delta = batch_mean - self.means
        # Chan et al.'s merge of two (count, mean, variance) summaries: exact, as one row
        # at a time gives
        spread = (centred * centred).sum(axis=0) + delta * delta * (count * m / total)
        self.vars = (self.vars * count + spread) / total
        self.means = self.means + delta * (m / total)
        std = np.sqrt(self.vars)
        self._inverse_std = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
        x = (signals - self.means) * self._inverse_std
        sign = np.where(chosen, 1.0, -1.0)
        margin = sign * (x @ self.weights + self.intercept)
        gradient = -sign / (np.exp(np.minimum(margin, 500.0)) + 1.0)  # log loss by raw score
        self.intercept -= self.intercept_lr * float(gradient.sum())
        self.weights = self.weights * (1.0 - m * self.lr * self.l2) - self.lr * (gradient @ x)

    def restore(
        self, count: int, means: np.ndarray, vars_: np.ndarray, weights: np.ndarray,
        intercept: float,
    ) -> None:  # fmt: skip
        """Set the running moments and the weights (merged from elsewhere)."""
        self.count = count
        self.means = np.asarray(means, dtype=float)
        self.vars = np.asarray(vars_, dtype=float)
        self.weights = np.asarray(weights, dtype=float)
        self.intercept = float(intercept)
        std = np.sqrt(self.vars)
        self._inverse_std = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)

    def linear(self) -> tuple[np.ndarray, float]:
        """``(coefficients, offset)`` with ``coefficients · signals + offset`` the raw score.

        The intercept is left out: it is the same for every item. A signal that has not
        varied yet counts 0, as River's scaler maps it to 0.
        """
        coefficients = self.weights * self._inverse_std
        return coefficients, -float(self.means @ coefficients)
