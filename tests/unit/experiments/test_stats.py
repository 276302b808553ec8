"""Sequential statistics under continuous peeking: error rates, power, coverage, SRM.

The simulations draw Bernoulli conversions for two arms, 100 users per arm between looks,
as binomial counts per look (the sums are all a look needs), cumulated over a
``(runs, looks)`` array: 2,000 runs of 300 looks take a few megabytes per array. Every
seed is fixed, so the measured rates (printed, see ``pytest -rP``) are reproducible.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest

from pipeline.experiments.stats import (
    Moments,
    SampleRatioTest,
    SequentialTest,
    mixing_ratio,
    mixture_log_likelihood_ratio,
    mixture_radius,
    srm_log_bayes_factor,
)

ALPHA = 0.05
USERS_PER_LOOK = 100
USERS_PER_ARM = 30_000
LOOKS = USERS_PER_ARM // USERS_PER_LOOK
Z_975 = 1.959963984540054  # two-sided 5 % critical value of the standard normal

Array = npt.NDArray[np.float64]


@dataclass
class Looks:
    """Cumulative users and conversions of each arm at each look: arrays of ``(runs, looks)``."""

    users: Array
    control: Array
    treatment: Array


def simulate(runs: int, rates: tuple[float, float], seed: int) -> Looks:
    rng = np.random.default_rng(seed)
    users = np.broadcast_to(USERS_PER_LOOK * np.arange(1.0, LOOKS + 1), (runs, LOOKS))
    control, treatment = (
        rng.binomial(USERS_PER_LOOK, rate, size=(runs, LOOKS)).cumsum(axis=1).astype(np.float64)
        for rate in rates
    )
    return Looks(users, control, treatment)


@dataclass
class Verdicts:
    """What :class:`SequentialTest` reports at each look, computed for all runs at once."""

    difference: Array
    log_lambda: Array
    p_value: Array
    lower: Array
    upper: Array
    z: Array


def sequential(looks: Looks, horizon: int = USERS_PER_ARM) -> Verdicts:
    """The arithmetic of ``SequentialTest.update`` over arrays (their parity is tested below)."""
    n = looks.users
    mean_a, mean_b = looks.control / n, looks.treatment / n
    var_a = (looks.control - looks.control * mean_a) / (n - 1)  # Bernoulli: sum of squares = sum
    var_b = (looks.treatment - looks.treatment * mean_b) / (n - 1)
    variance = var_a / n + var_b / n
    evidence = variance > 0
    variance = np.where(evidence, variance, 1.0)
    mixing_variance = mixing_ratio(horizon, ALPHA) * variance / (2.0 / n)
    difference = mean_b - mean_a
    log_lambda = np.where(
        evidence, mixture_log_likelihood_ratio(difference, variance, mixing_variance), 0.0
    )
    radius = np.where(evidence, mixture_radius(variance, mixing_variance, ALPHA), np.inf)
    return Verdicts(
        difference=difference,
        log_lambda=log_lambda,
        p_value=np.exp(-np.maximum.accumulate(np.maximum(log_lambda, 0.0), axis=1)),
        lower=np.maximum.accumulate(difference - radius, axis=1),
        upper=np.minimum.accumulate(difference + radius, axis=1),
        z=difference / np.sqrt(variance),
    )


def share(flags: npt.NDArray[np.bool_]) -> float:
    return float(flags.mean())


# --- the test of the difference of means -------------------------------------------------------


def looked_at(looks: Looks, run: int) -> list[SequentialTest]:
    """A :class:`SequentialTest` fed one run look by look, copied after each look."""
    test = SequentialTest(alpha=ALPHA, horizon=USERS_PER_ARM)
    states = []
    for users, control, treatment in zip(
        looks.users[run], looks.control[run], looks.treatment[run], strict=True
    ):
        test.update(
            Moments.of_conversions(int(users), int(control)),
            Moments.of_conversions(int(users), int(treatment)),
        )
        states.append(copy.copy(test))
    return states


def test_class_matches_the_vectorised_harness_look_by_look() -> None:
    looks = simulate(runs=4, rates=(0.10, 0.11), seed=7)
    verdicts = sequential(looks)
    for run in range(4):
        for look, test in enumerate(looked_at(looks, run)):
            assert test.lambda_ == pytest.approx(math.exp(verdicts.log_lambda[run, look]))
            assert test.p_value == pytest.approx(verdicts.p_value[run, look])
            assert test.interval == pytest.approx(
                (verdicts.lower[run, look], verdicts.upper[run, look])
            )


def test_p_value_only_falls_and_interval_only_narrows() -> None:
    looks = simulate(runs=50, rates=(0.10, 0.10), seed=8)
    tests = looked_at(looks, run=0)
    p_values = [test.p_value for test in tests]
    lower, upper = zip(*(test.interval for test in tests), strict=True)
    assert np.all(np.diff(p_values) <= 0)
    assert np.all(np.diff(lower) >= 0) and np.all(np.diff(upper) <= 0)
    # the running minimum matters: the instantaneous 1/Λ rises again in most A/A runs
    instantaneous = np.exp(-np.maximum(sequential(looks).log_lambda, 0.0))
    assert share(np.any(np.diff(instantaneous, axis=1) > 0, axis=1)) > 0.9


@pytest.mark.parametrize("ratio", [0.01, 1.0, 8.212, 100.0])
def test_interval_ends_where_the_likelihood_ratio_reaches_one_over_alpha(ratio: float) -> None:
    variance, difference = 4e-6, 0.003
    radius = float(mixture_radius(variance, ratio * variance, ALPHA))
    for end in (difference - radius, difference + radius):
        log_lr = mixture_log_likelihood_ratio(difference, variance, ratio * variance, null=end)
        assert float(log_lr) == pytest.approx(math.log(1 / ALPHA))


def test_aa_peeking_every_100_users_keeps_false_positives_within_alpha() -> None:
    runs = 2_000
    verdicts = sequential(simulate(runs, rates=(0.10, 0.10), seed=20_260_001))
    mixture = share(np.any(verdicts.p_value < ALPHA, axis=1))
    naive = share(np.any(np.abs(verdicts.z) > Z_975, axis=1))
    print(
        f"\nA/A, {runs:,} runs, a look every {USERS_PER_LOOK} users up to {USERS_PER_ARM:,} per"
        f" arm: ever rejected at 5 %: mSPRT {mixture:.4f}, peeked z-test {naive:.4f}"
    )
    assert mixture <= 0.061
    assert naive > 0.15


def test_a_ten_percent_lift_is_detected_by_30000_users_per_arm() -> None:
    verdicts = sequential(simulate(1_000, rates=(0.10, 0.11), seed=20_260_002))
    detected = np.any(verdicts.p_value < ALPHA, axis=1)
    first = np.argmax(verdicts.p_value < ALPHA, axis=1)[detected]
    print(
        f"\n10 % -> 11 %, 1,000 runs: detected by {USERS_PER_ARM:,} users per arm in"
        f" {share(detected):.3f}; median users per arm at detection"
        f" {int(np.median((first + 1) * USERS_PER_LOOK)):,}"
    )
    assert share(detected) >= 0.80


@pytest.mark.parametrize(
    ("rates", "seed"), [((0.10, 0.10), 20_260_003), ((0.10, 0.11), 20_260_004)]
)
def test_confidence_sequence_covers_the_true_difference_at_every_look(
    rates: tuple[float, float], seed: int
) -> None:
    verdicts = sequential(simulate(1_000, rates=rates, seed=seed))
    truth = rates[1] - rates[0]
    covered = np.all((verdicts.lower <= truth) & (truth <= verdicts.upper), axis=1)
    print(f"\n{rates}, 1,000 runs: covered at all {LOOKS} looks in {share(covered):.3f}")
    assert share(covered) >= 0.95


# --- the sample-ratio-mismatch test ------------------------------------------------------------

SRM_USERS = 100_000
SRM_LOOKS = SRM_USERS // USERS_PER_LOOK


def srm_p_values(runs: int, shares: list[float], weights: list[float], seed: int) -> Array:
    """The always-valid p-value at each look, ``(runs, looks)``, of runs assigning ``shares``."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(USERS_PER_LOOK, shares, size=(runs, SRM_LOOKS)).cumsum(axis=1)
    log_bf = srm_log_bayes_factor(counts, weights)
    return np.exp(-np.maximum.accumulate(np.maximum(log_bf, 0.0), axis=1))


def test_srm_class_matches_the_vectorised_bayes_factor() -> None:
    rng = np.random.default_rng(9)
    counts = rng.multinomial(USERS_PER_LOOK, [0.19, 0.31, 0.5], size=300).cumsum(axis=0)
    srm = SampleRatioTest([0.2, 0.3, 0.5])
    running = 1.0
    for look in counts:
        srm.update(look.tolist())
        log_bf = float(srm_log_bayes_factor(look, [0.2, 0.3, 0.5]))
        running = min(running, math.exp(-max(log_bf, 0.0)))
        assert srm.log_bayes_factor == pytest.approx(log_bf)
        assert srm.p_value == pytest.approx(running)
    assert srm.p_value < ALPHA  # 0.19/0.31/0.5 against 0.2/0.3/0.5 over 30,000 users


def test_srm_bayes_factor_is_the_dirichlet_multinomial_marginal_over_the_null() -> None:
    # two variants, weights 1/2, prior Beta(50, 50): BF = B(50 + a, 50 + b) / B(50, 50) * 2^n
    a, b = 37, 21
    expected = (
        math.lgamma(50 + a) + math.lgamma(50 + b) - math.lgamma(100 + a + b)
        - (2 * math.lgamma(50) - math.lgamma(100))
        + (a + b) * math.log(2)
    )  # fmt: skip
    assert float(srm_log_bayes_factor([a, b], [0.5, 0.5])) == pytest.approx(expected)


@pytest.mark.parametrize("weights", [[0.5, 0.5], [0.2, 0.3, 0.5]])
def test_srm_stays_quiet_on_correct_splits(weights: list[float]) -> None:
    p_values = srm_p_values(1_000, weights, weights, seed=20_260_005)
    quiet = share(np.all(p_values >= ALPHA, axis=1))
    print(f"\nSRM, {weights} as intended, 1,000 runs to {SRM_USERS:,} users: quiet in {quiet:.3f}")
    assert quiet >= 0.95


def test_srm_fires_on_a_48_52_split() -> None:
    p_values = srm_p_values(1_000, [0.48, 0.52], [0.5, 0.5], seed=20_260_006)
    fired = np.any(p_values < ALPHA, axis=1)
    users = (np.argmax(p_values < ALPHA, axis=1)[fired] + 1) * USERS_PER_LOOK
    print(
        f"\nSRM, 48/52 against 50/50, 1,000 runs to {SRM_USERS:,} users: fired in"
        f" {share(fired):.3f}; median users at firing {int(np.median(users)):,}"
    )
    assert share(fired) >= 0.99
