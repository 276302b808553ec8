"""Churn scorers: the probability that a user is not seen again within the churn horizon.

:class:`PoissonChurnBaseline` needs no training: it treats a user's sessions as a
Poisson process whose rate is the user's own session rate so far, and returns the
probability of no session in the next ``horizon`` days, ``exp(-rate * horizon)``.
It is the reference the learned models must beat, and the scorer a fresh worker
starts with.

Examples
--------
>>> model = PoissonChurnBaseline(horizon_days=14)
>>> round(model.predict_proba_one({"sessions": 14, "days_observed": 14.0}), 4)  # daily viewer
0.0
>>> round(model.predict_proba_one({"sessions": 1, "days_observed": 0.1}), 4)   # one session
0.1353
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["PoissonChurnBaseline"]


class PoissonChurnBaseline:
    """``P(no session within the horizon)`` for a Poisson session process at the user's rate.

    Parameters
    ----------
    horizon_days
        The churn horizon.
    min_days_observed
        The rate of a new user is taken over at least this many days, so one busy
        first day does not read as a daily habit.
    """

    model_version = "poisson-baseline-1"

    def __init__(self, *, horizon_days: float, min_days_observed: float = 7.0) -> None:
        self.horizon_days = horizon_days
        self.min_days_observed = min_days_observed

    def rate_per_day(self, x: Mapping[str, float]) -> float:
        """The user's sessions per day so far."""
        return x["sessions"] / max(x["days_observed"], self.min_days_observed)

    def predict_proba_one(self, x: Mapping[str, float]) -> float:
        """Probability of churn given the user's ``sessions`` and ``days_observed``."""
        return math.exp(-self.rate_per_day(x) * self.horizon_days)

    def contributions(self, x: Mapping[str, float]) -> list[tuple[str, float, float]]:
        """``(feature, value, contribution to the log-probability)``, largest effect first."""
        rate = self.rate_per_day(x)
        return [("sessions_per_day", rate, -rate * self.horizon_days)]
