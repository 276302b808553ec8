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

**Pooled across partitions.** A partition of 16 or 64 sees a 16th or a 64th of the
positives, too few for the test to decide (on 600 viewers over 60 days, ~10 at 16
partitions against the ``min_positives`` of 50). Where learning is shared
(:mod:`pipeline.models.shared`, :mod:`pipeline.models.exchange`), each partition's paired
differences since its last delta (:attr:`ChurnPromotion.fresh`, by champion and
challenger) travel with its delta, and :meth:`ChurnPromotion.pool` adds the other
partitions' differences of the same test to its own, then looks. Each partition's test is
then the same sequential test over all partitions' positives, in an order fixed by where
the merges sit in its stream (its own positives as they come, the others' as a block at
each merge), so it stays valid at every look and a replay promotes at the same point.
Differences of a test a partition no longer runs (the others had not promoted yet, or a
former pair) are not added.

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
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.experiments.stats import Moments, SequentialTest
from pipeline.serde.snapshots import stored_as

__all__ = ["ChurnPromotion", "pooled"]


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
        the labels observed before it and the positives its test took (this
        partition's and those pooled from others).
    fresh
        This partition's own paired differences since :meth:`clear_fresh`, by
        ``(champion, challenger)``: what it gives the other partitions' tests.
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
        self.fresh: dict[tuple[str, str], Moments] = {}
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
        one = Moments(1, difference, difference * difference)
        pair = (champion, challenger)
        fresh = self.fresh.get(pair)
        self.fresh[pair] = one if fresh is None else pooled((fresh, one))
        return self._look(pooled((self._differences, one)), champion, challenger)

    def pool(
        self, others: Mapping[tuple[str, str], Moments], *, champion: str, challenger: str
    ) -> bool:
        """Add other partitions' differences of this test and look; true when it promotes.

        Only ``others[(champion, challenger)]`` is added: differences of another pair
        belong to a test this partition does not run.

        >>> promotion = ChurnPromotion(min_positives=20)
        >>> evidence = {("weak", "good"): Moments(count=200, total=40.0, total_sq=26.0)}
        >>> promotion.pool(evidence, champion="weak", challenger="good")  # mean 0.2, sd 0.3
        True
        >>> promotion.history
        [(0, 'weak', 'good', 200)]
        >>> promotion.pool(evidence, champion="good", challenger="weak")  # not this test
        False
        """
        theirs = others.get((champion, challenger))
        if theirs is None or theirs.count == 0:
            return False
        return self._look(pooled((self._differences, theirs)), champion, challenger)

    def clear_fresh(self) -> None:
        """Forget the own differences given to the others (a delta took them)."""
        self.fresh = {}

    def _look(self, differences: Moments, champion: str, challenger: str) -> bool:
        self._differences = differences
        self._test.update_paired(differences)
        if self.positives < self.min_positives or self._test.interval[0] <= 0.0:
            return False
        self.history.append((self.labels, champion, challenger, self.positives))
        self._reset()
        return True

    def __getstate__(self) -> dict[str, Any]:
        """Plain values only (format 2): a snapshot names no class of the statistics."""
        moments, test = self._differences, self._test
        return {
            "format": 2,
            "settings": [self.alpha, self.horizon, self.window, self.min_positives],
            "labels": self.labels,
            "history": self.history,
            "negatives": self._negatives,
            "negatives_seen": self._negatives_seen,
            "differences": [moments.count, moments.total, moments.total_sq],
            "test": [test.lambda_, test.p_value, *test.interval],
            "fresh": [[*pair, m.count, m.total, m.total_sq] for pair, m in self.fresh.items()],
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Format 1 (before pooling) has no ``fresh``: nothing given to others yet."""
        if state.get("format") not in (1, 2):
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
        self.fresh = {
            (champion, challenger): Moments(count, total, total_sq)
            for champion, challenger, count, total, total_sq in state.get("fresh", ())
        }

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


def pooled(moments: Iterable[Moments]) -> Moments:
    """The moments of all the values of ``moments`` together, added in their order.

    >>> pooled([Moments(2, 0.5, 0.25), Moments(1, -0.25, 0.0625)])
    Moments(count=3, total=0.25, total_sq=0.3125)
    """
    count, total, total_sq = 0, 0.0, 0.0
    for m in moments:
        count, total, total_sq = count + m.count, total + m.total, total_sq + m.total_sq
    return Moments(count, total, total_sq)


def _placement(negatives: npt.NDArray[np.float64], score: float) -> float:
    """Share of ``negatives`` below ``score``, ties counting one half."""
    below = np.count_nonzero(negatives < score)
    ties = np.count_nonzero(negatives == score)
    return (below + 0.5 * ties) / negatives.size
