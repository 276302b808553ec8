"""Off-policy estimates: what another policy would have earned, from a randomised log.

A logging policy chose action ``a_i`` with probability ``p_i`` (its *propensity*, logged
with the choice) and earned reward ``r_i``. A target policy that would choose ``a_i`` with
probability ``π_i`` is worth, estimated without running it (Horvitz and Thompson 1952;
Li, Chu, Langford and Wang, "Unbiased offline evaluation of contextual-bandit-based news
article recommendation algorithms", WSDM 2011; Swaminathan and Joachims, "The self-normalized
estimator for counterfactual learning", NeurIPS 2015):

``IPS``
    ``mean(w_i r_i)`` with importance weights ``w_i = π_i / p_i``: unbiased whenever the
    logging policy gives every action the target may take a positive probability; its
    standard error is the sample standard deviation of ``w_i r_i`` over ``sqrt(n)``.
``SNIPS``
    ``Σ w_i r_i / Σ w_i``: the weights normalised to mean 1, slightly biased but of far
    lower variance when the weights are large; its standard error by the delta method,
    ``sqrt(Σ w_i² (r_i − V)²) / Σ w_i``.

Both take arrays, so an evaluation over millions of logged choices is a few numpy calls.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> n = 20_000
>>> logged = rng.integers(2, size=n)              # uniform logging over two actions
>>> propensity = np.full(n, 0.5)
>>> reward = rng.random(n) < np.where(logged == 1, 0.30, 0.10)
>>> always_1 = (logged == 1).astype(float)        # the policy that always picks action 1
>>> estimate = ips(reward, propensity, always_1)
>>> abs(estimate.value - 0.30) < 2 * estimate.se
True
>>> round(snips(reward, propensity, always_1).value, 2)
0.3
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Estimate", "ips", "policy_report", "snips"]


@dataclass(frozen=True, slots=True)
class Estimate:
    """A policy's estimated value per logged choice, its standard error and sample size."""

    value: float
    se: float
    n: int

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """The normal interval ``value ± z · se`` (95 % by default)."""
        return self.value - z * self.se, self.value + z * self.se


def _weights(
    rewards: npt.ArrayLike, propensities: npt.ArrayLike, target: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rewards, dtype=np.float64)
    p = np.asarray(propensities, dtype=np.float64)
    pi = np.asarray(target, dtype=np.float64)
    if not (r.shape == p.shape == pi.shape) or r.ndim != 1:
        raise ValueError(f"rewards {r.shape}, propensities {p.shape}, target {pi.shape} differ")
    if np.any(p <= 0.0) or np.any(p > 1.0):
        raise ValueError("a logged propensity outside (0, 1]: the log cannot be reweighted")
    if np.any(pi < 0.0) or np.any(pi > 1.0):
        raise ValueError("a target probability outside [0, 1]")
    return r, pi / p


def ips(rewards: npt.ArrayLike, propensities: npt.ArrayLike, target: npt.ArrayLike) -> Estimate:
    """Inverse propensity scoring: ``mean(π/p · r)``, with its standard error.

    ``target[i]`` is the probability that the evaluated policy takes the logged action ``i``
    in its context (1 or 0 for a deterministic policy).
    """
    r, w = _weights(rewards, propensities, target)
    n = r.size
    if n == 0:
        return Estimate(math.nan, math.nan, 0)
    terms = w * r
    se = float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return Estimate(float(terms.mean()), se, n)


def snips(rewards: npt.ArrayLike, propensities: npt.ArrayLike, target: npt.ArrayLike) -> Estimate:
    """Self-normalised IPS: ``Σ w r / Σ w``, with its delta-method standard error."""
    r, w = _weights(rewards, propensities, target)
    total = float(w.sum())
    if r.size == 0 or total <= 0.0:
        return Estimate(math.nan, math.nan, int(r.size))
    value = float((w * r).sum() / total)
    se = float(math.sqrt(float(np.sum(w * w * (r - value) ** 2))) / total)
    return Estimate(value, se, int(r.size))


def policy_report(
    prefix: str,
    rewards: npt.ArrayLike,
    propensities: npt.ArrayLike,
    targets: dict[str, npt.ArrayLike],
) -> dict[str, float]:
    """The logged policy's mean reward and each target policy's IPS and SNIPS estimates.

    Keys ``<prefix>.logged`` and, per target, ``<prefix>.<name>.ips``, ``.ips_se``,
    ``.snips``, ``.snips_se`` (``nan`` without a log).

    >>> report = policy_report("take", [1, 0, 0, 1], [0.5, 0.5, 0.5, 0.5],
    ...                        {"same": [0.5] * 4, "first": [1, 1, 0, 0]})
    >>> report["take.logged"], report["take.same.ips"], report["take.first.snips"]
    (0.5, 0.5, 0.5)
    """
    r = np.asarray(rewards, dtype=np.float64)
    report = {f"{prefix}.logged": float(r.mean()) if r.size else math.nan}
    for name, target in targets.items():
        for kind, estimate in (("ips", ips), ("snips", snips)):
            found = estimate(r, propensities, target)
            report[f"{prefix}.{name}.{kind}"] = found.value
            report[f"{prefix}.{name}.{kind}_se"] = found.se
    return report
