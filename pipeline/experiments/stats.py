"""Always-valid sequential statistics: a test of the difference of means, and an SRM test.

Both may be looked at after every batch of users, as often as one likes, and stopped at
any look: the chance that a true null hypothesis is *ever* rejected at level ``alpha`` stays
at most ``alpha``, which peeking at a fixed-horizon test does not allow.

:class:`SequentialTest` is the mixture sequential probability ratio test (mSPRT) with a
normal mixture, for the difference of two arms' means of user-level values (Johari,
Pekelis and Walsh, "Always valid inference: continuous monitoring of A/B tests",
arXiv:1512.04922, Operations Research 70(3), 2022; Lindon, Sanden and Shirikian, "Rapid
regression detection in software deployments through sequential testing", KDD 2022). With
``Δ̂`` the difference of the arms' means (treatment minus control), ``V`` its variance and
``N(θ0, τ²)`` the mixture over the true difference, the likelihood ratio against
``H0: Δ = θ0`` is::

    Λ_n = sqrt(V / (V + τ²)) · exp((Δ̂ − θ0)² τ² / (2 V (V + τ²)))

with ``V = s_A²/n_A + s_B²/n_B`` from each arm's sample variance (the same as the
``σ² (1/n_A + 1/n_B)`` of the papers when the arms share a variance ``σ²``, and right when
they do not). The always-valid p-value is ``p_n = min(p_{n−1}, 1/Λ_n)`` with ``p_0 = 1``,
and the confidence sequence, the differences no look rejects at level ``α``, is::

    Δ̂ ± sqrt(V (V + τ²) / τ² · (2 log(1/α) + log((V + τ²) / V)))

intersected over the looks (running maximum of the lower bounds, minimum of the upper).
Plugging in the sample variances makes the guarantee asymptotic, as in both papers: it
holds as the arms grow, and the tests measure it from a hundred users per arm.

The mixing variance ``τ²`` is set relative to the variance: ``τ² = r² σ̄²``, with
``σ̄² = V / (1/n_A + 1/n_B)`` (the common variance, or a weighted mean of the two) and ``r²``
chosen so that the confidence sequence is narrowest when both arms hold ``horizon`` users
(:func:`mixing_ratio`). ``horizon`` is the planned size of an arm; the test is valid at any
size, the choice only moves where it is most powerful.

:class:`SampleRatioTest` checks the assignment counts against the intended weights with the
Bayes factor of a Dirichlet-multinomial mixture (Lindon and Malek, "Anytime-valid inference
for multinomial count data", arXiv:2011.03567, NeurIPS 2022); its always-valid p-value is
the running minimum of ``1/BF``.

Examples
--------
>>> test = SequentialTest(horizon=20_000)
>>> test.update(Moments.of_conversions(20_000, 2_000), Moments.of_conversions(20_000, 2_200))
>>> test.p_value < 0.05, [round(bound, 4) for bound in test.interval]
(True, [0.0007, 0.0193])
>>> srm = SampleRatioTest([0.5, 0.5])
>>> srm.update([10_300, 9_700])
>>> srm.p_value < 0.05
True

"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy.special import gammaln

__all__ = [
    "SRM_CONCENTRATION",
    "Moments",
    "SampleRatioTest",
    "SequentialTest",
    "mixing_ratio",
    "mixture_log_likelihood_ratio",
    "mixture_radius",
    "srm_log_bayes_factor",
]

SRM_CONCENTRATION: Final = 100.0
"""Default concentration ``k`` of the SRM test's prior ``Dirichlet(k · weights)``: with 50/50
weights it puts the standard deviation of a share at 0.05, the size of mismatches that
broken assignment or logging produces, so those are found within a few thousand users."""


@dataclass(frozen=True, slots=True)
class Moments:
    """Sufficient statistics of one arm's user-level values: count, sum, sum of squares.

    Examples
    --------
    >>> arm = Moments(count=4, total=10.0, total_sq=30.0)  # values 1, 2, 3, 4
    >>> arm.mean, round(arm.variance, 4)
    (2.5, 1.6667)

    """

    count: int
    total: float
    total_sq: float

    @classmethod
    def of_conversions(cls, users: int, converted: int) -> Moments:
        """Moments of 0/1 values: ``users`` users of whom ``converted`` converted."""
        return cls(users, converted, converted)

    @property
    def mean(self) -> float:
        """Mean of the values."""
        return self.total / self.count

    @property
    def variance(self) -> float:
        """Sample variance of the values (denominator ``count - 1``)."""
        return max(self.total_sq - self.total * self.total / self.count, 0.0) / (self.count - 1)


def mixture_log_likelihood_ratio(
    difference: npt.ArrayLike,
    variance: npt.ArrayLike,
    mixing_variance: npt.ArrayLike,
    null: float = 0.0,
) -> npt.NDArray[np.float64]:
    """Log of the normal-mixture likelihood ratio ``Λ_n`` (see the module docstring).

    Parameters
    ----------
    difference
        Estimated difference ``Δ̂``.
    variance
        Its variance ``V`` (positive).
    mixing_variance
        Variance ``τ²`` of the normal mixture over the true difference (positive).
    null
        Difference ``θ0`` under the null hypothesis, the centre of the mixture.

    Returns
    -------
    numpy.ndarray
        ``log Λ_n``, elementwise over the broadcast arguments.

    Examples
    --------
    >>> float(mixture_log_likelihood_ratio(0.0, 1.0, 3.0))  # no difference: log sqrt(1/4)
    -0.6931471805599453

    """
    v = np.asarray(variance, dtype=np.float64)
    tau2 = np.asarray(mixing_variance, dtype=np.float64)
    total = v + tau2
    excess = np.asarray(difference, dtype=np.float64) - null
    return 0.5 * np.log(v / total) + excess * excess * tau2 / (2.0 * v * total)


def mixture_radius(
    variance: npt.ArrayLike, mixing_variance: npt.ArrayLike, alpha: float
) -> npt.NDArray[np.float64]:
    """Half-width of the mixture's confidence sequence at one look (see the module docstring).

    Parameters
    ----------
    variance
        Variance ``V`` of the estimated difference (positive).
    mixing_variance
        Variance ``τ²`` of the normal mixture (positive).
    alpha
        Level: the sequence covers the true difference at every look with probability at
        least ``1 - alpha``.

    Returns
    -------
    numpy.ndarray
        ``sqrt(V (V + τ²) / τ² · (2 log(1/α) + log((V + τ²) / V)))``, elementwise.

    Examples
    --------
    >>> round(float(mixture_radius(1.0, mixing_ratio(1, 0.05) / 2, 0.05)), 3)  # in units of sd
    3.035

    """
    v = np.asarray(variance, dtype=np.float64)
    tau2 = np.asarray(mixing_variance, dtype=np.float64)
    total = v + tau2
    return np.sqrt(v * total / tau2 * (2.0 * math.log(1.0 / alpha) + np.log(total / v)))


def mixing_ratio(horizon: int, alpha: float) -> float:
    """``r² = τ²/σ²`` that makes the confidence sequence narrowest at ``horizon`` users per arm.

    With ``x = τ²/V``, the squared radius is ``V (1 + 1/x) (2 log(1/α) + log(1 + x))``,
    smallest where ``x = 2 log(1/α) + log(1 + x)`` (about 8.2 for ``α = 0.05``); at
    ``n_A = n_B = horizon``, ``V = 2 σ²/horizon``, so ``r² = 2 x / horizon``.

    Parameters
    ----------
    horizon
        Planned number of users per arm.
    alpha
        Level of the confidence sequence.

    Returns
    -------
    float
        The ratio of the mixing variance to the values' variance.

    Examples
    --------
    >>> round(mixing_ratio(1, 0.05) / 2, 3), round(math.sqrt(mixing_ratio(30_000, 0.05)), 4)
    (8.212, 0.0234)

    """
    base = 2.0 * math.log(1.0 / alpha)
    x = base
    for _ in range(60):  # a contraction (slope 1/(1+x) < 1/6): converged long before
        x = base + math.log1p(x)
    return 2.0 * x / horizon


class SequentialTest:
    """Always-valid test and confidence sequence for the difference of two arms' means.

    Each :meth:`update` is one look: the two arms' :class:`Moments` as of that look (the
    statistics of all users so far, not of the users since the last look). Until both arms
    hold two users and a positive variance, a look carries no evidence.

    Parameters
    ----------
    alpha
        Level of the confidence sequence (the p-value does not depend on it).
    horizon
        Planned number of users per arm, where the test is most powerful
        (:func:`mixing_ratio`); it is valid at every size.
    null
        Difference (treatment minus control) under the null hypothesis.

    Attributes
    ----------
    lambda_
        Mixture likelihood ratio ``Λ_n`` of the last look (1 before any evidence).
    p_value
        Always-valid p-value: the smallest ``1/Λ`` of all looks, at most 1.
    interval
        Confidence sequence for the difference: ``(lower, upper)``, intersected over the
        looks. It is empty (``lower > upper``) only if the data contradict the model, which
        happens with probability at most ``alpha``.

    Examples
    --------
    >>> test = SequentialTest(horizon=20_000)
    >>> test.update(Moments.of_conversions(1_000, 100), Moments.of_conversions(1_000, 108))
    >>> round(test.p_value, 3), [round(bound, 3) for bound in test.interval]
    (1.0, [-0.056, 0.072])
    >>> test.update(Moments.of_conversions(20_000, 2_000), Moments.of_conversions(20_000, 2_200))
    >>> round(test.lambda_, 1), round(test.p_value, 4)
    (37.9, 0.0264)

    """

    def __init__(self, *, alpha: float = 0.05, horizon: int = 10_000, null: float = 0.0) -> None:
        self.alpha = alpha
        self.null = null
        self.ratio = mixing_ratio(horizon, alpha)
        self.lambda_ = 1.0
        self.p_value = 1.0
        self.interval = (-math.inf, math.inf)

    def update(self, control: Moments, treatment: Moments) -> None:
        """Take one look at both arms."""
        if control.count < 2 or treatment.count < 2:
            return
        information = 1.0 / control.count + 1.0 / treatment.count
        variance = control.variance / control.count + treatment.variance / treatment.count
        if variance <= 0.0:
            return
        self._look(treatment.mean - control.mean, variance, self.ratio * variance / information)

    def update_paired(self, differences: Moments) -> None:
        """Take one look at paired differences: each pair's treatment minus control value.

        The same mixture on one sample: ``Δ̂`` is the mean difference and ``V = s²/n``. As
        a pair holds two values, the test is most powerful at ``horizon / 2`` pairs (the
        information ``1/n`` of ``n`` pairs is that of two arms of ``2n``).

        >>> test = SequentialTest(horizon=400)
        >>> test.update_paired(Moments(count=200, total=20.0, total_sq=20.0))  # mean 0.1, sd 0.3
        >>> round(test.p_value, 4), [round(bound, 3) for bound in test.interval]
        (0.0003, [0.035, 0.165])
        """
        if differences.count < 2:
            return
        variance = differences.variance / differences.count
        if variance <= 0.0:
            return
        self._look(differences.mean, variance, self.ratio * variance * differences.count / 2.0)

    def _look(self, difference: float, variance: float, mixing_variance: float) -> None:
        log_lr = float(
            mixture_log_likelihood_ratio(difference, variance, mixing_variance, self.null)
        )
        radius = float(mixture_radius(variance, mixing_variance, self.alpha))
        self.lambda_ = math.exp(min(log_lr, 700.0))
        self.p_value = min(self.p_value, math.exp(-max(log_lr, 0.0)))
        lower, upper = self.interval
        self.interval = (max(lower, difference - radius), min(upper, difference + radius))


def srm_log_bayes_factor(
    counts: npt.ArrayLike, weights: Sequence[float], concentration: float = SRM_CONCENTRATION
) -> npt.NDArray[np.float64]:
    """Log Bayes factor of a Dirichlet-multinomial mixture against the intended weights.

    ``log BF = log B(α + x) − log B(α) − Σ x_i log p_i``, with ``x`` the counts, ``p`` the
    weights, ``α = concentration · p`` and ``B`` the multivariate Beta function.

    Parameters
    ----------
    counts
        Users assigned to each variant; the last axis runs over the variants.
    weights
        Intended share of each variant (positive, summing to 1).
    concentration
        Concentration ``k`` of the prior ``Dirichlet(k · weights)``.

    Returns
    -------
    numpy.ndarray
        The log Bayes factor, over the leading axes of ``counts``.

    Examples
    --------
    >>> float(srm_log_bayes_factor([0, 0], [0.5, 0.5]))
    0.0
    >>> srm_log_bayes_factor([[5_000, 5_000], [5_300, 4_700]], [0.5, 0.5]).round(2)
    array([-2.31, 15.52])

    """
    x = np.asarray(counts, dtype=np.float64)
    p = np.asarray(weights, dtype=np.float64)
    prior = concentration * p

    def log_beta(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.asarray(gammaln(a).sum(axis=-1) - gammaln(a.sum(axis=-1)), dtype=np.float64)

    return log_beta(prior + x) - log_beta(prior) - (x * np.log(p)).sum(axis=-1)


class SampleRatioTest:
    """Always-valid sample-ratio-mismatch test of assignment counts against their weights.

    Each :meth:`update` is one look: the number of users assigned to each variant so far.

    Parameters
    ----------
    weights
        Intended share of each variant.
    concentration
        Concentration of the Dirichlet prior (:data:`SRM_CONCENTRATION`).

    Attributes
    ----------
    log_bayes_factor
        Log Bayes factor of the last look (0 before any).
    p_value
        Always-valid p-value: the running minimum of ``1/BF``, at most 1.

    Examples
    --------
    >>> srm = SampleRatioTest([0.2, 0.3, 0.5])
    >>> srm.update([1_010, 1_480, 2_510])
    >>> srm.p_value
    1.0

    """

    def __init__(
        self, weights: Sequence[float], *, concentration: float = SRM_CONCENTRATION
    ) -> None:
        self.weights = tuple(weights)
        self.concentration = concentration
        self.log_bayes_factor = 0.0
        self.p_value = 1.0

    def update(self, counts: Sequence[int]) -> None:
        """Take one look at the assignment counts."""
        self.log_bayes_factor = float(
            srm_log_bayes_factor(counts, self.weights, self.concentration)
        )
        self.p_value = min(self.p_value, math.exp(-max(self.log_bayes_factor, 0.0)))
