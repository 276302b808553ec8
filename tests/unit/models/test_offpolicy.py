"""Off-policy estimates hold their stated accuracy on an environment whose values are known.

Contexts of four kinds, five artworks each, a take probability per (context, artwork); the
log comes from an ε-greedy policy (propensities known, every artwork possible); the target
policies are uniform random, a fixed "most popular" artwork, and the greedy best per
context. Their true values are computed from the take probabilities, not estimated.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.models.offpolicy import ips, snips

CONTEXTS, ARMS, N, REPLICATES = 4, 5, 5_000, 200
TAKE = np.random.default_rng(0).uniform(0.02, 0.25, (CONTEXTS, ARMS))
CONTEXT_SHARE = np.array([0.4, 0.3, 0.2, 0.1])
EPSILON = 0.3
LOGGING = np.full((CONTEXTS, ARMS), EPSILON / ARMS)
LOGGING[np.arange(CONTEXTS), np.argsort(TAKE, axis=1)[:, -2]] += 1 - EPSILON  # second best
POLICIES = {
    "random": np.full((CONTEXTS, ARMS), 1.0 / ARMS),
    "popular": np.eye(ARMS)[np.full(CONTEXTS, int(np.argmax(CONTEXT_SHARE @ TAKE)))],
    "greedy": np.eye(ARMS)[np.argmax(TAKE, axis=1)],
}


def true_value(policy: np.ndarray) -> float:
    return float(CONTEXT_SHARE @ (policy * TAKE).sum(axis=1))


def logged(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    contexts = rng.choice(CONTEXTS, size=N, p=CONTEXT_SHARE)
    cumulative = LOGGING[contexts].cumsum(axis=1)
    arms = (rng.random(N)[:, None] > cumulative).sum(axis=1)
    rewards = rng.random(N) < TAKE[contexts, arms]
    return contexts, arms, LOGGING[contexts, arms], rewards


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("estimator", [ips, snips])
def test_the_estimate_lies_within_two_standard_errors_of_the_truth_95_percent_of_the_time(
    name: str, estimator
) -> None:
    policy, truth = POLICIES[name], true_value(POLICIES[name])
    covered = 0
    for seed in range(REPLICATES):
        contexts, arms, propensities, rewards = logged(seed)
        estimate = estimator(rewards, propensities, policy[contexts, arms])
        covered += abs(estimate.value - truth) <= 2 * estimate.se
    print(f"\n{estimator.__name__} of {name} (true {truth:.4f}): within 2 SE in "
          f"{covered} of {REPLICATES}")  # fmt: skip
    assert covered >= 0.95 * REPLICATES


def test_a_log_that_cannot_be_reweighted_is_refused() -> None:
    with pytest.raises(ValueError, match="propensity"):
        ips([1.0, 0.0], [0.5, 0.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="differ"):
        snips([1.0], [0.5, 0.5], [1.0, 1.0])
