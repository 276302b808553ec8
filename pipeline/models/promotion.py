"""Automatic promotion of the churn challenger, by an always-valid test on prequential AUC.

A partition runs a churn champion (whose scores are published) and a challenger (in
shadow). Each labelled prediction is a look: when the challenger's AUC is higher than the
champion's by an always-valid sequential test, the challenger becomes the champion, from
the next score on. A champion that is better is not replaced by noise: the test may be
looked at after every label and still, when the challenger is not better, promotes with
probability at most ``alpha`` over the whole run.

AUC is not a mean of per-sample values, so the test runs on its placements (DeLong et al.,
1988): a positive's placement under a model is the share of negatives that model scored
below it (ties half), and the AUC is the mean placement of the positives. Each positive
labelled is placed against the last ``window`` negatives under both models; the
differences of its two placements (challenger minus champion) are paired values with mean
``AUC(challenger) − AUC(champion)`` over those negatives, and the mixture sequential test of
:mod:`pipeline.experiments.stats` (the experiments' statistics,
:meth:`~pipeline.experiments.stats.SequentialTest.update_paired`) gives their confidence
sequence. The challenger is promoted once the sequence's lower bound is above zero, with
at least ``min_positives`` positives seen. After a promotion the test starts again, the
former champion now the challenger. Positives are the rare class of churn labels, so they
are the ones placed: each against many negatives, which keeps the placements nearly
independent; negatives only fill the window.

Everything is a function of the labels and the scores in their order: a replay promotes
at the same label.

Examples
--------
>>> import random
>>> rng = random.Random(7)
>>> promotion = ChurnPromotion(min_positives=20)
>>> promoted_at = None
>>> for n in range(20_000):
...     churned = rng.random() < 0.1
...     good = rng.gauss(1.5 if churned else 0.0, 1.0)  # AUC 0.86
...     weak = rng.gauss(0.5 if churned else 0.0, 1.0)  # AUC 0.64
...     if promotion.observe({"weak": weak, "good": good}, churned,
...                          champion="weak", challenger="good"):
...         promoted_at = n
...         break
>>> promoted_at is not None and promotion.history[-1][1:3]
('weak', 'good')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.experiments.stats import Moments, SequentialTest
from pipeline.serde.snapshots import stored_as

__all__ = ["ChurnPromotion"]


@stored_as("ChurnPromotion")
class ChurnPromotion:
    """The running test of a partition's churn challenger against its champion.

    Parameters
    ----------
    alpha
        Level of the test: the chance that a challenger no better than the champion is
        ever promoted, however long it runs, is at most ``alpha``.
    horizon
        Positives at which the test is most powerful (valid at any count).
    window
        Negatives each positive is placed against: the most recent ones.
    min_positives
        Positives seen since the last promotion before a promotion may happen.

    Attributes
    ----------
    history
        One ``(label index, former champion, new champion, positives)`` per promotion:
        the labels observed before it and the positives its test took.
    """

    def __init__(
        self,
        *,
        alpha: float = 0.05,
        horizon: int = 2_000,
        window: int = 2_000,
        min_positives: int = 50,
    ) -> None:
        if window < 1 or min_positives < 2:
            raise ValueError("window must be >= 1 and min_positives >= 2")
        self.alpha = alpha
        self.horizon = horizon
        self.window = window
        self.min_positives = min_positives
        self.labels = 0
        self.history: list[tuple[int, str, str, int]] = []
        self._negatives: dict[str, npt.NDArray[np.float64]] = {}
        self._negatives_seen = 0
        self._reset()

    def _reset(self) -> None:
        self._differences = Moments(0, 0.0, 0.0)
        self._test = SequentialTest(alpha=self.alpha, horizon=self.horizon)

    @property
    def positives(self) -> int:
        """Positives placed since the test last started."""
        return self._differences.count

    @property
    def interval(self) -> tuple[float, float]:
        """Confidence sequence for ``AUC(challenger) − AUC(champion)``."""
        return self._test.interval

    @property
    def p_value(self) -> float:
        """Always-valid p-value of ``AUC(challenger) = AUC(champion)``."""
        return self._test.p_value

    def observe(
        self, scores: Mapping[str, float], churned: bool, *, champion: str, challenger: str
    ) -> bool:
        """Look at one labelled prediction; true when the challenger is promoted by it.

        ``scores`` holds the probabilities the models gave before the label was known; a
        prediction without both models' scores (e.g. made before the challenger ran) is
        not looked at.
        """
        ours, theirs = scores.get(champion), scores.get(challenger)
        if ours is None or theirs is None:
            return False
        self.labels += 1
        if not churned:
            self._add_negative(champion, challenger, ours, theirs)
            return False
        filled = min(self._negatives_seen, self.window)
        if filled == 0:
            return False
        difference = _placement(self._negatives[challenger][:filled], theirs) - _placement(
            self._negatives[champion][:filled], ours
        )
        moments = self._differences
        self._differences = Moments(
            moments.count + 1,
            moments.total + difference,
            moments.total_sq + difference * difference,
        )
        self._test.update_paired(self._differences)
        if self.positives < self.min_positives or self._test.interval[0] <= 0.0:
            return False
        self.history.append((self.labels, champion, challenger, self.positives))
        self._reset()
        return True

    def __getstate__(self) -> dict[str, Any]:
        """Plain values only (format 1): a snapshot names no class of the statistics."""
        moments, test = self._differences, self._test
        return {
            "format": 1,
            "settings": [self.alpha, self.horizon, self.window, self.min_positives],
            "labels": self.labels,
            "history": self.history,
            "negatives": self._negatives,
            "negatives_seen": self._negatives_seen,
            "differences": [moments.count, moments.total, moments.total_sq],
            "test": [test.lambda_, test.p_value, *test.interval],
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("format") != 1:
            raise ValueError(f"promotion state of format {state.get('format')!r}")
        self.alpha, self.horizon, self.window, self.min_positives = state["settings"]
        self.labels = state["labels"]
        self.history = [tuple(entry) for entry in state["history"]]  # type: ignore[misc]
        self._negatives = state["negatives"]
        self._negatives_seen = state["negatives_seen"]
        self._reset()
        self._differences = Moments(*state["differences"])
        self._test.lambda_, self._test.p_value, lower, upper = state["test"]
        self._test.interval = (lower, upper)

    def _add_negative(self, champion: str, challenger: str, ours: float, theirs: float) -> None:
        negatives = self._negatives
        if champion not in negatives or challenger not in negatives:  # a model new to the test
            negatives.clear()
            negatives[champion] = np.full(self.window, math.nan)
            negatives[challenger] = np.full(self.window, math.nan)
            self._negatives_seen = 0
        at = self._negatives_seen % self.window
        negatives[champion][at] = ours
        negatives[challenger][at] = theirs
        self._negatives_seen += 1


def _placement(negatives: npt.NDArray[np.float64], score: float) -> float:
    """Share of ``negatives`` below ``score``, ties counting one half."""
    below = np.count_nonzero(negatives < score)
    ties = np.count_nonzero(negatives == score)
    return (below + 0.5 * ties) / negatives.size
